"""Offline bundles: a plan with its models, suites and texts packed into a folder whose
install.sh runs it; the full wheelhouse install with networking cut is
benchmarks/offline_bundle.py (minutes: it builds and installs every wheel)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lab.bundle import BundleError, bundle, write_toml
from lab.plan import load_plan, parse_plan


def _plan(tmp_path: Path, tiny_gguf: Path, extra: str = "") -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "text.txt").write_text("the quick brown fox jumps over the lazy dog. " * 200)
    (tmp_path / "src" / "prompts.jsonl").write_text('{"prompt": "say a"}\n')
    plan = tmp_path / "src" / "plan.toml"
    plan.write_text(f'name = "tiny-bundle"\n[[models]]\npath = "{tiny_gguf}"\n{extra}'
                    '[[bench]]\nn_prompt = 8\nn_gen = 2\nrepetitions = 1\nthreads = 1\nchat = true\n'
                    'prompts = "prompts.jsonl"\nchat_max_tokens = 2\n'
                    '[quality]\nreference = "tiny-llama.gguf"\ntext = "text.txt"\nctx = 64\nchunks = 1\n'
                    '[[evals]]\nsuite = "demo"\nlimit = 1\nmax_tokens = 2\n')
    return plan


def test_bundle_holds_the_plan_models_and_data_and_runs(tmp_path: Path, tiny_gguf: Path) -> None:
    plan = load_plan(_plan(tmp_path, tiny_gguf))
    out = tmp_path / "bundle"
    report = bundle(plan, out, wheels=False)

    bundled = load_plan(out / "plan.toml")
    assert bundled.name == "tiny-bundle"
    assert bundled.models[0].path == (out / "models" / "tiny-llama.gguf")
    sha = report.files["models/tiny-llama.gguf"]
    assert bundled.models[0].sha256 == sha
    assert (out / "models" / "tiny-llama.gguf").read_bytes() == tiny_gguf.read_bytes()
    assert bundled.quality is not None and bundled.quality.reference is bundled.models[0]
    assert bundled.quality.text == (out / "texts" / "text.txt")
    assert bundled.bench[0].prompts_file == (out / "texts" / "prompts.jsonl")
    assert Path(bundled.evals[0].suite) == (out / "suites" / "orders.jsonl")
    manifest = json.loads((out / "bundle.json").read_text())
    assert set(manifest["files"]) == {"models/tiny-llama.gguf", "texts/text.txt", "texts/prompts.jsonl",
                                      "suites/orders.jsonl"}
    assert subprocess.run(["sh", "-n", str(out / "install.sh")]).returncode == 0

    # install.sh with an installed Rightsizer (no wheelhouse): runs the bundled plan into the lab home.
    home = tmp_path / "device-home"
    env = {**os.environ, "RIGHTSIZER_HOME": str(home), "RIGHTSIZER": f"{sys.executable} -m lab"}
    done = subprocess.run(["sh", str(out / "install.sh"), "-o", "json"], capture_output=True, text=True, env=env,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    steps = json.loads(done.stdout)["steps"]
    assert [s["status"] for s in steps] == ["done", "done"]  # the bench, the eval (the reference is the only model)
    with sqlite3.connect(home / "rightsizer.db") as conn:
        tests = sorted(r[0] for r in conn.execute("select test from results"))
        paths = {r[0] for r in conn.execute("select path from models")}
    assert tests == ["chat", "pp8", "tg2"]
    assert paths == {str((out / "models" / "tiny-llama.gguf").resolve())}


def test_bundle_refuses_a_used_folder_and_a_wrong_sha(tmp_path: Path, tiny_gguf: Path) -> None:
    plan = load_plan(_plan(tmp_path, tiny_gguf))
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(BundleError, match="exists and is not an empty folder"):
        bundle(plan, used, wheels=False)
    assert (used / "keep.txt").read_text() == "mine" and len(list(used.iterdir())) == 1

    pinned = parse_plan(f'[[models]]\npath = "{tiny_gguf}"\nsha256 = "{"1" * 64}"\n[[bench]]\n', tmp_path / "p.toml")
    with pytest.raises(Exception, match="the plan pins"):
        bundle(pinned, tmp_path / "new", wheels=False)


def test_write_toml_round_trips() -> None:
    import tomllib

    data = {"name": "a \"quoted\" name", "models": [{"path": "m.gguf", "sha256": "ab"}, {"name": "demo"}],
            "bench": [{"n_prompt": [64, 128], "chat": True, "timeout": 1.5}], "limits": {"max_memory": "1GiB"}}
    assert tomllib.loads(write_toml(data, "# header")) == data


def test_platform_tags_add_the_older_manylinux_tags_a_device_runs() -> None:
    from lab.bundle import platform_tags

    tags = platform_tags("manylinux_2_28_aarch64")
    assert tags[0] == "manylinux_2_28_aarch64" and tags[-1] == "manylinux2014_aarch64"
    assert "manylinux_2_27_aarch64" in tags and "manylinux_2_17_aarch64" in tags  # numpy's, CMake's
    assert "manylinux_2_29_aarch64" not in tags and len(tags) == 13
    assert platform_tags("macosx_14_0_arm64") == ["macosx_14_0_arm64"] and platform_tags(None) == []
