"""Fidelity of a model against a reference: perplexity and KL divergence, the way
``llama-perplexity --kl-divergence`` counts them.

How llama-perplexity counts (tools/perplexity/perplexity.cpp), and so how we count:

* the whole text is tokenized once (``add_special`` on, so BOS only where the vocabulary adds
  one; special tokens are not parsed);
* chunk i is tokens ``[i*n_ctx, (i+1)*n_ctx)``; its first token is replaced by BOS when the
  vocabulary adds one; the KV cache is cleared before each chunk;
* the logits at positions ``n_ctx/2 .. n_ctx-2`` are scored against the next token
  (255 per chunk at ``-c 512``); KLD is over the full softmax of both models.

The reference's side is computed once, in its own engine child, and cached compactly on disk
(``cache_dir()/kld/<key>``, key = sha256 of the reference file, of the text, and n_ctx). Per
scored position the cache keeps:

* the reference's log-probability (float32) of its ``TOP_K`` most likely tokens, exactly;
* ``TAIL_SAMPLES`` tokens drawn from the rest of the vocabulary in proportion to their
  probability (systematic sampling, fixed seed) with their log-probabilities, and the exact
  probability mass of that rest;
* the reference's log-probability of the true next token and its top token.

KL(P||Q) at a position is then ``sum_top p (log p - log q) + P_rest * (mean(d) - b (mean(r) -
Q_rest/P_rest))`` over the samples, with ``d = log(p/q)``, ``r = q/p`` and ``Q_rest`` the
candidate's exact mass outside the reference's top k: the head is exact and the tail term
estimates the tail's share from a probability-weighted sample, with ``r`` as a control variate
whose mean is known (``b``, its regression coefficient on ``d``, is fitted per position). The
mean KLD has no truncation bias, and each position's KLD is close enough for the percentiles,
which are single positions. Dropping the tail into one
"rest" bucket instead underestimates the demo's Q8_0 KLD by 2.2% at k=1024 and still 0.45% at
k=4096 (its distributions are flat: the top 1024 tokens leave a large share of the mass). On the
demo ladder this estimator came within 0.15% of the full-vocabulary KLD for Q8_0 and within
0.01% for Q4_0 and Q2_K (``tests/test_quality.py`` checks it). PPL, its ratio and the
same-top-token rate use exact figures. A cached position costs ``(TOP_K + TAIL_SAMPLES) * 6``
bytes (8 with a vocabulary above 65,536 tokens) plus 20: 106 MiB for the bundled text with the
demo model (47 chunks at ``-c 512``), against 1.1 GiB for llama-perplexity's dump of it.

Because the reference's log-probabilities are stored in float32 exactly as the candidate's are
computed, a model against itself gives a KLD of exactly 0 and a PPL ratio of exactly 1.

This module is the parent's side (options, the cache's key and folder, runs in the store); the
engine child decodes and scores in :mod:`lab.engine.quality_job`, with the numerics of
:mod:`lab.quality_numerics`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lab.errors import Cancelled, LabError
from lab.provenance import record_machine, run_extra

if TYPE_CHECKING:
    from lab.engine.runner import Spare
    from lab.library import LocalModel
    from lab.store import Store

CACHE_VERSION = 3
TOP_K = 1024
TAIL_SAMPLES = 512
DEFAULT_N_CTX = 512
DEFAULT_TEXT = Path(__file__).parent / "data" / "quality_text.txt"

OnEvent = Callable[[dict[str, Any]], None]


# --- shared helpers -------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the cache ------------------------------------------------------------------------------


_ARRAYS = ("top_idx", "top_lp", "tail_idx", "tail_lp", "tail_mass", "nll", "top1")


def cache_key(reference_sha256: str, text_sha256: str, n_ctx: int, top_k: int = TOP_K,
              tail_samples: int = TAIL_SAMPLES) -> str:
    blob = f"v{CACHE_VERSION}|{reference_sha256}|{text_sha256}|{n_ctx}|{top_k}|{tail_samples}"
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_root() -> Path:
    from lab import config

    return config.cache_dir() / "kld"


def read_cache_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("version") != CACHE_VERSION or not all((path / f"{a}.npy").is_file() for a in _ARRAYS):
        return None
    return meta


def cache_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


# --- parent side ----------------------------------------------------------------------------


@dataclass
class QualityOptions:
    """``rightsizer quality MODEL... --reference REF``."""

    models: list[str]
    reference: str
    text: Path | None = None  # None: the bundled text
    n_ctx: int = DEFAULT_N_CTX
    n_chunks: int | None = None  # None: every full chunk of the text
    n_threads: int | None = None
    n_gpu_layers: int = 0
    top_k: int = TOP_K
    tail_samples: int = TAIL_SAMPLES
    timeout: float | None = None  # per child


@dataclass
class ReferenceCache:
    path: Path
    meta: dict[str, Any]
    built: bool  # True when this call computed it

    @property
    def bytes(self) -> int:
        return cache_bytes(self.path)


def _read_text(path: Path) -> tuple[bytes, str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LabError(f"No such text file: {path}") from None
    except OSError as exc:
        raise LabError(f"Cannot read text file {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LabError(f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    if not text.strip():
        raise LabError(f"{path} is empty")
    return data, text


def _validate(o: QualityOptions) -> None:
    if o.n_ctx < 8:
        raise LabError(f"-c {o.n_ctx} is too small; use at least 8 (llama-perplexity's default is 512)")
    if o.n_chunks is not None and o.n_chunks < 1:
        raise LabError("--chunks must be at least 1")
    if o.top_k < 1 or o.tail_samples < 0:
        raise LabError("the cache needs top_k >= 1 and tail_samples >= 0")


def _progress_forwarder(on_event: OnEvent, run_id: str, model_filename: str, stage: str) -> Callable[[dict[str, Any]], None]:
    rows: list[dict[str, Any]] = []

    def handle(event: dict[str, Any]) -> None:
        if event.get("event") == "row":
            rows.append(event)
        on_event(dict(event, run_id=run_id, model_filename=model_filename, stage=event.get("stage", stage)))

    handle.rows = rows  # type: ignore[attr-defined]
    return handle


def _usable_cache(ref_row: dict[str, Any], options: QualityOptions, text_sha: str) -> tuple[Path, dict[str, Any] | None]:
    """The reference cache's folder, and its meta when it holds enough chunks for ``options``."""
    path = cache_root() / cache_key(ref_row["id"], text_sha, options.n_ctx, options.top_k, options.tail_samples)
    meta = read_cache_meta(path)
    if meta is not None:
        enough = (meta["n_chunk"] >= options.n_chunks) if options.n_chunks else meta["n_chunk"] >= meta["n_chunk_max"]
        if enough:
            return path, meta
    return path, None


def ensure_reference(store: "Store", ref: "LocalModel", ref_row: dict[str, Any], options: QualityOptions,
                     text_path: Path, text_sha: str, *, machine_id: str, on_event: OnEvent,
                     cancel: threading.Event | None = None, spare: "Spare | None" = None) -> ReferenceCache:
    """The reference's cached log-probabilities for this text and context, built if needed (in
    ``spare``'s worker when one is given and still untaken)."""
    from lab.engine.runner import run_child

    path, meta = _usable_cache(ref_row, options, text_sha)
    if meta is not None:
        return ReferenceCache(path, meta, built=False)
    payload = {
        "mode": "reference", "reference": str(ref.path), "reference_sha256": ref_row["id"],
        "text_path": str(text_path), "text_sha256": text_sha, "text_name": text_path.name,
        "n_ctx": options.n_ctx, "n_chunks": options.n_chunks, "n_threads": options.n_threads,
        "n_gpu_layers": options.n_gpu_layers, "top_k": options.top_k, "tail_samples": options.tail_samples,
        "cache_dir": str(path),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in payload.items() if k not in ("reference", "cache_dir")}
    run_id = store.create_run("quality", machine_id=machine_id, model_id=ref_row["id"],
                              model_filename=ref_row["model_filename"], config=config, **run_extra())
    handle = _progress_forwarder(on_event, run_id, ref_row["model_filename"], "reference")
    outcome = run_child({"kind": "quality", "payload": payload}, on_event=handle, cancel=cancel,
                        timeout=options.timeout, worker=spare.take() if spare else None)
    rows = handle.rows  # type: ignore[attr-defined]
    store.finish_run(run_id, outcome.status, error=outcome.error, exit_code=outcome.exit_code,
                     signal=outcome.signal, log_tail=None if outcome.status == "ok" else outcome.log_tail,
                     peak_rss_bytes=rows[-1].get("peak_rss_bytes") if rows else None)
    if outcome.status == "cancelled":
        raise Cancelled("the reference was not finished; nothing was measured")
    if outcome.status != "ok":
        raise LabError(f"The reference {ref_row['model_filename']} failed: {outcome.error}")
    meta = read_cache_meta(path)
    if meta is None:
        raise LabError(f"The reference run finished but left no cache in {path}")
    return ReferenceCache(path, meta, built=True)


def measure_quality(store: "Store", options: QualityOptions, *, on_event: OnEvent | None = None,
                    cancel: threading.Event | None = None, spare: "Spare | None" = None) -> list[dict[str, Any]]:
    """Measure every model of ``options`` against the reference; store and return one
    ``quality`` row per model (failed models get a row with ``status`` and ``error`` only in
    the returned list, and their run is recorded as failed).

    ``spare``: a worker the caller started earlier still (before opening the store); by default
    one starts here. Either way the first engine child loads llama.cpp while the files are
    hashed and stored."""
    from lab.engine.runner import Spare

    _validate(options)
    if spare is not None:
        return _measure(store, options, on_event, cancel, spare)
    with Spare() as own:
        return _measure(store, options, on_event, cancel, own)


def _measure(store: "Store", options: QualityOptions, on_event: OnEvent | None,
             cancel: threading.Event | None, spare: "Spare") -> list[dict[str, Any]]:
    from lab import library
    from lab.engine.runner import run_child

    emit_event: OnEvent = on_event or (lambda _e: None)
    from lab.hardware import default_threads

    options.n_threads = options.n_threads or default_threads()
    text_path = Path(options.text) if options.text else DEFAULT_TEXT
    data, _ = _read_text(text_path)
    text_sha = sha256_bytes(data)
    ref = library.resolve(options.reference)
    candidates = [library.resolve(m) for m in options.models]
    machine_id = record_machine(store)
    ref_row = library.register(store, ref)
    # the spare worker loads the first job's model while the rest is stored
    first = ref if _usable_cache(ref_row, options, text_sha)[1] is None else (candidates or [None])[0]
    if first is not None:
        spare.preload(str(first.path), n_gpu_layers=options.n_gpu_layers or 0)
    cand_rows = [library.register(store, m) for m in candidates]
    cache = ensure_reference(store, ref, ref_row, options, text_path, text_sha, machine_id=machine_id,
                             on_event=emit_event, cancel=cancel, spare=spare)
    emit_event({"event": "reference_ready", "path": str(cache.path), "bytes": cache.bytes,
                "built": cache.built, "n_chunk": cache.meta["n_chunk"], "ppl_ref": cache.meta["ppl_ref"]})
    n_chunks = min(options.n_chunks or cache.meta["n_chunk"], cache.meta["n_chunk"])
    out: list[dict[str, Any]] = []
    for model, row in zip(candidates, cand_rows):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"{len(out)} of {len(candidates)} models were measured and stored")
        payload = {
            "mode": "compare", "model": str(model.path), "cache_dir": str(cache.path), "n_ctx": options.n_ctx,
            "n_chunks": n_chunks, "n_threads": options.n_threads, "n_gpu_layers": options.n_gpu_layers,
        }
        config = {k: v for k, v in payload.items() if k not in ("model",)}
        config.update(reference=ref_row["model_filename"], reference_model_id=ref_row["id"], text_sha256=text_sha)
        run_id = store.create_run("quality", machine_id=machine_id, model_id=row["id"],
                                  model_filename=row["model_filename"], config=config, **run_extra())
        handle = _progress_forwarder(emit_event, run_id, row["model_filename"], "compare")
        outcome = run_child({"kind": "quality", "payload": payload}, on_event=handle, cancel=cancel,
                            timeout=options.timeout, worker=spare.take())
        rows = handle.rows  # type: ignore[attr-defined]
        figures = rows[-1] if rows and outcome.status == "ok" else None
        store.finish_run(run_id, outcome.status, error=outcome.error, exit_code=outcome.exit_code,
                         signal=outcome.signal, log_tail=None if outcome.status == "ok" else outcome.log_tail,
                         peak_rss_bytes=figures.get("peak_rss_bytes") if figures else None)
        base = {"run_id": run_id, "model_id": row["id"], "model_filename": row["model_filename"],
                "file_type": row.get("file_type"), "reference_model_id": ref_row["id"],
                "reference_filename": ref_row["model_filename"]}
        if figures is None:
            failed = dict(base, status=outcome.status, error=outcome.error)
            out.append(failed)
            emit_event({"event": "quality_failed", **failed})
            if outcome.status == "cancelled":
                raise Cancelled(f"{len(out) - 1} of {len(candidates)} models were measured and stored")
            continue
        record = dict(base, machine_id=machine_id, text_name=text_path.name, text_sha256=text_sha,
                      n_ctx=options.n_ctx, n_chunks=figures["n_chunks"])
        for key in ("n_tokens_scored", "ppl", "ppl_stderr", "ppl_ref", "ppl_ratio", "kld_mean", "kld_stderr",
                    "kld_p99", "kld_p999", "kld_median", "same_top_p", "same_top_p_stderr"):
            record[key] = figures.get(key)
        from lab.store import now_iso

        record["created_at"] = now_iso()
        stored = {k: v for k, v in record.items() if k != "file_type"}
        record["id"] = store.add_row("quality", stored)
        record.update(status="ok", ppl_ratio_stderr=figures.get("ppl_ratio_stderr"), kld_max=figures.get("kld_max"),
                      peak_rss_bytes=figures.get("peak_rss_bytes"), seconds=figures.get("seconds"))
        out.append(record)
        emit_event({"event": "quality_row", **record})
    return out
