"""``rightsizer models list|info|rm``: the local library, read from GGUF headers only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lab.cli.db import db_option
from lab.cli.output import Column, emit, format_option, human_bytes, human_count


@click.group()
@db_option
def models() -> None:
    """The model library: local GGUF files, the Hugging Face cache and the demo model."""


def _fits(total: int, available: int) -> str:
    return "yes" if total <= available else "no"


LIST_COLUMNS = [
    Column("name", "name", align="left"),
    Column("source", "source", align="left"),
    Column("arch", "arch", align="left"),
    Column("model_n_params", "params", human_count),
    Column("file_type", "quant", align="left"),
    Column("file_size", "file size", human_bytes),
    Column("est_memory_bytes", "est. mem", human_bytes),
    Column("fits", "fits", align="left"),
]


@models.command("list")
@click.option("-c", "--ctx", "n_ctx", default=4096, show_default=True, type=int, help="Context for the memory estimate.")
@format_option(choices=("table", "md", "csv", "json", "jsonl"))
@db_option
def list_models(n_ctx: int, fmt: str) -> None:
    """Every local model with its header figures and a memory estimate."""
    import psutil

    from lab import library
    from lab.errors import ModelError
    from lab.gguf_info import estimate_memory, inspect

    available = psutil.virtual_memory().available
    rows: list[dict[str, Any]] = []
    for m in library.scan():
        row: dict[str, Any] = {**m.to_dict(), "file_size": m.size}
        try:
            s = inspect(m.path)
        except ModelError as exc:
            row.update(error=str(exc), fits=None)
            rows.append(row)
            continue
        est = estimate_memory(s, min(n_ctx, s.n_ctx_train or n_ctx))
        row.update(
            arch=s.arch, model_n_params=s.model_n_params, file_type=s.file_type, n_layer=s.n_layer,
            n_ctx_train=s.n_ctx_train, est_memory_bytes=est.host_bytes, n_ctx=est.n_ctx,
            fits=_fits(est.host_bytes, available),
        )
        rows.append(row)
    emit(rows, LIST_COLUMNS, fmt)


@models.command("info")
@click.argument("model")
@click.option("-c", "--ctx", "n_ctx", default=4096, show_default=True, type=int, help="Context for the memory estimate.")
@click.option("-ngl", "--n-gpu-layers", default=0, type=int, help="Layers offloaded to the GPU, for the estimate.")
@click.option("-ctk", "--cache-type-k", default="f16", show_default=True)
@click.option("-ctv", "--cache-type-v", default="f16", show_default=True)
@click.option("--metadata", "show_metadata", is_flag=True, help="Also print every GGUF metadata key.")
@format_option(choices=("table", "json"))
@db_option
def info(model: str, n_ctx: int, n_gpu_layers: int, cache_type_k: str, cache_type_v: str,
         show_metadata: bool, fmt: str) -> None:
    """A model's GGUF header (no weights loaded) and its memory estimate at -c tokens."""
    import json

    import psutil

    from lab import library
    from lab.gguf_info import estimate_memory, read_file_header, summarize

    local = library.resolve(model)
    header = read_file_header(local.path)
    s = summarize(header, local.path)
    est = estimate_memory(s, n_ctx, type_k=cache_type_k, type_v=cache_type_v, n_gpu_layers=n_gpu_layers)
    available = psutil.virtual_memory().available
    record: dict[str, Any] = {
        **s.to_dict(), "source": local.source, "repo": local.repo,
        "memory_estimate": est.to_dict(), "available_bytes": available,
        "fits": est.host_bytes <= available,
    }
    if show_metadata or fmt == "json":
        record["metadata"] = {k: v for k, v in header.metadata.items() if k != "tokenizer.chat_template"}
    if fmt == "json":
        click.echo(json.dumps(record, indent=2, default=str))
        return
    na = "n/a"
    lines = [
        ("file", str(local.path)),
        ("name", s.name or na),
        ("architecture", s.arch),
        ("parameters", f"{human_count(s.model_n_params)} ({s.model_n_params})"),
        ("file type", s.file_type),
        ("file size", human_bytes(s.file_size)),
        ("weights", human_bytes(s.model_size)),
        ("blocks", s.n_layer if s.n_layer is not None else na),
        ("embedding", s.n_embd if s.n_embd is not None else na),
        ("heads / KV heads", f"{s.n_head if s.n_head is not None else na} / {s.n_head_kv if s.n_head_kv is not None else na}"),
        ("training context", s.n_ctx_train if s.n_ctx_train is not None else na),
        ("vocabulary", s.n_vocab if s.n_vocab is not None else na),
        ("chat template", "yes" if s.has_chat_template else "no"),
        ("tensor types", ", ".join(f"{k} x{v}" for k, v in sorted(s.tensor_types.items()))),
        (f"memory at -c {n_ctx}", f"{human_bytes(est.host_bytes)} host"
            + (f" + {human_bytes(est.gpu_weights_bytes)} GPU" if est.gpu_weights_bytes else "")),
        ("  weights", human_bytes(est.weights_bytes)),
        (f"  KV cache ({cache_type_k}/{cache_type_v})", human_bytes(est.kv_bytes)),
        ("  compute buffer", human_bytes(est.compute_bytes)),
        ("  runtime", human_bytes(est.overhead_bytes)),
        ("available now", f"{human_bytes(available)} ({'fits' if record['fits'] else 'does NOT fit'})"),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        click.echo(f"{key.ljust(width)}  {value}")
    if show_metadata:
        click.echo()
        for key, value in sorted(record["metadata"].items()):
            click.echo(f"{key}: {value}")


@models.command("rm")
@click.argument("model")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Delete without asking.")
@db_option
def rm(model: str, assume_yes: bool, db_path: Path | None) -> None:
    """Delete a model's files: what the Library's d key deletes, after the same plan.

    MODEL is a library name or a path. A link is removed, never the file it points to; in the
    Hugging Face cache a blob goes only when no other snapshot uses it. Prints what is removed
    and what is kept, then asks (no answer counts as no) unless --yes. Measurements are kept.
    """
    from lab import library
    from lab.cli.db import open_store
    from lab.errors import LabError

    local = _model_to_remove(model)
    plan = library.deletion_plan(local)
    if not plan.allowed:
        raise LabError(plan.reason or f"{plan.entry_name} cannot be deleted")
    for line in plan.lines(human_bytes):
        click.echo(line)
    if not assume_yes:
        try:
            yes = click.confirm(f"Delete {plan.entry_name}?", default=False, err=True)
        except click.Abort:  # no stdin, or it ended: that is no
            yes = False
        if not yes:
            click.echo("Nothing deleted.", err=True)
            click.get_current_context().exit(1)
    store = open_store(db_path)
    try:
        library.delete_model(plan, store, library.known_model_id(store, local))
    finally:
        store.close()
    click.echo(f"Deleted {plan.entry_name}.")


def _model_to_remove(arg: str) -> Any:  # -> library.LocalModel
    """A path is taken as given (a link stays a link, unlike ``library.resolve``); anything else
    is a library name."""
    import os

    from lab import library
    from lab.errors import ModelError

    path = Path(arg).expanduser()
    if path.is_symlink() or path.is_file():
        return library.LocalModel(name=path.name, path=Path(os.path.abspath(path)), source="path",
                                  size=path.lstat().st_size)
    if path.is_dir():
        raise ModelError(f"{arg} is a directory; give a .gguf file inside it")
    return library.resolve(arg)


COMMANDS = [models]
