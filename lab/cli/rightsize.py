"""``rightsizer rightsize``: one command from a model to the quant that meets every limit — a
thin face over :mod:`lab.rightsize` (imported inside the command, so ``--help`` stays fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lab.cli.db import db_option, open_store
from lab.cli.output import Column, emit, format_option, human_bytes
from lab.cli.report import PREFER_CHOICES, _memory

LEFT = ("file", "quant", "status", "why", "measured", "reused")


def _fraction(value: Any) -> str:
    return f"{value:.1%}"


_FORMATS = {"bytes": human_bytes, "fraction": _fraction}


@click.command()
@click.argument("model")
@click.option("--types", default=None, help="Quant types to build from MODEL, e.g. Q8_0,Q6_K,Q4_K_M "
              "(default Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0; none for a Hub repo, whose own files are the candidates).")
@click.option("--min-tg", type=float, default=None, help="Generation speed at least this many t/s.")
@click.option("--min-pp", type=float, default=None, help="Prompt processing at least this many t/s.")
@click.option("--max-ttft-ms", type=float, default=None, help="Chat time to first token at most this many ms.")
@click.option("--max-itl-p95-ms", type=float, default=None, help="Chat inter-token latency p95 at most this many ms.")
@click.option("--max-memory", default=None, callback=_memory, help="Estimated peak RSS at most this much, e.g. 2GiB.")
@click.option("--max-vram", default=None, callback=_memory, help="Estimated VRAM at most this much, e.g. 8GiB.")
@click.option("--max-kld", type=float, default=None, help="Mean KL-divergence against the source at most this.")
@click.option("--max-ppl-ratio", type=float, default=None, help="Perplexity ratio against the source at most this.")
@click.option("--min-accuracy", type=float, default=None, help="Task-suite accuracy at least this fraction, e.g. 0.8.")
@click.option("--min-format-valid", type=float, default=None, help="Task-suite format validity at least this fraction.")
@click.option("--max-cost-per-mtok", type=float, default=None,
              help="Cost per 1M generated tokens at most this many USD (needs `rightsizer machine set`).")
@click.option("--min-users", type=int, default=None,
              help="Concurrent users served within the --slo-* objective at least this many (load --find-max; measured last).")
@click.option("--slo-ttft-ms", type=float, default=None, help="--min-users: the objective's time to first token, ms.")
@click.option("--slo-itl-p95-ms", type=float, default=None, help="--min-users: the objective's inter-token p95, ms.")
@click.option("--slo-e2e-ms", type=float, default=None, help="--min-users: the objective's end-to-end time, ms.")
@click.option("--prefer", type=click.Choice(PREFER_CHOICES), default="smallest", show_default=True,
              help="Which passing candidate to pick.")
@click.option("--suite", default=None, help="Task suite for --min-accuracy / --min-format-valid (a .jsonl file or demo).")
@click.option("--text", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Text for KLD / PPL ratio (default: the bundled text).")
@click.option("--chunks", type=int, default=4, show_default=True, help="Text chunks of 512 tokens for quality, first try.")
@click.option("--max-chunks", type=int, default=32, show_default=True, help="Most chunks when a KLD interval holds the limit.")
@click.option("-t", "--threads", type=int, default=None, help="Threads to measure and deploy at (default: physical cores).")
@click.option("-ngl", "--n-gpu-layers", type=int, default=-1, show_default=True, help="GPU layers (-1: all).")
@click.option("-p", "--n-prompt", type=int, default=512, show_default=True, help="Prompt tokens of the pp test.")
@click.option("-n", "--n-gen", type=int, default=128, show_default=True, help="Generated tokens of the tg test.")
@click.option("-r", "--repetitions", type=int, default=3, show_default=True, help="Repetitions per speed test, first try.")
@click.option("--max-repetitions", type=int, default=24, show_default=True,
              help="Most repetitions when a speed interval holds the limit (then: borderline).")
@click.option("-c", "--ctx-size", type=int, default=4096, show_default=True,
              help="Context the memory estimate and the command line are for.")
@click.option("--keep/--no-keep", default=True, show_default=True,
              help="Keep Hub files downloaded for this question that were not picked.")
@format_option(choices=("table", "md", "json"))
@db_option
def rightsize(model: str, types: str | None, min_tg: float | None, min_pp: float | None, max_ttft_ms: float | None,
              max_itl_p95_ms: float | None, max_memory: int | None, max_vram: int | None, max_kld: float | None,
              max_ppl_ratio: float | None, min_accuracy: float | None, min_format_valid: float | None,
              max_cost_per_mtok: float | None, min_users: int | None, slo_ttft_ms: float | None,
              slo_itl_p95_ms: float | None, slo_e2e_ms: float | None, prefer: str, suite: str | None, text: Path | None, chunks: int,
              max_chunks: int, threads: int | None, n_gpu_layers: int, n_prompt: int, n_gen: int, repetitions: int,
              max_repetitions: int, ctx_size: int, keep: bool, fmt: str, db_path: Path | None) -> None:
    """From MODEL to the quant that meets every limit, measuring only what the limits need.

    MODEL is a .gguf file, a library name, demo, or a Hub repo (owner/repo). Candidates are the
    --types built from MODEL (and MODEL itself), or the repo's quant files that fit here. Each
    goes through memory (estimate), quality, speed, the task suite and the load, cheapest first, and stops
    at the first limit it fails. Figures stored for the same file, configuration and build are
    reused, so asking again measures nothing. A figure whose 95% interval holds a limit is
    measured again with more repetitions; if still undecided the candidate is "borderline" and
    never picked. Exits 1 when no candidate meets every limit.
    """
    import json

    from lab import rightsize as rs
    from lab.quantize import parse_types
    from lab.select import objective_key

    limits = {"min_tg": min_tg, "min_pp": min_pp, "max_ttft_ms": max_ttft_ms, "max_itl_p95_ms": max_itl_p95_ms,
              "max_memory_bytes": max_memory, "max_vram_bytes": max_vram, "max_kld": max_kld,
              "max_ppl_ratio": max_ppl_ratio, "min_accuracy": min_accuracy, "min_format_valid": min_format_valid,
              "max_cost_per_mtok": max_cost_per_mtok, "min_users": min_users}
    q = rs.Question(model=model, limits={k: float(v) for k, v in limits.items() if v is not None}, prefer=prefer,
                    text=text, chunks=chunks, max_chunks=max_chunks, suite=suite, n_threads=threads,
                    n_gpu_layers=n_gpu_layers, n_prompt=n_prompt, n_gen=n_gen, repetitions=repetitions,
                    max_repetitions=max_repetitions, ctx_size=ctx_size, keep=keep,
                    objective=objective_key(slo_ttft_ms, slo_itl_p95_ms, slo_e2e_ms))
    if types is not None:
        q.types = parse_types(types) if types.strip().lower() not in ("", "none") else []
    elif model.count("/") == 1 and not Path(model).exists():
        q.types = []
    store = open_store(db_path)
    out = rs.rightsize(store, q, on_progress=lambda m: click.echo(m, err=True))
    if fmt == "json":
        click.echo(json.dumps(out.to_dict(), indent=2, default=str))
    else:
        from lab.report.verdict import pick_lines, verdict_columns, verdict_rows

        rows = verdict_rows(out)
        used = [Column(key, title, _FORMATS.get(kind), align="left" if key in LEFT else "right")
                for key, title, kind in verdict_columns(rows, q.test_pp, q.test_tg)]
        emit(rows, used, fmt)
        click.echo()
        for note in out.notes:
            click.echo(f"note: {note}")
        if out.pick is not None:
            for line in pick_lines(out):
                click.echo(line)
        click.echo(f"run: {out.run_id}")
    if out.pick is None:
        click.echo("error: no candidate meets every limit (see the verdict table).", err=True)
        raise SystemExit(1)


COMMANDS = [rightsize]
