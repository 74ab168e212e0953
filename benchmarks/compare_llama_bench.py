#!/usr/bin/env python3
"""Hold Rightsizer's speed and memory figures against llama-bench from the same llama.cpp build.

Usage:
    python benchmarks/compare_llama_bench.py --llama-bench PATH [--rounds 2] [--model demo]

Speed: runs llama-bench and ``rightsizer bench`` interleaved (A-B-A-B ...), same model, threads,
tests and repetitions, and prints the ratio of mean t/s for pp512 and tg128 (goal >= 0.97).

Memory: for each test, runs one engine process that loads the model and runs only that test
under ``/usr/bin/time -v`` and compares its "Maximum resident set size" with the per-test peak
RSS that ``rightsizer bench`` stored (goal: within 5%).

Build llama-bench from the llama-cpp-python source distribution of the installed version:
    pip download --no-deps --no-binary :all: llama-cpp-python==$(pip show llama-cpp-python | sed -n 's/Version: //p')
    tar xzf llama_cpp_python-*.tar.gz && cd llama_cpp_python-*/vendor/llama.cpp
    cmake -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build --target llama-bench -j2
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def llama_bench(binary: str, model: Path, threads: int, reps: int, repack: bool) -> dict[str, float]:
    cmd = [binary, "-m", str(model), "-t", str(threads), "-p", "512", "-n", "128", "-r", str(reps),
           "--repack", "1" if repack else "0", "-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    return {("pp512" if r["n_prompt"] else "tg128"): r["avg_ts"] for r in rows}


def rightsizer(model: str, threads: int, reps: int, repack: bool, db: Path) -> list[dict]:
    cmd = [sys.executable, "-m", "lab", "bench", model, "-t", str(threads), "-p", "512", "-n", "128",
           "-r", str(reps), "--repack", "1" if repack else "0", "-o", "json", "--db", str(db)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def max_rss_of_one_test(model_path: Path, threads: int, reps: int, repack: bool, n_prompt: int, n_gen: int) -> int:
    """Peak RSS (bytes) of one engine process that loads the model and runs one test."""
    from lab.engine.protocol import BenchItem, BenchJob, ContextParams, ModelParams, TestSpec

    job = BenchJob(ModelParams(str(model_path), repack=repack),
                   [BenchItem(TestSpec(n_prompt=n_prompt, n_gen=n_gen), ContextParams(n_threads=threads))],
                   repetitions=reps)
    out = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "lab.engine.worker"],
                         input=json.dumps(job.to_wire()), capture_output=True, text=True, check=True)
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1))
    return kb * 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-bench", required=True)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    from lab import library
    from lab.engine.probe import extra_bufts_verdict

    local = library.resolve(args.model)
    repack = extra_bufts_verdict(local.path).ok
    print(f"model {local.path.name}, {args.threads} threads, r={args.reps}, repack={int(repack)} "
          f"(extra CPU buffer types {'run' if repack else 'crash or are off'} here)")
    ours: dict[str, list[float]] = {"pp512": [], "tg128": []}
    theirs: dict[str, list[float]] = {"pp512": [], "tg128": []}
    peaks: dict[str, list[int]] = {"pp512": [], "tg128": []}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "compare.db"
        for rnd in range(args.rounds):
            lb = llama_bench(args.llama_bench, local.path, args.threads, args.reps, repack)
            rs = rightsizer(args.model, args.threads, args.reps, repack, db)
            for test in ("pp512", "tg128"):
                theirs[test].append(lb[test])
                row = next(r for r in rs if r["test"] == test)
                ours[test].append(row["avg_ts"])
                peaks[test].append(row["peak_rss_bytes"])
            print(f"round {rnd + 1}: llama-bench pp512 {lb['pp512']:.1f} tg128 {lb['tg128']:.1f} | "
                  f"rightsizer pp512 {ours['pp512'][-1]:.1f} tg128 {ours['tg128'][-1]:.1f}")
    print()
    print("| test | llama-bench t/s | rightsizer t/s | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for test in ("pp512", "tg128"):
        a, b = statistics.mean(theirs[test]), statistics.mean(ours[test])
        print(f"| {test} | {a:.1f} | {b:.1f} | {b / a:.3f} |")
    print()
    print("| test | stored peak RSS | /usr/bin/time -v max RSS (one process, one test) | difference |")
    print("| --- | ---: | ---: | ---: |")
    for test, (p, n) in (("pp512", (512, 0)), ("tg128", (0, 128))):
        ref = max_rss_of_one_test(local.path, args.threads, args.reps, repack, p, n)
        stored = statistics.mean(peaks[test])
        print(f"| {test} | {stored / 2**20:.1f} MiB | {ref / 2**20:.1f} MiB | {100 * (stored - ref) / ref:+.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
