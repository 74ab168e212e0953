"""The engine end to end: real llama.cpp in a child process, rows in real SQLite, crashes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lab.bench import BenchOptions, plan, run_bench
from lab.engine import protocol
from lab.engine.protocol import BenchItem, BenchJob, ContextParams, ModelParams, TestSpec
from lab.engine.runner import run_child
from lab.errors import LabError, ModelError, NotEnoughMemory
from lab.store import Store


def test_sweep_is_a_cartesian_product(tiny_gguf: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "lab.db")
    events: list[dict] = []
    opts = BenchOptions(models=[str(tiny_gguf)], n_prompt=[32], n_gen=[8], pg=[(16, 4)], n_depth=[0, 16],
                        threads=[1, 2], repetitions=2)
    outcome = run_bench(opts, store, on_event=events.append)
    assert outcome.status == "ok" and len(outcome.run_ids) == 1  # one model instance -> one child
    rows = store.results(run=outcome.run_ids[0], order="test_time")
    # 3 tests x 2 depths x 2 thread counts
    assert len(rows) == 12
    assert sorted({r["test"] for r in rows}) == sorted(
        ["pp32", "tg8", "pp16+tg4", "pp32 @ d16", "tg8 @ d16", "pp16+tg4 @ d16"])
    assert {r["n_threads"] for r in rows} == {1, 2}
    for r in rows:
        samples = json.loads(r["samples_ns"])
        assert len(samples) == 2 and all(s > 0 for s in samples)
        n_tokens = r["n_prompt"] + r["n_gen"]
        expected = sum(n_tokens * 1e9 / s for s in samples) / 2
        assert r["avg_ts"] == pytest.approx(expected)
        assert r["n_ctx"] == r["n_prompt"] + r["n_gen"] + r["n_depth"]
        assert r["peak_rss_bytes"] > tiny_gguf.stat().st_size
        assert r["noisy"] == int(r["cv"] > 0.05)
    run = store.get("runs", outcome.run_ids[0])
    assert run["status"] == "ok" and run["finished_at"] > run["started_at"]
    assert run["load_ms"] > 0
    # the tests arrive as events in order, each with its repetitions
    reps = [e for e in events if e["event"] == "rep"]
    assert len(reps) == 24
    assert [e["event"] for e in events][0] == "run_start" and events[-1]["event"] == "run_end"


def test_model_reloads_only_when_a_model_parameter_changes(tiny_gguf: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "lab.db")
    opts = BenchOptions(models=[str(tiny_gguf)], n_prompt=[16], n_gen=[0], mmap=[0, 1], n_batch=[8, 16], repetitions=1)
    outcome = run_bench(opts, store)
    assert len(outcome.run_ids) == 2  # two mmap values -> two children, batch sizes inside each
    for run_id in outcome.run_ids:
        assert len(store.results(run=run_id)) == 2


def test_demo_model_bench_and_chat_are_stored(demo_gguf: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "Name three colours."}) + "\n"
                       + json.dumps({"messages": [{"role": "user", "content": "Say hi."}]}) + "\n")
    store = Store(tmp_path / "lab.db")
    opts = BenchOptions(models=["demo"], n_prompt=[64], n_gen=[16], repetitions=2, chat=True,
                        prompts_file=prompts, chat_max_tokens=12)
    outcome = run_bench(opts, store)
    assert outcome.status == "ok"
    rows = {r["test"]: r for r in store.results()}
    assert set(rows) == {"pp64", "tg16", "chat"}
    model = store.get("models", rows["pp64"]["model_id"])
    assert model["id"] == hashlib.sha256(demo_gguf.read_bytes()).hexdigest()
    assert model["file_type"] == "Q4_1" and model["model_n_params"] == 134515008
    for r in rows.values():
        # the child maps the 92 MiB of weights: its peak is above that, and the estimate is stored beside it
        assert 96_576_768 < r["peak_rss_bytes"] < 1_000_000_000
        assert r["est_memory_bytes"] > 96_576_768
        assert r["model_type"] == "llama 256M Q4_1"  # llama.cpp's own description, as llama-bench prints
        assert r["peak_vram_bytes"] is None  # no GPU here: NULL, never 0
    chat = rows["chat"]
    assert chat["n_prompts"] == 2 and 2 <= chat["n_generated"] <= 24
    assert 0 < chat["ttft_ms"] < chat["e2e_ms"]
    assert chat["itl_p50_ms"] <= chat["itl_p95_ms"] <= chat["itl_p99_ms"]
    samples = store.samples(outcome.run_ids[0])
    assert len(samples) >= 3
    assert all(s["rss_bytes"] is None or s["rss_bytes"] > 0 for s in samples)
    assert max(s["rss_bytes"] or 0 for s in samples) > 96_576_768
    machine = store.get("machines", rows["pp64"]["machine_id"])
    assert machine["cpu_threads"] >= 1


def test_child_killed_mid_run_keeps_finished_tests(tiny_gguf: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "lab.db")
    pid: dict[str, int] = {}

    def on_event(event: dict) -> None:
        if event["event"] == "hello":
            pid["child"] = event["pid"]
        if event["event"] == "result":
            os.kill(pid["child"], signal.SIGKILL)

    opts = BenchOptions(models=[str(tiny_gguf)], n_prompt=[16], n_gen=[4000], repetitions=50)
    outcome = run_bench(opts, store, on_event=on_event)
    assert outcome.status == "failed"
    run = store.get("runs", outcome.run_ids[0])
    assert run["status"] == "failed" and run["signal"] == signal.SIGKILL
    assert "SIGKILL" in run["error"]
    assert run["log_tail"]  # llama.cpp's log is kept for the post-mortem
    assert [r["test"] for r in store.results(run=run["id"])] == ["pp16"]


def test_model_llama_cpp_cannot_load_is_a_failed_run(tiny_gguf: Path, tmp_path: Path) -> None:
    data = bytearray(tiny_gguf.read_bytes())
    key = b"general.architecture"
    at = data.index(key) + len(key) + 4  # skip the value type
    length = struct.unpack_from("<Q", data, at)[0]
    assert data[at + 8: at + 8 + length] == b"llama"
    data[at + 8: at + 8 + length] = b"llamx"  # an architecture llama.cpp does not know
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(bytes(data))
    store = Store(tmp_path / "lab.db")
    outcome = run_bench(BenchOptions(models=[str(broken)], n_prompt=[8], n_gen=[0], repetitions=1, repack=[0]), store)
    assert outcome.status == "failed"
    run = store.get("runs", outcome.run_ids[0])
    assert run["status"] == "failed" and run["exit_code"] == 2
    assert "could not load broken.gguf" in run["error"]
    assert "llamx" in run["log_tail"]


def test_llama_cpp_debug_lines_are_dropped_unless_asked_for(tiny_gguf: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def log_lines() -> list[str]:
        events: list[dict] = []
        outcome = run_bench(BenchOptions(models=[str(tiny_gguf)], n_prompt=[8], n_gen=[2], repetitions=1),
                            Store(tmp_path / "lab.db"), on_event=events.append)
        assert outcome.status == "ok"
        return [e["line"] for e in events if e["event"] == "log"]

    monkeypatch.delenv("RIGHTSIZER_LLAMA_LOG", raising=False)
    quiet = log_lines()
    monkeypatch.setenv("RIGHTSIZER_LLAMA_LOG", "debug")
    full = log_lines()
    # per-tensor lines are llama.cpp debug output; the context's settings are info
    assert not [ln for ln in quiet if ln.startswith("create_tensor")]
    assert [ln for ln in full if ln.startswith("create_tensor")]
    info = [ln for ln in quiet if ln.startswith("llama_context: n_ctx")]
    assert info and set(info) <= set(full)
    assert len(quiet) < len(full)


def test_refuses_what_does_not_fit(tiny_gguf: Path) -> None:
    with pytest.raises(NotEnoughMemory, match="use --force"):
        plan(BenchOptions(models=[str(tiny_gguf)]), available_bytes=10_000)
    assert plan(BenchOptions(models=[str(tiny_gguf)], force=True), available_bytes=10_000)


def test_bad_inputs_are_user_errors(tmp_path: Path, tiny_gguf: Path) -> None:
    with pytest.raises(ModelError, match="No such file"):
        plan(BenchOptions(models=[str(tmp_path / "nope.gguf")]))
    with pytest.raises(LabError, match="Nothing to run"):
        plan(BenchOptions(models=[str(tiny_gguf)], n_prompt=[0], n_gen=[0]))
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"nope": 1}\n')
    with pytest.raises(LabError, match="line 2"):
        plan(BenchOptions(models=[str(tiny_gguf)], chat=True, prompts_file=bad))


def test_cancel_event_stops_the_child(tiny_gguf: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "lab.db")
    cancel = threading.Event()

    def on_event(event: dict) -> None:
        if event["event"] == "result":
            cancel.set()

    opts = BenchOptions(models=[str(tiny_gguf)], n_prompt=[16], n_gen=[4000], repetitions=50)
    outcome = run_bench(opts, store, on_event=on_event, cancel=cancel)
    assert outcome.status == "cancelled"
    assert store.get("runs", outcome.run_ids[0])["status"] == "cancelled"
    assert len(store.results(run=outcome.run_ids[0])) == 1


def test_cancel_and_timeout_act_within_a_fraction_of_a_second(tiny_gguf: Path) -> None:
    import time

    # a job that keeps the engine silent for many seconds: tg200000 on the tiny model
    job = BenchJob(ModelParams(str(tiny_gguf), repack=False),
                   [BenchItem(TestSpec(n_gen=200_000), ContextParams(n_threads=1))], repetitions=1).to_wire()
    cancel = threading.Event()
    started: dict[str, float] = {}

    def on_event(event: dict) -> None:
        if event["event"] == protocol.TEST_START:
            started["t"] = time.monotonic()
            threading.Timer(0.5, cancel.set).start()

    out = run_child(job, on_event=on_event, cancel=cancel)
    assert out.status == "cancelled" and out.error == "cancelled by the user"
    assert time.monotonic() - started["t"] < 0.5 + 0.5  # the watcher waits on the event, it does not poll

    start = time.monotonic()
    out = run_child(job, on_event=lambda e: None, timeout=2.0)
    elapsed = time.monotonic() - start
    assert out.status == "failed" and out.timed_out and out.error == "the engine took longer than 2 s and was stopped"
    assert 2.0 <= elapsed < 2.0 + 1.0


def test_worker_protocol_direct(tiny_gguf: Path) -> None:
    job = BenchJob(ModelParams(str(tiny_gguf), repack=False), [BenchItem(TestSpec(n_gen=4), ContextParams(n_threads=1))], repetitions=3)
    events: list[dict] = []
    out = run_child(job.to_wire(), on_event=events.append)
    assert out.status == "ok" and out.exit_code == 0
    kinds = [e["event"] for e in events]
    assert kinds == [protocol.HELLO, protocol.LOADED, protocol.TEST_START] + [protocol.REP_START, protocol.REP] * 3 + [
        protocol.TEST_END, protocol.DONE]
    assert [e["rep"] for e in events if e["event"] in (protocol.REP_START, protocol.REP)] == [0, 0, 1, 1, 2, 2]
    assert events[-2]["n_ctx"] == 4 and len(events[-2]["samples_ns"]) == 3
    assert events[-2]["rss_reset_failed"] is False  # /proc/self/clear_refs is writable here


def test_a_spare_worker_runs_a_job_and_an_untaken_one_is_stopped(tiny_gguf: Path) -> None:
    import psutil

    from lab.engine.runner import Spare

    job = BenchJob(ModelParams(str(tiny_gguf), repack=False), [BenchItem(TestSpec(n_gen=4), ContextParams(n_threads=1))],
                   repetitions=2)
    with Spare() as spare:
        worker = spare.take()
        assert worker is not None and spare.take() is None
        events: list[dict] = []
        out = run_child(job.to_wire(), on_event=events.append, worker=worker)
    assert out.status == "ok" and events[0]["pid"] == worker.pid and events[-1]["event"] == protocol.DONE
    assert len(events[-2]["samples_ns"]) == 2
    with Spare() as unused:
        pid = unused._proc.pid
        assert psutil.pid_exists(pid)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


_PRELOAD = """
import sys
from lab.engine import llm
path = sys.argv[1]
llm.preload(path, repack=False)
model, freed = llm.take_preloaded(path, repack=False)
print(model is not None and model.n_vocab, freed)
model.close()
llm.preload(path, repack=False)
print(llm.take_preloaded(path, n_gpu_layers=1, repack=False))  # other settings: freed, not handed out
print(llm.take_preloaded(path, repack=False))  # taken once only
llm.preload(path + ".missing", repack=False)  # a file that does not load is left to the job
print(llm.take_preloaded(path + ".missing", repack=False))
"""


def test_a_preloaded_model_goes_to_the_job_that_opens_it_with_the_same_settings(tiny_gguf: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _PRELOAD, str(tiny_gguf)], capture_output=True, text=True, check=True)
    from lab.gguf_info import inspect

    n_vocab = inspect(tiny_gguf).n_vocab
    assert out.stdout.splitlines() == [f"{n_vocab} False", "(None, True)", "(None, False)", "(None, False)"]


def test_a_spare_told_to_preload_a_file_that_does_not_load_still_runs_its_job(tiny_gguf: Path, tmp_path: Path) -> None:
    from lab.engine.runner import Spare

    job = BenchJob(ModelParams(str(tiny_gguf), repack=False), [BenchItem(TestSpec(n_gen=4), ContextParams(n_threads=1))])
    with Spare() as spare:
        spare.preload(str(tmp_path / "missing.gguf"))
        events: list[dict] = []
        out = run_child(job.to_wire(), on_event=events.append, worker=spare.take())
    assert out.status == "ok" and events[-1]["event"] == protocol.DONE
    assert events[-2]["samples_ns"] and min(events[-2]["samples_ns"]) > 0


_BINDINGS = """
import sys
from lab.engine import llm
L = llm.lib()
print(L.__name__, "jinja2" in sys.modules, "llama_cpp.llama" in sys.modules, "llama_cpp" in sys.modules)
import llama_cpp  # the real package, on top of the bindings already loaded
print(hasattr(llama_cpp, "Llama"), llama_cpp.llama_cpp is L, llama_cpp.llama_backend_init is L.llama_backend_init)
"""


def test_the_engine_loads_the_bindings_without_the_high_level_package() -> None:
    out = subprocess.run([sys.executable, "-c", _BINDINGS], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["llama_cpp.llama_cpp False False False", "True True True"]


def test_unknown_job_kind_is_reported(tmp_path: Path) -> None:
    events: list[dict] = []
    out = run_child({"kind": "nope", "payload": {}}, on_event=events.append)
    assert out.status == "failed" and out.exit_code == 2 and "unknown job kind" in out.error


def test_ctrl_c_in_the_cli_cancels_and_keeps_results(tiny_gguf: Path, tmp_path: Path) -> None:
    import psutil

    db = tmp_path / "lab.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab", "bench", str(tiny_gguf), "-p", "16", "-n", "4000", "-r", "50",
         "-o", "jsonl", "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        # as from a terminal: a suite started in the background (`cmd &`) passes SIGINT on ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())  # pp16 finished
    assert first["test"] == "pp16"
    engines = _engines_of(proc.pid)
    assert len(engines) == 1  # the engine is busy with tg4000
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and "Cancelled" in err
    store = Store(db)
    run = store.get("runs", first["run_id"])
    assert run["status"] == "cancelled"
    assert [r["test"] for r in store.results(run=run["id"])] == ["pp16"]
    # no engine child is left behind: the one that ran is gone, and no engine names this CLI as its parent
    assert engines and not [p for p in engines if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not _engines_of(proc.pid)


def _engines_of(parent_pid: int) -> list[int]:
    """Live engine workers started by ``parent_pid`` (the runner writes it into their environment)."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if "lab.engine.worker" in " ".join(p.info["cmdline"] or ()) and p.info["status"] != psutil.STATUS_ZOMBIE \
                    and p.environ().get("RIGHTSIZER_ENGINE_PARENT") == str(parent_pid):
                found.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl")
def test_an_engine_whose_parent_is_killed_outright_stops_too(tiny_gguf: Path, tmp_path: Path) -> None:
    import psutil

    proc = subprocess.Popen(
        [sys.executable, "-m", "lab", "bench", str(tiny_gguf), "-p", "16", "-n", "200000", "-r", "2",
         "-o", "jsonl", "--db", str(tmp_path / "lab.db")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline())["test"] == "pp16"  # the engine is busy with tg200000: silent for many seconds
    (engine,) = [c for c in psutil.Process(proc.pid).children() if "lab.engine.worker" in " ".join(c.cmdline())]
    proc.kill()  # no chance to cancel anything: only the kernel can stop the engine now
    proc.wait(timeout=30)
    gone, alive = psutil.wait_procs([engine], timeout=10)
    assert gone and not alive


# --- energy over the timed repetitions ----------------------------------------------------------


def _powercap(root: Path, energy_uj: int, max_range_uj: int) -> Path:
    """A powercap tree laid out as the kernel does: one package domain, a core sub-domain."""
    for name, domain in (("intel-rapl:0", "package-0"), ("intel-rapl:0:0", "core")):
        (root / name).mkdir(parents=True)
        (root / name / "name").write_text(domain + "\n")
        (root / name / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
        (root / name / "energy_uj").write_text(f"{energy_uj}\n")
    return root / "intel-rapl:0" / "energy_uj"


def test_energy_is_measured_over_the_timed_repetitions_only(tiny_gguf: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The counter moves by a known amount inside each timed repetition and by other amounts
    outside them (warm-up, between repetitions): only the former may be counted. The handler
    also holds the recorder for a known time inside each repetition (20 ms) and before the
    first (0.5 s), so the span the mean power divides by is bounded on both sides whatever the
    machine's load."""
    import time

    import lab.bench

    max_range = 1_000_000
    counter = _powercap(tmp_path / "powercap", max_range - 3_000, max_range)  # wraps in the first test
    monkeypatch.setenv("RIGHTSIZER_POWERCAP", str(tmp_path / "powercap"))
    # no sampler ticks during the run: every counter read is the recorder's own, on this thread
    monkeypatch.setattr(lab.bench, "SAMPLE_INTERVAL_S", 3600.0)
    value = {"uj": max_range - 3_000}
    inside: dict[str, list[int]] = {}
    current: dict[str, str] = {}

    def bump(uj: int) -> None:
        value["uj"] = (value["uj"] + uj) % max_range
        counter.write_text(f"{value['uj']}\n")

    def on_event(event: dict) -> None:
        kind = event["event"]
        if kind == "test_start":
            current["test"] = event["test"]
            bump(55_555)  # context creation and warm-up: not timed
            time.sleep(0.5)
        elif kind == "rep_start":  # the recorder has read the counters: this is inside the repetition
            uj = 1_000 * (event["rep"] + 1) * (len(inside) + 1)
            inside.setdefault(current["test"], []).append(uj)
            bump(uj)
            time.sleep(0.02)
        elif kind == "rep":  # read at the repetition's end: what follows is between repetitions
            bump(7_777)

    store = Store(tmp_path / "lab.db")
    outcome = run_bench(BenchOptions(models=[str(tiny_gguf)], n_prompt=[16], n_gen=[4], repetitions=3,
                                     n_gpu_layers=[0]), store, on_event=on_event)
    assert outcome.status == "ok"
    rows = {r["test"]: r for r in store.results(run=outcome.run_ids[0])}
    assert set(rows) == set(inside) == {"pp16", "tg4"}
    for test, tokens in (("pp16", 16), ("tg4", 4)):
        row, expected = rows[test], [uj / 1e6 for uj in inside[test]]
        assert row["energy_source"] == "rapl"  # -ngl 0: the CPU packages only
        assert row["energy_j"] == pytest.approx(sum(expected))
        assert json.loads(row["energy_samples_j"]) == pytest.approx(expected)
        assert json.loads(row["energy_by_source"]) == {"rapl": pytest.approx(sum(expected))}
        assert row["j_per_token"] == pytest.approx(sum(expected) / (3 * tokens))
        # mean power over the counted spans only (parent-side clock): three repetitions held
        # 20 ms each, none of the half second before the first
        span_s = row["energy_j"] / row["mean_power_w"]
        assert 3 * 0.02 <= span_s < 0.5


def test_energy_stays_null_without_a_counter(tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIGHTSIZER_POWERCAP", str(tmp_path / "nothing-here"))
    store = Store(tmp_path / "lab.db")
    outcome = run_bench(BenchOptions(models=[str(tiny_gguf)], n_prompt=[8], n_gen=[0], repetitions=2,
                                     n_gpu_layers=[0]), store)
    (row,) = store.results(run=outcome.run_ids[0])
    assert (row["energy_j"], row["energy_source"], row["j_per_token"], row["mean_power_w"]) == (None, None, None, None)
    assert json.loads(row["energy_by_source"]) == {"rapl": None} and row["energy_samples_j"] is None


# --- peak RSS when the per-test reset fails -----------------------------------------------------


def _read_only_proc_works() -> bool:
    """True when this machine lets us run a command with /proc mounted read-only (a user, mount and
    pid namespace, as in a locked-down container); then writing clear_refs fails for real."""
    import shutil

    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-Urmpf", "--mount-proc", "sh", "-c",
                            "mount -o remount,ro /proc && ! (echo 5 > /proc/self/clear_refs) 2>/dev/null"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _read_only_proc_works(), reason="cannot run a command with a read-only /proc here")
def test_a_failed_peak_rss_reset_is_recorded_and_shown(tiny_gguf: Path, tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    bench = [sys.executable, "-m", "lab", "bench", str(tiny_gguf), "-p", "16", "-n", "4", "-r", "1", "--db", str(db)]
    script = 'mount -o remount,ro /proc && exec "$@"'
    locked = subprocess.run(["unshare", "-Urmpf", "--mount-proc", "sh", "-c", script, "sh", *bench, "-o", "json"],
                            capture_output=True, text=True, timeout=300)
    assert locked.returncode == 0, locked.stderr
    records = json.loads(locked.stdout)
    assert [r["rss_reset_failed"] for r in records] == [True, True]
    table = subprocess.run(["unshare", "-Urmpf", "--mount-proc", "sh", "-c", script, "sh", *bench],
                           capture_output=True, text=True, timeout=300)
    assert table.returncode == 0, table.stderr
    cells = [[c.strip() for c in line.split("|")] for line in table.stdout.splitlines() if line.startswith("|")]
    rss_cells = [row[9] for row in cells if row[7] in ("pp16", "tg4")]
    assert len(rss_cells) == 2 and all(cell.endswith("iB*") for cell in rss_cells)
    assert "per-test reset (/proc/self/clear_refs) failed" in table.stdout
    # the same bench with /proc as usual: the reset works and nothing is marked
    normal = subprocess.run(bench, capture_output=True, text=True, timeout=300)
    assert normal.returncode == 0 and "iB*" not in normal.stdout and "clear_refs" not in normal.stdout
    stored = Store(db).results(order="test_time")
    assert [r["rss_reset_failed"] for r in stored] == [1, 1, 1, 1, 0, 0]


# --- the extra CPU buffer types probe -----------------------------------------------------------


def _dies(how: str) -> list[str]:
    """A real child process that ends the given way."""
    return [sys.executable, "-c", f"import os, signal, time, sys\n{how}"]


@pytest.mark.parametrize("how, ok, cached, says", [
    ("sys.exit(0)", True, True, None),
    ("os.kill(os.getpid(), signal.SIGILL)", False, True, None),  # the CPU cannot run the repacked path
    ("os.kill(os.getpid(), signal.SIGSEGV)", False, True, None),
    ("os.kill(os.getpid(), signal.SIGBUS)", False, True, None),
    ("os.kill(os.getpid(), signal.SIGKILL)", False, False, "killed by SIGKILL (out of memory?)"),
    ("os.kill(os.getpid(), signal.SIGABRT)", False, False, "killed by SIGABRT"),
    ("sys.exit(4)", False, False, "decode failed"),
    ("sys.exit(3)", False, False, "could not load the model"),
    ("sys.exit(1)", False, False, "exited with code 1"),
    ("time.sleep(30)", False, False, "did not finish within 1 s"),
])
def test_probe_caches_only_a_cpu_fault(how: str, ok: bool, cached: bool, says: str | None) -> None:
    from lab.engine import probe

    file_type = f"TEST_{abs(hash(how))}"  # a quant type of its own: real verdicts stay untouched
    verdict = probe.extra_bufts_verdict("unused.gguf", file_type, command=_dies(how), timeout=1.0)
    assert (verdict.ok, verdict.cached) == (ok, cached)
    if says is None:
        assert verdict.warning is None
    else:
        assert verdict.warning.startswith("llama.cpp's extra CPU buffer types") and verdict.warning.endswith(says)
    remembered = probe.cached_verdicts()
    assert (file_type in remembered) is cached
    if cached:
        assert remembered[file_type] is ok
        # asked again, the cache answers: a command that would say otherwise is not run
        again = probe.extra_bufts_verdict("unused.gguf", file_type, command=_dies("sys.exit(0 if %s else 132)" % (not ok)))
        assert (again.ok, again.cached) == (ok, True)


def test_a_probe_that_times_out_leaves_the_run_going_without_them(tiny_gguf: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIGHTSIZER_HOME", str(tmp_path / "home"))  # no verdict cached for this model yet
    monkeypatch.setenv("RIGHTSIZER_PROBE_TIMEOUT", "0.001")
    events: list[dict] = []
    store = Store(tmp_path / "lab.db")
    outcome = run_bench(BenchOptions(models=[str(tiny_gguf)], n_prompt=[8], n_gen=[0], repetitions=1), store,
                        on_event=events.append)
    assert outcome.status == "ok"
    (loaded,) = [e for e in events if e["event"] == "loaded"]
    assert loaded["repack"] is False
    warning = "llama.cpp's extra CPU buffer types (AMX/repacked weights) are off for this run: " \
              "their probe did not finish within 0.001 s"
    assert loaded["repack_warning"] == warning
    assert store.get("runs", outcome.run_ids[0])["warnings"] == warning
    assert f"warning: {warning}" in [e["line"] for e in events if e["event"] == "log"]
    from lab.engine.probe import cached_verdicts

    assert cached_verdicts() == {}  # nothing remembered: the next run probes again
