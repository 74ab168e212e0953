"""The local model library: names, the HF cache layout, split files, the demo."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lab import library
from lab.errors import ModelError
from lab.store import Store


@pytest.mark.parametrize("name,quant", [
    ("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
    ("model-IQ3_XXS.gguf", "IQ3_XXS"),
    ("llama-3.2-1b-instruct-f16.gguf", "F16"),
    ("big-Q5_K_S-00002-of-00003.gguf", "Q5_K_S"),
    ("notes.gguf", None),
])
def test_quant_from_filename(name: str, quant: str | None) -> None:
    assert library.quant_from_filename(name) == quant


def test_hf_cache_and_models_folder_are_scanned(tiny_gguf: Path, lab_home: Path) -> None:
    data = tiny_gguf.read_bytes()
    snap = lab_home / "hf" / "models--acme--Tiny-GGUF" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    blobs = lab_home / "hf" / "models--acme--Tiny-GGUF" / "blobs"
    blobs.mkdir()
    blob = blobs / hashlib.sha256(data).hexdigest()
    blob.write_bytes(data)
    os.symlink(blob, snap / "tiny-Q8_0.gguf")
    (blobs / "partial.incomplete").write_bytes(data[:10])
    # an incomplete split set is not a model; a complete one is listed once with its total size
    (snap / "big-00001-of-00002.gguf").write_bytes(data)
    folder = lab_home / "models"
    folder.mkdir()
    (folder / "split-00001-of-00002.gguf").write_bytes(data)
    (folder / "split-00002-of-00002.gguf").write_bytes(data)
    found = {m.name: m for m in library.scan()}
    assert "acme/Tiny-GGUF/tiny-Q8_0.gguf" in found
    cached = found["acme/Tiny-GGUF/tiny-Q8_0.gguf"]
    assert cached.source == "hf-cache" and cached.repo == "acme/Tiny-GGUF" and cached.revision == "abc123"
    assert not any("big-" in n for n in found)
    assert found["split-00001-of-00002.gguf"].n_parts == 2
    assert found["split-00001-of-00002.gguf"].size == 2 * len(data)
    assert library.resolve("acme/Tiny-GGUF:Q8_0").path == cached.path
    assert library.resolve("tiny-Q8_0").path == cached.path


def test_resolve_errors(tmp_path: Path, lab_home: Path, tiny_gguf: Path) -> None:
    with pytest.raises(ModelError, match="No such file"):
        library.resolve(str(tmp_path / "x.gguf"))
    with pytest.raises(ModelError, match="is a directory"):
        library.resolve(str(tmp_path))
    folder = lab_home / "models"
    folder.mkdir()
    for name in ("a-Q4_0.gguf", "b-Q4_0.gguf"):
        (folder / name).write_bytes(tiny_gguf.read_bytes())
    with pytest.raises(ModelError, match="matches 2 models"):
        library.resolve("Q4_0")


def test_registering_an_unchanged_file_again_returns_its_stored_row(tiny_gguf: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "lab.db")
    row = library.register(store, tiny_gguf)
    assert row["n_layer"] == 2 and row["source"] == "path"
    # a mark the header cannot give: only a registration that reads nothing again keeps it
    store.db["models"].update(row["id"], {"n_layer": 99})
    assert library.register(store, tiny_gguf)["n_layer"] == 99
    # the same bytes under another source, or with provenance, are read and written again
    other = library.LocalModel(name=tiny_gguf.name, path=tiny_gguf, source="models", size=tiny_gguf.stat().st_size)
    again = library.register(store, other)
    assert again["n_layer"] == 2 and again["source"] == "models"
    store.db["models"].update(row["id"], {"n_layer": 99})
    assert library.register(store, other, base_model_id="base")["n_layer"] == 2


def test_demo_resolves_and_registers(demo_gguf: Path, tmp_path: Path) -> None:
    m = library.resolve("demo")
    assert m.path == demo_gguf and m.source == "demo"
    store = Store(tmp_path / "lab.db")
    row = library.register(store, m)
    assert row["id"] == hashlib.sha256(demo_gguf.read_bytes()).hexdigest()
    assert row["source_repo"] == library.DEMO_REPO and row["file_type"] == "Q4_1"
    # the second registration reuses the remembered hash (same size and mtime)
    assert store.cached_sha256(demo_gguf.resolve(), demo_gguf.stat().st_size, demo_gguf.stat().st_mtime_ns) == row["id"]
