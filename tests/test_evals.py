"""Task evals: scorers, the schema validator, the Wilson interval, suite checking (errors name
the line), grammar / JSON-schema constraints enforced by llama.cpp on a tiny random model, the
per-item timeout, the store rows and the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.errors import LabError
from lab.evals import constraints
from lab.evals import schema as js
from lab.evals.scorers import (normalizer, parse_json_output, pick_choice, score_choice, score_contains,
                               score_exact, score_item, score_json_schema, score_regex)
from lab.evals.stats import summarize, wilson_interval
from lab.evals.suite import SuiteError, bundled_suites, load_suite

NORM = normalizer(True)
RAW = normalizer(False)

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer"},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "ok"],
    "additionalProperties": False,
}


def write_suite(path: Path, items: list[dict] | list[str]) -> Path:
    lines = [i if isinstance(i, str) else json.dumps(i) for i in items]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- scorers --------------------------------------------------------------------------------


def test_exact_with_and_without_normalisation() -> None:
    assert score_exact("Paris", "Paris", RAW).correct
    assert not score_exact(" paris\n", "Paris", RAW).correct
    s = score_exact("  PARIS \n", "paris", NORM)
    assert s.correct and s.score == 1.0 and s.format_valid is None
    assert score_exact("New   York", ["Boston", "new york"], NORM).correct
    assert not score_exact("New York City", "new york", NORM).correct
    # only whitespace, not case
    ws = normalizer(["whitespace"])
    assert score_exact("a  b", "a b", ws).correct and not score_exact("A b", "a b", ws).correct


def test_contains() -> None:
    assert score_contains("The answer is 42.", "42", RAW).correct
    assert not score_contains("The answer is 42.", "THE ANSWER", RAW).correct
    assert score_contains("The  answer is 42.", "the answer", NORM).correct
    assert score_contains("blue", ["red", "blue"], RAW).correct
    s = score_contains("nothing", "42", RAW)
    assert (s.score, s.correct, s.detail) == (0.0, False, "expected text not found")


def test_regex_case_flag_follows_normalize() -> None:
    assert score_regex("Order ID-123 ok", r"ID-\d{3}", False).correct
    assert not score_regex("order id-123", r"ID-\d{3}", False).correct
    assert score_regex("order id-123", r"ID-\d{3}", True).correct
    assert score_regex("a \n b", r"^a b$", ["whitespace"]).correct
    assert not score_regex("a \n b", r"^a b$", False).correct


def test_choice_picks_and_format() -> None:
    choices = ["positive", "negative", "neutral"]
    assert pick_choice("Negative.", choices, NORM) == ("negative", True)
    assert pick_choice("I think it is negative overall", choices, NORM) == ("negative", False)
    assert pick_choice("positive or negative", choices, NORM) == (None, False)
    assert pick_choice("nonnegative", choices, NORM) == (None, False)  # whole words only
    s = score_choice("Negative", "negative", choices, NORM)
    assert s.correct and s.format_valid is True
    s = score_choice("It is negative", "negative", choices, NORM)
    assert s.correct and s.format_valid is False
    s = score_choice("positive", "negative", choices, NORM)
    assert not s.correct and s.format_valid is True and s.detail == "picked 'positive'"


def test_parse_json_output_strict_and_lenient() -> None:
    assert parse_json_output(' {"a": 1}\n') == ({"a": 1}, True)
    assert parse_json_output('```json\n{"a": 1}\n```') == ({"a": 1}, False)
    assert parse_json_output('Sure! Here it is: {"a": [1, 2]} Hope it helps.') == ({"a": [1, 2]}, False)
    value, strict = parse_json_output("no json here")
    assert repr(value) == "<no JSON>" and strict is False


def test_json_schema_scorer() -> None:
    exp = {"name": "Ann", "age": 31, "ok": True}
    s = score_json_schema('{"name": "ann", "age": 31.0, "ok": true}', exp, PERSON, NORM)
    assert (s.score, s.correct, s.format_valid) == (1.0, True, True)
    # right content in a code fence: correct content, wrong format
    s = score_json_schema('```json\n{"name": "Ann", "age": 31, "ok": true}\n```', exp, PERSON, NORM)
    assert s.correct and s.format_valid is False
    # partial credit: 2 of 3 fields
    s = score_json_schema('{"name": "Bob", "age": 31, "ok": true}', exp, PERSON, NORM)
    assert s.score == pytest.approx(2 / 3) and not s.correct and s.detail == "wrong: name" and s.format_valid
    # a boolean is not the number 1, and "31" is not 31
    s = score_json_schema('{"name": "Ann", "age": "31", "ok": 1}', exp, PERSON, NORM)
    assert s.score == pytest.approx(1 / 3) and s.format_valid is False
    # an extra key: not correct, and invalid for additionalProperties false
    s = score_json_schema('{"name": "Ann", "age": 31, "ok": true, "x": 0}', exp, PERSON, NORM)
    assert not s.correct and s.format_valid is False and s.score == pytest.approx(0.75)
    # no JSON at all
    s = score_json_schema("Ann is 31", exp, PERSON, NORM)
    assert (s.score, s.correct, s.format_valid) == (0.0, False, False)
    # without an expected answer, conforming is correct
    s = score_json_schema('{"name": "x", "age": 1, "ok": false}', None, PERSON, NORM, has_expected=False)
    assert s.correct and s.format_valid
    # a missing key matches an expected null
    s = score_json_schema('{"a": 1}', {"a": 1, "b": None}, {"type": "object"}, RAW)
    assert s.correct


def test_schema_validator() -> None:
    assert js.errors({"name": "Ann", "age": 3, "ok": False}, PERSON) == []
    assert js.errors({"name": "Ann", "age": 3.0, "ok": False}, PERSON) == []  # 3.0 is an integer
    assert js.errors({"name": "Ann", "age": 3.5, "ok": False}, PERSON) == ["$.age: expected integer, got number"]
    assert js.errors({"name": "Ann", "age": True, "ok": False}, PERSON) == ["$.age: expected integer, got boolean"]
    assert js.errors({"name": "Annabella", "age": 3, "ok": False}, PERSON) == ["$.name: longer than 8 characters"]
    assert js.errors({"age": 3, "ok": False}, PERSON) == ["$: missing required property 'name'"]
    assert js.errors({"name": "A", "age": 3, "ok": False, "z": 1}, PERSON) == ["$: unexpected property 'z'"]
    assert js.errors([1, 2, 3], {"type": "array", "items": {"type": "integer"}, "maxItems": 2}) == ["$: more than 2 items"]
    assert js.errors("b", {"enum": ["a", "c"]}) == ["$: 'b' is not one of ['a', 'c']"]
    assert js.errors("2024-01-02", {"type": "string", "pattern": r"^\d{4}-\d\d-\d\d$"}) == []
    assert js.is_valid(None, {"type": ["string", "null"]})
    assert js.is_valid(5, {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 1}]})
    assert not js.is_valid(5, {"oneOf": [{"type": "integer"}, {"type": "number"}]})  # matches both
    ref = {"$defs": {"id": {"type": "integer", "minimum": 1}}, "type": "array", "items": {"$ref": "#/$defs/id"}}
    assert js.is_valid([1, 2], ref) and js.errors([0], ref) == ["$[0]: less than 1"]


@pytest.mark.parametrize("schema, message", [
    ({"type": "strng"}, "unknown type 'strng'"),
    ({"type": "object", "properties": [1]}, "'properties' must be an object"),
    ({"type": "object", "required": "name"}, "'required' must be a list"),
    ({"type": "string", "pattern": "(ab"}, "not a valid regular expression"),
    ({"$ref": "#/$defs/missing"}, "points nowhere"),
    ({"type": "string", "maxLenght": 3}, "unsupported keyword(s): maxLenght"),
    ("not a schema", "must be an object"),
])
def test_invalid_schemas_are_named(schema: object, message: str) -> None:
    with pytest.raises(js.SchemaError, match=re.escape(message)):
        js.check_schema(schema)


# --- statistics -----------------------------------------------------------------------------


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775
    lo, hi = wilson_interval(10, 10)
    assert round(lo, 4) == 0.7225 and hi == 1.0
    lo, hi = wilson_interval(30, 30)
    assert round(lo, 3) == 0.886
    lo, hi = wilson_interval(81, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.7222, 0.8749)
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_summarize_counts_every_item() -> None:
    rows = [
        {"correct": 1, "format_valid": 1, "status": "ok", "output": '{"a":1}', "latency_ms": 100.0},
        {"correct": 0, "format_valid": 0, "status": "ok", "output": "  ", "latency_ms": 200.0},
        {"correct": 0, "format_valid": 0, "status": "timeout", "output": "xx", "latency_ms": 900.0},
        {"correct": 0, "format_valid": None, "status": "error", "output": "", "latency_ms": None},
    ]
    s = summarize(rows)
    assert s["n_items"] == 4 and s["n_correct"] == 1 and s["accuracy"] == 0.25
    assert (s["accuracy_ci_low"], s["accuracy_ci_high"]) == wilson_interval(1, 4)
    assert s["format_valid_rate"] == pytest.approx(1 / 3) and s["n_format_checked"] == 3
    assert (s["n_empty"], s["n_timeout"], s["n_error"]) == (1, 1, 1)
    assert s["latency_p50_ms"] == 200.0 and s["latency_p95_ms"] == pytest.approx(830.0)
    empty = summarize([])
    assert empty["accuracy"] is None and empty["format_valid_rate"] is None and empty["latency_p50_ms"] is None


# --- suites ---------------------------------------------------------------------------------


GOOD = {"id": "a", "prompt": "Say hi", "scorer": "contains", "expected": "hi"}


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "x", "scorer": "exact", "expected": "y"', ], r"s\.jsonl line 1: not valid JSON"),
    ([GOOD, "{oops}"], r"s\.jsonl line 2: not valid JSON"),
    ([GOOD, "", "// a comment", dict(GOOD, id="b", scorer="fuzzy")], r"line 4: unknown scorer 'fuzzy'"),
    ([dict(GOOD, scorer=None)], r"line 1: no 'scorer'"),
    ([{"id": "s", "prompt": "x", "scorer": "json_schema", "schema": {"type": "strng"}}],
     r"line 1: invalid schema: schema at # has an unknown type 'strng'"),
    ([{"prompt": "x", "scorer": "json_schema", "schema": {"type": "object", "properties": {"a": {"type": "number", "minimum": "0"}}}}],
     r"line 1: invalid schema: schema at #/properties/a: 'minimum' must be a number"),
    ([{"prompt": "x", "scorer": "json_schema"}], r"line 1: the json_schema scorer needs a 'schema'"),
    ([{"prompt": "x", "scorer": "exact"}], r"line 1: the exact scorer needs an 'expected' answer"),
    ([{"prompt": "x", "scorer": "regex", "expected": "(a"}], r"line 1: 'expected' is not a valid regular expression"),
    ([{"prompt": "x", "scorer": "choice", "expected": "c", "choices": ["a", "b"]}], r"line 1: 'expected' must be one of the 'choices'"),
    ([{"scorer": "exact", "expected": "y"}], r"line 1: give either 'prompt'"),
    ([{"prompt": "x", "messages": [], "scorer": "exact", "expected": "y"}], r"line 1: give either 'prompt'"),
    ([{"messages": [{"role": "user"}], "scorer": "exact", "expected": "y"}], r"line 1: 'messages' must be"),
    ([dict(GOOD, colour="red")], r"line 1: unknown key\(s\) 'colour'"),
    ([GOOD, GOOD], r"line 2: id 'a' is already used on line 1"),
    ([dict(GOOD, constraint={"gbnf": "root ::= (\"a\""})], r"line 1: invalid constraint: the grammar has an unclosed"),
    ([dict(GOOD, constraint={"gbnf": "start ::= \"a\""})], r"line 1: invalid constraint: the grammar has no 'root"),
    ([dict(GOOD, constraint="schema")], r"line 1: constraint 'schema' needs the item's 'schema'"),
    ([dict(GOOD, constraint={"json_schema": {"type": 3}})], r"line 1: invalid schema in 'constraint'"),
    ([dict(GOOD, constraint="xml")], r"line 1: 'constraint' must be"),
    ([dict(GOOD, max_tokens=0)], r"line 1: 'max_tokens' must be a positive integer"),
    ([dict(GOOD, normalize="yes")], r"line 1: 'normalize' must be"),
    (["[1, 2]"], r"line 1: an item must be a JSON object, not list"),
    (["", "   "], r"s\.jsonl holds no items"),
])
def test_suite_errors_name_the_line(tmp_path: Path, lines: list, message: str) -> None:
    path = write_suite(tmp_path / "s.jsonl", lines)
    with pytest.raises(SuiteError, match=message):
        load_suite(path)


def test_suite_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="No such suite file"):
        load_suite(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(SuiteError, match="empty.jsonl holds no items"):
        load_suite(tmp_path / "empty.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe\n")
    with pytest.raises(SuiteError, match="bin.jsonl line 2: not UTF-8"):
        load_suite(tmp_path / "bin.jsonl")


def test_suite_loads_items_and_constraints(tmp_path: Path) -> None:
    path = write_suite(tmp_path / "ok.jsonl", [
        GOOD,
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], "scorer": "choice",
         "choices": ["yes", "no"], "expected": "no", "constraint": "choices"},
        {"prompt": "p", "raw": True, "scorer": "json_schema", "schema": PERSON, "constraint": "schema"},
        {"prompt": "p", "scorer": "regex", "expected": "^ID-", "constraint": {"gbnf": 'root ::= "ID-" [0-9]'}},
    ])
    suite = load_suite(path)
    a, b, c, d = suite.items
    assert (a.id, a.messages, a.grammar, a.line) == ("a", [{"role": "user", "content": "Say hi"}], None, 1)
    assert b.id == "line 2" and b.grammar == 'root ::= "yes" | "no"\n'
    assert c.messages is None and c.prompt == "p" and c.raw and "root ::=" in c.grammar and c.has_expected is False
    assert d.grammar == 'root ::= "ID-" [0-9]'
    assert suite.n_constrained == 3 and len(suite.sha256) == 64


def test_demo_suite_is_a_narrow_realistic_task() -> None:
    suite = load_suite("demo")
    assert suite.path == next(iter(bundled_suites().values()))
    assert len(suite.items) >= 30
    assert {i.scorer for i in suite.items} == {"json_schema"}
    assert all(i.grammar and i.expected and i.messages for i in suite.items)
    with_example = sum(1 for i in suite.items if any(m["role"] == "assistant" for m in i.messages))
    assert 0 < with_example < len(suite.items)  # both prompt styles


def test_constraint_helpers() -> None:
    g = constraints.schema_to_gbnf(PERSON)
    assert g.count("root ::=") == 1 and '"\\"name\\""' in g
    with pytest.raises(constraints.ConstraintError, match="rejects the schema"):
        constraints.schema_to_gbnf({"type": "object", "properties": {"a": {"type": "strng"}}})
    assert constraints.choices_gbnf(['say "hi"', "bye"]) == 'root ::= "say \\"hi\\"" | "bye"\n'
    constraints.check_gbnf_syntax('root ::= "a" | [()] # (unbalanced in a comment\n')
    # the parent never loads the native library to convert schemas
    code = "import sys, lab.evals.suite as s; s.load_suite('demo'); print('llama_cpp.llama_cpp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- running on a tiny random model ---------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path):
    from lab.store import Store

    s = Store(tmp_path / "lab.db")
    yield s
    s.close()


def _person_items(n: int) -> list[dict]:
    return [{"id": f"p{i}", "prompt": f"Describe person number {i} as JSON.", "scorer": "json_schema",
             "schema": PERSON, "constraint": "schema", "expected": {"name": "Ann", "age": i, "ok": True}}
            for i in range(n)]


def test_constrained_eval_is_always_schema_valid(tiny_gguf: Path, store, tmp_path: Path) -> None:
    from lab.evals.runner import EvalOptions, run_eval

    suite = write_suite(tmp_path / "people.jsonl", _person_items(6))
    runs = run_eval(store, EvalOptions(models=[str(tiny_gguf)], suite=suite, constrained=[True, False],
                                       max_tokens=96, n_threads=1))
    con, free = runs
    assert con["constrained"] == 1 and free["constrained"] == 0
    assert con["n_items"] == 6 and con["format_valid_rate"] == 1.0 and con["n_error"] == 0 and con["n_timeout"] == 0
    assert len(con["items"]) == 6  # the loop below checks every item, not none
    for it in con["items"]:
        value = json.loads(it["output"])  # whatever the random model says, it is valid JSON of the schema
        assert js.errors(value, PERSON) == [] and it["format_valid"] == 1
    # without the constraint a random model writes no valid JSON at all
    assert free["format_valid_rate"] == 0.0 and free["accuracy"] == 0.0
    assert con["accuracy"] == pytest.approx(con["n_correct"] / 6)
    assert con["accuracy_ci95"] == [con["accuracy_ci_low"], con["accuracy_ci_high"]]
    # stored: one eval_runs row per setting, items linked to run, model and machine
    stored = store.query("select * from eval_runs order by constrained desc")
    assert [r["constrained"] for r in stored] == [1, 0] and stored[0]["format_valid_rate"] == 1.0
    items = store.query("select * from eval_items where eval_run_id = ? order by item_index", [con["id"]])
    assert [i["item_id"] for i in items] == [f"p{i}" for i in range(6)]
    assert all(i["run_id"] == con["run_id"] and i["model_id"] == con["model_id"] and i["machine_id"] for i in items)
    assert all(i["latency_ms"] > 0 and i["n_tokens"] > 0 and i["status"] == "ok" for i in items)
    run = store.get("runs", con["run_id"])
    assert run["kind"] == "eval" and run["status"] == "ok" and run["peak_rss_bytes"] > 0


def test_gbnf_and_choice_constraints(tiny_gguf: Path, store, tmp_path: Path) -> None:
    from lab.evals.runner import EvalOptions, run_eval

    suite = write_suite(tmp_path / "g.jsonl", [
        {"id": "code", "prompt": "Give a code", "scorer": "regex", "expected": r"^ID-\d{3}$",
         "constraint": {"gbnf": 'root ::= "ID-" [0-9] [0-9] [0-9]'}},
        {"id": "yn", "prompt": "Yes or no?", "scorer": "choice", "choices": ["yes", "no"], "expected": "yes",
         "constraint": "choices"},
        {"id": "any", "messages": [{"role": "user", "content": "JSON please"}], "scorer": "json_schema",
         "schema": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3}, "constraint": "schema"},
    ])
    (run,) = run_eval(store, EvalOptions(models=[str(tiny_gguf)], suite=suite, max_tokens=64, n_threads=1))
    code, yn, arr = run["items"]
    assert code["correct"] == 1 and code["score"] == 1.0  # the grammar forces the regex
    assert yn["output"] in ("yes", "no") and yn["format_valid"] == 1
    assert js.is_valid(json.loads(arr["output"]), {"type": "array", "items": {"type": "boolean"}, "maxItems": 3})
    assert run["format_valid_rate"] == 1.0 and run["n_format_checked"] == 2


def test_per_item_timeout(tiny_gguf: Path, store, tmp_path: Path) -> None:
    from lab.evals.runner import EvalOptions, run_eval

    suite = write_suite(tmp_path / "t.jsonl", [
        {"id": f"t{i}", "prompt": "Talk forever", "scorer": "contains", "expected": "zzz"} for i in range(3)])
    t0 = time.monotonic()
    (run,) = run_eval(store, EvalOptions(models=[str(tiny_gguf)], suite=suite, max_tokens=100000,
                                         timeout_s=0.2, n_threads=1))
    assert time.monotonic() - t0 < 60
    assert run["n_timeout"] == 3 and run["accuracy"] == 0.0 and run["n_error"] == 0
    assert len(run["items"]) == 3  # the loop below checks every item, not none
    for it in run["items"]:
        assert it["status"] == "timeout" and it["error"] == "generation took longer than 0.2 s"
        assert it["n_tokens"] >= 1 and 200 <= it["latency_ms"] < 5000


def test_watchdog_flags_a_stalled_item(monkeypatch: pytest.MonkeyPatch) -> None:
    from lab.evals import runner

    monkeypatch.setattr(runner, "GRACE_S", 0.3)
    dog = runner._Watchdog(None, item_timeout=0.2)
    try:
        dog.loaded()
        dog.item_started(7)
        t0 = time.monotonic()
        assert not dog.stop.wait(0.3)  # still within 0.2 s + 0.3 s of grace
        assert dog.stop.wait(5) and 0.5 <= time.monotonic() - t0 + 0.0 < 5
        assert dog.stalled_index == 7 and dog.current_index() == 7
    finally:
        dog.close()


def test_grammar_llama_cpp_rejects_names_the_line(tiny_gguf: Path, store, tmp_path: Path) -> None:
    from lab.evals.runner import EvalOptions, run_eval

    suite = write_suite(tmp_path / "bad.jsonl", [
        GOOD, dict(GOOD, id="b", constraint={"gbnf": "root ::= undefined-rule"})])
    with pytest.raises(LabError, match="suite line 2: llama.cpp rejected the item's grammar"):
        run_eval(store, EvalOptions(models=[str(tiny_gguf)], suite=suite, n_threads=1))
    run = store.query("select status, error from runs where kind = 'eval'")[0]
    assert run["status"] == "failed" and "suite line 2" in run["error"]


def test_cli_eval_json_and_errors(tiny_gguf: Path, tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "people.jsonl", _person_items(3))
    db = tmp_path / "cli.db"
    cmd = [sys.executable, "-m", "lab", "eval", str(tiny_gguf), "--suite", str(suite), "-t", "1",
           "--max-tokens", "96", "-o", "json", "--db", str(db)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (rec,) = json.loads(out.stdout)
    assert rec["n_items"] == 3 and rec["format_valid_rate"] == 1.0
    assert 0.0 <= rec["accuracy"] <= 1.0 and len(rec["accuracy_ci95"]) == 2
    assert rec["accuracy_ci95"][0] <= rec["accuracy"] <= rec["accuracy_ci95"][1]
    bad = write_suite(tmp_path / "bad.jsonl", [GOOD, dict(GOOD, id="b", scorer="levenshtein")])
    out = subprocess.run(cmd[:6] + [str(bad), "--db", str(db)], capture_output=True, text=True)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip() == ("error: bad.jsonl line 2: unknown scorer 'levenshtein' "
                                  "(use one of exact, contains, regex, json_schema, choice).")


def test_an_item_too_long_for_the_context_is_an_error(tiny_gguf: Path, store, tmp_path: Path) -> None:
    from lab.evals.runner import EvalOptions, run_eval

    suite = write_suite(tmp_path / "long.jsonl", [
        {"id": "short", "prompt": "hi", "raw": True, "scorer": "contains", "expected": "x"},
        {"id": "long", "prompt": "word " * 60, "raw": True, "scorer": "contains", "expected": "x"},
    ])
    (run,) = run_eval(store, EvalOptions(models=[str(tiny_gguf)], suite=suite, n_ctx=48, max_tokens=16, n_threads=1))
    short, long_ = run["items"]
    assert short["status"] == "ok" and short["n_tokens"] == 16
    assert short["detail"] == "stopped at max_tokens (16); expected text not found"
    assert long_["status"] == "error" and long_["correct"] == 0 and long_["format_valid"] is None
    assert long_["error"].startswith("the prompt (") and long_["error"].endswith("exceed the context of 48")
    assert run["n_error"] == 1 and run["n_items"] == 2 and run["accuracy"] == 0.0
    assert run["format_valid_rate"] is None  # no item asks a format: not measured, not 0
