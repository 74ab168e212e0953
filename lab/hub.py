"""Hugging Face Hub: search GGUF repos, list quant files, check the fit before download, pull.

Everything here is domain code for two faces (the CLI and the TUI): functions return
dataclasses, long operations take a ``threading.Event`` to cancel and a progress callback, and
errors a user can cause are :class:`~lab.errors.HubError` with one sentence that never contains
the token.

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
import re
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator
from urllib.parse import quote, urlsplit

from lab import config
from lab.errors import Cancelled, HubError, ModelError

if TYPE_CHECKING:
    from lab.gguf_info import GGUFHeader, MemoryEstimate, ModelSummary
    from lab.store import Store

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_QUANT = "Q4_K_M"
# When no quant is named and the repo has no Q4_K_M, take the first of these that exists.
QUANT_PREFERENCE = (
    "Q4_K_M", "Q4_K_S", "Q4_0", "IQ4_XS", "IQ4_NL", "Q4_1", "Q5_K_M", "Q5_K_S", "Q5_0",
    "Q6_K", "Q8_0", "Q3_K_M", "Q3_K_L", "BF16", "F16",
)

PROBE_FIRST_BYTES = 256 * 1024
PROBE_MAX_BYTES = 32 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024
API_TIMEOUT_S = 20.0
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
PROGRESS_INTERVAL_S = 0.1

OFFLINE_MESSAGE = (
    "The Hugging Face Hub cannot be reached (offline mode is on or there is no network); "
    "local models still work"
)

_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=@,()\[\]~ -]{0,254}$")
_REVISION_RE = re.compile(r"^[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{8,}")


# --- results ------------------------------------------------------------------------------------


@dataclass
class RepoHit:
    """One GGUF repository found by :func:`search`. Figures the Hub does not give are None."""

    repo_id: str
    downloads: int | None
    likes: int | None
    last_modified: str | None  # ISO 8601, as the Hub gives it
    n_params: int | None
    architecture: str | None = None
    context_length: int | None = None
    gated: bool = False
    private: bool = False
    pipeline_tag: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RepoFile:
    """One file of a repo tree: size and the hashes the Hub publishes for it."""

    path: str
    size: int
    sha256: str | None  # LFS oid; None for files stored in plain git
    blob_id: str | None  # git blob sha1

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class QuantFile:
    """One downloadable GGUF model in a repo: a single file, or all parts of a split model."""

    repo_id: str
    commit: str | None
    quant: str | None  # from the file name; see FitCheck.header_quant for the header's word
    parts: list[RepoFile]
    is_mmproj: bool = False

    @property
    def path(self) -> str:
        """Path of the (first) file in the repo; what ``pull REPO/FILE`` takes."""
        return self.parts[0].path

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    @property
    def n_parts(self) -> int:
        return len(self.parts)

    @property
    def spec(self) -> str:
        """What to give ``pull`` to get exactly this file."""
        return f"{self.repo_id}/{self.path}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id, "commit": self.commit, "path": self.path, "quant": self.quant,
            "size": self.size, "n_parts": self.n_parts, "is_mmproj": self.is_mmproj,
            "parts": [dataclasses.asdict(p) for p in self.parts],
        }


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
class PullSpec:
    """A parsed ``REPO[:QUANT]`` or ``REPO/FILE`` argument."""

    repo_id: str
    quant: str | None = None
    filename: str | None = None
    revision: str | None = None


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


# --- configuration ---------------------------------------------------------------------------


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub base URL: the argument, ``$HF_ENDPOINT``, or https://huggingface.co.

    Read at call time (huggingface_hub reads HF_ENDPOINT once, at import)."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return True
    return False


def resolve_token(token: str | bool | None = None) -> str | None:
    """The token to send: the argument, else ``$HF_TOKEN`` or the ``hf auth login`` token.

    ``False`` means "send none" (internal calls pass ``tok or False`` so a resolved "none" is
    not looked up again). The value is only ever put in an Authorization header."""
    if token is False:
        return None
    if isinstance(token, str) and token:
        return token
    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception:  # a broken token file or OIDC exchange must not stop anonymous use
        log.debug("no usable Hugging Face token")
        return None


def scrub(text: str, token: str | None = None) -> str:
    """Remove the token (and anything shaped like one) from a message."""
    if token:
        text = text.replace(token, "***")
    return _TOKEN_RE.sub("hf_***", text)


class HubUnreachable(HubError):
    """The Hub cannot be reached: offline mode, no network, or a connection refused."""

    def __init__(self, message: str = OFFLINE_MESSAGE):
        super().__init__(message)


def _error(message: str, token: str | None) -> HubError:
    return HubError(scrub(message, token))


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


# --- names ------------------------------------------------------------------------------------


def validate_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it looks like ``owner/name``; raise HubError otherwise."""
    if not _REPO_RE.match(repo_id or "") or ".." in repo_id or "--" in repo_id:
        raise HubError(f"'{repo_id}' is not a Hugging Face repo id (expected owner/name)")
    return repo_id


def safe_repo_path(path: str) -> str:
    """Return a repo file path if it is safe to place under a snapshot folder.

    Rejects absolute paths, ``..`` and hidden components, backslashes, control and other
    odd characters, so a hostile listing cannot write outside the cache."""
    if not is_safe_repo_path(path):
        shown = repr(path)[:120] if isinstance(path, str) else "a non-text name"
        raise HubError(f"The file name {shown} is unsafe (absolute, '..', hidden or odd characters) and was refused")
    return path


def is_safe_repo_path(path: object) -> bool:
    """True if ``path`` is a relative, plain file path (see :func:`safe_repo_path`)."""
    if not isinstance(path, str) or not path or len(path) > 1024:
        return False
    if path.startswith("/") or "\\" in path:
        return False
    return all(_COMPONENT_RE.match(part) for part in path.split("/"))


def _check_hex(value: str | None, pattern: re.Pattern[str], what: str) -> str:
    # The value is not echoed: a hostile endpoint could send back what it was sent.
    if not isinstance(value, str) or not pattern.match(value):
        raise HubError(f"The Hub sent a malformed {what}; nothing was written")
    return value


def parse_spec(spec: str) -> PullSpec:
    """Parse ``owner/repo``, ``owner/repo:Q5_K_M``, ``owner/repo/path/file.gguf`` or
    ``owner/repo@revision...``; an ``hf.co/`` or ``https://huggingface.co/`` prefix is allowed,
    and so is a pasted file URL (``.../blob/main/file.gguf``)."""
    s = spec.strip()
    for prefix in ("https://huggingface.co/", "http://huggingface.co/", "huggingface.co/", "hf.co/"):
        if s.lower().startswith(prefix):
            s = s[len(prefix):]
            break
    quant: str | None = None
    filename: str | None = None
    revision: str | None = None
    head, sep, tail = s.partition(":")
    if sep:
        quant = tail.strip().upper() or None
        s = head
    pieces = s.split("/")
    if len(pieces) < 2:
        raise HubError(f"'{spec}' is not a model on the Hub; give owner/repo[:QUANT] or owner/repo/FILE.gguf")
    repo, rest = "/".join(pieces[:2]), pieces[2:]
    if "@" in repo:
        repo, _, revision = repo.partition("@")
    if len(rest) >= 3 and rest[0] in ("blob", "resolve"):  # a pasted file URL
        revision, rest = rest[1], rest[2:]
    if rest:
        if quant:
            raise HubError(f"'{spec}' names both a file and a quant; give one of them")
        filename = safe_repo_path("/".join(rest))
        if not filename.lower().endswith(".gguf"):
            raise HubError(f"'{filename}' is not a .gguf file")
    if revision is not None and (not _REVISION_RE.match(revision) or ".." in revision):
        raise HubError(f"'{revision}' is not a valid revision")
    return PullSpec(validate_repo_id(repo), quant, filename, revision)


# --- HTTP ---------------------------------------------------------------------------------------


def _headers(token: str | None) -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    from lab import __version__

    return build_hf_headers(token=token or False, library_name="rightsizer", library_version=__version__)


def _timeout(read: float = API_TIMEOUT_S) -> Any:
    import httpx2

    return httpx2.Timeout(read, connect=CONNECT_TIMEOUT_S)


_CLIENT: Any = None
_CLIENT_LOCK = threading.Lock()


def _session() -> Any:
    """One shared ``httpx2.Client`` (the transport huggingface_hub uses), following redirects.

    Not huggingface_hub's own ``get_session()``: that one refuses every request when
    HF_HUB_OFFLINE was set when huggingface_hub was *imported*, while this module decides
    offline-ness from the environment at call time."""
    global _CLIENT
    with _CLIENT_LOCK:
        if _CLIENT is None:
            import httpx2

            _CLIENT = httpx2.Client(follow_redirects=True, timeout=_timeout())
        return _CLIENT


def _ensure_online() -> None:
    if is_offline():
        raise HubUnreachable()


def _translate(exc: BaseException, *, token: str | None, repo_id: str | None = None,
               what: str = "the request") -> HubError:
    """Turn an httpx2 / huggingface_hub exception into one clear sentence without the token."""
    import httpx2
    from huggingface_hub import errors as hf

    repo = repo_id or "the repo"
    if isinstance(exc, HubError):
        return _error(str(exc), token)
    if isinstance(exc, (hf.OfflineModeIsEnabled, httpx2.ConnectError, httpx2.ConnectTimeout,
                        httpx2.ProxyError, httpx2.UnsupportedProtocol)):
        return HubUnreachable()
    if isinstance(exc, httpx2.TimeoutException):
        return HubError(f"The Hugging Face Hub did not answer in time for {what}; try again later")
    if isinstance(exc, hf.GatedRepoError):
        return _error(
            f"{repo} is gated: accept its conditions on the Hub, then set HF_TOKEN or run "
            "'hf auth login' with an account that has access", token)
    if isinstance(exc, hf.RepositoryNotFoundError):
        hint = "the token given has no access to it" if token else "set HF_TOKEN or run 'hf auth login' if it is private"
        return _error(f"Repository {repo} was not found on the Hub ({hint})", token)
    if isinstance(exc, hf.RevisionNotFoundError):
        return _error(f"{repo} has no such revision", token)
    if isinstance(exc, hf.EntryNotFoundError):
        return _error(f"{what} was not found in {repo}", token)
    if isinstance(exc, hf.HfHubHTTPError):
        status = exc.response.status_code if getattr(exc, "response", None) is not None else "?"
        if status in (401, 403):
            return _error(f"The Hub refused access to {repo} (HTTP {status}); check HF_TOKEN or 'hf auth login'", token)
        return _error(f"The Hub answered HTTP {status} for {what}", token)
    if isinstance(exc, httpx2.TransportError):
        return _error(f"The connection to the Hub failed during {what} ({type(exc).__name__})", token)
    if isinstance(exc, OSError):
        return _error(f"Could not write while doing {what}: {exc.strerror or exc}", token)
    raise exc  # not something a user caused: a bug, let it show


def _raise_for_status(response: Any, *, repo_id: str | None) -> None:
    from huggingface_hub.utils import hf_raise_for_status

    if response.status_code >= 400:
        if not response.is_stream_consumed:
            response.read()
        hf_raise_for_status(response)


def _get_json(url: str, *, params: Any = None, token: str | None, repo_id: str | None,
              what: str) -> tuple[Any, Any]:
    """GET a JSON API route once (no retry loop: no network must fail fast). Returns (json, response)."""
    _ensure_online()
    try:
        response = _session().get(url, params=params, headers=_headers(token), timeout=_timeout())
        _raise_for_status(response, repo_id=repo_id)
        return response.json(), response
    except (ValueError, KeyError) as exc:
        raise _error(f"The Hub sent an unreadable answer for {what}", token) from exc
    except Exception as exc:
        raise _translate(exc, token=token, repo_id=repo_id, what=what) from None


def resolve_url(repo_id: str, path: str, revision: str, endpoint: str | None = None) -> str:
    """The Hub's download URL for a file (``/{repo}/resolve/{revision}/{path}``)."""
    return f"{hub_endpoint(endpoint)}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"


# --- search and listing ---------------------------------------------------------------------


def search(query: str, limit: int = 20, *, endpoint: str | None = None,
           token: str | bool | None = None) -> list[RepoHit]:
    """GGUF repositories matching ``query``, most downloaded first."""
    _ensure_online()
    tok = resolve_token(token)
    params: list[tuple[str, Any]] = [
        ("search", query), ("filter", "gguf"), ("sort", "downloads"), ("limit", max(1, int(limit))),
    ]
    for prop in ("downloads", "likes", "lastModified", "gguf", "gated", "private", "pipeline_tag"):
        params.append(("expand", prop))
    data, _ = _get_json(f"{hub_endpoint(endpoint)}/api/models", params=params, token=tok,
                        repo_id=None, what=f"the search for '{query}'")
    if not isinstance(data, list):
        raise _error("The Hub sent an unreadable answer for the search", tok)
    hits = [_repo_hit(item) for item in data if isinstance(item, dict) and item.get("id")]
    hits.sort(key=lambda h: h.downloads or 0, reverse=True)
    return hits[:limit]


def _repo_hit(item: dict[str, Any]) -> RepoHit:
    gguf = item.get("gguf") if isinstance(item.get("gguf"), dict) else {}
    safetensors = item.get("safetensors") if isinstance(item.get("safetensors"), dict) else {}
    n_params = gguf.get("total") if isinstance(gguf.get("total"), int) else safetensors.get("total")
    gated = item.get("gated")
    return RepoHit(
        repo_id=str(item["id"]),
        downloads=item.get("downloads") if isinstance(item.get("downloads"), int) else None,
        likes=item.get("likes") if isinstance(item.get("likes"), int) else None,
        last_modified=item.get("lastModified") or item.get("last_modified"),
        n_params=n_params if isinstance(n_params, int) else None,
        architecture=gguf.get("architecture"),
        context_length=gguf.get("context_length") if isinstance(gguf.get("context_length"), int) else None,
        gated=bool(gated) and gated != "false",
        private=bool(item.get("private")),
        pipeline_tag=item.get("pipeline_tag"),
    )


def resolve_commit(repo_id: str, revision: str | None = None, *, endpoint: str | None = None,
                   token: str | bool | None = None) -> str:
    """The commit sha that ``revision`` (default ``main``) of ``repo_id`` points to."""
    validate_repo_id(repo_id)
    tok = resolve_token(token)
    rev = revision or "main"
    url = f"{hub_endpoint(endpoint)}/api/models/{repo_id}/revision/{quote(rev, safe='')}"
    data, _ = _get_json(url, token=tok, repo_id=repo_id, what=f"the revision {rev} of {repo_id}")
    sha = data.get("sha") if isinstance(data, dict) else None
    return _check_hex(sha, _GIT_SHA_RE, "commit id")


def _tree(repo_id: str, commit: str, *, endpoint: str | None, token: str | None) -> Iterator[dict[str, Any]]:
    url: str | None = f"{hub_endpoint(endpoint)}/api/models/{repo_id}/tree/{quote(commit, safe='')}"
    params: Any = {"recursive": "true", "expand": "false"}
    pages = 0
    while url is not None:
        data, response = _get_json(url, params=params, token=token, repo_id=repo_id,
                                   what=f"the file list of {repo_id}")
        if not isinstance(data, list):
            raise _error(f"The Hub sent an unreadable file list for {repo_id}", token)
        yield from (e for e in data if isinstance(e, dict))
        nxt = response.links.get("next", {}).get("url") if response.links else None
        if nxt and urlsplit(nxt).netloc != urlsplit(hub_endpoint(endpoint)).netloc:
            # The token goes with every page: never to another host.
            raise _error(f"The Hub's file list of {repo_id} continues on another host; refused", token)
        url, params = (nxt, None) if nxt else (None, None)
        pages += 1
        if pages > 1000:
            raise _error(f"The file list of {repo_id} does not end", token)


def list_files(repo_id: str, revision: str | None = None, *, endpoint: str | None = None,
               token: str | bool | None = None) -> list[QuantFile]:
    """Every GGUF model in a repo at ``revision`` (default ``main``): splits grouped, quant from
    the file name, sizes and LFS sha256 from the tree listing. Sorted by size.

    Files with unsafe names (see :func:`safe_repo_path`) are left out."""
    validate_repo_id(repo_id)
    _ensure_online()
    tok = resolve_token(token)
    commit = resolve_commit(repo_id, revision, endpoint=endpoint, token=tok or False)
    files: list[RepoFile] = []
    for entry in _tree(repo_id, commit, endpoint=endpoint, token=tok):
        path = entry.get("path")
        if entry.get("type") != "file" or not isinstance(path, str) or not path.lower().endswith(".gguf"):
            continue
        if not is_safe_repo_path(path):
            # A hostile or broken listing: never offered, so never written.
            log.warning("ignoring a file with an unsafe name in %s: %r", repo_id, scrub(path[:120], tok))
            continue
        lfs = entry.get("lfs") if isinstance(entry.get("lfs"), dict) else None
        sha = lfs.get("oid") if lfs else None
        size = (lfs or {}).get("size", entry.get("size"))
        if not isinstance(size, int) or size < 0:
            raise _error(f"The Hub gave no size for {path}", tok)
        files.append(RepoFile(
            path=path, size=size,
            sha256=_check_hex(sha, _SHA256_RE, "sha256") if sha is not None else None,
            blob_id=entry.get("oid") if isinstance(entry.get("oid"), str) else None,
        ))
    return group_files(repo_id, commit, files)


def group_files(repo_id: str, commit: str | None, files: list[RepoFile]) -> list[QuantFile]:
    """Group split parts (``stem-00001-of-00003.gguf``) into one QuantFile each.

    Incomplete split sets are dropped: they cannot be loaded."""
    from lab.library import quant_from_filename, split_info

    singles: list[QuantFile] = []
    groups: dict[tuple[str, str, int], list[RepoFile]] = {}
    for f in files:
        info = split_info(f.name)
        if info:
            folder = f.path.rsplit("/", 1)[0] if "/" in f.path else ""
            groups.setdefault((folder, info[0].lower(), info[2]), []).append(f)
        else:
            singles.append(_quant_file(repo_id, commit, [f], quant_from_filename))
    for (_, _, count), parts in groups.items():
        parts.sort(key=lambda p: split_info(p.name)[1])  # type: ignore[index]
        indexes = [split_info(p.name)[1] for p in parts]  # type: ignore[index]
        if indexes != list(range(1, count + 1)):
            log.info("skipping incomplete split set %s", parts[0].path)
            continue
        singles.append(_quant_file(repo_id, commit, parts, quant_from_filename))
    singles.sort(key=lambda q: (q.is_mmproj, q.size, q.path))
    return singles


def _quant_file(repo_id: str, commit: str | None, parts: list[RepoFile],
                quant_from_filename: Callable[[str], str | None]) -> QuantFile:
    name = parts[0].name
    return QuantFile(repo_id, commit, quant_from_filename(name), parts,
                     is_mmproj="mmproj" in name.lower())


def pick_file(files: list[QuantFile], spec: PullSpec) -> QuantFile:
    """The file ``spec`` asks for: a named file, a named quant, or the default quant
    (Q4_K_M, as llama.cpp's ``-hf`` does, falling back along :data:`QUANT_PREFERENCE`)."""
    models = [f for f in files if not f.is_mmproj]
    if spec.filename:
        wanted = spec.filename.lower()
        for f in files:
            if any(p.path.lower() == wanted for p in f.parts):
                return f
        raise HubError(f"{spec.repo_id} has no file {spec.filename}")
    if not models:
        raise HubError(f"{spec.repo_id} has no GGUF model files")
    if spec.quant:
        matches = [f for f in models if (f.quant or "").upper() == spec.quant]
        if not matches:
            have = ", ".join(sorted({f.quant or "?" for f in models}))
            raise HubError(f"{spec.repo_id} has no {spec.quant} file (it has: {have})")
    else:
        matches = []
        for quant in QUANT_PREFERENCE:
            matches = [f for f in models if (f.quant or "").upper() == quant]
            if matches:
                break
        if not matches and len(models) == 1:
            matches = models
        if not matches:
            have = ", ".join(sorted({f.quant or f.path for f in models}))
            raise HubError(f"{spec.repo_id} has no {DEFAULT_QUANT} file; name one of: {have}")
    if len(matches) > 1:
        names = ", ".join(f.path for f in matches[:4])
        raise HubError(f"{spec.repo_id} has {len(matches)} {matches[0].quant} files ({names}); give owner/repo/FILE")
    return matches[0]


# --- header probe and fit check -------------------------------------------------------------


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


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"bytes (\d+)-\d+/(?:\d+|\*)", value or "")
    return int(m.group(1)) if m else None


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


# --- download -------------------------------------------------------------------------------


def _repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def _snapshot_root(path: Path) -> Path:
    for parent in path.parents:
        if parent.parent.name == "snapshots":
            return parent
    return path.parent


def _inside(child: Path, root: Path) -> Path:
    """``child`` if it stays under ``root`` once resolved; HubError otherwise."""
    resolved = Path(os.path.abspath(child))
    if not resolved.is_relative_to(Path(os.path.abspath(root))):
        raise HubError(f"Refused to write {child.name} outside the Hugging Face cache")
    return child


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


__all__ = [
    "DEFAULT_QUANT", "OFFLINE_MESSAGE", "DownloadProgress", "FitCheck", "MemoryBudget", "HeaderProbe", "PullSpec",
    "PulledModel", "HubUnreachable", "QuantFile", "RepoFile", "RepoHit", "fit_check", "group_files", "hub_endpoint",
    "is_offline", "is_safe_repo_path", "list_files", "memory_budget", "parse_spec", "pick_file", "probe_header", "pull",
    "register_pulled", "resolve_commit", "resolve_token", "safe_repo_path", "scrub", "search",
    "validate_repo_id",
]
