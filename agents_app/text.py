"""JSON the databases can store, and take apart without harm: no NUL character (PostgreSQL's text
and jsonb refuse it), no lone surrogate (not Unicode at all: no database encodes it), no number
that overflows to infinity (`1e999`: jsonb refuses it), and no deeper nesting than
JSON_MAX_DEPTH. JSON can carry all of these, so every way in checks with `problem`, and refuses
with a 400 naming the field."""

import math
import re
from typing import Any

from django.conf import settings

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REASON = "contains a NUL character or a lone surrogate, which cannot be stored"
NOT_FINITE = "is a number too large to store (it overflows to infinity)"
# A character that is white space to neither Python nor JSON Schema's (ECMAScript's) regular
# expressions: text with none of them is blank (a message, a question, a document). The OpenAPI
# schema states it with this same pattern.
NOT_BLANK = r"[^\s\u001c-\u001f\u0085\ufeff]"
_SOMETHING = re.compile(NOT_BLANK)


def blank(text: str) -> bool:
    return _SOMETHING.search(text) is None


def storable(value: str) -> str:
    """`value` with its unstorable characters replaced by U+FFFD, for text the server writes of its
    own accord (traces) and cannot refuse."""
    return UNSTORABLE.sub("\ufffd", value)


def too_deep() -> str:
    return f"is nested deeper than {settings.JSON_MAX_DEPTH} levels"


def problem(value: Any, path: str = "", depth: int = 0) -> tuple[str, str] | None:
    """The first place in `value` (a JSON value; keys count too) that cannot be stored, and why:
    (a dotted path such as `input.0.content`, the reason), or None. `path` names `value` itself."""
    if isinstance(value, str):
        return (path or "value", REASON) if UNSTORABLE.search(value) else None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "value", NOT_FINITE)
    if not isinstance(value, dict | list):
        return None
    if depth >= settings.JSON_MAX_DEPTH:
        return (path or "value", too_deep())
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(key, str) and UNSTORABLE.search(key):
            return (path or "keys", REASON)
        found = problem(item, f"{path}.{key}" if path else str(key), depth + 1)
        if found:
            return found
    return None
