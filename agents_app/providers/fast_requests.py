"""Request bodies of the model calls without openai's transform walk, where it would change nothing.

Before each `chat.completions.create` and `responses.create`, openai passes the body through
`async_maybe_transform`: a walk over the params' type hints, in Python, that renames keys with an
alias, formats dates and files, dumps pydantic models, turns iterables into lists and drops omitted
values. For a chat run's request that walk took ~0.55 ms on this machine (every union of message
types is walked member by member), about a tenth of the CPU a short stream costs the server.

The create params of both endpoints hold no alias and no format anywhere (checked on their type
hints, once per type, so a later openai that adds one turns this off for that type). On such a type
the walk returns plain JSON data (dicts with string keys, lists, strings, numbers, booleans, None)
as it is, less the omitted values of the top level. So when the body is that, it is returned so
at once; anything else (a pydantic model, a tuple, an omitted value further down) takes openai's
walk. `tests/test_fast_requests.py` checks both give the same bodies.

Installed (process-wide, on openai's two resource modules) with the first client of
`OPENAI_FAST_EVENTS`, so a process that turns fast events off keeps openai as it comes.
"""

from __future__ import annotations

import functools
from typing import Any

from openai._utils import PropertyInfo, is_given
from openai._utils import _transform as openai_transform
from openai.resources.chat.completions import completions as chat_completions
from openai.resources.responses import responses
from typing_extensions import Annotated, Literal, get_args, get_origin, is_typeddict  # noqa: UP035

SCALARS = frozenset({str, int, float, bool, type(None)})


def plain(value: Any) -> bool:
    """JSON data made of dicts, lists and scalars only (exact types: no subclasses, no models)."""
    kind = type(value)
    if kind is dict:
        return all(type(key) is str and plain(item) for key, item in value.items())
    if kind is list:
        return all(plain(item) for item in value)
    return kind in SCALARS


def transform_can_change(expected_type: Any) -> bool:
    """Whether openai's transform may rename or format something in data of this type. A type
    this cannot read (unhashable, a hint that does not resolve) counts as one that may: the
    request then takes openai's walk, and fails or not as it did without this module."""
    try:
        return _type_can_change(expected_type)
    except Exception:
        return True


@functools.cache
def _type_can_change(expected_type: Any) -> bool:
    return _renames_or_formats(expected_type, set())


def _renames_or_formats(hint: Any, seen: set[int]) -> bool:
    # typing_extensions' get_origin/get_args, as openai's: they also see through its ReadOnly & co.
    if id(hint) in seen:
        return False
    seen.add(id(hint))
    origin = get_origin(hint)
    if origin is Annotated:
        for meta in hint.__metadata__:
            if isinstance(meta, PropertyInfo) and (meta.alias is not None or meta.format is not None):
                return True
        return _renames_or_formats(get_args(hint)[0], seen)
    if origin is Literal:
        return False
    if is_typeddict(hint):
        hints = openai_transform.get_type_hints(hint, include_extras=True)
        return any(_renames_or_formats(value, seen) for value in hints.values())
    return any(_renames_or_formats(arg, seen) for arg in get_args(hint))


def fast_maybe_transform(original: Any) -> Any:
    async def maybe_transform(data: Any, expected_type: Any) -> Any:
        if type(data) is dict and not transform_can_change(expected_type):
            body = {key: value for key, value in data.items() if is_given(value)}
            if all(plain(value) for value in body.values()):
                return body
        return await original(data, expected_type)

    maybe_transform.original = original  # type: ignore[attr-defined]
    return maybe_transform


def install() -> None:
    """Wrap openai's own function where the two modules call it (not a wrapper someone else put there)."""
    for module in (chat_completions, responses):
        if module.async_maybe_transform is openai_transform.async_maybe_transform:
            module.async_maybe_transform = fast_maybe_transform(module.async_maybe_transform)
