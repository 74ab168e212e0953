"""Many devices, one database: ``merge`` brings the measurements of other Rightsizer databases
into one, ``export`` carries a subset out (as a database that merges back, or as JSONL).

Merge rules (the union stays plain and idempotent because every id is globally unique):

* Rows are matched by key: ``id`` (a UUID for runs, results, quality and eval rows; the
  fingerprint hash for machines; the file's sha256 for models) and ``(run_id, t, test)`` for
  samples, which have no id. A row the target lacks is added; an identical row is "present".
* A measurement row (runs, results, samples, quality, eval rows) already in the target is never
  changed: if any value differs, NULL included, the source's row is skipped and reported as a
  conflict (table, key, the columns that differ).
* A machine, model or endpoint row describes the same hardware, file or endpoint under the same key, so a
  NULL in the target ("not known there") is filled from the source and counted as ``filled``;
  differing non-NULL values are a conflict and the target's row is kept. Columns that describe
  one database rather than the machine or file (``first_seen``, a model's ``path`` and
  ``added_at``) are not compared and never copied onto an existing row.
* ``model_files`` (a per-machine cache of file hashes by path) is not merged.
* Each source is merged in one transaction: a failure leaves the target as it was before that
  source. A source is read from a read-only connection and migrated in a temporary copy, so
  the file is never changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from lab.errors import LabError
from lab.store import TABLES, Store, open_read_only

# Exit status of ``rightsizer merge`` when rows were skipped because they differ.
CONFLICT_EXIT = 3

_LOCAL_COLUMNS: dict[str, set[str]] = {"machines": {"first_seen"}, "models": {"path", "added_at"},
                                       "endpoints": {"added_at", "removed_at"}}
_DESCRIPTIVE = {"machines", "models", "endpoints"}
_CHUNK = 500  # ids per "in (...)" query: under SQLite's host-parameter limit
DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")


class FleetError(LabError):
    """A merge or export the user asked for cannot be done as asked."""


@dataclass
class Conflict:
    """A source row skipped because the target holds a differing row under the same key."""

    table: str
    key: str
    columns: list[str]

    def describe(self) -> str:
        verb = "differs" if len(self.columns) == 1 else "differ"
        return f"{self.table} {self.key}: {', '.join(self.columns)} {verb}"


@dataclass
class TableCount:
    added: int = 0
    present: int = 0
    filled: int = 0
    conflicts: int = 0


@dataclass
class MergeReport:
    """What merging one source did, per table."""

    source: Path
    tables: dict[str, TableCount] = field(default_factory=lambda: {t: TableCount() for t in TABLES})
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(c.added for c in self.tables.values())

    def rows(self) -> list[dict[str, Any]]:
        """One dict per table: table, added, present, filled, conflicts."""
        return [{"table": t, "added": c.added, "present": c.present, "filled": c.filled,
                 "conflicts": c.conflicts} for t, c in self.tables.items()]

    def as_dict(self) -> dict[str, Any]:
        return {"source": str(self.source), "tables": self.rows(),
                "conflicts": [{"table": c.table, "key": c.key, "columns": c.columns} for c in self.conflicts]}


# --- reading a source --------------------------------------------------------------------------


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_source(path: Path, target: Path) -> int:
    """Refuse, in one sentence, a source that cannot be merged into ``target``; return its
    schema version."""
    if _same_file(path, target) or path.resolve() == target.resolve():
        raise FleetError(f"{path} is the target database itself; name another database to merge")
    conn, version = open_read_only(path)
    conn.close()
    if version == 0:
        raise FleetError(f"{path} is not a Rightsizer database (it has no schema version)")
    return version


@contextlib.contextmanager
def source_copy(path: Path) -> Iterator[Store]:
    """The source database, copied through SQLite's backup API into a temporary file and
    migrated there to this code's schema; the source file itself is never written."""
    conn, _ = open_read_only(path)
    with tempfile.TemporaryDirectory(prefix="rightsizer-merge-") as tmp:
        copy = Path(tmp) / "source.db"
        dst = sqlite3.connect(str(copy))
        try:
            conn.backup(dst)
        finally:
            dst.close()
            conn.close()
        store = Store(copy)
        try:
            yield store
        finally:
            store.close()


# --- the union ---------------------------------------------------------------------------------


def _q(name: str) -> str:
    """An SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def _columns(conn: sqlite3.Connection, table: str) -> dict[str, str]:
    return {row[1]: row[2] for row in conn.execute(f"pragma table_info({_q(table)})")}


def _rows(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> Iterator[dict[str, Any]]:
    cursor = conn.execute(sql, list(params))
    names = [d[0] for d in cursor.description]
    for values in cursor:
        yield dict(zip(names, values))


def _key_text(table: str, row: dict[str, Any]) -> str:
    if table == "samples":
        return f"run {row.get('run_id')} t={row.get('t')} test={row.get('test')}"
    return str(row.get("id"))


class _Writer:
    """Adds rows to one target connection inside the caller's transaction."""

    def __init__(self, conn: sqlite3.Connection, report: MergeReport):
        self.conn = conn
        self.report = report
        self._have: dict[str, dict[str, str]] = {}

    def ensure_columns(self, table: str, source_columns: dict[str, str]) -> None:
        """Add to the target the columns only the source has (a newer Rightsizer declared
        them), nullable, so nothing the source measured is dropped."""
        have = self._have.setdefault(table, _columns(self.conn, table))
        for name, kind in source_columns.items():
            if name not in have:
                self.conn.execute(f"alter table {_q(table)} add column {_q(name)} {kind}")
                have[name] = kind

    def insert(self, table: str, row: dict[str, Any]) -> None:
        names = list(row)
        self.conn.execute(
            f"insert into {_q(table)} ({', '.join(map(_q, names))}) values ({', '.join('?' * len(names))})",
            [row[n] for n in names],
        )

    def merge_row(self, table: str, row: dict[str, Any], existing: dict[str, Any] | None) -> None:
        count = self.report.tables[table]
        if existing is None:
            self.insert(table, row)
            count.added += 1
            return
        local = _LOCAL_COLUMNS.get(table, set())
        shared = [c for c in row if c in existing and c not in local]
        differ = [c for c in shared if row[c] != existing[c]]
        if table in _DESCRIPTIVE:
            fill = [c for c in differ if existing[c] is None]
            differ = [c for c in differ if existing[c] is not None and row[c] is not None]
            if differ:
                count.conflicts += 1
                self.report.conflicts.append(Conflict(table, _key_text(table, row), differ))
            elif fill:
                self.conn.execute(
                    f"update {_q(table)} set {', '.join(f'{_q(c)} = ?' for c in fill)} where id = ?",
                    [row[c] for c in fill] + [row["id"]],
                )
                count.filled += 1
            else:
                count.present += 1
            return
        if differ:
            count.conflicts += 1
            self.report.conflicts.append(Conflict(table, _key_text(table, row), differ))
        else:
            count.present += 1

    def merge_keyed(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            existing = next(_rows(self.conn, f"select * from {_q(table)} where id = ?", [row["id"]]), None)
            self.merge_row(table, row, existing)

    def merge_samples(self, rows: Iterable[dict[str, Any]]) -> None:
        by_run: dict[Any, dict[tuple[Any, Any], dict[str, Any]]] = {}
        for row in rows:
            run_id = row.get("run_id")
            if run_id not in by_run:
                by_run[run_id] = {
                    (r["t"], r["test"]): r
                    for r in _rows(self.conn, "select * from samples where run_id is ?", [run_id])
                }
            have = by_run[run_id]
            key = (row.get("t"), row.get("test"))
            self.merge_row("samples", row, have.get(key))
            have.setdefault(key, row)


RowSource = dict[str, tuple[dict[str, str], Iterable[dict[str, Any]]]]


def _union(target: Store, tables: RowSource, report: MergeReport) -> None:
    """Write ``tables`` (per table: its source columns and rows) into ``target`` in one
    transaction; on any error the target is rolled back to what it was."""
    conn = target.db.conn
    with target._lock:
        conn.execute("begin immediate")
        try:
            writer = _Writer(conn, report)
            for table in TABLES:
                if table not in tables:
                    continue
                columns, rows = tables[table]
                writer.ensure_columns(table, columns)
                if table == "samples":
                    writer.merge_samples(rows)
                else:
                    writer.merge_keyed(table, rows)
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def merge_from(target: Store, source: Path) -> MergeReport:
    """Merge one source database into ``target`` (see the module's rules)."""
    report = MergeReport(source=source)
    with source_copy(source) as src:
        conn = src.db.conn
        tables: RowSource = {}
        for table in TABLES:
            if src.db[table].exists():
                order = "run_id, t" if table == "samples" else "rowid"
                tables[table] = (_columns(conn, table), _rows(conn, f"select * from {_q(table)} order by {order}"))
        _union(target, tables, report)
    return report


def merge(target: Store, sources: list[Path]) -> list[MergeReport]:
    """Merge every source into ``target``, one transaction each. Every source is checked
    first, so a source that would be refused stops the command before anything is written."""
    for source in sources:
        check_source(source, target.path)
    return [merge_from(target, source) for source in sources]


# --- export ------------------------------------------------------------------------------------


@dataclass
class Selection:
    """The rows of one export, per table, in the order they are written."""

    columns: dict[str, dict[str, str]]
    rows: dict[str, list[dict[str, Any]]]

    def counts(self) -> dict[str, int]:
        return {t: len(self.rows.get(t, [])) for t in TABLES}


def _where_in(store: Store, table: str, column: str, values: Iterable[Any]) -> list[dict[str, Any]]:
    values = sorted({v for v in values if v is not None})
    out: list[dict[str, Any]] = []
    for i in range(0, len(values), _CHUNK):
        chunk = values[i:i + _CHUNK]
        out += _rows(store.db.conn, f"select * from {_q(table)} where {_q(column)} in "
                                    f"({', '.join('?' * len(chunk))}) order by rowid", chunk)
    return out


def select(store: Store, *, model: str | None = None, machine: str | None = None, run: str | None = None,
           since: str | None = None, test: str | None = None) -> Selection:
    """The runs matching the filters (as ``rightsizer results`` matches them; ``since`` is a
    date or time the run started at or after), with every row that belongs to them: results
    (only those of ``test`` when given, and then only runs that have one), samples, quality
    and eval rows, and every machine and model row they name."""
    runs = store.runs(model=model, machine=machine, run=run)
    if since:
        runs = [r for r in runs if (r.get("started_at") or "") >= since]
    run_ids = {r["id"] for r in runs}
    results = _where_in(store, "results", "run_id", run_ids)
    if test:
        wanted = {r["id"] for r in store.results(test=test, model=model, machine=machine, run=run)}
        results = [r for r in results if r["id"] in wanted]
        run_ids = {r["run_id"] for r in results}
    rows: dict[str, list[dict[str, Any]]] = {
        "runs": _where_in(store, "runs", "id", run_ids), "results": results,
        "samples": _where_in(store, "samples", "run_id", run_ids),
        "quality": _where_in(store, "quality", "run_id", run_ids),
        "eval_runs": _where_in(store, "eval_runs", "run_id", run_ids),
        "eval_items": _where_in(store, "eval_items", "run_id", run_ids),
        "load_requests": _where_in(store, "load_requests", "result_id", {r["id"] for r in results}),
    }
    rows["samples"].sort(key=lambda r: (r["run_id"], r["t"]))
    measured = [r for t in ("runs", "results", "quality", "eval_runs", "eval_items") for r in rows[t]]
    rows["machines"] = _where_in(store, "machines", "id", (r.get("machine_id") for r in measured))
    model_ids = {r.get(k) for r in measured for k in ("model_id", "reference_model_id")} - {None}
    models: dict[str, dict[str, Any]] = {}
    while model_ids:  # and the base models of quantized files, so their links resolve
        found = _where_in(store, "models", "id", model_ids)
        models.update((m["id"], m) for m in found)
        model_ids = {m.get("base_model_id") for m in found} - set(models) - {None}
    rows["models"] = list(models.values())
    # Runs against an endpoint name its id in model_id.
    rows["endpoints"] = _where_in(store, "endpoints", "id", (r.get("model_id") for r in measured))
    columns = {t: _columns(store.db.conn, t) for t in TABLES}
    return Selection(columns=columns, rows={t: rows[t] for t in TABLES})


def _check_output(output: Path, source: Path, force: bool) -> None:
    if _same_file(output, source) or output.resolve() == source.resolve():
        raise FleetError(f"{output} is the database being exported; name another output file")
    if output.exists() and not force:
        raise FleetError(f"{output} already exists; use --force to replace it")
    if output.suffix.lower() not in DB_SUFFIXES + (".jsonl",):
        raise FleetError(f"Cannot tell the format of {output}: name it FILE.db or FILE.jsonl")


def export(store: Store, output: Path, selection: Selection, *, force: bool = False) -> dict[str, int]:
    """Write ``selection`` to ``output``: a new Rightsizer database (``.db``, ``.sqlite``),
    which ``merge`` brings back losslessly, or JSONL with one row per line and its ``table``.
    Refuses an existing file unless ``force``; the file appears only when complete."""
    _check_output(output, store.path, force)
    counts = selection.counts()
    if not counts["runs"]:
        raise FleetError("No stored runs match the filters; nothing to export")
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if output.suffix.lower() == ".jsonl":
            with tmp.open("w", encoding="utf-8") as fh:
                for table in TABLES:
                    for row in selection.rows[table]:
                        fh.write(json.dumps({"table": table, **row}, default=str) + "\n")
        else:
            tmp.unlink()
            out = Store(tmp)
            try:
                report = MergeReport(source=store.path)
                _union(out, {t: (selection.columns[t], selection.rows[t]) for t in TABLES}, report)
                out.db.execute("pragma wal_checkpoint(truncate)")
            finally:
                out.close()
            for suffix in ("-wal", "-shm"):  # a replaced database's journal must not outlive it
                Path(f"{output}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, output)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
    return counts
