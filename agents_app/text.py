"""Text the databases can store: no NUL character (PostgreSQL's text and jsonb refuse it) and no
lone surrogate (not Unicode at all: no database encodes it). JSON can carry both (`\\u0000`,
`\\ud800`), so every way in checks with `unstorable`, and refuses with a 400 naming the field."""

import re
from typing import Any

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REASON = "contains a NUL character or a lone surrogate, which cannot be stored"


def storable(value: str) -> str:
    """`value` with its unstorable characters replaced by U+FFFD, for text the server writes of its
    own accord (traces) and cannot refuse."""
    return UNSTORABLE.sub("\ufffd", value)


def unstorable(value: Any, path: str = "") -> str | None:
    """Where in `value` (a JSON value; keys count too) the first unstorable text is, as a
    dotted path (`input.0.content`), or None when there is none. `path` names `value` itself."""
    if isinstance(value, str):
        return (path or "value") if UNSTORABLE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and UNSTORABLE.search(key):
                return path or "keys"
            found = unstorable(item, here)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = unstorable(item, f"{path}.{index}" if path else str(index))
            if found:
                return found
    return None
