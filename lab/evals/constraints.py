"""Generation constraints: a GBNF grammar, or a JSON schema turned into one.

llama.cpp enforces a GBNF grammar token by token (``llm.GrammarSampler``). A JSON schema is
converted with the converter llama-cpp-python ships (``llama_cpp/llama_grammar.py``, a port of
llama.cpp's ``json_schema_to_grammar``). That file is pure Python; it is loaded on its own, without
the ``llama_cpp`` package (which loads the native library), so the parent can convert and check
a suite's schemas before any engine child starts.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Any


class ConstraintError(ValueError):
    """A constraint that cannot be turned into a grammar."""


@lru_cache(maxsize=1)
def _converter_module() -> Any:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise ConstraintError("llama-cpp-python is not installed")
    path = Path(spec.origin).parent / "llama_grammar.py"
    mod_spec = importlib.util.spec_from_file_location("_rightsizer_llama_grammar", path)
    if mod_spec is None or mod_spec.loader is None:
        raise ConstraintError(f"cannot load {path}")
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


# llama.cpp's own converter (common/json-schema-to-grammar.cpp) keeps control characters out of
# strings, as JSON requires; the older Python port lets them in (a random model then writes a raw
# \x1a inside a string, which json.loads rejects). The rule is replaced by llama.cpp's.
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})'


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """A GBNF grammar whose sentences are exactly the JSON texts ``schema`` allows (within the
    converter's subset)."""
    try:
        grammar = _converter_module().json_schema_to_gbnf(json.dumps(schema))
        return "\n".join(_STRICT_CHAR if ln.startswith("char ::=") else ln for ln in grammar.splitlines()) + "\n"
    except (AssertionError, AttributeError, KeyError, TypeError, ValueError, RecursionError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConstraintError(f"llama.cpp's schema converter rejects the schema ({detail})") from None


def json_gbnf() -> str:
    """Any JSON value (llama.cpp's json.gbnf)."""
    return _converter_module().JSON_GBNF


def _gbnf_literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'


def choices_gbnf(choices: list[str]) -> str:
    """A grammar that allows exactly one of ``choices``."""
    if not choices:
        raise ConstraintError("no choices to constrain to")
    return "root ::= " + " | ".join(_gbnf_literal(c) for c in choices) + "\n"


def check_gbnf_syntax(grammar: str) -> None:
    """A cheap syntax check in the parent (llama.cpp's parser gives the final word in the
    child): the grammar must define ``root`` with ``::=`` and close its strings, character
    classes and parentheses."""
    if not isinstance(grammar, str) or not grammar.strip():
        raise ConstraintError("the grammar is empty")
    depth = 0
    in_str = in_class = in_comment = escaped = False
    code: list[str] = []  # the grammar without comments and literals, to find rule heads
    for ch in grammar:
        if in_comment:
            in_comment = ch != "\n"
            if not in_comment:
                code.append(ch)
            continue
        if escaped:
            escaped = False
            continue
        if in_str or in_class:
            if ch == "\\":
                escaped = True
            elif (in_str and ch == '"') or (in_class and ch == "]"):
                in_str = in_class = False
            continue
        if ch == "#":
            in_comment = True
        elif ch == '"':
            in_str = True
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ConstraintError("the grammar closes a parenthesis it never opened")
        code.append(ch)
    if in_str or in_class or depth:
        raise ConstraintError("the grammar has an unclosed string, character class or parenthesis")
    if not any(ln.strip().startswith("root") and ln.split("::=")[0].strip() == "root"
               for ln in "".join(code).splitlines() if "::=" in ln):
        raise ConstraintError("the grammar has no 'root ::= ...' rule")
