"""Hub screen: search, the file/quant picker with memory fit, the download queue, offline.

Every request goes to the fake Hub on 127.0.0.1 (tests/hub_server.py), reached through
``HF_ENDPOINT``; the HF cache and the store are the test's own.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from textual.widgets import DataTable

from conftest import screen_text, wait_for
from hub_server import FakeHub, build_gguf

from lab import catalog, config, hub
from lab.gguf_info import estimate_memory, read_header_bytes, summarize
from lab.store import Store
from lab.tui.format import human_bytes

REPO = "acme/Tiny-Llama-GGUF"
POPULAR = "acme/Tiny-Llama-Instruct-GGUF"
Q4 = "Tiny-Llama-Q4_K_M.gguf"
Q5 = "Tiny-Llama-Q5_K_M.gguf"
Q8_PARTS = [f"Tiny-Llama-Q8_0-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
MIB = 1 << 20


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """A ~4 MiB Q4_K_M, a smaller Q5_K_M, a 3-part Q8_0 and a README."""
    q4 = build_gguf(name="tiny-llama", file_type=15, n_vocab=4096, n_embd=128)[0]
    q5 = build_gguf(name="tiny-llama-q5", file_type=17, n_vocab=1024, n_embd=64)[0]
    q8 = build_gguf(name="tiny-llama-q8", file_type=7, n_vocab=1024, n_embd=64, split_max_tensors=4)
    return {Q4: q4, Q5: q5, **dict(zip(Q8_PARTS, q8)), "README.md": b"# Tiny llama\n"}


@pytest.fixture
def fake(files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch):
    with FakeHub() as server:
        server.add_repo(REPO, files, downloads=1500, likes=12, n_params=2_400_000,
                        last_modified="2025-03-01T12:00:00.000Z")
        server.add_repo(POPULAR, {Q4: files[Q4]}, downloads=90_000, likes=300, n_params=2_400_000,
                        last_modified="2025-05-02T08:30:00.000Z")
        server.add_repo("other/Unrelated-GGUF", {Q4: files[Q4]}, downloads=10**7)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_TOKEN", "hf_TestOnlyTokenAbcdef0123456789")  # never a real login
        yield server


@pytest.fixture
def gate(fake: FakeHub):
    """Downloads of Q4 send their first MiB, then wait until the test opens the gate: a
    download that is reliably mid-way when the test presses cancel."""
    opened = fake.hold_once(Q4, MIB)
    yield opened
    opened.set()


def _repos(app) -> DataTable:
    return app.screen.query_one("#hub-repos", DataTable)


def _files(app) -> DataTable:
    return app.screen.query_one("#hub-files", DataTable)


def _cells(table: DataTable, key: str) -> list[str]:
    return [str(c) for c in table.get_row(key)]


def _expected_estimate(data: bytes, n_ctx: int) -> int:
    summary = summarize(read_header_bytes(data), file_size=len(data), filename=Q4)
    return estimate_memory(summary, min(n_ctx, summary.n_ctx_train)).total_bytes


async def _open_hub(pilot) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.library is not None)
    await pilot.press("5")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "HubScreen" and _repos(app).row_count > 0)


async def test_search_pick_a_quant_and_download_it_into_the_library(
        make_app, fake: FakeHub, files: dict[str, bytes], seeded_db: Path) -> None:
    q4_estimate = _expected_estimate(files[Q4], 4096)
    # Just too little RAM for the Q4_K_M: its fit flag must say so, the smaller quants fit.
    app = make_app(memory_available=q4_estimate - 1)
    async with app.run_test(size=(160, 44)) as pilot:
        await _open_hub(pilot)
        assert "[5 Hub]" in screen_text(app)
        await pilot.press("slash", *"tiny-llama", "enter")
        await wait_for(pilot, lambda: app.screen.kind == "search" and _repos(app).row_count == 2)
        table = _repos(app)
        assert [str(table.get_row_at(i)[0]) for i in range(2)] == [POPULAR, REPO]  # most downloaded first
        assert _cells(table, POPULAR)[1:5] == ["90000", "300", "2025-05-02", "2.40 M"]
        assert "2 GGUF repositories match 'tiny-llama'" in screen_text(app)

        await pilot.press("down", "enter")  # open acme/Tiny-Llama-GGUF
        await wait_for(pilot, lambda: _files(app).row_count == 3)
        files_table = _files(app)
        q4 = _cells(files_table, Q4)
        # file, quant, header quant, parts, size, ctx (capped at the training context), est., fits, basis
        assert q4 == [Q4, "Q4_K_M", "Q4_K_M", "1", human_bytes(len(files[Q4])), "2048",
                      human_bytes(q4_estimate), "NO", "header"]
        q5 = _cells(files_table, Q5)
        assert q5[1:4] == ["Q5_K_M", "n/a", "1"] and q5[7:] == ["yes", "sibling header"]
        q8 = _cells(files_table, Q8_PARTS[0])
        assert q8[3] == "3" and q8[4] == human_bytes(sum(len(files[p]) for p in Q8_PARTS))
        # One header read by Range request: a few hundred KiB, not the 4 MiB file.
        probes = fake.requests_for(Q4)
        assert probes and all(s.range and s.range.startswith("bytes=0-") for s in probes)
        assert fake.bytes_served(Q4) < len(files[Q4]) / 4
        status = str(app.screen.query_one("#hub-files-status").render())
        assert f"{REPO}: 3 files, memory at 2048 tokens (the model's training context) against {human_bytes(q4_estimate - 1)} RAM available" in status
        assert "header read with a Range request (256.00 KiB fetched, not the file)" in status
        # The cursor waits on the default quant (what `pull REPO` takes).
        assert str(files_table.coordinate_to_cell_key(files_table.cursor_coordinate).row_key.value) == Q4

        await pilot.press("enter")  # download the highlighted file
        item = app.screen.downloads[f"{REPO}/{Q4}"]
        await wait_for(pilot, lambda: item.state == "done", timeout=30)
        assert item.progress is not None and item.progress.done_bytes == item.progress.total_bytes == len(files[Q4])
        name = f"{REPO}/{Q4}"
        await wait_for(pilot, lambda: any(e.model.name == name for e in app.library or []))
        entry = next(e for e in app.library if e.model.name == name)
        assert entry.model.source == "hf-cache" and entry.summary.file_type == "Q4_K_M"
        text = screen_text(app)
        assert "Downloads: 1 done" in text and "100%" in text and "sha256 verified" in text

    store = Store(seeded_db)
    try:
        rows = [r for r in store.models() if r.get("source_repo") == REPO]
    finally:
        store.close()
    assert len(rows) == 1 and rows[0]["source"] == "hf" and rows[0]["file_size"] == len(files[Q4])
    assert rows[0]["source_revision"] == fake.repos[REPO].commit


async def test_cancel_mid_download_keeps_the_partial_out_of_the_library(
        make_app, fake: FakeHub, files: dict[str, bytes], gate: threading.Event, seeded_db: Path) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await _open_hub(pilot)
        await pilot.press("slash", *"Tiny-Llama-GGUF", "enter")
        await wait_for(pilot, lambda: app.screen.kind == "search" and _repos(app).row_count == 1)
        await pilot.press("d")  # the repo's default quant, straight from the results
        item = app.screen.downloads[REPO]
        await wait_for(pilot, lambda: item.progress is not None and item.progress.done_bytes > 0, timeout=20)
        assert item.state == "downloading" and item.progress.done_bytes <= MIB < item.progress.total_bytes
        assert "downloading" in screen_text(app)
        await pilot.press("c")
        assert item.state == "cancelling"
        gate.set()  # more bytes arrive: the worker sees the cancel at the next chunk
        await wait_for(pilot, lambda: item.state == "cancelled", timeout=20)
        assert "stopped at" in (item.note or "") and f"of {len(files[Q4])} bytes" in item.note
        partials = list(config.hf_hub_cache().rglob("*.incomplete"))
        assert len(partials) == 1 and 0 < partials[0].stat().st_size < len(files[Q4])
        assert not list(config.hf_hub_cache().rglob(Q4))  # no snapshot link: not a model yet
        app.rescan_library()
        await pilot.pause(0.5)
        await wait_for(pilot, lambda: app.library is not None)
        assert not any(REPO in e.model.name for e in app.library)
        assert "Downloads: 1 cancelled" in screen_text(app)

        # Queued again, it resumes from the partial and lands in the Library.
        await pilot.press("d")
        await wait_for(pilot, lambda: item.state == "done", timeout=30)
        assert "resumed after" in item.note
        await wait_for(pilot, lambda: any(e.model.name == f"{REPO}/{Q4}" for e in app.library or []))
    store = Store(seeded_db)
    try:
        assert [r["source_repo"] for r in store.models() if r.get("source_repo")] == [REPO]
    finally:
        store.close()


async def test_offline_says_so_in_one_sentence_and_keeps_the_suggested_list(make_app) -> None:
    # The test session runs with HF_HUB_OFFLINE=1 (tests/conftest.py).
    assert hub.is_offline()
    entries = catalog.load()
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await _open_hub(pilot)
        table = _repos(app)
        assert table.row_count == len(entries)
        assert [str(table.get_row_at(i)[1]) for i in range(len(entries))] == [e.repo for e in entries]
        offline = hub.OFFLINE_MESSAGE + "."
        assert app.screen.query_one("#hub-status").render().plain == offline
        await pilot.press("slash", *"qwen", "enter")
        await pilot.pause(0.3)
        assert app.screen.query_one("#hub-status").render().plain == offline
        assert app.screen.kind == "suggested" and _repos(app).row_count == len(entries)
        await pilot.press("tab", "enter")  # open the first suggested repo: no network either
        await wait_for(pilot, lambda: "cannot be reached" in str(app.screen.query_one("#hub-files-status").render()))
        assert _files(app).row_count == 0
        await pilot.press("d")  # a download fails with the same sentence, in the queue
        item = app.screen.downloads[entries[0].spec]
        await wait_for(pilot, lambda: item.state == "failed")
        assert item.note == offline
        # Everything else still works.
        await pilot.press("1")
        assert type(app.screen).__name__ == "LibraryScreen"
        assert app.screen.query_one("#models", DataTable).row_count == 6
