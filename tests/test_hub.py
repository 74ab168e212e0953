"""Models from the Hugging Face Hub, against a fake Hub on 127.0.0.1 (tests/hub_server.py).

Nothing here reaches the network: every request goes to the server the test starts, and the
client is pointed at it with ``HF_ENDPOINT``; the HF cache and the lab home are temporary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hub_server import FakeHub, build_gguf, git_blob_sha1

from lab import config, hub, library
from lab.errors import Cancelled, HubError
from lab.gguf_info import estimate_memory, inspect, read_header_bytes, summarize
from lab.store import Store

REPO = "acme/Tiny-Llama-GGUF"
TOKEN = "hf_TestOnlyTokenAbcdef0123456789"  # also keeps a real login token out of the tests
Q4 = "Tiny-Llama-Q4_K_M.gguf"
Q5 = "Tiny-Llama-Q5_K_M.gguf"
Q8_PARTS = [f"Tiny-Llama-Q8_0-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """The repo's files: a ~4 MiB Q4_K_M, a Q5_K_M, a 3-part Q8_0 and a README."""
    big = build_gguf(name="tiny-llama", file_type=15, n_vocab=4096, n_embd=128)[0]
    q5 = build_gguf(name="tiny-llama-q5", file_type=17, n_vocab=1024, n_embd=64)[0]
    q8 = build_gguf(name="tiny-llama-q8", file_type=7, n_vocab=1024, n_embd=64, split_max_tensors=4)
    assert len(q8) == 3
    return {Q4: big, Q5: q5, **dict(zip(Q8_PARTS, q8)), "README.md": b"# Tiny llama\n"}


@pytest.fixture
def fake(files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch):
    with FakeHub() as server:
        server.add_repo(REPO, files, downloads=1500, likes=12, n_params=2_400_000,
                        last_modified="2025-03-01T12:00:00.000Z")
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


def _cache_files() -> list[Path]:
    root = config.hf_hub_cache()
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()) if root.exists() else []


# --- search -----------------------------------------------------------------------------------


def test_search_lists_gguf_repos_most_downloaded_first(fake: FakeHub, files: dict[str, bytes]) -> None:
    fake.add_repo("acme/Tiny-Llama-Instruct-GGUF", {Q4: files[Q4]}, downloads=90_000, likes=300,
                  n_params=2_400_000, last_modified="2025-05-02T08:30:00.000Z")
    fake.add_repo("acme/Tiny-Llama-safetensors", {"model.safetensors": b"x"}, downloads=10**6,
                  tags=["safetensors"])
    fake.add_repo("other/Unrelated-GGUF", {Q4: files[Q4]}, downloads=10**7)

    hits = hub.search("tiny-llama", limit=10)

    assert [h.repo_id for h in hits] == ["acme/Tiny-Llama-Instruct-GGUF", REPO]
    top = hits[0]
    assert (top.downloads, top.likes, top.n_params) == (90_000, 300, 2_400_000)
    assert top.last_modified == "2025-05-02T08:30:00.000Z"
    assert top.architecture == "llama"
    asked = [s for s in fake.log() if s.path == "/api/models"][0].query
    assert asked["filter"] == ["gguf"] and asked["sort"] == ["downloads"] and asked["limit"] == ["10"]
    assert {"downloads", "likes", "lastModified", "gguf"} <= set(asked["expand"])


def test_search_limit_and_missing_figures(fake: FakeHub, files: dict[str, bytes]) -> None:
    for i in range(5):
        fake.add_repo(f"bulk/Model{i}-GGUF", {Q4: files[Q5]}, downloads=i)
    hits = hub.search("bulk", limit=3)
    assert [h.repo_id for h in hits] == ["bulk/Model4-GGUF", "bulk/Model3-GGUF", "bulk/Model2-GGUF"]
    assert hits[0].n_params is None  # the Hub gave no gguf block: n/a, not 0


# --- listing --------------------------------------------------------------------------------


def test_files_group_splits_with_quant_size_and_sha(fake: FakeHub, files: dict[str, bytes]) -> None:
    fake.repos[REPO].files["Broken-Q2_K-00001-of-00002.gguf"] = files[Q5]  # part 2 missing
    fake.repos[REPO].files["mmproj-model-f16.gguf"] = files[Q5][:1000]
    fake.tree_page_size = 2  # the listing arrives in pages linked by a Link header

    listed = hub.list_files(REPO)

    by_path = {f.path: f for f in listed}
    assert set(by_path) == {Q4, Q5, Q8_PARTS[0], "mmproj-model-f16.gguf"}
    q8 = by_path[Q8_PARTS[0]]
    assert q8.quant == "Q8_0" and q8.n_parts == 3
    assert [p.path for p in q8.parts] == Q8_PARTS
    assert q8.size == sum(len(files[p]) for p in Q8_PARTS)
    assert [p.sha256 for p in q8.parts] == [hashlib.sha256(files[p]).hexdigest() for p in Q8_PARTS]
    assert by_path[Q4].quant == "Q4_K_M" and by_path[Q4].size == len(files[Q4])
    assert by_path[Q4].commit == fake.repos[REPO].commit
    assert by_path["mmproj-model-f16.gguf"].is_mmproj
    assert listed[-1].is_mmproj  # projectors sort last
    tree_pages = [s for s in fake.log() if "/tree/" in s.path]
    assert len(tree_pages) > 3


def test_pick_file_default_named_and_missing_quant(fake: FakeHub) -> None:
    listed = hub.list_files(REPO)
    assert hub.pick_file(listed, hub.parse_spec(REPO)).path == Q4
    assert hub.pick_file(listed, hub.parse_spec(f"{REPO}:q8_0")).parts[2].path == Q8_PARTS[2]
    assert hub.pick_file(listed, hub.parse_spec(f"hf.co/{REPO}/{Q5}")).path == Q5
    with pytest.raises(HubError, match=r"has no IQ2_XS file \(it has: Q4_K_M, Q5_K_M, Q8_0\)"):
        hub.pick_file(listed, hub.parse_spec(f"{REPO}:IQ2_XS"))
    without_q4 = [f for f in listed if f.quant != "Q4_K_M"]
    assert hub.pick_file(without_q4, hub.parse_spec(REPO)).quant == "Q5_K_M"  # next preference


# --- header-only estimate --------------------------------------------------------------------


def test_probe_reads_the_header_from_a_few_hundred_kib(fake: FakeHub, files: dict[str, bytes]) -> None:
    size = len(files[Q4])
    assert size > 4 * MIB

    probe = hub.probe_header(REPO, Q4)

    assert probe.requests == 1
    assert probe.bytes_fetched <= hub.PROBE_FIRST_BYTES
    assert fake.bytes_served(Q4) == probe.bytes_fetched  # the server agrees
    assert fake.bytes_served(Q4) < size / 16
    assert [s.range for s in fake.requests_for(Q4) if s.status == 206] == [f"bytes=0-{hub.PROBE_FIRST_BYTES - 1}"]
    local = read_header_bytes(files[Q4])
    assert probe.summary.file_type == "Q4_K_M"
    assert (probe.summary.n_layer, probe.summary.n_embd, probe.summary.model_size) == (
        2, 128, summarize(local, file_size=size).model_size)


def test_probe_grows_the_range_for_a_long_header(fake: FakeHub) -> None:
    data = build_gguf(name="long-vocab", n_vocab=4096, n_embd=128, n_tokens=40_000)[0]
    header = read_header_bytes(data)
    assert header.header_size > hub.PROBE_FIRST_BYTES  # one range is not enough
    fake.add_repo("acme/Long-GGUF", {"Long-Q4_K_M.gguf": data})

    probe = hub.probe_header("acme/Long-GGUF", "Long-Q4_K_M.gguf")

    ranges = [s.range for s in fake.requests_for("Long-Q4_K_M.gguf") if s.status == 206]
    assert probe.requests == len(ranges) >= 2
    starts = [int(r.split("=")[1].split("-")[0]) for r in ranges]
    assert starts[0] == 0 and starts[1] == hub.PROBE_FIRST_BYTES  # only the missing bytes
    assert probe.bytes_fetched == fake.bytes_served("Long-Q4_K_M.gguf") < len(data) / 4
    assert probe.header.tensors == header.tensors
    assert probe.header.metadata["tokenizer.ggml.tokens"] == {"array_len": 40_000}


def test_fit_check_matches_the_local_estimate_and_flags_fit(fake: FakeHub, files: dict[str, bytes],
                                                            tmp_path: Path) -> None:
    local = tmp_path / Q4
    local.write_bytes(files[Q4])
    expected = estimate_memory(inspect(local), 1024).total_bytes

    roomy = hub.fit_check(REPO, n_ctx=1024, budget=hub.MemoryBudget(expected + 1))
    by_path = {c.file.path: c for c in roomy}
    q4 = by_path[Q4]
    assert q4.basis == "header" and q4.header_quant == "Q4_K_M" and q4.quant_confirmed is True
    assert q4.estimate_bytes == expected
    assert q4.fits is True
    # One header serves the repo: other quants reuse its architecture, weights from their size.
    assert by_path[Q5].basis == "sibling header" and by_path[Q5].header_quant is None
    assert by_path[Q5].estimate.kv_bytes == q4.estimate.kv_bytes
    assert by_path[Q5].estimate.weights_bytes == pytest.approx(len(files[Q5]) - (len(files[Q4]) - q4.estimate.weights_bytes))
    assert fake.bytes_served() < len(files[Q4]) / 16

    tight = hub.fit_check(REPO, n_ctx=1024, budget=hub.MemoryBudget(expected - 1))
    assert {c.file.path: c.fits for c in tight}[Q4] is False


def test_fit_check_all_headers_merges_split_parts(fake: FakeHub, files: dict[str, bytes]) -> None:
    checks = {c.file.path: c for c in hub.fit_check(REPO, n_ctx=512, probe_all=True,
                                                     budget=hub.MemoryBudget(10**12))}
    q8 = checks[Q8_PARTS[0]]
    assert q8.basis == "header" and q8.header_quant == "Q8_0"
    headers = [read_header_bytes(files[p]) for p in Q8_PARTS]
    assert q8.estimate.weights_bytes == sum(t.n_bytes for h in headers for t in h.tensors)
    assert checks[Q5].header_quant == "Q5_K_M"
    assert all(len(fake.requests_for(p)) >= 1 for p in Q8_PARTS)


def test_fit_check_falls_back_to_file_size_and_says_so(fake: FakeHub) -> None:
    fake.add_repo("acme/Odd-GGUF", {"Odd-Q4_K_M.gguf": b"NOTGGUF" + bytes(300_000)})

    [check] = hub.fit_check("acme/Odd-GGUF", n_ctx=2048, budget=hub.MemoryBudget(10**12))

    assert check.basis == "file size"
    assert check.estimate.weights_bytes == 300_007 and check.estimate.kv_bytes == 0
    assert "file size only" in check.note and "not a GGUF file" in check.note
    assert check.fits is True


# --- pull -----------------------------------------------------------------------------------


def test_pull_downloads_verifies_links_and_registers(fake: FakeHub, files: dict[str, bytes], tmp_path: Path) -> None:
    events: list[hub.DownloadProgress] = []
    pulled = hub.pull(REPO, progress=events.append, cancel=threading.Event())

    repo = fake.repos[REPO]
    sha = hashlib.sha256(files[Q4]).hexdigest()
    storage = config.hf_hub_cache() / "models--acme--Tiny-Llama-GGUF"
    assert pulled.quant == "Q4_K_M" and pulled.commit == repo.commit and not pulled.already_cached
    assert pulled.path == storage / "snapshots" / repo.commit / Q4
    assert pulled.path.is_symlink() and pulled.path.resolve() == storage / "blobs" / sha
    assert pulled.path.read_bytes() == files[Q4]
    assert (storage / "refs" / "main").read_text() == repo.commit
    assert pulled.downloaded_bytes == len(files[Q4]) and pulled.sha256 == sha
    assert events[-1].phase == "done" and events[-1].done_bytes == events[-1].total_bytes == len(files[Q4])
    assert [e.done_bytes for e in events] == sorted(e.done_bytes for e in events)
    assert not list((storage / "blobs").glob("*.incomplete"))

    # The standard cache: huggingface_hub itself finds the file without the network.
    from huggingface_hub import try_to_load_from_cache

    assert try_to_load_from_cache(REPO, Q4, cache_dir=config.hf_hub_cache()) == str(pulled.path)
    found = [m for m in library.scan() if m.repo == REPO]
    assert [(m.name, m.revision) for m in found] == [(f"{REPO}/{Q4}", repo.commit)]

    store = Store(tmp_path / "lab.db")
    row = hub.register_pulled(store, pulled)
    assert row["id"] == sha
    assert (row["source"], row["source_repo"], row["source_revision"]) == ("hf", REPO, repo.commit)
    assert row["file_type"] == "Q4_K_M" and row["n_layer"] == 2
    store.close()

    fake.clear_log()
    again = hub.pull(f"{REPO}:Q4_K_M")
    assert again.already_cached and again.downloaded_bytes == 0 and again.path == pulled.path
    assert fake.bytes_served(Q4) == 0


def test_pull_split_model_downloads_every_part_then_links(fake: FakeHub, files: dict[str, bytes]) -> None:
    pulled = hub.pull(f"{REPO}:Q8_0")

    assert pulled.n_parts == 3 and [p.name for p in pulled.paths] == Q8_PARTS
    assert [p.read_bytes() for p in pulled.paths] == [files[p] for p in Q8_PARTS]
    [model] = [m for m in library.scan() if m.repo == REPO]
    assert model.n_parts == 3 and model.size == sum(len(files[p]) for p in Q8_PARTS)
    assert model.path == pulled.paths[0]


def test_pull_resumes_in_process_after_a_dropped_connection(fake: FakeHub, files: dict[str, bytes]) -> None:
    fake.drop_once(Q4, after_bytes=1 * MIB + 123)

    pulled = hub.pull(REPO, retry_wait_s=0)

    gets = [s for s in fake.requests_for(Q4) if s.status in (200, 206)]
    assert [s.range for s in gets] == [None, f"bytes={MIB + 123}-"]
    assert fake.bytes_served(Q4) == len(files[Q4])  # nothing fetched twice
    assert pulled.path.read_bytes() == files[Q4]


def test_pull_resumes_on_the_next_run_and_partials_stay_hidden(fake: FakeHub, files: dict[str, bytes]) -> None:
    cut = 3 * MIB + 5
    fake.drop_once(Q4, after_bytes=cut)
    with pytest.raises(HubError, match=rf"interrupted at {cut} of {len(files[Q4])} bytes; run the same pull again"):
        hub.pull(REPO, max_retries=0)
    partial = config.hf_hub_cache() / "models--acme--Tiny-Llama-GGUF" / "blobs" / (
        hashlib.sha256(files[Q4]).hexdigest() + ".incomplete")
    assert partial.stat().st_size == cut
    assert not [m for m in library.scan() if m.repo == REPO]  # a partial file is never a model
    assert not (config.hf_hub_cache() / "models--acme--Tiny-Llama-GGUF" / "snapshots").exists()

    fake.clear_log()
    pulled = hub.pull(REPO)

    assert [s.range for s in fake.requests_for(Q4) if s.status == 206] == [f"bytes={cut}-"]
    assert fake.bytes_served(Q4) == len(files[Q4]) - cut
    assert (pulled.resumed_bytes, pulled.downloaded_bytes) == (cut, len(files[Q4]) - cut)
    assert pulled.path.read_bytes() == files[Q4] and not partial.exists()


def test_cancel_keeps_the_partial_for_a_later_resume(fake: FakeHub, files: dict[str, bytes]) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def progress(p: hub.DownloadProgress) -> None:
        seen.append(p.done_bytes)
        cancel.set()  # the user pressed cancel after the first report

    with pytest.raises(Cancelled, match="pull it again to resume"):
        hub.pull(REPO, progress=progress, cancel=cancel)
    partial = next((config.hf_hub_cache() / "models--acme--Tiny-Llama-GGUF" / "blobs").glob("*.incomplete"))
    kept = partial.stat().st_size
    assert 0 < kept < len(files[Q4])

    fake.clear_log()
    pulled = hub.pull(REPO)
    assert pulled.resumed_bytes == kept and pulled.path.read_bytes() == files[Q4]
    assert [s.range for s in fake.requests_for(Q4) if s.status == 206] == [f"bytes={kept}-"]


def test_concurrent_pulls_of_one_file_download_it_once(fake: FakeHub, files: dict[str, bytes]) -> None:
    results: list[hub.PulledModel] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(hub.pull(REPO))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(results) == 3
    assert len({r.path for r in results}) == 1 and results[0].path.read_bytes() == files[Q4]
    assert fake.bytes_served(Q4) == len(files[Q4])  # the lock let one thread download it
    assert sum(r.downloaded_bytes for r in results) == len(files[Q4])


def test_checksum_mismatch_deletes_and_registers_nothing(fake: FakeHub, tmp_path: Path) -> None:
    fake.corrupt(Q4)
    db = tmp_path / "lab.db"

    out = _cli("models", "pull", REPO, "--db", str(db), fake=fake)

    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert "failed verification" in lines[0] and "deleted and not registered" in lines[0]
    assert _cache_files() == [] or all(".lock" in p.name for p in _cache_files())
    assert not [m for m in library.scan() if m.repo == REPO]
    store = Store(db)
    assert store.models() == []
    store.close()


def test_cli_pull_registers_with_source_repo_and_commit(fake: FakeHub, files: dict[str, bytes], tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    out = _cli("models", "pull", f"{REPO}:Q5_K_M", "--db", str(db), fake=fake)
    assert out.returncode == 0, out.stderr
    assert "Pulled acme/Tiny-Llama-GGUF:Q5_K_M" in out.stdout and "sha256 verified" in out.stdout
    assert out.stderr == ""  # no progress bar when stderr is not a terminal
    store = Store(db)
    [row] = store.models()
    store.close()
    assert row["id"] == hashlib.sha256(files[Q5]).hexdigest()
    assert (row["source"], row["source_repo"], row["source_revision"]) == ("hf", REPO, fake.repos[REPO].commit)


def test_cli_search_and_files_json(fake: FakeHub, files: dict[str, bytes]) -> None:
    out = _cli("models", "search", "tiny", "-o", "json", fake=fake)
    assert out.returncode == 0, out.stderr
    assert [(h["repo_id"], h["downloads"]) for h in json.loads(out.stdout)] == [(REPO, 1500)]

    out = _cli("models", "files", REPO, "-c", "512", "-o", "json", fake=fake)
    assert out.returncode == 0, out.stderr
    rows = {r["path"]: r for r in json.loads(out.stdout)}
    assert set(rows) == {Q4, Q5, Q8_PARTS[0]}
    assert rows[Q8_PARTS[0]]["n_parts"] == 3 and rows[Q4]["basis"] == "header"
    assert rows[Q4]["n_ctx"] == 512 and rows[Q4]["fits"] in (True, False)
    assert rows[Q4]["estimate_bytes"] == rows[Q4]["estimate"]["total_bytes"] > len(files[Q4])

    table = _cli("models", "files", REPO, fake=fake)
    assert table.returncode == 0
    assert "Q8_0" in table.stdout and "estimate from" in table.stdout
    assert "fetched instead of" in table.stderr


# --- offline --------------------------------------------------------------------------------


def test_offline_mode_answers_in_one_sentence_without_a_request(fake: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    pulled = hub.pull(REPO)  # online first
    fake.clear_log()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    for call in (lambda: hub.search("tiny"), lambda: hub.list_files(REPO), lambda: hub.pull(REPO),
                 lambda: hub.probe_header(REPO, Q4)):
        with pytest.raises(hub.HubUnreachable) as err:
            call()
        assert str(err.value) == hub.OFFLINE_MESSAGE
    assert fake.log() == []
    # Everything local keeps working.
    assert [m.path for m in library.scan() if m.repo == REPO] == [pulled.path]
    assert library.resolve(f"{REPO}:Q4_K_M").path == pulled.path

    out = _cli("models", "search", "tiny", fake=fake, env={"HF_HUB_OFFLINE": "1"})
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: {hub.OFFLINE_MESSAGE}."


def test_no_network_reads_as_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    t0 = time.monotonic()
    with pytest.raises(hub.HubUnreachable, match="cannot be reached"):
        hub.search("anything")
    with pytest.raises(hub.HubUnreachable):
        hub.pull(REPO)
    assert time.monotonic() - t0 < 5  # no retry loop with back-off


# --- safety ---------------------------------------------------------------------------------


HOSTILE = ["../../escape-Q4_K_M.gguf", "/etc/abs-Q4_K_M.gguf", "sub/../../up-Q4_K_M.gguf",
           ".hidden-Q4_K_M.gguf", "odd\x1bname-Q4_K_M.gguf", "win\\dows-Q4_K_M.gguf"]


def test_hostile_file_names_never_escape_the_cache(fake: FakeHub, files: dict[str, bytes], tmp_path: Path) -> None:
    payload = files[Q5]
    raw = [{"type": "file", "path": p, "size": len(payload), "oid": git_blob_sha1(payload),
            "lfs": {"oid": hashlib.sha256(payload).hexdigest(), "size": len(payload)}} for p in HOSTILE]
    fake.add_repo("evil/Trap-GGUF", {"Fine-Q8_0.gguf": payload}, raw_tree=raw)
    for p in HOSTILE:
        fake.repos["evil/Trap-GGUF"].files[p] = payload
    before = {p for p in tmp_path.parent.rglob("*")}

    assert [f.path for f in hub.list_files("evil/Trap-GGUF")] == ["Fine-Q8_0.gguf"]
    with pytest.raises(HubError, match="has no Q4_K_M file"):
        hub.pull("evil/Trap-GGUF:Q4_K_M")
    for name in ("../../escape-Q4_K_M.gguf", "sub/../../up-Q4_K_M.gguf", ".hidden-Q4_K_M.gguf"):
        with pytest.raises(HubError, match="unsafe"):
            hub.pull(f"evil/Trap-GGUF/{name}")
    for name in HOSTILE:
        with pytest.raises(HubError, match="unsafe"):
            hub.safe_repo_path(name)
    with pytest.raises(HubError, match="not a Hugging Face repo id"):
        hub.pull("../evil:Q4_K_M")

    assert not any(s.file in HOSTILE for s in fake.log())  # never even requested
    assert {p for p in tmp_path.parent.rglob("*")} == before
    assert all(p.resolve().is_relative_to(config.hf_hub_cache().resolve()) for p in _cache_files())
    assert not list(config.hf_hub_cache().rglob("*escape*"))


def test_hostile_commit_and_sha_from_the_server_are_refused(fake: FakeHub, files: dict[str, bytes]) -> None:
    raw = [{"type": "file", "path": "Bad-Q4_K_M.gguf", "size": 10, "oid": "0" * 40,
            "lfs": {"oid": "../../../../tmp/pwned", "size": 10}}]
    fake.add_repo("evil/Sha-GGUF", {}, raw_tree=raw)
    with pytest.raises(HubError, match="malformed sha256"):
        hub.list_files("evil/Sha-GGUF")


def test_gated_repo_uses_the_token_and_never_leaks_it(fake: FakeHub, files: dict[str, bytes], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.add_repo("meta/Gated-GGUF", {Q4: files[Q5]}, gated=True, token=TOKEN)

    pulled = hub.pull("meta/Gated-GGUF")
    assert {s.authorization for s in fake.log() if s.path.startswith("/api/models/meta")} == {f"Bearer {TOKEN}"}
    db = tmp_path / "lab.db"
    store = Store(db)
    hub.register_pulled(store, pulled)
    store.close()

    wrong = "hf_WrongTokenZyxw9876543210"
    monkeypatch.setenv("HF_TOKEN", wrong)
    with pytest.raises(HubError) as err:
        hub.list_files("meta/Gated-GGUF")
    assert "gated" in str(err.value) and wrong not in str(err.value)
    out = _cli("models", "pull", "meta/Gated-GGUF:Q4_K_M", "--db", str(db), fake=fake, env={"HF_TOKEN": wrong})
    assert out.returncode == 1 and "gated" in out.stderr
    for secret in (TOKEN, wrong):
        assert secret not in out.stdout + out.stderr
        assert secret.encode() not in db.read_bytes()
        assert secret not in caplog.text
    assert "TestOnlyToken" not in hub.scrub(f"request failed with {TOKEN}", TOKEN)


def test_private_repo_without_token_is_not_found(fake: FakeHub, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    fake.add_repo("me/Private-GGUF", {Q4: files[Q5]}, private=True, token="hf_OtherOwnerToken123456")
    with pytest.raises(HubError, match=r"Repository me/Private-GGUF was not found on the Hub \(the token given has no access"):
        hub.list_files("me/Private-GGUF")


# --- catalog, import hygiene -----------------------------------------------------------------


def test_catalog_lists_real_looking_repos_with_a_line_each() -> None:
    from lab import catalog

    entries = catalog.load()
    repos = [e.repo for e in entries]
    assert len(entries) >= 10 and len(set(repos)) == len(repos)
    for family in ("SmolLM2", "Qwen2.5", "Llama 3.2", "Gemma 3", "Phi"):
        assert any(e.family == family for e in entries), family
    assert "unsloth/SmolLM2-135M-Instruct-GGUF" in repos and "Qwen/Qwen2.5-0.5B-Instruct-GGUF" in repos
    for e in entries:
        assert hub.validate_repo_id(e.repo) == e.repo and e.repo.lower().endswith("gguf")
        assert e.note.endswith(".") and e.license and e.params
        assert e.spec == f"{e.repo}:{e.quant}"
    with pytest.raises(catalog.CatalogError, match="lacks note"):
        catalog.load('[[model]]\nname = "x"\nrepo = "a/b"\nparams = "1B"\nlicense = "mit"\n')


def test_cli_catalog_json() -> None:
    out = _cli("models", "catalog", "-o", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows[0]["repo"] == "unsloth/SmolLM2-135M-Instruct-GGUF" and rows[0]["spec"].endswith(":Q4_K_M")


def test_cli_module_does_not_import_the_hub_client() -> None:
    code = ("import sys, lab.cli, lab.cli.hub; "
            "print(sorted(m for m in ('huggingface_hub', 'httpx2', 'lab.hub', 'textual') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_domain_does_not_import_textual() -> None:
    code = "import sys, lab.hub, lab.catalog; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def _cli(*args: str, fake: FakeHub | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {})}
    if fake is not None:
        full["HF_ENDPOINT"] = fake.url
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=full)
