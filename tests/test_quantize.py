"""The quant ladder: llama.cpp's quantizer in an engine child, fallbacks read from its log,
files registered with their base model."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from lab.errors import LabError
from lab.gguf_info import inspect, read_file_header
from lab.quantize import (DEFAULT_LADDER, base_stem, build_ladder, header_fallbacks, ladder_filename,
                          parse_fallback_log, parse_types)
from tiny_model import write_tiny_llama

# Two real lines of llama.cpp's quantizer log (the second with the F16 last resort).
LOG = (
    "[  12/ 272]                 blk.0.attn_q.weight - [  576,   576,     1,     1], type =   q4_1, "
    "warning: blk.0.attn_q.weight                  - ncols    576 not divisible by 256 (required for type    q4_K) "
    "-> falling back to    q5_0\nconverting to q5_0 .. size =     0.20 MiB ->     0.21 MiB\n"
    "warning: blk.3.ffn_down.weight                - ncols     72 not divisible by 256 (required for type    q2_K) "
    "(WARNING: must use F16 due to unusual shape) -> falling back to     f16\n"
)


@pytest.fixture
def store(tmp_path: Path):
    from lab.store import Store

    s = Store(tmp_path / "lab.db")
    yield s
    s.close()


def test_parse_types() -> None:
    assert parse_types(None) == list(DEFAULT_LADDER)
    assert parse_types(" q8_0, Q4_K_M ,q8_0,") == ["Q8_0", "Q4_K_M"]
    with pytest.raises(LabError, match="Unknown quantization type 'Q9_X'"):
        parse_types("Q8_0,Q9_X")
    with pytest.raises(LabError, match="names no quantization type"):
        parse_types(" , ")


def test_names() -> None:
    assert base_stem("SmolLM2-135M-Instruct.Q4_1.gguf") == "SmolLM2-135M-Instruct"
    assert base_stem("llama-3-8b-instruct-Q4_K_M.gguf") == "llama-3-8b-instruct"
    assert base_stem("tiny-llama.gguf") == "tiny-llama"
    assert base_stem("SmolLM2-135M-Instruct.Q8_0.1a2b3c4d.gguf") == "SmolLM2-135M-Instruct"  # a ladder file
    sha = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
    assert ladder_filename(Path("/x/SmolLM2-135M-Instruct.Q4_1.gguf"), "Q2_K", sha) == \
        "SmolLM2-135M-Instruct.Q2_K.9f86d081.gguf"


def test_parse_fallback_log() -> None:
    assert parse_fallback_log(LOG) == [
        {"tensor": "blk.0.attn_q.weight", "ncols": 576, "wanted": "Q4_K", "got": "Q5_0"},
        {"tensor": "blk.3.ffn_down.weight", "ncols": 72, "wanted": "Q2_K", "got": "F16"},
    ]
    assert parse_fallback_log("nothing to see") == []


def test_tiny_ladder_with_fallbacks(tiny_gguf: Path, store, tmp_path: Path) -> None:
    out = tmp_path / "ladder"
    steps = build_ladder(store, _local(tiny_gguf), ["Q8_0", "Q4_K_M", "Q4_0"], out_dir=out, n_threads=1)
    assert [(s.type, s.status) for s in steps] == [("Q8_0", "built"), ("Q4_K_M", "built"), ("Q4_0", "built")]
    q8, q4km, q40 = steps
    base = store.get("models", q8.model_id)["base_model_id"]
    assert base == store.query("select id from models where path = ?", [str(tiny_gguf)])[0]["id"]
    # Q4_0 wants Q6_K for the output matrix, which 64-wide rows cannot hold
    assert q8.fallback_tensors == []
    assert q40.fallback_tensors == [{"tensor": "output.weight", "ncols": 64, "wanted": "Q6_K", "got": "Q8_0"}]
    # rows of 64 or 128 columns cannot hold a 256-block K-quant: every 2-D weight fell back
    header = {t.name: t for t in read_file_header(q4km.path).tensors}
    weights = [t for t in header.values() if len(t.shape) == 2]
    assert {f["tensor"] for f in q4km.fallback_tensors} == {t.name for t in weights}
    for f in q4km.fallback_tensors:
        assert header[f["tensor"]].type_name == f["got"]  # the log says what the file holds
        assert f["ncols"] == header[f["tensor"]].shape[0]
        if f["wanted"] is not None:
            assert f["wanted"] in ("Q4_K", "Q6_K", "Q5_K") and f["got"] in ("Q5_0", "Q8_0", "Q5_1")
    # llama.cpp sends the output matrix to Q8_0 without logging it; the header shows it
    silent = [f for f in q4km.fallback_tensors if f["wanted"] is None]
    assert silent == [{"tensor": "output.weight", "ncols": 64, "wanted": None, "got": "Q8_0"}]
    row = store.get("models", q4km.model_id)
    assert json.loads(row["fallback_tensors"]) == q4km.fallback_tensors and row["source"] == "ladder"
    assert row["path"] == str(out / f"tiny-llama.Q4_K_M.{base[:8]}.gguf") and q4km.path.is_file()
    assert not list(out.glob("*.part"))
    # the three runs are recorded, against the source model
    runs = store.query("select kind, status, model_id from runs order by started_at")
    assert [(r["kind"], r["status"]) for r in runs] == [("quantize", "ok")] * 3
    # a second call keeps the files and still knows their fallbacks
    again = build_ladder(store, _local(tiny_gguf), ["Q4_K_M"], out_dir=out, n_threads=1)
    assert again[0].status == "exists" and again[0].fallback_tensors == q4km.fallback_tensors
    assert again[0].model_id == q4km.model_id
    # read from the header alone (another database), the same tensors
    assert {f["tensor"] for f in header_fallbacks(q4km.path, "Q4_K_M")} == {t.name for t in weights}


def test_no_fallback_when_rows_fit(store, tmp_path: Path) -> None:
    src = write_tiny_llama(tmp_path / "wide.gguf", n_embd=256, n_ff=256, n_head=4, n_head_kv=4)
    (step,) = build_ladder(store, _local(src), ["Q4_K_M"], out_dir=tmp_path / "out", n_threads=1)
    assert step.status == "built" and step.fallback_tensors == []
    types = inspect(step.path).tensor_types
    assert types.get("Q4_K", 0) > 0 and "Q5_0" not in types


def test_requantize_a_quantized_source(tiny_gguf: Path, store, tmp_path: Path) -> None:
    (q8,) = build_ladder(store, _local(tiny_gguf), ["Q8_0"], out_dir=tmp_path / "a", n_threads=1)
    (q4,) = build_ladder(store, _local(q8.path), ["Q4_0"], out_dir=tmp_path / "b", n_threads=1)
    assert q4.status == "built" and inspect(q4.path).file_type == "Q4_0"
    assert store.get("models", q4.model_id)["base_model_id"] == q8.model_id
    config = json.loads(store.query("select config from runs order by started_at desc limit 1")[0]["config"])
    assert config["allow_requantize"] is True


def test_invalid_weights_fail_with_llama_cpps_reason(tiny_gguf: Path, store, tmp_path: Path) -> None:
    data = bytearray(tiny_gguf.read_bytes())
    header = read_file_header(tiny_gguf)
    t = next(t for t in header.tensors if t.name == "blk.0.attn_q.weight")
    start = header.header_size + t.offset
    data[start:start + 64] = struct.pack("<16f", *[float("nan")] * 16)
    bad = tmp_path / "nan.gguf"
    bad.write_bytes(bytes(data))
    (step,) = build_ladder(store, _local(bad), ["Q8_0"], out_dir=tmp_path / "out", n_threads=1)
    assert step.status == "failed" and step.model_id is None
    assert step.error == ("llama.cpp could not quantize nan.gguf to Q8_0 (llama_model_quantize: failed to "
                          "quantize: tensor 'blk.0.attn_q.weight' has invalid data)")
    assert not list((tmp_path / "out").glob("nan.*")) and not list((tmp_path / "out").glob("*.part"))
    run = store.query("select status, error, exit_code from runs")[0]
    assert (run["status"], run["error"], run["exit_code"]) == ("failed", step.error, 2)


def test_ladders_of_two_sources_with_one_stem_never_share_a_file(tiny_gguf: Path, store, tmp_path: Path) -> None:
    """The F32 tiny model and an F16 made from it have one stem; their Q8_0s differ and each is
    linked to its own source, in the default ladder folder of the models folder."""
    from lab import config
    from lab.library import sha256_file

    (f16,) = build_ladder(store, _local(tiny_gguf), ["F16"], out_dir=tmp_path / "f16", n_threads=1)
    sources = {"f32": tiny_gguf, "f16": f16.path}
    sha = {k: sha256_file(p) for k, p in sources.items()}
    built = {k: build_ladder(store, _local(p), ["Q8_0"], n_threads=1)[0] for k, p in sources.items()}
    assert [built[k].status for k in sources] == ["built", "built"]
    folder = config.models_dir() / "ladders" / "tiny-llama"
    assert built["f32"].path == folder / f"tiny-llama.Q8_0.{sha['f32'][:8]}.gguf"
    assert built["f16"].path == folder / f"tiny-llama.Q8_0.{sha['f16'][:8]}.gguf"
    assert built["f32"].path.read_bytes() != built["f16"].path.read_bytes()
    for k in sources:
        row = store.get("models", built[k].model_id)
        assert row["base_model_id"] == sha[k] and row["path"] == str(built[k].path)
        assert built[k].model_id == sha256_file(built[k].path)
    # the run records the source's sha256 it quantized
    configs = [json.loads(r["config"]) for r in store.query("select config from runs where kind = 'quantize' "
                                                             "order by started_at")]
    assert [c["src_sha256"] for c in configs] == [sha["f32"], sha["f32"], sha["f16"]]
    # running a ladder again reuses its own file only
    n_runs = len(configs)
    for k in sources:
        (again,) = build_ladder(store, _local(sources[k]), ["Q8_0"], n_threads=1)
        assert (again.status, again.path, again.model_id) == ("exists", built[k].path, built[k].model_id)
        assert store.get("models", again.model_id)["base_model_id"] == sha[k]
    assert store.query("select count(*) as n from runs where kind = 'quantize'")[0]["n"] == n_runs
    # a file at a ladder's path that the store links to another source is neither reused nor overwritten
    out = tmp_path / "shared"
    (mine,) = build_ladder(store, _local(tiny_gguf), ["Q4_0"], out_dir=out, n_threads=1)
    before = mine.path.read_bytes()
    from lab.library import register

    register(store, mine.path, source="ladder", base_model_id=sha["f16"])
    (clash,) = build_ladder(store, _local(tiny_gguf), ["Q4_0"], out_dir=out, n_threads=1)
    assert clash.status == "failed" and clash.model_id is None
    assert clash.error == (f"{mine.path.name} was built from another source (sha256 {sha['f16'][:12]}); "
                           "rebuild it with --force or choose another --out")
    assert mine.path.read_bytes() == before


def test_refuses_to_overwrite_its_source(tiny_gguf: Path, store, tmp_path: Path) -> None:
    from lab.library import sha256_file

    src = tmp_path / f"x.Q4_0.{sha256_file(tiny_gguf)[:8]}.gguf"  # the name its own Q4_0 rung would take
    src.write_bytes(tiny_gguf.read_bytes())
    with pytest.raises(LabError, match="would overwrite its source"):
        build_ladder(store, _local(src), ["Q4_0"], out_dir=tmp_path, n_threads=1)


def test_demo_ladder_takes_seconds(demo_gguf: Path, demo_ladder) -> None:
    steps, elapsed = demo_ladder.steps, demo_ladder.seconds  # built once per session, timed (conftest)
    assert [s.status for s in steps] == ["built"] * len(DEFAULT_LADDER)
    by = {s.type: s for s in steps}
    assert by["F16"].fallback_tensors == [] and by["Q8_0"].fallback_tensors == []
    # 576-wide rows: the K-quants are mostly something else
    q2 = by["Q2_K"]
    got = {f["got"] for f in q2.fallback_tensors}
    assert len(q2.fallback_tensors) >= 150 and "Q4_0" in got
    km = by["Q4_K_M"].fallback_tensors
    wanted = [f["wanted"] for f in km if f["wanted"] is not None]
    assert wanted and all(w.endswith("_K") for w in wanted)
    # the tied embedding (the output matrix) went to Q8_0 silently
    assert [f for f in km if f["wanted"] is None] == [
        {"tensor": "token_embd.weight", "ncols": 576, "wanted": None, "got": "Q8_0"}]
    sizes = [by[t].file_size for t in ("F16", "Q8_0", "Q4_0", "Q2_K")]
    assert sizes == sorted(sizes, reverse=True)
    assert by["F16"].file_size > 2.5 * by["Q2_K"].file_size
    assert elapsed < 120, f"the demo ladder took {elapsed:.0f} s"
    # every file is in the store, linked to the demo
    from lab.store import Store

    store = Store(demo_ladder.db)
    try:
        base = store.query("select id from models where path = ?", [str(demo_gguf)])[0]["id"]
        assert store.query("select count(*) as n from models where base_model_id = ?", [base])[0]["n"] == len(DEFAULT_LADDER)
    finally:
        store.close()


def test_cli_ladder(tiny_gguf: Path, tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    base = [sys.executable, "-m", "lab", "models", "ladder", str(tiny_gguf), "--out", str(tmp_path / "l"),
            "-t", "1", "--db", str(db)]
    out = subprocess.run(base + ["--types", "Q8_0,Q4_K_M", "-o", "json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["type"], r["status"], r["file_type"]) for r in rows] == [("Q8_0", "built", "Q8_0"), ("Q4_K_M", "built", "Q4_K_M")]
    assert rows[0]["n_fallback"] == 0 and rows[1]["n_fallback"] == len(rows[1]["fallback_tensors"]) > 0
    out = subprocess.run(base + ["--types", "Q8_0,Q7_X"], capture_output=True, text=True)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("error: Unknown quantization type 'Q7_X' (known: F32, F16")


def _local(path: Path):
    from lab.library import LocalModel

    return LocalModel(name=path.name, path=path, source="path", size=path.stat().st_size)
