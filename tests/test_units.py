"""lab.units: the number writers both faces share."""

from __future__ import annotations

import math

from lab import units


def test_bytes_and_counts_are_written_like_llama_bench() -> None:
    assert units.human_bytes(0) == "0 B"
    assert units.human_bytes(1023) == "1023 B"
    assert units.human_bytes(1536) == "1.50 KiB"
    assert units.human_bytes(143_002_656) == "136.38 MiB"
    assert units.human_bytes(3 * 2**40) == "3.00 TiB"
    assert units.human_bytes(5 * 2**50) == "5120.00 TiB"
    assert units.human_count(999) == "999"
    assert units.human_count(134_515_008) == "134.52 M"
    assert units.human_count(7_241_732_096) == "7.24 B"


def test_a_missing_figure_is_na_never_a_number() -> None:
    for writer in (units.human_bytes, units.human_count):
        assert writer(None) == "n/a"
        assert writer(math.nan) == "n/a"  # a NaN from a failed reading, not "nan TiB"
    assert units.missing(None) and units.missing(math.nan)
    assert not units.missing(0) and not units.missing(0.0)


def test_both_faces_write_through_the_same_functions() -> None:
    from lab.cli import output
    from lab.tui import format as fmt

    assert output.human_bytes is fmt.human_bytes is units.human_bytes
    assert output.human_count is fmt.human_count is units.human_count
    assert output.NA == fmt.NA == units.NA == "n/a"
    assert output.Column("x", "x", units.human_bytes).render({"x": math.nan}) == "n/a"
