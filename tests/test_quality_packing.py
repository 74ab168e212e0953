"""Several chunks share one decode, as in llama-perplexity: packing must change no figure."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from lab.engine.quality_job import LOGITS_BUDGET, N_BATCH, chunks_per_decode
from lab.quality import DEFAULT_TEXT

_PACKED = textwrap.dedent("""
    import json, sys
    import numpy as np
    from lab.engine import llm
    from lab.engine.quality_job import ChunkDecoder
    from lab.quality_numerics import compare_block, reference_block
    path, text, n_ctx, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    m = llm.Model(path, repack=False)
    toks = m.tokenize(open(text, encoding="utf-8").read(), add_special=True, parse_special=False)
    chunks = [[m.bos] + toks[i * n_ctx + 1:(i + 1) * n_ctx] for i in range(n)]
    first = n_ctx // 2
    one = ChunkDecoder(m, n_ctx, 1, 2)
    alone = np.stack([one.decode([c], first)[0].copy() for c in chunks])
    one.close()
    many = ChunkDecoder(m, n_ctx, n, 2)
    packed = many.decode(chunks, first).copy()
    many.close()
    nxt = np.asarray([t for i in range(n) for t in toks[i * n_ctx + first + 1:(i + 1) * n_ctx] + [0]])
    ref = reference_block(alone.reshape(-1, m.n_vocab), nxt, 256, 64, np.random.default_rng(0))
    nll = compare_block(packed.reshape(-1, m.n_vocab), nxt, ref)["nll"]
    print(json.dumps({"shape": list(packed.shape), "identical": bool(np.array_equal(alone, packed)),
                      "nll_alone": ref.nll.tolist(), "nll_packed": nll.tolist()}))
""")


def test_packed_chunks_give_the_same_logits_as_chunks_alone(demo_gguf: Path) -> None:
    n_ctx, n = 96, 3
    out = subprocess.run([sys.executable, "-c", _PACKED, str(demo_gguf), str(DEFAULT_TEXT), str(n_ctx), str(n)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["shape"] == [n, n_ctx - n_ctx // 2, 49152]
    assert got["identical"]  # each sequence attends to its own cells only
    alone, packed = np.asarray(got["nll_alone"]), np.asarray(got["nll_packed"])
    assert np.array_equal(alone, packed) and 1.0 < float(np.exp(alone.mean())) < 1000.0


def test_chunks_per_decode_follows_llama_perplexity_within_the_budget() -> None:
    # llama-perplexity's n_batch / n_ctx: 4 chunks of 512 for a 49k vocabulary (200 MB of logits)
    assert chunks_per_decode(512, 49152, 47) == N_BATCH // 512 == 4
    assert chunks_per_decode(256, 49152, 47) == 8 and chunks_per_decode(512, 49152, 3) == 3
    # a 262k vocabulary: one chunk's scored logits already take 268 MB, so one at a time
    assert chunks_per_decode(512, 262144, 47) == 1
    for n_vocab in (32000, 49152, 128256, 152064):
        n = chunks_per_decode(512, n_vocab, 47)
        assert n == 1 or n * 256 * n_vocab * 4 <= LOGITS_BUDGET
