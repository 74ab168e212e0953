"""Plans: init -> check -> run -> run again, through the real command on tiny models and the
demo model, with every step stored in SQLite and a rerun that stores nothing new."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lab.plan import PlanError, load_plan, parse_plan


def rs(*args: str, db: Path | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lab", *args] + (["--db", str(db)] if db is not None else [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, cwd=cwd,
                          env=os.environ.copy())


def counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {t: conn.execute(f"select count(*) from {t}").fetchone()[0]
                for t in ("runs", "results", "samples", "eval_runs", "eval_items", "models", "machines")}


TINY_PLAN = """\
name = "tiny"
[[models]]
path = "{model}"
[[bench]]
n_prompt = 16
n_gen = "4"
repetitions = 1
threads = 1
[[evals]]
suite = "demo"
max_tokens = 4
limit = 2
threads = 1
[limits]
min_tg = 1
tg_test = "tg4"
pp_test = "pp16"
"""


def test_init_check_run_and_run_again(tmp_path: Path, tiny_gguf: Path) -> None:
    db = tmp_path / "lab.db"
    init = rs("plan", "init", str(tiny_gguf))
    assert init.returncode == 0, init.stderr
    assert f'path = "{tiny_gguf}"' in init.stdout and "sha256 = " in init.stdout
    # the example as written (512/128, 5 repetitions, 20 eval items) trimmed to a tiny run
    text = (init.stdout.replace("n_prompt = 512", "n_prompt = 32").replace("n_gen = 128", "n_gen = 4")
            .replace("repetitions = 5", "repetitions = 1").replace("max_tokens = 128", "max_tokens = 4")
            .replace("limit = 20", "limit = 2").replace('"tg128"', '"tg4"').replace('"pp512"', '"pp32"'))
    plan = tmp_path / "plan.toml"
    plan.write_text(text)

    check = rs("plan", "check", str(plan), db=db)
    assert check.returncode == 0, check.stderr
    assert "bench 1" in check.stdout and "eval 1 (constrained)" in check.stdout
    assert "2 step(s) to run, 0 already stored here" in check.stdout
    assert "~" in check.stdout  # no speeds stored yet: the estimate is a guess and says so

    first = rs("run", str(plan), "-o", "json", db=db)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert [(s["label"], s["status"]) for s in report["steps"]] == [("bench 1", "done"), ("eval 1 (constrained)", "done")]
    after_first = counts(db)
    assert after_first["results"] == 2 and after_first["eval_items"] == 2 and after_first["eval_runs"] == 1
    with sqlite3.connect(db) as conn:
        tagged = conn.execute("select kind, status from runs where plan_step is not null order by kind").fetchall()
    assert tagged == [("bench", "ok"), ("eval", "ok")]
    verdict = report["verdict"]
    assert [c["model_filename"] for c in verdict["candidates"]] == [tiny_gguf.name]
    assert "tg4 t/s" in verdict["candidates"][0]["reason"] or "tg4 t/s" in verdict["summary"]

    check_again = rs("plan", "check", str(plan), db=db)
    assert "0 step(s) to run, 2 already stored here" in check_again.stdout
    assert "~" not in check_again.stdout.split("|")[-2]  # speeds are measured now

    second = rs("run", str(plan), "-o", "json", db=db)
    assert second.returncode == 0, second.stderr
    assert [s["status"] for s in json.loads(second.stdout)["steps"]] == ["skipped", "skipped"]
    assert counts(db) == after_first

    # A new sweep in the plan: only it runs (what was stored is kept and skipped).
    plan.write_text(text + "\n[[bench]]\nn_prompt = 0\nn_gen = 8\nrepetitions = 1\nthreads = 1\n")
    third = rs("run", str(plan), "-o", "json", db=db)
    assert [s["status"] for s in json.loads(third.stdout)["steps"]] == ["skipped", "done", "skipped"]
    assert counts(db)["results"] == after_first["results"] + 1


def test_demo_plan_checks(tmp_path: Path, demo_gguf: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(rs("plan", "init").stdout)
    loaded = load_plan(plan)
    assert [m.name for m in loaded.models] == ["demo"]
    assert loaded.bench[0].n_prompt == [64] and loaded.bench[0].n_gen == [16] and loaded.bench[0].repetitions == 2
    assert loaded.evals[0].limit == 4 and loaded.limits["tg_test"] == "tg16"
    check = rs("plan", "check", str(plan), db=tmp_path / "lab.db")
    assert check.returncode == 0, check.stderr
    assert check.stdout.count(demo_gguf.name) == 2


def test_unknown_key_is_named_with_its_line(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text('name = "x"\n[[models]]\nname = "demo"\n\n[[bench]]\nn_prompt = 64\nn_gens = 16\n'
                    '[limits]\nmin_tg = "fast"\n')
    out = rs("run", str(plan), db=tmp_path / "lab.db")
    assert out.returncode == 1
    assert "plan.toml line 7, bench[0].n_gens: unknown key 'n_gens'" in out.stderr
    assert "plan.toml line 9, limits.min_tg: must be an integer or a number" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "lab.db").exists() or counts(tmp_path / "lab.db")["runs"] == 0


@pytest.mark.parametrize("text,message", [
    ('[[models]]\nhub = "o/r/f.gguf"\n[[bench]]\n', "a Hub model needs revision"),
    ('[[models]]\nname = "demo"\npath = "x.gguf"\n[[bench]]\n', "give exactly one of name, path or hub"),
    ('[[models]]\nname = "demo"\n[[bench]]\nn_prompt = "64,x"\n', "n_prompt (-p) takes a comma list of integers"),
    ('[[models]]\nname = "demo"\n[[bench]]\nflash_attn = "maybe"\n', "takes on, off or auto"),
    ('[[models]]\nname = "demo"\n', "nothing to measure"),
    ('[[models]]\nname = "demo"\n[[evals]]\nsuite = "demo"\nconstraint = "always"\n', "takes on, off or both"),
    ("[[models]\n", "is not valid TOML"),
])
def test_invalid_plans(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_plan(text, tmp_path / "p.toml")


def test_check_names_missing_files_and_what_does_not_fit(tmp_path: Path, tiny_gguf: Path) -> None:
    from lab.plan_run import check_plan
    from lab.store import Store

    plan = parse_plan(f'[[models]]\npath = "missing.gguf"\n[[models]]\npath = "{tiny_gguf}"\n'
                      '[[evals]]\nsuite = "nosuch.jsonl"\n', tmp_path / "p.toml")
    report = check_plan(plan, Store(tmp_path / "lab.db"))
    assert f"No such model file: {tmp_path / 'missing.gguf'}" in report.problems
    assert any(p.startswith("evals[0].suite: No such suite file") for p in report.problems)

    fits = parse_plan(f'[[models]]\npath = "{tiny_gguf}"\n[[bench]]\nn_prompt = 16\n', tmp_path / "p.toml")
    report = check_plan(fits, None, available_bytes=1000)
    assert len(report.problems) == 1
    assert "tiny-llama.gguf needs about" in report.problems[0] and "0.00 GiB is available" in report.problems[0]
    assert check_plan(fits, None).problems == []


def test_failing_steps_are_stored_with_their_reason(tmp_path: Path, tiny_gguf: Path) -> None:
    db = tmp_path / "lab.db"
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"this is not a model" * 100)
    wrong_sha = "0" * 64
    plan = tmp_path / "plan.toml"
    plan.write_text(f'[[models]]\npath = "corrupt.gguf"\n[[models]]\npath = "{tiny_gguf}"\nsha256 = "{wrong_sha}"\n'
                    f'[[models]]\npath = "{tiny_gguf}"\n'
                    '[[bench]]\nn_prompt = 8\nn_gen = 0\nrepetitions = 1\nthreads = 1\n')
    out = rs("run", str(plan), "-o", "json", db=db)
    assert out.returncode == 2, out.stderr
    steps = json.loads(out.stdout)["steps"]
    assert [s["status"] for s in steps] == ["failed", "failed", "done"]
    assert "not a GGUF" in steps[0]["error"]
    assert f"not the {wrong_sha[:12]}… the plan pins" in steps[1]["error"]
    with sqlite3.connect(db) as conn:
        failed = conn.execute("select model_filename, error, plan_step from runs where status = 'failed' "
                              "order by started_at").fetchall()
    assert [f[0] for f in failed] == ["corrupt.gguf", "tiny-llama.gguf"]
    assert "not a GGUF" in failed[0][1] and "the plan pins" in failed[1][1]
    assert all(f[2] for f in failed)
    # Run again: the done step is skipped, the failed ones are tried (and fail) again.
    again = rs("run", str(plan), "-o", "json", db=db)
    assert again.returncode == 2
    assert [s["status"] for s in json.loads(again.stdout)["steps"]] == ["failed", "failed", "skipped"]
    assert counts(db)["results"] == 1
