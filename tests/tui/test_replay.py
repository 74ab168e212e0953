"""The recorded run that the live dashboard's snapshots replay is still what the bench emits."""

from __future__ import annotations

from pathlib import Path

from replay import ASYNCHRONOUS, load_recording, record, shape, until


def test_the_recording_has_the_shape_of_a_fresh_run_of_the_same_bench(tmp_path: Path) -> None:
    header, recorded = load_recording()
    fresh_header, fresh = record(tmp_path)
    assert fresh_header["options"] == header["options"]
    want, got = shape(recorded), shape(fresh)
    # Timings, samples and ids differ from run to run; the events, their order and their keys
    # do not. On a difference: record again (see replay.py) and look at the snapshots.
    assert got["sequence"] == want["sequence"]
    assert got["asynchronous"] == want["asynchronous"] == sorted(ASYNCHRONOUS)
    assert got["keys"] == want["keys"]


def test_the_recording_is_one_whole_successful_run() -> None:
    header, events = load_recording()
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end" and events[-1]["status"] == "ok"
    assert len({e["run_id"] for e in events}) == 1
    results = [e["row"] for e in events if e["event"] == "result"]
    assert [r["test"] for r in results] == events[0]["tests"] == ["pp512", "tg128", "chat"]
    for row in results:  # every figure from its repetitions, as stored
        assert row["repetitions"] == len(row["samples_ns"]) == len(row["samples_ts"]) > 0
    assert results[0]["repetitions"] == header["options"]["repetitions"]
    # the replayed part ends on a repetition, so the dashboard paints everything it folded
    part = until(events, "tg128", rep=2)
    assert part[-1]["event"] == "rep" and part[-1]["rep"] == 2
