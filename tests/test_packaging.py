"""The wheel ships every package, the catalog and the data files."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "lab").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert found <= listed, f"add to pyproject.toml packages: {sorted(found - listed)}"
    missing = {p for p in listed if p != "lab._models" and not (ROOT / p.replace(".", "/")).is_dir()}
    assert not missing, f"pyproject.toml lists packages that do not exist: {sorted(missing)}"
    assert config["package-dir"]["lab._models"] == "models"
    assert (ROOT / "models" / "catalog.toml").is_file()


def test_catalog_loads() -> None:
    from lab import catalog

    entries = catalog.load()
    assert len(entries) >= 8
    assert any("SmolLM2" in e.name for e in entries)
