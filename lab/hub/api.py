"""The Hub's HTTP API: one shared client, headers and token, errors turned into one sentence
without the token, search, the file tree of a repo, and which GGUF file a spec names.

The transport is ``httpx2``, the HTTP client huggingface_hub 2.x is built on; its error classes,
header builder and token lookup come from huggingface_hub itself."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import quote, urlsplit

from lab.errors import HubError
from lab.hub.names import (
    _GIT_SHA_RE, _SHA256_RE, DEFAULT_QUANT, QUANT_PREFERENCE, PullSpec, _check_hex, is_safe_repo_path, scrub,
    validate_repo_id,
)

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
API_TIMEOUT_S = 20.0
CONNECT_TIMEOUT_S = 10.0

OFFLINE_MESSAGE = (
    "The Hugging Face Hub cannot be reached (offline mode is on or there is no network); "
    "local models still work"
)


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


class HubUnreachable(HubError):
    """The Hub cannot be reached: offline mode, no network, or a connection refused."""

    def __init__(self, message: str = OFFLINE_MESSAGE):
        super().__init__(message)


def _error(message: str, token: str | None) -> HubError:
    return HubError(scrub(message, token))


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


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"bytes (\d+)-\d+/(?:\d+|\*)", value or "")
    return int(m.group(1)) if m else None


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
