"""``rightsizer models search|files|pull|catalog``: GGUF models from the Hugging Face Hub.

Thin faces over :mod:`lab.hub` and :mod:`lab.catalog`; huggingface_hub and httpx are imported
only inside the commands so ``rightsizer --help`` stays instant.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from lab.cli.db import db_option, open_store
from lab.cli.output import Column, emit, format_option, human_bytes, human_count


def _date(value: str | None) -> str:
    return value[:10] if value else "n/a"


SEARCH_COLUMNS = [
    Column("repo_id", "repo", align="left"),
    Column("downloads", "downloads"),
    Column("likes", "likes"),
    Column("last_modified", "updated", _date, align="left"),
    Column("n_params", "params", human_count),
]


@click.command("search")
@click.argument("query")
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(1, 500),
              help="How many repositories to list.")
@format_option(choices=("table", "md", "csv", "json", "jsonl"))
@db_option
def search_cmd(query: str, limit: int, fmt: str) -> None:
    """GGUF repositories on the Hugging Face Hub matching QUERY, most downloaded first."""
    from lab import hub

    hits = hub.search(query, limit)
    if not hits and fmt not in ("json", "jsonl"):
        click.echo(f"No GGUF repositories match '{query}'.", err=True)
        return
    emit([h.to_dict() for h in hits], SEARCH_COLUMNS, fmt)


def _fits_text(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "NO")


FILES_COLUMNS = [
    Column("path", "file", align="left"),
    Column("quant", "quant", align="left"),
    Column("header_quant", "header", align="left"),
    Column("n_parts", "parts"),
    Column("size", "file size", human_bytes),
    Column("n_ctx", "ctx"),
    Column("estimate_bytes", "est. memory", human_bytes),
    Column("fits", "fits", align="left"),
    Column("basis", "estimate from", align="left"),
]


@click.command("files")
@click.argument("repo")
@click.option("-c", "--ctx", "n_ctx", default=4096, show_default=True, type=click.IntRange(1, None),
              help="Context (tokens) for the memory estimate.")
@click.option("-ngl", "--n-gpu-layers", default=0, show_default=True, type=int,
              help="Layers offloaded to the GPU, for the estimate.")
@click.option("--revision", default=None, help="Branch, tag or commit (default: main).")
@click.option("--all-headers", is_flag=True,
              help="Read every file's header (confirms each quant); default: one header per repo.")
@format_option(choices=("table", "md", "csv", "json", "jsonl"))
@db_option
def files_cmd(repo: str, n_ctx: int, n_gpu_layers: int, revision: str | None, all_headers: bool, fmt: str) -> None:
    """Every GGUF file in REPO with its quant, size and memory at -c tokens, before downloading.

    The estimate comes from the GGUF header, read with an HTTP Range request (the first few
    hundred KiB, not the file); when that fails it falls back to the file size and says so.
    """
    from lab import hub

    checks = hub.fit_check(repo, None, n_ctx, revision=revision, probe_all=all_headers,
                           n_gpu_layers=n_gpu_layers)
    rows: list[dict[str, Any]] = [c.to_dict() for c in checks]
    table_rows = [{**r, "fits": _fits_text(r["fits"])} for r in rows]
    emit(table_rows, FILES_COLUMNS, fmt, json_rows=rows)
    if fmt in ("json", "jsonl", "csv"):
        return
    if not checks:
        click.echo(f"{repo} has no GGUF files.", err=True)
        return
    budget = checks[0].budget
    fetched = sum(c.bytes_fetched for c in checks)
    probed = [c for c in checks if c.basis == "header"]
    lines = []
    if probed:
        lines.append(f"Read {len(probed)} header(s) with Range requests: {human_bytes(fetched)} fetched "
                     f"instead of {human_bytes(sum(c.file.size for c in probed))}.")
    mismatched = [c for c in checks if c.quant_confirmed is False]
    for c in mismatched:
        lines.append(f"{c.file.path}: the name says {c.file.quant}, the header says {c.header_quant}.")
    for c in checks:
        if c.basis == "file size" and c.note:
            lines.append(f"{c.file.path}: {c.note}.")
    capped = sorted({c.n_ctx for c in checks if c.estimate is not None and c.n_ctx < n_ctx})
    if capped:
        lines.append(f"Context capped at the model's training context ({', '.join(map(str, capped))} tokens).")
    avail = f"{human_bytes(budget.ram_bytes)} RAM available" if budget.ram_bytes is not None else "RAM not readable"
    if budget.vram_bytes:
        avail += f", {human_bytes(budget.vram_bytes)} GPU memory free"
    lines.append(f"Fits: against {avail} now.")
    for line in lines:
        click.echo(line, err=True)


class _ProgressLine:
    """One self-overwriting stderr line: percent, bytes, speed and ETA."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.width = 0
        self.last = 0.0

    def __call__(self, p: Any) -> None:  # p: lab.hub.DownloadProgress
        if not self.enabled:
            return
        now = time.monotonic()
        if p.phase != "done" and now - self.last < 0.2:
            return
        self.last = now
        speed = f"{human_bytes(p.speed_bps)}/s" if p.speed_bps else "--"
        eta = _duration(p.eta_s) if p.eta_s is not None else "--:--"
        part = f" [{p.part}/{p.n_parts}]" if p.n_parts > 1 else ""
        verb = "checking" if p.phase == "verify" else "done" if p.phase == "done" else ""
        text = (f"{p.filename}{part} {p.fraction * 100:5.1f}%  {human_bytes(p.done_bytes)} / "
                f"{human_bytes(p.total_bytes)}  {speed}  ETA {eta} {verb}").rstrip()
        pad = max(self.width - len(text), 0)
        self.width = len(text)
        click.echo("\r" + text + " " * pad, err=True, nl=False)

    def close(self) -> None:
        if self.enabled and self.width:
            click.echo(err=True)


def _duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@click.command("pull")
@click.argument("spec")
@click.option("--revision", default=None, help="Branch, tag or commit (default: main).")
@db_option
def pull_cmd(spec: str, revision: str | None, db_path: Path | None) -> None:
    """Download a GGUF model from the Hub, verify its sha256 and add it to the library.

    SPEC is owner/repo[:QUANT] (default quant Q4_K_M, as llama.cpp's -hf) or
    owner/repo/FILE.gguf. Split models are downloaded whole. An interrupted download resumes
    where it stopped when pulled again. Gated and private repos use $HF_TOKEN or the
    'hf auth login' token.
    """
    from lab import hub

    bar = _ProgressLine()
    try:
        pulled = hub.pull(spec, revision=revision, progress=bar)
    finally:
        bar.close()
    store = open_store(db_path)
    try:
        row = hub.register_pulled(store, pulled)
    finally:
        store.close()
    what = f"{pulled.repo_id}:{pulled.quant}" if pulled.quant else pulled.repo_id
    parts = f", {pulled.n_parts} parts" if pulled.n_parts > 1 else ""
    if pulled.already_cached:
        click.echo(f"{what} was already downloaded ({human_bytes(pulled.size)}{parts}).")
    else:
        resumed = f", resumed after {human_bytes(pulled.resumed_bytes)}" if pulled.resumed_bytes else ""
        click.echo(f"Pulled {what} ({human_bytes(pulled.size)}{parts}{resumed}), sha256 verified.")
    click.echo(f"  file:     {pulled.path}")
    click.echo(f"  commit:   {pulled.commit}")
    click.echo(f"  library:  {row.get('model_type') or row.get('model_filename')} (id {str(row['id'])[:12]})")


CATALOG_COLUMNS = [
    Column("name", "name", align="left"),
    Column("spec", "pull with", align="left"),
    Column("params", "params", align="left"),
    Column("license", "license", align="left"),
    Column("note", "why", align="left"),
]


@click.command("catalog")
@format_option(choices=("table", "md", "csv", "json", "jsonl"))
@db_option
def catalog_cmd(fmt: str) -> None:
    """Suggested small instruct models worth right-sizing (models/catalog.toml)."""
    from lab import catalog

    emit([e.to_dict() for e in catalog.load()], CATALOG_COLUMNS, fmt)


MODEL_COMMANDS = [search_cmd, files_cmd, pull_cmd, catalog_cmd]
