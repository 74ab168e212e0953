"""Every custom message of the app, in one place (as Toolong does).

Worker threads answer with these (``post_message`` is thread-safe); handlers run on the UI
thread. Payloads are plain values from ``lab.tui.data``.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message


class MachineDetected(Message):
    """The fingerprint and machine figures are known."""

    def __init__(self, machine: Any) -> None:  # data.MachineContext
        super().__init__()
        self.machine = machine


class LibraryLoaded(Message):
    """The library was scanned and every header read."""

    def __init__(self, entries: list[Any]) -> None:  # list[data.LibraryEntry]
        super().__init__()
        self.entries = entries


class SpeedsLoaded(Message):
    """The newest pp/tg per model id on this machine."""

    def __init__(self, speeds: dict[str, dict[str, float]], model_ids: dict[str, str]) -> None:
        super().__init__()
        self.speeds = speeds
        self.model_ids = model_ids  # newly known ids of library entries (a run registered them)


class ModelDetailsLoaded(Message):
    def __init__(self, key: str, details: dict[str, Any] | None, error: str | None = None) -> None:
        super().__init__()
        self.key = key
        self.details = details
        self.error = error


class ModelDeleted(Message):
    def __init__(self, key: str, error: str | None = None) -> None:
        super().__init__()
        self.key = key
        self.error = error


class ResultsPageLoaded(Message):
    def __init__(self, rows: list[dict[str, Any]], has_more: bool, total: int | None, generation: int) -> None:
        super().__init__()
        self.rows = rows
        self.has_more = has_more
        self.total = total
        self.generation = generation


class ResultsFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class CompareLoaded(Message):
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__()
        self.rows = rows


class ChartLoaded(Message):
    def __init__(self, bars: dict[str, list[Any]], n_rows: int, points: list[Any]) -> None:
        super().__init__()
        self.bars = bars
        self.n_rows = n_rows
        self.points = points


class RunDetailLoaded(Message):
    def __init__(self, detail: dict[str, Any] | None) -> None:
        super().__init__()
        self.detail = detail


class SystemPolled(Message):
    """One reading of the whole machine for the Machine screen."""

    def __init__(self, reading: Any) -> None:  # data.SystemReading
        super().__init__()
        self.reading = reading


class BenchFinished(Message):
    """``run_bench`` returned (any status) or refused to start (``error`` set, no outcome)."""

    def __init__(self, outcome: Any | None, error: str | None = None) -> None:
        super().__init__()
        self.outcome = outcome
        self.error = error


class ResultsChanged(Message):
    """New results were stored; screens that show results reload when next shown."""
