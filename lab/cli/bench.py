"""``rightsizer bench`` and ``rightsizer results``: llama-bench's flags and table, plus memory,
power and the store."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from lab.cli.db import db_option, open_store
from lab.errors import LabError
from lab.ids import short_id
from lab.params import parse_axis, parse_pairs, parse_words
from lab.cli.output import NA, Column, emit, format_option, human_bytes, human_count, render_table


def _ints(name: str, key: str):
    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
        if value is None:
            return None
        try:
            return parse_axis(key, value, name)
        except LabError as exc:
            raise click.BadParameter(str(exc)) from None
    return convert


def _flash(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    table = {"on": 1, "1": 1, "off": 0, "0": 0, "auto": -1, "-1": -1}
    words = parse_words(value)
    if not words or any(w not in table for w in words):
        raise click.BadParameter("-fa takes on, off or auto (comma list)")
    return [table[w] for w in words]


def _strs(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    return parse_words(value)


def _pg(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[tuple[int, int]]:
    try:
        return [pair for v in value for pair in parse_pairs(v, "-pg")]
    except LabError as exc:
        raise click.BadParameter(str(exc)) from None


def _ts(row: dict[str, Any]) -> str:
    if row.get("avg_ts") is None:
        return NA
    text = f"{row['avg_ts']:.2f} ± {(row.get('stddev_ts') or 0):.2f}"
    flags = [flag for flag in ("noisy", "swapped", "throttled") if row.get(flag)]
    return text + f" ({', '.join(flags)})" if flags else text


def _ms(value: Any) -> str:
    return f"{value:.1f}"


BENCH_COLUMNS = [
    Column("model_type", "model", align="left"),
    Column("model_size", "weights", human_bytes),
    Column("model_n_params", "params", human_count),
    Column("backends", "backend", align="left"),
    Column("n_threads", "threads"),
    Column("n_gpu_layers", "ngl"),
    Column("test", "test"),
    Column("ts", "t/s"),
    Column("peak_rss_bytes", "peak RSS", human_bytes),
    Column("peak_vram_bytes", "VRAM", human_bytes),
    Column("j_per_token", "J/tok", lambda v: f"{v:.4f}"),
]
CHAT_COLUMNS = [
    Column("model_type", "model", align="left"),
    Column("n_prompts", "prompts"),
    Column("ttft_ms", "TTFT ms", _ms),
    Column("itl_p50_ms", "ITL p50 ms", _ms),
    Column("itl_p95_ms", "ITL p95 ms", _ms),
    Column("itl_p99_ms", "ITL p99 ms", _ms),
    Column("e2e_ms", "e2e ms", _ms),
    Column("n_generated", "tokens"),
    Column("ts", "t/s"),
    Column("peak_rss_bytes", "peak RSS", human_bytes),
    Column("chat_template", "chat template", align="left"),
]
# csv has one header for every row: the chat test's template rides at the end (empty elsewhere)
CSV_COLUMNS = [*BENCH_COLUMNS, CHAT_COLUMNS[-1]]


def _secs(value: Any) -> str:
    return f"{value:.3f}"


def _speed(value: Any) -> str:
    return f"{value:.2f}"


# llama-batched-bench's table, plus memory
BATCHED_COLUMNS = [
    Column("model_type", "model", align="left"),
    Column("n_threads", "threads"),
    Column("n_prompt", "PP"),
    Column("n_gen", "TG"),
    Column("n_seq", "B"),
    Column("n_kv", "N_KV"),
    Column("t_pp", "T_PP s", _secs),
    Column("s_pp", "S_PP t/s", _speed),
    Column("t_tg", "T_TG s", _secs),
    Column("s_tg", "S_TG t/s", _speed),
    Column("t_total", "T s", _secs),
    Column("s_total", "S t/s", _speed),
    Column("peak_rss_bytes", "peak RSS", human_bytes),
    Column("peak_vram_bytes", "VRAM", human_bytes),
    Column("kv_bytes", "KV cache", human_bytes),
]
BATCHED_NOTE = ("KV cache: the KV buffer llama.cpp allocates for the row (N_KV rounded up to 256 cells "
                "per sequence), computed from the GGUF header")


RSS_MARK = "*"
RSS_NOTE = ("peak RSS since the engine started: the per-test reset (/proc/self/clear_refs) "
            "failed here, so a test's figure can include an earlier test's peak")


def json_record(row: dict[str, Any], machine: dict[str, Any] | None) -> dict[str, Any]:
    """A result in llama-bench's JSON shape plus Rightsizer's figures."""
    rec = dict(row)
    for key in ("samples_ns", "samples_ts", "energy_by_source", "energy_samples_j", "samples_pp_ns", "samples_tg_ns"):
        if isinstance(rec.get(key), str):
            rec[key] = json.loads(rec[key])
    rec["noisy"] = bool(rec.get("noisy"))
    for flag in ("swapped", "throttled", "clocks_dropped"):  # NULL stays null: not measured
        rec[flag] = None if rec.get(flag) is None else bool(rec[flag])
    rec["rss_reset_failed"] = bool(rec.get("rss_reset_failed"))
    if machine:
        for key in ("cpu_info", "gpu_info", "build_commit", "backends"):
            rec.setdefault(key, machine.get(key))
            if rec.get(key) is None:
                rec[key] = machine.get(key)
    rec.pop("ts", None)
    if rec.get("n_kv") is not None:  # a batched row also speaks llama-batched-bench's jsonl
        from lab.engine.batched import jsonl_keys

        rec.update(jsonl_keys(rec))
    return rec


class _Progress:
    """One status line on stderr (only when stderr is a terminal): test, repetition, live t/s
    and an ETA for the whole run, from the speeds measured so far (pp and tg separately)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.model = ""
        self.n_runs = 1
        self.run_index = 0
        self.items: list[dict[str, Any]] = []
        self.reps = 0
        self.index = 0
        self.last_ts: float | None = None
        self.rep_s: dict[int, list[float]] = {}
        self.per_token_s: dict[str, float] = {}  # "pp" / "tg" seconds per token

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "run_start":
            self.model, self.n_runs, self.run_index = event["model_filename"], event["n_runs"], event["index"]
            self.items, self.reps, self.rep_s = event.get("items", []), event.get("repetitions", 1), {}
        elif kind == "test_start":
            self.index, self.last_ts = event["index"], None
            self._show(0)
        elif kind == "rep":
            self.rep_s.setdefault(event["index"], []).append(event["ns"] / 1e9)
            self.last_ts = event.get("ts")
            self._learn(event)
            self._show(event["rep"] + 1)
        elif kind in ("result", "run_end"):
            self.clear()

    def _learn(self, event: dict[str, Any]) -> None:
        item = self.items[event["index"]] if event["index"] < len(self.items) else {}
        n_p, n_g = item.get("n_prompt", 0), item.get("n_gen", 0)
        if item.get("kind") == "chat" or not event.get("ns"):
            return
        if n_p and not n_g:
            self.per_token_s["pp"] = event["ns"] / 1e9 / n_p
        elif n_g and not n_p:
            self.per_token_s["tg"] = event["ns"] / 1e9 / n_g

    def _eta(self, done: int) -> str:
        total, unknown = 0.0, False
        for i in range(self.index, len(self.items)):
            item = self.items[i]
            left = self.reps - done if i == self.index else self.reps + 1  # + warm-up
            measured = self.rep_s.get(i)
            if measured:
                total += left * sum(measured) / len(measured)
                continue
            if item.get("kind") == "chat":
                unknown = True
                continue
            pp, tg = self.per_token_s.get("pp"), self.per_token_s.get("tg")
            need_pp, need_tg = item.get("n_prompt", 0) + item.get("n_depth", 0), item.get("n_gen", 0)
            unknown |= bool((need_pp and pp is None) or (need_tg and tg is None))
            total += left * ((need_pp * pp if need_pp and pp else 0.0) + (need_tg * tg if need_tg and tg else 0.0))
        if unknown and total == 0:
            return "n/a"
        return f"{'>' if unknown else ''}{total:.0f}s"

    def _show(self, done: int) -> None:
        if not self.enabled:
            return
        test = self.items[self.index]["test"] if self.index < len(self.items) else "?"
        speed = f"{self.last_ts:.1f} t/s" if self.last_ts else "warming up"
        line = (f"[{self.run_index + 1}/{self.n_runs}] {self.model} test {self.index + 1}/{len(self.items)} "
                f"{test} rep {done}/{self.reps}  {speed}  ETA {self._eta(done)}")
        sys.stderr.write("\r\033[K" + line[:200])
        sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


@click.command()
@click.argument("models", nargs=-1, required=True)
@click.option("-p", "--n-prompt", default="512", callback=_ints("-p", "n_prompt"), help="Prompt sizes (pp tests), comma list.", show_default=True)
@click.option("-n", "--n-gen", default="128", callback=_ints("-n", "n_gen"), help="Generation sizes (tg tests), comma list.", show_default=True)
@click.option("-pg", "pg", multiple=True, callback=_pg, help="Prompt+generation test P,N (repeatable; or several pairs separated by ';').")
@click.option("-d", "--n-depth", default="0", callback=_ints("-d", "n_depth"), help="KV cache depth before each test, comma list.", show_default=True)
@click.option("-r", "--repetitions", default=5, show_default=True, type=int, help="Timed repetitions after one warm-up.")
@click.option("-t", "--threads", default=None, callback=_ints("-t", "threads"), help="Threads, comma list (default: physical cores).")
@click.option("-ngl", "--n-gpu-layers", default="-1", callback=_ints("-ngl", "n_gpu_layers"), help="Layers offloaded to the GPU (-1: all), comma list.", show_default=True)
@click.option("-b", "--batch-size", default="2048", callback=_ints("-b", "n_batch"), help="Logical batch size, comma list.", show_default=True)
@click.option("-ub", "--ubatch-size", default="512", callback=_ints("-ub", "n_ubatch"), help="Physical batch size, comma list.", show_default=True)
@click.option("-fa", "--flash-attn", default="auto", callback=_flash, help="on, off or auto, comma list.", show_default=True)
@click.option("-ctk", "--cache-type-k", default="f16", callback=_strs, help="KV cache type for K, comma list.", show_default=True)
@click.option("-ctv", "--cache-type-v", default="f16", callback=_strs, help="KV cache type for V, comma list.", show_default=True)
@click.option("-mmp", "--mmap", default="1", callback=_ints("-mmp", "mmap"), help="Memory-map the model (0/1), comma list.", show_default=True)
@click.option("--repack", default=None, callback=_ints("--repack", "repack"), help="llama.cpp extra CPU buffer types (AMX/repacked weights), 0/1 comma list (default: on where a probe shows they run).")
@click.option("--chat", is_flag=True, help="Add the chat latency test (real prompts, greedy).")
@click.option("--prompts", "prompts_file", type=click.Path(path_type=Path), default=None, help="JSONL prompts for --chat (default: the bundled set).")
@click.option("--chat-max-tokens", default=128, show_default=True, type=int, help="Tokens to generate per chat prompt at most.")
@click.option("--no-warmup", is_flag=True, help="Skip the untimed warm-up run.")
@click.option("--force", is_flag=True, help="Run even when the memory estimate exceeds available memory.")
@click.option("--timeout", type=float, default=None, help="Stop a model's run after this many seconds.")
@click.option("--label", default=None, help="A note stored with the run.")
@click.option("--sustained", "sustained_s", type=float, default=None, metavar="SECONDS", help="Run each tg test back to back for SECONDS and report first- vs last-minute t/s (heat).")
@click.option("--batched", is_flag=True, help="Many sequences in one context, as llama-batched-bench (-npp/-ntg/-npl; -r defaults to 1).")
@click.option("-npp", "n_pp", default="128", callback=_ints("-npp", "n_pp"), help="--batched: prompt tokens per sequence, comma list.", show_default=True)
@click.option("-ntg", "n_tg", default="128", callback=_ints("-ntg", "n_tg"), help="--batched: tokens generated per sequence, comma list.", show_default=True)
@click.option("-npl", "n_pl", default="1,2,4,8", callback=_ints("-npl", "n_pl"), help="--batched: sequences decoded together (B), comma list.", show_default=True)
@click.option("-pps", "pp_shared", is_flag=True, help="--batched: one prompt shared by all sequences (decoded once, then copied).")
@click.option("-kvu", "kv_unified", is_flag=True, help="--batched: one unified KV buffer for all sequences.")
@click.option("-c", "--ctx-size", "batched_ctx", type=int, default=None, help="--batched: most context a row may use (default: the model's training context).")
@format_option()
@db_option
def bench(models: tuple[str, ...], n_prompt: list[int], n_gen: list[int], pg: list[tuple[int, int]],
          n_depth: list[int], repetitions: int, threads: list[int] | None, n_gpu_layers: list[int],
          batch_size: list[int], ubatch_size: list[int], flash_attn: list[int], cache_type_k: list[str],
          cache_type_v: list[str], mmap: list[int], repack: list[int] | None, chat: bool,
          prompts_file: Path | None, chat_max_tokens: int, no_warmup: bool, force: bool,
          timeout: float | None, label: str | None, sustained_s: float | None, batched: bool, n_pp: list[int],
          n_tg: list[int], n_pl: list[int], pp_shared: bool, kv_unified: bool, batched_ctx: int | None, fmt: str,
          db_path: Path | None) -> None:
    """Benchmark MODELS (paths, library names or 'demo') with llama-bench's tests.

    ``endpoint:NAME`` (see ``rightsizer endpoints``) runs the chat test through the endpoint's
    streaming API: TTFT, inter-token latency and t/s from the stream's own timing.

    Every option takes a comma list; the run covers the cartesian product. Each model instance
    runs in its own engine process under the monitor; every figure is stored as it arrives.
    With --batched, the tests are llama-batched-bench's instead: B sequences in one context.
    """
    from lab.bench import BenchOptions, plan, run_bench
    from lab.endpoints import endpoint_name
    from lab.engine.protocol import FALLBACK_TEMPLATE, fallback_warning

    remote = [m for m in models if endpoint_name(m)]
    if remote and not chat:
        raise click.UsageError(f"{remote[0]} is an endpoint: it has the chat test only; add --chat")
    local = [m for m in models if not endpoint_name(m)]
    repetitions = _batched_flags(batched, repetitions)

    options = BenchOptions(
        models=local, n_prompt=n_prompt, n_gen=n_gen, pg=pg, n_depth=n_depth,
        repetitions=repetitions, threads=threads or [], n_gpu_layers=n_gpu_layers, n_batch=batch_size,
        n_ubatch=ubatch_size, flash_attn=flash_attn, type_k=cache_type_k, type_v=cache_type_v, mmap=mmap,
        repack=repack, chat=chat, prompts_file=prompts_file, chat_max_tokens=chat_max_tokens,
        warmup=not no_warmup, force=force, timeout=timeout, label=label, sustained_s=sustained_s,
        batched=batched, n_pp=n_pp, n_tg=n_tg, n_pl=n_pl, pp_shared=pp_shared, kv_unified=kv_unified,
        batched_ctx=batched_ctx,
    )
    plans = plan(options) if local else []
    store = open_store(db_path)
    progress = _Progress(sys.stderr.isatty())
    printer = _RowPrinter(fmt, BATCHED_COLUMNS if batched else BENCH_COLUMNS)

    warned: set[str] = set()

    def on_event(event: dict[str, Any]) -> None:
        progress(event)
        if event["event"] == "result":
            printer.add(event["row"])
            name = event["row"]["model_filename"]
            if event["row"].get("chat_template") == FALLBACK_TEMPLATE and name not in warned:
                warned.add(name)
                progress.clear()
                click.echo(fallback_warning(name), err=True)
        elif event["event"] == "loaded" and event.get("repack_warning"):
            click.echo(f"warning: {event['repack_warning']}", err=True)
        elif event["event"] == "run_end" and event["status"] == "failed":
            click.echo(f"error: run {short_id(event['run_id'])} failed: {event['error']}", err=True)

    try:
        outcome = run_bench(options, store, on_event=on_event, plans=plans) if local else None
        remote_runs = _bench_endpoints(store, remote, options, on_event)
    finally:
        progress.clear()
        printer.finish(store)
    run_ids = (outcome.run_ids if outcome else []) + [r["run_id"] for r in remote_runs]
    n_results = (len(outcome.results) if outcome else 0) + sum(1 for r in remote_runs if r["row"])
    click.echo(f"stored {n_results} results in {store.path} (run {', '.join(short_id(r) for r in run_ids)})", err=True)
    if (outcome and outcome.status != "ok") or any(r["status"] != "ok" for r in remote_runs):
        raise SystemExit(1)


def _bench_endpoints(store: Any, names: list[str], options: Any, on_event: Any) -> list[dict[str, Any]]:
    """The chat test of each ``endpoint:NAME``, streamed through its API."""
    from lab.endpoints import endpoint_name, get_endpoint, run_chat_bench

    endpoints = [get_endpoint(store, endpoint_name(n) or "") for n in names]  # unknown names fail first
    return [run_chat_bench(store, e, prompts_file=options.prompts_file, max_tokens=options.chat_max_tokens,
                           warmup=options.warmup, timeout_s=options.timeout or 60.0, label=options.label,
                           on_event=on_event) for e in endpoints]


def _batched_flags(batched: bool, repetitions: int) -> int:
    """Refuse flags of the other mode; the repetitions to run (llama-batched-bench runs each
    row once, so --batched defaults to 1)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    given = {name for name in ctx.params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    own = {"n_pp": "-npp", "n_tg": "-ntg", "n_pl": "-npl", "pp_shared": "-pps", "kv_unified": "-kvu", "batched_ctx": "-c"}
    other = {"n_prompt": "-p", "n_gen": "-n", "pg": "-pg", "n_depth": "-d", "chat": "--chat"}
    if batched and given & other.keys():
        flags = ", ".join(other[k] for k in other if k in given)
        raise LabError(f"--batched runs llama-batched-bench's tests; {flags} belong to single-sequence tests (use -npp/-ntg/-npl)")
    if not batched and given & own.keys():
        flags = ", ".join(own[k] for k in own if k in given)
        raise LabError(f"{flags} need --batched")
    if batched and "repetitions" not in given:
        return 1
    return repetitions


class _RowPrinter:
    """Prints results as they complete (table/md/csv/jsonl); json prints once at the end."""

    def __init__(self, fmt: str, columns: list[Column] | None = None):
        self.fmt = fmt
        self.columns = columns or BENCH_COLUMNS
        self.rows: list[dict[str, Any]] = []
        self.widths: list[int] | None = None

    def add(self, row: dict[str, Any]) -> None:
        row = dict(row, ts=_ts(row))
        self.rows.append(row)
        if self.fmt == "jsonl":
            click.echo(json.dumps(json_record(row, _machine()), default=str))
        elif self.fmt in ("table", "md") and row["test"] != "chat":
            self._stream_table_row(row)
        elif self.fmt == "csv":
            if len(self.rows) == 1:
                click.echo(",".join(c.key for c in self._csv_columns()))
            click.echo(",".join("" if row.get(c.key) is None else str(row.get(c.key)).replace(",", ";")
                                for c in self._csv_columns()))

    def _csv_columns(self) -> list[Any]:
        # single-sequence rows add the chat template (empty for pp/tg) as the last column
        return CSV_COLUMNS if self.columns is BENCH_COLUMNS else self.columns

    def _stream_table_row(self, row: dict[str, Any]) -> None:
        cols = self._columns()
        cells = [c.render(row) + (RSS_MARK if c.key == "peak_rss_bytes" and row.get("rss_reset_failed") else "")
                 for c in cols]
        if self.widths is None:
            self.widths = [max(len(c.title), len(v), 8) for c, v in zip(cols, cells)]
            self.widths[0] = max(self.widths[0], 24)
            if cols is BENCH_COLUMNS:
                self.widths[7] = max(self.widths[7], 20)
            click.echo(self._line([c.title for c in cols], cols))
            click.echo("| " + " | ".join(("-" * (w - 1) + ":") if c.align == "right" else "-" * w for w, c in zip(self.widths, cols)) + " |")
        click.echo(self._line(cells, cols))

    def _line(self, values: list[str], cols: list[Column]) -> str:
        assert self.widths is not None
        parts = [v.rjust(w) if c.align == "right" else v.ljust(w) for v, w, c in zip(values, self.widths, cols)]
        return "| " + " | ".join(parts) + " |"

    def _columns(self) -> list[Column]:
        return self.columns

    def finish(self, store: Any) -> None:
        chats = [r for r in self.rows if r["test"] == "chat"]
        if self.fmt in ("table", "md") and chats:
            click.echo()
            click.echo(render_table(chats, CHAT_COLUMNS))
        if self.fmt in ("table", "md") and any(r.get("rss_reset_failed") for r in self.rows):
            click.echo(f"{RSS_MARK} {RSS_NOTE}")
        for row in self.rows:
            if self.fmt in ("table", "md") and row.get("sustained_s"):
                click.echo(sustained_line(row))
        if self.fmt in ("table", "md") and self.columns is BATCHED_COLUMNS and self.rows:
            click.echo(BATCHED_NOTE)
        if self.fmt == "json":
            click.echo(json.dumps([json_record(r, _machine()) for r in self.rows], indent=2, default=str))


def sustained_line(row: dict[str, Any]) -> str:
    """A sustained test in one sentence: first vs last window t/s, decay, clocks."""
    def num(value: Any, spec: str) -> str:
        return NA if value is None else format(value, spec)

    window = row.get("sustained_window_s")
    span = "minute" if window == 60 else f"{num(window, '.3g')} s"
    dropped = {None: f"{NA} (no CPU clock readable)", 0: "no", 1: "yes"}[row.get("clocks_dropped")]
    return (f"sustained {row['test']} for {row['sustained_s']:.0f} s: first {span} {num(row.get('sustained_first_ts'), '.2f')} t/s, "
            f"last {span} {num(row.get('sustained_last_ts'), '.2f')} t/s, decay {num(row.get('sustained_decay_pct'), '.1f')}%, "
            f"clocks dropped: {dropped}")


_machine_cache: dict[str, Any] | None = None


def _machine() -> dict[str, Any] | None:
    global _machine_cache
    if _machine_cache is None:
        from lab.hardware import fingerprint

        _machine_cache = fingerprint()
    return _machine_cache


RESULT_COLUMNS = [
    Column("run_id", "run", short_id, align="left"),
    Column("test_time", "time", lambda v: v[:19].replace("T", " "), align="left"),
    Column("hostname", "machine", align="left"),
    Column("model_filename", "model file", align="left"),
    Column("file_type", "quant", align="left"),
    Column("n_threads", "threads"),
    Column("n_gpu_layers", "ngl"),
    Column("test", "test"),
    Column("ts", "t/s"),
    Column("peak_rss_bytes", "peak RSS", human_bytes),
    Column("est_memory_bytes", "est. mem", human_bytes),
    Column("est_rss_ratio", "est/RSS", lambda v: f"{v:.2f}"),
    Column("peak_vram_bytes", "VRAM", human_bytes),
    Column("j_per_token", "J/tok", lambda v: f"{v:.4f}"),
]
RUN_COLUMNS = [
    Column("id", "run", short_id, align="left"),
    Column("kind", "kind", align="left"),
    Column("started_at", "started", lambda v: v[:19].replace("T", " "), align="left"),
    Column("hostname", "machine", align="left"),
    Column("model_filename", "model file", align="left"),
    Column("status", "status", align="left"),
    Column("peak_rss_bytes", "peak RSS", human_bytes),
    Column("error", "error", align="left"),
]


@click.command()
@click.option("--model", default=None, help="Model file name (substring) or model id prefix.")
@click.option("--test", default=None, help="Test name, e.g. tg128 (a trailing * matches a prefix).")
@click.option("--machine", default=None, help="Machine id prefix or hostname.")
@click.option("--run", "run_id", default=None, help="Run id prefix.")
@click.option("--quant", default=None, help="Quantization, e.g. Q4_K_M.")
@click.option("--runs", "show_runs", is_flag=True, help="List runs (status, errors) instead of results.")
@click.option("--limit", type=int, default=None, help="Show at most this many rows (newest).")
@format_option()
@db_option
def results(model: str | None, test: str | None, machine: str | None, run_id: str | None, quant: str | None,
            show_runs: bool, limit: int | None, fmt: str, db_path: Path | None) -> None:
    """List stored results (or runs) across runs and machines."""
    store = open_store(db_path)
    if show_runs:
        rows = store.runs(model=model, machine=machine, run=run_id, limit=limit)
        emit(rows, RUN_COLUMNS, fmt)
        return
    rows = store.results(model=model, test=test, machine=machine, run=run_id, quant=quant,
                         order="test_time", descending=limit is not None, limit=limit)
    if limit is not None:
        rows.reverse()
    from lab.gguf_info import est_rss_ratio

    rows = [dict(r, ts=_ts(r), est_rss_ratio=est_rss_ratio(r)) for r in rows]
    machines = {m["id"]: m for m in store.query("select * from machines")}
    emit(rows, RESULT_COLUMNS, fmt, json_rows=[json_record(r, machines.get(r["machine_id"])) for r in rows])


COMMANDS = [bench, results]
