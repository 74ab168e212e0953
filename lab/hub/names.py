"""Names on the Hub and the safety rules around them: repo ids, revisions, file paths that may
be written under a snapshot folder, hex ids the Hub sends, and the ``REPO[:QUANT]`` /
``REPO/FILE`` argument of ``pull``. Also :func:`scrub`, which keeps a token out of any message.

Nothing here touches the network."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lab.errors import HubError

DEFAULT_QUANT = "Q4_K_M"
# When no quant is named and the repo has no Q4_K_M, take the first of these that exists.
QUANT_PREFERENCE = (
    "Q4_K_M", "Q4_K_S", "Q4_0", "IQ4_XS", "IQ4_NL", "Q4_1", "Q5_K_M", "Q5_K_S", "Q5_0",
    "Q6_K", "Q8_0", "Q3_K_M", "Q3_K_L", "BF16", "F16",
)

_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=@,()\[\]~ -]{0,254}$")
_REVISION_RE = re.compile(r"^[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{8,}")


@dataclass
class PullSpec:
    """A parsed ``REPO[:QUANT]`` or ``REPO/FILE`` argument."""

    repo_id: str
    quant: str | None = None
    filename: str | None = None
    revision: str | None = None


def scrub(text: str, token: str | None = None) -> str:
    """Remove the token (and anything shaped like one) from a message."""
    if token:
        text = text.replace(token, "***")
    return _TOKEN_RE.sub("hf_***", text)


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


def _inside(child: Path, root: Path) -> Path:
    """``child`` if it stays under ``root`` once resolved; HubError otherwise."""
    resolved = Path(os.path.abspath(child))
    if not resolved.is_relative_to(Path(os.path.abspath(root))):
        raise HubError(f"Refused to write {child.name} outside the Hugging Face cache")
    return child
