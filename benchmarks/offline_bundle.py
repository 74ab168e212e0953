"""An offline bundle, end to end on this machine: write the demo plan, bundle it with a full
wheelhouse, then in a fresh virtualenv with networking cut (``unshare -n``; without it, pip's
``--no-index`` alone) install Rightsizer from the bundle, run the plan and read the results.

    python benchmarks/offline_bundle.py [--keep DIR]

Prints each stage's time and the figures the offline run stored. Minutes: the wheelhouse is
built (llama-cpp-python from pip's cache when a wheel was built before) and installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sh(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, text=True, capture_output=True, **kwargs)


def network_cut() -> list[str]:
    """``unshare -n`` when this machine lets us make a namespace without a network."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True) if shutil.which("unshare") else None
    return ["unshare", "-n"] if probe is not None and probe.returncode == 0 else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="work in this (new) folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="rightsizer-offline-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    lab = [sys.executable, "-m", "lab"]

    plan = work / "plan.toml"
    plan.write_text(sh(lab + ["plan", "init"], env=env, check=True).stdout)
    t0 = time.perf_counter()
    made = sh(lab + ["bundle", str(plan), str(work / "bundle")], env=env)
    print(made.stdout.strip(), made.stderr.strip()[-400:], sep="\n")
    if made.returncode:
        return 1
    print(f"bundle written in {time.perf_counter() - t0:.1f} s")

    # The device: no PYTHONPATH, no Rightsizer, a fresh lab home; the bundle's own venv.
    # No pip settings either: this machine's pip config names local wheel folders, which a
    # device would not have; install.sh must find everything in the bundle.
    device = {k: v for k, v in os.environ.items()
              if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RIGHTSIZER_DB") and not k.startswith("PIP_")}
    device.update(RIGHTSIZER_HOME=str(work / "device-home"), PIP_CONFIG_FILE=os.devnull,
                  PYTHON=str(Path(sys.base_prefix) / "bin" / "python3"),
                  PATH=os.pathsep.join(p for p in device.get("PATH", "").split(os.pathsep)
                                       if not p.startswith(sys.prefix)))
    cut = network_cut()
    print(f"networking: {'cut with unshare -n' if cut else 'NOT cut (unshare -n unavailable): pip --no-index only'}")
    if cut:
        reach = sh(cut + [device["PYTHON"], "-c", "import socket; socket.create_connection(('pypi.org', 443), 3)"])
        print("pypi.org from inside:", "unreachable" if reach.returncode else "REACHABLE")
    t1 = time.perf_counter()
    installed = sh(cut + ["sh", str(work / "bundle" / "install.sh")], env={**device, "INSTALL_ONLY": "1"})
    print(installed.stdout.strip()[-600:], installed.stderr.strip()[-600:], sep="\n")
    if installed.returncode:
        return 1
    print(f"installed offline in {time.perf_counter() - t1:.1f} s")
    t2 = time.perf_counter()
    ran = sh(cut + ["sh", str(work / "bundle" / "install.sh")], env=device)
    print(ran.stdout.strip(), ran.stderr.strip()[-600:], sep="\n")
    print(f"plan ran offline in {time.perf_counter() - t2:.1f} s (exit {ran.returncode})")
    db = work / "device-home" / "rightsizer.db"
    with sqlite3.connect(db) as conn:
        runs = conn.execute("select kind, status, count(*) from runs group by kind, status").fetchall()
        results = conn.execute("select test, round(avg_ts, 2), peak_rss_bytes from results").fetchall()
        evals = conn.execute("select suite, n_items, accuracy from eval_runs").fetchall()
    print("runs:", runs)
    print("results (test, t/s, peak RSS):", results)
    print("eval runs (suite, items, accuracy):", evals)
    if args.keep is None:
        shutil.rmtree(work)
    return 0 if ran.returncode == 0 and results else 1


if __name__ == "__main__":
    sys.exit(main())
