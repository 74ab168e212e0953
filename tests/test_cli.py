"""The command line as a user meets it: real processes, real exit codes, real output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


def rs(*args: str, db: Path | None = None, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lab", *args]
    if db is not None:
        cmd += ["--db", str(db)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def test_help_is_fast() -> None:
    rs("--help")  # warm the file cache
    best = min(_timed(["--help"]) for _ in range(3))
    assert best < 0.5, f"rightsizer --help took {best:.2f} s"


def _timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    out = rs(*args)
    assert out.returncode == 0
    return time.perf_counter() - t0


def test_help_lists_every_command() -> None:
    out = rs("--help").stdout
    for command in ("bench", "results", "models", "doctor"):
        assert command in out
    models = rs("models", "--help").stdout
    for command in ("list", "info"):
        assert command in models


@pytest.mark.parametrize("args,message", [
    (["bench", "/no/such/model.gguf"], "No such file"),
    (["bench", "not-a-model-name"], "No model named 'not-a-model-name'"),
    (["models", "info", "/no/such.gguf"], "No such file"),
    (["bench", "demo", "-p", "x"], "comma list of integers"),
])
def test_user_errors_are_one_sentence(args: list[str], message: str, tmp_path: Path) -> None:
    out = rs(*args)
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len([line for line in out.stderr.splitlines() if line.strip()]) <= 3


def test_not_gguf_and_truncated(tmp_path: Path, tiny_gguf: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_text("hello")
    out = rs("bench", str(bad), db=tmp_path / "lab.db")
    assert out.returncode == 1 and "is not a GGUF file" in out.stderr and "Traceback" not in out.stderr
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:-1000])
    out = rs("bench", str(cut), db=tmp_path / "lab.db")
    assert out.returncode == 1 and "truncated" in out.stderr


def test_bench_outputs_and_results(tiny_gguf: Path, tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    out = rs("bench", str(tiny_gguf), "-p", "16", "-n", "4", "-r", "2", "-t", "1", "-o", "json", db=db)
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    assert [r["test"] for r in records] == ["pp16", "tg4"]
    for r in records:
        for key in ("n_prompt", "n_gen", "n_depth", "avg_ts", "stddev_ts", "avg_ns", "stddev_ns", "samples_ts",
                    "samples_ns", "peak_rss_bytes", "run_id", "model_filename", "n_threads", "cpu_info", "noisy"):
            assert key in r
        assert len(r["samples_ns"]) == 2 and isinstance(r["noisy"], bool)
    table = rs("bench", str(tiny_gguf), "-p", "16", "-n", "0", "-r", "1", db=db)
    lines = table.stdout.strip().splitlines()
    assert lines[0].startswith("| model") and "t/s" in lines[0] and "peak RSS" in lines[0]
    assert "pp16" in lines[2] and "n/a" in lines[2]  # no GPU here: VRAM is n/a
    csv_out = rs("results", "--test", "pp16", "-o", "csv", db=db)
    assert csv_out.stdout.splitlines()[0].startswith("run_id,")
    assert len(csv_out.stdout.strip().splitlines()) == 3  # header + two pp16 results
    jl = [json.loads(line) for line in rs("results", "-o", "jsonl", db=db).stdout.splitlines()]
    assert len(jl) == 3 and {r["test"] for r in jl} == {"pp16", "tg4"}
    runs = rs("results", "--runs", "-o", "json", db=db)
    assert [r["status"] for r in json.loads(runs.stdout)] == ["ok", "ok"]


def test_models_info_json(tiny_gguf: Path) -> None:
    out = rs("models", "info", str(tiny_gguf), "-c", "1024", "-o", "json")
    info = json.loads(out.stdout)
    assert info["n_layer"] == 2 and info["arch"] == "llama" and info["has_chat_template"] is True
    assert info["memory_estimate"]["kv_bytes"] == 2 * 2 * 16 * 2 * 2 * 1024
    assert info["metadata"]["general.name"] == "tiny-test-llama"


def test_models_list_finds_the_models_folder(tiny_gguf: Path, tmp_path: Path, lab_home: Path) -> None:
    folder = lab_home / "models"
    folder.mkdir()
    (folder / "mine-Q8_0.gguf").write_bytes(tiny_gguf.read_bytes())
    (folder / "partial.gguf.incomplete").write_bytes(b"GGUF")
    out = rs("models", "list", "-o", "json")
    names = [m["name"] for m in json.loads(out.stdout)]
    assert "mine-Q8_0.gguf" in names and "demo" in names
    assert not any("partial" in n for n in names)


# --- --db before and after every command -------------------------------------------------------


def _commands(group: "click.Group", path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], "click.Command"]]:
    """Every command of the click tree, groups and leaves, with the words that reach it."""
    import click

    found = []
    for name, command in sorted(group.commands.items()):
        found.append((path + (name,), command))
        if isinstance(command, click.Group):
            found += _commands(command, path + (name,))
    return found


def test_every_command_takes_db_after_its_name(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lab.cli import cli

    commands = _commands(cli)
    leaves = [" ".join(p) for p, c in commands if not hasattr(c, "commands")]
    assert {"bench", "results", "doctor", "models list", "models info", "models pull", "import llama-bench"} <= set(leaves)
    refused = {}
    for path, _ in commands:
        # click's own parser: an unknown --db fails before --help is acted on.
        result = CliRunner().invoke(cli, [*path, "--db", str(tmp_path / "x.db"), "--help"])
        if result.exit_code != 0:
            refused[" ".join(path)] = result.output.strip().splitlines()[-1]
    assert not refused, f"--db is refused after: {refused}"


def _llama_bench_json(tmp_path: Path) -> Path:
    entry = {
        "build_commit": "8cf427ff", "cpu_info": "Test CPU", "gpu_info": "", "backends": "CPU",
        "model_filename": "models/x-Q4_K_M.gguf", "model_type": "llama 1B Q4_K - Medium", "model_size": 800000000,
        "model_n_params": 1000000000, "n_batch": 2048, "n_ubatch": 512, "n_threads": 4, "type_k": "f16",
        "type_v": "f16", "n_gpu_layers": 0, "flash_attn": False, "use_mmap": True, "n_prompt": 512, "n_gen": 0,
        "n_depth": 0, "test_time": "2025-04-24T11:58:50Z", "avg_ns": 1000000000, "stddev_ns": 0, "avg_ts": 512.0,
        "stddev_ts": 0.0, "samples_ns": [1000000000], "samples_ts": [512.0],
    }
    path = tmp_path / "llama-bench.json"
    path.write_text(json.dumps([entry]))
    return path


def test_db_before_or_after_the_command_is_the_database_used(tmp_path: Path, lab_home: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    imported = rs("import", "llama-bench", str(_llama_bench_json(tmp_path)), "--db", str(a))
    assert imported.returncode == 0, imported.stderr
    assert a.exists() and not (lab_home / "rightsizer.db").exists()

    def tests_in(*args: str, env: dict | None = None) -> list[str]:
        out = rs(*args, "-o", "json", env=env)
        assert out.returncode == 0, out.stderr
        return [r["test"] for r in json.loads(out.stdout)]

    assert tests_in("results", "--db", str(a)) == ["pp512"]
    assert tests_in("--db", str(a), "results") == ["pp512"]
    assert tests_in("--db", str(b), "results", "--db", str(a)) == ["pp512"]  # the nearer one wins
    assert tests_in("--db", str(a), "results", "--db", str(b)) == []
    assert tests_in("results", env={"RIGHTSIZER_DB": str(b)}) == []

    for args in (["doctor", "--db", str(a)], ["--db", str(a), "doctor"], ["--db", str(b), "doctor", "--db", str(a)]):
        out = rs(*args, "-o", "json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["db_path"] == str(a)

    listed = rs("models", "list", "--db", str(a), "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert "demo" in [m["name"] for m in json.loads(listed.stdout)]


def test_command_modules_do_not_import_the_group_that_registers_them() -> None:
    # lab.cli imports every command module to register it; one importing lab.cli back is a circle.
    import ast

    import lab.cli

    folder = Path(lab.cli.__file__).parent
    offenders = {}
    for path in sorted(folder.glob("*.py")):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module == "lab.cli" or (node.module == "lab" and any(
                    a.name == "cli" for a in node.names))):
                offenders.setdefault(path.name, []).append(node.lineno)
            elif isinstance(node, ast.Import) and any(a.name == "lab.cli" for a in node.names):
                offenders.setdefault(path.name, []).append(node.lineno)
    assert not offenders, f"import the --db helpers from lab.cli.db instead (file: lines): {offenders}"
