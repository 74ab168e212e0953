"""Read a GGUF file's header without loading its weights, and estimate memory from it.

The parser reads from any binary stream, so the same code serves a local file and the first
bytes of a remote file fetched with an HTTP Range request (see ``hub.py``): when the bytes run
out it raises :class:`HeaderTruncated` with a hint of how many bytes it needs.
"""

from __future__ import annotations

import io
import os
import struct
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from lab.errors import ModelError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGUF metadata value types
_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}
_STRING, _ARRAY = 8, 9

# Arrays longer than this keep only their length (token lists have 10^5 entries).
_KEEP_ARRAY_MAX = 64


class NotGGUF(ModelError):
    """The file does not start with the GGUF magic."""


class HeaderTruncated(ModelError):
    """The stream ended inside the header. ``needed`` is a lower bound on the bytes required."""

    def __init__(self, message: str, needed: int):
        super().__init__(message)
        self.needed = needed


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.ggml_type)

    @property
    def n_bytes(self) -> int:
        block, size = _quant_sizes().get(self.ggml_type, (1, 4))
        return self.n_elements // block * size


@dataclass
class GGUFHeader:
    """Everything in a GGUF header. ``metadata`` holds scalars, strings and short arrays;
    long arrays are replaced by ``{"array_len": n}``."""

    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    header_size: int  # bytes up to the aligned start of tensor data

    @property
    def arch(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch_value(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.arch}.{key}", default)


@dataclass
class ModelSummary:
    """The figures ``models list/info`` show and the ``models`` table stores."""

    path: str | None
    model_filename: str
    name: str | None
    arch: str
    file_type: str
    model_type: str  # llama-bench's "model" column, e.g. "llama 135M Q4_1"
    model_n_params: int
    model_size: int  # bytes of tensor data (llama-bench's model_size)
    file_size: int | None
    n_layer: int | None
    n_embd: int | None
    n_head: int | None
    n_head_kv: int | None
    n_ctx_train: int | None
    n_vocab: int | None
    n_ff: int | None
    head_dim_k: int | None
    head_dim_v: int | None
    has_chat_template: bool
    gguf_version: int
    n_tensors: int
    tensor_types: dict[str, int] = field(default_factory=dict)
    n_merges: int | None = None  # BPE merge rules (their table costs memory at load)
    repack_bytes: int = 0  # weights the CPU backend copies into repacked buffers (REPACK_TYPES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- type tables (from the gguf package, imported lazily: it pulls numpy) -----------------

_QUANT_SIZES: dict[int, tuple[int, int]] | None = None


def _quant_sizes() -> dict[int, tuple[int, int]]:
    global _QUANT_SIZES
    if _QUANT_SIZES is None:
        from gguf.constants import GGML_QUANT_SIZES

        _QUANT_SIZES = {int(k): v for k, v in GGML_QUANT_SIZES.items()}
    return _QUANT_SIZES


def ggml_type_name(type_id: int) -> str:
    from gguf.constants import GGMLQuantizationType

    try:
        return GGMLQuantizationType(type_id).name
    except ValueError:
        return f"type{type_id}"


def file_type_name(file_type: int | None, tensors: list[TensorInfo]) -> str:
    """The quantization as llama.cpp names it (``Q4_K_M``), from ``general.file_type``,
    falling back to the most common type among 2-D weight tensors."""
    if file_type is not None:
        from gguf.constants import LlamaFileType

        try:
            name = LlamaFileType(int(file_type)).name
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    counts = Counter(t.type_name for t in tensors if len(t.shape) >= 2)
    return counts.most_common(1)[0][0] if counts else "unknown"


# --- parsing --------------------------------------------------------------------------------


class _Reader:
    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.pos = 0

    def read(self, n: int) -> bytes:
        data = self.stream.read(n)
        if len(data) < n:
            raise HeaderTruncated(
                f"GGUF header is truncated at byte {self.pos + len(data)}", needed=self.pos + n
            )
        self.pos += n
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > 1 << 30:
            raise ModelError(f"GGUF header is corrupt: a string claims {n} bytes")
        return self.read(n).decode("utf-8", errors="replace")

    def skip_strings(self, n: int) -> None:
        """Step over n length-prefixed strings without decoding them, a megabyte at a time: a
        vocabulary's tokens and merges (50k-260k strings) cost ~0.5 s a file one by one."""
        unpack = struct.Struct("<Q").unpack_from
        buf, off, done = b"", 0, 0  # done: bytes of buf before off already stepped over
        for _ in range(n):
            if len(buf) - off < 8:
                buf, off = buf[off:] + self.stream.read(1 << 20), 0
                if len(buf) < 8:
                    raise HeaderTruncated(f"GGUF header is truncated at byte {self.pos + done + len(buf)}",
                                          needed=self.pos + done + 8)
            (k,) = unpack(buf, off)
            if k > 1 << 30:
                raise ModelError(f"GGUF header is corrupt: a string claims {k} bytes")
            end = off + 8 + k
            if end > len(buf):
                buf, end, off = buf[off:] + self.stream.read(max(1 << 20, end - len(buf))), end - off, 0
                if end > len(buf):
                    raise HeaderTruncated(f"GGUF header is truncated at byte {self.pos + done + len(buf)}",
                                          needed=self.pos + done + end)
            done += end - off
            off = end
        self.stream.seek(off - len(buf), os.SEEK_CUR)  # hand back what was read past the last one
        self.pos += done

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            itype = self.unpack("<I")
            n = self.unpack("<Q")
            if n > 1 << 32:
                raise ModelError(f"GGUF header is corrupt: an array claims {n} items")
            if itype == _STRING and n > _KEEP_ARRAY_MAX:
                self.skip_strings(n)
                return {"array_len": n}
            if itype in _SCALARS and n > _KEEP_ARRAY_MAX:
                size = struct.calcsize(_SCALARS[itype])
                self.read(size * n)
                return {"array_len": n}
            items = [self.value(itype) for _ in range(n)]
            return items if n <= _KEEP_ARRAY_MAX else {"array_len": n}
        raise ModelError(f"GGUF header is corrupt: unknown value type {vtype}")


def read_header(stream: BinaryIO) -> GGUFHeader:
    """Parse a GGUF header from a binary stream positioned at the start of the file."""
    r = _Reader(stream)
    magic = r.stream.read(4)
    r.pos = len(magic)
    if len(magic) < 4:
        raise HeaderTruncated("file is shorter than a GGUF header", needed=4)
    if magic != GGUF_MAGIC:
        raise NotGGUF("not a GGUF file (wrong magic bytes)")
    version = r.unpack("<I")
    if version not in (2, 3):
        raise ModelError(f"unsupported GGUF version {version}")
    n_tensors = r.unpack("<Q")
    n_kv = r.unpack("<Q")
    if n_tensors > 1 << 24 or n_kv > 1 << 24:
        raise ModelError("GGUF header is corrupt: implausible tensor or key count")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = r.string()
        vtype = r.unpack("<I")
        metadata[key] = r.value(vtype)
    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.unpack("<I")
        if n_dims > 8:
            raise ModelError(f"GGUF header is corrupt: tensor {name!r} has {n_dims} dimensions")
        shape = tuple(r.unpack("<Q") for _ in range(n_dims))
        ggml_type = r.unpack("<I")
        offset = r.unpack("<Q")
        tensors.append(TensorInfo(name, shape, ggml_type, offset))
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT) or DEFAULT_ALIGNMENT)
    header_size = (r.pos + alignment - 1) // alignment * alignment
    return GGUFHeader(version, metadata, tensors, header_size)


def read_header_bytes(data: bytes) -> GGUFHeader:
    """Parse a header from the first bytes of a file (e.g. an HTTP Range response)."""
    return read_header(io.BytesIO(data))


def read_file_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Parse the header of a local file; raises :class:`ModelError` with a clear sentence."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            header = read_header(fh)
    except FileNotFoundError:
        raise ModelError(f"No such file: {p}") from None
    except IsADirectoryError:
        raise ModelError(f"{p} is a directory, not a GGUF file") from None
    except PermissionError:
        raise ModelError(f"Cannot read {p}: permission denied") from None
    except NotGGUF:
        raise NotGGUF(f"{p} is not a GGUF file") from None
    except HeaderTruncated as exc:
        raise ModelError(f"{p} is truncated: its GGUF header ends early") from exc
    except ModelError as exc:
        raise ModelError(f"{p}: {exc}") from None
    # The header says where each tensor lies; a file shorter than that lost its weights.
    size = p.stat().st_size
    end = max((t.offset + t.n_bytes for t in header.tensors), default=0) + header.header_size
    if header.tensors and size < end:
        raise ModelError(
            f"{p} is truncated: it has {size} bytes but its tensors need {end}"
        )
    return header


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _first_int(value: Any) -> int | None:
    """Per-layer values (e.g. head_count_kv on some archs) may be arrays; take the maximum."""
    if isinstance(value, list) and value:
        return max(int(v) for v in value)
    return _int(value)


def _size_label(n_params: int) -> str:
    if n_params >= 1e9:
        return f"{n_params / 1e9:.1f}B".replace(".0B", "B")
    if n_params >= 1e6:
        return f"{round(n_params / 1e6)}M"
    return f"{round(n_params / 1e3)}K"


def summarize(header: GGUFHeader, path: str | os.PathLike[str] | None = None,
              file_size: int | None = None, filename: str | None = None) -> ModelSummary:
    """The figures of a model from its header (no weights read)."""
    n_params = sum(t.n_elements for t in header.tensors)
    model_size = sum(t.n_bytes for t in header.tensors)
    md = header.metadata
    n_embd = _int(header.arch_value("embedding_length"))
    n_head = _first_int(header.arch_value("attention.head_count"))
    n_head_kv = _first_int(header.arch_value("attention.head_count_kv")) or n_head
    head_k = _int(header.arch_value("attention.key_length"))
    head_v = _int(header.arch_value("attention.value_length"))
    if head_k is None and n_embd and n_head:
        head_k = n_embd // n_head
    if head_v is None:
        head_v = head_k
    tokens = md.get("tokenizer.ggml.tokens")
    n_vocab = _int(header.arch_value("vocab_size"))
    if n_vocab is None:
        n_vocab = tokens.get("array_len") if isinstance(tokens, dict) else len(tokens) if isinstance(tokens, list) else None
    if n_vocab is None:
        embd = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
        n_vocab = embd.shape[-1] if embd else None
    merges = md.get("tokenizer.ggml.merges")
    n_merges = merges.get("array_len") if isinstance(merges, dict) else len(merges) if isinstance(merges, list) else None
    ftype = file_type_name(md.get("general.file_type"), header.tensors)
    if path is not None and file_size is None:
        file_size = Path(path).stat().st_size
    fname = filename or (Path(path).name if path is not None else "")
    return ModelSummary(
        path=str(path) if path is not None else None,
        model_filename=fname,
        name=md.get("general.name"),
        arch=header.arch,
        file_type=ftype,
        model_type=f"{header.arch} {_size_label(n_params)} {ftype}",
        model_n_params=n_params,
        model_size=model_size,
        file_size=file_size,
        n_layer=_int(header.arch_value("block_count")),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ctx_train=_int(header.arch_value("context_length")),
        n_vocab=n_vocab,
        n_ff=_first_int(header.arch_value("feed_forward_length")),
        head_dim_k=head_k,
        head_dim_v=head_v,
        has_chat_template=isinstance(md.get("tokenizer.chat_template"), str),
        gguf_version=header.version,
        n_tensors=len(header.tensors),
        tensor_types=dict(Counter(t.type_name for t in header.tensors)),
        n_merges=n_merges,
        repack_bytes=sum(t.n_bytes for t in header.tensors if _repackable(t)),
    )


# Weight types that llama.cpp's CPU backend copies into interleaved ("repacked") buffers when
# its extra buffer types are on, as observed on x86-64 with AVX2/AVX-512 (llama-cpp-python
# 0.3.36): Q4_0, and Q4_K and IQ4_NL, which the same code repacks. Q8_0, Q4_1, Q3_K and Q6_K
# stay mapped there. The file's pages stay resident too, so a repacked weight counts twice.
REPACK_TYPES = {"Q4_0", "Q4_K", "IQ4_NL"}


def _repackable(t: TensorInfo) -> bool:
    # matrix weights with rows in groups of 8; token_embd is read by row lookup, never repacked
    return (len(t.shape) == 2 and t.name != "token_embd.weight" and t.shape[1] % 8 == 0
            and t.type_name in REPACK_TYPES)


def inspect(path: str | os.PathLike[str]) -> ModelSummary:
    """Read and summarize a local GGUF file's header."""
    return summarize(read_file_header(path), path)


# --- memory estimate --------------------------------------------------------------------------
#
# Two figures per test configuration, both for llama-like graphs on the CPU path:
#
# * what llama.cpp allocates, per buffer as it logs them after loading and context creation
#   (model, KV, compute, output). The compute buffer is the graph allocator's peak for the
#   worst-case ubatch that llama.cpp reserves: n_ubatch tokens, every one asking for logits.
# * the test's peak RSS. Only pages that are written or mapped count: with mmap llama.cpp maps
#   the tensor data with MAP_POPULATE, so every weight page is resident after loading (the
#   header pages before the first tensor are unmapped; token-embedding rows never looked up are
#   resident all the same); the KV cache is cleared, so it is all resident; but of the compute
#   buffer only the part the test's real graphs use is touched. A pp test asks for the logits of
#   its last token only, so the [n_vocab x n_ubatch] logits that dominate the reserved buffer of
#   a large-vocabulary model are never written; a tg test decodes one token per graph.

# bytes per element of the KV cache types llama.cpp accepts for -ctk/-ctv
KV_TYPE_BYTES = {
    "f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32,
    "iq4_nl": 18 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32,
}

# llama.cpp rounds the context (KV cells) up to a multiple of this.
KV_CELL_PAD = 256

# Resident memory of an engine child beside llama.cpp's buffers: Python, numpy, llama.cpp's
# ctypes bindings (not llama-cpp-python's high-level package: see lab.engine.llm) and the ggml
# libraries, plus what loading a model builds on the heap. Fitted to engine children on the
# reference machine (llama-cpp-python 0.3.36, x86-64): tiny models from 333 to 262k tokens,
# 2 and 30 layers, and the demo model's BPE vocabulary; see tests/test_memory_estimate.py.
# The same child's peak varied by about 6 MiB between runs (a 2-layer model: 48 and 54 MiB):
# the constant sits between the two.
RUNTIME_OVERHEAD_BYTES = 49 * 1024 * 1024
VOCAB_TOKEN_BYTES = 153      # the vocabulary's token table and token-to-piece cache, per token
MERGE_BYTES = 161            # BPE merge ranks, per merge rule
TENSOR_BYTES = 11 * 1024     # graph and scheduler metadata, per model tensor


@dataclass
class MemoryEstimate:
    """Predicted memory of one test configuration. ``weights/kv/compute/output_bytes`` are the
    buffers llama.cpp allocates; ``compute_resident_bytes`` the part of the compute buffer the
    test's graphs touch; ``overhead_bytes`` the process beside llama.cpp's buffers."""

    n_ctx: int
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    overhead_bytes: int
    gpu_weights_bytes: int = 0
    output_bytes: int = 0
    compute_resident_bytes: int | None = None

    @property
    def alloc_bytes(self) -> int:
        """What llama.cpp reports allocating: model + KV + compute + output buffers."""
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.output_bytes

    @property
    def total_bytes(self) -> int:
        """Predicted peak memory of the engine process (host and GPU together)."""
        compute = self.compute_bytes if self.compute_resident_bytes is None else self.compute_resident_bytes
        return self.overhead_bytes + self.weights_bytes + self.kv_bytes + compute + self.output_bytes

    @property
    def host_bytes(self) -> int:
        """Predicted peak RSS: the total less the weights that live on a GPU."""
        return self.total_bytes - self.gpu_weights_bytes

    def to_dict(self) -> dict[str, int | None]:
        d = asdict(self)
        d["alloc_bytes"] = self.alloc_bytes
        d["total_bytes"] = self.total_bytes
        d["host_bytes"] = self.host_bytes
        return d


def _pad(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _graph_floats_per_token(s: ModelSummary, n_kv: int, flash_attn: bool, n_outputs_per_token: float) -> float:
    """The graph allocator's peak, in f32 values per ubatch token, for a llama-like graph:
    the largest of the output, feed-forward and attention phases (each with what is still
    live then). Fitted to llama.cpp's logged compute buffers across shapes (to within 2%)."""
    n_embd = s.n_embd or 0
    n_ff = s.n_ff or 4 * n_embd
    n_head = s.n_head or 0
    n_embd_kv = (s.n_head_kv or n_head) * (s.head_dim_k or 0)
    mask = n_kv / 2 if flash_attn else n_kv  # the KQ mask is f16 for flash attention, else f32
    output = (s.n_vocab or 0) * n_outputs_per_token + (2 if flash_attn else 3) * n_embd
    ffn = 4 * n_ff + mask
    if flash_attn:
        attn = 6 * n_embd + n_embd_kv / 2 + mask
    else:  # the KQ scores of every head are materialised
        attn = n_kv * n_head + 5 * n_embd + 2 * n_embd_kv + mask
    return max(output, ffn, attn) + 5  # + token, position and output-id inputs


def estimate_memory(s: ModelSummary, n_ctx: int, *, n_ubatch: int = 512, type_k: str = "f16",
                    type_v: str = "f16", n_gpu_layers: int = 0, flash_attn: bool | int = -1,
                    n_batch: int = 2048, n_decode: int | None = None, repack: bool = False) -> MemoryEstimate:
    """Memory of a context of ``n_ctx`` tokens: llama.cpp's buffers and the peak RSS.

    ``flash_attn``: True, 1 or -1 (auto, llama.cpp's default, which it turns on where the
    backend has it: always on the CPU); False or 0 for off. ``n_decode``: the most tokens one ``llama_decode`` of the test sends
    (a pp test's prompt, 1 for tg); None assumes a full ubatch. The KV cache is exact for
    standard attention; the compute buffer follows llama.cpp's graph for llama-like models.
    With or without mmap every weight is resident during a test (mapped and populated, or
    read into an allocated buffer of the same size), so the figures do not depend on it.
    ``repack``: llama.cpp's extra CPU buffer types are on, adding a repacked copy of the
    weights of :data:`REPACK_TYPES`.
    """
    fa = flash_attn is True or flash_attn in (1, -1)
    n_kv = _pad(max(1, n_ctx), KV_CELL_PAD)
    n_layer = s.n_layer or 0
    kv_heads = s.n_head_kv or 0
    kv_per_token = n_layer * kv_heads * (
        (s.head_dim_k or 0) * KV_TYPE_BYTES.get(type_k.lower(), 2.0)
        + (s.head_dim_v or 0) * KV_TYPE_BYTES.get(type_v.lower(), 2.0)
    )
    kv = int(kv_per_token * n_kv)
    # llama.cpp caps the batch at the requested context, and the ubatch at the batch.
    ub = max(1, min(n_ubatch, n_batch, max(1, n_ctx)))
    compute = int(ub * 4 * _graph_floats_per_token(s, n_kv, fa, 1.0))
    used = ub if n_decode is None else max(1, min(n_decode, ub))
    # The test's graphs: one logits row per decode; without flash attention the softmaxed
    # scores are converted to f16 for the product with V, in the CPU backend's work buffer.
    resident = min(compute, int(used * 4 * _graph_floats_per_token(s, n_kv, fa, 1.0 / used)))
    if not fa and used > 1:
        resident += used * n_kv * (s.n_head or 0) * 2
    output = (s.n_vocab or 0) * 4  # one sequence's logits row
    overhead = (RUNTIME_OVERHEAD_BYTES + VOCAB_TOKEN_BYTES * (s.n_vocab or 0)
                + MERGE_BYTES * (s.n_merges or 0) + TENSOR_BYTES * s.n_tensors)
    gpu = 0
    if n_gpu_layers and n_layer:
        share = min(n_gpu_layers, n_layer + 1) / (n_layer + 1)
        gpu = int(s.model_size * share)
    weights = s.model_size + (s.repack_bytes if repack else 0)
    return MemoryEstimate(n_ctx, weights, kv, compute, overhead, gpu, output, resident)


def est_rss_ratio(row: dict[str, Any]) -> float | None:
    """A result's memory estimate over its measured peak RSS (None when either is missing)."""
    est, rss = row.get("est_memory_bytes"), row.get("peak_rss_bytes")
    return est / rss if est and rss else None
