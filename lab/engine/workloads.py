"""The tests a benchmark runs, with llama-bench's semantics, inside the engine child.

* ``pp N``  N random tokens decoded in batches of n_batch (first token BOS when the vocab adds
  one), one ``llama_synchronize`` at the end.
* ``tg N``  N single-token decodes, each followed by ``llama_synchronize``.
* ``pg P,N`` both, timed as one measurement; depth ``d`` fills the KV cache with d tokens first
  (not timed; the state is cached and restored for later repetitions, as llama-bench does).
* One untimed warm-up (the pp run, then one tg token), then ``r`` repetitions; the KV cache is
  cleared before each. Each repetition's start (``rep_start``, so the parent can read energy
  counters) and time (``rep``) are sent to the parent.
* Sustained (``job.sustained_s``): a ``tg`` test repeats its timed repetitions back to back
  until that many seconds have passed (at least one), instead of ``r`` of them; each is a
  ``rep`` event, so the parent sees the speed over time as the machine heats up.
* ``chat`` real prompts through the model's chat template, greedy decoding: time to first
  token, every inter-token gap, end-to-end time and tokens generated, per prompt.
"""

from __future__ import annotations

import itertools
import random
import time
from typing import Any, Callable

from lab.engine import protocol
from lab.engine.protocol import BenchJob, ContextParams, TestSpec

Emit = Callable[..., None]


def context_size(test: TestSpec, job: BenchJob, prompt_tokens: int = 0) -> int:
    """The context a test needs: llama-bench uses exactly n_prompt + n_gen + n_depth."""
    if test.kind == "batched":
        from lab.engine.batched import n_ctx_required

        return n_ctx_required(test)
    if test.kind == "chat":
        return prompt_tokens + job.chat_max_tokens + 8
    return max(1, test.n_prompt + test.n_gen + test.n_depth)


class Bench:
    """Runs the items of one BenchJob against one loaded model."""

    def __init__(self, job: BenchJob, emit: Emit):
        from lab.engine import llm

        self.llm = llm
        self.job = job
        self.emit = emit
        self.rng = random.Random(job.seed)
        self.model: Any = None
        self.ctx: Any = None
        self._ctx_key: tuple[Any, ...] | None = None
        self._depth_state: tuple[int, bytes] | None = None
        self.ctx_allocated: dict[str, int] = {}

    # -- setup
    def load(self) -> None:
        from lab.engine.worker import peak_rss_bytes

        m = self.job.model
        t0 = time.perf_counter()
        self.model = self.llm.Model(m.path, n_gpu_layers=m.n_gpu_layers, use_mmap=m.use_mmap, repack=m.repack)
        load_ms = (time.perf_counter() - t0) * 1000
        model_bytes = self.llm.take_allocated().get("model")
        self.emit(
            protocol.LOADED, load_ms=load_ms, model_size=self.model.size, n_params=self.model.n_params,
            desc=self.model.desc, n_vocab=self.model.n_vocab, peak_rss_bytes=peak_rss_bytes(),
            chat_template=self.model.chat_template() is not None, repack=self.model.repack,
            repack_warning=self.model.repack_warning, alloc_model_bytes=model_bytes,
        )

    @staticmethod
    def _key(cp: ContextParams, n_ctx: int, seqs: tuple[int, bool] = (1, False), pool: bool = True) -> tuple[Any, ...]:
        return (cp.n_batch, cp.n_ubatch, cp.flash_attn, cp.type_k, cp.type_v, n_ctx, seqs, pool)

    def release_unless(self, cp: ContextParams, n_ctx: int, seqs: tuple[int, bool] = (1, False),
                       pool: bool = True) -> None:
        """Free the current context when the next test needs another one, and hand the memory
        back to the OS, so that the next test's peak RSS is its own (as in a fresh process).
        ``seqs``: the context's sequences and whether their KV cache is unified."""
        if self.ctx is not None and self._key(cp, n_ctx, seqs, pool) != self._ctx_key:
            self.ctx.close()
            self.ctx = None
            self._ctx_key = None
            _malloc_trim()

    def context(self, cp: ContextParams, n_ctx: int, seqs: tuple[int, bool] = (1, False), pool: bool = True) -> Any:
        """The context for a test, reused while the next test needs the same one. ``pool``: a
        persistent threadpool (llama-bench's tests) or llama.cpp's own per graph (the batched
        rows, as llama-batched-bench runs them)."""
        key = self._key(cp, n_ctx, seqs, pool)
        if self.ctx is None or key != self._ctx_key:
            self.release_unless(cp, -1)
            self.llm.take_allocated()
            self.ctx = self.llm.Context(
                self.model, n_ctx=n_ctx, n_batch=cp.n_batch, n_ubatch=cp.n_ubatch, n_threads=cp.n_threads,
                flash_attn=cp.flash_attn, type_k=cp.type_k, type_v=cp.type_v, n_seq_max=seqs[0],
                kv_unified=seqs[1], threadpool=pool,
            )
            self._ctx_key = key
            self._depth_state = None
            self.ctx_allocated = self.llm.take_allocated()
        if self.ctx.n_threads != cp.n_threads:
            self.ctx.set_threads(cp.n_threads)
        return self.ctx

    def allocated(self) -> dict[str, int | None]:
        """The context's buffers as llama.cpp logged them (None where it logged none)."""
        return {f"alloc_{kind}_bytes": self.ctx_allocated.get(kind) for kind in ("kv", "compute", "output")}

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.close()
        if self.model is not None:
            self.model.close()

    # -- llama-bench's two primitives
    def random_prompt(self, n: int) -> list[int]:
        n_vocab = self.model.n_vocab
        toks = [self.rng.randrange(n_vocab) for _ in range(n)]
        if toks and self.model.add_bos:
            toks[0] = self.model.bos
        return toks

    def test_prompt(self, ctx: Any, tokens: list[int]) -> None:
        ctx.decode(tokens)
        ctx.synchronize()

    def test_gen(self, ctx: Any, tokens: list[int]) -> None:
        """One llama_decode + llama_synchronize per token; the batch struct is built once."""
        L = self.llm.lib()
        one = (L.llama_token * 1)()
        batch = L.llama_batch_get_one(one, 1)
        decode, sync, cptr = L.llama_decode, L.llama_synchronize, ctx.ptr
        for tok in tokens:
            one[0] = tok
            if decode(cptr, batch) != 0:
                raise self._decode_error()
            sync(cptr)

    def _decode_error(self) -> Exception:
        from lab.errors import LabError

        return LabError("llama_decode failed during generation (context full or out of memory)")

    def fill_depth(self, ctx: Any, depth: int) -> None:
        if self._depth_state is not None and self._depth_state[0] == depth:
            if ctx.state_set(self._depth_state[1]):
                return
        self.test_prompt(ctx, self.random_prompt(depth))
        self._depth_state = (depth, ctx.state_get())

    # -- tests
    def run_speed_test(self, index: int, test: TestSpec, cp: ContextParams) -> dict[str, Any]:
        ctx = self.context(cp, context_size(test, self.job))
        ctx.clear()
        first_gen = self.model.bos if self.model.add_bos else self.rng.randrange(self.model.n_vocab)
        if self.job.warmup:
            if test.n_prompt:
                self.test_prompt(ctx, self.random_prompt(test.n_prompt))
            if test.n_gen:
                self.test_gen(ctx, [first_gen])
        samples: list[int] = []
        sustained = self.job.sustained_s if test.n_gen and not test.n_prompt else None
        started = time.perf_counter()
        for rep in itertools.count() if sustained else range(self.job.repetitions):
            if sustained and rep and time.perf_counter() - started >= sustained:
                break
            ctx.clear()
            if test.n_depth:
                self.fill_depth(ctx, test.n_depth)
            prompt = self.random_prompt(test.n_prompt) if test.n_prompt else []
            gen = [first_gen] + [self.rng.randrange(self.model.n_vocab) for _ in range(max(0, test.n_gen - 1))]
            self.emit(protocol.REP_START, index=index, rep=rep)
            t0 = time.perf_counter_ns()
            if test.n_prompt:
                self.test_prompt(ctx, prompt)
            if test.n_gen:
                self.test_gen(ctx, gen[: test.n_gen])
            ns = time.perf_counter_ns() - t0
            samples.append(ns)
            self.emit(protocol.REP, index=index, rep=rep, ns=ns, ts=test.n_tokens * 1e9 / ns)
        return {"samples_ns": samples, "n_ctx": ctx.n_ctx, **self.allocated()}

    def chat_tokens(self) -> list[list[int]]:
        model = self.model
        rendered = [model.apply_chat_template(p.messages) for p in self.job.prompts]
        return [model.tokenize(text, add_special=True, parse_special=True) for text in rendered]

    def n_ctx_for(self, test: TestSpec) -> int:
        if test.kind == "chat":
            return context_size(test, self.job, max((len(t) for t in self.chat_tokens()), default=1))
        return context_size(test, self.job)

    def run_chat_test(self, index: int, test: TestSpec, cp: ContextParams) -> dict[str, Any]:
        """Each prompt once (after one untimed warm-up prompt), greedy, up to chat_max_tokens."""
        import numpy as np

        model = self.model
        token_lists = self.chat_tokens()
        longest = max((len(t) for t in token_lists), default=1)
        ctx = self.context(cp, context_size(test, self.job, longest))
        max_tokens = self.job.chat_max_tokens

        def generate(prompt: list[int], report: bool) -> dict[str, Any]:
            ctx.clear()
            t0 = time.perf_counter_ns()
            ctx.decode(prompt)
            token = int(np.argmax(ctx.logits_last()))
            t_first = time.perf_counter_ns()
            stamps = [t_first]
            out = [token]
            while not model.is_eog(token) and len(out) < max_tokens:
                ctx.decode_one(token)
                token = int(np.argmax(ctx.logits_last()))
                stamps.append(time.perf_counter_ns())
                out.append(token)
                if report and len(out) % 16 == 0:
                    self.emit(protocol.TOKEN, index=index, tokens=len(out))
            generated = len(out) - (1 if model.is_eog(out[-1]) else 0)
            return {
                "ttft_ns": t_first - t0,
                "gaps_ns": [b - a for a, b in zip(stamps, stamps[1:])],
                "e2e_ns": stamps[-1] - t0,
                "n_generated": generated,
                "n_prompt_tokens": len(prompt),
                "text": model.detokenize([t for t in out if not model.is_eog(t)]),
            }

        if self.job.warmup and token_lists:
            generate(token_lists[0][: min(len(token_lists[0]), 32)], report=False)
        per_prompt = []
        for rep, prompt in enumerate(token_lists):
            self.emit(protocol.REP_START, index=index, rep=rep)
            result = generate(prompt, report=True)
            per_prompt.append(result)
            gen_ns = sum(result["gaps_ns"])
            ts = (len(result["gaps_ns"]) * 1e9 / gen_ns) if gen_ns else None
            self.emit(protocol.REP, index=index, rep=rep, ns=result["e2e_ns"], ts=ts,
                      ttft_ns=result["ttft_ns"], n_generated=result["n_generated"])
        return {"chat": per_prompt, "n_ctx": ctx.n_ctx, "chat_template": model.chat_template_used(),
                **self.allocated()}


def _malloc_trim() -> None:
    """Return freed heap memory to the OS (glibc); a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_bench_job(payload: dict[str, Any], emit: Emit) -> None:
    """Entry point in the child for ``kind == "bench"``."""
    from lab.engine.worker import peak_rss_bytes, reset_peak_rss

    job = BenchJob.from_payload(payload)
    bench = Bench(job, emit)
    try:
        bench.load()
        for index, item in enumerate(job.items):
            test, cp = item.test, item.ctx
            emit(protocol.TEST_START, index=index, test=test.name, reps=job.repetitions if test.kind != "chat" else len(job.prompts))
            bench.release_unless(cp, bench.n_ctx_for(test), (test.n_seq, test.kv_unified), pool=test.kind != "batched")
            reset_ok = reset_peak_rss()
            if test.kind == "batched":
                from lab.engine.batched import run_batched_test

                figures = run_batched_test(bench, index, test, cp)
            elif test.kind == "chat":
                figures = bench.run_chat_test(index, test, cp)
            else:
                figures = bench.run_speed_test(index, test, cp)
            emit(protocol.TEST_END, index=index, test=test.name, peak_rss_bytes=peak_rss_bytes(),
                 rss_reset_failed=not reset_ok, mono=time.monotonic(), **figures)
    finally:
        bench.close()
