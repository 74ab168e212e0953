"""Download a GGUF model into the Hugging Face cache, resumable and verified, and register it.

Downloads land in the standard Hugging Face cache layout (``models--owner--name/blobs/<sha256>``,
``snapshots/<commit>/<file>`` as a relative symlink, ``refs/<branch>``), so llama.cpp,
``huggingface_hub`` and :func:`lab.library.scan` all find and reuse them.

Why not ``hf_hub_download``: in huggingface_hub 2.x it writes each attempt to a
process-unique temporary file that is deleted on failure, so an interrupted download cannot
be resumed by the next run; it checks the size but not the sha256; and it cannot be cancelled.
We keep its cache layout, its HTTP stack (httpx2), headers, token lookup, error classes and
file lock, and do the transfer ourselves: one stable ``blobs/<sha256>.incomplete`` file resumed with an
HTTP Range request, hashed while it streams, renamed into place only when the sha256 matches
the Hub's LFS metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lab import config
from lab.errors import Cancelled, HubError
from lab.hub.api import (
    HubUnreachable, RepoFile, _content_range_start, _ensure_online, _error, _headers, _raise_for_status, _session,
    _timeout, _translate, list_files, pick_file, resolve_token, resolve_url,
)
from lab.hub.names import _GIT_SHA_RE, _REVISION_RE, PullSpec, _check_hex, _inside, parse_spec

if TYPE_CHECKING:
    from lab.store import Store

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
READ_TIMEOUT_S = 60.0
PROGRESS_INTERVAL_S = 0.1


@dataclass
class DownloadProgress:
    """Handed to the progress callback of :func:`pull` (at most every 0.1 s, and at the end)."""

    filename: str
    part: int  # 1-based
    n_parts: int
    done_bytes: int  # over all parts, including bytes already on disk
    total_bytes: int
    speed_bps: float | None
    eta_s: float | None
    phase: str  # "download", "verify" or "done"

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 1.0


@dataclass
class PulledModel:
    """A verified model in the HF cache. ``path`` is its (first) file in the snapshot."""

    repo_id: str
    revision: str
    commit: str
    quant: str | None
    path: Path
    paths: list[Path]
    size: int
    sha256: str | None
    n_parts: int
    downloaded_bytes: int
    resumed_bytes: int
    already_cached: bool

    @property
    def name(self) -> str:
        """The name :func:`lab.library.scan` gives this model (``owner/repo/file.gguf``)."""
        return f"{self.repo_id}/{self.path.relative_to(_snapshot_root(self.path)).as_posix()}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        d["paths"] = [str(p) for p in self.paths]
        return d


ProgressCallback = Callable[[DownloadProgress], None]


def _repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def _snapshot_root(path: Path) -> Path:
    for parent in path.parents:
        if parent.parent.name == "snapshots":
            return parent
    return path.parent


class _Speed:
    """Bytes per second over the last few seconds."""

    def __init__(self, window_s: float = 5.0):
        self.window = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, done: int) -> float | None:
        now = time.monotonic()
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.popleft()
        t0, b0 = self.samples[0]
        return (done - b0) / (now - t0) if now - t0 > 0.05 else None


class _Reporter:
    """Turns byte counts into throttled DownloadProgress calls. Speed counts only bytes that
    crossed the network, so resumed or cached bytes do not inflate it."""

    def __init__(self, callback: ProgressCallback | None, total: int, n_parts: int):
        self.callback = callback
        self.total = total
        self.n_parts = n_parts
        self.done_before = 0  # bytes of finished parts
        self.transferred = 0
        self.speed = _Speed()
        self.last = 0.0
        self.speed_bps: float | None = None

    def report(self, filename: str, part: int, done_in_part: int, phase: str, *,
               transferred: int = 0, force: bool = False) -> None:
        done = self.done_before + done_in_part
        if transferred:
            self.transferred += transferred
            self.speed_bps = self.speed.add(self.transferred) or self.speed_bps
        now = time.monotonic()
        if self.callback is None or (not force and now - self.last < PROGRESS_INTERVAL_S):
            return
        self.last = now
        eta = (self.total - done) / self.speed_bps if self.speed_bps else None
        self.callback(DownloadProgress(filename, part, self.n_parts, done, self.total,
                                       self.speed_bps, eta, phase))


@dataclass
class _PartResult:
    blob: Path | None  # None: the snapshot already has the file
    downloaded: int = 0
    resumed: int = 0
    cached: bool = False


def pull(spec: str | PullSpec, *, revision: str | None = None,
         progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
         endpoint: str | None = None, token: str | bool | None = None,
         cache_dir: Path | None = None, max_retries: int = 3, retry_wait_s: float = 1.0) -> PulledModel:
    """Download a GGUF model (all parts of a split model) into the HF cache and verify it.

    ``spec`` is ``owner/repo[:QUANT]`` (default Q4_K_M) or ``owner/repo/FILE.gguf``. Each file
    is streamed into ``blobs/<sha256>.incomplete``, resumed with a Range request after a dropped
    connection (up to ``max_retries`` times, then on the next call), hashed as it arrives and
    moved into place only if its sha256 matches the Hub's LFS metadata; a mismatch deletes it
    and raises HubError. Snapshot links are made only when every part is verified, so a partial
    model is never visible to :func:`lab.library.scan`.

    ``progress`` receives :class:`DownloadProgress`; setting ``cancel`` stops at the next chunk
    with :class:`~lab.errors.Cancelled`, keeping the partial file for a later resume."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    repo_id = parsed.repo_id
    rev = revision or parsed.revision or "main"
    _ensure_online()
    tok = resolve_token(token)
    files = list_files(repo_id, rev, endpoint=endpoint, token=tok or False)
    qf = pick_file(files, parsed)
    commit = _check_hex(qf.commit, _GIT_SHA_RE, "commit id")

    cache = Path(cache_dir) if cache_dir is not None else config.hf_hub_cache()
    storage = _repo_folder(cache, repo_id)
    blobs = _inside(storage / "blobs", cache)
    snapshot = _inside(storage / "snapshots" / commit, cache)
    pointers = [_inside(snapshot / p.path, snapshot) for p in qf.parts]
    locks = cache / ".locks" / storage.name

    reporter = _Reporter(progress, qf.size, qf.n_parts)
    results: list[_PartResult] = []
    for index, (part, pointer) in enumerate(zip(qf.parts, pointers), start=1):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"download of {qf.path} cancelled")
        blob_name = part.sha256 or _check_hex(part.blob_id, _GIT_SHA_RE, "blob id")
        blob = blobs / blob_name
        if _is_complete(pointer, part.size):
            results.append(_PartResult(None, cached=True))  # already in this snapshot
        elif _is_complete(blob, part.size):
            results.append(_PartResult(blob, cached=True))  # same file from another revision
        else:
            blobs.mkdir(parents=True, exist_ok=True)
            locks.mkdir(parents=True, exist_ok=True)
            # The lock huggingface_hub takes for the same blob: concurrent pulls (ours, or
            # hf_hub_download's) never write one file twice.
            lock = _acquire_lock(locks / f"{blob_name}.lock", cancel)
            try:
                if _is_complete(blob, part.size):  # another process finished it meanwhile
                    results.append(_PartResult(blob, cached=True))
                else:
                    results.append(_download_part(
                        resolve_url(repo_id, part.path, commit, endpoint), part, blob,
                        token=tok, repo_id=repo_id, index=index, reporter=reporter,
                        cancel=cancel, max_retries=max_retries, retry_wait_s=retry_wait_s,
                    ))
            finally:
                lock.__exit__(None, None, None)
        reporter.done_before += part.size
        reporter.report(part.name, index, 0, "download", force=True)

    # Every part is verified: only now does the model appear in the snapshot.
    for result, pointer in zip(results, pointers):
        if result.blob is not None:
            _link(result.blob, pointer)
    if rev != commit and _REVISION_RE.match(rev) and ".." not in rev:
        ref = _inside(storage / "refs" / rev, storage)
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
    if progress is not None:
        progress(DownloadProgress(qf.parts[-1].name, qf.n_parts, qf.n_parts, qf.size, qf.size,
                                  reporter.speed_bps, 0.0, "done"))
    return PulledModel(
        repo_id=repo_id, revision=rev, commit=commit, quant=qf.quant, path=pointers[0],
        paths=pointers, size=qf.size, sha256=qf.parts[0].sha256, n_parts=qf.n_parts,
        downloaded_bytes=sum(r.downloaded for r in results),
        resumed_bytes=sum(r.resumed for r in results),
        already_cached=all(r.cached for r in results),
    )


def _acquire_lock(path: Path, cancel: threading.Event | None) -> Any:
    """Enter huggingface_hub's WeakFileLock, checking ``cancel`` every second while another
    download holds it. Returns the entered context manager (call ``__exit__`` to release)."""
    from filelock import Timeout
    from huggingface_hub.utils import WeakFileLock

    while True:
        cm = WeakFileLock(path, timeout=1.0)
        try:
            cm.__enter__()
            return cm
        except Timeout:
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled while another download of the same file was running") from None


def _is_complete(path: Path, size: int) -> bool:
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False


class _Verifier:
    """sha256 for LFS files; git's blob sha1 for small files stored in plain git."""

    def __init__(self, part: RepoFile):
        self.part = part
        if part.sha256:
            self.kind, self.expected, self.h = "sha256", part.sha256, hashlib.sha256()
        else:
            self.kind, self.expected, self.h = "git sha1", part.blob_id or "", hashlib.sha1()
            self.h.update(b"blob %d\0" % part.size)
        self.prefix = self.h.copy()

    def reset(self) -> None:
        self.h = self.prefix.copy()

    def update(self, data: bytes) -> None:
        self.h.update(data)

    def ok(self) -> tuple[bool, str]:
        got = self.h.hexdigest()
        return got == self.expected, got


def _download_part(url: str, part: RepoFile, blob: Path, *, token: str | None, repo_id: str,
                   index: int, reporter: _Reporter, cancel: threading.Event | None,
                   max_retries: int, retry_wait_s: float) -> _PartResult:
    import httpx2

    partial = blob.with_name(blob.name + ".incomplete")
    verifier = _Verifier(part)
    resumed = 0
    # Hash what an earlier run left behind, so the digest covers the whole file.
    if partial.exists():
        if partial.stat().st_size > part.size:
            partial.unlink()
        else:
            with open(partial, "rb") as fh:
                for block in iter(lambda: fh.read(CHUNK_BYTES), b""):
                    verifier.update(block)
                    resumed += len(block)
                    reporter.report(part.name, index, resumed, "verify")
    free = shutil.disk_usage(blob.parent).free
    if free < part.size - resumed:
        raise HubError(
            f"Not enough disk space for {part.name}: it needs {_gib(part.size - resumed)} more "
            f"and {blob.parent} has {_gib(free)} free"
        )
    downloaded = 0
    failures = 0
    while True:
        offset = partial.stat().st_size if partial.exists() else 0
        if offset >= part.size:
            break
        headers = _headers(token)
        headers["Accept-Encoding"] = "identity"
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            with _session().stream("GET", url, headers=headers, timeout=_timeout(READ_TIMEOUT_S)) as response:
                _raise_for_status(response, repo_id=repo_id)
                mode = "ab"
                if offset and response.status_code == 200:
                    # The server ignored Range: start over.
                    mode, offset, resumed = "wb", 0, 0
                    verifier.reset()
                elif offset and _content_range_start(response.headers.get("Content-Range")) != offset:
                    raise _error("The Hub answered a byte range other than the one asked for", token)
                with open(partial, mode) as fh:
                    done = offset
                    # Chunks as they arrive (no re-chunking buffer): when the connection drops,
                    # every byte received is already on disk for the resume.
                    for chunk in response.iter_bytes():
                        if cancel is not None and cancel.is_set():
                            raise Cancelled(
                                f"download of {part.name} stopped at {done} of {part.size} bytes; "
                                "pull it again to resume"
                            )
                        if done + len(chunk) > part.size:
                            raise _error(f"The Hub sent more bytes than {part.name} has", token)
                        fh.write(chunk)
                        verifier.update(chunk)
                        done += len(chunk)
                        downloaded += len(chunk)
                        failures = 0
                        reporter.report(part.name, index, done, "download", transferred=len(chunk))
        except (HubError, Cancelled):
            raise
        except httpx2.TransportError as exc:
            if isinstance(exc, (httpx2.ConnectError, httpx2.ProxyError)) and failures >= max_retries:
                raise HubUnreachable() from None
            failures += 1
            have = partial.stat().st_size if partial.exists() else 0
            log.info("download of %s interrupted at %d bytes (%s); attempt %d", part.name, have,
                     type(exc).__name__, failures)
            if failures > max_retries:
                raise _error(
                    f"The download of {part.name} was interrupted at {have} of {part.size} bytes; "
                    "run the same pull again to resume", token) from None
            if cancel is not None and cancel.wait(retry_wait_s * failures):
                raise Cancelled(f"download of {part.name} cancelled") from None
            if cancel is None:
                time.sleep(retry_wait_s * failures)
            continue
        except Exception as exc:
            raise _translate(exc, token=token, repo_id=repo_id, what=f"the download of {part.name}") from None
    size = partial.stat().st_size
    good, got = verifier.ok()
    if size != part.size or not good:
        partial.unlink(missing_ok=True)
        raise HubError(
            f"{part.name} failed verification: its {verifier.kind} is {got[:16]}… but the Hub "
            f"publishes {verifier.expected[:16]}…; the file was deleted and not registered"
        )
    _finalize_blob(partial, blob)
    return _PartResult(blob, downloaded=downloaded, resumed=resumed)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def _finalize_blob(partial: Path, blob: Path) -> None:
    # open() already created the file with the user's umask (unlike a mkstemp file), so a
    # rename is all: same volume, atomic.
    os.replace(partial, blob)


def _link(blob: Path, pointer: Path) -> None:
    """Make ``pointer`` (in the snapshot) a relative symlink to ``blob``, as huggingface_hub
    does; copy where symlinks are not allowed."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        if _same_file(pointer, blob):
            return
        pointer.unlink()
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    except FileExistsError:
        if not _same_file(pointer, blob):  # a concurrent pull linked it first, or a stranger
            raise
    except OSError:  # no symlinks here (some Windows setups, some network filesystems)
        try:
            os.link(blob, pointer)
        except OSError:
            tmp = pointer.with_name(pointer.name + ".incomplete")
            shutil.copyfile(blob, tmp)
            os.replace(tmp, pointer)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# --- library --------------------------------------------------------------------------------


def register_pulled(store: "Store", pulled: PulledModel) -> dict[str, Any]:
    """Register a pulled model in the library with its source repo and commit; returns the row.

    The sha256 verified during the download is handed to the store's cache so the file is not
    hashed a second time."""
    from lab.library import LocalModel, register

    if pulled.sha256:
        st = pulled.path.stat()
        store.remember_sha256(pulled.path.resolve(), st.st_size, st.st_mtime_ns, pulled.sha256)
    snap = _snapshot_root(pulled.path)
    model = LocalModel(
        name=f"{pulled.repo_id}/{pulled.path.relative_to(snap).as_posix()}", path=pulled.path,
        source="hf-cache", size=pulled.size, repo=pulled.repo_id, revision=pulled.commit,
        n_parts=pulled.n_parts,
    )
    return register(store, model, source="hf", source_repo=pulled.repo_id, source_revision=pulled.commit)
