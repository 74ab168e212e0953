"""The verdict table of a ``rightsize`` outcome as plain rows, for every face: one row per
candidate with its figures (each speed with its 95% interval and the repetitions it rests on),
the verdict word and the first limit it failed (or why it is borderline, skipped or picked).

Works on :class:`lab.rightsize.Outcome` values without importing that module (it imports this
package): only their attributes are read.
"""

from __future__ import annotations

from typing import Any

STATUS_WORDS = {"pick": "PICK", "fail": "FAIL", "pass": "pass", "borderline": "borderline", "skipped": "skipped",
                "error": "error", "pending": "pending"}

# key, title, kind: "text" (already a string), "bytes" or "fraction" (each face formats them its way)
VERDICT_COLUMNS: list[tuple[str, str, str]] = [
    ("file", "file", "text"), ("quant", "quant", "text"), ("size", "file size", "bytes"),
    ("est", "est. RSS", "bytes"), ("kld", "KLD ±95%", "text"), ("pp", "{pp} t/s", "text"),
    ("tg", "{tg} t/s", "text"), ("acc", "accuracy", "fraction"), ("status", "verdict", "text"),
    ("why", "first limit failed / why", "text"), ("measured", "measured now", "text"), ("reused", "reused", "text"),
]
# shown even when every row is empty there: they say what was decided and how
ALWAYS = ("file", "quant", "size", "status", "why", "measured", "reused")


def ts_cell(v: Any, key: str) -> str | None:
    """A candidate's mean t/s (``tg_ts`` / ``pp_ts``) with half its 95% interval and the number of
    repetitions: ``131.20 ±1.35 (n=6)``; None when not measured."""
    value = v.figures.get(key)
    if value is None:
        return None
    lo, hi = v.figures.get(f"{key}_low"), v.figures.get(f"{key}_high")
    text = f"{value:.2f}"
    if lo is not None and hi is not None:
        text += f" ±{(hi - lo) / 2:.2f}"
    return text + f" (n={v.figures.get(f'{key}_n')})"


def kld_cell(v: Any) -> str | None:
    """A candidate's mean KLD with half its 95% interval; None when not measured."""
    value = v.figures.get("kld_mean")
    if value is None:
        return None
    se = v.figures.get("kld_stderr")
    return f"{value:.4f}" + (f" ±{1.96 * se:.4f}" if se else "")


def verdict_rows(outcome: Any) -> list[dict[str, Any]]:
    """One row per candidate of ``outcome`` (in its preference order), keyed as VERDICT_COLUMNS."""
    rows = []
    for v in outcome.candidates:
        rows.append({"file": v.name + (" (source)" if v.is_source else ""), "quant": v.quant,
                     "size": v.file_size, "est": v.figures.get("est_memory_bytes"), "kld": kld_cell(v),
                     "tg": ts_cell(v, "tg_ts"), "pp": ts_cell(v, "pp_ts"), "acc": v.figures.get("accuracy"),
                     "status": STATUS_WORDS[v.status], "why": v.reason,
                     "reused": ", ".join(v.reused) or None, "measured": ", ".join(v.measured) or None})
    return rows


def verdict_columns(rows: list[dict[str, Any]], test_pp: str, test_tg: str) -> list[tuple[str, str, str]]:
    """The columns worth showing for ``rows``: those in ALWAYS, and any other a row has a figure in;
    the speed titles name the tests (``pp512 t/s``)."""
    return [(key, title.format(pp=test_pp, tg=test_tg), kind) for key, title, kind in VERDICT_COLUMNS
            if key in ALWAYS or any(r.get(key) is not None for r in rows)]


def pick_lines(outcome: Any) -> list[str]:
    """What follows the table: the pick (file, quant, sha256 and why it was chosen) and its
    ``llama-server`` command line, or that no candidate meets every limit."""
    pick = outcome.pick
    if pick is None:
        return ["no candidate meets every limit"]
    return [f"pick: {pick.name} ({pick.quant}, sha256 {(pick.model_id or '')[:12]}), "
            f"{outcome.question.prefer} of those meeting every limit",
            f"  {(outcome.commands() or {})['llama-server']}"]
