"""The recommendation: the model (and the configuration it was measured at) that meets every
limit, picked by the user's preference, and why each other candidate does not."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from lab.errors import LabError
from lab.report.common import fmt_bytes, fmt_figure, pct_diff
from lab.report.table import none_last, model_table
from lab.select import CONFIG_KEYS, Config, command_lines

if TYPE_CHECKING:
    from lab.store import Store

@dataclass(frozen=True)
class LimitSpec:
    """A limit ``recommend`` understands: its parameter, the model-table key it checks, and
    whether the figure must be at least (``min``) or at most (``max``) the limit."""

    name: str
    key: str
    kind: str  # "min" or "max"
    label: str
    unit: str = ""  # "bytes" formats as sizes


LIMITS: tuple[LimitSpec, ...] = (
    LimitSpec("min_tg", "tg_ts", "min", "tg t/s"),
    LimitSpec("min_pp", "pp_ts", "min", "pp t/s"),
    LimitSpec("max_ttft_ms", "ttft_ms", "max", "chat TTFT ms"),
    LimitSpec("max_itl_p95_ms", "itl_p95_ms", "max", "chat ITL p95 ms"),
    LimitSpec("max_memory_bytes", "peak_rss_bytes", "max", "peak RSS", "bytes"),
    LimitSpec("max_vram_bytes", "peak_vram_bytes", "max", "peak VRAM", "bytes"),
    LimitSpec("max_j_per_token", "j_per_token", "max", "J/token"),
    LimitSpec("min_accuracy", "accuracy", "min", "accuracy"),
    LimitSpec("max_kld", "kld_mean", "max", "KLD"),
    LimitSpec("max_ppl_ratio", "ppl_ratio", "max", "PPL ratio"),
    LimitSpec("max_cost_per_mtok", "usd_per_mtok", "max", "USD per 1M tokens"),
    # the most concurrent users served within a latency objective (``load --find-max``)
    LimitSpec("min_users", "max_users_at_slo", "min", "users at the objective"),
)


def limit_specs(test_pp: str = "pp512", test_tg: str = "tg128") -> list[LimitSpec]:
    """:data:`LIMITS` with the speed labels naming the tests checked (``tg128 t/s``)."""
    labels = {"min_tg": f"{test_tg} t/s", "min_pp": f"{test_pp} t/s"}
    return [replace(s, label=labels.get(s.name, s.label)) for s in LIMITS]


@dataclass
class LimitCheck:
    """One limit checked against one candidate: ``pass``, ``fail`` or ``unverified`` (the
    figure was never measured). ``delta`` is value minus limit; ``delta_pct`` relative to it."""

    name: str
    key: str
    kind: str
    label: str
    limit: float
    value: float | None
    status: str
    delta: float | None
    delta_pct: float | None
    unit: str = ""
    swapped: bool = False  # measured while the model was being paged: fails a memory limit

    def _fmt(self, value: float | None) -> str:
        return fmt_bytes(value) if self.unit == "bytes" else fmt_figure(value)

    def describe(self) -> str:
        """``"tg128 t/s 12.30 is 7.70 below the minimum 20 (-38.5%)"`` and the like."""
        if self.status == "unverified" and self.key == "usd_per_mtok":
            return f"{self.label} could not be computed (limit ≤ {self._fmt(self.limit)})"
        if self.status == "unverified":
            return f"{self.label} was never measured (limit {'≥' if self.kind == 'min' else '≤'} {self._fmt(self.limit)})"
        if self.swapped:
            return (f"{self.label} {self._fmt(self.value)} was measured while the model was being paged "
                    "(swapped): it does not fit")
        pct = f" ({self.delta_pct:+.1f}%)" if self.delta_pct is not None else ""
        assert self.delta is not None
        if self.status == "pass":
            sign = "≥" if self.kind == "min" else "≤"
            return f"{self.label} {self._fmt(self.value)} {sign} {self._fmt(self.limit)}"
        if self.kind == "min":
            return f"{self.label} {self._fmt(self.value)} is {self._fmt(-self.delta)} below the minimum {self._fmt(self.limit)}{pct}"
        return f"{self.label} {self._fmt(self.value)} is {self._fmt(self.delta)} over the limit {self._fmt(self.limit)}{pct}"


@dataclass
class Candidate:
    """A model-table row with its checks. ``status`` is ``pass`` (every limit met), ``fail``
    (at least one limit measured and not met; ``first_failure`` is the first in limit order)
    or ``unverified`` (none failed, but a figure a limit needs was never measured)."""

    row: dict[str, Any]
    checks: list[LimitCheck]

    @property
    def status(self) -> str:
        statuses = {c.status for c in self.checks}
        return "fail" if "fail" in statuses else "unverified" if "unverified" in statuses else "pass"

    @property
    def first_failure(self) -> LimitCheck | None:
        return next((c for c in self.checks if c.status == "fail"), None)

    @property
    def unverified(self) -> list[LimitCheck]:
        return [c for c in self.checks if c.status == "unverified"]

    def reason(self) -> str:
        """Why this candidate is where it is, in a phrase."""
        failure = self.first_failure
        if failure is not None:
            return failure.describe()
        missing = self.unverified
        if missing:
            text = "not measured: " + ", ".join(c.label for c in missing)
            if any(c.key == "usd_per_mtok" for c in missing) and self.row.get("cost_missing"):
                text += f" (cost needs {', '.join(self.row['cost_missing'])})"
            return text
        return "meets every limit"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "reason": self.reason(),
            "first_failure": asdict(self.first_failure) if self.first_failure else None,
            "unverified": [c.name for c in self.unverified],
            "checks": [asdict(c) for c in self.checks], **self.row,
        }


def _memory_need(row: Mapping[str, Any]) -> float | None:
    """Peak RSS plus peak VRAM: the memory a deployment must provide (None: neither measured)."""
    known = [row.get(k) for k in ("peak_rss_bytes", "peak_vram_bytes") if row.get(k) is not None]
    return float(sum(known)) if known else None


def _smallest(r: Mapping[str, Any]) -> tuple[Any, ...]:
    return (none_last(r.get("file_size")), none_last(r.get("model_size")), none_last(r.get("peak_rss_bytes")),
            r.get("model_filename") or "", r.get("machine_id") or "")


def _neg(value: float | None) -> float | None:
    return None if value is None else -float(value)


# How each preference orders candidates; ties fall back to the smallest file.
PREFER: dict[str, Callable[[Mapping[str, Any]], tuple[Any, ...]]] = {
    "smallest": _smallest,
    "fastest": lambda r: (none_last(_neg(r.get("tg_ts"))), none_last(_neg(r.get("pp_ts"))), *_smallest(r)),
    "quality": lambda r: (none_last(r.get("kld_mean")), none_last(r.get("ppl_ratio")),
                          none_last(_neg(r.get("accuracy"))), *_smallest(r)),
    # Cost per 1M generated tokens first; a candidate whose cost cannot be computed comes after
    # every one whose cost can, ranked by the memory a deployment must provide.
    "cheapest": lambda r: (none_last(r.get("usd_per_mtok")), none_last(_memory_need(r)), *_smallest(r)),
}
PREFER_WORDS = {"smallest": "the smallest", "fastest": "the fastest", "quality": "the highest-quality",
                "cheapest": "the cheapest"}
PREFER_HELP = {
    "smallest": "smallest file, then smallest peak RSS",
    "fastest": "highest generation t/s, then prompt t/s",
    "quality": "lowest KLD against the reference, then PPL ratio, then highest accuracy",
    "cheapest": ("lowest cost per 1M generated tokens (machine cost settings and tg speed); candidates whose "
                 "cost cannot be computed come last, by least peak memory (RSS + VRAM)"),
}


@dataclass
class Recommendation:
    """What :func:`recommend` found. ``pick`` is the first passing candidate in ``prefer`` order
    (None when nothing passes); ``passing``, ``failing`` and ``unverified`` partition every
    candidate. ``config`` is the configuration judged (None: each model's best measured)."""

    pick: Candidate | None
    passing: list[Candidate]
    failing: list[Candidate]
    unverified: list[Candidate]
    limits: dict[str, float]
    machine_id: str | None
    notes: list[str] = field(default_factory=list)
    prefer: str = "smallest"
    config: dict[str, Any] | None = None
    # the baseline every candidate is compared with (lab.report.baseline.add_baseline), if any
    baseline: dict[str, Any] | None = None

    def _order(self, c: Candidate) -> tuple[Any, ...]:
        return PREFER[self.prefer](c.row)

    @property
    def candidates(self) -> list[Candidate]:
        """Every candidate, in the order the pick was made in."""
        return sorted(self.passing + self.failing + self.unverified, key=self._order)

    def commands(self) -> dict[str, str] | None:
        """The ``llama-server`` and ``llama-cli`` command lines that run the pick at the
        configuration it was measured at (None without a pick)."""
        if self.pick is None:
            return None
        row = self.pick.row
        config = Config(**row["config_values"]) if row.get("config_values") else Config()
        return command_lines(row.get("path") or row.get("model_filename") or "MODEL.gguf", config, row.get("n_ctx"))

    def summary(self) -> str:
        """The pick and why, or why there is none, in one or two sentences."""
        n = len(self.candidates)
        if self.pick is None:
            parts = []
            if self.failing:
                parts.append(f"{len(self.failing)} fail{'s' if len(self.failing) == 1 else ''} a limit")
            if self.unverified:
                parts.append(f"{len(self.unverified)} could not be checked (a figure was never measured)")
            return f"No model meets every limit: of {n} candidate{'s' if n != 1 else ''}, {' and '.join(parts)}."
        row = self.pick.row
        quant = f"{row['file_type']}, " if row.get("file_type") else ""
        size = f"file {fmt_bytes(row['file_size'])}" if row.get("file_size") is not None else (
            f"weights {fmt_bytes(row.get('model_size'))}")
        where = f" on {row['hostname'] or row['machine_id']}" if self.machine_id is None and row.get("machine_id") else ""
        met = "; ".join(c.describe() for c in self.pick.checks)
        why = f": {met}" if met else " (no limits were given)"
        n_pass = len(self.passing)
        which = ("the only candidate that meets" if n_pass == 1
                 else f"{PREFER_WORDS[self.prefer]} of {n_pass} candidates that meet")
        at = f" Measured at {row['config']}." if row.get("config") else " No speed was measured for it."
        return f"{row['model_filename']} ({quant}{size}){where} is {which} every limit{why}.{at}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "pick": self.pick.to_dict() if self.pick else None, "summary": self.summary(),
            "prefer": self.prefer, "config": self.config, "commands": self.commands(),
            "limits": self.limits, "machine_id": self.machine_id, "notes": self.notes,
            "candidates": [c.to_dict() for c in self.candidates], "baseline": self.baseline,
        }


def check_limit(spec: LimitSpec, limit: float, row: dict[str, Any]) -> LimitCheck:
    """Check one limit against one model-table row; a missing figure is ``unverified``."""
    value = row.get(spec.key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return LimitCheck(spec.name, spec.key, spec.kind, spec.label, limit, None, "unverified", None, None, spec.unit)
    ok = value >= limit if spec.kind == "min" else value <= limit
    # A figure measured while the model was paged in and out is that of a model that does not
    # fit: it fails a memory limit whatever its peak says.
    swapped = spec.unit == "bytes" and bool(row.get("swapped"))
    delta = value - limit
    return LimitCheck(spec.name, spec.key, spec.kind, spec.label, limit, value,
                      "pass" if ok and not swapped else "fail", delta, pct_diff(value, limit), spec.unit, swapped)


def _cost_notes(rows: list[dict[str, Any]], prefer: str) -> list[str]:
    """What the cost figures rest on, and which candidates have none (and what they need)."""
    costed = [r for r in rows if r.get("usd_per_mtok") is not None]
    uncosted = [r for r in rows if r.get("usd_per_mtok") is None]
    notes = []
    if costed:
        notes.append("Cost is USD per 1M generated tokens: machine price amortised over its busy hours plus "
                     "energy, at each candidate's measured tg speed (endpoints: their prices).")
    if uncosted:
        needs = sorted({need for r in uncosted for need in r.get("cost_missing") or []})
        which = "No candidate has" if not costed else f"{len(uncosted)} candidate{'s' if len(uncosted) != 1 else ''} " \
                f"{'have' if len(uncosted) != 1 else 'has'}"
        if prefer != "cheapest":
            then = "a cost limit leaves them unverified."
        elif costed:
            then = "'cheapest' ranks them after the costed ones, by peak memory (RSS + VRAM)."
        else:
            then = "'cheapest' ranks by peak memory (RSS + VRAM) as a stand-in."
        notes.append(f"{which} a cost figure (needs {'; '.join(needs) or 'a tg speed'}); {then}")
    return notes


def current_machine_id() -> str | None:
    """This machine's fingerprint id."""
    from lab.hardware import fingerprint

    return fingerprint().get("id")


def _has_results(store: "Store", machine_id: str) -> bool:
    return bool(store.query("select 1 from results where machine_id like ? or machine_id in "
                            "(select id from machines where hostname = ?) limit 1", [f"{machine_id}%", machine_id]))


def _add_max_users(store: "Store", rows: list[dict[str, Any]], objective: str, need: int) -> None:
    """Each candidate's ``max_users_at_slo`` at the objective, on its own machine and at the
    threads and GPU layers its other figures come from (None: never searched there, or a search that
    passed its ceiling below ``need`` — a lower bound that cannot decide the limit — so the
    ``min_users`` limit is left unverified)."""
    from lab.select import max_users_at_slo

    for row in rows:
        # load takes threads and GPU layers; its other settings are its own, never the bench's
        config = {k: (row.get("config_values") or {}).get(k) for k in ("n_threads", "n_gpu_layers")}
        found = max_users_at_slo(store, row["model_id"], row.get("machine_id"), objective,
                                 config) if row.get("model_id") else None
        if found and found["capped"] and found["max_users_at_slo"] < need:
            found = None
        row["max_users_at_slo"] = found["max_users_at_slo"] if found else None
        row["max_kv_bytes"] = found["max_kv_bytes"] if found else None


def recommend(store: "Store", *, machine_id: str | None = None, min_tg: float | None = None,
              min_pp: float | None = None, max_ttft_ms: float | None = None,
              max_itl_p95_ms: float | None = None, max_memory_bytes: int | None = None,
              max_vram_bytes: int | None = None, max_j_per_token: float | None = None,
              min_accuracy: float | None = None, max_kld: float | None = None,
              max_ppl_ratio: float | None = None, max_cost_per_mtok: float | None = None,
              suite: str | None = None, min_users: int | None = None, objective: str | None = None,
              test_pp: str = "pp512", test_tg: str = "tg128", prefer: str = "smallest",
              config: Mapping[str, Any] | None = None, baseline: str | None = None,
              model_ids: Iterable[str] | None = None) -> Recommendation:
    """The model that meets every limit given, first in ``prefer`` order (:data:`PREFER`).

    Candidates are the rows of :func:`model_table` on ``machine_id`` (id, id prefix or hostname):
    every model with any stored figure. Without a machine, this machine is used when it has
    results; otherwise every machine, with a note. ``config`` (keys of
    :data:`lab.select.CONFIG_KEYS`) judges every model at that configuration; without it each
    model is judged at its best measured configuration, and the notes say so. A candidate
    lacking a figure that a limit needs is *unverified*: it is never picked and never counted as
    passing. ``min_accuracy`` is a fraction (0.8 = 80%); ``suite`` picks the eval suite whose
    accuracy counts (default: each model's newest completed eval). ``baseline`` (``endpoint:NAME``
    or a candidate's file name, path or model id prefix) compares every candidate with it (see
    :mod:`lab.report.baseline`; each row gets ``vs_baseline``). ``model_ids`` keeps only those
    models as candidates (a ladder); the baseline may lie outside them. Raises LabError when the
    store holds no figures to choose from, or a limit or preference is out of range.
    ``min_users`` is judged against the newest ``load --find-max`` at exactly ``objective``
    (:func:`lab.select.objective_key`) on the candidate's machine.
    """
    if prefer not in PREFER:
        raise LabError(f"--prefer takes {', '.join(PREFER)}, not {prefer!r}")
    given = {"min_tg": min_tg, "min_pp": min_pp, "max_ttft_ms": max_ttft_ms, "max_itl_p95_ms": max_itl_p95_ms,
             "max_memory_bytes": max_memory_bytes, "max_vram_bytes": max_vram_bytes,
             "max_j_per_token": max_j_per_token, "min_accuracy": min_accuracy, "max_kld": max_kld,
             "max_ppl_ratio": max_ppl_ratio, "max_cost_per_mtok": max_cost_per_mtok, "min_users": min_users}
    if min_users is not None and (not objective or objective == "{}"):
        raise LabError("--min-users is judged at a latency objective: give --slo-ttft-ms, --slo-itl-p95-ms "
                       "or --slo-e2e-ms as `rightsizer load --find-max` measured it")
    limits = {k: float(v) for k, v in given.items() if v is not None}
    for name, value in limits.items():
        if math.isnan(value) or value < 0:
            raise LabError(f"The limit {name} must be a non-negative number, not {value:g}")
    if "min_accuracy" in limits and limits["min_accuracy"] > 1:
        raise LabError(f"min_accuracy is a fraction between 0 and 1 (0.8 means 80%), not {limits['min_accuracy']:g}")
    for key in ("max_memory_bytes", "max_vram_bytes"):
        if key in limits:
            limits[key] = int(limits[key])
    wanted = {k: v for k, v in (config or {}).items() if v is not None}
    unknown = sorted(set(wanted) - set(CONFIG_KEYS))
    if unknown:
        raise LabError(f"{', '.join(unknown)} is not a configuration setting ({', '.join(CONFIG_KEYS)})")

    notes: list[str] = []
    chosen_machine = machine_id
    rows: list[dict[str, Any]]
    if machine_id:
        if not _has_results(store, machine_id):
            raise LabError(f"No results are stored for machine {machine_id!r}")
        rows = model_table(store, machine_id, test_pp, test_tg, suite=suite, config=wanted)
    else:
        here = current_machine_id()
        rows = model_table(store, here, test_pp, test_tg, suite=suite, config=wanted) if here else []
        if here and _has_results(store, here):
            chosen_machine = here
        else:
            everywhere = model_table(store, None, test_pp, test_tg, suite=suite, config=wanted)
            machines = sorted({r["machine_id"] for r in everywhere if r.get("machine_id")})
            if machines:
                rows = everywhere
                notes.append(f"This machine ({here or 'unknown'}) has no results; candidates come from "
                             f"{len(machines)} other machine{'s' if len(machines) != 1 else ''}, so speeds and "
                             "memory were measured elsewhere.")
            else:
                rows = rows or everywhere
                chosen_machine = here
    all_rows = rows
    if model_ids is not None:
        keep = set(model_ids)
        rows = [r for r in rows if r.get("model_id") in keep]
    if not rows:
        raise LabError("No figures are stored yet; run `rightsizer bench MODEL` first")
    if wanted:
        shown = " ".join(Config(**wanted).llama_args())
        notes.append(f"Every model is judged at {shown} (other settings: as measured); a model never "
                     "measured there has no speed figures.")
    else:
        notes.append("Each model is judged at its best measured configuration (the one covering the most "
                     f"of {test_pp}, {test_tg} and chat, then the fastest {test_tg}); pass -t, -ngl, -b, -ub, -fa, "
                     "-ctk or -ctv to judge one configuration.")
    if any(r.get("other_configs") for r in rows):
        notes.append("Some models were also measured at other configurations; their figures are not mixed in "
                     "(see `rightsizer results`).")
    if prefer == "cheapest" or "max_cost_per_mtok" in limits:
        notes += _cost_notes(rows, prefer)
    if "min_users" in limits:
        _add_max_users(store, rows, objective or "{}", int(limits["min_users"]))
        notes.append(f"Users at the objective come from `rightsizer load --find-max` at {objective}.")
    active = [spec for spec in limit_specs(test_pp, test_tg) if spec.name in limits]
    candidates = [Candidate(row, [check_limit(spec, limits[spec.name], row) for spec in active]) for row in rows]
    order = PREFER[prefer]
    candidates.sort(key=lambda c: order(c.row))
    passing = [c for c in candidates if c.status == "pass"]
    failing = [c for c in candidates if c.status == "fail"]
    unverified = [c for c in candidates if c.status == "unverified"]
    if not limits:
        notes.append(f"No limits were given, so every candidate passes and {PREFER_WORDS[prefer]} is picked.")
    if "min_accuracy" in limits and not suite:
        suites = sorted({r["eval_suite"] for r in rows if r.get("eval_suite")})
        if len(suites) > 1:
            notes.append(f"Accuracy comes from different eval suites ({', '.join(suites)}); "
                         "pass --suite to compare on one.")
    if {"max_kld", "max_ppl_ratio"} & set(limits):
        refs = sorted({r["quality_reference"] for r in rows if r.get("quality_reference")})
        if len(refs) > 1:
            notes.append(f"KLD and PPL ratio were measured against different references ({', '.join(refs)}).")
    if any(c.row.get("imported") and c.unverified for c in candidates):
        notes.append("Some candidates come from imported llama-bench files: their memory, energy and "
                     "latency were not measured, so limits on them are unverified.")
    against = None
    if baseline:
        from lab.report.baseline import add_baseline

        against = add_baseline(store, rows, baseline, all_rows)
    # An endpoint is measured to compare against, never deployed here: it cannot be the pick.
    local = [c for c in passing if not str(c.row.get("model_filename") or "").startswith("endpoint:")]
    if len(local) < len(passing):
        notes.append("Endpoints are compared, never picked: the pick is a model that runs on this machine.")
    return Recommendation(pick=local[0] if local else None, passing=passing, failing=failing,
                          unverified=unverified, limits=limits, machine_id=chosen_machine, notes=notes,
                          prefer=prefer, config=wanted or None, baseline=against)
