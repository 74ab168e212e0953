"""Paired comparison of two eval runs on the same suite items: is one model more accurate than
the other, or can the suite not tell them apart?

Items are matched by their id. With ``a`` items both answered correctly, ``b`` only A, ``c``
only B and ``d`` neither (n = a + b + c + d):

* the accuracy difference is (b - c) / n, with a 95% interval by Newcombe's method 10 (the
  hybrid score interval for paired proportions: each run's Wilson interval, combined with the
  correlation of the pairs; Newcombe 1998, Statistics in Medicine 17:2635). It stays inside
  [-1, 1] and is not degenerate when b or c is 0, as a Wald interval is at these sizes.
  (On Cavo et al.'s 59/6/16/80 table it gives -0.1186 to -0.0046, as Fagerland, Lydersen and
  Laake's reference implementation does.)
* the test is the exact McNemar test: under "equally accurate", each of the b + c discordant
  items is equally likely to favour A or B, so the two-sided p is twice the binomial tail of
  min(b, c) in Binomial(b + c, 1/2), capped at 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lab.errors import LabError
from lab.evals.stats import wilson_interval

if TYPE_CHECKING:
    from lab.store import Store

ALPHA = 0.05


class CompareError(LabError):
    """Two eval runs that cannot be compared item by item."""


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def newcombe_paired_interval(a: int, b: int, c: int, d: int) -> tuple[float, float] | None:
    """95% interval of p_A - p_B = (b - c) / n for paired outcomes, Newcombe's method 10."""
    n = a + b + c + d
    if n == 0:
        return None
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n)  # type: ignore[misc]
    l2, u2 = wilson_interval(a + c, n)  # type: ignore[misc]
    # The correlation of the pairs, with Newcombe's continuity correction of its numerator:
    # a positive ad - bc within n/2 of 0 counts as none.
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    excess = a * d - b * c
    excess = excess - n / 2 if excess > n / 2 else (0.0 if excess >= 0 else excess)
    phi = excess / math.sqrt(denom) if denom > 0 else 0.0
    diff = p1 - p2
    low = diff - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = diff + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, low), min(1.0, high)


@dataclass
class Paired:
    """A and B on the same n items."""

    label_a: str
    label_b: str
    both: int      # a: both correct
    only_a: int    # b
    only_b: int    # c
    neither: int   # d

    @property
    def n(self) -> int:
        return self.both + self.only_a + self.only_b + self.neither

    @property
    def accuracy_a(self) -> float | None:
        return (self.both + self.only_a) / self.n if self.n else None

    @property
    def accuracy_b(self) -> float | None:
        return (self.both + self.only_b) / self.n if self.n else None

    @property
    def difference(self) -> float | None:
        """Accuracy of A minus accuracy of B."""
        return (self.only_a - self.only_b) / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return newcombe_paired_interval(self.both, self.only_a, self.only_b, self.neither)

    @property
    def p_value(self) -> float:
        return mcnemar_exact_p(self.only_a, self.only_b)

    def verdict(self) -> str:
        """The comparison in words."""
        p = self.p_value
        counts = f"{self.only_a} items only {self.label_a} got right, {self.only_b} only {self.label_b}"
        if p >= ALPHA:
            return f"not distinguishable at n={self.n} (exact McNemar p = {p:.2f}; {counts})"
        better, worse = (self.label_a, self.label_b) if self.only_a > self.only_b else (self.label_b, self.label_a)
        return f"{better} is more accurate than {worse} at n={self.n} (exact McNemar p = {p:.3g}; {counts})"

    def as_dict(self) -> dict[str, Any]:
        interval = self.interval
        return {"a": self.label_a, "b": self.label_b, "n": self.n, "both_correct": self.both,
                "only_a": self.only_a, "only_b": self.only_b, "neither": self.neither,
                "accuracy_a": self.accuracy_a, "accuracy_b": self.accuracy_b, "difference": self.difference,
                "difference_ci95": list(interval) if interval else None, "interval_method": "Newcombe method 10",
                "mcnemar_exact_p": self.p_value, "verdict": self.verdict()}


def pair(label_a: str, correct_a: dict[str, bool], label_b: str, correct_b: dict[str, bool]) -> Paired:
    """Pair two runs' per-item correctness (item id -> correct) on the items both have."""
    common = [k for k in correct_a if k in correct_b]
    if not common:
        raise CompareError(f"{label_a} and {label_b} share no item ids; compare runs of the same suite")
    counts = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
    for key in common:
        counts[(bool(correct_a[key]), bool(correct_b[key]))] += 1
    return Paired(label_a, label_b, counts[(True, True)], counts[(True, False)], counts[(False, True)],
                  counts[(False, False)])


def find_eval_run(store: "Store", ref: str) -> dict[str, Any]:
    """The eval run named by ``ref``: its id or its run's id, as a prefix or the short id shown."""
    rows = store.query(
        "select * from eval_runs where id like :p or id like :s or run_id like :p or run_id like :s "
        "order by created_at", {"p": f"{ref}%", "s": f"%{ref}"})
    if not rows:
        raise CompareError(f"No eval run matches {ref!r} (see 'rightsizer results --runs')")
    if len(rows) > 1:
        raise CompareError(f"{ref!r} matches {len(rows)} eval runs; give more of the id")
    return rows[0]


def compare_runs(store: "Store", ref_a: str, ref_b: str) -> tuple[Paired, dict[str, Any]]:
    """Pair two stored eval runs by item id; returns the comparison and notes on the match."""
    run_a, run_b = find_eval_run(store, ref_a), find_eval_run(store, ref_b)
    if run_a["id"] == run_b["id"]:
        raise CompareError("Both names point at the same eval run")

    def correct(run: dict[str, Any]) -> dict[str, bool]:
        rows = store.query("select item_id, correct from eval_items where eval_run_id = ?", [run["id"]])
        return {r["item_id"]: bool(r["correct"]) for r in rows}

    items_a, items_b = correct(run_a), correct(run_b)
    label_a, label_b = run_a["model_filename"] or "A", run_b["model_filename"] or "B"
    if label_a == label_b:
        label_a, label_b = f"{label_a} (A)", f"{label_b} (B)"
    paired = pair(label_a, items_a, label_b, items_b)
    notes = {"same_suite_file": run_a["suite_sha256"] == run_b["suite_sha256"],
             "unmatched_items": len(set(items_a) ^ set(items_b)),
             "eval_run_a": run_a["id"], "eval_run_b": run_b["id"]}
    return paired, notes
