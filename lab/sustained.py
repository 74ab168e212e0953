"""A sustained run's verdict: does generation slow down as the machine heats up?

``rightsizer bench --sustained SECONDS`` repeats each tg test back to back for that long. Its
speed at the start and at the end are compared over two windows: the first and the last minute
when the run lasted at least two minutes, else its first and last 30% (so the windows never
overlap). A repetition belongs to a window when its midpoint falls inside it; a window's speed
is its tokens over its time (not a mean of per-repetition speeds). The clocks are compared
over the same windows, from the sampler's CPU clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from lab.monitor import THROTTLE_CLOCK_RATIO

WINDOW_S = 60.0  # "first minute" and "last minute"
SHORT_RUN_SHARE = 0.3  # runs under two windows compare their first and last 30% instead


@dataclass
class Rep:
    """One timed repetition: start and end on the sampler's clock, its time and its tokens."""

    t_start: float
    t_end: float
    ns: int
    tokens: int

    @property
    def mid(self) -> float:
        return (self.t_start + self.t_end) / 2


def _speed(reps: list[Rep]) -> float | None:
    ns = sum(r.ns for r in reps)
    return sum(r.tokens for r in reps) * 1e9 / ns if reps and ns > 0 else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def sustained_figures(reps: list[Rep], clocks: Iterable[tuple[float, float | None]],
                      seconds: float) -> dict[str, Any]:
    """The ``sustained_*`` result columns of one sustained test.

    ``reps`` are its timed repetitions in order; ``clocks`` the sampler's (t, CPU MHz) over the
    test; ``seconds`` what was asked for. Speeds are None when a window holds no repetition's
    midpoint (a repetition longer than the window); ``clocks_dropped`` is None when either
    window has no clock reading, else 1 when the last window's mean clock is below
    ``THROTTLE_CLOCK_RATIO`` of the first's.
    """
    out: dict[str, Any] = {
        "sustained_s": seconds, "sustained_window_s": None, "sustained_first_ts": None,
        "sustained_last_ts": None, "sustained_decay_pct": None, "sustained_first_mhz": None,
        "sustained_last_mhz": None, "clocks_dropped": None,
    }
    if not reps:
        return out
    t0, t1 = reps[0].t_start, reps[-1].t_end
    duration = t1 - t0
    window = WINDOW_S if duration >= 2 * WINDOW_S else SHORT_RUN_SHARE * duration
    first = _speed([r for r in reps if r.mid <= t0 + window])
    last = _speed([r for r in reps if r.mid >= t1 - window])
    readings = [(t, mhz) for t, mhz in clocks if mhz is not None]
    first_mhz = _mean([mhz for t, mhz in readings if t0 <= t <= t0 + window])
    last_mhz = _mean([mhz for t, mhz in readings if t1 - window <= t <= t1])
    out.update(
        sustained_window_s=window, sustained_first_ts=first, sustained_last_ts=last,
        sustained_decay_pct=(first - last) / first * 100 if first and last is not None else None,
        sustained_first_mhz=first_mhz, sustained_last_mhz=last_mhz,
        clocks_dropped=(int(last_mhz < THROTTLE_CLOCK_RATIO * first_mhz)
                        if first_mhz and last_mhz is not None else None),
    )
    return out
