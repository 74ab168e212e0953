"""A report to share: the question and its limits, the machine, the verdict table, the pick's
command line, three charts and how every figure was measured — as one self-contained HTML file
(charts inline as SVG, styles inline, no script and no link to anything outside the file) or as
Markdown with the charts as SVG files beside it (``NAME.size-kld.svg`` ...), referenced by
relative path so the folder opens anywhere.

The question comes from a stored run when one is given (``--run``: the ``limits``, ``prefer``,
``suite`` and ``baseline`` in its config; its model's ladder), else from the model's ladder
(``--model``) with :data:`DEFAULT_LIMITS`; the report says which.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.errors import LabError
from lab.report.charts import Chart, draw_all, require_matplotlib
from lab.report.common import fmt_bytes, fmt_figure
from lab.report.recommendation import Recommendation, limit_specs, recommend

if TYPE_CHECKING:
    from lab.store import Store

# The question a ladder is asked when no run gives one: a quant within 5% of its reference's
# perplexity, the smallest such.
DEFAULT_LIMITS: dict[str, float] = {"max_ppl_ratio": 1.05}
FINGERPRINT_KEYS = ("hostname", "cpu_info", "cpu_cores", "cpu_threads", "ram_bytes", "gpu_info", "vram_bytes",
                    "os", "kernel", "arch", "backends", "llama_cpp_version", "build_commit", "lab_version", "id")


class ReportError(LabError):
    """A report that cannot be made: an unknown model or run, an unknown output format."""


@dataclass
class ShareReport:
    """Everything the report shows, as plain values (both renderers read this)."""

    title: str
    question: str
    limits: list[str]
    source: str
    fingerprint: dict[str, Any]
    rec: Recommendation
    verdict: list[dict[str, Any]]
    commands: dict[str, str] | None
    charts: list[Chart]
    measured: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    tests: tuple[str, str] = ("pp512", "tg128")


def find_model(store: "Store", ref: str) -> dict[str, Any]:
    """A stored model by id prefix, file name, path or a unique part of its file name."""
    rows = store.query("select * from models where id like ? or model_filename = ? or path = ?",
                       [f"{ref}%", ref, ref])
    if not rows:
        rows = store.query("select * from models where model_filename like ?", [f"%{ref}%"])
    if not rows:
        # a library name ("demo", a file in the models folder): the stored model at that path
        from lab.library import resolve

        try:
            local = resolve(ref)
        except LabError:
            local = None
        if local is not None:
            rows = store.query("select * from models where path = ? or model_filename = ?",
                               [str(local.path), local.path.name])
    if not rows:
        raise ReportError(f"No stored model matches {ref!r}; see `rightsizer results`")
    if len(rows) > 1:
        raise ReportError(f"{ref!r} matches {len(rows)} models; give more of the file name or its id")
    return rows[0]


def _find_run(store: "Store", ref: str) -> dict[str, Any]:
    rows = store.query("select * from runs where id like ? or id like ?", [f"{ref}%", f"%{ref}"])
    if not rows:
        raise ReportError(f"No run matches {ref!r}; see `rightsizer results --runs`")
    if len(rows) > 1:
        raise ReportError(f"{ref!r} matches {len(rows)} runs; give more of the id")
    return rows[0]


def status_label(rec: Recommendation, cand: Any) -> str:
    """``PICK``, ``FAIL``, ``pass`` or ``unverified``: the status column of ``recommend``."""
    return "PICK" if cand is rec.pick else "FAIL" if cand.status == "fail" else cand.status


def _measured(store: "Store", row: dict[str, Any]) -> dict[str, Any]:
    tests = []
    for key in ("pp_result_id", "tg_result_id", "chat_result_id"):
        if row.get(key):
            res = store.get("results", row[key]) or {}
            run = store.get("runs", res.get("run_id")) or {} if res.get("run_id") else {}
            tests.append({"test": res.get("test"), "repetitions": res.get("repetitions"), "avg_ts": res.get("avg_ts"),
                          "cv": res.get("cv"), "noisy": bool(res["noisy"]) if res.get("noisy") is not None else None,
                          "build": run.get("build_commit"), "llama_cpp": run.get("llama_cpp_version")})
    return {"model_filename": row.get("model_filename"), "config": row.get("config"), "tests": tests,
            "quality_reference": row.get("quality_reference"), "eval_suite": row.get("eval_suite"),
            "eval_n_items": row.get("eval_n_items"), "cost_basis": row.get("cost_basis")}


def _limit_text(rec: Recommendation, tests: tuple[str, str]) -> list[str]:
    out = []
    for spec in limit_specs(*tests):
        if spec.name in rec.limits:
            value = rec.limits[spec.name]
            shown = fmt_bytes(value) if spec.unit == "bytes" else fmt_figure(value)
            out.append(f"{spec.label} {'≥' if spec.kind == 'min' else '≤'} {shown}")
    return out


def _tests(store: "Store", model_ids: list[str]) -> tuple[str, str]:
    """The pp and tg tests to judge a ladder by: pp512 / tg128 when measured, else the test of
    each kind measured on the most of its models."""
    marks = ", ".join("?" for _ in model_ids)
    rows = store.query(f"select test, n_prompt, n_gen, count(distinct model_id) as n from results where model_id in "
                       f"({marks}) and coalesce(n_depth, 0) = 0 and test != 'chat' group by test", model_ids)
    picked = []
    for kind, default in (("pp", "pp512"), ("tg", "tg128")):
        names = [r for r in rows if (bool(r["n_prompt"]) and not r["n_gen"] if kind == "pp"
                                     else bool(r["n_gen"]) and not r["n_prompt"])]
        if not names or any(r["test"] == default for r in names):
            picked.append(default)
        else:
            picked.append(max(names, key=lambda r: (r["n"], r["test"]))["test"])
    return picked[0], picked[1]


def build_report(store: "Store", *, model: str | None = None, run: str | None = None,
                 machine_id: str | None = None) -> ShareReport:
    """Gather the report for a model's ladder (``model``) or a stored run (``run``)."""
    from lab.ladder import ladder_models

    require_matplotlib()  # say how to install it before any work
    if (model is None) == (run is None):
        raise ReportError("Give --model M or --run ID (one of them)")
    limits: dict[str, Any] = dict(DEFAULT_LIMITS)
    prefer, suite, baseline = "smallest", None, None
    if run is not None:
        row = _find_run(store, run)
        config = json.loads(row["config"]) if row.get("config") else {}
        config = config if isinstance(config, dict) else {}
        if isinstance(config.get("limits"), dict):
            limits = {k: v for k, v in config["limits"].items() if v is not None}
            source = f"the limits of run {row['id'][-10:]} ({row['kind']}, {row.get('started_at') or 'n/a'})"
        else:
            source = (f"run {row['id'][-10:]} ({row['kind']}) stores no limits, so the default limits are used "
                      f"on its model's ladder")
        prefer, suite, baseline = config.get("prefer") or prefer, config.get("suite"), config.get("baseline")
        if not row.get("model_id"):
            raise ReportError(f"Run {row['id'][-10:]} names no model")
        base_model = store.get("models", row["model_id"]) or {"id": row["model_id"]}
    else:
        base_model = find_model(store, model)  # type: ignore[arg-type]
        source = "the default limits (no run was given), over the model's ladder"
    base_id = base_model.get("base_model_id") or base_model["id"]
    ids = [m["id"] for m in ladder_models(store, base_id)] or [base_model["id"]]
    test_pp, test_tg = _tests(store, ids)
    rec = recommend(store, machine_id=machine_id, prefer=prefer, suite=suite, baseline=baseline,
                    model_ids=ids, test_pp=test_pp, test_tg=test_tg, **limits)
    cands = rec.candidates
    base_index = None
    if baseline is not None:
        base_index = next((i for i, c in enumerate(cands) if c.row.get("is_baseline")), None)
    else:
        base_index = next((i for i, c in enumerate(cands) if c.row.get("model_id") == base_id), None)
    verdict = [{"model_filename": c.row.get("model_filename"), "file_type": c.row.get("file_type"),
                "file_size": c.row.get("file_size"), "tg_ts": c.row.get("tg_ts"), "kld_mean": c.row.get("kld_mean"),
                "ppl_ratio": c.row.get("ppl_ratio"), "accuracy": c.row.get("accuracy"),
                "usd_per_mtok": c.row.get("usd_per_mtok"), "status": status_label(rec, c), "why": c.reason(),
                "baseline": i == base_index} for i, c in enumerate(cands)]
    machine = (store.get("machines", rec.machine_id) or {}) if rec.machine_id else {}
    charts = draw_all([c.row for c in cands], base_index)
    base_row = store.get("models", base_id) or base_model
    name = base_row.get("model_filename") or base_id[:12]
    what = {"smallest": "the smallest", "fastest": "the fastest", "quality": "the highest-quality",
            "cheapest": "the cheapest"}[prefer]
    question = f"Which quant of {name} should be deployed here? {what[0].upper() + what[1:]} that meets every limit."
    if baseline:
        question += f" Every candidate is compared with {baseline}."
    notes = list(rec.notes)
    base_label = "the baseline" if baseline else "the ladder's base (the KLD reference)"
    notes.append(f"Charts: one point per candidate with both figures; blue points and the dashed line are the "
                 f"Pareto front; the red star (or dotted line, where it lacks one figure) is {base_label}.")
    return ShareReport(title=f"Rightsizer report: {name}", question=question, limits=_limit_text(rec, (test_pp, test_tg)), source=source,
                       fingerprint={k: machine.get(k) for k in FINGERPRINT_KEYS}, rec=rec, verdict=verdict,
                       tests=(test_pp, test_tg),
                       commands=rec.commands(), charts=charts,
                       measured=[_measured(store, c.row) for c in cands], notes=notes)


# --- rendering --------------------------------------------------------------------------------

VERDICT_COLUMNS = (("model_filename", "model file"), ("file_type", "quant"), ("file_size", "file"),
                   ("tg_ts", "tg t/s"), ("kld_mean", "KLD"), ("ppl_ratio", "PPL ratio"), ("accuracy", "accuracy"),
                   ("usd_per_mtok", "USD/1M tok"), ("status", "status"), ("why", "why"))


def _titles(r: ShareReport) -> list[str]:
    return [f"{r.tests[1]} t/s" if key == "tg_ts" else title for key, title in VERDICT_COLUMNS]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if key == "file_size":
        return fmt_bytes(value)
    if key == "accuracy":
        return f"{value * 100:.1f}%"
    if key == "usd_per_mtok":
        return f"{value:.4f}"
    return value if isinstance(value, str) else fmt_figure(value)


def _fingerprint_cell(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    return fmt_bytes(value) if key.endswith("_bytes") else str(value)


def _measured_lines(m: dict[str, Any]) -> list[str]:
    lines = [f"configuration: {m['config'] or 'no speed measured'}"]
    for t in m["tests"]:
        cv = f"{t['cv'] * 100:.1f}%" if t.get("cv") is not None else "n/a"
        lines.append(f"{t['test']}: {t['repetitions'] if t['repetitions'] is not None else 'n/a'} repetitions, "
                     f"CV {cv}{' (noisy)' if t.get('noisy') else ''}, llama.cpp {t.get('llama_cpp') or 'n/a'} "
                     f"build {t.get('build') or 'n/a'}")
    if m.get("quality_reference"):
        lines.append(f"KLD / PPL ratio against {m['quality_reference']}")
    if m.get("eval_suite"):
        lines.append(f"accuracy on suite {m['eval_suite']} ({m['eval_n_items'] or 'n/a'} items)")
    if m.get("cost_basis"):
        lines.append(f"cost: {m['cost_basis']}")
    return lines


_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px;"
          "text-align:left}th{background:#f3f3f3}tr.pick td{background:#e8f5e9;font-weight:600}"
          "pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}.chart{margin:1em 0}.note{color:#555}")


def render_html(r: ShareReport) -> str:
    """The report as one self-contained HTML page."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(r.title)}</title>",
           f"<style>{_STYLE}</style></head><body>", f"<h1>{e(r.title)}</h1>", "<h2>Question</h2>",
           f"<p id=\"question\">{e(r.question)}</p>",
           f"<p>Limits: {e('; '.join(r.limits) or 'none')} — from {e(r.source)}.</p>",
           "<h2>Machine</h2>", '<table id="machine">']
    out += [f"<tr><th>{e(k)}</th><td>{e(_fingerprint_cell(k, v))}</td></tr>" for k, v in r.fingerprint.items()]
    out += ["</table>", f"<h2>Verdict</h2><p>{e(r.rec.summary())}</p>", '<table id="verdict"><thead><tr>']
    out += [f"<th>{e(title)}</th>" for title in _titles(r)] + ["</tr></thead><tbody>"]
    for v in r.verdict:
        cls = ' class="pick"' if v["status"] == "PICK" else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{e(_cell(k, v[k]))}</td>" for k, _ in VERDICT_COLUMNS) + "</tr>")
    out.append("</tbody></table>")
    if r.commands:
        out += ["<h2>Run the pick</h2>", '<pre id="command">' + e(r.commands["llama-server"]) + "</pre>"]
    out.append("<h2>Charts</h2>")
    for chart in r.charts:
        out.append(f'<div class="chart" id="chart-{chart.spec.name}">{chart.svg}')
        if chart.not_plotted:
            out.append(f'<p class="note">Not plotted (a figure was never measured): {e(", ".join(chart.not_plotted))}</p>')
        out.append("</div>")
    out += ["<h2>How each figure was measured</h2>", "<ul>"]
    for m in r.measured:
        out.append(f"<li><b>{e(m['model_filename'] or 'n/a')}</b><ul>"
                   + "".join(f"<li>{e(line)}</li>" for line in _measured_lines(m)) + "</ul></li>")
    out += ["</ul>", "<h2>Notes</h2><ul>"] + [f"<li>{e(n)}</li>" for n in r.notes] + ["</ul></body></html>"]
    return "\n".join(out) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(r: ShareReport, chart_names: dict[str, str]) -> str:
    """The report as Markdown; ``chart_names`` maps a chart's name to the SVG file it links."""
    out = [f"# {r.title}", "", "## Question", "", r.question, "",
           f"Limits: {'; '.join(r.limits) or 'none'} — from {r.source}.", "", "## Machine", "",
           "| | |", "|---|---|"]
    out += [f"| {k} | {_md_cell(_fingerprint_cell(k, v))} |" for k, v in r.fingerprint.items()]
    out += ["", "## Verdict", "", r.rec.summary(), "",
            "| " + " | ".join(_titles(r)) + " |", "|" + "---|" * len(VERDICT_COLUMNS)]
    out += ["| " + " | ".join(_md_cell(_cell(k, v[k])) for k, _ in VERDICT_COLUMNS) + " |" for v in r.verdict]
    if r.commands:
        out += ["", "## Run the pick", "", "```", r.commands["llama-server"], "```"]
    out += ["", "## Charts", ""]
    for chart in r.charts:
        out.append(f"![{chart.spec.title}]({chart_names[chart.spec.name]})")
        if chart.not_plotted:
            out.append(f"\nNot plotted (a figure was never measured): {', '.join(chart.not_plotted)}")
        out.append("")
    out += ["## How each figure was measured", ""]
    for m in r.measured:
        out.append(f"- **{m['model_filename'] or 'n/a'}**")
        out += [f"  - {line}" for line in _measured_lines(m)]
    out += ["", "## Notes", ""] + [f"- {n}" for n in r.notes]
    return "\n".join(out) + "\n"


def check_output(path: Path) -> None:
    """Refuse an output name that is neither ``.html`` nor ``.md`` (before any work is done)."""
    if path.suffix.lower() not in (".html", ".htm", ".md"):
        raise ReportError(f"-o takes a .html or .md file name, not {path.name!r}")


def write_report(r: ShareReport, path: Path) -> list[Path]:
    """Write ``path`` (``.html`` or ``.md``; Markdown also writes one SVG per chart beside it);
    returns every file written."""
    check_output(path)
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        path.write_text(render_html(r), encoding="utf-8")
        return [path]
    if suffix == ".md":
        names = {c.spec.name: f"{path.stem}.{c.spec.name}.svg" for c in r.charts}
        written = []
        for chart in r.charts:
            target = path.with_name(names[chart.spec.name])
            target.write_text('<?xml version="1.0" encoding="utf-8"?>\n' + chart.svg, encoding="utf-8")
            written.append(target)
        path.write_text(render_markdown(r, names), encoding="utf-8")
        return [path, *written]
    raise AssertionError(suffix)
