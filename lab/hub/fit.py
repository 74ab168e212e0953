"""Will it fit? The GGUF header of a file on the Hub, read with HTTP Range requests (never the
whole file), and a memory estimate per quant against what this machine has free now."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lab.errors import Cancelled, HubError, ModelError
from lab.hub.api import (
    HubUnreachable, QuantFile, _content_range_start, _ensure_online, _error, _headers, _raise_for_status, _session,
    _timeout, _translate, list_files, pick_file, resolve_token, resolve_url,
)
from lab.hub.names import PullSpec, safe_repo_path, scrub, validate_repo_id

if TYPE_CHECKING:
    from lab.gguf_info import GGUFHeader, MemoryEstimate, ModelSummary

PROBE_FIRST_BYTES = 256 * 1024
PROBE_MAX_BYTES = 32 * 1024 * 1024


@dataclass
class HeaderProbe:
    """The GGUF header of a remote file, read from its first bytes only."""

    repo_id: str
    path: str
    file_size: int | None
    header: "GGUFHeader"
    summary: "ModelSummary"
    bytes_fetched: int
    requests: int


@dataclass
class MemoryBudget:
    """What this machine can give a model now: available RAM, and free GPU memory (None when
    no GPU is readable)."""

    ram_bytes: int | None
    vram_bytes: int | None = None


@dataclass
class FitCheck:
    """Memory estimate for one quant file at a context, before anything is downloaded.

    ``basis`` says where the figures come from: ``header`` (this file's header, fetched with
    Range requests), ``sibling header`` (architecture from another quant's header of the same
    repo, weights from this file's size) or ``file size`` (the header could not be read; the
    KV cache is not included — ``note`` says why). ``n_ctx`` is the context estimated for: the
    one asked for, capped at the model's training context as ``models list`` does.
    """

    file: QuantFile
    n_ctx: int
    basis: str
    estimate: "MemoryEstimate | None"
    budget: MemoryBudget
    header_quant: str | None = None
    bytes_fetched: int = 0
    note: str | None = None

    @property
    def estimate_bytes(self) -> int | None:
        return self.estimate.total_bytes if self.estimate is not None else None

    @property
    def fits(self) -> bool | None:
        """Host memory within available RAM and offloaded weights within free GPU memory;
        None when either side is unknown."""
        if self.estimate is None or self.budget.ram_bytes is None:
            return None
        if self.estimate.host_bytes > self.budget.ram_bytes:
            return False
        if self.estimate.gpu_weights_bytes:
            if self.budget.vram_bytes is None:
                return None
            return self.estimate.gpu_weights_bytes <= self.budget.vram_bytes
        return True

    @property
    def quant_confirmed(self) -> bool | None:
        if self.header_quant is None or self.file.quant is None:
            return None
        return self.header_quant.upper() == self.file.quant.upper()

    def to_dict(self) -> dict[str, Any]:
        d = self.file.to_dict()
        d.update({
            "n_ctx": self.n_ctx, "basis": self.basis, "header_quant": self.header_quant,
            "quant_confirmed": self.quant_confirmed, "estimate_bytes": self.estimate_bytes,
            "estimate": self.estimate.to_dict() if self.estimate is not None else None,
            "ram_available_bytes": self.budget.ram_bytes, "vram_free_bytes": self.budget.vram_bytes,
            "fits": self.fits, "bytes_fetched": self.bytes_fetched, "note": self.note,
        })
        return d


def memory_budget() -> MemoryBudget:
    """Available RAM (psutil) and the free memory of the GPUs ``lab.hardware`` reports."""
    try:
        import psutil

        ram: int | None = int(psutil.virtual_memory().available)
    except Exception:
        ram = None
    return MemoryBudget(ram, _free_vram())


def _free_vram() -> int | None:
    try:
        from lab import hardware

        gpus = hardware.gpus()
    except Exception:  # optional module, NVML absent or failing: no GPU figure
        return None
    total = 0
    for gpu in gpus or []:
        size, used = getattr(gpu, "memory_total", None), getattr(gpu, "memory_used", None)
        if isinstance(size, int) and size > 0:
            total += size - used if isinstance(used, int) and 0 <= used <= size else size
    return total or None


def _fetch_range(url: str, start: int, end: int, *, token: str | None, repo_id: str,
                 cancel: threading.Event | None) -> tuple[bytes, int]:
    """Bytes ``start..end`` (inclusive) of a remote file and the bytes received for them.

    A server that ignores Range and answers 200 is read only as far as needed."""
    headers = _headers(token)
    headers["Range"] = f"bytes={start}-{end}"
    headers["Accept-Encoding"] = "identity"
    want = end - start + 1
    received = 0
    out = bytearray()
    try:
        with _session().stream("GET", url, headers=headers, timeout=_timeout()) as response:
            _raise_for_status(response, repo_id=repo_id)
            skip = start if response.status_code == 200 else 0
            if response.status_code == 206:
                got = _content_range_start(response.headers.get("Content-Range"))
                if got != start:
                    raise _error("The Hub answered a byte range other than the one asked for", token)
            for chunk in response.iter_bytes(64 * 1024):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("header probe cancelled")
                received += len(chunk)
                if skip:
                    drop = min(skip, len(chunk))
                    chunk, skip = chunk[drop:], skip - drop
                out += chunk
                if len(out) >= want:
                    break
    except (HubError, Cancelled):
        raise
    except Exception as exc:
        raise _translate(exc, token=token, repo_id=repo_id, what="the header request") from None
    return bytes(out[:want]), received


def probe_header(repo_id: str, file: str | QuantFile, *, revision: str | None = None,
                 endpoint: str | None = None, token: str | bool | None = None,
                 first_bytes: int = PROBE_FIRST_BYTES, max_bytes: int = PROBE_MAX_BYTES,
                 cancel: threading.Event | None = None) -> HeaderProbe:
    """Read the GGUF header of a file on the Hub without downloading it.

    Fetches the first ``first_bytes`` with an HTTP Range request and, while the header is
    longer than that, asks for the missing bytes only (growing past what
    :class:`~lab.gguf_info.HeaderTruncated` says it needs), up to ``max_bytes`` per file. For a
    split model every part's header is read and their tensors are merged.

    Raises HubError for network trouble and ModelError if the bytes are not a GGUF header."""
    from lab.gguf_info import GGUFHeader, summarize

    validate_repo_id(repo_id)
    _ensure_online()
    tok = resolve_token(token)
    if isinstance(file, QuantFile):
        paths = [(p.path, p.size) for p in file.parts]
        rev = revision or file.commit or "main"
        total_size: int | None = file.size
    else:
        paths = [(safe_repo_path(file), None)]
        rev = revision or "main"
        total_size = None
    headers: list[GGUFHeader] = []
    fetched = requests = 0
    for path, size in paths:
        header, n_bytes, n_requests = _probe_one(
            resolve_url(repo_id, path, rev, endpoint), size, token=tok, repo_id=repo_id,
            first_bytes=first_bytes, max_bytes=max_bytes, cancel=cancel, path=path,
        )
        headers.append(header)
        fetched += n_bytes
        requests += n_requests
    merged = headers[0]
    if len(headers) > 1:
        merged = GGUFHeader(merged.version, merged.metadata,
                            [t for h in headers for t in h.tensors], merged.header_size)
    first = paths[0][0]
    summary = summarize(merged, file_size=total_size, filename=first.rsplit("/", 1)[-1])
    return HeaderProbe(repo_id, first, total_size, merged, summary, fetched, requests)


def _probe_one(url: str, size: int | None, *, token: str | None, repo_id: str, first_bytes: int,
               max_bytes: int, cancel: threading.Event | None, path: str) -> tuple["GGUFHeader", int, int]:
    from lab.gguf_info import HeaderTruncated, read_header_bytes

    data = b""
    want = min(first_bytes, size) if size else first_bytes
    fetched = requests = 0
    while True:
        if len(data) < want:
            asked = want - len(data)
            chunk, received = _fetch_range(url, len(data), want - 1, token=token, repo_id=repo_id, cancel=cancel)
            data += chunk
            fetched += received
            requests += 1
            if len(chunk) < asked:
                size = len(data)  # the file ended before the range did
        try:
            return read_header_bytes(data), fetched, requests
        except HeaderTruncated as exc:
            if size is not None and len(data) >= size:
                raise ModelError(f"{path} ends inside its GGUF header") from None
            if want >= max_bytes:
                raise ModelError(
                    f"the GGUF header of {path} is larger than {max_bytes // (1024 * 1024)} MiB"
                ) from None
            want = min(max_bytes, max(exc.needed + 64 * 1024, want * 2))
            if size is not None:
                want = min(want, size)


def fit_check(repo_id: str, files: list[QuantFile] | None = None, n_ctx: int = 4096, *,
              revision: str | None = None, probe_all: bool = False,
              budget: MemoryBudget | None = None, endpoint: str | None = None,
              token: str | bool | None = None, cancel: threading.Event | None = None,
              **estimate_kwargs: Any) -> list[FitCheck]:
    """Estimate memory at ``n_ctx`` for each quant file and flag whether it fits here.

    Headers are read with Range requests, never the whole file. By default only one header is
    fetched (the default quant's: all quants of a repo share the architecture), and the other
    files' weights come from their sizes; ``probe_all`` reads every file's header, which also
    confirms every quant. If a header cannot be read the estimate falls back to the file size
    and the row's ``note`` says so. ``estimate_kwargs`` go to
    :func:`lab.gguf_info.estimate_memory` (``n_gpu_layers``, ``type_k``, ...)."""
    from lab.gguf_info import RUNTIME_OVERHEAD_BYTES, MemoryEstimate, estimate_memory

    tok = resolve_token(token)
    if files is None:
        files = list_files(repo_id, revision, endpoint=endpoint, token=tok or False)
    if budget is None:
        budget = memory_budget()
    models = [f for f in files if not f.is_mmproj]
    reference: QuantFile | None = None
    if models and not probe_all:
        try:
            reference = pick_file(models, PullSpec(repo_id))
        except HubError:
            reference = models[0]
    to_probe = models if probe_all else ([reference] if reference else [])

    probes: dict[str, HeaderProbe] = {}
    failures: dict[str, str] = {}
    for qf in to_probe:
        if cancel is not None and cancel.is_set():
            raise Cancelled("fit check cancelled")
        try:
            probes[qf.path] = probe_header(repo_id, qf, revision=revision, endpoint=endpoint,
                                           token=tok or False, cancel=cancel)
        except HubUnreachable:
            raise
        except HubError as exc:
            failures[qf.path] = str(exc)
        except ModelError as exc:
            failures[qf.path] = str(exc)

    ref_probe = probes.get(reference.path) if reference else None
    checks: list[FitCheck] = []
    for qf in files:
        if qf.is_mmproj:
            checks.append(FitCheck(qf, n_ctx, "n/a", None, budget,
                                   note="vision projector, loaded beside a model"))
            continue
        probe = probes.get(qf.path)
        if probe is not None:
            ctx = _cap_ctx(n_ctx, probe.summary)
            est = estimate_memory(probe.summary, ctx, **estimate_kwargs)
            checks.append(FitCheck(qf, ctx, "header", est, budget,
                                   header_quant=probe.summary.file_type, bytes_fetched=probe.bytes_fetched))
        elif ref_probe is not None:
            ref = ref_probe.summary
            overhead = max((ref.file_size or 0) - ref.model_size, 0)
            summary = dataclasses.replace(ref, model_size=max(qf.size - overhead, 0), file_size=qf.size,
                                          file_type=qf.quant or "unknown", model_filename=qf.path)
            ctx = _cap_ctx(n_ctx, summary)
            est = estimate_memory(summary, ctx, **estimate_kwargs)
            checks.append(FitCheck(qf, ctx, "sibling header", est, budget,
                                   note=f"architecture from {reference.path if reference else '?'}"))
        else:
            reason = failures.get(qf.path) or (failures.get(reference.path) if reference else None)
            est = MemoryEstimate(n_ctx, qf.size, 0, 0, RUNTIME_OVERHEAD_BYTES)
            note = "estimate from the file size only, KV cache not included"
            if reason:
                note += f" (header not readable: {reason.rstrip('.')})"
            checks.append(FitCheck(qf, n_ctx, "file size", est, budget, note=scrub(note, tok)))
    return checks


def _cap_ctx(n_ctx: int, summary: "ModelSummary") -> int:
    return min(n_ctx, summary.n_ctx_train) if summary.n_ctx_train else n_ctx
