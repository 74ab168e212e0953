"""``rightsizer compare``, ``rightsizer recommend`` and ``rightsizer import llama-bench``: thin faces
over :mod:`lab.report` (imported inside the commands, so ``rightsizer --help`` stays fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lab.cli.db import db_option, open_store
from lab.cli.output import NA, Column, emit, format_option, human_bytes

REPORT_FORMATS = ("table", "md", "csv", "json")


def _pct(value: Any) -> str:
    return f"{value:+.1f}%"


def _ms(value: Any) -> str:
    return f"{value:.1f}"


def _ts(row: dict[str, Any]) -> str:
    if row.get("avg_ts") is None:
        return NA
    text = f"{row['avg_ts']:.2f}"
    if row.get("stddev_ts") is not None:
        text += f" ± {row['stddev_ts']:.2f}"
    return text + " (noisy)" if row.get("noisy") else text


# --- compare ----------------------------------------------------------------------------------


def _compare_columns(rows: list[dict[str, Any]]) -> list[Column]:
    cols = [
        Column("base", "", align="left"),
        Column("short_id", "result", align="left"),
        Column("model_filename", "model file", align="left"),
        Column("file_type", "quant", align="left"),
        Column("machine", "machine", align="left"),
        Column("test", "test", align="left"),
        Column("n_threads", "threads"),
        Column("n_gpu_layers", "ngl"),
        Column("ts", "t/s"),
        Column("d_avg_ts", "Δ t/s"),
        Column("peak_rss_bytes", "peak RSS", human_bytes),
        Column("d_peak_rss_bytes", "Δ RSS"),
    ]
    if any(r.get("peak_vram_bytes") is not None for r in rows):
        cols += [Column("peak_vram_bytes", "VRAM", human_bytes), Column("d_peak_vram_bytes", "Δ VRAM")]
    cols += [Column("j_per_token", "J/tok", lambda v: f"{v:.4f}"), Column("d_j_per_token", "Δ J/tok")]
    if any(r.get("test") == "chat" for r in rows):
        for key, title in (("ttft_ms", "TTFT"), ("itl_p50_ms", "ITL p50"), ("itl_p95_ms", "ITL p95"),
                           ("itl_p99_ms", "ITL p99"), ("e2e_ms", "e2e")):
            cols += [Column(key, f"{title} ms", _ms), Column(f"d_{key}", f"Δ {title}")]
    return cols


@click.command()
@click.argument("ids", nargs=-1, required=True)
@format_option(choices=REPORT_FORMATS)
@db_option
def compare(ids: tuple[str, ...], fmt: str, db_path: Path | None) -> None:
    """Compare results side by side, with the difference in percent against the first.

    IDS are result ids (the full id, its last 10 digits, or a prefix), as `rightsizer results
    -o json` shows them; a run id stands for all the results of that run. Each result is compared
    with the first result of the same test. Figures never measured show as n/a.
    """
    from lab import report

    store = open_store(db_path)
    rows = report.compare(store, list(ids))
    display = []
    for r in rows:
        d = dict(r, ts=_ts(r), base="*" if r["is_baseline"] else "", machine=r.get("hostname") or r.get("machine_id"))
        for metric in report.COMPARE_METRICS:
            value = r.get(f"{metric.key}_diff_pct")
            d[f"d_{metric.key}"] = "base" if r["is_baseline"] and r.get(metric.key) is not None else (
                None if value is None else _pct(value))
        display.append(d)
    emit(display, _compare_columns(display), fmt, json_rows=rows)
    tests = {r["test"] for r in rows}
    if len(tests) > 1 and fmt in ("table", "md"):
        click.echo(f"note: {len(tests)} different tests; each result is compared with the first result "
                   "of its own test (marked *).", err=True)


# --- recommend --------------------------------------------------------------------------------


def _memory(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    from lab.errors import LabError
    from lab.report import parse_bytes

    try:
        return parse_bytes(value)
    except LabError as exc:
        raise click.BadParameter(str(exc)) from None


def _check_cell(check: Any) -> str:
    from lab.report import fmt_figure

    if check.status == "unverified":
        return "unverified"
    value = human_bytes(check.value) if check.unit == "bytes" else fmt_figure(check.value)
    if check.status == "pass":
        return f"pass {value}"
    pct = f" ({check.delta_pct:+.1f}%)" if check.delta_pct is not None else ""
    return f"FAIL {value}{pct}"


def _fa(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    from lab.select import parse_flash_attn

    try:
        return parse_flash_attn(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


PREFER_CHOICES = ("smallest", "fastest", "quality", "cheapest")


@click.command()
@click.option("--min-tg", type=float, default=None, help="Generation speed at least this many t/s (the tg test).")
@click.option("--min-pp", type=float, default=None, help="Prompt processing at least this many t/s (the pp test).")
@click.option("--max-ttft-ms", type=float, default=None, help="Chat time to first token at most this many ms.")
@click.option("--max-itl-p95-ms", type=float, default=None, help="Chat inter-token latency p95 at most this many ms.")
@click.option("--max-memory", default=None, callback=_memory, help="Peak RSS at most this much, e.g. 2GiB or 512MiB.")
@click.option("--max-vram", default=None, callback=_memory, help="Peak VRAM at most this much, e.g. 8GiB.")
@click.option("--max-j-per-token", type=float, default=None, help="Energy per generated token at most this many joules.")
@click.option("--min-accuracy", type=float, default=None, help="Eval accuracy at least this fraction, e.g. 0.8.")
@click.option("--max-kld", type=float, default=None, help="Mean KL-divergence against the reference at most this.")
@click.option("--max-ppl-ratio", type=float, default=None, help="Perplexity ratio against the reference at most this.")
@click.option("--max-cost-per-mtok", type=float, default=None, metavar="USD",
              help="Cost per 1M generated tokens at most this many USD (needs `rightsizer machine set`).")
@click.option("--prefer", type=click.Choice(PREFER_CHOICES), default="smallest", show_default=True,
              help="Which passing model to pick: smallest file; fastest tg; quality (lowest KLD, then PPL ratio, "
                   "then accuracy); cheapest (lowest USD per 1M generated tokens from `rightsizer machine set` "
                   "and the tg speed; without a cost figure, least peak memory).")
@click.option("-t", "--threads", type=int, default=None, help="Judge results measured at this many threads.")
@click.option("-ngl", "--n-gpu-layers", type=int, default=None, help="Judge results measured with this many GPU layers.")
@click.option("-b", "--batch-size", type=int, default=None, help="Judge results measured at this logical batch size.")
@click.option("-ub", "--ubatch-size", type=int, default=None, help="Judge results measured at this physical batch size.")
@click.option("-fa", "--flash-attn", default=None, callback=_fa, help="Judge results measured with flash attention on, off or auto.")
@click.option("-ctk", "--cache-type-k", default=None, help="Judge results measured with this KV cache type for K.")
@click.option("-ctv", "--cache-type-v", default=None, help="Judge results measured with this KV cache type for V.")
@click.option("--suite", default=None, help="Eval suite whose accuracy counts (default: each model's newest).")
@click.option("--min-users", type=int, default=None, help="Concurrent users served within the objective at least this many (from `rightsizer load --find-max` with the same --slo-* flags).")
@click.option("--slo-ttft-ms", type=float, default=None, help="--min-users: the objective's time to first token, ms.")
@click.option("--slo-itl-p95-ms", type=float, default=None, help="--min-users: the objective's inter-token p95, ms.")
@click.option("--slo-e2e-ms", type=float, default=None, help="--min-users: the objective's end-to-end time, ms.")
@click.option("--baseline", default=None, metavar="MODEL",
              help="Compare every candidate with this: endpoint:NAME, or a model file name, path or id prefix "
                   "(paired accuracy difference with 95% CI and McNemar verdict, latency and cost ratios).")
@click.option("--machine", default=None, help="Machine id prefix or hostname (default: this machine, else all).")
@click.option("--pp-test", default="pp512", show_default=True, help="The prompt test --min-pp checks.")
@click.option("--tg-test", default="tg128", show_default=True, help="The generation test --min-tg checks.")
@format_option(choices=REPORT_FORMATS)
@db_option
def recommend(min_tg: float | None, min_pp: float | None, max_ttft_ms: float | None,
              max_itl_p95_ms: float | None, max_memory: int | None, max_vram: int | None,
              max_j_per_token: float | None, min_accuracy: float | None, max_kld: float | None,
              max_ppl_ratio: float | None, max_cost_per_mtok: float | None, prefer: str, threads: int | None, n_gpu_layers: int | None,
              batch_size: int | None, ubatch_size: int | None, flash_attn: int | None,
              cache_type_k: str | None, cache_type_v: str | None, suite: str | None, min_users: int | None,
              slo_ttft_ms: float | None, slo_itl_p95_ms: float | None, slo_e2e_ms: float | None, baseline: str | None,
              machine: str | None, pp_test: str, tg_test: str, fmt: str, db_path: Path | None) -> None:
    """The model and quant that meets every limit, and why each other one does not.

    Every model with a stored figure is a candidate. Each is judged at one configuration: the one
    given with -t, -ngl, -b, -ub, -fa, -ctk, -ctv, else its best measured (stated in the output).
    A limit that needs a figure never measured leaves a model "unverified": it is listed, never
    picked. The pick comes with the llama-server and llama-cli command lines that reproduce its
    configuration. Exits 1 when no model meets every limit.
    """
    import json

    from lab import report
    from lab.select import objective_key

    config = {"n_threads": threads, "n_gpu_layers": n_gpu_layers, "n_batch": batch_size, "n_ubatch": ubatch_size,
              "flash_attn": flash_attn, "type_k": cache_type_k, "type_v": cache_type_v}
    store = open_store(db_path)
    rec = report.recommend(
        store, machine_id=machine, min_tg=min_tg, min_pp=min_pp, max_ttft_ms=max_ttft_ms,
        max_itl_p95_ms=max_itl_p95_ms, max_memory_bytes=max_memory, max_vram_bytes=max_vram,
        max_j_per_token=max_j_per_token, min_accuracy=min_accuracy, max_kld=max_kld,
        max_ppl_ratio=max_ppl_ratio, max_cost_per_mtok=max_cost_per_mtok, suite=suite, test_pp=pp_test, test_tg=tg_test, prefer=prefer,
        config={k: v for k, v in config.items() if v is not None}, baseline=baseline,
        min_users=min_users, objective=objective_key(slo_ttft_ms, slo_itl_p95_ms, slo_e2e_ms),
    )
    if fmt == "json":
        click.echo(json.dumps(rec.to_dict(), indent=2, default=str))
    else:
        specs = [s for s in report.limit_specs(pp_test, tg_test) if s.name in rec.limits]
        several_machines = len({c.row["machine_id"] for c in rec.candidates if c.row.get("machine_id")}) > 1
        rows = []
        for cand in rec.candidates:
            status = "PICK" if cand is rec.pick else "FAIL" if cand.status == "fail" else cand.status
            row = dict(cand.row, status=status, why=cand.reason(),
                       machine=cand.row.get("hostname") or cand.row.get("machine_id"))
            for check in cand.checks:
                row[f"limit_{check.name}"] = _check_cell(check)
            rows.append(row)
        cols = [Column("model_filename", "model file", align="left"), Column("file_type", "quant", align="left"),
                Column("file_size", "file", human_bytes), Column("model_size", "weights", human_bytes)]
        if several_machines:
            cols.append(Column("machine", "machine", align="left"))
        cols.append(Column("status", "status", align="left"))
        cols += [Column(f"limit_{s.name}", _limit_title(s), align="left") for s in specs]
        cols.append(Column("usd_per_mtok", "USD/1M tok", _usd))
        if rec.baseline is not None:
            from lab.report.baseline import baseline_cells

            for row in rows:
                row.update(baseline_cells(row))
            cols += [Column(key, title, align="left") for key, title in BASELINE_COLUMNS]
        cols += [Column("config", "measured at", align="left"), Column("why", "why", align="left")]
        if fmt in ("table", "md"):
            if rec.pick is not None:
                click.echo(rec.summary())
                commands = rec.commands() or {}
                for tool in ("llama-server", "llama-cli"):
                    click.echo(f"  {commands[tool]}")
            for note in rec.notes:
                click.echo(f"note: {note}")
            if rec.baseline is not None:
                click.echo(f"baseline: {rec.baseline['label']} ({rec.baseline['method']})")
            click.echo()
        emit(rows, cols, fmt)
    if rec.pick is None:
        click.echo(f"error: {rec.summary()}", err=True)
        # SystemExit, not ctx.exit(): lab.cli.main runs click with standalone_mode=False, which
        # turns ctx.exit(1) into a return value that main() does not pass on.
        raise SystemExit(1)


BASELINE_COLUMNS = (("vs_accuracy", "Δ accuracy vs baseline (95% CI)"), ("vs_verdict", "McNemar"),
                    ("vs_latency", "latency ×"), ("vs_cost", "cost ×"))


def _usd(value: Any) -> str:
    return f"{value:.4f}"


def _limit_title(spec: Any) -> str:
    sign = "≥" if spec.kind == "min" else "≤"
    return f"{spec.label} {sign}"


# --- report -----------------------------------------------------------------------------------


@click.command("report")
@click.option("--model", default=None, help="A model (file name, path or id prefix): its quant ladder, default limits.")
@click.option("--run", "run_id", default=None, help="A stored run id: its limits, preference and baseline.")
@click.option("--machine", default=None, help="Machine id prefix or hostname (default: this machine, else all).")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="report.html (one self-contained file) or report.md (charts as .svg files beside it).")
@db_option
def share_report(model: str | None, run_id: str | None, machine: str | None, output: Path,
                 db_path: Path | None) -> None:
    """Write a report to share: the question and limits, the machine, the verdict table, the
    pick's command line, charts (size against KLD, tg against accuracy, cost against accuracy,
    each with the Pareto front and the baseline) and how each figure was measured.

    With --model the question is the model's ladder under the default limits (PPL ratio at most
    1.05, the smallest quant); with --run, the limits stored with that run. The HTML file needs
    no network to open; Markdown links its charts as SVG files next to it.
    """
    from lab.report.share import build_report, check_output, write_report

    check_output(output)
    store = open_store(db_path)
    built = build_report(store, model=model, run=run_id, machine_id=machine)
    written = write_report(built, output)
    click.echo(f"{built.rec.summary()}")
    click.echo("wrote " + ", ".join(str(p) for p in written))


# --- import -----------------------------------------------------------------------------------


@click.group("import")
@db_option
def import_group() -> None:
    """Import measurements made by other tools into the store."""


@import_group.command("llama-bench")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@db_option
def import_llama_bench(file: Path, db_path: Path | None) -> None:
    """Import llama-bench output (-o json, jsonl, csv or sql) as results.

    The machine is recorded from the file's cpu_info, gpu_info, backends and build_commit only
    (its id starts with "import-"); memory, energy and latency were not measured by llama-bench
    and stay n/a.
    """
    from lab import report

    store = open_store(db_path)
    count = report.import_llama_bench(store, file)
    click.echo(f"imported {count} result{'s' if count != 1 else ''} from {file} into {store.path}; "
               "list them with: rightsizer results --machine import-")


COMMANDS = [compare, recommend, share_report, import_group]
