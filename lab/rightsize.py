"""The one-command verdict: from a model to the quant that meets every limit, measuring only
what the limits need.

Candidates are quants built from a local source with the ladder builder, or a Hub repo's own
quant files. Each candidate goes through stages, cheapest and most eliminating first — memory
(an estimate from the header), quality (KLD / PPL ratio against the source), speed (pp / tg /
chat at one configuration), the task suite — and stops at the first limit it fails. Figures
already stored for the same file (sha256), configuration and machine (whose id includes the
llama.cpp build) are reused, so asking again measures nothing and an interrupted run goes on
where it stopped.

A limit is judged with the figure's uncertainty: a 95% interval of the mean t/s over every
stored repetition, the KLD's (and PPL ratio's) standard error, the accuracy's Wilson interval.
A candidate whose interval straddles a limit is measured again until the limit is decided, up to
a cap: first twice the repetitions (or text chunks), then as many as the measured spread says
would decide it. When not even the cap would — the figure sits on the limit at that spread — or
past the cap, the candidate is ``borderline``, with its figure and interval, and never picked.
The same question asked twice therefore gives the same pick.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lab.errors import LabError
from lab.question import MEMORY_MARGIN, Judged, Outcome, Question, Verdict, _finite, judge, samples_to_decide
from lab.report.recommendation import LIMITS, PREFER, LimitSpec, limit_specs
from lab.rightsize_load import measure_users
from lab.select import Config, is_swapped
from lab.stats import mean_interval

if TYPE_CHECKING:
    from lab.library import LocalModel
    from lab.store import Store

STAGES = ("memory", "quality", "speed", "suite", "load")  # cheapest first
# Limits recommend does not know (yet), judged here the same way.
EXTRA_LIMITS: tuple[LimitSpec, ...] = tuple(s for s in (
    LimitSpec("min_format_valid", "format_valid_rate", "min", "format valid"),
    LimitSpec("max_cost_per_mtok", "cost_per_mtok", "max", "USD/1M tok"),
) if s.name not in {x.name for x in LIMITS})
STAGE_OF = {
    "max_memory_bytes": "memory", "max_vram_bytes": "memory", "max_kld": "quality", "max_ppl_ratio": "quality",
    "min_tg": "speed", "min_pp": "speed", "max_ttft_ms": "speed", "max_itl_p95_ms": "speed", "min_users": "load",
    "max_j_per_token": "speed", "max_cost_per_mtok": "speed", "min_accuracy": "suite", "min_format_valid": "suite",
}
PREFER_STAGE = {"smallest": "memory", "cheapest": "memory", "quality": "quality", "fastest": "speed"}
OnProgress = Callable[[str], None]


def all_specs(test_pp: str = "pp512", test_tg: str = "tg128") -> dict[str, LimitSpec]:
    """Every limit ``rightsize`` judges, by name: recommend's, then its own."""
    return {s.name: s for s in (*limit_specs(test_pp, test_tg), *EXTRA_LIMITS)}


class Rightsizer:
    """Runs one question against the store; see :func:`rightsize`."""

    def __init__(self, store: "Store", q: Question, on_progress: OnProgress | None = None,
                 cancel: threading.Event | None = None):
        from lab.hardware import default_threads

        self.store, self.q, self.cancel = store, q, cancel
        self.say: OnProgress = on_progress or (lambda _m: None)
        q.n_threads = q.n_threads or default_threads()
        self.cfg = q.config()
        self.specs = all_specs(q.test_pp, q.test_tg)
        self.source: "LocalModel | None" = None
        self.source_id: str | None = None
        self.machine_id: str | None = None
        self.notes: list[str] = []
        self.cands: list[Verdict] = []

    # --- candidates ---------------------------------------------------------------------------

    def candidates(self) -> list[Verdict]:
        """The candidate files: a local source and its ladder, or a Hub repo's quants."""
        from lab import library
        from lab.errors import ModelError

        try:
            self.source = library.resolve(self.q.model)
        except ModelError:
            if self.q.model.count("/") == 1 and not self.q.model.endswith(".gguf"):
                return self._hub_candidates(self.q.model)
            raise
        return self._ladder_candidates(self.source)

    def _ladder_candidates(self, source: "LocalModel") -> list[Verdict]:
        from lab import library
        from lab.gguf_info import inspect
        from lab.quantize import _UNQUANTIZED, build_ladder

        row = library.register(self.store, source)
        self.source_id = row["id"]
        if self.q.types and (row.get("file_type") or "").upper() not in _UNQUANTIZED | {"Q8_0"}:
            self.notes.append(f"{source.path.name} is {row.get('file_type')}: its ladder is requantized from it, and "
                              "KLD and PPL ratio are measured against it, not against the original weights.")
        out = [Verdict(source.path, row["id"], row.get("file_type"), row.get("file_size"), is_source=True)]
        if not self.q.types:
            return out
        self.say(f"ladder: {', '.join(self.q.types)} from {source.path.name} (files already built are reused)")

        def on_step(step: Any) -> None:
            self.say(f"  {step.type}: {step.status}" + (f" ({step.error})" if step.error else ""))

        for step in build_ladder(self.store, source, self.q.types, n_threads=self.q.n_threads, on_step=on_step,
                                 cancel=self.cancel):
            if step.status in ("built", "exists"):
                info = inspect(step.path)
                out.append(Verdict(step.path, step.model_id, step.file_type or step.type, info.file_size))
            else:
                v = Verdict(step.path, None, step.type, None, status="error", reason=step.error or step.status)
                out.append(v)
        return out

    def _hub_candidates(self, repo: str) -> list[Verdict]:
        from lab.hub import fit_check

        self.say(f"hub: reading the headers of {repo}'s quant files (nothing is downloaded yet)")
        out = []
        for fc in fit_check(repo, n_ctx=self.q.ctx_size):
            v = Verdict(Path(fc.file.path), None, fc.header_quant or fc.file.quant, fc.file.size,
                        pull_spec=fc.file.spec)
            est = fc.estimate.host_bytes if fc.estimate is not None else None
            v.figures["est_memory_bytes"] = est
            if fc.fits is False:
                v.status, v.reason = "fail", (f"does not fit this machine's available memory "
                                               f"(estimate {est / 2**30:.2f} GiB)" if est else "does not fit")
            out.append(v)
        # The largest file that fits is the quality reference (a model against itself: KLD 0).
        fitting = [v for v in out if v.status != "fail"]
        if fitting:
            max(fitting, key=lambda v: v.file_size or 0).is_source = True
        return out

    def _pull(self, v: Verdict) -> None:
        from lab.hub import pull, register_pulled

        self.say(f"{v.name}: downloading (it fits)")
        pulled = pull(v.pull_spec or "", cancel=self.cancel)
        row = register_pulled(self.store, pulled)
        v.path, v.model_id, v.file_size = pulled.path, row["id"], row.get("file_size")
        v.measured.append("download")
        v.pull_spec = None

    # --- stages -------------------------------------------------------------------------------

    def needed(self) -> list[str]:
        wanted = {STAGE_OF[k] for k in self.q.limits} | {PREFER_STAGE[self.q.prefer]} | {"memory"}
        if self.q.suite:  # asked for: the pick's accuracy is shown even without a limit on it
            wanted.add("suite")
        return [s for s in STAGES if s in wanted]

    def run_stage(self, v: Verdict, stage: str, rank_against: Verdict | None = None) -> None:
        """Measure (or reuse) what ``stage``'s limits need and judge them. With ``rank_against``
        (the pick so far) quality is first measured on fewer chunks, enough when that already
        shows ``v`` ranks below it."""
        if v.pull_spec is not None and stage != "memory":
            self._pull(v)
        if stage == "memory":
            self._memory(v)
        elif stage == "quality":
            self._quality(v, rank_against)
        elif stage == "speed":
            self._speed(v)
        elif stage == "suite":
            self._suite(v)
        else:
            measure_users(self, v, _Failed)
        names = [n for n, s in STAGE_OF.items() if s == stage and n in self.q.limits]
        if stage == "speed" and v.figures.get("swapped") and "max_memory_bytes" in self.q.limits:
            names.append("max_memory_bytes")  # the speed runs showed the model paged
        judged = [j for j in v.checks if j.check.name in names]
        failed = next((j for j in judged if j.status == "fail"), None)
        if failed is not None:
            v.status, v.reason = "fail", failed.describe()
            self.say(f"{v.name}: FAIL at {stage}: {failed.describe()}")
        elif any(j.status == "borderline" for j in judged):
            v.status = "borderline"
            v.reason = "; ".join(j.describe() for j in judged if j.status == "borderline")
            self.say(f"{v.name}: borderline at {stage}: {v.reason}")
        elif judged:
            self.say(f"{v.name}: {stage} ok: " + "; ".join(j.describe() for j in judged))

    def _add(self, v: Verdict, name: str, value: float | None, low: float | None = None, high: float | None = None,
             **kw: Any) -> None:
        if name in self.q.limits:
            v.checks = [j for j in v.checks if j.check.name != name]
            v.checks.append(judge(self.specs[name], self.q.limits[name], value, low, high, **kw))

    def _memory(self, v: Verdict) -> None:
        if v.figures.get("est_memory_bytes") is None:
            from lab.bench import _gpu_offload, effective_gpu_layers
            from lab.gguf_info import estimate_memory, inspect

            s = inspect(v.path)
            est = estimate_memory(s, min(self.q.ctx_size, s.n_ctx_train or self.q.ctx_size),
                                  n_gpu_layers=effective_gpu_layers(self.q.n_gpu_layers, s, _gpu_offload()))
            v.figures.update(est_memory_bytes=est.host_bytes, est_vram_bytes=est.gpu_weights_bytes or None,
                             model_size=s.model_size)
        for name, key in (("max_memory_bytes", "est_memory_bytes"), ("max_vram_bytes", "est_vram_bytes")):
            value = v.figures.get(key)
            if value is not None:
                self._add(v, name, value, value * (1 - MEMORY_MARGIN), value * (1 + MEMORY_MARGIN), basis="estimate")
            else:
                self._add(v, name, 0 if name == "max_vram_bytes" else None, basis="estimate")

    # quality ----------------------------------------------------------------------------------

    def _text(self) -> tuple[Path, str]:
        from lab.quality import DEFAULT_TEXT, _read_text, sha256_bytes

        path = Path(self.q.text) if self.q.text else DEFAULT_TEXT
        return path, sha256_bytes(_read_text(path)[0])

    def _stored_quality(self, model_id: str, ref_id: str, text_sha: str) -> dict[str, Any] | None:
        rows = self.store.query(
            "select * from quality where model_id = ? and reference_model_id = ? and text_sha256 = ? and n_ctx = ? "
            "order by n_chunks desc, created_at desc limit 1", [model_id, ref_id, text_sha, 512])
        return rows[0] if rows else None

    def _chunks_available(self, ref_id: str, text_sha: str) -> int | None:
        from lab.quality import TAIL_SAMPLES, TOP_K, cache_key, cache_root, read_cache_meta

        meta = read_cache_meta(cache_root() / cache_key(ref_id, text_sha, 512, TOP_K, TAIL_SAMPLES))
        return meta.get("n_chunk_max") if meta else None

    def _quality(self, v: Verdict, rank_against: Verdict | None = None) -> None:
        from lab.quality import QualityOptions, measure_quality

        if v.is_source:  # a model against itself: exactly 0 and 1 (see lab.quality)
            v.figures.update(kld_mean=0.0, ppl_ratio=1.0)
            self._add(v, "max_kld", 0.0, basis="exact")
            self._add(v, "max_ppl_ratio", 1.0, basis="exact")
            return
        ref = self._reference()
        text_path, text_sha = self._text()
        # Ranking against a pick: one chunk first (a quant far below the pick shows it on 511
        # positions); the whole count only when it cannot tell the two apart (or the limits apart).
        chunks = 1 if rank_against is not None else self.q.chunks
        measured_now = False
        while True:
            row = self._stored_quality(v.model_id or "", ref[1], text_sha)
            available = self._chunks_available(ref[1], text_sha)
            enough = row is not None and (row["n_chunks"] >= chunks or (available and row["n_chunks"] >= available))
            if enough:
                if not measured_now:
                    v.reused.append(f"quality ({row['n_chunks']} chunks)")
            else:
                self.say(f"{v.name}: quality against {ref[0].path.name}, {chunks} chunks of {text_path.name}")
                got = measure_quality(self.store, QualityOptions(
                    models=[str(v.path)], reference=str(ref[0].path), text=text_path, n_chunks=chunks,
                    n_threads=self.q.n_threads), cancel=self.cancel)[0]
                if got.get("status") != "ok":
                    raise _Failed(f"quality measurement failed: {got.get('error')}")
                if got.get("ppl_ratio_stderr") is not None:
                    with self.store._lock, self.store.db.conn:
                        self.store.db["quality"].update(got["id"], {"ppl_ratio_stderr": got["ppl_ratio_stderr"]},
                                                        alter=True)
                measured_now = True
                v.measured.append(f"quality ({got['n_chunks']} chunks)")
                row = self._stored_quality(v.model_id or "", ref[1], text_sha)
                assert row is not None
            v.figures.update(kld_mean=row["kld_mean"], kld_stderr=row["kld_stderr"], ppl_ratio=row["ppl_ratio"],
                             ppl_ratio_stderr=row.get("ppl_ratio_stderr"), quality_chunks=row["n_chunks"])
            for name, key, se in (("max_kld", "kld_mean", "kld_stderr"), ("max_ppl_ratio", "ppl_ratio", "ppl_ratio_stderr")):
                val, err = row.get(key), row.get(se)
                lo, hi = (val - 1.96 * err, val + 1.96 * err) if val is not None and err is not None else (None, None)
                self._add(v, name, val, lo, hi, n=row["n_chunks"])
            mine = [j for j in v.checks if STAGE_OF[j.check.name] == "quality"]
            if rank_against is not None and chunks < self.q.chunks:
                if any(j.status == "fail" for j in mine) or self.ranks_below(v, rank_against):
                    return
                chunks = self.q.chunks
                self.say(f"{v.name}: {row['n_chunks']} chunks do not rank it below {rank_against.name}; "
                         f"measuring {chunks} chunks")
                continue
            undecided = [j for j in mine if j.status == "borderline"]
            cap = min(self.q.max_chunks, available or self.q.max_chunks)
            n_now = row["n_chunks"]
            if not undecided or n_now >= cap:
                return
            chunks = self._more(v, undecided, n_now, cap, self.q.chunks, "chunks", t=False)
            if chunks is None:
                return
            self.say(f"{v.name}: quality interval holds the limit; measuring again with {chunks} chunks")

    def _reference(self) -> tuple["LocalModel", str]:
        """The quality reference: the local source, or a Hub repo's largest candidate."""
        if self.source is None:
            ref = next((c for c in self.cands if c.is_source and c.status != "fail"), None)
            if ref is None:
                raise _Failed("no candidate of the repo fits to serve as the quality reference")
            if ref.pull_spec is not None:
                self._pull(ref)
            from lab import library

            self.source, self.source_id = library.resolve(str(ref.path)), ref.model_id
        assert self.source_id is not None
        return self.source, self.source_id

    # speed ------------------------------------------------------------------------------------

    def _speed_tests(self) -> list[str]:
        lim = self.q.limits
        tests = []
        if "min_pp" in lim:
            tests.append(self.q.test_pp)
        if {"min_tg", "max_j_per_token", "max_cost_per_mtok"} & set(lim) or self.q.prefer == "fastest":
            tests.append(self.q.test_tg)
        if {"max_ttft_ms", "max_itl_p95_ms"} & set(lim):
            tests.append("chat")
        return tests or [self.q.test_tg]

    def _stored_results(self, model_id: str, test: str) -> list[dict[str, Any]]:
        rows = self.store.query(
            "select results.* from results join runs on runs.id = results.run_id where results.model_id = ? "
            "and results.test = ? and results.machine_id = ? and coalesce(results.n_depth, 0) = 0 "
            "and runs.status = 'ok' order by results.test_time desc", [model_id, test, self.machine_id])
        return [r for r in rows if Config.of(r).matches(self.cfg)]

    def _speed(self, v: Verdict) -> None:
        tests = self._speed_tests()
        reps = self.q.repetitions
        benches = 0
        while True:
            missing: list[str] = []
            judged_any = False
            for test in tests:
                rows = self._stored_results(v.model_id or "", test)
                samples = [x for r in rows for x in json.loads(r.get("samples_ts") or "[]")]
                if test == "chat":
                    if not rows:
                        missing.append(test)
                        continue
                    chat = rows[0]
                    v.figures.update(ttft_ms=chat.get("ttft_ms"), itl_p95_ms=chat.get("itl_p95_ms"))
                    self._add(v, "max_ttft_ms", chat.get("ttft_ms"), n=chat.get("n_prompts"))
                    self._add(v, "max_itl_p95_ms", chat.get("itl_p95_ms"), n=chat.get("n_prompts"))
                    continue
                if len(samples) < reps:
                    missing.append(test)
                    continue
                m, lo, hi = mean_interval(samples)  # type: ignore[misc]
                key, name = ("pp_ts", "min_pp") if test.startswith("pp") else ("tg_ts", "min_tg")
                v.figures.update({key: m, f"{key}_low": _finite(lo), f"{key}_high": _finite(hi), f"{key}_n": len(samples),
                                  "peak_rss_bytes": max((r.get("peak_rss_bytes") or 0) for r in rows) or None})
                self._add(v, name, m, lo, hi, n=len(samples))
                if any(is_swapped(r) for r in rows):  # paged while measured: it does not fit
                    v.figures["swapped"] = True
                    self._add(v, "max_memory_bytes", v.figures["peak_rss_bytes"], swapped=True)
                if key == "tg_ts":
                    jpt = next((r.get("j_per_token") for r in rows if r.get("j_per_token") is not None), None)
                    v.figures["j_per_token"] = jpt
                    self._add(v, "max_j_per_token", jpt)
                    self._cost(v, m, lo, hi, jpt)
                judged_any = True
            undecided = [j.check.name for j in v.checks if j.status == "borderline" and STAGE_OF[j.check.name] == "speed"]
            if missing:
                had = {t: len([x for r in self._stored_results(v.model_id or "", t)
                               for x in json.loads(r.get("samples_ts") or "[]")]) for t in missing}
                if benches > self.q.max_repetitions:  # a bug, not a user error: the rows never match
                    raise RuntimeError(f"bench results for {v.name} at {self.cfg} are not found after measuring")
                r = max(1, reps - min(had.values())) if "chat" not in missing else reps
                self._bench(v, missing, r)
                benches += 1
                continue
            if undecided and reps < self.q.max_repetitions:
                n_now = max(v.figures.get("tg_ts_n") or 0, v.figures.get("pp_ts_n") or 0)
                judged = [j for j in v.checks if j.check.name in undecided and j.check.name in ("min_pp", "min_tg")]
                more = self._more(v, judged, max(reps, n_now), self.q.max_repetitions, self.q.repetitions,
                                  "repetitions", t=True) if judged else min(self.q.max_repetitions, max(reps, n_now) * 2)
                if more is None:
                    return
                reps = more
                tests = [t for t in tests if ("min_pp" if t.startswith("pp") else "min_tg") in undecided
                         or (t.startswith("tg") and {"max_cost_per_mtok"} & set(undecided))]
                self.say(f"{v.name}: the 95% interval holds the limit; measuring again up to {reps} repetitions")
                continue
            if judged_any or not missing:
                if not benches:
                    v.reused.append(", ".join(f"{t} n={v.figures.get(('pp_ts' if t.startswith('pp') else 'tg_ts') + '_n')}"
                                              if t != "chat" else t for t in tests))
                return

    def _more(self, v: Verdict, undecided: list[Judged], n: int, cap: int, first: int, unit: str, *,
              t: bool) -> int | None:
        """How many samples to measure an undecided candidate up to: twice as many the first time
        (the spread of a few samples is itself uncertain), then as many as the measured spread says
        would decide every undecided limit. None (stays borderline) when, after that first
        re-measurement, not even ``cap`` samples would."""
        needs = [samples_to_decide(j, n, cap, t=t) for j in undecided]
        known = [need for need in needs if need is not None]
        if n < 2 * first:
            return min(cap, max([2 * n, *known]))
        if len(known) < len(needs):
            self.say(f"{v.name}: at the measured spread not even {cap} {unit} would move the 95% interval "
                     "off the limit; borderline")
            return None
        return min(cap, max([n + 1, *known]))

    def _bench(self, v: Verdict, tests: list[str], reps: int) -> None:
        from lab.bench import BenchOptions, run_bench

        pp = [self.q.n_prompt] if self.q.test_pp in tests else []
        tg = [self.q.n_gen] if self.q.test_tg in tests else []
        self.say(f"{v.name}: bench {', '.join(tests)} -r {reps} -t {self.q.n_threads} -ngl {self.q.n_gpu_layers}")
        opts = BenchOptions(models=[str(v.path)], n_prompt=pp, n_gen=tg, repetitions=reps, threads=[self.q.n_threads or 1],
                            n_gpu_layers=[self.q.n_gpu_layers], chat="chat" in tests, label="rightsize")
        out = run_bench(opts, self.store, cancel=self.cancel)
        if out.status != "ok":
            raise _Failed(f"bench failed: {out.error}")
        v.measured.append(f"{', '.join(tests)} x{reps}")

    def _cost(self, v: Verdict, m: float, lo: float, hi: float, jpt: float | None) -> None:
        if "max_cost_per_mtok" not in self.q.limits:
            return
        from lab.cost import local_cost

        settings = self.store.get("machines", self.machine_id or "") or {}
        # Cost falls as speed rises: the interval's fast end gives the low cost.
        c, c_lo, c_hi = (local_cost(settings, x, jpt).usd_per_mtok if x and x > 0 and math.isfinite(x) else None
                         for x in (m, hi, lo))
        if c is None:
            missing = local_cost(settings, m, jpt).missing if m and m > 0 else []
            note = "No cost figure: set " + ", ".join(missing) + " with `rightsizer machine set`"
            if note not in self.notes:
                self.notes.append(note)
        v.figures["cost_per_mtok"] = c
        self._add(v, "max_cost_per_mtok", c, c_lo, c_hi if c_hi is not None else (math.inf if c is not None else None))

    # suite ------------------------------------------------------------------------------------

    def _suite(self, v: Verdict) -> None:
        from lab.evals.runner import EvalOptions, run_eval
        from lab.evals.stats import wilson_interval
        from lab.evals.suite import load_suite

        suite = load_suite(self.q.suite)
        rows = self.store.query("select * from eval_runs where model_id = ? and suite_sha256 = ? and constrained = 1 "
                                "order by created_at desc limit 1", [v.model_id, suite.sha256])
        if rows:
            v.reused.append(f"suite {suite.name}")
        else:
            self.say(f"{v.name}: task suite {suite.name} ({len(suite.items)} items)")
            run_eval(self.store, EvalOptions(models=[str(v.path)], suite=self.q.suite, n_threads=self.q.n_threads),
                     cancel=self.cancel)
            v.measured.append(f"suite {suite.name}")
            rows = self.store.query("select * from eval_runs where model_id = ? and suite_sha256 = ? "
                                    "and constrained = 1 order by created_at desc limit 1", [v.model_id, suite.sha256])
            if not rows:
                raise _Failed("the task suite did not finish")
        ev = rows[0]
        v.figures.update(accuracy=ev["accuracy"], format_valid_rate=ev["format_valid_rate"], eval_suite=suite.name)
        self._add(v, "min_accuracy", ev["accuracy"], ev["accuracy_ci_low"], ev["accuracy_ci_high"], n=ev["n_items"])
        fv = self.store.query("select count(*) as n, sum(format_valid) as k from eval_items where eval_run_id = ? "
                              "and format_valid is not null", [ev["id"]])[0]
        ci = wilson_interval(int(fv["k"] or 0), int(fv["n"])) if fv["n"] else None
        self._add(v, "min_format_valid", ev["format_valid_rate"], *(ci or (None, None)), n=fv["n"])

    # --- the whole question -------------------------------------------------------------------

    def _stop_if_cancelled(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            from lab.errors import Cancelled

            raise Cancelled("figures measured so far are stored; ask again to go on")

    def _measure(self, v: Verdict, stages: list[str], rank_against: Verdict | None = None) -> None:
        for stage in stages:
            if v.status in ("fail", "error"):
                return
            self._stop_if_cancelled()
            self.say(f"{v.name}: {stage}")
            try:
                self.run_stage(v, stage, rank_against)
            except _Failed as exc:
                # a measurement the user stopped is not the candidate's failure
                self._stop_if_cancelled()
                v.status, v.reason = "error", str(exc)
                self.say(f"{v.name}: error: {exc}")

    def run(self) -> Outcome:
        from lab.provenance import record_machine, run_extra

        self.machine_id = record_machine(self.store)
        cands = self.cands = self.candidates()
        q = self.q
        run_id = self.store.create_run(
            "rightsize", machine_id=self.machine_id, model_id=self.source_id, model_filename=q.model,
            config={"question": q.to_dict(), "limits": q.limits, "judged_at": self.cfg}, **run_extra())
        try:
            pick = self._decide(cands)
        except BaseException as exc:  # the run row must not stay "running": asking again goes on from here
            from lab.errors import Cancelled

            stopped = isinstance(exc, (Cancelled, KeyboardInterrupt))
            self.store.finish_run(run_id, "cancelled" if stopped else "failed", error=str(exc) or type(exc).__name__)
            raise
        outcome = Outcome(q, sorted(cands, key=lambda c: PREFER[q.prefer](c.row())), pick, run_id, self.machine_id,
                          self.cfg, self.notes)
        verdict = {"pick": outcome.to_dict()["pick"],
                   "candidates": [{"file": c.name, "sha256": c.model_id, "status": c.status, "reason": c.reason}
                                  for c in outcome.candidates]}
        self.store.finish_run(run_id, "ok", verdict=json.dumps(verdict, default=str))
        if not q.keep:
            self._drop_downloads(outcome)
        return outcome

    def _decide(self, cands: list[Verdict]) -> Verdict | None:
        """Measure the candidates stage by stage and pick the first, in preference order, that
        meets every limit; a candidate stops being measured at the first limit it fails, or as
        soon as it is certain not to be the pick."""
        q = self.q
        needed = self.needed()
        self.say(f"stages: {', '.join(needed)}; skipped: " +
                 (", ".join(f"{s} (no limit needs it)" for s in STAGES if s not in needed) or "none"))
        smallest = PREFER["smallest"]
        for v in sorted(cands, key=lambda c: smallest(c.row())):  # the header's estimate: nearly free
            if v.status == "pending":
                self._measure(v, ["memory"])
        pick = (self._decide_by_header if PREFER_STAGE[q.prefer] == "memory" else self._decide_by_measure)(cands)
        # stopped during the last candidate: no verdict from half a question
        self._stop_if_cancelled()
        if pick is not None:
            pick.status = "pick"
            if pick.pull_spec is not None:  # judged from its header alone: the command line needs the file
                self._pull(pick)
        return pick

    def _decide_by_header(self, cands: list[Verdict]) -> Verdict | None:
        """smallest, cheapest: the header ranks every candidate, so they are measured in rank
        order and the first to meet every limit is the pick; the rest are not measured."""
        late = [s for s in self.needed() if s != "memory"]
        pick = None
        for v in sorted([c for c in cands if c.status in ("pending", "borderline")],
                        key=lambda c: PREFER[self.q.prefer](c.row())):
            if pick is not None:
                if v.status != "pending":
                    continue
                v.status = "skipped"
                v.reason = f"not measured further: {pick.name} ranks first by {self.q.prefer}"
                self.say(f"{v.name}: skipped ({v.reason})")
                continue
            self._measure(v, late)
            if v.status == "pending":
                v.status, pick = "pass", v
                v.reason = "; ".join(j.describe() for j in v.checks) or "no limits were given"
        return pick

    def _decide_by_measure(self, cands: list[Verdict]) -> Verdict | None:
        """quality, fastest: the ranking figure must be measured. Candidates go in their likely
        rank order (quality: the source, then larger files first; fastest: smaller files first),
        each through the other limits' stages, then the ranking stage, then the task suite. Once
        one meets every limit, each later candidate is first measured for the ranking figure
        alone (quality on one text chunk) and is measured further only when its 95%
        interval does not put it below the pick so far."""
        q = self.q
        pref = PREFER_STAGE[q.prefer]
        needed = self.needed()
        # the task suite and the load, the dearest, last
        stages = [s for s in needed if s not in ("memory", pref, "suite", "load")] + [pref] + \
            [s for s in ("suite", "load") if s in needed]
        if q.prefer == "quality":
            likely = sorted(cands, key=lambda c: (not c.is_source, -(c.file_size or 0)))
        else:
            likely = sorted(cands, key=lambda c: c.file_size or 0)
        pick = None
        for v in likely:
            if v.status not in ("pending", "borderline"):  # a borderline one is measured, never picked
                continue
            if pick is not None:
                self._measure(v, [pref], rank_against=pick)
                if v.status not in ("pending", "borderline"):
                    continue
                if self.ranks_below(v, pick):
                    v.status = "skipped"
                    v.reason = f"ranks below {pick.name} by {q.prefer}: {self._rank_words(v, pick)}"
                    self.say(f"{v.name}: skipped ({v.reason})")
                    continue
            self._measure(v, stages)
            if v.status == "pending":
                v.status = "pass"
                v.reason = "; ".join(j.describe() for j in v.checks) or "no limits were given"
                if pick is None or PREFER[q.prefer](v.row()) < PREFER[q.prefer](pick.row()):
                    pick = v
        return pick

    def _rank_figure(self, v: Verdict) -> tuple[str, float, float, float] | None:
        """The figure ``prefer`` ranks by, with its 95% interval, as (label, value, low, high)
        oriented so that lower is better; None when it is not known."""
        f = v.figures
        keys = (("KLD", "kld_mean", "kld_stderr"), ("PPL ratio", "ppl_ratio", "ppl_ratio_stderr")) \
            if self.q.prefer == "quality" else (("tg t/s", "tg_ts", None), ("pp t/s", "pp_ts", None))
        for label, key, se in keys:
            value = f.get(key)
            if value is None:
                continue
            if se is None:  # speeds: higher is better, so negated
                low, high = f.get(f"{key}_low"), f.get(f"{key}_high")
                if low is None or high is None:
                    return None
                return label, -value, -high, -low
            err = 0.0 if v.is_source else f.get(se)
            if err is None:
                return None
            return label, value, value - 1.96 * err, value + 1.96 * err
        return None

    def ranks_below(self, v: Verdict, pick: Verdict) -> bool:
        """Whether ``v`` is worse than ``pick`` by the preference's figure beyond both 95%
        intervals (the same figure on both sides)."""
        a, b = self._rank_figure(v), self._rank_figure(pick)
        return a is not None and b is not None and a[0] == b[0] and a[2] > b[3]

    def _rank_words(self, v: Verdict, pick: Verdict) -> str:
        a, b = self._rank_figure(v), self._rank_figure(pick)
        assert a is not None and b is not None
        sign = -1 if a[0].endswith("t/s") else 1

        def fmt(x: tuple[str, float, float, float]) -> str:
            lo, hi = sorted((sign * x[2], sign * x[3]))
            return f"{sign * x[1]:.4g} [95% {lo:.4g}–{hi:.4g}]"

        n = f" on {v.figures.get('quality_chunks')} chunks" if a[0] in ("KLD", "PPL ratio") else ""
        return f"{a[0]} {fmt(a)}{n} against {fmt(b)}"

    def _drop_downloads(self, outcome: Outcome) -> None:
        from lab import library

        for v in outcome.candidates:
            if v is not outcome.pick and "download" in v.measured:
                plan = library.deletion_plan(library.LocalModel(v.name, v.path, "hf-cache", v.file_size or 0))
                library.delete_model(plan)
                self.say(f"{v.name}: removed (downloaded for this question only; --keep keeps it)")


class _Failed(Exception):
    """A measurement of one candidate failed: the candidate is an ``error``, the others go on."""


def rightsize(store: "Store", question: Question, *, on_progress: OnProgress | None = None,
              cancel: threading.Event | None = None) -> Outcome:
    """Answer ``question``: every candidate judged stage by stage (memory, quality, speed,
    suite; only the stages its limits and ``prefer`` need), stopping at the first limit it
    fails and once a pick is certain; stored figures for the same file, configuration and
    machine are reused. Records a ``rightsize`` run with the question and the verdict. Raises
    LabError for a question that cannot be asked (an unknown preference or limit, a bad model)."""
    check_question(question)
    return Rightsizer(store, question, on_progress, cancel).run()


def check_question(question: Question) -> None:
    """Raise LabError, in one sentence, for a question that cannot be asked."""
    if question.prefer not in PREFER:
        raise LabError(f"--prefer takes {', '.join(PREFER)}, not {question.prefer!r}")
    specs = all_specs()
    for name, value in question.limits.items():
        if name not in specs:
            raise LabError(f"{name} is not a limit rightsize knows ({', '.join(specs)})")
        if math.isnan(value) or value < 0:
            raise LabError(f"The limit {name} must be a non-negative number, not {value:g}")
    if question.limits.get("min_accuracy", 0) > 1 or question.limits.get("min_format_valid", 0) > 1:
        raise LabError("--min-accuracy and --min-format-valid are fractions between 0 and 1 (0.8 means 80%)")
    if question.repetitions < 2:
        raise LabError("-r must be at least 2: one repetition has no spread to judge a limit with")
    if {"min_accuracy", "min_format_valid"} & set(question.limits) and not question.suite:
        raise LabError("--min-accuracy and --min-format-valid need --suite FILE (or --suite demo)")
    if question.chunks < 1:
        raise LabError("--chunks must be at least 1")
    if "min_users" in question.limits and question.objective == "{}":
        raise LabError("--min-users is judged at a latency objective: give --slo-ttft-ms, --slo-itl-p95-ms or --slo-e2e-ms")
