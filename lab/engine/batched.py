"""Many sequences in one context, with llama-batched-bench's semantics (llama.cpp
``tools/batched-bench``).

For one row (PP, TG, B):

* B sequences each get a PP-token random prompt; all are decoded together in batches of
  n_batch tokens (logits only at each prompt's last token), then one ``llama_synchronize``: T_PP.
* ``-pps``: the prompt is decoded once (sequence 0) and copied to the other sequences with
  ``llama_memory_seq_cp``, untimed. With a split KV cache (the default) one dummy token applies
  the copy and is removed again; a unified cache (``-kvu``) shares the cells.
* TG steps in lock-step: each decodes one token for every sequence, then ``llama_synchronize``:
  T_TG.
* N_KV = B*(PP+TG), or PP + B*TG with a shared prompt in a unified cache (what the row needs).
  S_PP = prompt tokens / T_PP (PP when shared, else B*PP); S_TG = B*TG / T_TG; T = T_PP + T_TG;
  S = (prompt tokens + B*TG) / T.
* The KV cache is cleared before every repetition.
* The context has no persistent threadpool attached (llama.cpp makes one per graph), as in
  llama-batched-bench; llama-bench's tests get one.

Two choices differ from llama-batched-bench on purpose, for memory figures that belong to the row:
each row gets its own context of exactly N_KV tokens and B sequences (llama-batched-bench sizes
one context of ``-c`` tokens for the whole sweep; attention spans only the cells in use, and
alternating runs of both sizes showed no difference beyond the machine's noise), and each row is
warmed up by one untimed run with a single TG step (llama-batched-bench decodes 16 tokens once per
sweep), as llama-bench warms up every test.
"""

from __future__ import annotations

import time
from typing import Any

from lab.engine import protocol
from lab.engine.protocol import ContextParams, TestSpec
from lab.errors import LabError

# llama-batched-bench's jsonl keys, in its order, and the store's columns that hold them
JSONL_KEYS = {
    "pp": "n_prompt", "tg": "n_gen", "pl": "n_seq", "n_kv": "n_kv", "t_pp": "t_pp", "speed_pp": "s_pp",
    "t_tg": "t_tg", "speed_tg": "s_tg", "t": "t_total", "speed": "s_total",
}


def batched_tests(n_pp: list[int], n_tg: list[int], n_pl: list[int], *, pp_shared: bool = False,
                  kv_unified: bool = False) -> list[TestSpec]:
    """The rows of a sweep in llama-batched-bench's order: PP outermost, then TG, then B."""
    return [TestSpec(n_prompt=pp, n_gen=tg, kind="batched", n_seq=pl, pp_shared=pp_shared, kv_unified=kv_unified)
            for pp in n_pp for tg in n_tg for pl in n_pl]


def n_ctx_required(test: TestSpec) -> int:
    """KV cells the row needs, computed as llama-batched-bench does (its N_KV)."""
    pp, tg, pl = test.n_prompt, test.n_gen, test.n_seq
    if test.pp_shared:
        return (pp if test.kv_unified else pl * pp) + pl * tg
    return pl * (pp + tg)


def prompt_tokens(test: TestSpec) -> int:
    """Prompt tokens decoded in T_PP: a shared prompt once, else one per sequence."""
    return test.n_prompt if test.pp_shared else test.n_seq * test.n_prompt


def check_sizes(tests: list[TestSpec], n_ctx_limit: int, limit_text: str) -> None:
    """Refuse a sweep with a row that needs more context than the limit (llama-batched-bench
    skips such rows without a word). ``limit_text`` names the limit in the sentence."""
    for test in tests:
        need = n_ctx_required(test)
        if need > n_ctx_limit:
            raise LabError(f"{test.name} needs a context of {need} tokens, more than {limit_text}; "
                           "use smaller -npp/-ntg/-npl values")


class _Batch:
    """A llama_batch whose token/pos/logits arrays are numpy views (filled without a Python
    loop per token); each token belongs to one sequence."""

    def __init__(self, L: Any, n: int):
        import numpy as np

        self.L = L
        self.b = L.llama_batch_init(n, 0, 1)
        self.n = n
        self.token = np.ctypeslib.as_array(self.b.token, shape=(n,))
        self.pos = np.ctypeslib.as_array(self.b.pos, shape=(n,))
        self.logits = np.ctypeslib.as_array(self.b.logits, shape=(n,))
        np.ctypeslib.as_array(self.b.n_seq_id, shape=(n,))[:] = 1

    def fill(self, tokens: Any, pos: Any, seq: Any, logits: Any) -> None:
        n = len(tokens)
        self.token[:n], self.pos[:n], self.logits[:n] = tokens, pos, logits
        for i in range(n):  # seq_id is an array of pointers: one store per token, outside timing
            self.b.seq_id[i][0] = int(seq[i])
        self.b.n_tokens = n

    def free(self) -> None:
        self.L.llama_batch_free(self.b)


class _Row:
    """One row's prompt chunks and generation batch, built once and refilled per repetition."""

    def __init__(self, L: Any, test: TestSpec, n_batch: int, n_vocab: int, rng: Any):
        import numpy as np

        self.L, self.test, self.rng, self.n_vocab = L, test, rng, n_vocab
        pp, pl = test.n_prompt, test.n_seq
        n_seqs = 1 if test.pp_shared else pl
        self.seq = np.repeat(np.arange(n_seqs), pp)
        self.pos = np.tile(np.arange(pp), n_seqs)
        self.out = (self.pos == pp - 1).astype(np.int8)
        total = len(self.seq)
        self.chunks = [(s, min(s + n_batch, total)) for s in range(0, total, n_batch)]
        self.pp_batches = [_Batch(L, e - s) for s, e in self.chunks]
        for batch, (s, e) in zip(self.pp_batches, self.chunks):
            batch.fill(np.zeros(e - s, dtype=np.int32), self.pos[s:e], self.seq[s:e], self.out[s:e])
        self.gen = _Batch(L, pl)
        self.gen.fill(np.zeros(pl, dtype=np.int32), np.full(pl, pp), np.arange(pl), np.ones(pl, dtype=np.int8))
        self.dummy = _Batch(L, 1)

    def refill(self) -> Any:
        """Fresh random prompt tokens (llama-batched-bench: rand() % n_vocab, no BOS); returns
        the generation tokens for every step, [TG, B]."""
        prompt = self.rng.integers(0, self.n_vocab, len(self.seq), dtype=self.pp_batches[0].token.dtype)
        for batch, (s, e) in zip(self.pp_batches, self.chunks):
            batch.token[:] = prompt[s:e]
        return self.rng.integers(0, self.n_vocab, (self.test.n_gen, self.test.n_seq), dtype=self.gen.token.dtype)

    def free(self) -> None:
        for b in (*self.pp_batches, self.gen, self.dummy):
            b.free()


def _decode(L: Any, cptr: Any, batch: Any) -> None:
    rc = L.llama_decode(cptr, batch)
    if rc != 0:
        raise LabError(f"llama_decode failed with code {rc} (context full or out of memory)")


def _run_once(L: Any, ctx: Any, row: _Row, n_gen: int, on_start: Any = None) -> tuple[int, int]:
    """One repetition from an empty KV cache: (T_PP ns, T_TG ns)."""
    test = row.test
    pp, pl = test.n_prompt, test.n_seq
    gen_tokens = row.refill()
    ctx.clear()
    cptr, decode, sync, tok, pos = ctx.ptr, L.llama_decode, L.llama_synchronize, row.gen.token, row.gen.pos
    if on_start is not None:
        on_start()
    t0 = time.perf_counter_ns()
    for batch in row.pp_batches:  # no synchronize between the sub-batches, as in llama-batched-bench
        _decode(L, cptr, batch.b)
    sync(cptr)
    t1 = time.perf_counter_ns()
    if test.pp_shared:
        for seq in range(1, pl):
            L.llama_memory_seq_cp(ctx.mem, 0, seq, -1, -1)
        if not test.kv_unified:  # a split cache applies the copy on the next decode
            row.dummy.fill([int(gen_tokens[0, 0])], [pp], [0], [1])
            _decode(L, cptr, row.dummy.b)
            sync(cptr)
            L.llama_memory_seq_rm(ctx.mem, 0, pp, -1)
    pos[:pl] = pp
    t2 = time.perf_counter_ns()
    for i in range(n_gen):
        tok[:pl] = gen_tokens[i]
        if decode(cptr, row.gen.b) != 0:
            raise LabError("llama_decode failed during generation (context full or out of memory)")
        sync(cptr)
        pos[:pl] += 1
    t3 = time.perf_counter_ns()
    return t1 - t0, t3 - t2


def run_batched_test(bench: Any, index: int, test: TestSpec, cp: ContextParams) -> dict[str, Any]:
    """Warm-up, then the job's repetitions of one row; per repetition T_PP and T_TG in ns.

    ``bench`` is the engine's :class:`lab.engine.workloads.Bench` (model, context, emit)."""
    import numpy as np

    L = bench.llm.lib()
    ctx = bench.context(cp, n_ctx_required(test), (test.n_seq, test.kv_unified), pool=False)
    row = _Row(L, test, cp.n_batch, bench.model.n_vocab, np.random.default_rng(bench.job.seed + index))
    try:
        if bench.job.warmup:
            _run_once(L, ctx, row, 1)
        pp_ns: list[int] = []
        tg_ns: list[int] = []
        for rep in range(bench.job.repetitions):
            t_pp, t_tg = _run_once(L, ctx, row, test.n_gen,
                                   on_start=lambda r=rep: bench.emit(protocol.REP_START, index=index, rep=r))
            pp_ns.append(t_pp)
            tg_ns.append(t_tg)
            ns = t_pp + t_tg
            bench.emit(protocol.REP, index=index, rep=rep, ns=ns, ts=test.n_tokens * 1e9 / ns,
                       t_pp_ns=t_pp, t_tg_ns=t_tg)
        # what the KV cache holds after the last repetition: PP + TG positions per sequence
        seq_tokens = [int(L.llama_memory_seq_pos_max(ctx.mem, s)) + 1 for s in range(test.n_seq)]
    finally:
        row.free()
    return {"samples_ns": [a + b for a, b in zip(pp_ns, tg_ns)], "samples_pp_ns": pp_ns,
            "samples_tg_ns": tg_ns, "n_ctx": int(L.llama_n_ctx(ctx.ptr)), "seq_tokens": seq_tokens}


def batched_figures(test: TestSpec, end: dict[str, Any]) -> dict[str, Any]:
    """The result row's batched columns from the child's per-repetition times.

    Per repetition the figures are llama-batched-bench's; over several repetitions times are
    averaged, and speeds are the mean of the per-repetition speeds (llama-bench's avg_ts rule),
    so with one repetition S = N / T exactly.
    """
    import json

    from lab.stats import mean, speed_stats

    pp_ns, tg_ns = end["samples_pp_ns"], end["samples_tg_ns"]
    n_pp, n_tg = prompt_tokens(test), test.n_seq * test.n_gen
    stats = speed_stats(end["samples_ns"], test.n_tokens)
    return dict(
        stats, repetitions=len(end["samples_ns"]), samples_ns=end["samples_ns"],
        n_seq=test.n_seq, pp_shared=int(test.pp_shared), kv_unified=int(test.kv_unified),
        n_kv=n_ctx_required(test),
        t_pp=mean([x / 1e9 for x in pp_ns]), s_pp=mean([n_pp * 1e9 / x for x in pp_ns]),
        t_tg=mean([x / 1e9 for x in tg_ns]), s_tg=mean([n_tg * 1e9 / x for x in tg_ns]),
        t_total=mean([x / 1e9 for x in end["samples_ns"]]), s_total=stats["avg_ts"],
        samples_pp_ns=json.dumps(pp_ns), samples_tg_ns=json.dumps(tg_ns),
    )


def jsonl_keys(row: dict[str, Any]) -> dict[str, Any]:
    """llama-batched-bench's own jsonl keys for a stored batched row (None for other rows)."""
    return {key: row.get(column) for key, column in JSONL_KEYS.items()}
