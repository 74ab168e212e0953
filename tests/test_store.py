"""The SQLite store: schema, migrations, WAL, ids, inserts and queries."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from lab import store as store_mod
from lab.store import Store, StoreError, check_database


def _machine(id_: str = "m1", host: str = "box") -> dict:
    return {"id": id_, "hostname": host, "cpu_info": "cpu", "backends": "CPU"}


def test_schema_wal_and_version(tmp_path: Path) -> None:
    s = Store(tmp_path / "lab.db")
    assert s.schema_version() == len(store_mod.MIGRATIONS)
    assert s.db.execute("pragma journal_mode").fetchone()[0] == "wal"
    for table in ("machines", "models", "runs", "results", "samples", "quality", "eval_runs", "eval_items"):
        assert table in s.db.table_names()
    cols = {c.name for c in s.db["results"].columns}
    for llama_bench_key in ("model_filename", "model_type", "model_size", "model_n_params", "n_batch", "n_ubatch",
                            "n_threads", "n_gpu_layers", "type_k", "type_v", "flash_attn", "n_prompt", "n_gen",
                            "n_depth", "avg_ns", "stddev_ns", "avg_ts", "stddev_ts", "test_time", "backends"):
        assert llama_bench_key in cols
    s.close()
    # reopening does not migrate again
    assert Store(tmp_path / "lab.db").schema_version() == len(store_mod.MIGRATIONS)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    s = Store(tmp_path / "lab.db")
    s.db["meta"].upsert({"key": "schema_version", "value": "99"}, pk="key")
    s.close()
    with pytest.raises(StoreError, match="newer than this"):
        Store(tmp_path / "lab.db")
    with pytest.raises(StoreError, match="newer than this"):
        check_database(tmp_path / "lab.db")


def test_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="Cannot open database") as opened:
        Store(bad)
    with pytest.raises(StoreError, match="Cannot open database") as checked:
        check_database(bad)
    assert str(checked.value) == str(opened.value)


def test_check_database_accepts_a_new_or_current_database_without_migrating(tmp_path: Path) -> None:
    fresh = tmp_path / "sub" / "new.db"
    check_database(fresh)  # creates nothing but an empty file: the first Store migrates it
    assert fresh.exists()
    with sqlite3.connect(fresh) as con:
        assert con.execute("select count(*) from sqlite_master").fetchone()[0] == 0
    Store(fresh).close()
    check_database(fresh)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="Cannot create database"):
        check_database(blocker / "x.db")


def test_ids_are_unique_and_time_ordered() -> None:
    import time

    before_ms = time.time_ns() // 1_000_000
    ids = [store_mod.new_id() for _ in range(2000)]
    after_ms = time.time_ns() // 1_000_000
    assert len(set(ids)) == 2000
    assert all(len(i) == 32 and i[12] == "7" for i in ids)  # UUIDv7 layout: version nibble after the time
    # The first 12 hex digits are the creation time in ms: never decreasing from one id to the
    # next (ids made in the same millisecond tie there and differ in their random tail) ...
    times = [int(i[:12], 16) for i in ids]
    assert times == sorted(times)
    # ... and the clock's own reading, not any number that happens to grow.
    assert before_ms <= times[0] and times[-1] <= after_ms


def test_run_lifecycle_and_filters(tmp_path: Path) -> None:
    s = Store(tmp_path / "lab.db")
    s.upsert_machine(_machine())
    s.upsert_model({"id": "sha-a", "model_filename": "a-Q4_0.gguf", "file_type": "Q4_0"})
    s.upsert_model({"id": "sha-b", "model_filename": "b-Q8_0.gguf", "file_type": "Q8_0"})
    r1 = s.create_run("bench", machine_id="m1", model_id="sha-a", model_filename="a-Q4_0.gguf", config={"x": 1})
    r2 = s.create_run("bench", machine_id="m1", model_id="sha-b", model_filename="b-Q8_0.gguf", config={"x": 2})
    assert s.get("runs", r1)["status"] == "running"
    s.add_result({"run_id": r1, "machine_id": "m1", "model_id": "sha-a", "model_filename": "a-Q4_0.gguf",
                  "test": "tg128", "n_prompt": 0, "n_gen": 128, "n_depth": 0, "avg_ts": 100.0,
                  "samples_ns": [1, 2, 3]})
    s.add_result({"run_id": r2, "machine_id": "m1", "model_id": "sha-b", "model_filename": "b-Q8_0.gguf",
                  "test": "pp512", "n_prompt": 512, "n_gen": 0, "n_depth": 0, "avg_ts": 400.0})
    s.finish_run(r1, "ok")
    s.finish_run(r2, "failed", error="boom", signal=9, log_tail="last line")
    assert s.get("runs", r2)["status"] == "failed" and s.get("runs", r2)["signal"] == 9
    assert [r["test"] for r in s.results(quant="q4_0")] == ["tg128"]
    assert [r["model_filename"] for r in s.results(model="b-Q8")] == ["b-Q8_0.gguf"]
    assert [r["test"] for r in s.results(test="pp*")] == ["pp512"]
    assert len(s.results(machine="box")) == 2
    assert len(s.results(run=store_mod.short_id(r2))) == 1
    assert len(s.results(run=r2)) == 1
    assert json.loads(s.results(test="tg128")[0]["samples_ns"]) == [1, 2, 3]
    assert [r["status"] for r in s.runs(status="failed")] == ["failed"]
    assert s.last_speeds("m1") == {"sha-a": {"tg": 100.0}, "sha-b": {"pp": 400.0}}
    page = s.results(order="avg_ts", descending=True, limit=1, offset=1)
    assert [r["avg_ts"] for r in page] == [100.0]
    with pytest.raises(ValueError):
        s.results(order="avg_ts; drop table runs")


def test_model_upsert_keeps_provenance(tmp_path: Path) -> None:
    s = Store(tmp_path / "lab.db")
    s.upsert_model({"id": "sha", "model_filename": "m.gguf", "source": "hf", "source_repo": "o/r"})
    s.upsert_model({"id": "sha", "model_filename": "m.gguf", "path": "/new/place"})
    row = s.get("models", "sha")
    assert row["source_repo"] == "o/r" and row["path"] == "/new/place"


def test_concurrent_reader_sees_committed_rows(tmp_path: Path) -> None:
    s = Store(tmp_path / "lab.db")
    s.upsert_machine(_machine())
    rid = s.create_run("bench", machine_id="m1", model_id=None, model_filename=None, config={})
    other = sqlite3.connect(tmp_path / "lab.db")
    assert other.execute("select status from runs where id = ?", [rid]).fetchone()[0] == "running"


def test_a_version_1_database_gains_the_declared_columns(tmp_path: Path) -> None:
    import sqlite_utils

    db = sqlite_utils.Database(tmp_path / "old.db")
    store_mod._migrate_1(db)
    db["results"].transform(drop={"cv"})  # as if declared after the database was made
    db["meta"].upsert({"key": "schema_version", "value": "1"}, pk="key")
    db["results"].insert({"id": "r1", "test": "tg128", "avg_ts": 10.0})
    db.conn.close()
    s = Store(tmp_path / "old.db")
    assert s.schema_version() == store_mod.SCHEMA_VERSION == len(store_mod.MIGRATIONS)
    assert "cv" in s.db["results"].columns_dict
    assert s.db["endpoints"].exists()  # a table added by a later migration
    row = s.get("results", "r1")
    assert row["avg_ts"] == 10.0 and row["cv"] is None
