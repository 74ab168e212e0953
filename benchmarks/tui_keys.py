#!/usr/bin/env python3
"""How long a screen-switch key takes to show its screen in a real terminal while tg runs.

Usage:
    python benchmarks/tui_keys.py [--model demo] [--threads 2] [--n-gen 1024] [--rounds 2]

The app runs in tmux (120x36) on a temporary database, as in ``tui_overhead.py``: the Run
screen is filled in by keystrokes and a tg run started with ctrl+r. Once the first repetition
of tg is done, the script presses 3, 4, 5, 1, 2 (Results, Machine, Hub, Library, Run) in turn,
``--rounds`` times, and times each key from ``tmux send-keys`` to the first ``capture-pane``
that shows the new screen with its content (the bracketed tab and a line only that screen
draws). In the first round, 3, 4 and 5 are their screens' first visits (the app opened on the
Library, and the Run screen was visited to fill it in). Printed: each key's time, and the median and maximum of first and later visits.

The capture is polled every ``--poll`` seconds (10 ms), and each poll starts a tmux client:
the figures include that granularity and the CPU the polling takes from the app and the
benchmark, so they are an upper bound on what a person at the terminal waits.
Needs tmux on PATH.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tui_overhead import SESSION, AppSession, have_tmux, screen, tmux, wait_screen  # noqa: E402

# key -> (the bracketed tab, a line only that screen draws once its content is in)
SCREENS = {
    "3": ("[3 Results]", "sorted by"),
    "4": ("[4 Machine]", "machine id"),
    "5": ("[5 Hub]", "Open repo"),
    "1": ("[1 Library]", "est. mem"),
    "2": ("[2 Run]", "Cancel run"),
}

# the screens not shown before the probe (the app opens on the Library; the Run screen was filled in)
NEVER_SHOWN = {"3", "4", "5"}


def press_and_time(key: str, poll: float, timeout: float = 10.0) -> float:
    """Seconds from sending ``key`` to the pane showing its screen."""
    start = time.monotonic()
    tmux("send-keys", "-t", SESSION, key)
    while True:
        shown = screen()
        if all(marker in shown for marker in SCREENS[key]):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise SystemExit(f"key {key} did not show its screen in {timeout:.0f} s; the pane:\n{shown}")
        time.sleep(poll)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-gen", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--poll", type=float, default=0.010, help="seconds between captures of the pane")
    args = ap.parse_args()
    if not have_tmux():
        return 2
    first: list[float] = []
    later: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        reps = 10 * args.rounds  # enough that tg outlasts the probe
        app = AppSession(args.model, args.threads, args.n_gen, reps, Path(tmp) / "keys.db")
        try:
            tmux("send-keys", "-t", SESSION, "C-r")
            wait_screen(f"tg{args.n_gen} 1/{reps}", 600)  # one repetition of tg is done
            time.sleep(1.0)
            for rnd in range(args.rounds):
                times = []
                for key in SCREENS:
                    times.append(press_and_time(key, args.poll))
                    time.sleep(0.6)
                for key, t in zip(SCREENS, times):
                    (first if rnd == 0 and key in NEVER_SHOWN else later).append(t)
                print(f"round {rnd + 1}: " + "  ".join(f"{k} {t * 1000:.0f} ms" for k, t in zip(SCREENS, times)),
                      flush=True)
            if f"tg{args.n_gen}" not in screen():
                raise SystemExit("tg ended before the probe did: raise --n-gen")
            tmux("send-keys", "-t", SESSION, "c")
        finally:
            app.close()
    print(f"\nfirst visits during tg: median {statistics.median(first) * 1000:.0f} ms, max {max(first) * 1000:.0f} ms")
    if later:
        print(f"later visits during tg: median {statistics.median(later) * 1000:.0f} ms, "
              f"max {max(later) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
