"""Plans: a TOML file that says what to measure, so the same measurements run alike everywhere.

A plan names models (a local path, a library name, ``demo``, or a Hub file pinned to a revision
and a sha256), bench sweeps (the ``rightsizer bench`` flags), a quality measurement, eval suites
and the limits of a verdict (the ``rightsizer recommend`` flags). This module reads and
validates a plan; :mod:`lab.plan_run` checks and runs it; :mod:`lab.bundle` packs it for a
device with no network. Paths in a plan are relative to the plan file's folder.

Every problem is a :class:`PlanError` naming the key, and the line where the file has one.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.params import parse_axis, parse_pairs, parse_words


class PlanError(LabError):
    """A plan file that cannot be read or that holds an unknown key or a bad value."""


# TOML key -> (BenchOptions field, the ``rightsizer bench`` flag it stands for)
BENCH_AXES: dict[str, tuple[str, str]] = {
    "n_prompt": ("n_prompt", "-p"), "n_gen": ("n_gen", "-n"), "n_depth": ("n_depth", "-d"),
    "threads": ("threads", "-t"), "n_gpu_layers": ("n_gpu_layers", "-ngl"), "batch_size": ("n_batch", "-b"),
    "ubatch_size": ("n_ubatch", "-ub"), "mmap": ("mmap", "-mmp"), "repack": ("repack", "--repack"),
}
BENCH_WORDS: dict[str, tuple[str, str]] = {"cache_type_k": ("type_k", "-ctk"), "cache_type_v": ("type_v", "-ctv")}
BENCH_SCALARS: dict[str, type | tuple[type, ...]] = {
    "label": str, "pg": (str, list), "flash_attn": (str, int, list), "repetitions": int, "chat": bool,
    "prompts": str, "chat_max_tokens": int, "warmup": bool, "timeout": (int, float), "force": bool,
}
_FLASH = {"on": 1, "1": 1, "off": 0, "0": 0, "auto": -1, "-1": -1}

MODEL_KEYS = {"name": str, "path": str, "hub": str, "revision": str, "sha256": str}
QUALITY_KEYS: dict[str, type | tuple[type, ...]] = {
    "reference": str, "text": str, "ctx": int, "chunks": int, "threads": int, "n_gpu_layers": int,
    "timeout": (int, float),
}
EVAL_KEYS: dict[str, type | tuple[type, ...]] = {
    "suite": str, "constraint": str, "max_tokens": int, "timeout": (int, float), "limit": int, "ctx": int,
    "threads": int, "n_gpu_layers": int,
}
# The flags of ``rightsizer recommend`` (max_memory takes "2GiB" or a number of bytes).
LIMIT_KEYS: dict[str, type | tuple[type, ...]] = {
    "min_tg": (int, float), "min_pp": (int, float), "max_ttft_ms": (int, float), "max_itl_p95_ms": (int, float),
    "max_memory": (str, int), "max_j_per_token": (int, float), "min_accuracy": (int, float),
    "max_kld": (int, float), "max_ppl_ratio": (int, float), "suite": str, "pp_test": str, "tg_test": str,
}
TOP_KEYS = {"name": str, "description": str, "models": list, "bench": list, "quality": dict, "evals": list,
            "limits": dict}
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class ModelEntry:
    """One ``[[models]]`` entry: exactly one of ``name``, ``path`` or ``hub``."""

    name: str | None = None
    path: Path | None = None  # absolute (resolved against the plan's folder)
    hub: str | None = None  # owner/repo/FILE.gguf
    revision: str | None = None
    sha256: str | None = None

    @property
    def label(self) -> str:
        """How the plan names this model in messages."""
        if self.hub:
            return f"{self.hub}@{(self.revision or '')[:12]}"
        return self.name or (self.path.name if self.path else "?")

    def matches(self, text: str) -> bool:
        return text in (self.name, self.hub, self.label) or (self.path is not None and text in (str(self.path), self.path.name))


@dataclass
class QualitySpec:
    """``[quality]``: every other plan model measured against ``reference``."""

    reference: ModelEntry
    text: Path | None = None
    n_ctx: int = 512
    n_chunks: int | None = None
    n_threads: int | None = None
    n_gpu_layers: int = 0
    timeout: float | None = None


@dataclass
class EvalSpec:
    """One ``[[evals]]`` entry: a suite run on every plan model."""

    suite: str  # a path (absolute) or a bundled suite name
    constraint: str = "on"
    max_tokens: int = 128
    timeout: float = 60.0
    limit: int | None = None
    n_ctx: int | None = None
    n_threads: int | None = None
    n_gpu_layers: int = 0

    @property
    def modes(self) -> list[bool]:
        return {"on": [True], "off": [False], "both": [True, False]}[self.constraint]


@dataclass
class Plan:
    """A validated plan. ``bench`` holds one BenchOptions per sweep, with ``models`` empty
    (the runner fills in one model at a time)."""

    path: Path
    name: str
    models: list[ModelEntry]
    bench: list[Any] = field(default_factory=list)  # lab.bench.BenchOptions
    quality: QualitySpec | None = None
    evals: list[EvalSpec] = field(default_factory=list)
    limits: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.path.parent


# --- where a key is written ------------------------------------------------------------------


def key_lines(text: str) -> dict[tuple[str, int | None, str], int]:
    """``(table, index, key) -> line`` for keys written as ``key = ...`` under a ``[table]`` or
    the index-th ``[[table]]`` (top-level keys: table ""). Enough to point at a mistake; keys
    written as dotted or inline tables are not located."""
    lines: dict[tuple[str, int | None, str], int] = {}
    table, index = "", None
    counts: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[["):
            table = stripped.strip("[] \t").split("#")[0].strip().rstrip("]").strip()
            counts[table] = counts.get(table, -1) + 1
            index = counts[table]
        elif stripped.startswith("["):
            table, index = stripped.split("]")[0].strip("[ \t"), None
        else:
            match = re.match(r'^\s*"?([A-Za-z0-9_.-]+)"?\s*=', line)
            if match:
                lines.setdefault((table, index, match.group(1)), number)
    return lines


class _Checker:
    """Collects the problems of one plan file, each with its key and line."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = key_lines(text)
        self.problems: list[str] = []

    def where(self, table: str, index: int | None, key: str | None) -> str:
        name = table if index is None else f"{table}[{index}]"
        full = ".".join(p for p in (name, key) if p)
        line = self.lines.get((table, index, key or ""))
        if line is None and key is None:
            line = next((n for (t, i, _k), n in sorted(self.lines.items(), key=lambda kv: kv[1])
                         if t == table and i == index), None)
        return f"{self.path.name} line {line}, {full}" if line else f"{self.path.name}, {full or 'top level'}"

    def problem(self, table: str, index: int | None, key: str | None, message: str) -> None:
        self.problems.append(f"{self.where(table, index, key)}: {message}")

    def keys(self, table: str, index: int | None, data: Any, allowed: dict[str, Any]) -> dict[str, Any]:
        """The entries of ``data`` whose key is known and whose value has the right type."""
        if not isinstance(data, dict):
            self.problem(table, index, None, "must be a table")
            return {}
        good = {}
        for key, value in data.items():
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                self.problem(table, index, key, f"unknown key '{key}' (known keys: {known})")
                continue
            kinds = allowed[key]
            kinds = kinds if isinstance(kinds, tuple) else (kinds,)
            if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
                names = " or ".join([{str: "text", int: "an integer", float: "a number", bool: "true/false",
                                      list: "a list", dict: "a table"}[k] for k in kinds])
                self.problem(table, index, key, f"must be {names}, not {value!r}")
                continue
            good[key] = value
        return good

    def guard(self, table: str, index: int | None, key: str, func: Any, *args: Any) -> Any:
        try:
            return func(*args)
        except LabError as exc:
            self.problem(table, index, key, str(exc).rstrip("."))
            return None


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _local(folder: Path, text: str) -> Path:
    # normpath, not resolve(): a Hugging Face snapshot file is a link whose name matters
    path = Path(text).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else folder / path))


def _model(c: _Checker, table: str, index: int | None, data: Any, folder: Path) -> ModelEntry | None:
    good = c.keys(table, index, data, MODEL_KEYS)
    given = [k for k in ("name", "path", "hub") if k in good]
    if len(given) != 1:
        c.problem(table, index, None, "give exactly one of name, path or hub")
        return None
    entry = ModelEntry(name=good.get("name"), revision=good.get("revision"), sha256=good.get("sha256"))
    if "sha256" in good and not _HEX64.match(good["sha256"]):
        c.problem(table, index, "sha256", "must be 64 lower-case hex digits")
    if "path" in good:
        entry.path = _local(folder, good["path"])
    if "hub" in good:
        from lab.hub.names import parse_spec

        spec = c.guard(table, index, "hub", parse_spec, good["hub"])
        if spec is not None and not spec.filename:
            c.problem(table, index, "hub", "name one file, owner/repo/FILE.gguf (a pinned sha256 is one file)")
        entry.hub = good["hub"]
        if not _HEX40.match(good.get("revision") or ""):
            c.problem(table, index, "revision", "a Hub model needs revision = the 40-hex commit it is pinned to")
        if "sha256" not in good:
            c.problem(table, index, "sha256", "a Hub model needs sha256 = the file's sha256")
    elif "revision" in good:
        c.problem(table, index, "revision", "only a hub model takes a revision")
    return entry


def _bench(c: _Checker, index: int, data: Any, folder: Path) -> Any:
    from lab.bench import BenchOptions

    allowed: dict[str, Any] = {k: (str, int, list) for k in (*BENCH_AXES, *BENCH_WORDS)}
    allowed.update(BENCH_SCALARS)
    good = c.keys("bench", index, data, allowed)
    options = BenchOptions(models=[])
    for key, value in good.items():
        if key in BENCH_AXES:
            attr, flag = BENCH_AXES[key]
            parsed = c.guard("bench", index, key, parse_axis, attr, _as_text(value), f"{key} ({flag})")
            if parsed is not None:
                setattr(options, attr, parsed)
        elif key in BENCH_WORDS:
            setattr(options, BENCH_WORDS[key][0], parse_words(_as_text(value)))
        elif key == "pg":
            text = ";".join(_as_text(v) for v in value) if isinstance(value, list) and value and isinstance(value[0], list) else _as_text(value)
            parsed = c.guard("bench", index, key, parse_pairs, text, "pg (-pg)")
            if parsed is not None:
                options.pg = parsed
        elif key == "flash_attn":
            words = parse_words(_as_text(value))
            if not words or any(w not in _FLASH for w in words):
                c.problem("bench", index, key, "takes on, off or auto (a comma list)")
            else:
                options.flash_attn = [_FLASH[w] for w in words]
        elif key == "prompts":
            options.prompts_file = _local(folder, value)
        else:
            setattr(options, {"chat": "chat", "label": "label"}.get(key, key), value)
    if options.repetitions < 1:
        c.problem("bench", index, "repetitions", "must be at least 1")
    if not (any(p > 0 for p in options.n_prompt) or any(n > 0 for n in options.n_gen) or options.pg or options.chat):
        c.problem("bench", index, None, "nothing to run: every test size is 0 (give n_prompt, n_gen, pg or chat)")
    return options


def _quality(c: _Checker, data: Any, folder: Path, models: list[ModelEntry]) -> QualitySpec | None:
    good = c.keys("quality", None, data, QUALITY_KEYS)
    if "reference" not in good:
        c.problem("quality", None, None, "needs reference = a model (a plan model's name, path or hub, or any model)")
        return None
    ref = next((m for m in models if m.matches(good["reference"])
                or (m.path is not None and m.path == _local(folder, good["reference"]))), None)
    if ref is None:
        looks_like_path = good["reference"].lower().endswith(".gguf") or "/" in good["reference"]
        ref = ModelEntry(path=_local(folder, good["reference"])) if looks_like_path else ModelEntry(name=good["reference"])
    spec = QualitySpec(reference=ref, text=_local(folder, good["text"]) if "text" in good else None,
                       n_ctx=good.get("ctx", 512), n_chunks=good.get("chunks"), n_threads=good.get("threads"),
                       n_gpu_layers=good.get("n_gpu_layers", 0), timeout=good.get("timeout"))
    if spec.n_ctx < 8:
        c.problem("quality", None, "ctx", "must be at least 8")
    if spec.n_chunks is not None and spec.n_chunks < 1:
        c.problem("quality", None, "chunks", "must be at least 1")
    return spec


def _eval(c: _Checker, index: int, data: Any, folder: Path) -> EvalSpec | None:
    good = c.keys("evals", index, data, EVAL_KEYS)
    if "suite" not in good:
        c.problem("evals", index, None, "needs suite = a .jsonl file or a bundled suite name ('demo')")
        return None
    suite = good["suite"]
    if suite.endswith(".jsonl") or "/" in suite:
        suite = str(_local(folder, suite))
    spec = EvalSpec(suite=suite, constraint=good.get("constraint", "on"), max_tokens=good.get("max_tokens", 128),
                    timeout=float(good.get("timeout", 60.0)), limit=good.get("limit"), n_ctx=good.get("ctx"),
                    n_threads=good.get("threads"), n_gpu_layers=good.get("n_gpu_layers", 0))
    if spec.constraint not in ("on", "off", "both"):
        c.problem("evals", index, "constraint", "takes on, off or both")
    for key, value, least in (("max_tokens", spec.max_tokens, 1), ("limit", spec.limit, 1)):
        if value is not None and value < least:
            c.problem("evals", index, key, f"must be at least {least}")
    if spec.timeout <= 0:
        c.problem("evals", index, "timeout", "must be more than 0 seconds")
    return spec


def _limits(c: _Checker, data: Any) -> dict[str, Any]:
    good = c.keys("limits", None, data, LIMIT_KEYS)
    for key, value in good.items():
        if isinstance(value, (int, float)) and value < 0:
            c.problem("limits", None, key, "must not be negative")
    if isinstance(good.get("min_accuracy"), (int, float)) and good["min_accuracy"] > 1:
        c.problem("limits", None, "min_accuracy", "is a fraction between 0 and 1 (0.8 means 80%)")
    if isinstance(good.get("max_memory"), str):
        from lab.report import parse_bytes

        c.guard("limits", None, "max_memory", parse_bytes, good["max_memory"])
    return good


def parse_plan(text: str, path: Path) -> Plan:
    """Validate a plan's text (``path`` names it and anchors its relative paths); raises
    :class:`PlanError` listing every problem found."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{path.name} is not valid TOML: {exc}") from None
    c = _Checker(path, text)
    folder = path.parent.resolve()
    top = c.keys("", None, raw, TOP_KEYS)
    models = []
    for index, data in enumerate(top.get("models", [])):
        entry = _model(c, "models", index, data, folder)
        if entry is not None:
            models.append(entry)
    if "models" not in raw:
        c.problem("", None, None, "no [[models]]: name at least one model to measure")
    plan = Plan(path=path, name=top.get("name") or path.stem, models=models, description=top.get("description"),
                raw=raw)
    plan.bench = [_bench(c, i, d, folder) for i, d in enumerate(top.get("bench", []))]
    if "quality" in top:
        plan.quality = _quality(c, top["quality"], folder, models)
    plan.evals = [e for i, d in enumerate(top.get("evals", [])) if (e := _eval(c, i, d, folder)) is not None]
    plan.limits = _limits(c, top["limits"]) if "limits" in top else {}
    if not (plan.bench or plan.quality or plan.evals) and "models" in raw:
        c.problem("", None, None, "nothing to measure: add a [[bench]], [quality] or [[evals]] table")
    if c.problems:
        raise PlanError("; ".join(c.problems))
    return plan


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(f"No such plan file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"Cannot read plan file {path}: {exc}") from None
    return parse_plan(text, path)


# --- plan init --------------------------------------------------------------------------------

_INIT = """\
# A Rightsizer plan: what to measure, so the same measurements run alike on every machine.
#   rightsizer plan check plan.toml    validate it, see what will run and about how long
#   rightsizer run plan.toml           run it; running it again skips what is already stored
#   rightsizer bundle plan.toml DIR    pack it, its models and a wheelhouse for an offline device
# Paths are relative to this file's folder.

name = "{name}"
description = "{description}"

# The models. Give exactly one of:
#   name = "demo"  (the bundled demo), or a name from `rightsizer models list`
#   path = "models/my-model.Q4_K_M.gguf"
#   hub = "owner/repo/FILE.gguf" with revision = "<40-hex commit>" and sha256 = "<64-hex>"
# sha256 is optional for name and path: when given, a file with another sha256 is refused.
[[models]]
{model}

# A bench sweep: the `rightsizer bench` flags, by their long names. A value is a number, a
# list, or a comma list ("128,512"); every list is one axis of the sweep. Repeat [[bench]] for
# another sweep.
[[bench]]
n_prompt = {n_prompt}          # -p: prompt sizes (pp tests)
n_gen = {n_gen}             # -n: generation sizes (tg tests)
# pg = "512,128"          # -pg: prompt+generation pairs ("P,N;P,N")
n_depth = 0            # -d: KV cache depth before each test
repetitions = {repetitions}        # -r: timed repetitions after one warm-up
# threads = "1,2"         # -t: threads (default: physical cores)
n_gpu_layers = -1      # -ngl: layers on the GPU (-1: all)
# batch_size = 2048       # -b
# ubatch_size = 512       # -ub
flash_attn = "auto"    # -fa: on, off or auto
# cache_type_k = "f16"    # -ctk
# cache_type_v = "f16"    # -ctv
# mmap = 1                # -mmp
# chat = true             # the chat latency test (real prompts, greedy)
# chat_max_tokens = 128
# prompts = "prompts.jsonl"
# timeout = 600           # seconds per model at most

# Quality: perplexity and KL divergence of every other plan model against a reference (add
# the reference, e.g. the F16 of a quant ladder, and uncomment).
# [quality]
# reference = "my-model.F16.gguf"   # a plan model's name, path or hub, or any model
# text = "my-text.txt"              # UTF-8 text to score (default: the bundled text)
# ctx = 512                         # chunk size (llama-perplexity's -c)
# chunks = 4                        # only the first N chunks (omit for all)

# An eval suite: accuracy and format validity on your task (a .jsonl suite or "demo").
[[evals]]
suite = "demo"
constraint = "on"      # on, off or both
max_tokens = {max_tokens}
limit = {limit}              # only the first N items (omit for all)
timeout = 60           # seconds per item at most

# Limits for the verdict at the end: the `rightsizer recommend` flags, by name.
[limits]
min_tg = {min_tg}             # tg t/s at least (the tg test named by tg_test)
max_memory = "{max_memory}"    # peak RSS at most
# min_pp = 100
# max_ttft_ms = 500
# min_accuracy = 0.5
# max_kld = 0.05
tg_test = "tg{n_gen}"
pp_test = "pp{n_prompt}"
"""


def init_text(model: str | None = None) -> str:
    """A commented, complete example plan. Without ``model`` (or with ``demo``): the demo
    model, a small bench and a few eval items, about a minute on two cores."""
    from lab import library

    if model in (None, library.DEMO_NAME):
        line, name, demo = 'name = "demo"', "demo", True
    else:
        local = library.resolve(model)
        sha = library.sha256_file(local.path)
        if local.source == "hf-cache" and local.revision and len(local.revision) == 40:
            line = f'hub = "{local.name}"\nrevision = "{local.revision}"\nsha256 = "{sha}"'
        else:
            line = f'path = "{local.path}"\nsha256 = "{sha}"'
        name, demo = local.path.stem, False
    return _INIT.format(
        name=name, description=f"bench, eval and verdict for {name}", model=line,
        n_prompt=64 if demo else 512, n_gen=16 if demo else 128, repetitions=2 if demo else 5,
        max_tokens=48 if demo else 128, limit=4 if demo else 20, min_tg=5, max_memory="1GiB" if demo else "8GiB",
    )
