"""Build a quantization ladder from one GGUF file with llama.cpp's own quantizer.

``build_ladder`` runs in the parent: for every requested type it starts one engine child
(``run_quantize_job``) that calls ``llama_model_quantize`` and reports which tensors llama.cpp
had to give another type than the one it wanted. llama.cpp falls back when a tensor's row length
is not a multiple of the type's block size (256 for the K- and most IQ-quants): the demo model's
576-wide rows make its "Q2_K" mostly Q4_0, and the user must see that. Each file is written
under a partial name, renamed when complete, and registered in the store with a link to its base
model and the list of fallbacks.

When the source is itself quantized (the demo is Q4_1), ``allow_requantize`` is set: the ladder
is then a ladder of requantized files whose quality is bounded by the source's.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lab.errors import Cancelled, LabError

if TYPE_CHECKING:
    from lab.library import LocalModel
    from lab.store import Store

# The ladder the issue asks for: from near-lossless to the smallest useful.
DEFAULT_LADDER = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_1", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K")

# Types llama_model_quantize can make without an importance matrix, by the name users know
# (llama-quantize's), mapped to the LLAMA_FTYPE_* constant.
QUANT_TYPES: dict[str, str] = {
    "F32": "LLAMA_FTYPE_ALL_F32",
    "F16": "LLAMA_FTYPE_MOSTLY_F16",
    "BF16": "LLAMA_FTYPE_MOSTLY_BF16",
    "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "Q5_K_S": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "Q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1",
    "Q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "Q4_K_S": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "Q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "IQ4_NL": "LLAMA_FTYPE_MOSTLY_IQ4_NL",
    "IQ4_XS": "LLAMA_FTYPE_MOSTLY_IQ4_XS",
    "Q3_K_L": "LLAMA_FTYPE_MOSTLY_Q3_K_L",
    "Q3_K_M": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "Q3_K_S": "LLAMA_FTYPE_MOSTLY_Q3_K_S",
    "Q2_K": "LLAMA_FTYPE_MOSTLY_Q2_K",
}

_UNQUANTIZED = {"F32", "F16", "BF16"}

# llama.cpp (src/llama-quant.cpp, tensor_type_fallback) logs one line per fallback:
#   warning: blk.0.attn_q.weight   - ncols    576 not divisible by 256 (required for type    q4_K)
#   -> falling back to    q5_0
_FALLBACK_RE = re.compile(
    r"(?P<tensor>\S+)\s+-\s+ncols\s+(?P<ncols>\d+)\s+not divisible by\s+(?P<block>\d+)\s+"
    r"\(required for type\s+(?P<wanted>\S+)\)\s*(?:\(WARNING:[^)]*\)\s*)?->\s*falling back to\s+(?P<got>\S+)"
)


def parse_types(text: str | None) -> list[str]:
    """``"f16,q8_0"`` -> ``["F16", "Q8_0"]``; raises LabError naming an unknown type."""
    if text is None or not text.strip():
        return list(DEFAULT_LADDER)
    out: list[str] = []
    for raw in text.split(","):
        name = raw.strip().upper()
        if not name:
            continue
        if name not in QUANT_TYPES:
            known = ", ".join(QUANT_TYPES)
            raise LabError(f"Unknown quantization type '{raw.strip()}' (known: {known})")
        if name not in out:
            out.append(name)
    if not out:
        raise LabError("--types names no quantization type")
    return out


# Ladder files carry the first hex digits of their source's sha256: two sources with the same
# stem (the demo's Q4_1 and an F16 made from it) give different files, never one path.
SOURCE_TAG_LEN = 8


def base_stem(filename: str) -> str:
    """``SmolLM2-135M-Instruct.Q4_1.gguf`` -> ``SmolLM2-135M-Instruct`` (the quant dropped, and
    the source tag of a ladder file: ``X.Q8_0.1a2b3c4d.gguf`` -> ``X``)."""
    from lab.library import quant_from_filename

    stem = filename[:-5] if filename.lower().endswith(".gguf") else filename
    quant = quant_from_filename(filename)
    if quant:
        m = re.search(rf"[-_.]{re.escape(quant)}(?:\.[0-9a-f]{{{SOURCE_TAG_LEN}}})?$", stem, re.IGNORECASE)
        if m:
            stem = stem[: m.start()]
    return stem or "model"


def default_out_dir(source: Path) -> Path:
    """Ladders live in the models folder, one folder per base model, so the library finds them."""
    from lab import config

    return config.models_dir() / "ladders" / base_stem(source.name)


def ladder_filename(source: Path, qtype: str, source_sha256: str) -> str:
    """``<stem>.<TYPE>.<first 8 hex digits of the source's sha256>.gguf``: the type where llama.cpp
    users look for it, and a name no ladder of another source can take."""
    return f"{base_stem(source.name)}.{qtype}.{source_sha256[:SOURCE_TAG_LEN].lower()}.gguf"


def parse_fallback_log(text: str) -> list[dict[str, Any]]:
    """The tensors llama.cpp's quantizer says it gave a fallback type, from its log text."""
    found = []
    for m in _FALLBACK_RE.finditer(text):
        found.append({
            "tensor": m.group("tensor"), "ncols": int(m.group("ncols")),
            "wanted": m.group("wanted").upper(), "got": m.group("got").upper(),
        })
    return found


def header_fallbacks(path: Path, qtype: str) -> list[dict[str, Any]]:
    """Fallbacks read from a file's header alone.

    A 2-D weight whose rows are not a multiple of 256 cannot hold a K-quant; in a file made as
    a K-quant type, such a tensor stored in a 32-block type is a fallback. The type llama.cpp
    wanted is not in the header, so ``wanted`` is None here. Used for ladder files built
    earlier, and for the fallback llama.cpp makes silently (the output matrix to Q8_0).
    """
    from lab.gguf_info import read_file_header

    if qtype in _UNQUANTIZED or not ("_K" in qtype or qtype.startswith("IQ")):
        return []
    k_family = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ")
    out = []
    for t in read_file_header(path).tensors:
        if len(t.shape) < 2 or t.shape[0] % 256 == 0:
            continue
        got = t.type_name.upper()
        if got in ("F32",) or got.startswith(k_family):
            continue
        out.append({"tensor": t.name, "ncols": int(t.shape[0]), "wanted": None, "got": got})
    return out


# --- child side --------------------------------------------------------------------------------


def run_quantize_job(payload: dict[str, Any], emit: Callable[..., None]) -> None:
    """Entry point in the engine child for ``kind == "quantize"``.

    payload: ``src``, ``dst``, ``type`` (a QUANT_TYPES key), ``n_threads``,
    ``allow_requantize``. Emits one ``row`` event with the file and its fallbacks.
    """
    import ctypes
    import sys

    from lab.engine import llm, protocol

    L = llm.lib()
    src, dst, qtype = Path(payload["src"]), Path(payload["dst"]), payload["type"]
    if qtype not in QUANT_TYPES:
        raise LabError(f"Unknown quantization type '{qtype}'")
    part = dst.with_name(dst.name + ".part")
    dst.parent.mkdir(parents=True, exist_ok=True)

    lines: list[str] = []

    # Keep llama.cpp's log on stderr for the parent, and a copy here to read the fallbacks from.
    def on_log(level: int, text: bytes | None, user_data: Any) -> None:
        if text:
            s = text.decode("utf-8", "replace")
            lines.append(s)
            sys.stderr.write(s)

    callback = L.llama_log_callback(on_log)
    L.llama_log_set(callback, ctypes.c_void_p(0))
    params = L.llama_model_quantize_default_params()
    params.nthread = int(payload.get("n_threads") or 0)
    params.ftype = int(getattr(L, QUANT_TYPES[qtype]))
    params.allow_requantize = bool(payload.get("allow_requantize", False))
    t0 = time.perf_counter()
    try:
        rc = L.llama_model_quantize(str(src).encode(), str(part).encode(), ctypes.byref(params))
    finally:
        sys.stderr.flush()
        llm.set_log(L)
    seconds = time.perf_counter() - t0
    if rc != 0:
        part.unlink(missing_ok=True)
        reason = next((ln.strip() for ln in reversed(lines) if "failed" in ln or "error" in ln.lower()), "")
        raise LabError(
            f"llama.cpp could not quantize {src.name} to {qtype}" + (f" ({reason})" if reason else "")
        )
    part.replace(dst)
    emit(protocol.ROW, table="ladder", type=qtype, path=str(dst), file_size=dst.stat().st_size,
         seconds=seconds, fallback_tensors=parse_fallback_log("".join(lines)))


# --- parent side -------------------------------------------------------------------------------


@dataclass
class LadderStep:
    """One rung of a ladder: what was asked, what came out."""

    type: str
    path: Path
    status: str  # "built", "exists", "failed", "cancelled"
    file_size: int | None = None
    seconds: float | None = None
    model_id: str | None = None
    file_type: str | None = None
    fallback_tensors: list[dict[str, Any]] = field(default_factory=list)
    tensor_types: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["n_fallback"] = len(self.fallback_tensors)
        return d


def _recorded_source(store: "Store", path: Path) -> str | None:
    """The sha256 of the source the store says ``path`` was quantized from (None: unknown)."""
    rows = store.query("select base_model_id from models where path = ? and base_model_id is not null "
                       "order by added_at desc limit 1", [str(path)])
    return rows[0]["base_model_id"] if rows else None


def build_ladder(store: "Store", model: "LocalModel", types: list[str], *, out_dir: Path | None = None,
                 n_threads: int | None = None, force: bool = False,
                 on_step: Callable[[LadderStep], None] | None = None,
                 on_log: Callable[[str], None] | None = None,
                 cancel: threading.Event | None = None, timeout: float | None = 3600) -> list[LadderStep]:
    """Quantize ``model`` to every type in ``types`` (one engine child each) and register each
    file with its base model and fallbacks. Files already there are registered, not rebuilt,
    unless ``force``. Failures are recorded and the ladder goes on; Ctrl-C stops it."""
    from lab import library
    from lab.engine.runner import run_child
    from lab.hardware import default_threads
    from lab.gguf_info import inspect
    from lab.provenance import record_machine, run_extra

    src = model.path
    summary = inspect(src)
    source_type = summary.file_type.upper()
    base_row = library.register(store, model)
    base_id = base_row["id"]
    machine_id = record_machine(store)
    out = Path(out_dir) if out_dir is not None else default_out_dir(src)
    n_threads = n_threads or default_threads()
    steps: list[LadderStep] = []
    for qtype in types:
        dst = out / ladder_filename(src, qtype, base_id)
        if dst.resolve() == src.resolve():
            raise LabError(f"The ladder file {dst} would overwrite its source; choose another --out")
        step = LadderStep(type=qtype, path=dst, status="built")
        if cancel is not None and cancel.is_set():
            step.status, step.error = "cancelled", "cancelled by the user"
            steps.append(step)
            break
        other = _recorded_source(store, dst) if dst.is_file() and not force else None
        if other is not None and other != base_id:
            step.status = "failed"
            step.error = (f"{dst.name} was built from another source (sha256 {other[:12]}); "
                          "rebuild it with --force or choose another --out")
            steps.append(step)
            if on_step:
                on_step(step)
            continue
        if dst.is_file() and not force:
            step.status = "exists"
            known = store.query("select fallback_tensors from models where path = ? and fallback_tensors is not null",
                                [str(dst)])
            step.fallback_tensors = json.loads(known[0]["fallback_tensors"]) if known else header_fallbacks(dst, qtype)
        else:
            config = {"src": str(src), "src_sha256": base_id, "dst": str(dst), "type": qtype,
                      "n_threads": n_threads, "allow_requantize": source_type not in _UNQUANTIZED}
            run_id = store.create_run("quantize", machine_id=machine_id, model_id=base_id,
                                      model_filename=src.name, config=config, **run_extra())
            step.run_id = run_id
            rows: list[dict[str, Any]] = []

            def on_event(event: dict[str, Any]) -> None:
                if event.get("event") == "row" and event.get("table") == "ladder":
                    rows.append(event)

            outcome = run_child({"kind": "quantize", "payload": config}, on_event=on_event, on_log=on_log,
                                cancel=cancel, timeout=timeout)
            store.finish_run(run_id, outcome.status, error=outcome.error, exit_code=outcome.exit_code,
                             signal=outcome.signal, log_tail=None if outcome.status == "ok" else outcome.log_tail)
            if outcome.status != "ok" or not rows:
                step.status = "cancelled" if outcome.status == "cancelled" else "failed"
                step.error = outcome.error or "the quantizer reported nothing"
                steps.append(step)
                if on_step:
                    on_step(step)
                if outcome.status == "cancelled" or outcome.extra.get("interrupted"):
                    raise Cancelled("the ladder was stopped; files already built are kept")
                continue
            step.seconds = rows[-1].get("seconds")
            logged = rows[-1].get("fallback_tensors") or []
            # llama.cpp logs fallbacks of its shape check; the output matrix of a K-quant whose
            # rows do not fit goes to Q8_0 without a word. The header shows it: add it.
            names = {f["tensor"] for f in logged}
            step.fallback_tensors = logged + [f for f in header_fallbacks(dst, qtype) if f["tensor"] not in names]
        info = inspect(dst)
        step.file_size = info.file_size
        step.file_type = info.file_type
        step.tensor_types = info.tensor_types
        row = library.register(store, dst, source="ladder", base_model_id=base_id,
                               fallback_tensors=json.dumps(step.fallback_tensors))
        step.model_id = row["id"]
        steps.append(step)
        if on_step:
            on_step(step)
    return steps
