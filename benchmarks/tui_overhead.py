#!/usr/bin/env python3
"""What the terminal app's live dashboard costs a benchmark: tg speed with the Run screen open
and drawing, against the same test headless, interleaved.

Usage:
    python benchmarks/tui_overhead.py [--rounds 8] [--model demo] [--threads 2] [--n-gen 128] [--reps 5]

A (headless): ``rightsizer bench MODEL -p 0 -n N -r R -t T`` on the CLI.
B (app): ``rightsizer tui`` inside a real tmux terminal (120x36), launched once; the script types
into the Run screen (model, pp cleared, chat off, reps, threads) and each round starts the run
with ctrl+r and waits until the run is stored. While A runs, the app's process is stopped
(SIGSTOP), so it takes nothing from A; it is resumed for B. Both store into one temporary
database.

Rounds alternate the order (A-B, then B-A, ...) so that a machine drifting over minutes does not
favour one side, and follow each other closely (no relaunch between them). Printed: each round's pair and ratio; the ratio of the means with a 95%
bootstrap interval over rounds (the goal: at least 0.97); the median of the per-round ratios; the
time from launching the app to its first screen over several launches (goal: under 1.5 s).

The mechanism is measured too, since on a shared VM one round's speed can wander by ±10%:
while the engine runs flat out (more than 1.5 cores busy), the script reads the CPU time of the
process that started it, the CLI for A and the app for B, and of the tmux server. On two cores
llama.cpp's threads wait for each other at every step, so the time the app takes from them is
roughly the share of tg time it can cost. Needs tmux on PATH and psutil.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SESSION = "rightsizer-overhead"
BUSY_CORES = 1.5  # the engine counts as running flat out above this many cores


@dataclass
class CpuWatch:
    """Samples the CPU time of a parent process (and the tmux server) and of its engine child
    every 0.25 s, on a thread, until stopped."""

    parent: psutil.Process
    tmux: psutil.Process | None = None
    samples: list[tuple[float, float, float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _cpu(p: psutil.Process | None) -> float:
        if p is None:
            return 0.0
        try:
            t = p.cpu_times()
        except psutil.Error:
            return float("nan")
        return t.user + t.system

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                engines = [c for c in self.parent.children(recursive=True) if "lab.engine.worker" in " ".join(c.cmdline())]
            except psutil.Error:
                break
            engine = sum(self._cpu(c) for c in engines) if engines else float("nan")
            self.samples.append((time.monotonic(), self._cpu(self.parent), self._cpu(self.tmux), engine))

    def stop(self) -> tuple[float | None, float | None]:
        """(parent, tmux) CPU in % of one core over the intervals in which the engine was busy."""
        self._stop.set()
        self._thread.join()
        busy_s = parent_s = tmux_s = 0.0
        for (t0, p0, x0, e0), (t1, p1, x1, e1) in zip(self.samples, self.samples[1:]):
            dt = t1 - t0
            if dt > 0 and (e1 - e0) / dt > BUSY_CORES and p1 >= p0:  # nan compares False
                busy_s += dt
                parent_s += p1 - p0
                tmux_s += x1 - x0
        if busy_s < 2.0:
            return None, None
        return 100 * parent_s / busy_s, 100 * tmux_s / busy_s


def headless(model: str, threads: int, n_gen: int, reps: int, db: Path) -> tuple[float, float | None]:
    """(tg t/s, the CLI's CPU % of one core while the engine ran)."""
    cmd = [sys.executable, "-m", "lab", "bench", model, "-t", str(threads), "-p", "0", "-n", str(n_gen),
           "-r", str(reps), "-o", "json", "--db", str(db)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = CpuWatch(psutil.Process(proc.pid))
    out, err = proc.communicate()
    cpu, _ = watch.stop()
    if proc.returncode != 0:
        raise SystemExit(f"the headless run failed: {err.strip()}")
    rows = json.loads(out)
    return float(next(r for r in rows if r["n_gen"] == n_gen)["avg_ts"]), cpu


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


def have_tmux() -> bool:
    """Whether tmux is on PATH; says so on stderr when it is not."""
    if shutil.which("tmux") is None:
        print("error: tmux is not on PATH", file=sys.stderr)
        return False
    return True


def tmux_server() -> psutil.Process | None:
    try:
        return psutil.Process(int(tmux("display", "-p", "-t", SESSION, "#{pid}").strip()))
    except (ValueError, psutil.Error, subprocess.CalledProcessError):
        return None


class AppSession:
    """The app in a tmux session, its Run screen filled in once; each ``run()`` starts the
    benchmark with ctrl+r as a user would and waits until the run is stored. ``pause()`` stops
    the app's process (SIGSTOP) while a headless run is measured, so that it takes nothing from
    that run; ``resume()`` lets it go on."""

    def __init__(self, model: str, threads: int, n_gen: int, reps: int, db: Path):
        self.model, self.threads, self.n_gen, self.reps, self.db = model, threads, n_gen, reps, db
        env = {**os.environ, "TERM": "xterm-256color"}
        cmd = f"{sys.executable} -m lab tui --db {db}"
        launched = time.monotonic()
        subprocess.run(["tmux", "new-session", "-d", "-s", SESSION, "-x", "120", "-y", "36", cmd], check=True, env=env)
        wait_screen("Library", 20, poll=0.02)
        self.first_paint = time.monotonic() - launched
        self.app = psutil.Process(int(tmux("display", "-p", "-t", SESSION, "#{pane_pid}").strip()))
        self.server = tmux_server()
        time.sleep(3.0)  # the library scan and the machine fingerprint finish
        self._fill_form()

    def _fill_form(self) -> None:
        keys("2")
        wait_screen("Ready: ctrl+r", 10)
        time.sleep(1.0)
        # Start has the focus; Tab walks pp, tg, pg, depth, reps, chat, threads, and back
        # from threads shift+tab reaches the model field in seven steps. A field selects its
        # text on focus, so typing replaces it and Backspace clears it.
        keys("Tab", "BSpace", "Tab")
        keys(str(self.n_gen), literal=True)
        keys("Tab", "Tab")
        keys("0", literal=True)
        keys("Tab")
        keys(str(self.reps), literal=True)
        keys("Tab")
        if "chat: on" in screen():
            keys("Space")
        keys("Tab")
        keys(str(self.threads), literal=True)
        keys(*["BTab"] * 7)
        keys(self.model, literal=True)
        form = screen()
        expect = (f"model {self.model} ", f"pp          tg {self.n_gen}", f"reps {self.reps}", "chat: off",
                  f"threads {self.threads}")
        if not all(e in form for e in expect):
            raise SystemExit(f"the Run form did not take the values; its screen:\n{form}")

    def pause(self) -> None:
        self.app.suspend()

    def resume(self) -> None:
        self.app.resume()
        time.sleep(1.0)  # it catches up on what it missed before the next run starts

    def run(self) -> tuple[float, float | None, float | None]:
        """(tg t/s, the app's and the tmux server's CPU % of one core while the engine ran)."""
        before = run_ids(self.db)
        watch = CpuWatch(self.app, self.server)
        keys("C-r")
        deadline = time.monotonic() + 600
        while True:
            new = run_ids(self.db) - before
            if new:
                with sqlite3.connect(self.db) as con:
                    status = con.execute("select status from runs where id = ?", [next(iter(new))]).fetchone()[0]
                if status != "running":
                    break
            if time.monotonic() > deadline:
                raise SystemExit("the run from the app did not finish in 10 minutes")
            time.sleep(0.5)
        cpu, tmux_cpu = watch.stop()
        with sqlite3.connect(self.db) as con:
            row = con.execute("select avg_ts from results where run_id = ? and n_gen = ?",
                              [next(iter(new)), self.n_gen]).fetchone()
        if status != "ok" or row is None:
            raise SystemExit(f"the run from the app ended {status}")
        time.sleep(1.0)
        return float(row[0]), cpu, tmux_cpu

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)


def first_paints(n: int, db: Path) -> list[float]:
    """Seconds from launching the app in tmux to its first screen, n launches."""
    out = []
    env = {**os.environ, "TERM": "xterm-256color"}
    for _ in range(n):
        launched = time.monotonic()
        subprocess.run(["tmux", "new-session", "-d", "-s", SESSION, "-x", "120", "-y", "36",
                        f"{sys.executable} -m lab tui --db {db}"], check=True, env=env)
        try:
            wait_screen("Library", 20, poll=0.01)
            out.append(time.monotonic() - launched)
            time.sleep(2.0)
        finally:
            subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
        time.sleep(0.5)
    return out


def bootstrap_ratio(a: list[float], b: list[float], n: int = 10000, seed: int = 1) -> tuple[float, float]:
    """95% interval of mean(b)/mean(a), resampling whole rounds (pairs) with replacement."""
    rng = random.Random(seed)
    pairs = list(zip(a, b))
    ratios = []
    for _ in range(n):
        sample = [rng.choice(pairs) for _ in pairs]
        ratios.append(statistics.fmean(p[1] for p in sample) / statistics.fmean(p[0] for p in sample))
    ratios.sort()
    return ratios[int(0.025 * n)], ratios[int(0.975 * n) - 1]


def fmt_cpu(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    return f"{statistics.fmean(got):.2f}%" if got else "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-gen", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--launches", type=int, default=5, help="launches timed for the first paint")
    args = ap.parse_args()
    if not have_tmux():
        return 2
    a: list[float] = []
    b: list[float] = []
    a_cpu: list[float | None] = []
    b_cpu: list[float | None] = []
    tmux_cpu: list[float | None] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "overhead.db"
        paints = first_paints(args.launches, db)
        print("first paint (launch to the Library on screen), s: " + " ".join(f"{x:.2f}" for x in paints), flush=True)
        app = AppSession(args.model, args.threads, args.n_gen, args.reps, db)
        try:
            for rnd in range(args.rounds):
                order = "AB" if rnd % 2 == 0 else "BA"
                for side in order:
                    if side == "A":
                        app.pause()
                        try:
                            ts, cpu = headless(args.model, args.threads, args.n_gen, args.reps, db)
                        finally:
                            app.resume()
                        a.append(ts)
                        a_cpu.append(cpu)
                    else:
                        ts, cpu, server = app.run()
                        b.append(ts)
                        b_cpu.append(cpu)
                        tmux_cpu.append(server)
                print(f"round {rnd + 1} ({'-'.join(order)}): headless tg{args.n_gen} {a[-1]:.1f} t/s | "
                      f"app {b[-1]:.1f} t/s | ratio {b[-1] / a[-1]:.3f}", flush=True)
        finally:
            app.close()
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    print(f"\nfirst paint: max {max(paints):.2f} s over {len(paints)} launches")
    print(f"mean headless {ma:.1f} t/s, with the live dashboard {mb:.1f} t/s: ratio {mb / ma:.3f}")
    if len(a) >= 3:
        lo, hi = bootstrap_ratio(a, b)
        print(f"95% bootstrap interval of the ratio over {len(a)} rounds: {lo:.3f} to {hi:.3f}")
    print(f"median of the per-round ratios: {statistics.median(y / x for x, y in zip(a, b)):.3f}")
    print(f"CPU while the engine ran flat out, % of one core: headless CLI {fmt_cpu(a_cpu)}, "
          f"app {fmt_cpu(b_cpu)}, tmux server {fmt_cpu(tmux_cpu)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
