"""Cost per 1M generated tokens: machine amortisation + energy, endpoint prices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.cost import endpoint_cost, local_cost

SETTINGS = {"price_usd": 1200.0, "lifetime_years": 4.0, "utilization": 0.5, "power_usd_per_kwh": 0.30, "watts": 35.0}


def test_local_cost_by_hand_with_watts() -> None:
    # 1200 USD over 4 y x 8766 h x 0.5 busy = 0.068446 USD per busy hour; at 36.49 t/s a busy
    # hour makes 131 364 tokens: 0.52104 USD per 1M. Energy: 35 W x 0.30 USD/kWh = 0.0105 USD/h,
    # 0.079931 USD per 1M.
    cost = local_cost(SETTINGS, 36.49)
    assert cost.hardware_usd_per_mtok == pytest.approx(0.52104, abs=1e-5)
    assert cost.energy_usd_per_mtok == pytest.approx(0.079931, abs=1e-6)
    assert cost.usd_per_mtok == pytest.approx(0.52104 + 0.079931, abs=2e-5)
    assert cost.energy_source == "--watts 35" and cost.missing == []


def test_measured_energy_wins_over_watts() -> None:
    # 0.5 J/token = 0.5e6 J per 1M tokens = 0.13889 kWh, at 0.30 USD/kWh: 0.041667 USD.
    cost = local_cost(SETTINGS, 36.49, j_per_token=0.5)
    assert cost.energy_usd_per_mtok == pytest.approx(0.041667, abs=1e-6)
    assert cost.energy_source == "measured J/token"


def test_unknown_parts_make_the_total_unknown_not_zero() -> None:
    cost = local_cost({"power_usd_per_kwh": 0.3}, 20.0)
    assert cost.hardware_usd_per_mtok is None and cost.usd_per_mtok is None and cost.energy_usd_per_mtok is None
    assert cost.missing == ["--price", "--lifetime-years", "--utilization",
                            "--watts (no energy counter measured J/token)"]


def test_endpoint_cost_from_prices_and_tokens() -> None:
    # 1000 prompt tokens at 0.15 and 200 generated at 0.60 USD per 1M: 0.00027 USD, 1.35 USD per 1M generated.
    assert endpoint_cost(0.15, 0.60, 1000, 200) == {"usd": pytest.approx(0.00027), "usd_per_mtok": pytest.approx(1.35)}
    assert endpoint_cost(None, 0.60, 1000, 200) == {"usd": None, "usd_per_mtok": None}


def test_machine_set_and_cost_command(tmp_path: Path) -> None:
    from lab import hardware
    from lab.store import Store

    db = tmp_path / "lab.db"
    store = Store(db)
    machine_id = store.upsert_machine(hardware.fingerprint())
    store.add_result({"run_id": "r1", "machine_id": machine_id, "model_id": "sha", "model_filename": "m.gguf",
                      "test": "tg64", "n_prompt": 0, "n_gen": 64, "n_depth": 0, "avg_ts": 36.49})
    store.close()

    def rs(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lab", *args, "--db", str(db)], capture_output=True, text=True,
                              env=os.environ.copy())

    out = rs("machine", "set", "--price", "1200", "--lifetime-years", "4", "--utilization", "0.5",
             "--power-price", "0.30", "--watts", "35")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("machine cost settings: price_usd 1200, lifetime_years 4, utilization 0.5, "
                                  "power_usd_per_kwh 0.3, watts 35")
    (row,) = json.loads(rs("cost", "-o", "json").stdout)
    assert row["model"] == "m.gguf" and row["usd_per_mtok"] == pytest.approx(0.60097, abs=2e-5)
    assert row["energy_source"] == "--watts 35"
    bad = rs("machine", "set", "--utilization", "2")
    assert bad.returncode == 1
    assert bad.stderr == "error: --utilization is the busy share of the time, more than 0 and at most 1.\n"
