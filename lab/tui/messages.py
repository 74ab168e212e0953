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
    def __init__(self, rows: list[dict[str, Any]], has_more: bool, total: int | None, generation: int,
                 machines: list[Any] | None = None) -> None:  # list[data.MachineSummary]
        super().__init__()
        self.rows = rows
        self.has_more = has_more
        self.total = total
        self.generation = generation
        self.machines = machines  # every host with results, when asked for (None: not read)


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


class MachinesChoicesLoaded(Message):
    """The models the Machines screen can compare across machines (``data.ModelTests``)."""

    def __init__(self, models: list[Any]) -> None:
        super().__init__()
        self.models = models


class MachinesCompared(Message):
    """One model's test on every machine (``data.MachineComparison``), or why not."""

    def __init__(self, comparison: Any | None, error: str | None = None) -> None:
        super().__init__()
        self.comparison = comparison
        self.error = error


class MeasuredOnLoaded(Message):
    """Per model id, the hosts it was measured on with how many results each."""

    def __init__(self, hosts: dict[str, list[tuple[str, int]]]) -> None:
        super().__init__()
        self.hosts = hosts


class RunDetailLoaded(Message):
    def __init__(self, detail: dict[str, Any] | None) -> None:
        super().__init__()
        self.detail = detail


class SystemPolled(Message):
    """One reading of the whole machine for the Machine screen; ``sizing_only`` when it was
    taken only to size the screen's gauges (its figures are not shown)."""

    def __init__(self, reading: Any, sizing_only: bool = False) -> None:  # data.SystemReading
        super().__init__()
        self.reading = reading
        self.sizing_only = sizing_only


class BenchFinished(Message):
    """``run_bench`` returned (any status) or refused to start (``error`` set, no outcome)."""

    def __init__(self, outcome: Any | None, error: str | None = None) -> None:
        super().__init__()
        self.outcome = outcome
        self.error = error


class ResultsChanged(Message):
    """New results were stored; screens that show results reload when next shown."""


# --- hub ---------------------------------------------------------------------------------------


class HubSearched(Message):
    """A Hub search answered: the hits (``lab.hub.RepoHit``), or the sentence saying why not."""

    def __init__(self, query: str, generation: int, hits: list[Any], error: str | None = None) -> None:
        super().__init__()
        self.query = query
        self.generation = generation
        self.hits = hits
        self.error = error


class HubFilesLoaded(Message):
    """A repo's quant files with their fit checks (``lab.hub.FitCheck``), or why not."""

    def __init__(self, repo_id: str, checks: list[Any], error: str | None = None) -> None:
        super().__init__()
        self.repo_id = repo_id
        self.checks = checks
        self.error = error


class HubDownloadProgress(Message):
    """A throttled ``lab.hub.DownloadProgress`` of the queued download ``key``."""

    def __init__(self, key: str, progress: Any) -> None:
        super().__init__()
        self.key = key
        self.progress = progress


class HubDownloadFinished(Message):
    """A queued download ended: pulled and registered (``pulled`` set), cancelled, or failed."""

    def __init__(self, key: str, pulled: Any | None = None, error: str | None = None,
                 cancelled: bool = False) -> None:
        super().__init__()
        self.key = key
        self.pulled = pulled
        self.error = error
        self.cancelled = cancelled


# --- quality, accuracy and the ladder view ----------------------------------------------------


class ModelFiguresLoaded(Message):
    """The newest quality row and eval run of every model, by model id (Library columns)."""

    def __init__(self, quality: dict[str, dict[str, Any]], accuracy: dict[str, dict[str, Any]]) -> None:
        super().__init__()
        self.quality = quality
        self.accuracy = accuracy


class LadderFound(Message):
    """The base model of the Library's highlighted model (None: it is in no ladder)."""

    def __init__(self, model_arg: str, base_model_id: str | None) -> None:
        super().__init__()
        self.model_arg = model_arg  # how the CLI names the model, for the hint
        self.base_model_id = base_model_id


class LadderLoaded(Message):
    """The ladder view's rows."""

    def __init__(self, ladder: Any) -> None:  # data.Ladder
        super().__init__()
        self.ladder = ladder


class EndpointsLoaded(Message):
    """The registered endpoints, for the Library's endpoint section."""

    def __init__(self, endpoints: list[Any]) -> None:  # lab.endpoints.Endpoint
        super().__init__()
        self.endpoints = endpoints


# --- right-size --------------------------------------------------------------------------------


class RightsizeProgress(Message):
    """One line of ``rightsize``'s progress (a candidate's stage, a skip and why, a verdict)."""

    def __init__(self, line: str) -> None:
        super().__init__()
        self.line = line


class RightsizeFinished(Message):
    """``rightsize`` returned an outcome, or stopped: ``error`` says why (``cancelled`` when the
    user stopped it; what was measured is stored either way)."""

    def __init__(self, outcome: Any | None, error: str | None = None, cancelled: bool = False) -> None:
        super().__init__()
        self.outcome = outcome  # lab.rightsize.Outcome
        self.error = error
        self.cancelled = cancelled
