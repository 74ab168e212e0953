#!/usr/bin/env python3
"""What the terminal app's live dashboard costs a benchmark: tg speed with the Run screen open
and drawing, against the same test headless, interleaved A-B-A-B.

Usage:
    python benchmarks/tui_overhead.py [--rounds 3] [--model demo] [--threads 2] [--n-gen 128]

A (headless): ``rightsizer bench MODEL -p 0 -n N -r 5 -t T`` on the CLI.
B (app): ``rightsizer tui`` inside a real tmux terminal (120x36); the script types into the Run
screen (model, pp cleared, chat off, threads), starts the run with ctrl+r and waits until the run
is stored. Both store into one temporary database; the ratio of mean tg t/s is printed (the
goal: at least 0.97), and the time from launching the app to its first screen (goal: under
1.5 s). Needs tmux on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SESSION = "rightsizer-overhead"


def headless(model: str, threads: int, n_gen: int, reps: int, db: Path) -> float:
    cmd = [sys.executable, "-m", "lab", "bench", model, "-t", str(threads), "-p", "0", "-n", str(n_gen),
           "-r", str(reps), "-o", "json", "--db", str(db)]
    rows = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return float(next(r for r in rows if r["n_gen"] == n_gen)["avg_ts"])


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def screen() -> str:
    return tmux("capture-pane", "-p", "-t", SESSION)


def wait_screen(text: str, timeout: float, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while text not in screen():
        if time.monotonic() > deadline:
            raise SystemExit(f"the app never showed {text!r}; its screen:\n{screen()}")
        time.sleep(poll)


def run_ids(db: Path) -> set[str]:
    if not db.exists():
        return set()
    with sqlite3.connect(db) as con:
        return {r[0] for r in con.execute("select id from runs")}


def keys(*keys: str, literal: bool = False) -> None:
    """Send keys one at a time: a burst of keys can reach the app faster than focus moves."""
    for key in keys:
        tmux("send-keys", "-t", SESSION, *(["-l"] if literal else []), key)
        time.sleep(0.4)


def in_app(model: str, threads: int, n_gen: int, reps: int, db: Path) -> tuple[float, float]:
    """(tg t/s of the run started from the Run screen, seconds from launch to the first paint)."""
    before = run_ids(db)
    env = {**os.environ, "TERM": "xterm-256color"}
    cmd = f"{sys.executable} -m lab tui --db {db}"
    launched = time.monotonic()
    subprocess.run(["tmux", "new-session", "-d", "-s", SESSION, "-x", "120", "-y", "36", cmd], check=True, env=env)
    try:
        wait_screen("Library", 20, poll=0.02)
        first_paint = time.monotonic() - launched
        time.sleep(3.0)  # the library scan and the machine fingerprint finish
        keys("2")
        wait_screen("Ready: ctrl+r", 10)
        time.sleep(1.0)
        # Start has the focus; Tab walks pp, tg, pg, depth, reps, chat, threads, and back
        # from threads shift+tab reaches the model field in seven steps. A field selects its
        # text on focus, so typing replaces it and Backspace clears it.
        keys("Tab", "BSpace", "Tab")
        keys(str(n_gen), literal=True)
        keys("Tab", "Tab")
        keys("0", literal=True)
        keys("Tab")
        keys(str(reps), literal=True)
        keys("Tab")
        if "chat: on" in screen():
            keys("Space")
        keys("Tab")
        keys(str(threads), literal=True)
        keys(*["BTab"] * 7)
        keys(model, literal=True)
        form = screen()
        expect = (f"model {model} ", f"pp          tg {n_gen}", f"reps {reps}", "chat: off", f"threads {threads}")
        if not all(e in form for e in expect):
            raise SystemExit(f"the Run form did not take the values; its screen:\n{form}")
        keys("C-r")
        deadline = time.monotonic() + 600
        while True:
            new = run_ids(db) - before
            if new:
                with sqlite3.connect(db) as con:
                    status = con.execute("select status from runs where id = ?", [next(iter(new))]).fetchone()[0]
                if status != "running":
                    break
            if time.monotonic() > deadline:
                raise SystemExit("the run from the app did not finish in 10 minutes")
            time.sleep(0.5)
        with sqlite3.connect(db) as con:
            row = con.execute("select avg_ts from results where run_id = ? and n_gen = ?",
                              [next(iter(new)), n_gen]).fetchone()
        if status != "ok" or row is None:
            raise SystemExit(f"the run from the app ended {status}")
        return float(row[0]), first_paint
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-gen", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    if shutil.which("tmux") is None:
        print("error: tmux is not on PATH", file=sys.stderr)
        return 2
    a: list[float] = []
    b: list[float] = []
    paints: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "overhead.db"
        for rnd in range(args.rounds):
            a.append(headless(args.model, args.threads, args.n_gen, args.reps, db))
            ts, paint = in_app(args.model, args.threads, args.n_gen, args.reps, db)
            b.append(ts)
            paints.append(paint)
            print(f"round {rnd + 1}: headless tg{args.n_gen} {a[-1]:.1f} t/s | app {b[-1]:.1f} t/s "
                  f"(first paint {paint:.2f} s)", flush=True)
    ma, mb = statistics.mean(a), statistics.mean(b)
    print(f"\nfirst paint (launch to the Library on screen): max {max(paints):.2f} s")
    print(f"mean headless {ma:.1f} t/s, with the live dashboard {mb:.1f} t/s: ratio {mb / ma:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
