"""Which chat template a chat run used — the model's own (as the llama.cpp built-in that renders
it), or the plain fallback for a model without one — is stored, shown and warned about, in
``bench --chat`` and in ``eval``."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab.store import Store
from tiny_model import write_tiny_llama

WARNING = ("warning: {} has no chat template; its chat prompts were sent as plain \"role: content\" lines, "
           "not as the model expects them")


@pytest.fixture(scope="module")
def no_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("nt") / "tiny-plain.gguf", chat_template=False)


def _lab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True)


def test_bench_chat_records_and_shows_the_template(no_template: Path, tiny_gguf: Path, demo_gguf: Path,
                                                   tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"messages": [{"role": "user", "content": "Say hi."}]}) + "\n")
    db = tmp_path / "lab.db"
    common = ["-p", "8", "-n", "2", "-r", "1", "-t", "1", "--chat", "--prompts", str(prompts),
              "--chat-max-tokens", "4", "--db", str(db)]
    out = _lab("bench", str(no_template), str(tiny_gguf), str(demo_gguf), *common, "-o", "json")
    assert out.returncode == 0, out.stderr
    chats = {r["model_filename"]: r for r in json.loads(out.stdout) if r["test"] == "chat"}
    assert {k: r["chat_template"] for k, r in chats.items()} == {
        "tiny-plain.gguf": "fallback", "tiny-llama.gguf": "model:chatml", demo_gguf.name: "model:chatml"}
    # one warning, for the model without a template only
    assert [ln for ln in out.stderr.splitlines() if ln.startswith("warning:")] == [WARNING.format("tiny-plain.gguf")]
    stored = Store(db).query("select model_filename, chat_template, test from results order by model_filename, test")
    assert {(r["model_filename"], r["test"]): r["chat_template"] for r in stored} == {
        ("tiny-plain.gguf", "chat"): "fallback", ("tiny-plain.gguf", "pp8"): None, ("tiny-plain.gguf", "tg2"): None,
        ("tiny-llama.gguf", "chat"): "model:chatml", ("tiny-llama.gguf", "pp8"): None,
        ("tiny-llama.gguf", "tg2"): None, (demo_gguf.name, "chat"): "model:chatml", (demo_gguf.name, "pp8"): None,
        (demo_gguf.name, "tg2"): None}
    # csv and the table show it too
    out = _lab("bench", str(no_template), *common, "-o", "csv")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["test"], r["chat_template"]) for r in rows] == [("pp8", ""), ("tg2", ""), ("chat", "fallback")]
    out = _lab("bench", str(tiny_gguf), *common, "-o", "md")
    assert out.returncode == 0, out.stderr
    header, _, row = out.stdout.strip().splitlines()[-3:]
    assert header.split("|")[-2].strip() == "chat template" and row.split("|")[-2].strip() == "model:chatml"
    assert "warning:" not in out.stderr


def test_eval_records_and_shows_the_template(no_template: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "Say a"}],
                                "scorer": "contains", "expected": "a"}) + "\n")
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"id": "r", "prompt": "a b c", "raw": True, "scorer": "contains", "expected": "a"}) + "\n")
    db = tmp_path / "lab.db"
    args = ["-t", "1", "--max-tokens", "4", "--db", str(db)]
    out = _lab("eval", str(no_template), str(tiny_gguf), "--suite", str(chat), *args, "-o", "json")
    assert out.returncode == 0, out.stderr
    assert [(r["model_filename"], r["chat_template"]) for r in json.loads(out.stdout)] == [
        ("tiny-plain.gguf", "fallback"), ("tiny-llama.gguf", "model:chatml")]
    assert [ln for ln in out.stderr.splitlines() if ln.startswith("warning:")] == [WARNING.format("tiny-plain.gguf")]
    # a suite of raw prompts renders no chat: nothing to record, nothing to warn about
    out = _lab("eval", str(no_template), "--suite", str(raw), *args, "-o", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["chat_template"] is None and "warning:" not in out.stderr
    stored = Store(db).query("select model_filename, suite, chat_template from eval_runs order by created_at")
    assert [(r["model_filename"], r["suite"], r["chat_template"]) for r in stored] == [
        ("tiny-plain.gguf", "chat", "fallback"), ("tiny-llama.gguf", "chat", "model:chatml"),
        ("tiny-plain.gguf", "raw", None)]
    out = _lab("eval", str(no_template), "--suite", str(chat), *args, "-o", "table")
    assert out.returncode == 0, out.stderr
    assert "chat template" in out.stdout.splitlines()[0] and "fallback" in out.stdout.splitlines()[-1]
    assert "n/a" in _lab("eval", str(tiny_gguf), "--suite", str(raw), *args, "-o", "table").stdout.splitlines()[-1]
