"""The SQLite store: schema, migrations, inserts and queries (through sqlite-utils).

Column names follow llama-bench wherever the meaning is the same (``model_filename``,
``n_prompt``, ``avg_ts`` ...), so its users feel at home and its JSON can be imported.

* ``machines``  one row per hardware/software fingerprint (hash as key)
* ``models``    one row per GGUF file (sha256 as key)
* ``runs``      one row per job (one engine child process): config, status, error, log tail
* ``results``   one row per test in a run, with every repetition's time
* ``samples``   the monitor's time series per run
* ``quality``   perplexity / KL-divergence of a model against a reference
* ``eval_runs`` / ``eval_items``  task-suite summaries and per-item outputs
* ``load_requests``  every request of a load level: queue, TTFT, gaps, e2e, tokens, status
* ``endpoints`` OpenAI-compatible endpoints by name: URL, model id, prices (never an API key).
  A run against one has ``model_id`` = the endpoint's id and ``model_filename`` =
  ``endpoint:NAME``; ``rm`` only marks the row removed, so its runs keep their identity

Keys of runs and results are UUIDs, so databases from many machines merge without collisions.
The database is in WAL mode, and its schema version is stored in ``meta`` and migrated forward.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from lab.errors import LabError
from lab.ids import new_id, short_id  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    # Imported where a Store opens: sqlite-utils pulls in numpy, ~0.3 s that the app's first
    # paint should not wait for (``check_database`` needs only sqlite3).
    import sqlite_utils

SCHEMA_VERSION = 4


def now_iso() -> str:
    """UTC timestamp with microseconds, sortable as text."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


# --- schema -------------------------------------------------------------------------------

_MACHINE_COLUMNS: dict[str, Any] = {
    "id": str, "hostname": str, "os": str, "kernel": str, "arch": str,
    "cpu_info": str, "cpu_cores": int, "cpu_threads": int, "ram_bytes": int,
    "gpu_info": str, "gpu_count": int, "vram_bytes": int, "backends": str,
    "build_commit": str, "llama_cpp_version": str, "python_version": str,
    "lab_version": str, "system_info": str, "gpu_offload": int, "first_seen": str,
    # Cost settings the user gives once per machine (``rightsizer machine set``).
    "price_usd": float, "lifetime_years": float, "utilization": float, "power_usd_per_kwh": float,
    "watts": float,
    "board_model": str, "memory_type": str, "cpu_governor": str,
}

_MODEL_COLUMNS: dict[str, Any] = {
    "id": str,  # sha256 of the file
    "model_filename": str, "path": str, "name": str, "model_type": str, "arch": str,
    "file_type": str, "model_size": int, "file_size": int, "model_n_params": int,
    "n_layer": int, "n_embd": int, "n_head": int, "n_head_kv": int, "n_ctx_train": int,
    "n_vocab": int, "has_chat_template": int, "source": str, "source_repo": str,
    "source_revision": str, "base_model_id": str, "fallback_tensors": str, "added_at": str,
}

_RUN_COLUMNS: dict[str, Any] = {
    "id": str, "kind": str, "machine_id": str, "model_id": str, "model_filename": str,
    "status": str, "config": str, "error": str, "exit_code": int, "signal": int,
    "log_tail": str, "started_at": str, "finished_at": str, "lab_version": str,
    "llama_cpp_version": str, "build_commit": str, "n_gpu_layers": int, "use_mmap": int,
    "load_ms": float, "est_memory_bytes": int, "peak_rss_bytes": int, "peak_vram_bytes": int,
    "label": str, "warnings": str,
    "plan_step": str,  # the plan step this run measured (lab.plan_run), so a rerun can skip it
    "model_fs_type": str, "model_device": str,
    "verdict": str,  # a ``rightsize`` run's verdict (JSON): the pick and every candidate's status
    # ``load --find-max``: the most users (or requests/s) served within the objective (``slo``,
    # JSON), and the KV cache that level needs
    "max_users_at_slo": int, "max_rate_at_slo": float, "slo": str, "max_kv_bytes": int,
}

_RESULT_COLUMNS: dict[str, Any] = {
    "id": str, "run_id": str, "machine_id": str, "model_id": str, "model_filename": str,
    "model_type": str, "model_size": int, "model_n_params": int, "backends": str,
    "test": str, "n_prompt": int, "n_gen": int, "n_depth": int, "n_batch": int,
    "n_ubatch": int, "n_threads": int, "n_gpu_layers": int, "type_k": str, "type_v": str,
    "flash_attn": int, "use_mmap": int, "n_ctx": int, "repetitions": int,
    "avg_ns": float, "stddev_ns": float, "avg_ts": float, "stddev_ts": float,
    "samples_ns": str, "samples_ts": str, "cv": float, "noisy": int,
    "peak_rss_bytes": int, "peak_vram_bytes": int, "mean_power_w": float,
    "energy_j": float, "j_per_token": float, "energy_source": str,
    "energy_by_source": str, "energy_samples_j": str, "rss_reset_failed": int,
    "est_memory_bytes": int, "kv_bytes": int, "mean_cpu_percent": float,
    # llama.cpp's logged buffers for the test (NULL where not logged) and the estimate of their sum
    "alloc_model_bytes": int, "alloc_kv_bytes": int, "alloc_compute_bytes": int,
    "alloc_output_bytes": int, "est_alloc_bytes": int,
    "ttft_ms": float, "itl_p50_ms": float, "itl_p95_ms": float, "itl_p99_ms": float,
    "e2e_ms": float, "n_generated": int, "n_prompt_tokens": int, "n_prompts": int,
    # many sequences in one context (llama-batched-bench's B, N_KV, T_PP, S_PP, T_TG, S_TG, T, S)
    "n_seq": int, "pp_shared": int, "kv_unified": int, "n_kv": int, "t_pp": float, "s_pp": float,
    "t_tg": float, "s_tg": float, "t_total": float, "s_total": float, "samples_pp_ns": str,
    "samples_tg_ns": str,
    "test_time": str, "chat_template": str,
    "major_faults": int, "paged_in_bytes": int, "swap_in_pages": int, "swap_out_pages": int,
    "min_mem_available_bytes": int, "swapped": int, "mean_cpu_freq_mhz": float,
    "max_cpu_temp_c": float, "throttled": int, "model_fs_type": str, "model_device": str,
    "sustained_s": float, "sustained_window_s": float, "sustained_first_ts": float,
    "sustained_last_ts": float, "sustained_decay_pct": float, "sustained_first_mhz": float,
    "sustained_last_mhz": float, "clocks_dropped": int,
    # a load level (``load u4``, ``load r1.5``): slots in n_seq, per-request figures in load_requests
    "load_users": int, "load_rate": float, "load_duration_s": float, "load_requests": int,
    "load_completed": int, "load_failed": int, "load_rps": float, "output_tps": float,
    "ttft_p50_ms": float, "ttft_p95_ms": float, "ttft_p99_ms": float, "e2e_p50_ms": float,
    "e2e_p95_ms": float, "e2e_p99_ms": float, "queue_p95_ms": float, "goodput_rps": float,
    "slo_attainment": float, "slo": str, "load_max_active": int, "load_mean_active": float,
    "endpoint_url": str,
}

_SAMPLE_COLUMNS: dict[str, Any] = {
    "run_id": str, "t": float, "test": str, "rss_bytes": int, "cpu_percent": float,
    "n_threads": int, "mem_available_bytes": int, "gpu_mem_used_bytes": int,
    "gpu_proc_mem_bytes": int, "gpu_util": float, "gpu_power_w": float, "gpu_temp_c": float,
    "gpu_energy_j": float, "rapl_energy_j": float, "tokens": int,
    "major_faults": int, "paged_in_bytes": int, "swap_in_pages": int, "swap_out_pages": int,
    "cpu_freq_mhz": float, "cpu_temp_c": float, "throttle_count": int, "board_power_w": float,
    "board_energy_j": float,
}

_QUALITY_COLUMNS: dict[str, Any] = {
    "id": str, "run_id": str, "machine_id": str, "model_id": str, "reference_model_id": str,
    "model_filename": str, "reference_filename": str, "text_name": str, "text_sha256": str,
    "n_ctx": int, "n_chunks": int, "n_tokens_scored": int, "ppl": float, "ppl_stderr": float,
    "ppl_ref": float, "ppl_ratio": float, "kld_mean": float, "kld_stderr": float,
    "kld_p99": float, "kld_p999": float, "kld_median": float, "same_top_p": float,
    "same_top_p_stderr": float, "created_at": str, "ppl_ratio_stderr": float,
}

_EVAL_RUN_COLUMNS: dict[str, Any] = {
    "id": str, "run_id": str, "machine_id": str, "model_id": str, "model_filename": str,
    "suite": str, "suite_sha256": str, "constrained": int, "n_items": int, "n_correct": int,
    "accuracy": float, "accuracy_ci_low": float, "accuracy_ci_high": float,
    "format_valid_rate": float, "n_empty": int, "n_timeout": int, "n_error": int,
    "latency_p50_ms": float, "latency_p95_ms": float, "created_at": str, "chat_template": str,
}

_EVAL_ITEM_COLUMNS: dict[str, Any] = {
    "id": str, "eval_run_id": str, "run_id": str, "machine_id": str, "model_id": str,
    "item_index": int, "item_id": str, "input": str, "expected": str, "output": str,
    "scorer": str, "score": float, "correct": int, "format_valid": int, "status": str,
    "error": str, "latency_ms": float, "n_tokens": int,
    # Endpoint evals: how the item's constraint was sent (or why it was not), and the prompt
    # tokens the API counted (for cost).
    "constraint_note": str, "n_prompt_tokens": int,
}

_ENDPOINT_COLUMNS: dict[str, Any] = {
    "id": str, "name": str, "url": str, "model": str,
    "api_key_env": str,  # the NAME of the environment variable holding the key, never the key
    "price_in_per_mtok": float, "price_out_per_mtok": float, "added_at": str, "removed_at": str,
}


_LOAD_REQUEST_COLUMNS: dict[str, Any] = {
    "id": str, "result_id": str, "run_id": str, "machine_id": str, "model_id": str, "test": str,
    "request_index": int, "user": int, "prompt_id": str, "arrival_ms": float, "queue_ms": float,
    "ttft_ms": float, "e2e_ms": float, "itl_p95_ms": float, "gaps_ms": str, "n_prompt_tokens": int,
    "n_generated": int, "status": str, "meets_slo": int, "error": str,
}


def _migrate_1(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db["machines"].create(_MACHINE_COLUMNS, pk="id", if_not_exists=True)
    db["models"].create(_MODEL_COLUMNS, pk="id", if_not_exists=True)
    db["model_files"].create(
        {"path": str, "size": int, "mtime_ns": int, "sha256": str}, pk="path", if_not_exists=True
    )
    db["runs"].create(
        _RUN_COLUMNS, pk="id", if_not_exists=True,
        foreign_keys=[("machine_id", "machines", "id"), ("model_id", "models", "id")],
    )
    db["results"].create(
        _RESULT_COLUMNS, pk="id", if_not_exists=True,
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["samples"].create(_SAMPLE_COLUMNS, if_not_exists=True, foreign_keys=[("run_id", "runs", "id")])
    db["quality"].create(_QUALITY_COLUMNS, pk="id", if_not_exists=True)
    db["eval_runs"].create(_EVAL_RUN_COLUMNS, pk="id", if_not_exists=True)
    db["eval_items"].create(_EVAL_ITEM_COLUMNS, pk="id", if_not_exists=True)
    db["runs"].create_index(["machine_id", "model_id"], if_not_exists=True)
    db["results"].create_index(["run_id"], if_not_exists=True)
    db["results"].create_index(["model_id", "test"], if_not_exists=True)
    db["samples"].create_index(["run_id", "t"], if_not_exists=True)
    db["quality"].create_index(["model_id"], if_not_exists=True)
    db["eval_items"].create_index(["eval_run_id"], if_not_exists=True)


# Every table's declared columns: a column added to one of the dicts above reaches databases
# made before it through ``_add_declared_columns`` (a new column is always nullable, so NULL
# stays "not measured" in old rows).
_DECLARED: dict[str, dict[str, Any]] = {
    "machines": _MACHINE_COLUMNS, "models": _MODEL_COLUMNS, "endpoints": _ENDPOINT_COLUMNS, "runs": _RUN_COLUMNS,
    "results": _RESULT_COLUMNS, "samples": _SAMPLE_COLUMNS, "quality": _QUALITY_COLUMNS,
    "eval_runs": _EVAL_RUN_COLUMNS, "eval_items": _EVAL_ITEM_COLUMNS, "load_requests": _LOAD_REQUEST_COLUMNS,
}


# The tables that hold measurements, parents before children (so rows can be copied in order).
TABLES: tuple[str, ...] = tuple(_DECLARED)


def _add_declared_columns(db: sqlite_utils.Database) -> None:
    for table, columns in _DECLARED.items():
        if not db[table].exists():
            continue
        have = set(db[table].columns_dict)
        for name, kind in columns.items():
            if name not in have:
                try:
                    db[table].add_column(name, kind)
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise


def _migrate_2(db: sqlite_utils.Database) -> None:
    _add_declared_columns(db)


def _migrate_3(db: sqlite_utils.Database) -> None:
    db["endpoints"].create(_ENDPOINT_COLUMNS, pk="id", if_not_exists=True)
    db["endpoints"].create_index(["name"], if_not_exists=True)


def _migrate_4(db: sqlite_utils.Database) -> None:
    db["load_requests"].create(_LOAD_REQUEST_COLUMNS, pk="id", if_not_exists=True)
    db["load_requests"].create_index(["result_id"], if_not_exists=True)
    db["load_requests"].create_index(["run_id"], if_not_exists=True)


# Append only: migration N brings a database from version N-1 to N.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_migrate_1, _migrate_2, _migrate_3, _migrate_4]


class StoreError(LabError):
    """The database file cannot be opened or is not a Rightsizer database."""


@contextlib.contextmanager
def _opening(path: Path) -> Iterator[None]:
    """Turn what goes wrong while opening a database into one sentence."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"Cannot open database {path}: {exc}.") from exc
    except OSError as exc:
        raise StoreError(f"Cannot create database {path}: {exc.strerror}.") from exc


def _read_version(conn: sqlite3.Connection, path: Path) -> int:
    """The stored schema version (0: a new database); refuses one newer than this code."""
    if not conn.execute("select 1 from sqlite_master where type = 'table' and name = 'meta'").fetchone():
        return 0
    row = conn.execute("select value from meta where key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > len(MIGRATIONS):
        raise StoreError(
            f"Database {path} has schema version {version}, newer than this "
            f"Rightsizer understands ({len(MIGRATIONS)}); upgrade Rightsizer."
        )
    return version


def check_database(path: str | Path) -> None:
    """Raise the StoreError that opening ``path`` would raise, cheaply: sqlite3 alone, no
    migration (the app checks its database before the screen clears, then opens it in workers)."""
    path = Path(path)
    with _opening(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(str(path), timeout=30)) as conn:
            _read_version(conn, path)


def open_read_only(path: str | Path) -> tuple[sqlite3.Connection, int]:
    """A connection that cannot change ``path`` (not even its WAL), and the schema version;
    refuses a file that is missing, not a database, or newer than this code."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"No such database: {path}.")
    # Without a -wal file beside it the whole database is in the file, and ``immutable`` reads
    # it without creating -wal/-shm files; with one, ``mode=ro`` reads the WAL as well.
    wal = Path(f"{path}-wal")
    flags = "mode=ro" if wal.exists() else "immutable=1"
    with _opening(path):
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?{flags}", uri=True, timeout=30)
        try:
            return conn, _read_version(conn, path)
        except BaseException:
            conn.close()
            raise


class Store:
    """One open database. Cheap to create; create one per thread."""

    def __init__(self, path: str | Path):
        import sqlite_utils

        self.path = Path(path)
        with _opening(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA busy_timeout = 30000")
            self.db.enable_wal()
            self._migrate()
        self._lock = threading.Lock()

    # -- schema
    def schema_version(self) -> int:
        return _read_version(self.db.conn, self.path)

    def _migrate(self) -> None:
        # Every step is "create ... if not exists", so two processes migrating one new
        # database at once both succeed.
        for number in range(self.schema_version() + 1, len(MIGRATIONS) + 1):
            with self.db.conn:
                MIGRATIONS[number - 1](self.db)
                self.db["meta"].upsert({"key": "schema_version", "value": str(number)}, pk="key")
        # Columns declared since the last migration (cheap: one table_info per table).
        with self.db.conn:
            _add_declared_columns(self.db)

    def close(self) -> None:
        self.db.conn.close()

    # -- writes
    def _write(self, table: str, row: dict[str, Any], *, pk: str | None = None, upsert: bool = False) -> None:
        with self._lock, self.db.conn:
            if upsert:
                self.db[table].upsert(row, pk=pk, alter=True)
            else:
                self.db[table].insert(row, alter=True)

    def upsert_machine(self, fingerprint: dict[str, Any]) -> str:
        """Store a machine fingerprint (``hardware.fingerprint()``); returns its id."""
        row = dict(fingerprint)
        existing = self.get("machines", row["id"])
        row["first_seen"] = existing["first_seen"] if existing else now_iso()
        self._write("machines", row, pk="id", upsert=True)
        return row["id"]

    def upsert_model(self, info: dict[str, Any]) -> str:
        """Store a model row (keyed by sha256 in ``id``); keeps provenance already known."""
        row = {k: v for k, v in info.items() if v is not None or k in ("base_model_id",)}
        existing = self.get("models", row["id"])
        if existing:
            for key in ("source", "source_repo", "source_revision", "base_model_id", "fallback_tensors", "added_at"):
                if row.get(key) is None and existing.get(key) is not None:
                    row[key] = existing[key]
        row.setdefault("added_at", now_iso())
        self._write("models", row, pk="id", upsert=True)
        return row["id"]

    def cached_sha256(self, path: Path, size: int, mtime_ns: int) -> str | None:
        row = self.get("model_files", str(path))
        if row and row["size"] == size and row["mtime_ns"] == mtime_ns:
            return row["sha256"]
        return None

    def remember_sha256(self, path: Path, size: int, mtime_ns: int, sha256: str) -> None:
        self._write(
            "model_files", {"path": str(path), "size": size, "mtime_ns": mtime_ns, "sha256": sha256},
            pk="path", upsert=True,
        )

    def create_run(self, kind: str, *, machine_id: str, model_id: str | None, model_filename: str | None,
                   config: dict[str, Any], **extra: Any) -> str:
        """Record a job as ``running`` before it starts, so a crash still leaves a trace."""
        run_id = new_id()
        row = {
            "id": run_id, "kind": kind, "machine_id": machine_id, "model_id": model_id,
            "model_filename": model_filename, "status": "running",
            "config": json.dumps(config, sort_keys=True), "started_at": now_iso(),
        }
        row.update(extra)
        self._write("runs", row)
        return run_id

    def update_run(self, run_id: str, **values: Any) -> None:
        with self._lock, self.db.conn:
            self.db["runs"].update(run_id, values, alter=True)

    def finish_run(self, run_id: str, status: str, **values: Any) -> None:
        """Close a run: ``ok``, ``failed`` or ``cancelled``, with error details when not ok."""
        values.update(status=status, finished_at=now_iso())
        self.update_run(run_id, **values)

    def add_result(self, row: dict[str, Any]) -> str:
        row = dict(row)
        row.setdefault("id", new_id())
        row.setdefault("test_time", now_iso())
        for key in ("samples_ns", "samples_ts"):
            if isinstance(row.get(key), (list, tuple)):
                row[key] = json.dumps(list(row[key]))
        self._write("results", row)
        return row["id"]

    def add_result_with_rows(self, row: dict[str, Any], table: str, rows: Iterable[dict[str, Any]]) -> str:
        """A result and its per-item rows in ``table`` (each gets ``result_id``), in one
        transaction: an interrupt never leaves the one without the other."""
        row = dict(row)
        row.setdefault("id", new_id())
        row.setdefault("test_time", now_iso())
        items = [dict(r, id=r.get("id") or new_id(), result_id=row["id"]) for r in rows]
        with self._lock, self.db.conn:
            self.db["results"].insert(row, alter=True)
            if items:
                self.db[table].insert_all(items, alter=True)
        return row["id"]

    def add_samples(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if rows:
            with self._lock, self.db.conn:
                self.db["samples"].insert_all(rows, alter=True)

    def add_row(self, table: str, row: dict[str, Any]) -> str:
        """Insert into ``quality``, ``eval_runs`` or ``eval_items``; fills ``id``."""
        row = dict(row)
        row.setdefault("id", new_id())
        self._write(table, row)
        return row["id"]

    def add_rows(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        rows = [dict(r, id=r.get("id") or new_id()) for r in rows]
        if rows:
            with self._lock, self.db.conn:
                self.db[table].insert_all(rows, alter=True)

    def delete_model(self, model_id: str) -> None:
        """Forget a model row (measurements keep their model_filename)."""
        with self._lock, self.db.conn:
            self.db.execute("delete from models where id = ?", [model_id])

    # -- reads
    def get(self, table: str, key: str) -> dict[str, Any] | None:
        from sqlite_utils.db import NotFoundError

        try:
            return dict(self.db[table].get(key))
        except NotFoundError:
            return None

    def query(self, sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, params))

    def iter_query(self, sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> Iterator[dict[str, Any]]:
        return self.db.query(sql, params)

    def runs(self, *, model: str | None = None, machine: str | None = None, run: str | None = None,
             kind: str | None = None, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Stored runs, newest first. ``model`` matches file name or model id prefix;
        ``machine`` and ``run`` match id prefixes (or the hostname for machines)."""
        where, params = ["1 = 1"], {}
        if model:
            where.append("(runs.model_filename like :model or runs.model_id like :model_prefix)")
            params.update(model=f"%{model}%", model_prefix=f"{model}%")
        if machine:
            where.append("(runs.machine_id like :machine_prefix or machines.hostname = :machine)")
            params.update(machine=machine, machine_prefix=f"{machine}%")
        if run:
            where.append("(runs.id like :run_prefix or runs.id like :run_suffix)")
            params.update(run_prefix=f"{run}%", run_suffix=f"%{run}")
        if kind:
            where.append("runs.kind = :kind")
            params["kind"] = kind
        if status:
            where.append("runs.status = :status")
            params["status"] = status
        sql = (
            "select runs.*, machines.hostname as hostname from runs "
            "left join machines on machines.id = runs.machine_id "
            f"where {' and '.join(where)} order by runs.started_at desc"
        )
        if limit:
            sql += f" limit {int(limit)}"
        return self.query(sql, params)

    def results(self, *, model: str | None = None, test: str | None = None, machine: str | None = None,
                run: str | None = None, quant: str | None = None, since: str | None = None,
                order: str = "results.test_time", descending: bool = False,
                limit: int | None = None, offset: int = 0, by_machine: bool = False) -> list[dict[str, Any]]:
        """Stored results joined with their run, model and machine; filters match like
        :meth:`runs`, ``test`` matches the test name (``tg128``) exactly or by prefix with ``*``.
        ``by_machine`` keeps each host's results together (by hostname), ordered within it."""
        where, params = ["1 = 1"], {}
        if model:
            where.append("(results.model_filename like :model or results.model_id like :model_prefix)")
            params.update(model=f"%{model}%", model_prefix=f"{model}%")
        if test:
            if test.endswith("*"):
                where.append("results.test like :test")
                params["test"] = test[:-1] + "%"
            else:
                where.append("results.test = :test")
                params["test"] = test
        if machine:
            where.append("(results.machine_id like :machine_prefix or machines.hostname = :machine)")
            params.update(machine=machine, machine_prefix=f"{machine}%")
        if run:
            where.append("(results.run_id like :run_prefix or results.run_id like :run_suffix)")
            params.update(run_prefix=f"{run}%", run_suffix=f"%{run}")
        if quant:
            where.append("upper(models.file_type) = upper(:quant)")
            params["quant"] = quant
        if since:
            where.append("results.test_time >= :since")
            params["since"] = since
        allowed = set(_RESULT_COLUMNS) | {"hostname", "file_type", "arch", "file_size"}
        column = order.split(".")[-1]
        if column not in allowed:
            raise ValueError(f"cannot order by {order!r}")
        prefix = "results." if column in _RESULT_COLUMNS else ""
        group = "coalesce(machines.hostname, results.machine_id), " if by_machine else ""
        sql = (
            "select results.*, machines.hostname as hostname, models.file_type as file_type, "
            "models.arch as arch, models.file_size as file_size, runs.status as run_status "
            "from results left join runs on runs.id = results.run_id "
            "left join machines on machines.id = results.machine_id "
            "left join models on models.id = results.model_id "
            f"where {' and '.join(where)} order by {group}{prefix}{column} {'desc' if descending else 'asc'}"
        )
        if limit is not None:
            sql += f" limit {int(limit)} offset {int(offset)}"
        return self.query(sql, params)

    def samples(self, run_id: str) -> list[dict[str, Any]]:
        return self.query("select * from samples where run_id = ? order by t", [run_id])

    def models(self) -> list[dict[str, Any]]:
        return self.query("select * from models order by model_filename")

    def last_speeds(self, machine_id: str) -> dict[str, dict[str, float]]:
        """The newest pp and tg average t/s per model id on one machine (depth 0 only)."""
        rows = self.query(
            "select model_id, n_prompt, n_gen, avg_ts, test_time from results "
            "where machine_id = ? and n_depth = 0 and avg_ts is not null and test != 'chat' "
            "order by test_time", [machine_id],
        )
        out: dict[str, dict[str, float]] = {}
        for row in rows:
            kind = "pp" if row["n_prompt"] and not row["n_gen"] else "tg" if row["n_gen"] and not row["n_prompt"] else None
            if kind:
                out.setdefault(row["model_id"], {})[kind] = row["avg_ts"]
        return out
