"""Many devices, one database: merge and export on real SQLite files, through the real command."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lab import fleet, store as store_mod
from lab.store import TABLES, Store


def rs(*args: str, db: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lab", *args] + (["--db", str(db)] if db is not None else [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def device_db(path: Path, hostname: str, *, n_runs: int = 2) -> Path:
    """A database as one device leaves it: its machine, a model, bench runs with results and
    samples, a quality run and an eval run with items, all written through the Store API."""
    s = Store(path)
    machine = s.upsert_machine({"id": f"fp-{hostname}", "hostname": hostname, "arch": "aarch64",
                                "cpu_info": "Cortex-A78AE", "cpu_cores": 8, "ram_bytes": 8 << 30})
    model = s.upsert_model({"id": "sha-small", "model_filename": "small-Q4_0.gguf", "file_type": "Q4_0",
                            "path": f"/home/{hostname}/models/small-Q4_0.gguf"})
    for i in range(n_runs):
        run_id = s.create_run("bench", machine_id=machine, model_id=model, model_filename="small-Q4_0.gguf",
                              config={"tests": ["tg16"], "i": i})
        for test, ts in (("pp64", 400.0 + i), ("tg16", 40.0 + i)):
            s.add_result({"run_id": run_id, "machine_id": machine, "model_id": model, "test": test,
                          "model_filename": "small-Q4_0.gguf", "avg_ts": ts, "samples_ns": [1, 2],
                          "peak_rss_bytes": 100 << 20, "j_per_token": None})
        s.add_samples([{"run_id": run_id, "t": t / 10, "test": "tg16", "rss_bytes": 90 << 20, "tokens": t}
                       for t in range(5)])
        s.finish_run(run_id, "ok")
    q_run = s.create_run("quality", machine_id=machine, model_id=model, model_filename="small-Q4_0.gguf", config={})
    s.add_row("quality", {"run_id": q_run, "machine_id": machine, "model_id": model, "ppl": 12.5,
                          "reference_model_id": "sha-small", "kld_mean": 0.01})
    s.finish_run(q_run, "ok")
    e_run = s.create_run("eval", machine_id=machine, model_id=model, model_filename="small-Q4_0.gguf", config={})
    eval_id = s.add_row("eval_runs", {"run_id": e_run, "machine_id": machine, "model_id": model,
                                      "suite": "demo", "accuracy": 0.5, "n_items": 2})
    s.add_rows("eval_items", [{"eval_run_id": eval_id, "run_id": e_run, "machine_id": machine, "model_id": model,
                               "item_index": k, "output": f"answer {k}", "correct": k % 2} for k in range(2)])
    s.finish_run(e_run, "ok")
    s.close()
    return path


def benched_db(path: Path, home: Path, gguf: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A database written by a real bench of a tiny model in another lab home."""
    from lab.bench import BenchOptions, run_bench

    monkeypatch.setenv("RIGHTSIZER_HOME", str(home))
    s = Store(path)
    outcome = run_bench(BenchOptions(models=[str(gguf)], n_prompt=[16], n_gen=[4], repetitions=1, threads=[1],
                                     repack=[0]), s)
    assert outcome.status == "ok"
    s.close()
    return path


def rows(path: Path, table: str) -> list[dict]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    order = {"samples": "run_id, t", "model_files": "path"}.get(table, "id")
    out = [dict(r) for r in conn.execute(f"select * from {table} order by {order}")]
    conn.close()
    return out


def counts(path: Path) -> dict[str, int]:
    return {t: len(rows(path, t)) for t in TABLES}


def digest(path: Path) -> tuple[str, list[str]]:
    """The file's bytes and the files beside it: what "never modify the source" means."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), sorted(os.listdir(path.parent))


def report_of(out: subprocess.CompletedProcess) -> list[dict[str, dict]]:
    return [{t["table"]: t for t in src["tables"]} for src in json.loads(out.stdout)["sources"]]


def test_two_devices_merge_into_one_and_again_adds_nothing(tmp_path: Path, tiny_gguf: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = benched_db(tmp_path / "a" / "lab.db", tmp_path / "home-a", tiny_gguf, monkeypatch)
    b = device_db(tmp_path / "b" / "lab.db", "jetson-b")
    before = {a: digest(a), b: digest(b)}
    target = tmp_path / "fleet.db"

    out = rs("merge", str(a), str(b), "-o", "json", db=target)
    assert out.returncode == 0, out.stderr
    first, second = report_of(out)
    assert first["runs"]["added"] == 1 and first["results"]["added"] == 2
    assert second["runs"]["added"] == 4 and second["results"]["added"] == 4 and second["samples"]["added"] == 10
    assert second["quality"]["added"] == 1 and second["eval_items"]["added"] == 2
    assert second["models"]["added"] == 1 and first["models"]["added"] == 1  # the tiny model, then sha-small

    want = {t: len(rows(a, t)) + len(rows(b, t)) for t in TABLES}
    assert counts(target) == want
    for source in (a, b):  # every run keeps its machine, and the machine row came along
        machines = {m["id"]: m for m in rows(target, "machines")}
        for run in rows(source, "runs"):
            merged = next(r for r in rows(target, "runs") if r["id"] == run["id"])
            assert merged == run
            assert machines[merged["machine_id"]]["hostname"] == rows(source, "machines")[0]["hostname"]
    assert {m["hostname"] for m in rows(target, "machines")} == {rows(a, "machines")[0]["hostname"], "jetson-b"}
    assert len(rows(a, "model_files")) == 1
    assert rows(target, "model_files") == []  # a per-machine path cache stays where it was made
    assert {a: digest(a), b: digest(b)} == before

    again = rs("merge", str(a), str(b), "-o", "json", db=target)
    assert again.returncode == 0, again.stderr
    for report, source in zip(report_of(again), (a, b)):
        assert all(t["added"] == 0 and t["filled"] == 0 and t["conflicts"] == 0 for t in report.values())
        assert {t: c["present"] for t, c in report.items()} == counts(source)
    assert counts(target) == want


def test_help_lists_merge_and_export() -> None:
    out = rs("--help")
    assert out.returncode == 0
    listed = [line.split()[0] for line in out.stdout.split("Commands:")[1].splitlines() if line.strip()]
    assert "merge" in listed and "export" in listed


def test_a_differing_row_is_reported_never_overwritten(tmp_path: Path) -> None:
    src = device_db(tmp_path / "device.db", "edge-a")
    target = tmp_path / "fleet.db"
    assert rs("merge", str(src), db=target).returncode == 0
    result = rows(src, "results")[0]
    run = rows(src, "runs")[0]
    conn = sqlite3.connect(src)
    with conn:
        conn.execute("update results set avg_ts = 1.0, noisy = 1 where id = ?", [result["id"]])
        conn.execute("update runs set status = 'failed' where id = ?", [run["id"]])
        conn.execute("update samples set rss_bytes = 1 where run_id = ? and t = 0.2", [run["id"]])
    conn.close()
    extra = Store(src)
    new_id = extra.add_result({"run_id": run["id"], "machine_id": "fp-edge-a", "test": "tg32", "avg_ts": 30.0})
    extra.close()

    out = rs("merge", str(src), "-o", "json", db=target)
    assert out.returncode == fleet.CONFLICT_EXIT == 3
    report = report_of(out)[0]
    assert report["results"] == {"table": "results", "added": 1, "present": 3, "filled": 0, "conflicts": 1}
    assert report["runs"]["conflicts"] == 1 and report["samples"]["conflicts"] == 1
    conflicts = json.loads(out.stdout)["sources"][0]["conflicts"]
    assert {"table": "results", "key": result["id"], "columns": ["avg_ts", "noisy"]} in conflicts
    assert {"table": "runs", "key": run["id"], "columns": ["status"]} in conflicts
    table = rs("merge", str(src), db=target)  # conflicts stay conflicts; the table names each one
    assert table.returncode == 3
    assert f"conflict: results {result['id']}: avg_ts, noisy differ; kept this database's row" in table.stderr
    assert f"conflict: runs {run['id']}: status differs; kept this database's row" in table.stderr
    assert f"samples run {run['id']} t=0.2 test=tg16: rss_bytes differs" in table.stderr
    merged = {r["id"]: r for r in rows(target, "results")}
    assert merged[result["id"]]["avg_ts"] == result["avg_ts"] and merged[result["id"]]["noisy"] is None
    assert merged[new_id]["avg_ts"] == 30.0  # the rest of the source still merged
    assert next(r for r in rows(target, "runs") if r["id"] == run["id"])["status"] == "ok"


def test_machine_rows_fill_nulls_and_report_differing_values(tmp_path: Path) -> None:
    src = device_db(tmp_path / "device.db", "edge-a")
    target = Store(tmp_path / "fleet.db")
    target.upsert_machine({"id": "fp-edge-a", "hostname": "edge-a", "arch": "aarch64", "cpu_cores": 8,
                           "ram_bytes": 8 << 30, "cpu_info": None})
    target.upsert_model({"id": "sha-small", "model_filename": "small-Q4_0.gguf", "file_type": "Q4_1",
                         "path": "/elsewhere/small-Q4_0.gguf"})
    report = fleet.merge(target, [src])[0]
    assert report.tables["machines"].filled == 1
    assert target.get("machines", "fp-edge-a")["cpu_info"] == "Cortex-A78AE"
    # a differing non-NULL value is kept as it was; a model's path is where it lives per machine
    assert report.tables["models"].conflicts == 1
    assert [c.columns for c in report.conflicts] == [["file_type"]]
    assert target.get("models", "sha-small")["file_type"] == "Q4_1"
    assert target.get("models", "sha-small")["path"] == "/elsewhere/small-Q4_0.gguf"


def test_a_newer_schema_source_is_refused_and_the_target_is_unchanged(tmp_path: Path) -> None:
    good = device_db(tmp_path / "good.db", "edge-a")
    newer = device_db(tmp_path / "newer.db", "edge-b")
    conn = sqlite3.connect(newer)
    with conn:
        conn.execute("update meta set value = '99' where key = 'schema_version'")
    conn.close()
    target = tmp_path / "fleet.db"
    device_db(target, "workstation", n_runs=1)
    dump = list(sqlite3.connect(target).iterdump())

    out = rs("merge", str(good), str(newer), db=target)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"error: Database {newer} has schema version 99, newer than this Rightsizer understands "
        f"({store_mod.SCHEMA_VERSION}); upgrade Rightsizer."]
    assert list(sqlite3.connect(target).iterdump()) == dump  # not even the good source went in


def test_an_older_schema_source_merges_and_stays_as_it_was(tmp_path: Path) -> None:
    import sqlite_utils

    (tmp_path / "device").mkdir()
    old = tmp_path / "device" / "old.db"
    db = sqlite_utils.Database(old)
    store_mod._migrate_1(db)
    db["results"].transform(drop={"cv"})  # a column declared after this database was made
    db["meta"].upsert({"key": "schema_version", "value": "1"}, pk="key")
    db["machines"].insert({"id": "fp-old", "hostname": "old-board"})
    db["runs"].insert({"id": "run-old", "kind": "bench", "machine_id": "fp-old", "status": "ok"})
    db["results"].insert({"id": "res-old", "run_id": "run-old", "machine_id": "fp-old", "test": "tg128",
                          "avg_ts": 10.0})
    db.conn.close()
    before = digest(old)

    out = rs("merge", str(old), db=tmp_path / "fleet" / "lab.db")
    assert out.returncode == 0, out.stderr
    target = Store(tmp_path / "fleet" / "lab.db")
    assert target.get("results", "res-old")["avg_ts"] == 10.0 and target.get("results", "res-old")["cv"] is None
    assert target.get("runs", "run-old")["machine_id"] == "fp-old"
    assert digest(old) == before
    assert "cv" not in sqlite_utils.Database(old)["results"].columns_dict


def test_refusals_are_one_sentence(tmp_path: Path) -> None:
    target = device_db(tmp_path / "fleet.db", "edge-a")
    out = rs("merge", str(target), db=target)
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: {target} is the target database itself; name another database to merge."
    not_db = tmp_path / "notes.db"
    not_db.write_text("not a database at all, just some text\n" * 50)
    out = rs("merge", str(not_db), db=target)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == f"error: Cannot open database {not_db}: file is not a database."
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("create table t (x)").connection.close()
    out = rs("merge", str(empty), db=target)
    assert out.stderr.strip() == f"error: {empty} is not a Rightsizer database (it has no schema version)."
    out = rs("merge", str(tmp_path / "missing.db"), db=target)
    assert out.stderr.strip() == f"error: No such database: {tmp_path / 'missing.db'}."


def test_a_failure_leaves_the_target_as_it_was(tmp_path: Path) -> None:
    src = device_db(tmp_path / "device.db", "edge-a")
    target = Store(tmp_path / "fleet.db")
    # a real SQLite failure half way: the eval items come after runs, results and samples
    target.db.execute("create trigger refuse before insert on eval_items "
                      "begin select raise(abort, 'refused by trigger'); end")
    with pytest.raises(sqlite3.IntegrityError, match="refused by trigger"):
        fleet.merge(target, [src])
    assert {t: target.db[t].count for t in TABLES} == {t: 0 for t in TABLES}


def test_export_db_merges_back_losslessly(tmp_path: Path) -> None:
    lab = tmp_path / "lab.db"
    device_db(lab, "edge-a")
    other = device_db(tmp_path / "other.db", "edge-b", n_runs=1)
    assert rs("merge", str(other), db=lab).returncode == 0
    sub = tmp_path / "edge-b.db"

    out = rs("export", "--machine", "edge-b", "-o", str(sub), db=lab)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (f"Exported 1 machines, 1 models, 0 endpoints, 3 runs, 2 results, 5 samples, 1 quality, "
                                  f"1 eval_runs, 2 eval_items, 0 load_requests to {sub}.")
    assert Store(sub).schema_version() == store_mod.SCHEMA_VERSION
    # exactly edge-b's rows, value for value (the model row is the one the lab holds)
    expected = {t: rows(lab if t == "models" else other, t) for t in TABLES}
    for table in TABLES:
        assert rows(sub, table) == expected[table], table

    fresh = tmp_path / "fresh.db"
    assert rs("merge", str(sub), db=fresh).returncode == 0
    for table in TABLES:
        assert rows(fresh, table) == expected[table], table
    back = rs("merge", str(sub), "-o", "json", db=lab)  # into the database it came from: nothing new
    assert back.returncode == 0
    assert all(t["added"] == 0 and t["conflicts"] == 0 for t in report_of(back)[0].values())

    again = rs("export", "--machine", "edge-b", "-o", str(sub), db=lab)
    assert again.returncode == 1
    assert again.stderr.strip() == f"error: {sub} already exists; use --force to replace it."
    assert rs("export", "--machine", "edge-a", "-o", str(sub), "--force", db=lab).returncode == 0
    assert {m["hostname"] for m in rows(sub, "machines")} == {"edge-a"}
    assert not Path(f"{sub}-wal").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".edge-b.db.")]


def test_export_jsonl_carries_the_rows(tmp_path: Path) -> None:
    lab = device_db(tmp_path / "lab.db", "edge-a")
    out_file = tmp_path / "tg.jsonl"
    out = rs("export", "--test", "tg16", "-o", str(out_file), db=lab)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    by_table: dict[str, list[dict]] = {}
    for line in lines:
        by_table.setdefault(line.pop("table"), []).append(line)
    results = rows(lab, "results")
    assert sorted(r["id"] for r in by_table["results"]) == sorted(r["id"] for r in results if r["test"] == "tg16")
    for row in by_table["results"]:
        assert row == next(r for r in results if r["id"] == row["id"])
    assert {r["id"] for r in by_table["runs"]} == {r["run_id"] for r in by_table["results"]}
    assert len(by_table["samples"]) == 10 and "quality" not in by_table  # quality runs have no tg16
    assert by_table["machines"] == rows(lab, "machines") and by_table["models"] == rows(lab, "models")

    none = rs("export", "--since", "2999-01-01", "-o", str(tmp_path / "none.jsonl"), db=lab)
    assert none.returncode == 1
    assert none.stderr.strip() == "error: No stored runs match the filters; nothing to export."
    assert not (tmp_path / "none.jsonl").exists()
    run = rows(lab, "runs")[0]["id"]
    assert rs("export", "--run", run[-10:], "-o", str(tmp_path / "one.jsonl"), db=lab).returncode == 0
    exported = [json.loads(line) for line in (tmp_path / "one.jsonl").read_text().splitlines()]
    assert [r["id"] for r in exported if r["table"] == "runs"] == [run]


def test_a_source_open_in_another_process_is_read_with_its_wal(tmp_path: Path) -> None:
    (tmp_path / "device").mkdir()
    src = device_db(tmp_path / "device" / "lab.db", "edge-a")
    writer = Store(src)  # still open: the rows below sit in its -wal file, not yet in lab.db
    late = writer.add_result({"run_id": rows(src, "runs")[0]["id"], "machine_id": "fp-edge-a", "test": "tg64",
                              "avg_ts": 33.0})
    assert Path(f"{src}-wal").stat().st_size > 0
    out = rs("merge", str(src), db=tmp_path / "fleet.db")
    assert out.returncode == 0, out.stderr
    assert Store(tmp_path / "fleet.db").get("results", late)["avg_ts"] == 33.0
    writer.close()
