"""pyproject.toml declares every third-party module the code and the tests import, in ranges that
hold the versions installed here (the ones the suite runs on)."""

from __future__ import annotations

import ast
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(*extras: str) -> list[Requirement]:
    """The base dependencies, plus those of ``extras``."""
    found = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        found += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return found


def imported_modules(source: str) -> set[str]:
    """Top-level names of every absolute import in ``source``, at any depth (inside functions,
    ``try`` blocks and ``if`` branches too)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def third_party_imports(folder: Path) -> dict[str, list[str]]:
    """Third-party top-level module -> the files under ``folder`` that import it. The standard
    library, ``lab`` and modules that live in ``folder`` itself (test helpers) are left out."""
    files = sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)
    local = {"lab"} | {p.stem for p in files} | {p.parent.name for p in files}
    found: dict[str, list[str]] = {}
    for path in files:
        for module in imported_modules(path.read_text(encoding="utf-8")):
            if module not in sys.stdlib_module_names and module not in local:
                found.setdefault(module, []).append(str(path.relative_to(ROOT)))
    return found


@cache
def _module_to_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def distributions(module: str) -> set[str]:
    """The distributions that install ``module``; a module not installed here (a dependency for
    another Python version) is taken to come from the distribution of the same name."""
    return {canonicalize_name(d) for d in _module_to_distributions().get(module, [module])}


def undeclared(folder: Path, reqs: list[Requirement]) -> dict[str, list[str]]:
    names = {canonicalize_name(r.name) for r in reqs}
    return {m: files for m, files in third_party_imports(folder).items() if not distributions(m) & names}


def test_the_scan_sees_imports_at_any_depth() -> None:
    text = ("import os\nimport numpy as np\nfrom . import x\n"
            "def f():\n    try:\n        import tomllib\n    except ModuleNotFoundError:\n        import tomli\n"
            "    from httpx2 import Client\n")
    assert imported_modules(text) == {"os", "numpy", "tomllib", "tomli", "httpx2"}
    lab = third_party_imports(ROOT / "lab")
    # imported only inside functions: the hub's transport, llama.cpp in the engine child
    assert {"httpx2", "llama_cpp", "huggingface_hub", "textual"} <= set(lab)
    assert "lab" not in lab and "json" not in lab
    assert distributions("pynvml") == {"nvidia-ml-py"} and distributions("yaml") == {"pyyaml"}


def test_every_module_lab_imports_is_a_declared_dependency() -> None:
    # the report extra's matplotlib is imported only by `rightsizer report`, which names the extra
    missing = undeclared(ROOT / "lab", requirements("report"))
    assert not missing, f"add to pyproject.toml [project] dependencies: {missing}"


def test_every_module_the_tests_import_is_declared_for_them() -> None:
    missing = undeclared(ROOT / "tests", requirements("test"))
    assert not missing, f"add to pyproject.toml's test extra: {missing}"


def test_every_declared_dependency_is_imported() -> None:
    imported = set().union(*(distributions(m) for m in third_party_imports(ROOT / "lab")))
    unused = [r.name for r in requirements() if canonicalize_name(r.name) not in imported]
    assert not unused, f"declared in pyproject.toml but imported nowhere in lab/: {unused}"


def test_the_installed_versions_are_within_the_declared_ranges() -> None:
    outside = {}
    for req in requirements("demo", "report", "test"):
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            outside[req.name] = "not installed"
            continue
        if not req.specifier.contains(installed, prereleases=True):
            outside[req.name] = f"{installed} is outside {req.specifier}"
    assert not outside, f"the suite runs on versions pyproject.toml does not allow: {outside}"
