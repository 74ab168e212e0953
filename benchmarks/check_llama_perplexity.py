#!/usr/bin/env python3
"""Hold ``rightsizer quality`` against ``llama-perplexity --kl-divergence`` from the same
llama.cpp build, on the same text and context.

Usage:
    python benchmarks/check_llama_perplexity.py --llama-perplexity PATH [--model demo]
        [--types Q8_0,Q6_K,...] [--text FILE] [-c 512] [--chunks N] [--threads 2]

It builds the F16 reference and the ladder from the model with ``rightsizer``'s quantizer (into
``benchmarks/out/ladder``), then for every quant runs

* ``llama-perplexity -m F16 -f TEXT -c C --kl-divergence-base base.kld`` (once), then
  ``llama-perplexity -m QUANT --kl-divergence-base base.kld --kl-divergence``;
* ``rightsizer``'s quality measurement of QUANT against F16 (cached reference, one child per model);

and prints both sets of figures side by side. Goals (the issue's): mean KLD within 3% and PPL
within 1% of llama-perplexity. Exit status 1 when a quant misses a goal.

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


def run_llama_perplexity(binary: str, args: list[str]) -> tuple[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([binary, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-perplexity {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr, time.perf_counter() - t0


def pct(ours: float | None, theirs: float) -> float | None:
    if ours is None or theirs == 0:
        return None
    return ours / theirs - 1.0


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
    ap.add_argument("--out", type=Path, default=OUT, help="work folder (default: benchmarks/out)")
    ap.add_argument("--keep", action="store_true", help="keep llama-perplexity's base logits file")
    ap.add_argument("--repack", choices=["off", "auto"], default="off",
                    help="llama.cpp's extra CPU buffer types (AMX/repacked weights) for both tools: off "
                         "(default: the same kernels on both sides, and no SIGILL on VMs that advertise AMX "
                         "they cannot run), or auto (rightsizer's probe per quant type)")
    ap.add_argument("--json", type=Path, default=None, help="also write the comparison as JSON here")
    args = ap.parse_args()

    from lab import library
    from lab.engine.probe import extra_bufts_verdict
    from lab.quality import DEFAULT_TEXT, QualityOptions, measure_quality
    from lab.quantize import build_ladder, parse_types
    from lab.store import Store

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out / "check.db")
    text = (args.text or DEFAULT_TEXT).resolve()
    types = parse_types(args.types)
    source = library.resolve(args.model)
    print(f"model {source.path.name}, text {text.name}, -c {args.ctx}, chunks {args.chunks or 'all'}, "
          f"{args.threads} threads, repack {args.repack}", flush=True)

    steps = build_ladder(store, source, ["F16", *[t for t in types if t != "F16"]], out_dir=out / "ladder",
                         n_threads=args.threads)
    failed = [s for s in steps if s.status not in ("built", "exists")]
    if failed:
        print(f"quantization failed: {[(s.type, s.error) for s in failed]}", file=sys.stderr)
        return 1
    paths = {s.type: s.path for s in steps}
    reference = paths["F16"]
    # Both tools run the same kernels: repacking off, or rightsizer's probe verdict per quant type.
    if args.repack == "off":
        os.environ["RIGHTSIZER_REPACK"] = "0"  # read by the engine children

    def repack_flag(path: Path) -> str:
        return "--repack" if args.repack == "auto" and extra_bufts_verdict(path).ok else "--no-repack"

    common = ["-c", str(args.ctx), "-t", str(args.threads), "-b", str(args.batch)]
    if args.chunks:
        common += ["--chunks", str(args.chunks)]

    base_file = out / "base.kld"
    print(f"llama-perplexity: F16 base logits -> {base_file}", flush=True)
    log, secs = run_llama_perplexity(args.llama_perplexity, [
        "-m", str(reference), "-f", str(text), "--kl-divergence-base", str(base_file), repack_flag(reference), *common])
    m = re.search(r"Final estimate: PPL = ([\d.]+)", log)
    lp_ref_ppl = float(m.group(1)) if m else None
    print(f"  F16 PPL {lp_ref_ppl} ({secs:.0f} s), base file {base_file.stat().st_size / 2**20:.0f} MiB", flush=True)

    theirs: dict[str, dict[str, float]] = {}
    quants = [t for t in types if t != "F16"]
    for qtype in quants:
        log, secs = run_llama_perplexity(args.llama_perplexity, [
            "-m", str(paths[qtype]), "--kl-divergence-base", str(base_file), "--kl-divergence",
            repack_flag(paths[qtype]), *common])
        theirs[qtype] = parse_llama_perplexity(log)
        print(f"  llama-perplexity {qtype}: KLD {theirs[qtype]['kld_mean']:.6f} PPL {theirs[qtype]['ppl']:.4f} "
              f"({secs:.0f} s)", flush=True)
    if not args.keep:
        base_file.unlink(missing_ok=True)

    t0 = time.perf_counter()

    def progress(event: dict) -> None:
        if event.get("event") == "reference_ready":
            print(f"  rightsizer reference cache: {event['bytes'] / 2**20:.0f} MiB, {event['n_chunk']} chunks, "
                  f"PPL {event['ppl_ref']:.4f} ({'built' if event['built'] else 'cached'})", flush=True)
        elif event.get("event") == "quality_row":
            print(f"  rightsizer {event['model_filename']}: KLD {event['kld_mean']:.6f} PPL {event['ppl']:.4f}", flush=True)

    rows = measure_quality(store, QualityOptions(
        models=[str(paths[q]) for q in quants], reference=str(reference), text=text, n_ctx=args.ctx,
        n_chunks=args.chunks, n_threads=args.threads), on_event=progress)
    print(f"  rightsizer: {time.perf_counter() - t0:.0f} s for the reference and {len(quants)} models", flush=True)

    ours = {q: r for q, r in zip(quants, rows)}
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
    ref_ppl = rows[0].get("ppl_ref") if rows else None
    if lp_ref_ppl and ref_ppl:
        print(f"\nF16 reference PPL: llama-perplexity {lp_ref_ppl:.4f}, ours {ref_ppl:.4f} ({pct(ref_ppl, lp_ref_ppl):+.3%})")
    print(f"goals: |Δ KLD| <= {KLD_TOLERANCE:.0%}, |Δ PPL| <= {PPL_TOLERANCE:.0%}: {'met' if all_ok else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps({"text": str(text), "n_ctx": args.ctx, "chunks": args.chunks,
                                         "ref_ppl": {"llama_perplexity": lp_ref_ppl, "rightsizer": ref_ppl},
                                         "quants": report}, indent=1))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
