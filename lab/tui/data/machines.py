"""Machines: the machines results were measured on, and one model's figure for one test on each
of them side by side, every machine's figure at the one configuration :func:`lab.select.select`
chose on it, with each machine's fingerprint.

No Textual here: these run in worker threads (each with its own ``Store``) or in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lab.errors import LabError
from lab.select import Selection, common_config, select
from lab.units import NA, human_bytes

# The tests select() picks figures of: depth-0 prompt processing, depth-0 generation, chat.
_COMPARABLE = ("(results.test = 'chat' or coalesce(results.n_depth, 0) = 0 and ("
               "results.n_prompt > 0 and coalesce(results.n_gen, 0) = 0 or "
               "results.n_gen > 0 and coalesce(results.n_prompt, 0) = 0))")


@dataclass
class MachineSummary:
    """A host results were measured on (every fingerprint with that hostname: a new llama.cpp
    build is a new fingerprint of the same host) and how many results it holds."""

    hostname: str
    results: int
    summary: str  # "Test CPU @ 3.00GHz · 2 cores · 8 GiB"


def _host_summary(machine: dict[str, Any]) -> str:
    parts = [machine.get("cpu_info") or NA, f"{machine['cpu_cores']} cores" if machine.get("cpu_cores") else None,
             human_bytes(machine.get("ram_bytes")) if machine.get("ram_bytes") else None,
             machine.get("gpu_info")]
    return " · ".join(p for p in parts if p)


def machine_list(store: Any) -> list[MachineSummary]:
    """Every host that holds results, by hostname (a machine stored without one by its id)."""
    rows = store.query(
        "select coalesce(machines.hostname, results.machine_id, 'n/a') as host, count(*) as n, "
        "max(machines.id) as machine_id from results left join machines on machines.id = results.machine_id "
        "group by host order by host")
    out = []
    for r in rows:
        machine = store.get("machines", r["machine_id"]) if r["machine_id"] else None
        out.append(MachineSummary(r["host"], int(r["n"]), _host_summary(machine or {})))
    return out


def _hostnames(store: Any) -> dict[str, str]:
    return {r["id"]: r["hostname"] for r in store.query("select id, hostname from machines") if r["hostname"]}


def measured_on(store: Any) -> dict[str, list[tuple[str, int]]]:
    """Per model id: the hosts it was measured on, with how many results each (most first)."""
    # One pass over the table, no joins (the machines table is small): SQLite would otherwise walk
    # the (model_id, test) index and look up every row, 2.5 times slower at 100k results.
    rows = store.query("select model_id, machine_id, count(*) as n from results not indexed "
                       "where model_id is not null group by model_id, machine_id")
    hosts = _hostnames(store)
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        host = hosts.get(r["machine_id"]) or r["machine_id"] or NA
        by_host = counts.setdefault(r["model_id"], {})
        by_host[host] = by_host.get(host, 0) + int(r["n"])
    return {mid: sorted(by_host.items(), key=lambda h: (-h[1], h[0])) for mid, by_host in counts.items()}


@dataclass
class ModelTests:
    """A model that can be compared across machines: its tests, and on how many machines."""

    model_id: str
    label: str  # "SmolLM2-135M-Instruct.Q8_0.gguf (Q8_0)"
    machines: int
    tests: list[str]


def _test_order(test: str) -> tuple[int, int, str]:
    kind = 0 if test.startswith("tg") else 1 if test.startswith("pp") else 2
    return kind, int("".join(c for c in test if c.isdigit()) or 0), test


def comparable_models(store: Any) -> list[ModelTests]:
    """Models with figures :func:`compare_machines` can put side by side: measured on the most
    machines first."""
    rows = store.query(
        "select model_id, test, max(model_filename) as name, count(distinct machine_id) as n "
        "from results not indexed "  # one pass: see measured_on
        f"where model_id is not null and {_COMPARABLE} and (avg_ts is not null or ttft_ms is not null) "
        "group by model_id, test")
    known = {m["id"]: m for m in store.query("select id, model_filename, file_type from models")}
    models: dict[str, ModelTests] = {}
    for r in rows:
        model = known.get(r["model_id"], {})
        label = model.get("model_filename") or r["name"] or r["model_id"]
        quant = model.get("file_type")
        if quant and quant.lower() not in label.lower():
            label += f" ({quant})"
        entry = models.setdefault(r["model_id"], ModelTests(r["model_id"], label, 0, []))
        entry.machines = max(entry.machines, int(r["n"]))
        entry.tests.append(r["test"])
    for entry in models.values():
        entry.tests.sort(key=_test_order)
    return sorted(models.values(), key=lambda m: (-m.machines, m.label))


def default_test(tests: list[str]) -> str | None:
    """tg128 when measured, else the first test in :func:`comparable_models`' order."""
    return "tg128" if "tg128" in tests else (tests[0] if tests else None)


# label, machines-row keys joined by " / " (all missing: n/a)
FINGERPRINT_ROWS: list[tuple[str, tuple[str, ...]]] = [
    ("hostname", ("hostname",)), ("CPU", ("cpu_info",)), ("cores / threads", ("cpu_cores", "cpu_threads")),
    ("RAM", ("ram_bytes",)), ("GPU", ("gpu_info",)), ("VRAM", ("vram_bytes",)), ("backends", ("backends",)),
    ("llama.cpp build", ("build_commit", "llama_cpp_version")), ("OS", ("os", "kernel")), ("arch", ("arch",)),
    ("board", ("board_model",)), ("memory type", ("memory_type",)), ("CPU governor", ("cpu_governor",)),
]
_BYTES = {"ram_bytes", "vram_bytes"}
_OPTIONAL = {"board", "memory type", "CPU governor", "VRAM"}  # rows left out when no machine has them


def fingerprint_rows(machines: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """The fingerprint of each machine as table rows: (label, one value per machine)."""
    out = []
    for label, keys in FINGERPRINT_ROWS:
        values = []
        for m in machines:
            got = [human_bytes(m.get(k)) if k in _BYTES else str(m.get(k)) for k in keys if m.get(k) is not None]
            values.append(" / ".join(got) if got else NA)
        if label in _OPTIONAL and all(v == NA for v in values):
            continue
        out.append((label, values))
    return out


@dataclass
class MachineFigure:
    """One machine's column: its fingerprint, the selection (the configuration the figure was
    measured at) and the figure's result row (None: not measured there at that configuration)."""

    machine: dict[str, Any]
    selection: Selection
    row: dict[str, Any] | None

    def flags(self) -> list[str]:
        """What makes the figure less trustworthy, in words (``noisy``, ``swapped``, ...)."""
        row = self.row or {}
        words = [flag for flag in ("noisy", "swapped", "throttled") if row.get(flag)]
        if row.get("run_status") not in (None, "ok"):
            words.append(f"run {row['run_status']}")
        return words


@dataclass
class MachineComparison:
    model_id: str
    label: str
    test: str
    figures: list[MachineFigure] = field(default_factory=list)
    same_config: bool = False  # asked for one configuration on every machine

    @property
    def configs_differ(self) -> bool:
        """Whether the machines' figures come from different configurations."""
        return common_config([f.selection for f in self.figures if f.row is not None]) is None


def _kind(row: dict[str, Any]) -> str:
    if row["test"] == "chat":
        return "chat"
    return "pp" if row.get("n_prompt") and not row.get("n_gen") else "tg"


def compare_machines(store: Any, model_id: str, test: str, *, first_machine_id: str | None = None,
                     same_config: bool = False) -> MachineComparison:
    """``model_id``'s ``test`` figure on every machine that measured it, each at the configuration
    :func:`lab.select.select` picks on that machine (its best measured one; with ``same_config``,
    the one configuration measured on the most machines, so a machine without it shows none).
    ``first_machine_id`` (this machine) comes first when it measured the model: differences are
    against the first. Raises LabError when the model never ran ``test``."""
    probe = store.query(
        f"select test, n_prompt, n_gen from results where model_id = :m and test = :t and {_COMPARABLE} limit 1",
        {"m": model_id, "t": test})
    if not probe:
        raise LabError(f"{test} was never measured for this model (at depth 0)")
    kind = _kind(probe[0])
    # Only this test's figures take part in choosing each machine's configuration.
    selections = select(store, model_ids=[model_id], pp_test=test if kind == "pp" else "",
                        tg_test=test if kind == "tg" else "", common=same_config)
    model = store.get("models", model_id) or {}
    label = model.get("model_filename") or model_id
    if model.get("file_type") and model["file_type"].lower() not in label.lower():
        label += f" ({model['file_type']})"
    out = MachineComparison(model_id, label, test, same_config=same_config)
    for sel in selections:
        machine = (store.get("machines", sel.machine_id) if sel.machine_id else None) or {"id": sel.machine_id}
        row = getattr(sel, kind)
        if row is not None:
            row = dict(row)
            run = store.get("runs", row["run_id"]) if row.get("run_id") else None
            row["run_status"] = (run or {}).get("status")
        out.figures.append(MachineFigure(machine, sel, row))
    out.figures.sort(key=lambda f: (f.machine.get("id") != first_machine_id, f.machine.get("hostname") or "",
                                    f.machine.get("id") or ""))
    return out
