"""``rightsizer quality``, ``rightsizer eval`` and ``rightsizer models ladder``: how much a
quantization loses, and whether the model still does the task in the required format."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from lab.cli.db import db_option, open_store
from lab.cli.output import NA, Column, emit, format_option, human_bytes


class _Status:
    """One progress line on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def show(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K" + text[:200])
            sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}%"


def _f4(value: Any) -> str:
    return f"{value:.4f}"


def _f6(value: Any) -> str:
    return f"{value:.6f}"


# --- models ladder --------------------------------------------------------------------------


def _fallback_summary(step: dict[str, Any]) -> str:
    fallbacks = step.get("fallback_tensors") or []
    if not fallbacks:
        return "none"
    got: dict[str, int] = {}
    for f in fallbacks:
        got[f["got"]] = got.get(f["got"], 0) + 1
    return f"{len(fallbacks)}: " + ", ".join(f"{n}→{t}" for t, n in sorted(got.items(), key=lambda kv: -kv[1]))


LADDER_COLUMNS = [
    Column("type", "type", align="left"),
    Column("file_type", "got", align="left"),
    Column("file_size", "file size", human_bytes),
    Column("fallbacks", "fallback tensors", align="left"),
    Column("seconds", "time s", lambda v: f"{v:.1f}"),
    Column("status", "status", align="left"),
    Column("path", "file", align="left"),
]


@click.command("ladder")
@click.argument("model")
@click.option("--types", default=None,
              help="Comma list of quantization types (default: F16,Q8_0,Q6_K,Q5_K_M,Q5_1,Q4_K_M,Q4_0,Q3_K_M,Q2_K).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the files (default: <models dir>/ladders/<model stem>).")
@click.option("-t", "--threads", type=int, default=None, help="Quantizer threads (default: physical cores).")
@click.option("--force", is_flag=True, help="Rebuild files that already exist.")
@format_option()
@db_option
def ladder(model: str, types: str | None, out_dir: Path | None, threads: int | None, force: bool, fmt: str,
           db_path: Path | None) -> None:
    """Build a quantization ladder of MODEL with llama.cpp's quantizer.

    Each file is registered with a link to MODEL and the tensors llama.cpp gave another type
    than asked (it falls back when a row length is not a multiple of the type's block size).
    A quantized MODEL is requantized: the ladder can be no better than its source.
    """
    from lab import library
    from lab.gguf_info import inspect
    from lab.quantize import build_ladder, default_out_dir, parse_types

    type_list = parse_types(types)
    source = library.resolve(model)
    src_type = inspect(source.path).file_type
    store = open_store(db_path)
    status = _Status()
    target = out_dir or default_out_dir(source.path)
    if src_type.upper() not in ("F32", "F16", "BF16"):
        click.echo(f"note: {source.path.name} is {src_type}; the ladder is requantized from it and can be no "
                   "better than it", err=True)
    click.echo(f"building {len(type_list)} files in {target}", err=True)

    position = {"done": 0}

    def on_step(step: Any) -> None:
        status.clear()
        if step.status == "failed":
            click.echo(f"error: {step.type}: {step.error}", err=True)
        position["done"] += 1
        if position["done"] < len(type_list):
            status.show(f"quantizing {type_list[position['done']]} ({position['done'] + 1}/{len(type_list)})")

    status.show(f"quantizing {type_list[0]} (1/{len(type_list)})")
    try:
        steps = build_ladder(store, source, type_list, out_dir=out_dir, n_threads=threads, force=force,
                             on_step=on_step)
    finally:
        status.clear()
    rows = []
    for s in steps:
        d = s.to_dict()
        d["fallbacks"] = _fallback_summary(d)
        rows.append(d)
    emit(rows, LADDER_COLUMNS, fmt)
    if any(s.status == "failed" for s in steps):
        raise SystemExit(1)


# --- quality --------------------------------------------------------------------------------


def _kld(row: dict[str, Any]) -> str:
    if row.get("kld_mean") is None:
        return NA
    err = row.get("kld_stderr")
    return f"{row['kld_mean']:.6f} ± {err:.6f}" if err is not None else f"{row['kld_mean']:.6f}"


QUALITY_COLUMNS = [
    Column("model_filename", "model", align="left"),
    Column("file_type", "quant", align="left"),
    Column("ppl", "PPL", _f4),
    Column("ppl_ratio", "PPL(Q)/PPL(ref)", _f4),
    Column("kld", "mean KLD", align="right"),
    Column("kld_p99", "KLD 99%", _f4),
    Column("kld_p999", "KLD 99.9%", _f4),
    Column("same_top_p", "same top", _pct),
    Column("status", "status", align="left"),
]


@click.command("quality")
@click.argument("models", nargs=-1, required=True)
@click.option("--reference", "-r", required=True, help="The model to measure against (e.g. the F16 of a ladder).")
@click.option("--text", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="UTF-8 text to score (default: the bundled Python-reference text, ~24k tokens).")
@click.option("-c", "--ctx", "n_ctx", type=int, default=512, show_default=True, help="Chunk size (llama-perplexity's -c).")
@click.option("--chunks", type=int, default=None, help="Score only the first N chunks (default: all).")
@click.option("-t", "--threads", type=int, default=None, help="Threads (default: physical cores).")
@click.option("-ngl", "--n-gpu-layers", type=int, default=0, show_default=True, help="Layers offloaded to the GPU.")
@click.option("--timeout", type=float, default=None, help="Stop one model's measurement after this many seconds.")
@format_option()
@db_option
def quality(models: tuple[str, ...], reference: str, text: Path | None, n_ctx: int, chunks: int | None,
            threads: int | None, n_gpu_layers: int, timeout: float | None, fmt: str, db_path: Path | None) -> None:
    """Perplexity and KL divergence of MODELS against --reference, as llama-perplexity
    --kl-divergence counts them: the text in chunks of -c tokens, the second half of each
    chunk scored. The reference's side is computed once and cached."""
    from lab.engine.runner import Spare

    with Spare() as spare:  # the engine starts before the store's imports and bookkeeping
        _quality(spare, models, reference, text, n_ctx, chunks, threads, n_gpu_layers, timeout, fmt, db_path)


def _quality(spare: Any, models: tuple[str, ...], reference: str, text: Path | None, n_ctx: int, chunks: int | None,
             threads: int | None, n_gpu_layers: int, timeout: float | None, fmt: str, db_path: Path | None) -> None:
    from lab.quality import QualityOptions, measure_quality

    store = open_store(db_path)
    status = _Status()
    names = {"reference": reference}

    def on_event(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "progress":
            who = f"reference {event.get('model_filename')}" if event.get("stage") == "reference" else event.get("model_filename")
            extra = f" KLD {event['kld']:.5f}" if event.get("kld") is not None else ""
            status.show(f"{who}: chunk {event['chunk']}/{event['n_chunks']} PPL {event['ppl']:.3f}{extra}")
        elif kind == "reference_ready":
            status.clear()
            how = "computed" if event["built"] else "cached"
            click.echo(f"reference {names['reference']}: PPL {event['ppl_ref']:.4f} over {event['n_chunk']} chunks "
                       f"({how}, {human_bytes(event['bytes'])} on disk)", err=True)
        elif kind == "quality_failed":
            status.clear()
            click.echo(f"error: {event['model_filename']}: {event['error']}", err=True)

    try:
        rows = measure_quality(store, QualityOptions(
            models=list(models), reference=reference, text=text, n_ctx=n_ctx, n_chunks=chunks,
            n_threads=threads, n_gpu_layers=n_gpu_layers, timeout=timeout), on_event=on_event, spare=spare)
    finally:
        status.clear()
    for r in rows:
        r["kld"] = _kld(r)
    json_rows = [{k: v for k, v in r.items() if k != "kld"} for r in rows]
    emit(rows, QUALITY_COLUMNS, fmt, json_rows=json_rows)
    if any(r.get("status") != "ok" for r in rows):
        raise SystemExit(1)


# --- eval -----------------------------------------------------------------------------------


def _acc(row: dict[str, Any]) -> str:
    if row.get("accuracy") is None:
        return NA
    lo, hi = row.get("accuracy_ci_low"), row.get("accuracy_ci_high")
    return f"{100 * row['accuracy']:.1f}% [{100 * lo:.0f}–{100 * hi:.0f}]" if lo is not None else _pct(row["accuracy"])


EVAL_COLUMNS = [
    Column("model_filename", "model", align="left"),
    Column("file_type", "quant", align="left"),
    Column("constrained", "constrained", lambda v: "yes" if v else "no", align="left"),
    Column("acc", "accuracy [95% CI]", align="right"),
    Column("format_valid_rate", "format valid", _pct),
    Column("n_items", "items"),
    Column("n_empty", "empty"),
    Column("n_timeout", "timeouts"),
    Column("n_error", "errors"),
    Column("latency_p50_ms", "p50 ms", lambda v: f"{v:.0f}"),
    Column("latency_p95_ms", "p95 ms", lambda v: f"{v:.0f}"),
    Column("chat_template", "chat template", align="left"),
]

ITEM_COLUMNS = [
    Column("item_id", "item", align="left"),
    Column("score", "score", lambda v: f"{v:.2f}"),
    Column("correct", "ok", lambda v: "yes" if v else "no", align="left"),
    Column("format_valid", "format", lambda v: "valid" if v else "invalid", align="left"),
    Column("status", "status", align="left"),
    Column("latency_ms", "ms", lambda v: f"{v:.0f}"),
    Column("n_tokens", "tokens"),
    Column("shown", "output / why", align="left"),
]


@click.command("eval")
@click.argument("models", nargs=-1, required=True)
@click.option("--suite", required=True, help="A JSONL suite file, or 'demo' for the bundled one.")
@click.option("--constraint", "constraint", type=click.Choice(["on", "off", "both"]), default="on", show_default=True,
              help="Enforce the items' grammar / JSON-schema constraints, not, or run both ways.")
@click.option("--max-tokens", type=int, default=128, show_default=True, help="Tokens per answer at most (an item may set its own).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds per item at most.")
@click.option("-c", "--ctx", "n_ctx", type=int, default=None, help="Context size (default: fitted to the longest item).")
@click.option("-t", "--threads", type=int, default=None, help="Threads (default: physical cores).")
@click.option("-ngl", "--n-gpu-layers", type=int, default=0, show_default=True, help="Layers offloaded to the GPU.")
@click.option("--limit", type=int, default=None, help="Only the first N items.")
@click.option("--items", "show_items", is_flag=True, help="Also print every item's output and score.")
@format_option()
@db_option
def eval_(models: tuple[str, ...], suite: str, constraint: str, max_tokens: int, timeout: float, n_ctx: int | None,
          threads: int | None, n_gpu_layers: int, limit: int | None, show_items: bool, fmt: str,
          db_path: Path | None) -> None:
    """Run a task suite on MODELS: accuracy with a 95% interval, format validity, failures and
    latency per model. Each item's output, score and timing is stored.

    A MODEL may be ``endpoint:NAME`` (see ``rightsizer endpoints``): the same items go to the
    endpoint's API; a JSON-schema constraint is sent as structured output, other constraints
    cannot be, and each item records which."""
    from lab.evals.endpoint_runner import constraint_summary, run_evals
    from lab.evals.runner import EvalOptions
    from lab.evals.suite import load_suite

    loaded = load_suite(suite)  # errors name the line before any model loads
    if constraint != "off" and not loaded.n_constrained:
        click.echo(f"note: {loaded.path.name} has no constrained items; --constraint changes nothing", err=True)
    store = open_store(db_path)
    status = _Status()

    def on_event(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "eval_item":
            mode = "constrained" if event["constrained"] else "free"
            status.show(f"{event['model_filename']} ({mode}): item {event['n_done']}/{event['n_items']}")

    modes = {"on": [True], "off": [False], "both": [True, False]}[constraint]
    try:
        runs = run_evals(store, EvalOptions(
            models=list(models), suite=loaded.path, constrained=modes, max_tokens=max_tokens, timeout_s=timeout,
            n_ctx=n_ctx, n_threads=threads, n_gpu_layers=n_gpu_layers, limit=limit), on_event=on_event)
    finally:
        status.clear()
    for r in runs:
        r["acc"] = _acc(r)
        notes = constraint_summary(r["items"])  # endpoints: how each constraint was sent
        if notes:
            click.echo(f"note: {r['model_filename']}: {notes}", err=True)
    json_rows = [{k: v for k, v in r.items() if k != "acc" and (show_items or k != "items")} for r in runs]
    if fmt in ("table", "md") and show_items:
        from lab.cli.output import render_table

        for r in runs:
            for it in r["items"]:
                text = (it.get("output") or "").replace("\n", "⏎")
                why = it.get("detail") or it.get("error")
                it["shown"] = (text[:60] + ("…" if len(text) > 60 else "")) + (f"  ({why})" if why else "")
            mode = "constrained" if r["constrained"] else "free"
            click.echo(f"{r['model_filename']} ({mode})")
            click.echo(render_table(r["items"], ITEM_COLUMNS))
            click.echo()
    emit(runs, EVAL_COLUMNS, fmt, json_rows=json_rows)
    from lab.engine.protocol import FALLBACK_TEMPLATE, fallback_warning

    for name in dict.fromkeys(r["model_filename"] for r in runs if r.get("chat_template") == FALLBACK_TEMPLATE):
        click.echo(fallback_warning(name), err=True)
    if any(r.get("status") == "failed" for r in runs):
        raise SystemExit(1)


@click.command("eval-compare")
@click.argument("run_a")
@click.argument("run_b")
@format_option(default="table", choices=["table", "json"])
@db_option
def eval_compare(run_a: str, run_b: str, fmt: str, db_path: Path | None) -> None:
    """Compare two eval runs item by item (RUN_A, RUN_B: eval or run ids, as 'results --runs'
    shows them): the accuracy difference with its 95% interval (Newcombe's method 10 for
    paired proportions) and the exact McNemar test, in words."""
    from lab.evals.paired import compare_runs

    paired, notes = compare_runs(open_store(db_path), run_a, run_b)
    record = dict(paired.as_dict(), **notes)
    if fmt == "json":
        click.echo(json.dumps(record, indent=2))
        return
    lo, hi = record["difference_ci95"]
    for key, label in (("a", "A"), ("b", "B")):
        correct = paired.both + (paired.only_a if key == "a" else paired.only_b)
        click.echo(f"{label}: {record[key]}  accuracy {_pct(record['accuracy_' + key])} ({correct}/{paired.n})")
    click.echo(f"difference A - B: {100 * record['difference']:+.1f} points, 95% CI "
               f"[{100 * lo:+.1f}, {100 * hi:+.1f}] (Newcombe method 10, paired)")
    click.echo(f"verdict: {paired.verdict()}")
    if not notes["same_suite_file"] or notes["unmatched_items"]:
        click.echo(f"note: the runs used different suite files; {notes['unmatched_items']} items are in one run "
                   "only and are left out", err=True)


COMMANDS = [quality, eval_, eval_compare]
MODEL_COMMANDS = [ladder]
