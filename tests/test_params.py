"""lab.params: one syntax for llama-bench's parameters, whichever face reads them."""

from __future__ import annotations

from typing import Any

import click
import pytest

from lab import params
from lab.cli.bench import bench
from lab.errors import LabError
from lab.tui import data


def cli_params(*args: str) -> dict[str, Any]:
    """What ``rightsizer bench demo ARGS`` parses to (click's real parser; nothing runs)."""
    with bench.make_context("bench", ["demo", *args]) as ctx:
        return ctx.params


def cli(flag: str, text: str, key: str) -> Any:
    try:
        return cli_params(flag, text)[key]
    except click.BadParameter:
        return "refused"


def app(field: str, text: str, key: str) -> Any:
    try:
        return getattr(data.build_options({"models": "demo", field: text}), key)
    except LabError:
        return "refused"


def test_lists_and_pairs_parse_to_values() -> None:
    assert params.parse_ints(" 128 , 512,", "-p") == [128, 512]
    assert params.parse_ints("", "-p") == []
    assert params.parse_words("F16, q8_0 ,") == ["f16", "q8_0"]
    assert params.parse_pairs("512,128") == [(512, 128)]
    assert params.parse_pairs(" 512, 128 ;1024,256; ") == [(512, 128), (1024, 256)]
    for bad in ("1 28", "12x", "1.5"):
        with pytest.raises(LabError, match=f"'{bad}' is not one"):
            params.parse_ints(bad, "-p")
    for bad in ("512", "512,128,64", "0,128", "512,", "a,b", "1 2,3"):
        with pytest.raises(LabError, match="-pg takes P,N pairs"):
            params.parse_pairs(bad)
    with pytest.raises(LabError, match="-mmp values must be at most 1"):
        params.parse_axis("mmap", "0,2", "-mmp")


PG_TEXTS = ["512,128", "512,128;1024,256", " 512 , 128 ; 64,16 ", "512", "512,128,64", "a,b", "0,128", "1 28,5"]


@pytest.mark.parametrize("text", PG_TEXTS)
def test_pg_takes_the_same_text_on_the_cli_and_in_the_app(text: str) -> None:
    assert cli("-pg", text, "pg") == app("pg", text, "pg")


def test_pg_is_repeatable_as_in_llama_bench_and_takes_lists() -> None:
    assert cli_params("-pg", "512,128", "-pg", "1024,256;64,16")["pg"] == [(512, 128), (1024, 256), (64, 16)]
    assert app("pg", "512,128;1024,256;64,16", "pg") == [(512, 128), (1024, 256), (64, 16)]
    assert cli("-pg", "0,128", "pg") == "refused"


AXES = [("-p", "n_prompt", "n_prompt", "n_prompt"), ("-n", "n_gen", "n_gen", "n_gen"),
        ("-d", "n_depth", "n_depth", "n_depth"), ("-t", "threads", "threads", "threads"),
        ("-ngl", "n_gpu_layers", "n_gpu_layers", "n_gpu_layers"), ("-b", "batch_size", "n_batch", "n_batch"),
        ("-ub", "ubatch_size", "n_ubatch", "n_ubatch")]


@pytest.mark.parametrize("flag,cli_key,field,key", AXES)
@pytest.mark.parametrize("text", ["128,512", " 1 , 2 ", "0", "-1", "-2", "x", "1 28"])
def test_every_axis_accepts_and_refuses_the_same_values_in_both_faces(
        flag: str, cli_key: str, field: str, key: str, text: str) -> None:
    assert cli(flag, text, cli_key) == app(field, text, key)


def test_the_limits_are_the_axes_of_a_sweep() -> None:
    from dataclasses import fields

    from lab.bench import BenchOptions

    names = {f.name for f in fields(BenchOptions)}
    assert set(params.AXIS_LIMITS) <= names
    assert cli("-t", "0", "threads") == "refused" and cli("-ngl", "-1", "n_gpu_layers") == [-1]
