"""GGUF header reading and the memory estimate."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import gguf_info
from lab.errors import ModelError


def test_tiny_header_figures(tiny_gguf: Path) -> None:
    s = gguf_info.inspect(tiny_gguf)
    assert s.arch == "llama"
    assert s.n_layer == 2 and s.n_embd == 64 and s.n_head == 4 and s.n_head_kv == 2
    assert s.n_ctx_train == 2048 and s.n_ff == 128
    assert s.file_type == "F32"
    assert s.has_chat_template
    # params: embeddings + output (333 x 64 each) + 2 norms... computed from the tensor shapes
    per_layer = 64 + 64 * 64 + 2 * (32 * 64) + 64 * 64 + 64 + 3 * (128 * 64)
    assert s.model_n_params == 2 * 333 * 64 + 64 + 2 * per_layer
    assert s.model_size == s.model_n_params * 4
    assert s.file_size == tiny_gguf.stat().st_size
    assert s.model_type == "llama 117K F32"


def test_demo_header_matches_llama_cpp(demo_gguf: Path) -> None:
    s = gguf_info.inspect(demo_gguf)
    # llama.cpp reports 134.52 M params and 92.10 MiB for the demo model (llama_model_n_params/size)
    assert s.model_n_params == 134515008
    assert s.model_size == 96576768
    assert s.file_type == "Q4_1" and s.n_layer == 30 and s.n_head_kv == 3 and s.n_vocab == 49152


def test_prefix_parsing_reports_bytes_needed(tiny_gguf: Path) -> None:
    data = tiny_gguf.read_bytes()
    header = gguf_info.read_file_header(tiny_gguf)
    with pytest.raises(gguf_info.HeaderTruncated) as info:
        gguf_info.read_header_bytes(data[:100])
    assert info.value.needed > 100
    parsed = gguf_info.read_header_bytes(data[: header.header_size])
    assert [t.name for t in parsed.tensors] == [t.name for t in header.tensors]


def test_errors_are_one_sentence(tmp_path: Path, tiny_gguf: Path) -> None:
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ModelError, match="is not a GGUF file"):
        gguf_info.inspect(not_gguf)
    truncated = tmp_path / "t.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    with pytest.raises(ModelError, match="truncated"):
        gguf_info.inspect(truncated)
    with pytest.raises(ModelError, match="No such file"):
        gguf_info.inspect(tmp_path / "missing.gguf")
    empty = tmp_path / "e.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="truncated"):
        gguf_info.inspect(empty)


def test_kv_cache_estimate_is_exact_for_standard_attention(demo_gguf: Path) -> None:
    s = gguf_info.inspect(demo_gguf)
    est = gguf_info.estimate_memory(s, 4096)
    # 30 layers x 3 KV heads x 64 dims x (K + V) x 2 bytes x 4096 tokens = 90 MiB (llama.cpp logs the same)
    assert est.kv_bytes == 30 * 3 * 64 * 2 * 2 * 4096
    q8 = gguf_info.estimate_memory(s, 4096, type_k="q8_0", type_v="q8_0")
    assert q8.kv_bytes == pytest.approx(est.kv_bytes * 34 / 64, rel=1e-9)
    assert est.alloc_bytes == est.weights_bytes + est.kv_bytes + est.compute_bytes + est.output_bytes
    assert est.total_bytes == (est.overhead_bytes + est.weights_bytes + est.kv_bytes + est.output_bytes
                               + est.compute_resident_bytes)
    # llama.cpp rounds the context up to 256 cells: 640 tokens hold 768
    assert gguf_info.estimate_memory(s, 640).kv_bytes == 30 * 3 * 64 * 2 * 2 * 768
    offloaded = gguf_info.estimate_memory(s, 4096, n_gpu_layers=99)
    assert offloaded.gpu_weights_bytes == s.model_size
    assert offloaded.host_bytes == offloaded.total_bytes - s.model_size


def test_prefix_cut_inside_the_vocabulary_reports_bytes_needed(demo_gguf: Path) -> None:
    header = gguf_info.read_file_header(demo_gguf)
    assert header.metadata["tokenizer.ggml.tokens"] == {"array_len": 49152}  # stepped over, counted
    with open(demo_gguf, "rb") as fh:
        data = fh.read(header.header_size)
    for cut in range(1000, header.header_size, header.header_size // 37):
        with pytest.raises(gguf_info.HeaderTruncated) as info:
            gguf_info.read_header_bytes(data[:cut])
        assert cut < info.value.needed <= header.header_size
    whole = gguf_info.read_header_bytes(data)
    assert whole.metadata == header.metadata and whole.header_size == header.header_size
