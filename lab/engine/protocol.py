"""The job and event types shared by the parent (runner) and the child (worker).

A job travels as one JSON object on the child's stdin: ``{"kind": ..., "payload": {...}}``.
Events come back as JSON lines on stdout, each with an ``"event"`` key. llama.cpp's own log goes
to stderr. Plain dataclasses and dicts only: the child must start fast and the parent must never
import llama.cpp.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Job kinds and the function that runs each inside the child ("module:function").
# Each function takes (payload: dict, emit: Callable[..., None]) and returns nothing.
JOB_HANDLERS: dict[str, str] = {
    "bench": "lab.engine.workloads:run_bench_job",
    "quantize": "lab.quantize:run_quantize_job",
    "quality": "lab.engine.quality_job:run_quality_job",
    "eval": "lab.evals.runner:run_eval_job",
    "build_info": "lab.engine.buildinfo:run_build_info_job",
    "load": "lab.engine.serving:run_load_job",
}

# Event names
HELLO = "hello"            # child started: pid, llama.cpp version, system_info
LOADED = "loaded"          # model loaded: load_ms, model_size, n_params, desc
TEST_START = "test_start"  # index, test, reps, n_prompt, n_gen, n_depth, ...
REP_START = "rep_start"    # index, rep: a timed repetition begins (the parent reads energy counters)
REP = "rep"                # index, rep, ns, tokens, ts (one repetition timed)
TOKEN = "token"            # chat/eval progress: index, tokens so far
TEST_END = "test_end"      # index, the result row (child side figures)
PROGRESS = "progress"      # free-form progress of long jobs (quality chunks, eval items)
ROW = "row"                # a row for a table other than results (quality, eval_items ...)
DONE = "done"              # the job finished normally
ERROR = "error"            # the job failed in a way the user can act on: message


@dataclass
class ModelParams:
    """Parameters that need a model reload when they change (llama-bench's mparams)."""

    path: str
    n_gpu_layers: int = 0
    use_mmap: bool = True
    repack: bool | None = None  # None: probe whether extra CPU buffer types run here


@dataclass
class ContextParams:
    """Parameters of one llama.cpp context (llama-bench's cparams)."""

    n_threads: int
    n_batch: int = 2048
    n_ubatch: int = 512
    flash_attn: int = -1  # -1 auto, 0 off, 1 on
    type_k: str = "f16"
    type_v: str = "f16"


@dataclass
class TestSpec:
    """One test: ``pp`` (n_prompt), ``tg`` (n_gen), ``pg`` (both), at a depth; or ``chat``."""

    __test__ = False  # not a pytest class

    n_prompt: int = 0
    n_gen: int = 0
    n_depth: int = 0
    kind: str = "bench"  # "bench", "chat" or "batched"
    # batched (llama-batched-bench): n_seq sequences in one context, prompt shared or not
    n_seq: int = 1
    pp_shared: bool = False
    kv_unified: bool = False

    @property
    def name(self) -> str:
        if self.kind == "batched":
            flags = (" pps" if self.pp_shared else "") + (" kvu" if self.kv_unified else "")
            return f"pp{self.n_prompt}+tg{self.n_gen} x{self.n_seq}{flags}"
        if self.kind == "chat":
            base = "chat"
        elif self.n_prompt and self.n_gen:
            base = f"pp{self.n_prompt}+tg{self.n_gen}"
        elif self.n_prompt:
            base = f"pp{self.n_prompt}"
        else:
            base = f"tg{self.n_gen}"
        return f"{base} @ d{self.n_depth}" if self.n_depth else base

    @property
    def n_tokens(self) -> int:
        """Tokens processed per repetition (t/s = n_tokens / seconds), as llama-bench counts;
        batched: every sequence's tokens, a shared prompt once (llama-batched-bench's S)."""
        if self.kind == "batched":
            return (self.n_prompt if self.pp_shared else self.n_seq * self.n_prompt) + self.n_seq * self.n_gen
        return self.n_prompt + self.n_gen


@dataclass
class BenchItem:
    test: TestSpec
    ctx: ContextParams


@dataclass
class ChatPrompt:
    """A realistic request: chat messages (role/content) rendered by the model's template."""

    messages: list[dict[str, str]]
    id: str | None = None


# Recorded as a run's chat template when the model has none and its chat prompts were rendered
# as plain "role: content" lines: the figures then do not describe the model as it is served.
FALLBACK_TEMPLATE = "fallback"


def fallback_warning(model_filename: str) -> str:
    """The one sentence a face prints when a run's chat prompts used the fallback template."""
    return (f"warning: {model_filename} has no chat template; its chat prompts were sent as plain "
            "\"role: content\" lines, not as the model expects them")


@dataclass
class BenchJob:
    """Everything one child runs against one loaded model."""

    model: ModelParams
    items: list[BenchItem]
    repetitions: int = 5
    warmup: bool = True
    prompts: list[ChatPrompt] = field(default_factory=list)
    chat_max_tokens: int = 128
    seed: int = 1234
    sustained_s: float | None = None  # tg tests repeat until this many seconds have passed

    def to_wire(self) -> dict[str, Any]:
        return {"kind": "bench", "payload": asdict(self)}

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> "BenchJob":
        return cls(
            model=ModelParams(**p["model"]),
            items=[BenchItem(TestSpec(**i["test"]), ContextParams(**i["ctx"])) for i in p["items"]],
            repetitions=p.get("repetitions", 5),
            warmup=p.get("warmup", True),
            prompts=[ChatPrompt(**c) for c in p.get("prompts", [])],
            chat_max_tokens=p.get("chat_max_tokens", 128),
            seed=p.get("seed", 1234),
            sustained_s=p.get("sustained_s"),
        )
