"""The load stage of ``rightsize``: the most concurrent users a candidate serves within a latency
objective (``--min-users``). A stored ``load --find-max`` for the same file at the same objective
on this machine is reused when it decides the limit; otherwise the search runs now, up to the
limit (the dearest stage, so it comes last)."""

from __future__ import annotations

from typing import Any

LEVEL_S = 10.0  # seconds each level of the search serves


def reusable(found: dict[str, Any] | None, need: int) -> bool:
    """Whether a stored search decides ``need`` users: it reached them, or it found a failing
    level below its own ceiling (so more users would fail too)."""
    if found is None:
        return False
    return found["max_users_at_slo"] >= need or not found["capped"]


def measure_users(rs: Any, v: Any, failed: type[Exception]) -> None:
    """Judge ``min_users`` for candidate ``v`` of the Rightsizer ``rs``; raises ``failed`` when
    the load run fails."""
    from lab.load import LoadOptions, Objective, run_load
    from lab.select import max_users_at_slo

    q = rs.q
    need = int(q.limits["min_users"])
    found = max_users_at_slo(rs.store, v.model_id or "", rs.machine_id, q.objective,
                             {"n_threads": q.n_threads, "n_gpu_layers": q.n_gpu_layers})
    if reusable(found, need):
        assert found is not None
        value = found["max_users_at_slo"]
        v.reused.append(f"load find-max ({value} users)")
    else:
        rs.say(f"{v.name}: load --find-max up to {need} users at {q.objective}")
        options = LoadOptions(model=str(v.path), find_max=True, max_users=need, duration_s=LEVEL_S,
                              max_tokens=q.n_gen, objective=Objective.from_json(q.objective), threads=q.n_threads,
                              n_gpu_layers=q.n_gpu_layers, label="rightsize")
        out = run_load(options, rs.store, cancel=rs.cancel)
        if out.status != "ok":
            raise failed(f"load failed: {out.error}")
        value = int(out.max_level or 0)
        v.measured.append(f"load find-max ≤{need} users")
    v.figures["max_users_at_slo"] = value
    rs._add(v, "min_users", value)
