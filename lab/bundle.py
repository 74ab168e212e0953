"""Offline bundles: everything a device with no network needs to run a plan.

``bundle(plan, DIR)`` writes:

* ``plan.toml``  the plan, its models, suites and texts pointing into the bundle;
* ``models/``    the models the plan names, copied and checked against their sha256;
* ``suites/``, ``texts/``  eval suites (bundled ones included), quality texts, chat prompts;
* ``wheels/``    a wheelhouse: Rightsizer's own wheel, built from its project, and every
  dependency (``pip wheel``); for another ``platform``/``python_version``, the binary wheels
  pip can find plus llama-cpp-python's source distribution and what building it needs;
* ``install.sh`` installs from the wheelhouse with ``pip --no-index`` and runs the plan;
* ``README.md``, ``bundle.json`` (what is inside, with sha256 sums).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lab import __version__
from lab.errors import LabError
from lab.plan import Plan

OnLine = Callable[[str], None]
LLAMA_CPP = "llama-cpp-python"
# What building llama-cpp-python from its source distribution needs besides a C/C++ compiler
# (its build backend, and CMake and Ninja as wheels, so the device needs neither installed).
SDIST_BUILD_NEEDS = ["scikit-build-core[pyproject]>=0.9.2", "cmake>=3.21", "ninja"]
# What the project's wheel is built from (pyproject.toml maps lab._models to models/).
PROJECT_FILES = ("pyproject.toml", "README.md", "lab", "models")


class BundleError(LabError):
    """The bundle cannot be written (an existing folder, a model that does not match, pip)."""


@dataclass
class BundleReport:
    """What went into a bundle."""

    path: Path
    files: dict[str, str] = field(default_factory=dict)  # bundle-relative path -> sha256
    wheels: list[str] = field(default_factory=list)
    sdists: list[str] = field(default_factory=list)
    platform: str | None = None
    python_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rightsizer": __version__, "files": self.files, "wheels": self.wheels, "sdists": self.sdists,
                "platform": self.platform, "python_version": self.python_version}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_toml(data: dict[str, Any], header: str = "") -> str:
    """A plan's dict as TOML: scalars first, then tables and arrays of tables."""
    lines = [header] if header else []
    tables = {k: v for k, v in data.items() if isinstance(v, dict) or (isinstance(v, list) and v and all(isinstance(i, dict) for i in v))}
    lines += [f"{k} = {_toml(v)}" for k, v in data.items() if k not in tables]
    for name, value in tables.items():
        for entry in value if isinstance(value, list) else [value]:
            lines += ["", f"[[{name}]]" if isinstance(value, list) else f"[{name}]"]
            lines += [f"{k} = {_toml(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"


class _Writer:
    def __init__(self, root: Path, on_line: OnLine):
        self.root = root
        self.on_line = on_line
        self.report = BundleReport(root)

    def copy(self, source: Path, folder: str, *, sha256: str | None = None) -> str:
        """Copy a file into ``folder``; its copy must hash to ``sha256`` (or to the source's)."""
        target_dir = self.root / folder
        target_dir.mkdir(parents=True, exist_ok=True)
        relative = f"{folder}/{source.name}"
        if relative in self.report.files:  # the same file named twice
            return relative
        self.on_line(f"copying {source.name}")
        expected = sha256 or _sha256(source)
        shutil.copyfile(source, self.root / relative)
        got = _sha256(self.root / relative)
        if got != expected:
            raise BundleError(f"The copy of {source} has sha256 {got[:12]}…, not {expected[:12]}…; the source "
                              "changed or the disk is failing")
        self.report.files[relative] = got
        return relative


def _models(plan: Plan, w: _Writer, raw: dict[str, Any]) -> None:
    from lab.plan_run import resolve_model

    entries = list(plan.models)
    for index, entry in enumerate(entries):
        local, sha = resolve_model(entry)
        relative = w.copy(local.path, "models", sha256=sha)
        raw["models"][index] = {"path": relative, "sha256": sha}
    if plan.quality is not None:
        ref = plan.quality.reference
        if ref not in entries:
            local, sha = resolve_model(ref)
            raw["quality"]["reference"] = w.copy(local.path, "models", sha256=sha)
        else:
            raw["quality"]["reference"] = raw["models"][entries.index(ref)]["path"]


def _data(plan: Plan, w: _Writer, raw: dict[str, Any]) -> None:
    from lab.evals.suite import load_suite

    for index, spec in enumerate(plan.evals):
        raw["evals"][index]["suite"] = w.copy(load_suite(spec.suite).path, "suites")
    if plan.quality is not None and plan.quality.text is not None:
        raw["quality"]["text"] = w.copy(plan.quality.text, "texts")
    for index, options in enumerate(plan.bench):
        if options.chat and options.prompts_file is not None:
            raw["bench"][index]["prompts"] = w.copy(options.prompts_file, "texts")


def project_root() -> Path | None:
    """The Rightsizer project this code runs from (its pyproject.toml), if it runs from one."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "rightsizer"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def _pip(args: list[str], on_line: OnLine) -> None:
    on_line("pip " + " ".join(args))
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BundleError(f"pip {args[0]} failed: {' / '.join(tail)}")


def _wheelhouse(w: _Writer, platform: str | None, python_version: str | None) -> None:
    wheels = w.root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    root = project_root()
    if root is None:
        raise BundleError("Rightsizer is not running from its project folder, so its wheel cannot be built; "
                          "run 'rightsizer bundle' from a source checkout, or give --no-wheels")
    # Rightsizer is pure Python: one wheel serves every platform. Built from a copy, so the
    # build leaves nothing (build/, *.egg-info) in the project.
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "rightsizer"
        source.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for name in PROJECT_FILES:
            if (root / name).is_dir():
                shutil.copytree(root / name, source / name, ignore=ignore)
            elif (root / name).is_file():
                shutil.copy2(root / name, source / name)
        _pip(["wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(source)], w.on_line)
    own = next(wheels.glob("rightsizer-*.whl"))
    if platform is None and python_version is None:
        # This machine: wheels of everything, llama-cpp-python built (or taken from pip's cache).
        _pip(["wheel", "--quiet", "--wheel-dir", str(wheels), "--find-links", str(wheels), str(own)], w.on_line)
    else:
        target = [a for tag in platform_tags(platform) for a in ("--platform", tag)] + (
            ["--python-version", python_version] if python_version else [])
        requirements = [r for r in _requirements(own) if not r.lower().startswith(LLAMA_CPP)]
        _pip(["download", "--quiet", "--only-binary=:all:", *target, "--dest", str(wheels), *requirements,
              *SDIST_BUILD_NEEDS], w.on_line)
        llama = next((r for r in _requirements(own) if r.lower().startswith(LLAMA_CPP)), LLAMA_CPP)
        _pip(["download", "--quiet", "--no-deps", "--no-binary=:all:", "--dest", str(wheels), llama], w.on_line)
    w.report.wheels = sorted(p.name for p in wheels.glob("*.whl"))
    w.report.sdists = sorted(p.name for p in wheels.iterdir() if p.name.endswith((".tar.gz", ".zip")))
    w.report.platform, w.report.python_version = platform, python_version


def platform_tags(platform: str | None) -> list[str]:
    """``manylinux_2_28_aarch64`` -> it and every older manylinux tag a glibc-2.28 device also
    runs (down to ``manylinux2014``, glibc 2.17): pip takes ``--platform`` literally, and wheels
    carry different ones (numpy 2_27, CMake 2014)."""
    match = re.match(r"^manylinux_2_(\d+)_(\w+)$", platform or "")
    if not match:
        return [platform] if platform else []
    glibc, arch = int(match.group(1)), match.group(2)
    return [f"manylinux_2_{m}_{arch}" for m in range(glibc, 16, -1)] + [f"manylinux2014_{arch}"]


def _requirements(wheel: Path) -> list[str]:
    """The unconditional requirements a wheel declares (``Requires-Dist`` without an extra)."""
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(name).decode()
    out = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            req = line.split(":", 1)[1].strip()
            if "extra ==" not in req:
                out.append(req)
    return out


INSTALL_SH = """\
#!/bin/sh
# Install Rightsizer from this bundle's wheelhouse (no network needed) and run the plan.
#   sh install.sh [run options, e.g. --db results.db]
# PYTHON            the Python to install with (default: python3, 3.10 or newer)
# RIGHTSIZER_VENV   where to install (default: venv/ beside this file)
# RIGHTSIZER        an installed Rightsizer command to use instead (skips the install)
# RIGHTSIZER_HOME   the lab home: the database goes to $RIGHTSIZER_HOME/rightsizer.db
# INSTALL_ONLY=1    install, do not run the plan
# Exit code: the one of 'rightsizer run' (0 all done, 2 some steps failed, 1 invalid plan).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
venv=${RIGHTSIZER_VENV:-$here/venv}
if [ -n "${RIGHTSIZER:-}" ]; then
    rightsizer=$RIGHTSIZER
else
    if [ ! -x "$venv/bin/rightsizer" ]; then
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install --no-index --find-links "$here/wheels" rightsizer
    fi
    rightsizer=$venv/bin/rightsizer
fi
if [ "${INSTALL_ONLY:-0}" = 1 ]; then
    exit 0
fi
exec $rightsizer run "$here/plan.toml" "$@"
"""

README = """\
# Rightsizer bundle: {name}

Everything needed to run the plan `plan.toml` on a device with no network.

    sh install.sh                 # install from wheels/ (pip --no-index), then run the plan
    RIGHTSIZER_HOME=~/lab sh install.sh

The results go to the lab's database (`$RIGHTSIZER_HOME/rightsizer.db`, by default
`~/.local/share/rightsizer/rightsizer.db`). Bring that file back and merge it:
`rightsizer merge device.db`. Running `install.sh` again skips every step already stored.

Exit codes: 0 every step done, 2 some steps failed (each is stored with its reason), 1 the plan
is invalid.

{wheels}
Contents (sha256 in bundle.json): {models} model file(s) in models/, suites in suites/, texts in
texts/, {n_wheels} wheel(s) and {n_sdists} source distribution(s) in wheels/.
"""

WHEELS_HERE = "The wheelhouse was built on the machine that made this bundle, for its platform and Python.\n"
WHEELS_OTHER = """\
The wheelhouse targets platform `{platform}`, Python `{python}`: pure-Python and binary wheels,
plus the source distribution of llama-cpp-python ({sdists}), which pip builds during the install.
The device needs a C/C++ compiler (e.g. `apt install build-essential`); CMake, Ninja and
scikit-build-core come from the wheelhouse. To build with a GPU backend, set CMAKE_ARGS first,
e.g. `CMAKE_ARGS="-DGGML_CUDA=on" sh install.sh` on a Jetson. The build takes minutes (several
on a small ARM board); it happens once.
"""


def bundle(plan: Plan, out: Path, *, wheels: bool = True, platform: str | None = None,
           python_version: str | None = None, on_line: OnLine | None = None) -> BundleReport:
    """Write an offline bundle of ``plan`` to ``out`` (a new or empty folder)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"{out} exists and is not an empty folder; give a new folder")
    w = _Writer(out, on_line or (lambda _line: None))
    out.mkdir(parents=True, exist_ok=True)
    raw = json.loads(json.dumps(plan.raw))  # a deep copy to rewrite the paths in
    raw.setdefault("name", plan.name)
    _models(plan, w, raw)
    _data(plan, w, raw)
    header = (f"# Rightsizer plan '{plan.name}', bundled from {plan.path.name}: models, suites and texts\n"
              "# point into this folder.")
    (out / "plan.toml").write_text(write_toml(raw, header), encoding="utf-8")
    if wheels:
        _wheelhouse(w, platform, python_version)
    (out / "install.sh").write_text(INSTALL_SH, encoding="utf-8")
    os.chmod(out / "install.sh", 0o755)
    other = platform is not None or python_version is not None
    notes = WHEELS_OTHER.format(platform=platform or "this machine's", python=python_version or "this machine's",
                                sdists=", ".join(w.report.sdists) or "none") if other else (
        WHEELS_HERE if wheels else "No wheelhouse (made with --no-wheels): install Rightsizer on the device "
        "first and run `RIGHTSIZER=rightsizer sh install.sh`.\n")
    (out / "README.md").write_text(README.format(
        name=plan.name, wheels=notes, models=sum(1 for f in w.report.files if f.startswith("models/")),
        n_wheels=len(w.report.wheels), n_sdists=len(w.report.sdists)), encoding="utf-8")
    (out / "bundle.json").write_text(json.dumps(w.report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return w.report
