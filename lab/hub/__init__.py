"""Hugging Face Hub: search GGUF repos, list quant files, check the fit before download, pull.

Everything here is domain code for two faces (the CLI and the TUI): functions return
dataclasses, long operations take a ``threading.Event`` to cancel and a progress callback, and
errors a user can cause are :class:`~lab.errors.HubError` with one sentence that never contains
the token.

One module per job: :mod:`~lab.hub.names` (repo ids, paths, specs, token scrubbing),
:mod:`~lab.hub.api` (HTTP client, errors, search, listing), :mod:`~lab.hub.fit` (header probe
with Range requests, memory fit) and :mod:`~lab.hub.download` (resumable, verified pull into
the HF cache, registration in the library). The names below are the package's public API.
"""

from __future__ import annotations

from lab.hub.api import (
    DEFAULT_ENDPOINT, OFFLINE_MESSAGE, HubUnreachable, QuantFile, RepoFile, RepoHit, group_files, hub_endpoint,
    is_offline, list_files, pick_file, resolve_commit, resolve_token, resolve_url, search,
)
from lab.hub.download import DownloadProgress, ProgressCallback, PulledModel, pull, register_pulled
from lab.hub.fit import (
    PROBE_FIRST_BYTES, PROBE_MAX_BYTES, FitCheck, HeaderProbe, MemoryBudget, fit_check, memory_budget, probe_header,
)
from lab.hub.names import (
    DEFAULT_QUANT, QUANT_PREFERENCE, PullSpec, is_safe_repo_path, parse_spec, safe_repo_path, scrub, validate_repo_id,
)

__all__ = [
    "DEFAULT_ENDPOINT", "DEFAULT_QUANT", "OFFLINE_MESSAGE", "PROBE_FIRST_BYTES", "PROBE_MAX_BYTES", "QUANT_PREFERENCE",
    "DownloadProgress", "FitCheck", "HeaderProbe", "HubUnreachable", "MemoryBudget", "ProgressCallback", "PullSpec",
    "PulledModel", "QuantFile", "RepoFile", "RepoHit", "fit_check", "group_files", "hub_endpoint", "is_offline",
    "is_safe_repo_path", "list_files", "memory_budget", "parse_spec", "pick_file", "probe_header", "pull",
    "register_pulled", "resolve_commit", "resolve_token", "resolve_url", "safe_repo_path", "scrub", "search",
    "validate_repo_id",
]
