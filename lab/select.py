"""One way to pick the figures of a model: which results, at which configuration, on which machine.

A model measured at several configurations (a thread sweep, ``-ngl 0`` and ``-ngl 99``, two batch
sizes, flash attention on and off, another KV type) has several honest answers to "how fast is
it?". Putting the newest pp figure of one configuration beside the tg figure of another, or one
quant's 1-thread speed beside another's 2-thread speed, prints figures that were never measured
together. So every face (the model table, ``recommend``, the ladder, the Library) asks
:func:`select`, which groups results by their full configuration — threads, GPU layers, batch,
micro-batch, flash attention, KV types (the depth is part of the test name) — and returns, per
model and machine, the figures of ONE configuration, with the configuration, the machine and the
build named, so the output can say where each figure comes from.

No Textual, no llama.cpp: plain SQL through the store.
"""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    from lab.store import Store

# The result columns that make a configuration, in llama-bench's order.
CONFIG_KEYS = ("n_threads", "n_gpu_layers", "n_batch", "n_ubatch", "flash_attn", "type_k", "type_v")

# llama.cpp's flash-attention setting: -1 auto, 0 off, 1 on (llama-server's -fa takes the words).
FLASH_ATTN_WORDS = {-1: "auto", 0: "off", 1: "on"}
FLASH_ATTN_VALUES = {"auto": -1, "-1": -1, "off": 0, "0": 0, "false": 0, "on": 1, "1": 1, "true": 1}


def parse_flash_attn(text: str | int) -> int:
    """``"on"`` / ``"off"`` / ``"auto"`` (or 1 / 0 / -1) -> 1 / 0 / -1; ValueError otherwise."""
    key = str(text).strip().lower()
    if key not in FLASH_ATTN_VALUES:
        raise ValueError(f"flash attention is on, off or auto, not {text!r}")
    return FLASH_ATTN_VALUES[key]


def _show(value: Any) -> str:
    return "?" if value is None else str(value)


@dataclass(frozen=True)
class Config:
    """A measured configuration. None is a setting the result did not record (an imported file
    from an older llama-bench), never a default guessed for it."""

    n_threads: int | None = None
    n_gpu_layers: int | None = None
    n_batch: int | None = None
    n_ubatch: int | None = None
    flash_attn: int | None = None
    type_k: str | None = None
    type_v: str | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> "Config":
        """The configuration a result row was measured at."""
        fa = row.get("flash_attn")
        return cls(*(row.get(k) for k in CONFIG_KEYS[:4]), None if fa is None else int(fa),
                   row.get("type_k"), row.get("type_v"))

    def label(self) -> str:
        """``"t=2 ngl=0 b=2048 ub=512 fa=auto kv=f16/f16"``; ``?`` for what was not recorded."""
        fa = FLASH_ATTN_WORDS.get(self.flash_attn, _show(self.flash_attn)) if self.flash_attn is not None else "?"
        return (f"t={_show(self.n_threads)} ngl={_show(self.n_gpu_layers)} b={_show(self.n_batch)} "
                f"ub={_show(self.n_ubatch)} fa={fa} kv={_show(self.type_k)}/{_show(self.type_v)}")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in CONFIG_KEYS}

    def matches(self, wanted: Mapping[str, Any]) -> bool:
        """Whether every setting given in ``wanted`` (keys of :data:`CONFIG_KEYS`; None: any) is
        this configuration's."""
        for key, value in wanted.items():
            if key not in CONFIG_KEYS:
                raise KeyError(f"{key!r} is not a configuration setting ({', '.join(CONFIG_KEYS)})")
            if value is not None and getattr(self, key) != value:
                return False
        return True

    def llama_args(self) -> list[str]:
        """The llama.cpp flags that reproduce this configuration (``-t 2 -ngl 0 -b 2048 -ub 512
        -fa auto -ctk f16 -ctv f16``); a setting not recorded is left to llama.cpp's default."""
        args: list[str] = []
        for flag, value in (("-t", self.n_threads), ("-ngl", self.n_gpu_layers), ("-b", self.n_batch),
                            ("-ub", self.n_ubatch)):
            if value is not None:
                args += [flag, str(value)]
        if self.flash_attn is not None:
            args += ["-fa", FLASH_ATTN_WORDS.get(self.flash_attn, str(self.flash_attn))]
        if self.type_k is not None:
            args += ["-ctk", self.type_k]
        if self.type_v is not None:
            args += ["-ctv", self.type_v]
        return args


def command_lines(model_path: str, config: Config, n_ctx: int | None = None) -> dict[str, str]:
    """The ``llama-server`` and ``llama-cli`` command lines that run ``model_path`` at
    ``config`` (and context ``n_ctx`` when known), quoted for a POSIX shell."""
    args = ["-m", model_path, *config.llama_args()]
    if n_ctx:
        args += ["-c", str(n_ctx)]
    return {tool: shlex.join([tool, *args]) for tool in ("llama-server", "llama-cli")}


@dataclass
class Selection:
    """The figures of one model on one machine at one configuration.

    ``pp``, ``tg`` and ``chat`` are the newest result rows of the tests ``pp_test``, ``tg_test``
    and ``chat`` at ``config`` (None: not measured at it). ``other_configs`` counts the other
    configurations this model was measured at on this machine (their figures are not mixed in).
    """

    model_id: str
    machine_id: str | None
    config: Config
    pp_test: str | None
    tg_test: str | None
    pp: dict[str, Any] | None = None
    tg: dict[str, Any] | None = None
    chat: dict[str, Any] | None = None
    other_configs: int = 0
    hostname: str | None = None
    builds: list[str] = field(default_factory=list)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The chosen result rows, pp then tg then chat."""
        return [r for r in (self.pp, self.tg, self.chat) if r is not None]

    @property
    def any_row(self) -> dict[str, Any]:
        return (self.tg or self.pp or self.chat)  # type: ignore[return-value]

    def describe(self) -> str:
        """``"t=2 ngl=0 b=2048 ub=512 fa=auto kv=f16/f16 on box (build 8cf427ff)"``."""
        text = self.config.label()
        where = self.hostname or self.machine_id
        if where:
            text += f" on {where}"
        if self.builds:
            text += f" (build {', '.join(self.builds)})"
        return text


_SHAPES = {
    "pp": "results.n_prompt > 0 and coalesce(results.n_gen, 0) = 0",
    "tg": "results.n_gen > 0 and coalesce(results.n_prompt, 0) = 0",
}


def _machine_clause(machine_id: str | None, params: dict[str, Any]) -> str:
    if not machine_id:
        return ""
    params.update(machine=machine_id, machine_prefix=f"{machine_id}%")
    return (" and (results.machine_id like :machine_prefix or results.machine_id in "
            "(select id from machines where hostname = :machine))")


def _fetch(store: "Store", machine_id: str | None, model_ids: Iterable[str] | None) -> list[dict[str, Any]]:
    """Every depth-0 pp and tg result and every chat result with a figure, newest first."""
    params: dict[str, Any] = {}
    where = (f"((({_SHAPES['pp']}) or ({_SHAPES['tg']})) and coalesce(results.n_depth, 0) = 0 "
             "and results.test != 'chat' and results.avg_ts is not null "
             "or results.test = 'chat' and (results.avg_ts is not null or results.ttft_ms is not null))")
    where += _machine_clause(machine_id, params)
    if model_ids is not None:
        ids = sorted(set(model_ids))
        if not ids:
            return []
        names = [f"m{i}" for i in range(len(ids))]
        params.update(zip(names, ids))
        where += f" and results.model_id in ({', '.join(':' + n for n in names)})"
    return store.query(
        "select results.*, machines.hostname as hostname, runs.build_commit as build_commit, "
        "models.model_filename as m_filename, models.file_type as file_type, models.file_size as file_size, "
        "models.model_size as m_model_size, models.model_n_params as m_n_params, models.arch as arch, "
        "models.path as m_path "
        "from results left join runs on runs.id = results.run_id "
        "left join machines on machines.id = results.machine_id "
        "left join models on models.id = results.model_id "
        f"where {where} order by results.test_time desc, results.id desc",
        params,
    )


def _kind(row: Mapping[str, Any]) -> str:
    if row["test"] == "chat":
        return "chat"
    return "pp" if row.get("n_prompt") and not row.get("n_gen") else "tg"


def model_key(row: Mapping[str, Any]) -> str:
    """A result's model: its model id, else ``file:<name>`` (a result stored without one)."""
    return row.get("model_id") or f"file:{row.get('model_filename')}"


def _pick_test(rows: Sequence[Mapping[str, Any]], kind: str, preferred: str) -> str | None:
    """``preferred`` when measured, else the test of this kind measured most often (then the
    largest, as llama-bench's defaults are the largest usual sizes)."""
    names = Counter(r["test"] for r in rows if _kind(r) == kind)
    if not names:
        return None
    if preferred in names:
        return preferred
    return max(names, key=lambda n: (names[n], int("".join(c for c in n if c.isdigit()) or 0), n))


def _rank(sel: Selection) -> tuple[Any, ...]:
    """Best measured first: the configuration that covers the most of pp, tg and chat, then the
    fastest generation, then the fastest prompt processing, then the newest."""
    tg = sel.tg.get("avg_ts") if sel.tg else None
    pp = sel.pp.get("avg_ts") if sel.pp else None
    newest = max((r.get("test_time") or "" for r in sel.rows), default="")
    return (len(sel.rows), tg if tg is not None else -1.0, pp if pp is not None else -1.0, newest)


def select(store: "Store", *, machine_id: str | None = None, model_ids: Iterable[str] | None = None,
           pp_test: str = "pp512", tg_test: str = "tg128", any_size: bool = False,
           config: Mapping[str, Any] | None = None, common: bool = False) -> list[Selection]:
    """The figures of every measured model at one configuration per model and machine.

    ``machine_id`` (an id, an id prefix or a hostname) keeps one machine; None keeps each machine
    apart (a model measured on two machines gets two selections). ``model_ids`` keeps those models.

    Tests: ``pp_test`` and ``tg_test`` (depth 0) and ``chat``. With ``any_size``, a model that
    never ran ``pp_test`` / ``tg_test`` uses the pp / tg test it ran most often instead (the
    selection names the tests it used).

    Configuration: ``config`` maps :data:`CONFIG_KEYS` to the values to judge (None or absent:
    any); only results measured at a matching configuration count. Among the matching ones, each
    model gets its best measured configuration (see :func:`_rank`). With ``common``, one
    configuration (and one pp / tg test) is used for every model — the one measured on the most
    models, then the best measured — so rows can be compared; a model not measured at it gets a
    selection with no figures.
    """
    rows = _fetch(store, machine_id, model_ids)
    wanted = dict(config or {})
    rows = [r for r in rows if Config.of(r).matches(wanted)]
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((model_key(r), r.get("machine_id")), []).append(r)

    def tests_for(model_rows: Sequence[Mapping[str, Any]]) -> tuple[str | None, str | None]:
        if not any_size:
            return pp_test, tg_test
        return _pick_test(model_rows, "pp", pp_test), _pick_test(model_rows, "tg", tg_test)

    if common and any_size:
        shared = tests_for(rows)
        tests_of = {key: shared for key in groups}
    else:
        tests_of = {key: tests_for(g) for key, g in groups.items()}

    candidates: dict[tuple[str, str | None], dict[Config, Selection]] = {}
    for key, model_rows in groups.items():
        pp_name, tg_name = tests_of[key]
        by_config = candidates.setdefault(key, {})
        for r in model_rows:  # newest first: the first row of a test at a configuration stays
            name = {"pp": pp_name, "tg": tg_name, "chat": "chat"}[_kind(r)]
            if r["test"] != name:
                continue
            cfg = Config.of(r)
            sel = by_config.get(cfg)
            if sel is None:
                sel = by_config[cfg] = Selection(key[0], key[1], cfg, pp_name, tg_name, hostname=r.get("hostname"))
            slot = _kind(r)
            if getattr(sel, slot) is None:
                setattr(sel, slot, r)
        if not by_config:
            del candidates[key]

    if common:
        counts = Counter(cfg for by_config in candidates.values() for cfg in by_config)
        best: dict[Config, tuple[Any, ...]] = {}
        for by_config in candidates.values():
            for cfg, sel in by_config.items():
                best[cfg] = max(best.get(cfg, ()), _rank(sel))
        chosen = max(counts, key=lambda c: (counts[c], best[c])) if counts else None
    out: list[Selection] = []
    for key, by_config in candidates.items():
        if common:
            pick = by_config.get(chosen) if chosen is not None else None  # type: ignore[arg-type]
            if pick is None:
                pp_name, tg_name = tests_of[key]
                pick = Selection(key[0], key[1], chosen or Config(), pp_name, tg_name,
                                 hostname=next(iter(by_config.values())).hostname)
        else:
            pick = max(by_config.values(), key=_rank)
        pick.other_configs = len(by_config) - (1 if pick.config in by_config else 0)
        pick.builds = sorted({r["build_commit"] for r in pick.rows if r.get("build_commit")})
        out.append(pick)
    return out


def common_config(selections: Sequence[Selection]) -> Config | None:
    """The configuration every selection with figures shares, or None when they differ."""
    configs = {s.config for s in selections if s.rows}
    return next(iter(configs)) if len(configs) == 1 else None


def best_speeds(store: "Store", machine_id: str) -> dict[str, dict[str, Any]]:
    """Per model id on one machine: ``pp`` and ``tg`` (t/s), the tests they come from and the
    configuration (``config``: its label), at each model's best measured configuration — what
    the Library's pp / tg columns show."""
    out: dict[str, dict[str, Any]] = {}
    for sel in select(store, machine_id=machine_id, any_size=True):
        if sel.pp is None and sel.tg is None:
            continue
        out[sel.model_id] = {
            "pp": sel.pp["avg_ts"] if sel.pp else None, "tg": sel.tg["avg_ts"] if sel.tg else None,
            "pp_test": sel.pp_test if sel.pp else None, "tg_test": sel.tg_test if sel.tg else None,
            "config": sel.config.label(), "other_configs": sel.other_configs,
        }
    return out


def is_swapped(row: dict[str, Any]) -> bool:
    """True when a result was measured while its model was being paged (``swapped`` = 1): its
    speed and memory figures are those of a model that does not fit, so it does not meet a
    memory limit whatever its peak RSS says. False for 0 and for NULL (not measured)."""
    return bool(row.get("swapped"))


def objective_key(ttft_ms: float | None = None, itl_p95_ms: float | None = None,
                  e2e_ms: float | None = None) -> str:
    """A latency objective as it is stored beside a load figure (the ``slo`` columns): only the
    objectives given, as floats, keys sorted, so the same objective always reads the same."""
    import json

    given = {"ttft_ms": ttft_ms, "itl_p95_ms": itl_p95_ms, "e2e_ms": e2e_ms}
    return json.dumps({k: float(v) for k, v in given.items() if v is not None}, sort_keys=True)


def max_users_at_slo(store: "Store", model_id: str, machine_id: str | None, objective: str,
                     config: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The newest finished ``load --find-max`` over users for one model (on one machine, when
    given) at exactly this objective (:func:`objective_key`), and at ``config`` when given (keys
    of :data:`CONFIG_KEYS`; a search whose levels ran at another setting is not this answer):
    ``max_users_at_slo``, ``max_kv_bytes``, the run's id, its machine, and ``capped`` — true
    when the search passed its own ceiling, so the figure is a lower bound, not a maximum."""
    import json

    where = "kind = 'load' and status = 'ok' and max_users_at_slo is not null and model_id = ? and slo = ?"
    params: list[Any] = [model_id, objective]
    if machine_id:
        where += " and machine_id = ?"
        params.append(machine_id)
    wanted = {k: v for k, v in (config or {}).items() if k in CONFIG_KEYS and v is not None}
    if wanted:
        where += " and id in (select run_id from results where " + " and ".join(f"{k} = ?" for k in wanted) + ")"
        params += list(wanted.values())
    rows = store.query(f"select id as load_run_id, machine_id, max_users_at_slo, max_kv_bytes, config from runs "
                       f"where {where} order by finished_at desc limit 1", params)
    if not rows:
        return None
    found = rows[0]
    ceiling = json.loads(found.pop("config") or "{}").get("max_users")
    found["capped"] = ceiling is not None and found["max_users_at_slo"] >= ceiling
    return found
