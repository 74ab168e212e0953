"""llama-bench output (``-o json``, ``-o jsonl``, ``-o csv``, ``-o sql``) as runs and results."""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.errors import LabError
from lab.ids import short_id
from lab.report.common import IMPORT_KIND, IMPORTED_MACHINE_PREFIX

if TYPE_CHECKING:
    from lab.store import Store

LLAMA_BENCH_REQUIRED = ("build_commit", "cpu_info", "model_filename", "n_prompt", "n_gen", "avg_ns", "avg_ts")

# llama.cpp's llama_model_ftype_name() wording -> the quant names gguf_info uses (Q4_K_M ...).
_FTYPE_WORDS = {"Small": "S", "Medium": "M", "Large": "L"}


def quant_from_model_type(model_type: str | None) -> str | None:
    """``"qwen2 7B Q4_K - Medium"`` -> ``"Q4_K_M"``: the file type in llama-bench's ``model_type``
    (arch, size, then llama.cpp's file type name). None when it cannot be read."""
    if not model_type:
        return None
    parts = model_type.replace(" (guessed)", "").split(" ", 2)
    if len(parts) < 3:
        return None
    ftype = parts[2].strip()
    ftype = ftype.removeprefix("mostly ")
    if ftype == "all F32":
        return "F32"
    if ftype == "MXFP4 MoE":
        return "MXFP4_MOE"
    if ftype.startswith("IQ3_S mix"):
        return "IQ3_M"
    head, _, tail = ftype.partition(" - ")
    head = head.strip()
    if head == "Q2_K" and tail == "Medium":
        return "Q2_K"
    if tail in _FTYPE_WORDS and re.fullmatch(r"Q\d_K", head):
        return f"{head}_{_FTYPE_WORDS[tail]}"
    return head if re.fullmatch(r"[A-Z0-9_]+", head) else None


def llama_bench_test_name(n_prompt: int, n_gen: int, n_depth: int = 0) -> str:
    """llama-bench's test name: ``pp512``, ``tg128``, ``pp512+tg128``, with ``@ dN`` for a depth."""
    if n_prompt and n_gen:
        base = f"pp{n_prompt}+tg{n_gen}"
    elif n_prompt:
        base = f"pp{n_prompt}"
    else:
        base = f"tg{n_gen}"
    return f"{base} @ d{n_depth}" if n_depth else base


# llama-bench's column types (its test::get_field_type), for the text of -o csv and -o sql.
# A column newer builds add and this list does not name stays text and is not imported.
_INT_FIELDS = {"build_number", "n_batch", "n_ubatch", "n_threads", "poll", "model_size", "model_n_params",
               "n_gpu_layers", "n_cpu_moe", "main_gpu", "n_prompt", "n_gen", "n_depth", "avg_ns", "stddev_ns",
               "no_op_offload", "fit_target", "fit_min_ctx", "flash_attn"}
_BOOL_FIELDS = {"f16_kv", "no_kv_offload", "cpu_strict", "embeddings", "no_host", "use_mmap"}
_FLOAT_FIELDS = {"avg_ts", "stddev_ts"}
_FORMATS = "expected llama-bench -o json, jsonl, csv or sql output"


def _where(path: Path, fmt: str, index: int, line: int | None) -> str:
    return f"{path} line {line}" if line is not None else f"{path} entry {index + 1}"


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    """A row of -o csv / -o sql text as -o json writes it: numbers as numbers, booleans as
    booleans (llama-bench writes them 0/1), empty cells as None. A cell that does not parse
    stays text, so the checks name it."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key is None:  # more cells than columns: nothing to name them by
            continue
        if isinstance(value, str):
            value = value.strip()
            if value == "":
                value = None
        if isinstance(value, str):
            try:
                if key in _INT_FIELDS:
                    value = int(value)
                elif key in _FLOAT_FIELDS:
                    value = float(value)
                elif key in _BOOL_FIELDS:
                    value = {"0": False, "1": True, "false": False, "true": True}[value.lower()]
            except (ValueError, KeyError):
                pass
        elif key in _BOOL_FIELDS and isinstance(value, int):
            value = bool(value)
        elif key in _FLOAT_FIELDS and isinstance(value, int):
            value = float(value)
        out[key] = value
    return out


def _read_csv(path: Path, text: str) -> list[tuple[int | None, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    entries: list[tuple[int | None, Any]] = []
    try:
        for row in reader:
            if not any((v or "").strip() for k, v in row.items() if k is not None):
                continue
            entries.append((reader.line_num, _typed(row)))
    except csv.Error as exc:
        raise LabError(f"{path} line {reader.line_num} is not valid CSV ({exc})") from None
    return entries


_SQL_ALLOWED = {sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_INSERT, sqlite3.SQLITE_READ, sqlite3.SQLITE_SELECT,
                sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_TRANSACTION}


def _read_sql(path: Path, text: str) -> list[tuple[int | None, Any]]:
    """Run llama-bench's CREATE TABLE / INSERT statements in a private in-memory database (which
    gives each value its declared type) and read the rows back. Anything else a file might hold
    (ATTACH, PRAGMA, ...) is refused, so importing cannot touch another file."""

    def authorize(action: int, *_: Any) -> int:
        return sqlite3.SQLITE_OK if action in _SQL_ALLOWED else sqlite3.SQLITE_DENY

    conn = sqlite3.connect(":memory:")
    try:
        conn.set_authorizer(authorize)
        try:
            conn.executescript(text)
        except sqlite3.Error as exc:
            raise LabError(f"{path} is not llama-bench SQL output that can be read ({exc})") from None
        conn.set_authorizer(None)
        conn.row_factory = sqlite3.Row
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table' order by rowid")]
        entries: list[tuple[int | None, Any]] = []
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            entries += [(None, _typed(dict(r))) for r in conn.execute(f"select * from {quoted} order by rowid")]
        return entries
    finally:
        conn.close()


def read_llama_bench(path: str | Path) -> tuple[str, list[tuple[int | None, dict[str, Any]]]]:
    """Read and check llama-bench output: ``-o json`` (an array), ``-o jsonl`` (an object per
    line), ``-o csv`` (a header line, then a row per test) or ``-o sql`` (CREATE TABLE, then an
    INSERT per test). Columns a newer llama-bench adds are ignored. Returns the format and the
    entries with their line numbers (JSONL, CSV) or None (JSON, SQL). Raises LabError naming the
    file and the line or entry at fault."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabError(f"No such file: {path}") from None
    except IsADirectoryError:
        raise LabError(f"{path} is a folder, not a llama-bench output file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabError(f"Cannot read {path}: {exc}") from None
    stripped = text.lstrip()
    first_line = stripped.split("\n", 1)[0]
    head = first_line.upper()
    entries: list[tuple[int | None, Any]] = []
    if stripped.startswith("["):
        fmt = "json"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabError(f"{path} line {exc.lineno} is not valid JSON ({exc.msg}); {_FORMATS}") from None
        entries = [(None, item) for item in data]
    elif head.startswith(("CREATE TABLE", "INSERT INTO")):
        fmt = "sql"
        entries = _read_sql(path, text)
    elif not stripped.startswith("{") and {"build_commit", "avg_ts"} & {c.strip() for c in first_line.split(",")}:
        fmt = "csv"
        entries = _read_csv(path, text)
    elif stripped and not stripped.startswith("{"):
        number = text[: len(text) - len(stripped)].count("\n") + 1
        raise LabError(f"{path} line {number} is not llama-bench output; {_FORMATS}")
    else:
        fmt = "jsonl"
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise LabError(f"{path} line {number} is not valid JSON ({exc.msg}); {_FORMATS}") from None
    if not entries:
        raise LabError(f"{path} holds no llama-bench results")
    for index, (line, entry) in enumerate(entries):
        where = _where(path, fmt, index, line)
        if not isinstance(entry, dict):
            raise LabError(f"{where} is not a llama-bench result object")
        missing = [k for k in LLAMA_BENCH_REQUIRED if k not in entry or entry[k] is None]
        if missing:
            raise LabError(f"{where} lacks the llama-bench key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        for key in ("n_prompt", "n_gen", "n_depth"):
            value = entry.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise LabError(f"{where} has {key} = {value!r}, not a token count")
        if not entry["n_prompt"] and not entry["n_gen"]:
            raise LabError(f"{where} has neither prompt nor generated tokens (n_prompt and n_gen are 0)")
        for key in ("avg_ns", "avg_ts", "stddev_ns", "stddev_ts", "model_size", "model_n_params"):
            value = entry.get(key)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
                raise LabError(f"{where} has {key} = {value!r}, not a number")
        for key in ("samples_ns", "samples_ts"):
            value = entry.get(key)
            if value is not None and (not isinstance(value, list)
                                      or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise LabError(f"{where} has {key} that is not a list of numbers")
    return fmt, entries


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _iso_time(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed.astimezone(_dt.timezone.utc).isoformat(timespec="microseconds")


def imported_machine(entry: dict[str, Any]) -> dict[str, Any]:
    """The ``machines`` row for an imported llama-bench entry: only what the file says
    (cpu_info, gpu_info, backends, build_commit); the rest is NULL. Its id is
    ``import-`` + 16 hex digits of a hash of those fields, so imports are easy to tell apart
    (``rightsizer results --machine import-``) and the same hardware and build merges."""
    fields = {
        "cpu_info": entry.get("cpu_info") or None, "gpu_info": entry.get("gpu_info") or None,
        "backends": entry.get("backends") or None, "build_commit": entry.get("build_commit") or None,
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return {"id": IMPORTED_MACHINE_PREFIX + digest, **fields}


def _imported_model(store: "Store", entry: dict[str, Any]) -> dict[str, Any]:
    filename = Path(str(entry["model_filename"])).name
    size, n_params = _int_or_none(entry.get("model_size")), _int_or_none(entry.get("model_n_params"))
    # The same file already known by its sha256 (same name, size and parameter count): use it,
    # so quality and eval figures of that model meet the imported speeds.
    known = store.query("select * from models where model_filename = ? and id not like 'file:%'", [filename])
    same = [m for m in known if m.get("model_size") == size and m.get("model_n_params") == n_params and size]
    if len(same) == 1:
        return same[0]
    return {
        "id": f"file:{filename}", "model_filename": filename, "path": str(entry["model_filename"]),
        "model_type": entry.get("model_type"), "file_type": quant_from_model_type(entry.get("model_type")),
        "model_size": size, "model_n_params": n_params, "source": IMPORT_KIND,
    }


def import_llama_bench(store: "Store", path: str | Path) -> int:
    """Import llama-bench output (``-o json``, ``jsonl``, ``csv`` or ``sql``; see
    :func:`read_llama_bench`); returns the number of results stored.

    Each model (per machine) in the file becomes a run of kind ``llama-bench-import`` with one
    ``results`` row per entry: the test name as llama-bench writes it (``pp512``, ``tg128``,
    ``pp512+tg128``, ``tg128 @ d512``), its times and speeds, every repetition, and ``noisy``
    when the speeds' coefficient of variation exceeds 5%. The machine row holds only what the
    file says (see :func:`imported_machine`); the model row is keyed ``file:<file name>`` unless
    the same file is already known by its sha256. Figures the file does not hold (memory, energy,
    latency) stay NULL. The whole file is checked before anything is written, and a file
    already imported (same content) is refused.
    """
    from lab import __version__
    from lab.stats import NOISY_CV, cv as _cv

    path = Path(path)
    fmt, entries = read_llama_bench(path)
    file_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    previous = store.query(
        "select id from runs where kind = ? and json_extract(config, '$.sha256') = ?", [IMPORT_KIND, file_sha])
    if previous:
        raise LabError(f"{path} was already imported (run {short_id(previous[0]['id'])})")

    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for index, (line, entry) in enumerate(entries):
        machine = imported_machine(entry)
        model = _imported_model(store, entry)
        group = groups.setdefault((machine["id"], model["id"]), {"machine": machine, "model": model, "items": []})
        group["items"].append((index, line, entry))

    count = 0
    for group in groups.values():
        store.upsert_machine(group["machine"])
        model = group["model"]
        if model["id"].startswith("file:"):
            store.upsert_model(model)
        items = group["items"]
        times = [t for t in (_iso_time(e.get("test_time")) for _, _, e in items) if t]
        first = items[0][2]
        config = {
            "source_file": str(path.resolve()), "sha256": file_sha, "format": fmt,
            "entries": [i + 1 for i, _, _ in items], "build_number": first.get("build_number"),
            "model_path": str(first["model_filename"]),
        }
        run_id = store.create_run(
            IMPORT_KIND, machine_id=group["machine"]["id"], model_id=model["id"],
            model_filename=model["model_filename"], config=config, build_commit=first.get("build_commit"),
            lab_version=__version__, label=f"imported from {path.name}",
            n_gpu_layers=_int_or_none(first.get("n_gpu_layers")), use_mmap=_int_or_none(first.get("use_mmap")),
            **({"started_at": min(times)} if times else {}),
        )
        for _, _, e in items:
            samples_ns = e.get("samples_ns")
            samples_ts = e.get("samples_ts")
            if samples_ts:
                cv = _cv([float(v) for v in samples_ts])
            elif e.get("stddev_ts") is not None and e["avg_ts"]:
                cv = float(e["stddev_ts"]) / float(e["avg_ts"])
            else:
                cv = None
            store.add_result({
                "run_id": run_id, "machine_id": group["machine"]["id"], "model_id": model["id"],
                "model_filename": model["model_filename"], "model_type": e.get("model_type"),
                "model_size": _int_or_none(e.get("model_size")), "model_n_params": _int_or_none(e.get("model_n_params")),
                "backends": e.get("backends") or None,
                "test": llama_bench_test_name(e["n_prompt"], e["n_gen"], e.get("n_depth") or 0),
                "n_prompt": e["n_prompt"], "n_gen": e["n_gen"], "n_depth": e.get("n_depth") or 0,
                "n_batch": _int_or_none(e.get("n_batch")), "n_ubatch": _int_or_none(e.get("n_ubatch")),
                "n_threads": _int_or_none(e.get("n_threads")), "n_gpu_layers": _int_or_none(e.get("n_gpu_layers")),
                "type_k": e.get("type_k"), "type_v": e.get("type_v"),
                "flash_attn": _int_or_none(e.get("flash_attn")), "use_mmap": _int_or_none(e.get("use_mmap")),
                "repetitions": len(samples_ns) if isinstance(samples_ns, list) else None,
                "avg_ns": float(e["avg_ns"]), "stddev_ns": None if e.get("stddev_ns") is None else float(e["stddev_ns"]),
                "avg_ts": float(e["avg_ts"]), "stddev_ts": None if e.get("stddev_ts") is None else float(e["stddev_ts"]),
                "samples_ns": samples_ns, "samples_ts": samples_ts,
                "cv": cv, "noisy": None if cv is None else int(cv > NOISY_CV),
                "test_time": _iso_time(e.get("test_time")),
            })
            count += 1
        store.finish_run(run_id, "ok")
        if times:
            store.update_run(run_id, finished_at=max(times))
    return count
