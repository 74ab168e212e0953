"""What ``rightsize`` is asked and what it finds: the question, each candidate with its figures
and judged limits, and the verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.report.recommendation import LimitCheck, LimitSpec, check_limit
from lab.select import Config, command_lines

DEFAULT_TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0")
# The memory estimate predicts peak RSS within about 1%: closer than this to a limit is undecided.
MEMORY_MARGIN = 0.02


@dataclass
class Judged:
    """One limit judged with its figure's 95% interval: ``pass``, ``fail``, ``borderline`` (the
    interval holds the limit) or ``unverified`` (no figure). ``basis`` says where the figure came
    from (``measured``, ``reused``, ``estimate``, ``exact``); ``n`` how many repetitions, chunks or
    items it rests on."""

    check: LimitCheck
    low: float | None = None
    high: float | None = None
    n: int | None = None
    basis: str = "measured"

    @property
    def status(self) -> str:
        c = self.check
        if c.status in ("pass", "fail") and self.low is not None and self.high is not None and \
                self.low < c.limit < self.high:
            return "borderline"
        return c.status

    def describe(self) -> str:
        text = self.check.describe()
        if self.low is not None and self.high is not None and math.isfinite(self.low) and math.isfinite(self.high):
            fmt = (lambda v: f"{v / 2**20:.1f} MiB") if self.check.unit == "bytes" else (lambda v: f"{v:.4g}")
            band = f"±{MEMORY_MARGIN:.0%}" if self.basis == "estimate" else "95%"
            text += f" [{band} {fmt(self.low)}–{fmt(self.high)}]"
        if self.status == "borderline":
            text = f"undecided: {text}"
        if self.basis == "estimate":
            text += " (estimate)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.check.name, "label": self.check.label, "limit": self.check.limit,
                "value": self.check.value, "low": _finite(self.low), "high": _finite(self.high), "n": self.n,
                "basis": self.basis, "status": self.status, "text": self.describe()}


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def samples_to_decide(j: Judged, n: int, cap: int, *, t: bool = True) -> int | None:
    """The fewest samples, at most ``cap``, whose 95% interval would leave the limit if the mean
    and the spread stayed as measured on ``n`` samples (a t-interval when ``t``, else a normal one
    from a standard error, as for KLD over chunks); None when not even ``cap`` samples would.

    It sizes the next measurement of an undecided figure in one step, and stops re-measuring
    (borderline) a figure so close to its limit that the cap cannot tell them apart."""
    from lab.stats import t975

    c = j.check
    if c.value is None or j.low is None or j.high is None or not (math.isfinite(j.low) and math.isfinite(j.high)) \
            or n < 2:
        return None
    dist = abs(c.value - c.limit)
    half = (j.high - j.low) / 2
    if dist == 0:
        return None
    spread = half * math.sqrt(n) / (t975(n - 1) if t else 1.96)  # sd, or the stderr of one sample
    for m in range(n, cap + 1):
        if (t975(m - 1) if t else 1.96) * spread / math.sqrt(m) < dist:
            return m
    return None


def judge(spec: LimitSpec, limit: float, value: float | None, low: float | None = None,
          high: float | None = None, *, n: int | None = None, basis: str = "measured",
          swapped: bool = False) -> Judged:
    """``check_limit`` on one figure, with its interval (``swapped``: measured while the model was
    being paged, which fails a memory limit)."""
    return Judged(check_limit(spec, limit, {spec.key: value, "swapped": swapped}), low, high, n, basis)


@dataclass
class Question:
    """What ``rightsize`` is asked: the model, the candidates, the limits and how to pick."""

    model: str
    types: list[str] = field(default_factory=lambda: list(DEFAULT_TYPES))
    limits: dict[str, float] = field(default_factory=dict)
    prefer: str = "smallest"
    text: Path | None = None
    chunks: int = 4
    max_chunks: int = 32
    suite: str | None = None
    n_threads: int | None = None
    n_gpu_layers: int = -1
    n_prompt: int = 512
    n_gen: int = 128
    repetitions: int = 3
    max_repetitions: int = 24
    ctx_size: int = 4096
    keep: bool = True
    objective: str = "{}"  # min_users is judged at this latency objective (lab.select.objective_key)

    def config(self) -> dict[str, Any]:
        """The configuration every figure is measured and judged at (bench's defaults)."""
        return {"n_threads": self.n_threads, "n_gpu_layers": self.n_gpu_layers, "n_batch": 2048, "n_ubatch": 512,
                "flash_attn": -1, "type_k": "f16", "type_v": "f16"}

    @property
    def test_pp(self) -> str:
        return f"pp{self.n_prompt}"

    @property
    def test_tg(self) -> str:
        return f"tg{self.n_gen}"

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["text"] = str(self.text) if self.text else None
        return d


@dataclass
class Verdict:
    """One candidate and what was found. ``status``: ``pick``, ``pass`` (meets every limit, not
    picked), ``fail``, ``borderline``, ``skipped`` (another candidate was picked before this one
    needed measuring) or ``error`` (a measurement failed)."""

    path: Path
    model_id: str | None
    quant: str | None
    file_size: int | None
    is_source: bool = False
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[Judged] = field(default_factory=list)
    status: str = "pending"
    reason: str = ""
    reused: list[str] = field(default_factory=list)
    measured: list[str] = field(default_factory=list)
    pull_spec: str | None = None  # a Hub file not yet downloaded

    @property
    def name(self) -> str:
        return self.path.name

    def row(self) -> dict[str, Any]:
        """The figures as a model-table row, for recommend's preference orders."""
        return {"model_filename": self.name, "file_size": self.file_size, "file_type": self.quant, **self.figures}

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.path), "model_filename": self.name, "quant": self.quant, "sha256": self.model_id,
                "file_size": self.file_size, "is_source": self.is_source, "status": self.status,
                "reason": self.reason, "figures": self.figures, "checks": [j.to_dict() for j in self.checks],
                "reused": self.reused, "measured": self.measured}


@dataclass
class Outcome:
    """The verdict of one question: every candidate, the pick (None when nothing meets every
    limit) and the ``rightsize`` run that recorded it."""

    question: Question
    candidates: list[Verdict]
    pick: Verdict | None
    run_id: str
    machine_id: str | None
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def commands(self) -> dict[str, str] | None:
        """The pick's ``llama-server`` and ``llama-cli`` command lines at the judged configuration."""
        if self.pick is None:
            return None
        return command_lines(str(self.pick.path), Config(**self.config), self.question.ctx_size)

    def to_dict(self) -> dict[str, Any]:
        pick = None
        if self.pick is not None:
            pick = {"file": str(self.pick.path), "quant": self.pick.quant, "sha256": self.pick.model_id,
                    "config": self.config, "commands": self.commands()}
        return {"run_id": self.run_id, "machine_id": self.machine_id, "pick": pick,
                "question": self.question.to_dict(), "notes": self.notes,
                "candidates": [c.to_dict() for c in self.candidates]}
