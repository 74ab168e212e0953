"""The state of the run being watched, folded from ``run_bench``'s events.

The bench thread only appends each event to a deque (``post``: no lock, no Textual call, no
wake-up of the UI loop). The Run screen drains that deque on a 2 Hz timer and folds everything
that arrived into this state in one go, so ten samples a second and bursts of llama.cpp log
lines cost the UI one update every half second. No Textual here: the fold is tested alone.
"""

from __future__ import annotations

import collections
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

CURVE_POINTS = 240  # samples kept for the live curves (24 s at 10 Hz)
LOG_LINES_PER_DRAIN = 400
# On two cores every repaint takes the UI thread from one of llama.cpp's threads, and the other
# waits for it at the next barrier (a plain Textual app redrawing at 10 Hz cost ~10% of tg).
BEAT_S = 1.0  # what only the clock moves (ETAs) and the curves: repainted at least this often
QUIET_BEAT_S = 2.0  # ... while a test is being timed (pp, tg, chat), when the UI costs most


@dataclass
class Drained:
    """What changed in one drain, so the screen touches only the widgets that need it."""

    events: int = 0
    progress: bool = False
    samples: bool = False
    results: list[dict[str, Any]] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    run_ends: list[dict[str, Any]] = field(default_factory=list)
    dropped_log_lines: int = 0


class LiveRun:
    """Everything the live dashboard shows. ``post`` is the bench thread's ``on_event``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.inbox: collections.deque[dict[str, Any]] = collections.deque()
        self.painted_at = float("-inf")  # when the dashboard last repainted (time.monotonic)
        self.samples_waiting = False  # samples folded since that repaint
        self.reset()

    def reset(self) -> None:
        self.inbox.clear()
        self.started_at: float | None = None
        self.status = "idle"  # idle, planning, running, cancelling, ok, failed, cancelled
        self.error: str | None = None
        self.model_filename: str | None = None
        self.run_index = 0
        self.n_runs = 1
        self.tests: list[str] = []
        self.repetitions = 0
        self.load_ms: float | None = None
        self.test_index: int | None = None
        self.test_name: str | None = None
        self.test_reps = 0
        self.reps_done = 0
        self.tests_done = 0
        self.rep_ts: list[float] = []
        self.rep_s: list[float] = []
        self.chat_tokens: int | None = None
        self.rss: collections.deque[float] = collections.deque(maxlen=CURVE_POINTS)
        self.cpu: collections.deque[float] = collections.deque(maxlen=CURVE_POINTS)
        self.last_sample: dict[str, Any] = {}  # newest known value per field (None never overwrites)
        self.peak_rss: int | None = None
        self.gpu_seen = False
        self.results: list[dict[str, Any]] = []
        self.failures: list[str] = []
        # a load run (``lab.load.run_load``): the level being served and its running figures
        self.kind = "bench"  # or "load"
        self.n_levels = 0  # levels asked for (a --find-max search: unknown ahead, 0)
        self.duration_s: float | None = None
        self.level: str | None = None  # "users 4" or "rate 1.5/s"
        self.load: dict[str, Any] = {}  # the newest load_progress event of this level

    # -- bench thread
    def post(self, event: dict[str, Any]) -> None:
        """Called by ``run_bench`` on its thread: an append, nothing else."""
        self.inbox.append(event)

    # -- UI thread
    def begin(self, kind: str = "bench", n_levels: int = 0, duration_s: float | None = None) -> None:
        self.reset()
        self.status = "planning"
        self.started_at = self.clock()
        self.kind, self.n_levels, self.duration_s = kind, n_levels, duration_s

    def drain(self) -> Drained:
        out = Drained()
        while True:
            try:
                event = self.inbox.popleft()
            except IndexError:
                break
            out.events += 1
            self._fold(event, out)
        if len(out.log_lines) > LOG_LINES_PER_DRAIN:
            out.dropped_log_lines = len(out.log_lines) - LOG_LINES_PER_DRAIN
            out.log_lines = out.log_lines[-LOG_LINES_PER_DRAIN:]
        return out

    def _fold(self, e: dict[str, Any], out: Drained) -> None:
        kind = e.get("event")
        if kind == "sample":
            s = e.get("sample") or {}
            # The sampler's last tick after the child exits reads nothing: keep what was known.
            self.last_sample.update({k: v for k, v in s.items() if v is not None})
            if s.get("rss_bytes") is not None:
                self.rss.append(s["rss_bytes"] / 2**20)
                self.peak_rss = max(self.peak_rss or 0, int(s["rss_bytes"]))
            if s.get("cpu_percent") is not None:
                self.cpu.append(float(s["cpu_percent"]))
            if any(s.get(k) is not None for k in ("gpu_mem_used_bytes", "gpu_util", "gpu_power_w")):
                self.gpu_seen = True
            out.samples = True
        elif kind == "log":
            out.log_lines.append(str(e.get("line", "")))
        elif kind == "rep":
            self.reps_done = int(e.get("rep", 0)) + 1
            if e.get("ts") is not None:
                self.rep_ts.append(float(e["ts"]))
            if e.get("ns") is not None:
                self.rep_s.append(float(e["ns"]) / 1e9)
            self.chat_tokens = None
            out.progress = True
        elif kind == "token":
            # the token count of the answer being generated: shown at the next beat, not
            # repainted per token while latency is being measured
            self.chat_tokens = e.get("tokens")
        elif kind == "test_start":
            self.test_index = int(e.get("index", 0))
            self.test_name = e.get("test")
            self.test_reps = int(e.get("reps") or 0)
            self.reps_done = 0
            self.rep_ts, self.rep_s = [], []
            self.chat_tokens = None
            out.progress = True
        elif kind == "result":
            row = e.get("row") or {}
            self.results.append(row)
            self.tests_done += 1
            out.results.append(row)
            out.progress = True
        elif kind == "level_start":
            self.test_name = e.get("test")
            self.test_index = len(self.results)
            self.level = (f"users {e['users']}" if e.get("users") is not None else f"rate {e.get('rate'):g}/s")
            self.load = {}
            out.progress = True
        elif kind == "load_progress":  # four a second: shown at the next beat
            self.load = e
        elif kind == "level":
            row = e.get("row") or {}
            self.results.append(row)
            self.tests_done += 1
            self.test_name = None  # the level's last figures stay on show until the next one starts
            out.results.append(row)
            out.progress = True
        elif kind == "probe":
            verdict = "passes" if e.get("passed") else "fails"
            attained = e.get("slo_attainment")
            why = e.get("reason") or (f"SLO {attained:.1f}%" if attained is not None else "SLO n/a")
            out.log_lines.append(f"find max: {e.get('test')} {verdict} ({why})")
        elif kind == "run_start":
            self.status = "running"
            self.model_filename = e.get("model_filename")
            self.run_index = int(e.get("index", 0))
            self.n_runs = int(e.get("n_runs", 1))
            self.tests = list(e.get("tests") or [])
            self.repetitions = int(e.get("repetitions") or 0)
            self.tests_done = 0
            self.test_index = None
            self.test_name = None
            self.reps_done = self.test_reps = 0
            self.rep_ts, self.rep_s = [], []
            self.load_ms = None
            out.progress = True
        elif kind == "loaded":
            self.load_ms = e.get("load_ms")
            out.progress = True
        elif kind == "run_end":
            if e.get("status") == "failed" and e.get("error"):
                self.failures.append(f"{self.model_filename or 'run'}: {e['error']}")
            out.run_ends.append(e)
            out.progress = True

    def repaint_due(self, drained: Drained, now: float) -> bool:
        """Whether the dashboard should repaint after this drain: at once when an event changed
        something (a repetition, a result), else once per beat, so that the curves and the ETAs
        move together; while a test is being timed the beat is slower."""
        self.samples_waiting = self.samples_waiting or drained.samples
        # a load level's running figures are shown once a second (its requests are timed
        # throughout, so there is no quieter moment to wait for)
        timing = self.status == "running" and self.test_name is not None and self.kind != "load"
        beat = QUIET_BEAT_S if timing else BEAT_S
        if drained.progress or not self.active or now - self.painted_at >= beat:
            self.painted_at = now
            return True
        return False

    # -- figures for the dashboard
    @property
    def active(self) -> bool:
        return self.status in ("planning", "running", "cancelling")

    @property
    def current_ts(self) -> float | None:
        return self.rep_ts[-1] if self.rep_ts else None

    @property
    def mean_ts(self) -> float | None:
        return statistics.fmean(self.rep_ts) if self.rep_ts else None

    @property
    def n_tests(self) -> int:
        return max(1, len(self.tests))

    def test_fraction(self) -> float:
        if self.kind == "load":
            if not self.test_name or not self.duration_s:
                return 0.0
            return min(1.0, float(self.load.get("elapsed_s") or 0.0) / self.duration_s)
        if not self.test_reps:
            return 0.0
        return min(1.0, self.reps_done / self.test_reps)

    def overall_fraction(self) -> float:
        if self.status in ("ok",):
            return 1.0
        if self.kind == "load":  # a search's levels are not known ahead: no fraction
            if not self.n_levels:
                return 0.0
            current = self.test_fraction() if self.test_name else 0.0
            return min(1.0, (self.tests_done + current) / self.n_levels)
        in_run = (self.tests_done + (self.test_fraction() if self.test_index is not None and
                                     self.tests_done <= (self.test_index or 0) else 0.0)) / self.n_tests
        return min(1.0, (self.run_index + min(1.0, in_run)) / max(1, self.n_runs))

    def test_eta(self) -> float | None:
        """Mean time of this test's finished repetitions times those left (a load level: the
        seconds it has left to send requests)."""
        if self.kind == "load":
            if not self.test_name or not self.duration_s:
                return None
            return max(0.0, self.duration_s - float(self.load.get("elapsed_s") or 0.0))
        if not self.rep_s or not self.test_reps:
            return None
        return statistics.fmean(self.rep_s) * max(0, self.test_reps - self.reps_done)

    def elapsed(self) -> float | None:
        return None if self.started_at is None else self.clock() - self.started_at

    def overall_eta(self) -> float | None:
        """Linear extrapolation of the elapsed time; None until there is something to go on."""
        fraction, elapsed = self.overall_fraction(), self.elapsed()
        if elapsed is None or fraction < 0.02 or not self.active:
            return None
        return elapsed / fraction - elapsed
