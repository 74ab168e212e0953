"""``rightsizer report``: the shareable HTML / Markdown report, generated from a real demo-model
bench (pp32 / tg8, 2 repetitions) plus quality and eval rows stored through the Store API, then
read back with html.parser and xml.etree."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from lab.store import Store

SVG_NS = "{http://www.w3.org/2000/svg}"
COSTS = {"price_usd": 1200, "lifetime_years": 4, "utilization": 0.5, "power_usd_per_kwh": 0.30, "watts": 35}


def rs(db: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", *args, "--db", str(db)], capture_output=True, text=True,
                          env=env or os.environ.copy(), timeout=300)


@pytest.fixture(scope="module")
def benched(tmp_path_factory: pytest.TempPathFactory, demo_gguf: Path) -> Path:
    """A store holding one real bench of the demo model (pp32, tg8, 2 repetitions, 2 threads)."""
    home = tmp_path_factory.mktemp("report-home")
    db = home / "lab.db"
    env = dict(os.environ, RIGHTSIZER_HOME=str(home), HF_HUB_OFFLINE="1")
    out = rs(db, "bench", "demo", "-p", "32", "-n", "8", "-r", "2", "-t", "2", env=env)
    assert out.returncode == 0, out.stderr
    return db


def _items(store: Store, model_id: str, label: str, correct: list[bool]) -> None:
    run_id = store.create_run("eval", machine_id=store.query("select id from machines")[0]["id"], model_id=model_id,
                              model_filename=label, config={})
    store.finish_run(run_id, "ok")
    eval_id = store.add_row("eval_runs", {"run_id": run_id, "model_id": model_id, "model_filename": label,
                                          "suite": "demo", "n_items": len(correct), "n_correct": sum(correct),
                                          "accuracy": sum(correct) / len(correct),
                                          "created_at": "2025-01-03T00:00:00"})
    store.add_rows("eval_items", [{"eval_run_id": eval_id, "model_id": model_id, "item_id": f"q{i}", "item_index": i,
                                   "correct": int(c), "status": "ok"} for i, c in enumerate(correct)])


@pytest.fixture
def ladder_db(benched: Path, tmp_path: Path) -> dict[str, Any]:
    """The real demo bench as the Q4_1 rung of a ladder under an F16 base, with a Q8_0 rung;
    the F16 and Q8_0 tg8 results are the demo's real rows with other speeds. KLD / PPL ratio
    against the F16, an eval of 10 items per rung, and machine cost settings."""
    db = tmp_path / "lab.db"
    shutil.copy(benched, db)
    store = Store(db)
    from lab.cost import set_machine_costs

    demo = store.query("select * from models")[0]
    machine = store.query("select id from machines")[0]["id"]
    set_machine_costs(store, machine, **COSTS)
    f16 = store.upsert_model({"id": "f16".ljust(64, "0"), "model_filename": "SmolLM2-135M-Instruct.F16.gguf",
                              "path": "/models/SmolLM2-135M-Instruct.F16.gguf", "file_type": "F16",
                              "file_size": 270_000_000, "model_size": 269_000_000, "arch": "llama"})
    q8 = store.upsert_model({"id": "q80".ljust(64, "0"), "model_filename": "SmolLM2-135M-Instruct.Q8_0.gguf",
                             "path": "/models/SmolLM2-135M-Instruct.Q8_0.gguf", "file_type": "Q8_0",
                             "file_size": 145_000_000, "model_size": 144_000_000, "arch": "llama",
                             "base_model_id": f16})
    store.db["models"].update(demo["id"], {"base_model_id": f16})
    for result in store.query("select * from results"):
        for model_id, factor in ((f16, 0.4), (q8, 0.7)):
            copy = {k: v for k, v in result.items() if k != "id"}
            copy.update(model_id=model_id, avg_ts=result["avg_ts"] * factor)
            store.add_result(copy)
    for model_id, kld, ratio in ((q8, 0.0021, 1.002), (demo["id"], 0.0874, 1.080)):
        store.add_row("quality", {"model_id": model_id, "reference_model_id": f16,
                                  "reference_filename": "SmolLM2-135M-Instruct.F16.gguf", "kld_mean": kld,
                                  "ppl_ratio": ratio, "machine_id": machine, "created_at": "2025-01-02T00:00:00"})
    _items(store, f16, "SmolLM2-135M-Instruct.F16.gguf", [True] * 8 + [False] * 2)
    _items(store, q8, "SmolLM2-135M-Instruct.Q8_0.gguf", [True] * 8 + [False] * 2)
    _items(store, demo["id"], demo["model_filename"], [True] * 6 + [False] * 4)
    tg = {r["model_id"]: r for r in store.query("select * from results where test = 'tg8'")}
    store.close()
    return {"db": db, "demo": demo, "f16": f16, "q8": q8, "tg": tg}


class _Page(HTMLParser):
    """The verdict table's rows, every src/href, the tags used and each inline <svg>'s span."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.ids: dict[str, str] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._pre: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        self.links += [v for k, v in attrs if k in ("src", "href", "xlink:href") and v]
        if tag == "table":
            self._table = a.get("id")
        elif tag == "tr" and self._table == "verdict":
            self.rows.append([])
        elif tag == "td" and self._table == "verdict":
            self._cell = []
        elif tag == "pre":
            self._pre = a.get("id")
            self.ids[self._pre or ""] = ""

    def close(self) -> None:
        super().close()
        self.rows = [r for r in self.rows if r]  # the header row has no td

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "pre":
            self._pre = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._pre is not None:
            self.ids[self._pre] += data


def _svgs(text: str) -> dict[str, ET.Element]:
    charts = re.findall(r'<div class="chart" id="chart-([a-z-]+)">(<svg.*?</svg>)', text, re.S)
    return {name: ET.fromstring(svg) for name, svg in charts}


def _gids(svg: ET.Element) -> list[str]:
    return [g.get("id") for g in svg.iter(f"{SVG_NS}g") if (g.get("id") or "").startswith(("candidate-", "baseline",
                                                                                            "pareto-front"))]


def test_html_report_from_a_real_demo_run(ladder_db: dict[str, Any], tmp_path: Path) -> None:
    db, out = ladder_db["db"], tmp_path / "report.html"
    done = rs(db, "report", "--model", "demo", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"wrote {out}"
    text = out.read_text()
    page = _Page()
    page.feed(text)
    page.close()

    # the verdict table is the recommend output for the same question (default limit: PPL ratio <= 1.05)
    rec = json.loads(rs(db, "recommend", "--max-ppl-ratio", "1.05", "--pp-test", "pp32", "--tg-test", "tg8",
                        "-o", "json").stdout)
    pick = rec["pick"]["model_filename"] if rec["pick"] else None
    expected = [[c["model_filename"], "PICK" if c["model_filename"] == pick else
                 "FAIL" if c["status"] == "fail" else c["status"], c["reason"]] for c in rec["candidates"]]
    assert [[r[0], r[8], r[9]] for r in page.rows] == expected
    assert [r[0] for r in page.rows] == ["SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct.Q8_0.gguf",
                                         "SmolLM2-135M-Instruct.F16.gguf"]
    # Q4_1 fails the PPL ratio, Q8_0 is the pick, the F16 reference has no PPL ratio of its own
    assert [r[8] for r in page.rows] == ["FAIL", "PICK", "unverified"]
    tg_q4 = ladder_db["tg"][ladder_db["demo"]["id"]]
    assert page.rows[0][3] == (f"{tg_q4['avg_ts']:.2f}" if tg_q4["avg_ts"] < 100 else f"{tg_q4['avg_ts']:.1f}")
    assert "llama-server -m /models/SmolLM2-135M-Instruct.Q8_0.gguf -t 2" in page.ids["command"]
    # how the demo's tg8 was measured: its real repetitions and CV
    assert (f"tg8: 2 repetitions, CV {tg_q4['cv'] * 100:.1f}%" in text)
    assert "Limits: PPL ratio ≤ 1.05 — from the default limits (no run was given)" in text

    # self-contained: no script, no stylesheet link, no src/href leaving the file
    assert not {"script", "link", "img", "iframe"} & page.tags
    assert [u for u in page.links if not u.startswith("#")] == []
    assert "http://" not in re.sub(r'xmlns(:\w+)?="[^"]*"|rdf:resource="[^"]*"', "", text).replace(
        "http://www.w3.org", "")

    svgs = _svgs(text)
    assert set(svgs) == {"size-kld", "tg-accuracy", "cost-accuracy"}
    # size / KLD: Q4_1 and Q8_0 are points; the F16 reference has no KLD of its own: a dotted line at its size
    assert sorted(_gids(svgs["size-kld"])) == ["baseline", "candidate-0", "candidate-1", "pareto-front"]
    # tg / accuracy and cost / accuracy: every rung has both figures, the F16 (index 2) is the star
    for name in ("tg-accuracy", "cost-accuracy"):
        ids = _gids(svgs[name])
        assert sorted(i for i in ids if i != "pareto-front") == ["baseline", "candidate-0", "candidate-1"], name
    # each candidate group holds exactly one marker
    for g in svgs["tg-accuracy"].iter(f"{SVG_NS}g"):
        if (g.get("id") or "").startswith("candidate-"):
            assert len([u for u in g.iter(f"{SVG_NS}use")]) == 1


def test_markdown_twin_writes_its_charts_beside_it(ladder_db: dict[str, Any], tmp_path: Path) -> None:
    db, out = ladder_db["db"], tmp_path / "share" / "report.md"
    out.parent.mkdir()
    done = rs(db, "report", "--model", "demo", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "report.cost-accuracy.svg", "report.md", "report.size-kld.svg", "report.tg-accuracy.svg"]
    md = out.read_text()
    assert "![File size against KLD](report.size-kld.svg)" in md
    rows = [line for line in md.splitlines() if line.startswith("| SmolLM2")]
    assert [r.split(" | ")[8] for r in rows] == ["FAIL", "PICK", "unverified"]
    svg = ET.parse(out.parent / "report.tg-accuracy.svg").getroot()
    assert svg.tag == f"{SVG_NS}svg" and "baseline" in _gids(svg)


def test_report_from_a_run_uses_its_limits(ladder_db: dict[str, Any], tmp_path: Path) -> None:
    store = Store(ladder_db["db"])
    machine = store.query("select id from machines")[0]["id"]
    run_id = store.create_run("rightsize", machine_id=machine, model_id=ladder_db["f16"],
                              model_filename="SmolLM2-135M-Instruct.F16.gguf",
                              config={"limits": {"min_accuracy": 0.7}, "prefer": "fastest"})
    store.close()
    out = tmp_path / "run.html"
    done = rs(ladder_db["db"], "report", "--run", run_id[-10:], "-o", str(out))
    assert done.returncode == 0, done.stderr
    page = _Page()
    page.feed(out.read_text())
    page.close()
    # fastest that reaches 70%: the Q4_1 answered 6 of 10, so the Q8_0 (faster than the F16) is picked
    # (the table lists every candidate in the preference's order, fastest first)
    assert [(r[0], r[8]) for r in page.rows] == [("SmolLM2-135M-Instruct.Q4_1.gguf", "FAIL"),
                                                 ("SmolLM2-135M-Instruct.Q8_0.gguf", "PICK"),
                                                 ("SmolLM2-135M-Instruct.F16.gguf", "pass")]
    assert f"Limits: accuracy ≥ 0.7 — from the limits of run {run_id[-10:]} (rightsize" in out.read_text()


def test_report_user_errors_and_a_missing_matplotlib(ladder_db: dict[str, Any], tmp_path: Path) -> None:
    db = ladder_db["db"]
    bad = rs(db, "report", "--model", "nothing-like-it", "-o", str(tmp_path / "r.html"))
    assert bad.returncode == 1 and bad.stderr == (
        "error: No stored model matches 'nothing-like-it'; see `rightsizer results`.\n")
    bad = rs(db, "report", "--model", "demo", "-o", str(tmp_path / "r.pdf"))
    assert bad.returncode == 1 and bad.stderr == "error: -o takes a .html or .md file name, not 'r.pdf'.\n"
    # matplotlib absent (an import hook refuses it): one sentence says how to install it
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nclass _No:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'matplotlib' or name.startswith('matplotlib.'):\n"
        "            raise ModuleNotFoundError(name)\n        return None\nsys.meta_path.insert(0, _No())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]))
    bad = rs(db, "report", "--model", "demo", "-o", str(tmp_path / "r.html"), env=env)
    assert bad.returncode == 1 and bad.stderr == (
        "error: The report draws its charts with matplotlib; install it with: pip install 'rightsizer[report]'.\n")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.benchmark
def test_report_opens_in_headless_chromium(ladder_db: dict[str, Any], tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    out, shot = tmp_path / "report.html", tmp_path / "report.png"
    assert rs(ladder_db["db"], "report", "--model", "demo", "-o", str(out)).returncode == 0
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,2600",
                           f"--screenshot={shot}", f"file://{out}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 2600)
    target = os.environ.get("RIGHTSIZER_REPORT_SHOT")
    if target:  # keep the screenshot to look at it
        shutil.copy(shot, target)
        shutil.copy(out, Path(target).with_suffix(".html"))
