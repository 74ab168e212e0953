"""Nothing outside lab/tui imports Textual; the CLI and the domain start without it; the app never
imports the CLI (what both faces share lives in the domain, e.g. lab.units)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lab

LAB = Path(lab.__file__).parent
TUI = LAB / "tui"
# Modules inside lab/tui that hold no widgets: they must stay importable without Textual too.
TUI_PLAIN = {"__init__.py", "data.py", "live.py", "format.py"}


def textual_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "textual"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "textual":
                found.append(node.module)
    return found


def cli_imports(source: str, module: str) -> list[str]:
    """What of lab.cli the module ``module`` (its text: ``source``) imports, at any depth (inside
    functions too), written ``import lab.cli.x``, ``from lab.cli import x``, ``from lab import
    cli`` or relatively."""
    tree = ast.parse(source)
    package = module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            base += node.module.split(".") if node.module else []
            names = [".".join(base + [a.name]) for a in node.names]
        else:
            continue
        found += [n for n in names if n == "lab.cli" or n.startswith("lab.cli.")]
    return found


def module_name(path: Path) -> str:
    """``lab/tui/data.py`` -> ``lab.tui.data``; a package's ``__init__`` keeps that name, so
    relative imports resolve against the package itself."""
    return ".".join(path.relative_to(LAB.parent).with_suffix("").parts)


def test_no_module_in_lab_tui_imports_the_cli() -> None:
    offenders = {}
    for path in sorted(TUI.rglob("*.py")):
        found = cli_imports(path.read_text(encoding="utf-8"), module_name(path))
        if found:
            offenders[str(path.relative_to(LAB.parent))] = found
    assert not offenders, f"lab/tui imports lab.cli (move what both faces use to the domain): {offenders}"


def test_the_cli_scan_sees_every_spelling() -> None:
    text = ("import lab.cli.output\nfrom lab.cli.output import NA\nfrom lab import cli, units\n"
            "def f():\n    from ...cli import bench\n    from .. import format\n")
    assert cli_imports(text, "lab.tui.screens.sample") == [
        "lab.cli.output", "lab.cli.output.NA", "lab.cli", "lab.cli.bench"]
    assert cli_imports("from . import cli", "lab.__init__") == ["lab.cli"]


def test_no_module_outside_lab_tui_imports_textual() -> None:
    offenders = {}
    for path in sorted(LAB.rglob("*.py")):
        inside = TUI in path.parents
        if inside and path.name not in TUI_PLAIN:
            continue
        names = textual_imports(path)
        if names:
            offenders[str(path.relative_to(LAB.parent))] = names
    assert not offenders, f"Textual imported outside the app's widget modules: {offenders}"


def test_the_scan_sees_textual_where_it_is() -> None:
    assert textual_imports(TUI / "app.py"), "the AST scan must find the app's own Textual imports"


def test_cli_and_domain_import_without_textual() -> None:
    # Every one is imported: a module that moves into a package (lab/hub.py -> lab/hub/) is
    # still checked, and one that disappears fails here instead of dropping out of the check.
    modules = ["lab.cli", "lab.cli.tui", "lab.store", "lab.bench", "lab.library", "lab.gguf_info", "lab.config",
               "lab.engine.runner", "lab.tui", "lab.tui.data", "lab.tui.live", "lab.tui.format",
               "lab.hardware", "lab.monitor", "lab.report", "lab.hub", "lab.quality", "lab.quantize",
               "lab.fleet", "lab.params", "lab.units", "lab.nvml"]
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {modules} pulled in Textual: {out.stdout.strip()}"
