"""Paired comparison of two eval runs: Newcombe's interval and the exact McNemar test, checked
against published and hand-computed values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab.evals.paired import CompareError, mcnemar_exact_p, newcombe_paired_interval, pair


def test_published_values_for_a_paired_table() -> None:
    # Cavo et al. (2012), 59 / 6 / 16 / 80, as printed by Fagerland, Lydersen & Laake's
    # reference implementation: difference -0.0621, 95% CI -0.1186 to -0.0046; exact P = 0.052479.
    low, high = newcombe_paired_interval(59, 6, 16, 80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)
    assert round(mcnemar_exact_p(6, 16), 6) == 0.052479


def test_hand_computed_mcnemar() -> None:
    # b=7, c=2: P(X <= 2 | Bin(9, 1/2)) = (1 + 9 + 36) / 512; two-sided doubles it.
    assert mcnemar_exact_p(7, 2) == pytest.approx(92 / 512)
    assert mcnemar_exact_p(2, 7) == mcnemar_exact_p(7, 2)
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(3, 3) == 1.0  # capped: 2 * P(X <= 3 | Bin(6, 1/2)) = 2 * 42/64 > 1
    assert mcnemar_exact_p(0, 6) == pytest.approx(2 / 64)


def test_no_discordant_items_gives_a_symmetric_interval_around_zero() -> None:
    # By hand: Wilson 30/36 = [0.681092, 0.921294] for both runs; phi = (180 - 36/2) / 180 = 0.9;
    # half-width = sqrt(0.152241^2 - 2 * 0.9 * 0.152241 * 0.087961 + 0.087961^2) = 0.082523.
    low, high = newcombe_paired_interval(30, 0, 0, 6)
    assert low == pytest.approx(-0.082523, abs=2e-6) and high == pytest.approx(0.082523, abs=2e-6)


def test_pairing_by_item_id_and_the_verdict_in_words() -> None:
    a = {f"i{k}": k < 27 for k in range(36)}                  # 27 right
    b = {f"i{k}": k < 20 or 30 <= k < 32 for k in range(36)}  # 22 right: 20 shared, 2 only B
    p = pair("endpoint:big", a, "small.gguf", b)
    assert (p.both, p.only_a, p.only_b, p.neither, p.n) == (20, 7, 2, 7, 36)
    assert p.difference == pytest.approx(5 / 36)
    assert p.verdict() == ("not distinguishable at n=36 (exact McNemar p = 0.18; 7 items only endpoint:big "
                           "got right, 2 only small.gguf)")
    far = pair("A", {str(k): True for k in range(20)}, "B", {str(k): k < 5 for k in range(20)})
    assert far.p_value == pytest.approx(2 / 2 ** 15)
    assert far.verdict().startswith("A is more accurate than B at n=20 (exact McNemar p = 6.1e-05;")
    with pytest.raises(CompareError):
        pair("A", {"x": True}, "B", {"y": True})


def _eval_run(store, label: str, correct: list[bool]) -> str:
    from lab.store import now_iso

    eval_id = store.add_row("eval_runs", {"model_filename": label, "suite": "s", "suite_sha256": "abc",
                                          "n_items": len(correct), "created_at": now_iso(), "run_id": label + "-run"})
    store.add_rows("eval_items", [{"eval_run_id": eval_id, "item_id": f"item-{i}", "item_index": i,
                                   "correct": int(c)} for i, c in enumerate(correct)])
    return eval_id


def test_cli_compares_two_stored_runs(tmp_path: Path) -> None:
    from lab.store import Store

    store = Store(tmp_path / "lab.db")
    a = _eval_run(store, "endpoint:big", [True] * 27 + [False] * 9)
    b = _eval_run(store, "small.gguf", [True] * 20 + [False] * 7 + [False] * 3 + [True] * 2 + [False] * 4)
    store.close()
    cmd = [sys.executable, "-m", "lab", "eval-compare", a[-10:], b, "--db", str(tmp_path / "lab.db")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "A: endpoint:big  accuracy 75.0% (27/36)",
        "B: small.gguf  accuracy 61.1% (22/36)",
        "difference A - B: +13.9 points, 95% CI [-2.8, +29.6] (Newcombe method 10, paired)",
        "verdict: not distinguishable at n=36 (exact McNemar p = 0.18; 7 items only endpoint:big got right, "
        "2 only small.gguf)",
    ]
    rec = json.loads(subprocess.run(cmd + ["-o", "json"], capture_output=True, text=True).stdout)
    assert rec["mcnemar_exact_p"] == pytest.approx(92 / 512) and rec["interval_method"] == "Newcombe method 10"
    out = subprocess.run(cmd[:4] + ["nope", b, "--db", str(tmp_path / "lab.db")], capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr == "error: No eval run matches 'nope' (see 'rightsizer results --runs').\n"
