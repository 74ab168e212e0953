"""Task suites: JSONL files, one item per line, checked before any model is loaded.

An item::

    {"id": "c01",                                   # optional; default "line N"
     "messages": [{"role": "user", "content": "..."}],  # or "prompt": "..." (one user message)
     "raw": false,                                  # true: "prompt" is sent as is, no chat template
     "scorer": "json_schema",                       # exact | contains | regex | json_schema | choice
     "expected": {...},                             # the answer (optional for json_schema only)
     "schema": {...},                               # json_schema: the shape the output must have
     "choices": ["yes", "no"],                      # choice: the allowed answers
     "normalize": true,                             # or ["case"], ["whitespace"]
     "constraint": "schema",                        # optional: "schema", "choices", "json",
                                                    #   {"json_schema": {...}} or {"gbnf": "..."}
     "max_tokens": 128}                             # optional; default from the run

Blank lines and lines starting with ``//`` are skipped. Every problem is reported as one
sentence naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.evals import constraints
from lab.evals.schema import SchemaError, check_schema
from lab.evals.scorers import NORMALIZE_KEYS, SCORERS

SUITES_DIR = Path(__file__).parent / "suites"
_KEYS = {"id", "prompt", "messages", "raw", "scorer", "expected", "schema", "choices", "normalize",
         "constraint", "max_tokens", "tags", "note"}


class SuiteError(LabError):
    """A suite file that cannot be used, with the file and line in the message."""


@dataclass
class Item:
    index: int  # 0-based position in the suite
    line: int   # 1-based line in the file
    id: str
    scorer: str
    expected: Any
    has_expected: bool
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    raw: bool = False
    schema: dict[str, Any] | None = None
    choices: list[str] | None = None
    normalize: Any = False
    constraint_kind: str | None = None  # "gbnf" or None
    grammar: str | None = None  # the GBNF text when constrained
    constraint: Any = None  # the item's "constraint" as written (endpoints send some as JSON schema)
    max_tokens: int | None = None

    @property
    def input_text(self) -> str:
        """The input as stored in ``eval_items.input``."""
        if self.messages is not None:
            return json.dumps(self.messages, ensure_ascii=False)
        return self.prompt or ""

    def to_wire(self) -> dict[str, Any]:
        """What the engine child needs to generate (not to score: the parent scores)."""
        return {"index": self.index, "line": self.line, "id": self.id, "messages": self.messages,
                "prompt": self.prompt, "raw": self.raw, "grammar": self.grammar, "max_tokens": self.max_tokens}


@dataclass
class Suite:
    path: Path
    name: str
    sha256: str
    items: list[Item] = field(default_factory=list)

    @property
    def n_constrained(self) -> int:
        return sum(1 for i in self.items if i.grammar)


def bundled_suites() -> dict[str, Path]:
    """Suites shipped with Rightsizer, by name (file stem)."""
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.jsonl"))}


def resolve_suite(arg: str | Path) -> Path:
    """A path, or the name of a bundled suite (``demo`` is the first bundled one)."""
    path = Path(arg).expanduser()
    if path.is_file():
        return path
    bundled = bundled_suites()
    name = str(arg)
    if name == "demo" and bundled:
        return next(iter(bundled.values()))
    if name in bundled:
        return bundled[name]
    if path.is_dir():
        raise SuiteError(f"{arg} is a directory; give a .jsonl suite file")
    names = ", ".join(["demo", *bundled]) if bundled else "none"
    raise SuiteError(f"No such suite file: {arg} (bundled suites: {names})")


def _where(path: Path, line: int) -> str:
    return f"{path.name} line {line}"


def _item(raw: Any, index: int, line: int, path: Path) -> Item:
    where = _where(path, line)
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: an item must be a JSON object, not {type(raw).__name__}")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}")
    scorer = raw.get("scorer")
    if scorer is None:
        raise SuiteError(f"{where}: no 'scorer' (use one of {', '.join(SCORERS)})")
    if scorer not in SCORERS:
        raise SuiteError(f"{where}: unknown scorer {scorer!r} (use one of {', '.join(SCORERS)})")
    has_prompt, has_messages = "prompt" in raw, "messages" in raw
    if has_prompt == has_messages:
        raise SuiteError(f"{where}: give either 'prompt' (a string) or 'messages' (a list), not "
                         f"{'both' if has_prompt else 'neither'}")
    messages = prompt = None
    raw_mode = bool(raw.get("raw", False))
    if has_prompt:
        if not isinstance(raw["prompt"], str) or not raw["prompt"].strip():
            raise SuiteError(f"{where}: 'prompt' must be a non-empty string")
        prompt = raw["prompt"]
        if not raw_mode:
            messages = [{"role": "user", "content": prompt}]
    else:
        msgs = raw["messages"]
        if (not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in msgs)):
            raise SuiteError(f"{where}: 'messages' must be a non-empty list of {{'role': ..., 'content': ...}}")
        if raw_mode:
            raise SuiteError(f"{where}: 'raw' applies to a 'prompt', not to 'messages'")
        messages = [{"role": m["role"], "content": m["content"]} for m in msgs]
    normalize = raw.get("normalize", False)
    if not (isinstance(normalize, bool) or (isinstance(normalize, list) and all(k in NORMALIZE_KEYS for k in normalize))):
        raise SuiteError(f"{where}: 'normalize' must be true, false or a list of {', '.join(NORMALIZE_KEYS)}")
    has_expected = "expected" in raw
    expected = raw.get("expected")
    schema = raw.get("schema")
    choices = raw.get("choices")
    if scorer == "json_schema":
        if schema is None:
            raise SuiteError(f"{where}: the json_schema scorer needs a 'schema'")
        try:
            check_schema(schema)
            constraints.schema_to_gbnf(schema)
        except (SchemaError, constraints.ConstraintError) as exc:
            raise SuiteError(f"{where}: invalid schema: {exc}") from None
    elif not has_expected:
        raise SuiteError(f"{where}: the {scorer} scorer needs an 'expected' answer")
    if scorer in ("exact", "contains", "regex"):
        values = expected if isinstance(expected, list) else [expected]
        if not values or not all(isinstance(v, str) for v in values):
            raise SuiteError(f"{where}: 'expected' must be a string or a list of strings for the {scorer} scorer")
        if scorer == "regex":
            for v in values:
                try:
                    re.compile(v)
                except re.error as exc:
                    raise SuiteError(f"{where}: 'expected' is not a valid regular expression ({exc})") from None
    if scorer == "choice":
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
            raise SuiteError(f"{where}: the choice scorer needs 'choices', a list of at least two strings")
        if not isinstance(expected, str) or expected not in choices:
            raise SuiteError(f"{where}: 'expected' must be one of the 'choices'")
    grammar = None
    constraint = raw.get("constraint")
    if constraint is not None:
        try:
            if constraint == "schema":
                if schema is None:
                    raise SuiteError(f"{where}: constraint 'schema' needs the item's 'schema'")
                grammar = constraints.schema_to_gbnf(schema)
            elif constraint == "choices":
                if not choices:
                    raise SuiteError(f"{where}: constraint 'choices' needs the item's 'choices'")
                grammar = constraints.choices_gbnf(choices)
            elif constraint == "json":
                grammar = constraints.json_gbnf()
            elif isinstance(constraint, dict) and set(constraint) == {"json_schema"}:
                try:
                    check_schema(constraint["json_schema"])
                except SchemaError as exc:
                    raise SuiteError(f"{where}: invalid schema in 'constraint': {exc}") from None
                grammar = constraints.schema_to_gbnf(constraint["json_schema"])
            elif isinstance(constraint, dict) and set(constraint) == {"gbnf"}:
                constraints.check_gbnf_syntax(constraint["gbnf"])
                grammar = constraint["gbnf"]
            else:
                raise SuiteError(f"{where}: 'constraint' must be \"schema\", \"choices\", \"json\", "
                                 "{\"json_schema\": {...}} or {\"gbnf\": \"...\"}")
        except constraints.ConstraintError as exc:
            raise SuiteError(f"{where}: invalid constraint: {exc}") from None
    max_tokens = raw.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise SuiteError(f"{where}: 'max_tokens' must be a positive integer")
    item_id = raw.get("id", f"line {line}")
    return Item(index=index, line=line, id=str(item_id), scorer=scorer, expected=expected,
                has_expected=has_expected, messages=messages, prompt=prompt, raw=raw_mode, schema=schema,
                choices=choices, normalize=normalize, constraint_kind="gbnf" if grammar else None,
                grammar=grammar, max_tokens=max_tokens, constraint=constraint)


def load_suite(arg: str | Path) -> Suite:
    """Read and check a suite; raises :class:`SuiteError` naming the file and line."""
    path = resolve_suite(arg)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SuiteError(f"Cannot read suite {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SuiteError(f"{_where(path, line)}: not UTF-8 text") from None
    suite = Suite(path=path, name=path.stem, sha256=hashlib.sha256(data).hexdigest())
    ids: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        try:
            raw = json.loads(line)
        except ValueError as exc:
            raise SuiteError(f"{_where(path, number)}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        item = _item(raw, len(suite.items), number, path)
        if item.id in ids:
            raise SuiteError(f"{_where(path, number)}: id {item.id!r} is already used on line {ids[item.id]}")
        ids[item.id] = number
        suite.items.append(item)
    if not suite.items:
        raise SuiteError(f"{path.name} holds no items (one JSON object per line)")
    return suite
