"""Endpoints against a real OpenAI-compatible server on loopback: llama-cpp-python's own server
serving the demo model (one per module), and a port where nothing listens."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

SERVER_KEY = "srv-key-5d1f0c2a9e"
WRONG_KEY = "wrong-key-77ab31c4f0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(demo_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    """``python -m llama_cpp.server`` on a free loopback port, requiring SERVER_KEY."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("server") / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(demo_gguf), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "512", "--n_threads", "1", "--n_threads_batch", "1",
         "--api_key", SERVER_KEY, "--verbose", "False",
         # concurrent requests queue, as llama-server's do, instead of cutting off the one streaming
         "--interrupt_requests", "False"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                req = urllib.request.Request(url + "/models", headers={"Authorization": f"Bearer {SERVER_KEY}"})
                with urllib.request.urlopen(req, timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def rs(db: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", *args, "--db", str(db)], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def _db_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def _rows(db: Path, sql: str, params: tuple = ()) -> list[dict]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, params)]


KEY_ENV = {"SRV_KEY": SERVER_KEY, "BAD_KEY": WRONG_KEY}


@pytest.fixture(scope="module")
def db(server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with three endpoints on the server (right key, wrong key) and one on a dead port."""
    path = tmp_path_factory.mktemp("db") / "lab.db"
    out = rs(path, "endpoints", "add", "srv", "--url", server, "--model", "smollm", "--api-key-env", "SRV_KEY",
             "--price-in", "0.15", "--price-out", "0.6")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"added endpoint:srv: smollm at {server}, key from $SRV_KEY"
    for name, url, env in (("badkey", server, "BAD_KEY"), ("dead", f"http://127.0.0.1:{_free_port()}/v1", "SRV_KEY")):
        assert rs(path, "endpoints", "add", name, "--url", url, "--model", "smollm", "--api-key-env", env).returncode == 0
    return path


def test_registry_add_list_rm_and_refusals(db: Path, server: str) -> None:
    listed = json.loads(rs(db, "endpoints", "list", "-o", "json").stdout)
    assert [(e["name"], e["url"], e["model"], e["api_key_env"]) for e in listed][-1] == ("srv", server, "smollm", "SRV_KEY")
    srv = next(e for e in listed if e["name"] == "srv")
    assert (srv["price_in_per_mtok"], srv["price_out_per_mtok"]) == (0.15, 0.6)
    # A key given where the variable's name belongs is refused, and not echoed.
    out = rs(db, "endpoints", "add", "x", "--url", server, "--model", "m", "--api-key-env", "sk-" + SERVER_KEY)
    assert out.returncode == 1 and SERVER_KEY not in out.stderr
    assert out.stderr == "error: --api-key-env takes the NAME of an environment variable (e.g. OPENAI_API_KEY), not the key.\n"
    out = rs(db, "endpoints", "add", "srv", "--url", server, "--model", "m")
    assert out.returncode == 1 and "exists" in out.stderr
    assert rs(db, "endpoints", "add", "tmp", "--url", "ftp://host", "--model", "m").returncode == 1
    assert rs(db, "endpoints", "add", "tmp", "--url", server, "--model", "m").returncode == 0
    out = rs(db, "endpoints", "rm", "tmp")
    assert out.returncode == 0 and out.stdout.strip() == "removed endpoint:tmp (its runs keep their results)"
    assert "tmp" not in [e["name"] for e in json.loads(rs(db, "endpoints", "list", "-o", "json").stdout)]
    # Removed from the list, the row stays for the runs that name it.
    assert _rows(db, "select removed_at is not null as gone from endpoints where name = 'tmp'") == [{"gone": 1}]
    out = rs(db, "eval", "endpoint:tmp", "--suite", "demo")
    assert out.returncode == 1 and out.stderr.startswith("error: No endpoint called 'tmp' (registered: ")


def test_eval_on_the_demo_suite_stores_items_and_constraint_notes(db: Path) -> None:
    out = rs(db, "eval", "endpoint:srv", "--suite", "demo", "--limit", "2", "-o", "json", env=KEY_ENV)
    assert out.returncode == 0, out.stderr
    (run,) = json.loads(out.stdout)
    assert run["model_filename"] == "endpoint:srv" and run["n_items"] == 2 and run["constrained"] == 1
    items = _rows(db, "select * from eval_items where eval_run_id = ? order by item_index", (run["id"],))
    assert [i["item_id"] for i in items] == ["order-01", "order-02"]
    assert run["n_correct"] == sum(i["correct"] for i in items) and run["accuracy"] == run["n_correct"] / 2
    endpoint_id = _rows(db, "select id from endpoints where name = 'srv'")[0]["id"]
    for item in items:
        assert item["status"] == "ok" and item["model_id"] == endpoint_id
        # llama.cpp's server rejects response_format json_schema; the schema goes as json_object + schema.
        assert item["constraint_note"] == ("JSON schema sent as response_format json_object with schema "
                                           "(the server rejected json_schema)")
        assert item["format_valid"] == 1 and json.loads(item["output"]).keys() == {"name", "quantity", "city"}
        assert item["latency_ms"] > 0 and 0 < item["n_tokens"] <= 48 and item["n_prompt_tokens"] > 20
    assert "note: endpoint:srv: 2 items: JSON schema sent as response_format json_object" in out.stderr
    (stored,) = _rows(db, "select * from runs where id = ?", (run["run_id"],))
    assert stored["status"] == "ok" and stored["model_id"] == endpoint_id and stored["kind"] == "eval"
    assert SERVER_KEY.encode() not in _db_bytes(db) and SERVER_KEY not in out.stdout + out.stderr
    # Its cost: the endpoint's prices (0.15 in, 0.60 out per 1M) on the tokens the API counted.
    from lab.cost import eval_run_cost
    from lab.store import Store

    store = Store(db)
    cost = eval_run_cost(store, run["id"])
    store.close()
    n_in, n_out = sum(i["n_prompt_tokens"] for i in items), sum(i["n_tokens"] for i in items)
    assert (cost["n_prompt_tokens"], cost["n_generated"]) == (n_in, n_out)
    assert cost["usd"] == pytest.approx((n_in * 0.15 + n_out * 0.60) / 1e6)
    assert cost["usd_per_mtok"] == pytest.approx(cost["usd"] / n_out * 1e6)


def test_grammar_constraints_run_unconstrained_and_say_so(server: str, tmp_path: Path) -> None:
    from lab.endpoints import add_endpoint
    from lab.evals.endpoint_runner import run_evals
    from lab.evals.runner import EvalOptions
    from lab.store import Store

    suite = tmp_path / "mixed.jsonl"
    suite.write_text("\n".join(json.dumps(i) for i in [
        {"id": "pick", "prompt": "Is the sky blue? Answer yes or no.", "scorer": "choice", "choices": ["yes", "no"],
         "expected": "yes", "constraint": "choices", "max_tokens": 3},
        {"id": "gbnf", "prompt": "Say yes.", "scorer": "contains", "expected": "yes",
         "constraint": {"gbnf": 'root ::= "yes"'}, "max_tokens": 3},
        {"id": "json", "prompt": "Reply with a JSON object.", "scorer": "contains", "expected": "{",
         "constraint": "json", "max_tokens": 6},
        # Longer than the server's 512-token context: the API refuses it (400); the next item still runs.
        {"id": "long", "prompt": "word " * 700, "scorer": "contains", "expected": "x", "max_tokens": 3},
        {"id": "after", "prompt": "Say hi.", "scorer": "contains", "expected": "hi", "max_tokens": 3},
    ]) + "\n")
    store = Store(tmp_path / "lab.db")
    os.environ["SRV_KEY_T"] = SERVER_KEY
    try:
        add_endpoint(store, "srv", url=server, model="smollm", api_key_env="SRV_KEY_T")
        (run,) = run_evals(store, EvalOptions(models=["endpoint:srv"], suite=suite, timeout_s=30))
    finally:
        del os.environ["SRV_KEY_T"]
    notes = {i["item_id"]: i["constraint_note"] for i in run["items"]}
    assert notes == {
        "pick": "not sent: a choices grammar cannot be sent to an endpoint; ran unconstrained",
        "gbnf": "not sent: a GBNF grammar cannot be sent to an endpoint; ran unconstrained",
        "json": "sent as response_format json_object (JSON mode)", "long": None, "after": None,
    }
    by_id = {i["item_id"]: i for i in run["items"]}
    assert by_id["json"]["output"].lstrip().startswith("{")  # JSON mode held
    assert [i["status"] for i in run["items"]] == ["ok", "ok", "ok", "error", "ok"]
    assert by_id["long"]["error"].startswith(f"endpoint srv ({server}) answered with a refusal (400): "
                                             "This model's maximum context length is 512 tokens.")
    assert run["n_error"] == 1 and run["status"] == "ok"
    stored = store.query("select item_id, constraint_note from eval_items order by item_index")
    assert {r["item_id"]: r["constraint_note"] for r in stored} == notes


def test_streamed_chat_bench_is_timed_and_counted(db: Path, server: str, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Name three colors."}\n{"prompt": "Count from one to five."}\n')
    out = rs(db, "bench", "endpoint:srv", "--chat", "--prompts", str(prompts), "--chat-max-tokens", "16",
             "-o", "json", env=KEY_ENV)
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["test"] == "chat" and row["model_filename"] == "endpoint:srv" and row["n_prompts"] == 2
    assert 0 < row["ttft_ms"] < row["e2e_ms"]
    assert 0 < row["itl_p50_ms"] <= row["itl_p95_ms"] <= row["itl_p99_ms"]
    assert row["avg_ts"] > 0 and len(row["samples_ts"]) == 2 and len(row["samples_ns"]) == 2
    assert row["e2e_ms"] == pytest.approx(row["avg_ns"] / 1e6)
    assert 2 <= row["n_generated"] <= 32
    (stored,) = _rows(db, "select * from results where run_id = ?", (row["run_id"],))
    assert stored["peak_rss_bytes"] is None and stored["n_threads"] is None  # not measurable remotely: NULL
    endpoint_id = _rows(db, "select id from endpoints where name = 'srv'")[0]["id"]
    assert stored["model_id"] == endpoint_id and stored["ttft_ms"] == row["ttft_ms"]
    shown = rs(db, "results", "--model", "endpoint:srv")
    assert shown.returncode == 0 and "endpoint:srv" in shown.stdout and " chat " in shown.stdout
    assert SERVER_KEY.encode() not in _db_bytes(db)


def test_stream_counts_the_tokens_the_server_generates(server: str) -> None:
    """Greedy, the streamed answer is the non-streamed one: same text, one chunk per token."""
    from lab.endpoints import Caller, Endpoint

    os.environ["SRV_KEY_T"] = SERVER_KEY
    try:
        caller = Caller(Endpoint(id="e", name="srv", url=server, model="smollm", api_key_env="SRV_KEY_T"))
        messages = [{"role": "user", "content": "Name three colors."}]
        streamed = caller.stream_chat(messages, max_tokens=12)
        whole = caller.complete(messages, max_tokens=12)
        caller.close()
    finally:
        del os.environ["SRV_KEY_T"]
    assert streamed["text"] == whole.text and streamed["n_generated"] == whole.n_tokens
    assert len(streamed["gaps_ns"]) == streamed["n_generated"] - 1
    assert streamed["e2e_ns"] >= streamed["ttft_ns"] + sum(streamed["gaps_ns"])
    assert streamed["ts"] == pytest.approx((whole.n_tokens - 1) * 1e9 / sum(streamed["gaps_ns"]))


def test_a_port_where_nothing_listens_is_one_sentence_and_failed_items(db: Path) -> None:
    out = rs(db, "eval", "endpoint:dead", "--suite", "demo", "--limit", "3", env=KEY_ENV)
    assert out.returncode == 1 and out.stdout == "" and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Cannot reach endpoint dead (http://127.0.0.1:")
    assert "(connection refused) after 2 retries; 3 items stored as errors in run " in lines[0]
    (run,) = _rows(db, "select * from runs where model_filename = 'endpoint:dead' and kind = 'eval'")
    assert run["status"] == "failed" and run["error"].startswith("Cannot reach endpoint dead")
    items = _rows(db, "select * from eval_items where run_id = ? order by item_index", (run["id"],))
    assert [i["status"] for i in items] == ["error"] * 3 and sum(i["correct"] for i in items) == 0
    assert items[0]["error"] == run["error"] and items[1]["error"] == "not run: " + run["error"]
    (summary,) = _rows(db, "select * from eval_runs where run_id = ?", (run["id"],))
    assert summary["n_error"] == 3 and summary["accuracy"] == 0.0
    out = rs(db, "bench", "endpoint:dead", "--chat", env=KEY_ENV)
    assert out.returncode == 1 and "Traceback" not in out.stderr and "Cannot reach endpoint dead" in out.stderr


def test_a_refused_key_is_named_by_its_variable_never_shown(db: Path) -> None:
    out = rs(db, "eval", "endpoint:badkey", "--suite", "demo", "--limit", "1", env=KEY_ENV)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: endpoint badkey (http://127.0.0.1:")
    assert "refused the API key from $BAD_KEY (401)" in out.stderr
    out_unset = rs(db, "eval", "endpoint:srv", "--suite", "demo", "--limit", "1", env={"SRV_KEY": ""})
    assert out_unset.returncode == 1
    assert "Endpoint srv reads its API key from $SRV_KEY, which is not set" in out_unset.stderr
    stored = _db_bytes(db)
    for key in (SERVER_KEY, WRONG_KEY):
        assert key.encode() not in stored and key not in out.stdout + out.stderr


def test_export_and_merge_carry_the_endpoint_a_run_names(tmp_path: Path) -> None:
    from lab import fleet
    from lab.endpoints import add_endpoint, remove_endpoint
    from lab.store import Store

    lab = Store(tmp_path / "lab.db")
    lab.upsert_machine({"id": "m1", "hostname": "edge"})
    endpoint = add_endpoint(lab, "big", url="https://api.example.com/v1", model="big-1", price_in=2.5)
    add_endpoint(lab, "unused", url="https://other.example.com/v1", model="x")
    lab.create_run("eval", machine_id="m1", model_id=endpoint.id, model_filename=endpoint.label, config={})
    counts = fleet.export(lab, tmp_path / "out.db", fleet.select(lab, model="endpoint:big"))
    assert counts["endpoints"] == 1 and counts["runs"] == 1  # only the endpoint the run names
    fresh = Store(tmp_path / "fresh.db")
    (report,) = fleet.merge(fresh, [tmp_path / "out.db"])
    assert report.tables["endpoints"].added == 1
    (row,) = fresh.query("select name, url, model, price_in_per_mtok from endpoints")
    assert row == {"name": "big", "url": "https://api.example.com/v1", "model": "big-1", "price_in_per_mtok": 2.5}
    # Removing it where it was measured is local: merging again is no conflict.
    remove_endpoint(lab, "big")
    (again,) = fleet.merge(fresh, [tmp_path / "lab.db"])
    assert again.tables["endpoints"].conflicts == 0 and again.tables["endpoints"].present == 1
    assert again.tables["endpoints"].added == 1  # "unused" arrives; "big" was there
