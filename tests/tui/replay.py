"""A recorded benchmark run, replayed into the Run screen so its live dashboard can be
snapshot-tested without timing noise.

``tests/tui/data/tiny_run.jsonl`` holds every event ``lab.bench.run_bench`` emitted while it
measured the tiny model that ``tiny_model.write_tiny_llama`` writes (the Library's
``tiny-llama-2L.gguf``), with the options the Run screen's form builds by default on the test
machine (2 threads, pp 512, tg 128, 5 repetitions, chat on). Its first line describes the
recording; each further line is one event, in the order the bench emitted them. Timings,
samples and ids are what that run measured, fixed in the file: the replay shows the same screen
every time. ``test_replay.py`` runs the same bench again and checks that the recording still
has the shape of what ``run_bench`` emits.

To record it again (after the bench's events change)::

    PYTHONPATH=. python tests/tui/replay.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

RECORDING = Path(__file__).parent / "data" / "tiny_run.jsonl"
MODEL_NAME = "tiny-llama-2L.gguf"  # tiny_model.write_tiny_llama's defaults, as in conftest.tiny_models
MODELS_PLACEHOLDER = "<models>"  # stands for the folder the recorded model was in
# The Run screen's form with its defaults on the test machine (conftest.machine_context: 2 cores).
FORM = {"n_prompt": "512", "n_gen": "128", "pg": "", "n_depth": "0", "repetitions": "5", "threads": "2",
        "n_batch": "2048", "n_ubatch": "512", "n_gpu_layers": "-1", "chat": True}
# Events that come from a clock or from llama.cpp's stderr, not from the bench's progress: how
# many arrive, and where between the others, depends on timing.
ASYNCHRONOUS = {"sample", "log"}


def bench_options(model: str | Path) -> Any:
    """The options the Run screen builds from ``FORM`` for ``model``."""
    from lab.tui.data import build_options

    return build_options(dict(FORM, models=str(model)))


def options_record(options: Any) -> dict[str, Any]:
    """BenchOptions as the recording stores them (models by file name)."""
    record = asdict(options)
    record["models"] = [Path(m).name for m in record["models"]]
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in record.items()}


def record(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Measure the tiny model with ``run_bench`` in ``folder`` (model and database); returns the
    recording's header and every event, as emitted."""
    from tiny_model import write_tiny_llama

    from lab import __version__
    from lab.bench import run_bench
    from lab.store import Store

    model = write_tiny_llama(folder / MODEL_NAME)
    options = bench_options(model)
    events: list[dict[str, Any]] = []
    store = Store(folder / "record.db")
    try:
        outcome = run_bench(options, store, on_event=events.append)
    finally:
        store.close()
    if outcome.status != "ok":
        raise RuntimeError(f"the recorded run did not succeed: {outcome.error}")
    header = {"recording": "run_bench events", "model": MODEL_NAME, "lab_version": __version__,
              "options": options_record(options)}
    return header, events


def _without_folder(value: Any, folder: str) -> Any:
    """The recording must not name the temporary folder it was made in."""
    if isinstance(value, str):
        return value.replace(folder, MODELS_PLACEHOLDER)
    if isinstance(value, list):
        return [_without_folder(v, folder) for v in value]
    if isinstance(value, dict):
        return {k: _without_folder(v, folder) for k, v in value.items()}
    return value


def write_recording(path: Path = RECORDING) -> None:
    """Record a fresh run into ``path`` (overwriting the previous recording)."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RIGHTSIZER_HOME"] = str(Path(tmp) / "home")  # no trace in the user's lab
        header, events = record(Path(tmp))
        folder = str(Path(tmp).resolve())
        lines = [header] + [_without_folder(e, folder) for e in events]
        lines = [_without_folder(e, tmp) for e in lines]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines), encoding="utf-8")


def load_recording(path: Path = RECORDING) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The recording's header and its events."""
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[0], lines[1:]


def until(events: list[dict[str, Any]], test: str, rep: int) -> list[dict[str, Any]]:
    """The events up to and including repetition ``rep`` (0-based) of ``test``: the run as it
    stood at that moment."""
    index = next(e["index"] for e in events if e["event"] == "test_start" and e["test"] == test)
    end = next(i for i, e in enumerate(events) if e["event"] == "rep" and e["index"] == index and e["rep"] == rep)
    return events[:end + 1]


def shape(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What a recording must share with a fresh run: the sequence of progress events (every
    event but samples and log lines, consecutive token events counted as one, since how many a
    chat answer has is the model's output), which asynchronous kinds occur, and the keys each
    kind of event carries (for samples and results, the keys of their row too)."""
    sequence: list[str] = []
    for e in events:
        kind = e["event"]
        if kind in ASYNCHRONOUS or (kind == "token" and sequence and sequence[-1] == "token"):
            continue
        sequence.append(kind)
    keys: dict[str, set[str]] = {}
    for e in events:
        keys.setdefault(e["event"], set()).update(e)
        for nested in ("sample", "row"):
            if isinstance(e.get(nested), dict):
                keys.setdefault(f"{e['event']}.{nested}", set()).update(e[nested])
    return {"sequence": sequence, "asynchronous": sorted({e["event"] for e in events} & ASYNCHRONOUS),
            "keys": {k: sorted(v) for k, v in sorted(keys.items())}}


class Player:
    """A stand-in for ``lab.bench.run_bench`` that emits recorded events through ``on_event``
    (what the app gives the real one), then holds the run open, as a run still measuring, until
    the app cancels it. ``before`` runs first (a test moves its clock there). It keeps the
    options and plans the app passed in, and ``posted`` is set once every event is out."""

    def __init__(self, events: list[dict[str, Any]], before: Callable[[], None] = lambda: None) -> None:
        import threading

        self.events = events
        self.before = before
        self.calls: list[tuple[Any, Any]] = []
        self.posted = threading.Event()

    def __call__(self, options: Any, store: Any, *, on_event: Any = None, cancel: Any = None,
                 plans: Any = None) -> Any:
        from lab.bench import BenchOutcome

        self.calls.append((options, plans))
        self.before()
        for event in self.events:
            on_event(event)
        self.posted.set()
        if cancel is not None:
            cancel.wait(60)
        return BenchOutcome(status="cancelled", error="cancelled by the user")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent.parent))  # tiny_model
    write_recording()
    header, recorded = load_recording()
    print(f"{RECORDING}: {len(recorded)} events, {json.dumps(shape(recorded)['sequence'][:12])}...")
