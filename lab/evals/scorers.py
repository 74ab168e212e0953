"""Scorers: compare a model's output with an item's expected answer.

Each scorer returns a :class:`Score`: ``score`` in [0, 1] (partial credit only for JSON
objects: the share of expected fields that match), ``correct`` (score == 1), and
``format_valid``: whether the output has the form the item requires — True/False for
``json_schema`` (the whole output is JSON that the schema accepts) and ``choice`` (the output is
exactly one of the choices), None for scorers that ask no format.

Normalisation, when an item asks for it (``"normalize": true``, or a list of ``"case"`` and
``"whitespace"``): case is folded, and runs of whitespace become one space with the ends
stripped. It applies to the output and the expected strings alike (inside JSON too).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from lab.evals import schema as jsonschema

SCORERS = ("exact", "contains", "regex", "json_schema", "choice")
NORMALIZE_KEYS = ("case", "whitespace")

_WS = re.compile(r"\s+")
_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?```\s*$", re.DOTALL)


@dataclass
class Score:
    score: float
    correct: bool
    format_valid: bool | None
    detail: str | None = None  # why it failed, for the per-item table


def normalize_keys(normalize: Any) -> set[str]:
    """The item's ``normalize`` setting (True, False, or a list of keys) as a set of keys."""
    if normalize is True:
        return set(NORMALIZE_KEYS)
    if not normalize:
        return set()
    return set(normalize)


def normalizer(normalize: Any) -> Callable[[str], str]:
    """A function applying the item's ``normalize`` setting to a string."""
    keys = normalize_keys(normalize)

    def norm(text: str) -> str:
        if "whitespace" in keys:
            text = _WS.sub(" ", text).strip()
        if "case" in keys:
            text = text.casefold()
        return text

    return norm


def _as_list(expected: Any) -> list[str]:
    return [str(e) for e in expected] if isinstance(expected, list) else [str(expected)]


def score_exact(output: str, expected: Any, norm: Callable[[str], str]) -> Score:
    out = norm(output)
    ok = any(out == norm(e) for e in _as_list(expected))
    return Score(1.0 if ok else 0.0, ok, None, None if ok else "not equal to the expected answer")


def score_contains(output: str, expected: Any, norm: Callable[[str], str]) -> Score:
    out = norm(output)
    ok = any(norm(e) in out for e in _as_list(expected))
    return Score(1.0 if ok else 0.0, ok, None, None if ok else "expected text not found")


def score_regex(output: str, expected: Any, normalize: Any) -> Score:
    keys = normalize_keys(normalize)
    flags = re.IGNORECASE if "case" in keys else 0
    out = normalizer(keys & {"whitespace"})(output)
    ok = any(re.search(p, out, flags) is not None for p in _as_list(expected))
    return Score(1.0 if ok else 0.0, ok, None, None if ok else "pattern not found")


def pick_choice(output: str, choices: list[str], norm: Callable[[str], str]) -> tuple[str | None, bool]:
    """(the choice the output names, whether the output is exactly that choice).

    Exactly a choice (trailing punctuation aside) is a well-formed answer; otherwise a choice
    named once as a whole word counts as the answer, without the format being right."""
    out = norm(output).strip()
    bare = out.rstrip(".!;:").strip()
    for c in choices:
        if bare == norm(c).strip():
            return c, True
    found = [c for c in choices if re.search(rf"(?<!\w){re.escape(norm(c).strip())}(?!\w)", out)]
    return (found[0], False) if len(found) == 1 else (None, False)


def score_choice(output: str, expected: Any, choices: list[str], norm: Callable[[str], str]) -> Score:
    picked, exact = pick_choice(output, choices, norm)
    ok = picked is not None and norm(picked) == norm(str(expected))
    detail = None if ok else ("no single choice named" if picked is None else f"picked {picked!r}")
    return Score(1.0 if ok else 0.0, ok, exact, detail)


def parse_json_output(output: str) -> tuple[Any, bool]:
    """(value, strict): strict when the whole output is one JSON text; else the first fenced
    block or the outermost {...}/[...] span, leniently (``_MISSING`` when nothing parses)."""
    text = output.strip()
    try:
        return json.loads(text), True
    except ValueError:
        pass
    m = _FENCE.match(text)
    candidates = [m.group(1)] if m else []
    for open_ch, close_ch in (("{", "}"), ("[", "]")):
        start, end = text.find(open_ch), text.rfind(close_ch)
        if 0 <= start < end:
            candidates.append(text[start:end + 1])
    for c in candidates:
        try:
            return json.loads(c), False
        except ValueError:
            continue
    return _MISSING, False


class _Missing:
    def __repr__(self) -> str:
        return "<no JSON>"


_MISSING = _Missing()


def _same(a: Any, b: Any, norm: Callable[[str], str]) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return norm(a) == norm(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, norm) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        return all(_same(a.get(k), b.get(k), norm) for k in keys)
    return a == b


def score_json_schema(output: str, expected: Any, schema: dict[str, Any], norm: Callable[[str], str],
                      has_expected: bool = True) -> Score:
    value, strict = parse_json_output(output)
    if value is _MISSING:
        return Score(0.0, False, False, "no JSON in the output")
    problems = jsonschema.errors(value, schema)
    format_valid = strict and not problems
    if not has_expected:
        ok = not problems
        return Score(1.0 if ok else 0.0, ok, format_valid, problems[0] if problems else None)
    if isinstance(expected, dict) and isinstance(value, dict):
        # partial credit: the share of expected fields that match (a missing key matches null)
        keys = list(expected)
        hits = [k for k in keys if _same(value.get(k), expected[k], norm)]
        extra = [k for k in value if k not in expected]
        score = len(hits) / len(keys) if keys else (0.0 if extra else 1.0)
        if extra:
            score = min(score, 1.0 - 1.0 / (len(keys) + 1))
        ok = not extra and len(hits) == len(keys)
        wrong = [k for k in keys if k not in hits]
        detail = None if ok else (f"wrong: {', '.join(wrong)}" if wrong else f"extra: {', '.join(extra)}")
        return Score(score, ok, format_valid, detail)
    ok = _same(value, expected, norm)
    return Score(1.0 if ok else 0.0, ok, format_valid, None if ok else "value differs")


def score_item(item: Any, output: str) -> Score:
    """Score one output against a :class:`lab.evals.suite.Item`."""
    norm = normalizer(item.normalize)
    if item.scorer == "exact":
        return score_exact(output, item.expected, norm)
    if item.scorer == "contains":
        return score_contains(output, item.expected, norm)
    if item.scorer == "regex":
        return score_regex(output, item.expected, item.normalize)
    if item.scorer == "choice":
        return score_choice(output, item.expected, item.choices or [], norm)
    if item.scorer == "json_schema":
        return score_json_schema(output, item.expected, item.schema or {}, norm, item.has_expected)
    raise ValueError(f"unknown scorer {item.scorer!r}")
