#!/usr/bin/env python3
"""Hold ``rightsizer bench --batched`` against llama-batched-bench from the same llama.cpp build.

Usage:
    python benchmarks/compare_batched_bench.py --llama-batched-bench PATH [--rounds 3] [--model demo]
        [--threads 2] [-npp 128] [-ntg 128] [-npl 1,4]

Each round runs, in this order, llama-batched-bench, ``rightsizer bench --batched`` and
llama-batched-bench again, with the same model, threads and rows (each row once, as
llama-batched-bench does). The ratios rightsizer / llama-batched-bench of S_PP and S_TG are taken
per round against the mean of the two llama-batched-bench runs around it, and their median over
the rounds is printed per B (goal: within 3%), with the distribution-free 95% interval of that
median from 6 rounds on. The second llama-batched-bench run of each round
against the first is llama-batched-bench's own run-to-run noise, printed beside them.

Build llama-batched-bench from the llama-cpp-python source distribution of the installed version:
    pip download --no-deps --no-binary :all: llama-cpp-python==$(pip show llama-cpp-python | sed -n 's/Version: //p')
    tar xzf llama_cpp_python-*.tar.gz && cd llama_cpp_python-*/vendor/llama.cpp
    cmake -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build --target llama-batched-bench -j2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

Rows = dict[int, dict[str, float]]  # B -> {"speed_pp": ..., "speed_tg": ...}


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def llama_batched_bench(binary: str, model: Path, args: argparse.Namespace, repack: bool) -> Rows:
    cmd = [binary, "-m", str(model), "-t", str(args.threads), "-npp", args.npp, "-ntg", args.ntg,
           "-npl", args.npl, "--output-format", "jsonl"]
    if not repack:
        cmd.append("--no-repack")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return {r["pl"]: r for r in _jsonl(out.stdout + "\n" + out.stderr)}


def rightsizer(args: argparse.Namespace, repack: bool, db: Path) -> Rows:
    cmd = [sys.executable, "-m", "lab", "bench", args.model, "--batched", "-t", str(args.threads),
           "-npp", args.npp, "-ntg", args.ntg, "-npl", args.npl, "--repack", "1" if repack else "0",
           "-o", "jsonl", "--db", str(db)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return {r["pl"]: r for r in _jsonl(out.stdout)}


def _interval(ratios: list[float]) -> str:
    """The distribution-free 95% interval of the median ratio ("n/a" under 6 rounds)."""
    from lab.stats import median_interval

    ci = median_interval(ratios)
    return f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-batched-bench", required=True)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-npp", dest="npp", default="128")
    ap.add_argument("-ntg", dest="ntg", default="128")
    ap.add_argument("-npl", dest="npl", default="1,4")
    args = ap.parse_args()
    if "," in args.npp or "," in args.ntg:
        ap.error("give one -npp and one -ntg value: rows are matched by B")

    from lab import library
    from lab.engine.probe import extra_bufts_verdict

    local = library.resolve(args.model)
    repack = extra_bufts_verdict(local.path).ok
    print(f"model {local.path.name}, {args.threads} threads, -npp {args.npp} -ntg {args.ntg} -npl {args.npl}, "
          f"repack={int(repack)}, {args.rounds} rounds (llama-batched-bench, rightsizer, llama-batched-bench)")
    keys = ("speed_pp", "speed_tg")
    ratio: dict[tuple[int, str], list[float]] = {}
    noise: dict[tuple[int, str], list[float]] = {}
    seen: dict[tuple[int, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "compare.db"
        for rnd in range(args.rounds):
            first = llama_batched_bench(args.llama_batched_bench, local.path, args, repack)
            ours = rightsizer(args, repack, db)
            second = llama_batched_bench(args.llama_batched_bench, local.path, args, repack)
            line = []
            for b in sorted(first):
                for key in keys:
                    ref = (first[b][key] + second[b][key]) / 2
                    ratio.setdefault((b, key), []).append(ours[b][key] / ref)
                    noise.setdefault((b, key), []).append(second[b][key] / first[b][key])
                    seen.setdefault((b, key, "theirs"), []).extend([first[b][key], second[b][key]])
                    seen.setdefault((b, key, "ours"), []).append(ours[b][key])
                line.append(f"B={b} S_PP {first[b]['speed_pp']:.1f}/{ours[b]['speed_pp']:.1f}/{second[b]['speed_pp']:.1f}"
                            f" S_TG {first[b]['speed_tg']:.1f}/{ours[b]['speed_tg']:.1f}/{second[b]['speed_tg']:.1f}")
            print(f"round {rnd + 1} (llama-batched-bench/rightsizer/llama-batched-bench): " + "; ".join(line), flush=True)
    print()
    print("| B | figure | llama-batched-bench t/s (median) | rightsizer t/s (median) | ratio (median of rounds) "
          "| its 95% interval | llama-batched-bench 2nd/1st run (median; min-max) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for b, key in sorted(ratio):
        n = noise[(b, key)]
        name = "S_PP" if key == "speed_pp" else "S_TG"
        print(f"| {b} | {name} | {statistics.median(seen[(b, key, 'theirs')]):.1f} | "
              f"{statistics.median(seen[(b, key, 'ours')]):.1f} | {statistics.median(ratio[(b, key)]):.3f} | "
              f"{_interval(ratio[(b, key)])} | {statistics.median(n):.3f}; {min(n):.3f}-{max(n):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
