#!/usr/bin/env python3
"""Time ``rightsizer rightsize`` against fituna on the same quant question, side by side.

Usage:
    python benchmarks/compare_fituna.py --fituna PATH --llama-bin-dir DIR [--threads 2] [--chunks 8]
        [--rounds N] [--logs DIR]

The question: on the demo model's F16 (made with the ladder builder), candidates Q8_0, Q6_K,
Q5_K_M, Q4_K_M, Q3_K_M, Q2_K, the highest-quality quant with tg128 >= T and a PPL ratio <= 1.05
on the bundled text, with T set ``--margin`` (default 12%) above the F16's own tg128 so that the
source itself fails. The F16's tg128 is the fastest of three measurements (5 repetitions each):
on a VM whose speed drifts by 10-20% within minutes, one measurement taken at a slow moment would
put T low enough for the F16 to pass. Both tools start from nothing (a fresh lab home and database for
Rightsizer, a fresh --out folder for fituna), and each is timed from start to verdict; with
``--rounds N`` the two run N times, the order alternating. Prints both wall times per round, their
ratio and its median (goal: Rightsizer <= 0.8x fituna) and both picks (goal: the same).

fituna runs from its own virtual environment (never this project's):
    python3 -m venv /tmp/fituna-venv && /tmp/fituna-venv/bin/pip install fituna==0.3.6
and takes llama.cpp's llama-quantize, llama-bench and llama-perplexity built from the
llama-cpp-python source distribution of the installed version:
    pip download --no-deps --no-binary :all: llama-cpp-python==$(pip show llama-cpp-python | sed -n 's/Version: //p')
    tar xzf llama_cpp_python-*.tar.gz && cd llama_cpp_python-*/vendor/llama.cpp
    cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF
    cmake --build build --target llama-quantize llama-bench llama-perplexity -j2
    # --llama-bin-dir .../vendor/llama.cpp/build/bin
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TYPES = "Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q3_K_M,Q2_K"
ROOT = Path(__file__).resolve().parent.parent


def lab(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RIGHTSIZER_HOME=str(home), PYTHONPATH=str(ROOT))
    env.pop("RIGHTSIZER_DB", None)
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, env=env, check=False)


def make_f16(work: Path, threads: int) -> tuple[Path, float]:
    """The demo's F16 (ladder builder) and its own tg128 t/s, in a scratch home."""
    home = work / "setup-home"
    out = lab(["models", "ladder", "demo", "--types", "F16", "--out", str(work / "f16"), "-t", str(threads),
               "-o", "json"], home)
    if out.returncode:
        raise SystemExit(f"building the F16 failed: {out.stderr}")
    f16 = next((work / "f16").glob("*F16*.gguf"))
    speeds = []
    for _ in range(3):
        bench = lab(["bench", str(f16), "-p", "0", "-n", "128", "-r", "5", "-t", str(threads), "-o", "json"], home)
        if bench.returncode:
            raise SystemExit(f"benchmarking the F16 failed: {bench.stderr}")
        speeds.append(json.loads(bench.stdout)[0]["avg_ts"])
    print("F16 tg128 measurements: " + ", ".join(f"{x:.2f}" for x in speeds) + " t/s")
    return f16, max(speeds)


def run_fituna(fituna: str, f16: Path, target: float, bin_dir: str, text: Path, chunks: int,
               out: Path) -> tuple[float, str | None, str]:
    cmd = [fituna, "run", "--model", str(f16), "--target-tps", f"{target:.2f}", "--max-quality-loss", "5",  # percent: PPL ratio 1.05
           "--quant", TYPES, "--gpu", "none",
           # llama-bench at depth ctx - 512 - 128: --ctx 640 is depth 0, the tg128 both tools judge
           "--ctx", "640", "--llama-bin-dir", bin_dir, "--quality-corpus", str(text),
           "--ppl-chunks", str(chunks), "--out", str(out), "--json"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    pick = None
    try:
        report = json.loads(done.stdout)
        pick = (report.get("config") or {}).get("quant")
    except ValueError:
        pass
    return seconds, pick, done.stdout + done.stderr


def run_rightsize(f16: Path, target: float, threads: int, chunks: int, home: Path) -> tuple[float, str | None, str]:
    args = ["rightsize", str(f16), "--types", TYPES, "--min-tg", f"{target:.2f}", "--max-ppl-ratio", "1.05",
            "--prefer", "quality", "-t", str(threads), "--chunks", str(chunks), "-o", "json"]
    start = time.perf_counter()
    done = lab(args, home)
    seconds = time.perf_counter() - start
    pick = None
    if done.stdout.strip():
        verdict = json.loads(done.stdout)
        pick = (verdict.get("pick") or {}).get("quant")
    return seconds, pick, done.stderr + done.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fituna", required=True, help="the fituna executable (in its own venv)")
    ap.add_argument("--llama-bin-dir", required=True, help="folder with llama-quantize, llama-bench, llama-perplexity")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunks", type=int, default=8, help="text chunks for quality, the same for both")
    ap.add_argument("--margin", type=float, default=1.12, help="T = margin x the F16's tg128")
    ap.add_argument("--rounds", type=int, default=1, help="rounds, the order of the two tools alternating")
    ap.add_argument("--logs", type=Path, help="folder for both tools' full output (fituna's report, rightsize's progress and verdict)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from lab.quality import DEFAULT_TEXT

    with tempfile.TemporaryDirectory(prefix="compare-fituna-") as tmp:
        work = Path(tmp)
        f16, f16_tg = make_f16(work, args.threads)
        target = f16_tg * args.margin
        print(f"F16 tg128 {f16_tg:.2f} t/s -> limit tg128 >= {target:.2f} t/s, PPL ratio <= 1.05, {args.chunks} chunks")
        ratios, same = [], 0
        for rnd in range(1, args.rounds + 1):
            # each round from nothing (a fresh --out, a fresh lab home); the order alternates
            def fituna() -> tuple[float, str | None, str]:
                return run_fituna(args.fituna, f16, target, args.llama_bin_dir, DEFAULT_TEXT, args.chunks,
                                  work / f"fituna-{rnd}")

            def rightsize() -> tuple[float, str | None, str]:
                return run_rightsize(f16, target, args.threads, args.chunks, work / f"rs-home-{rnd}")

            if rnd % 2:
                (fit_s, fit_pick, fit_log), (rs_s, rs_pick, rs_log) = fituna(), rightsize()
            else:
                (rs_s, rs_pick, rs_log), (fit_s, fit_pick, fit_log) = rightsize(), fituna()
            ratios.append(rs_s / fit_s)
            same += fit_pick == rs_pick
            first = "fituna first" if rnd % 2 else "rightsize first"
            print(f"round {rnd} ({first}): fituna 0.3.6 {fit_s:6.1f} s pick {fit_pick}; "
                  f"rightsize {rs_s:6.1f} s pick {rs_pick}; ratio {rs_s / fit_s:.2f}x", flush=True)
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                (args.logs / f"fituna-{rnd}.txt").write_text(fit_log)
                (args.logs / f"rightsize-{rnd}.txt").write_text(rs_log)
            if fit_pick is None:
                print("fituna's report (tail):\n" + fit_log[-2000:])
            if rs_pick is None:
                print("rightsize's progress (tail):\n" + rs_log[-3000:])
        print(f"ratio rightsize / fituna, median of {len(ratios)} rounds: {statistics.median(ratios):.2f}x "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f}; goal <= 0.8x); same pick in {same} of {len(ratios)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
