#!/usr/bin/env python3
"""Hold ``rightsizer quality`` against ``llama-perplexity --kl-divergence`` from the same
llama.cpp build, on the same text, context, chunks and threads: the figures and the time.

Usage:
    python benchmarks/check_llama_perplexity.py --llama-perplexity PATH [--model demo]
        [--types Q8_0,Q6_K,...] [--text FILE] [-c 512] [--chunks N] [--threads 2] [--rounds 3]

It builds the F16 reference and the ladder from the model with ``rightsizer``'s quantizer (into
``benchmarks/out/ladder``), then, in each round, runs every pass of both tools one after the
other, alternating which tool goes first from round to round:

* the reference pass: ``llama-perplexity -m F16 -f TEXT -c C --kl-divergence-base base.kld``
  against rightsizer building its reference cache (``measure_quality`` with no candidates, in a
  fresh process, the cache deleted first);
* one pass per quant: ``llama-perplexity -m QUANT --kl-divergence-base base.kld --kl-divergence``
  against the command ``rightsizer quality QUANT -r F16`` (the cache built).

Every pass is a separate process, timed from start to exit (wall), with its CPU time (user + sys
of it and its children, from ``getrusage(RUSAGE_CHILDREN)``), which a loaded machine disturbs
far less than the wall time. It prints per pass the median wall and CPU times of both tools over
the rounds and rightsizer's speed relative to llama-perplexity (their time / ours: >= 1 is as
fast or faster), then the figures side by side. Goals: mean KLD within 3% and PPL within 1% of
llama-perplexity; exit status 1 when a quant misses one.

llama-perplexity's base file keeps every position's full vocabulary (about 98 KB a position for
a 49k vocabulary: 1.2 GB for the default text); it is written under benchmarks/out and deleted
at the end unless --keep.

Build llama-perplexity from the llama-cpp-python source distribution of the installed version:
    pip download --no-deps --no-binary :all: llama-cpp-python==$(pip show llama-cpp-python | sed -n 's/Version: //p')
    tar xzf llama_cpp_python-*.tar.gz && cd llama_cpp_python-*/vendor/llama.cpp
    cmake -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build --target llama-perplexity -j2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

KLD_TOLERANCE = 0.03
PPL_TOLERANCE = 0.01
DEFAULT_TYPES = "Q8_0,Q6_K,Q5_K_M,Q5_1,Q4_K_M,Q4_0,Q3_K_M,Q2_K"
OUT = Path(__file__).parent / "out"

_PATTERNS = {
    "ppl": r"Mean PPL\(Q\)\s*:\s*([\d.]+)",
    "ppl_ref": r"Mean PPL\(base\)\s*:\s*([\d.]+)",
    "ppl_ratio": r"Mean PPL\(Q\)/PPL\(base\)\s*:\s*([\d.]+)",
    "kld_mean": r"Mean\s+KLD:\s*(-?[\d.]+)",
    "kld_p99": r"99\.0%\s+KLD:\s*(-?[\d.]+)",
    "kld_p999": r"99\.9%\s+KLD:\s*(-?[\d.]+)",
    "same_top_p": r"Same top p:\s*([\d.]+)",
}


def parse_llama_perplexity(log: str) -> dict[str, float]:
    """The final statistics block of ``llama-perplexity --kl-divergence``."""
    out: dict[str, float] = {}
    for key, pattern in _PATTERNS.items():
        m = re.search(pattern, log)
        if m is None:
            raise RuntimeError(f"llama-perplexity printed no {key!r}; its log ends:\n{log[-2000:]}")
        out[key] = float(m.group(1))
    out["same_top_p"] /= 100.0
    return out


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a command to its end: (process, wall seconds, CPU seconds of it and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, wall, cpu


def run_llama_perplexity(binary: str, args: list[str]) -> tuple[str, float, float]:
    proc, wall, cpu = timed([binary, *args])
    if proc.returncode != 0:
        raise RuntimeError(f"llama-perplexity {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr, wall, cpu


# rightsizer's reference pass on its own: measure_quality with no candidates builds the cache
_REFERENCE_PASS = """
import json, sys
from pathlib import Path
from lab.quality import QualityOptions, measure_quality
from lab.store import Store
db, ref, text, ctx, chunks, threads = sys.argv[1:7]
seen = []
measure_quality(Store(Path(db)), QualityOptions(models=[], reference=ref, text=Path(text), n_ctx=int(ctx),
                n_chunks=int(chunks) if chunks != "all" else None, n_threads=int(threads)),
                on_event=lambda e: seen.append(e) if e.get("event") == "reference_ready" else None)
print(json.dumps(seen[-1]))
"""


def pct(ours: float | None, theirs: float) -> float | None:
    if ours is None or theirs == 0:
        return None
    return ours / theirs - 1.0


def _interval(ratios: list[float]) -> str:
    """``; 95% a-b``: the distribution-free interval of the median, where the rounds allow one."""
    ci = _median_interval(ratios)
    return f"; 95% {ci[0]:.2f}-{ci[1]:.2f}" if ci else ""


def _median_interval(ratios: list[float]) -> list[float] | None:
    from lab.stats import median_interval

    ci = median_interval(ratios)
    return list(ci) if ci else None


def median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-perplexity", required=True, help="path of the llama-perplexity binary")
    ap.add_argument("--model", default="demo", help="the model to build the ladder from (default: demo)")
    ap.add_argument("--types", default=DEFAULT_TYPES, help=f"quants to check (default: {DEFAULT_TYPES})")
    ap.add_argument("--text", type=Path, default=None, help="text file (default: rightsizer's bundled text)")
    ap.add_argument("-c", "--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=None, help="chunks to score (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-b", "--batch", type=int, default=2048, help="llama-perplexity's -b (default: its own, 2048)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of every pass of both tools (default: 3)")
    ap.add_argument("--out", type=Path, default=OUT, help="work folder (default: benchmarks/out)")
    ap.add_argument("--keep", action="store_true", help="keep llama-perplexity's base logits file")
    ap.add_argument("--repack", choices=["off", "auto"], default="off",
                    help="llama.cpp's extra CPU buffer types (AMX/repacked weights) for both tools: off "
                         "(default: the same kernels on both sides, and no SIGILL on VMs that advertise AMX "
                         "they cannot run), or auto (rightsizer's probe per quant type)")
    ap.add_argument("--json", type=Path, default=None, help="also write the comparison as JSON here")
    args = ap.parse_args()

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # rightsizer's caches in a home of the benchmark's own: each round deletes the reference cache
    os.environ["RIGHTSIZER_HOME"] = str(out / "home")

    from lab import library
    from lab.engine.probe import extra_bufts_verdict
    from lab.provenance import record_machine
    from lab.quality import DEFAULT_TEXT, cache_root
    from lab.quantize import build_ladder, parse_types
    from lab.store import Store

    db = out / "check.db"
    store = Store(db)
    record_machine(store)  # the machine's fingerprint is cached before any pass is timed
    text = (args.text or DEFAULT_TEXT).resolve()
    types = parse_types(args.types)
    source = library.resolve(args.model)
    chunks = str(args.chunks) if args.chunks else "all"
    print(f"model {source.path.name}, text {text.name}, -c {args.ctx}, chunks {chunks}, "
          f"{args.threads} threads, repack {args.repack}, {args.rounds} rounds", flush=True)

    steps = build_ladder(store, source, ["F16", *[t for t in types if t != "F16"]], out_dir=out / "ladder",
                         n_threads=args.threads)
    store.close()
    failed = [s for s in steps if s.status not in ("built", "exists")]
    if failed:
        print(f"quantization failed: {[(s.type, s.error) for s in failed]}", file=sys.stderr)
        return 1
    paths = {s.type: s.path for s in steps}
    reference = paths["F16"]
    quants = [t for t in types if t != "F16"]
    # Both tools run the same kernels: repacking off, or rightsizer's probe verdict per quant type.
    if args.repack == "off":
        os.environ["RIGHTSIZER_REPACK"] = "0"  # read by the engine children

    def repack_flag(path: Path) -> str:
        return "--repack" if args.repack == "auto" and extra_bufts_verdict(path).ok else "--no-repack"

    common = ["-c", str(args.ctx), "-t", str(args.threads), "-b", str(args.batch)]
    if args.chunks:
        common += ["--chunks", str(args.chunks)]
    base_file = out / "base.kld"
    ours_common = ["--db", str(db), "-c", str(args.ctx), "-t", str(args.threads), "-o", "json"]
    if args.chunks:
        ours_common += ["--chunks", str(args.chunks)]
    if args.text:
        ours_common += ["--text", str(text)]
    lab_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (lab_root, os.environ.get("PYTHONPATH")) if p))

    def theirs_pass(name: str) -> tuple[float, float, str]:
        if name == "F16":
            extra = ["-m", str(reference), "-f", str(text), "--kl-divergence-base", str(base_file)]
        else:
            extra = ["-m", str(paths[name]), "--kl-divergence-base", str(base_file), "--kl-divergence"]
        log, wall, cpu = run_llama_perplexity(args.llama_perplexity, [*extra, repack_flag(paths[name]), *common])
        return wall, cpu, log

    def ours_pass(name: str) -> tuple[float, float, str]:
        if name == "F16":
            shutil.rmtree(cache_root(), ignore_errors=True)  # the reference pass builds it afresh
            cmd = [sys.executable, "-c", _REFERENCE_PASS, str(db), str(reference), str(text), str(args.ctx), chunks,
                   str(args.threads)]
        else:
            cmd = [sys.executable, "-m", "lab", "quality", str(paths[name]), "-r", str(reference), *ours_common]
        proc, wall, cpu = timed(cmd, env)
        if proc.returncode != 0:
            raise RuntimeError(f"rightsizer {name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return wall, cpu, proc.stdout

    passes = ["F16", *quants]
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    last: dict[tuple[str, str], str] = {}
    for r in range(args.rounds):
        for name in passes:
            order = [("llama-perplexity", theirs_pass), ("rightsizer", ours_pass)]
            if r % 2:
                order.reverse()
            for tool, fn in order:
                wall, cpu, log = fn(name)
                times.setdefault((name, tool), []).append((wall, cpu))
                last[(name, tool)] = log
                print(f"  round {r + 1} {name:6} {tool:16} wall {wall:6.1f} s  CPU {cpu:6.1f} s", flush=True)
    if not args.keep:
        base_file.unlink(missing_ok=True)

    print()
    header = ("| pass | llama-perplexity wall | rightsizer wall | speed (wall) | llama-perplexity CPU | rightsizer CPU "
              "| speed (CPU) | speed per round (wall) | best of each (wall) |")
    print(header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    timing = []
    for name in passes:
        t, o = times[(name, "llama-perplexity")], times[(name, "rightsizer")]
        tw, ow = median([x[0] for x in t]), median([x[0] for x in o])
        tc, oc = median([x[1] for x in t]), median([x[1] for x in o])
        # the two tools of one round ran back to back: their ratio is the least disturbed by load
        per_round = [a[0] / b[0] for a, b in zip(t, o)]
        best = min(x[0] for x in t) / min(x[0] for x in o)
        label = "reference (F16)" if name == "F16" else name
        timing.append({"pass": label, "llama_perplexity": {"wall": [x[0] for x in t], "cpu": [x[1] for x in t]},
                       "rightsizer": {"wall": [x[0] for x in o], "cpu": [x[1] for x in o]},
                       "speed_wall": tw / ow, "speed_cpu": tc / oc, "speed_per_round": per_round,
                       "speed_per_round_median_interval": _median_interval(per_round),
                       "speed_best": best})
        print(f"| {label} | {tw:.1f} s | {ow:.1f} s | {tw / ow:.2f}x | {tc:.1f} s | {oc:.1f} s | {tc / oc:.2f}x "
              f"| {' '.join(f'{r:.2f}' for r in per_round)} (median {median(per_round):.2f}x{_interval(per_round)}) "
              f"| {best:.2f}x |")
    tw_all = sum(median([x[0] for x in times[(n, "llama-perplexity")]]) for n in passes)
    ow_all = sum(median([x[0] for x in times[(n, "rightsizer")]]) for n in passes)
    tc_all = sum(median([x[1] for x in times[(n, "llama-perplexity")]]) for n in passes)
    oc_all = sum(median([x[1] for x in times[(n, "rightsizer")]]) for n in passes)
    print(f"all passes (sum of medians): llama-perplexity {tw_all:.1f} s wall {tc_all:.1f} s CPU, rightsizer "
          f"{ow_all:.1f} s wall {oc_all:.1f} s CPU; speed {tw_all / ow_all:.2f}x wall, {tc_all / oc_all:.2f}x CPU "
          "(speed = llama-perplexity's time / rightsizer's: >= 1 is as fast or faster)")

    m = re.search(r"Final estimate: PPL = ([\d.]+)", last[("F16", "llama-perplexity")])
    lp_ref_ppl = float(m.group(1)) if m else None
    ref_ppl = json.loads(last[("F16", "rightsizer")])["ppl_ref"]
    theirs = {q: parse_llama_perplexity(last[(q, "llama-perplexity")]) for q in quants}
    ours = {q: json.loads(last[(q, "rightsizer")])[0] for q in quants}
    print()
    header = ("| quant | KLD llama-ppl | KLD ours | Δ KLD | PPL llama-ppl | PPL ours | Δ PPL | PPL ratio (l/o) "
              "| KLD p99 (l/o) | same top (l/o) | ok |")
    print(header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    all_ok = True
    report = []
    for q in quants:
        t, o = theirs[q], ours[q]
        d_kld, d_ppl = pct(o.get("kld_mean"), t["kld_mean"]), pct(o.get("ppl"), t["ppl"])
        ok = d_kld is not None and d_ppl is not None and abs(d_kld) <= KLD_TOLERANCE and abs(d_ppl) <= PPL_TOLERANCE
        all_ok &= ok
        report.append({"quant": q, "llama_perplexity": t, "rightsizer": {k: o.get(k) for k in t}, "ok": ok})
        print(f"| {q} | {t['kld_mean']:.6f} | {o['kld_mean']:.6f} | {d_kld:+.2%} | {t['ppl']:.4f} | {o['ppl']:.4f} "
              f"| {d_ppl:+.3%} | {t['ppl_ratio']:.4f} / {o['ppl_ratio']:.4f} | {t['kld_p99']:.4f} / {o['kld_p99']:.4f} "
              f"| {t['same_top_p']:.2%} / {o['same_top_p']:.2%} | {'yes' if ok else 'NO'} |")
    if lp_ref_ppl and ref_ppl:
        print(f"\nF16 reference PPL: llama-perplexity {lp_ref_ppl:.4f}, ours {ref_ppl:.4f} ({pct(ref_ppl, lp_ref_ppl):+.3%})")
    print(f"goals: |Δ KLD| <= {KLD_TOLERANCE:.0%}, |Δ PPL| <= {PPL_TOLERANCE:.0%}: {'met' if all_ok else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps({"text": str(text), "n_ctx": args.ctx, "chunks": args.chunks,
                                         "threads": args.threads, "rounds": args.rounds, "timing": timing,
                                         "ref_ppl": {"llama_perplexity": lp_ref_ppl, "rightsizer": ref_ppl},
                                         "quants": report}, indent=1))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
