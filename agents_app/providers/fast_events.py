"""Streamed OpenAI events built by pydantic's compiled validator instead of openai's `construct`.

`openai` turns each streamed chunk into its model class with `construct_type`, a walk over the
class's type hints in Python (with a runtime-`Protocol` check per nested model): about 90 µs for
a one-word Chat Completions chunk on this machine, which made it ~40 % of the server's CPU in a
stream of short deltas. The class's own `model_validate` (pydantic-core) builds the same object in
about 4 µs.

So the clients of our OpenAI provider build the two streamed types, `ChatCompletionChunk` and the
`ResponseStreamEvent` union (by its `type` member), with `model_validate`. The result is the same
class with the same values and the same fields set (`tests/test_fast_events.py` compares the two
ways on every kind of event the fake upstream sends). Validation is stricter than `construct`:
where it refuses an event (a value the types do not allow yet, such as a new enum member), the
event goes through openai's own lenient path, as it did before. Everything else the client
receives (non-streamed responses, other endpoints) is untouched. `OPENAI_FAST_EVENTS=false`
turns this off.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

import pydantic
from openai import AsyncOpenAI
from openai._utils import PropertyInfo
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent


def _unions(annotation: Any, discriminator: str | None = None):
    """(members, discriminator) of each union of models inside a field's annotation."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        named = [m.discriminator for m in args[1:] if isinstance(m, PropertyInfo) and m.discriminator]
        yield from _unions(args[0], named[0] if named else None)
        return
    if origin in (typing.Union, types.UnionType):
        models = [a for a in args if isinstance(a, type) and issubclass(a, pydantic.BaseModel)]
        if len(models) > 1:
            yield models, discriminator or "type"
    for arg in args:
        yield from _unions(arg)


def _models(annotation: Any) -> list[type[pydantic.BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _told_apart(cls: type[pydantic.BaseModel], seen: set | None = None) -> bool:
    """True when every union of models reachable from `cls` tells its members apart by a required
    `Literal` discriminator with values of their own. There the validator can only pick the member
    openai's discriminator picks; elsewhere (e.g. a `Response`'s `instructions`: three members
    share `type: "message"`, and it is optional) the two may differ, so such events take openai's way."""
    seen = set() if seen is None else seen
    if cls in seen:
        return True
    seen.add(cls)
    for field in cls.model_fields.values():
        for members, discriminator in _unions(field.annotation):
            values: list[Any] = []
            for member in members:
                tag = member.model_fields.get(discriminator)
                if tag is None or not tag.is_required() or typing.get_origin(tag.annotation) is not Literal:
                    return False
                values += typing.get_args(tag.annotation)
            if len(values) != len(set(values)):
                return False
        if not all(_told_apart(model, seen) for model in _models(field.annotation)):
            return False
    return True


def _events_by_type() -> dict[str, type[pydantic.BaseModel]]:
    """The members of the `ResponseStreamEvent` union the validator builds as openai does, by the
    value of their `type` field."""
    union = typing.get_args(ResponseStreamEvent)[0]  # Annotated[Union[...], PropertyInfo(...)]
    by_type: dict[str, type[pydantic.BaseModel]] = {}
    for member in typing.get_args(union):
        if _told_apart(member):
            for value in typing.get_args(member.model_fields["type"].annotation):
                by_type[value] = member
    return by_type


RESPONSE_EVENTS = _events_by_type()


# Checked like the Responses events, once, when the module is imported.
CHUNK_TOLD_APART = _told_apart(ChatCompletionChunk)


def event_class(cast_to: Any, data: object) -> type[pydantic.BaseModel] | None:
    """The class to validate `data` with, or None when it is not a streamed event we build."""
    if cast_to is ChatCompletionChunk and CHUNK_TOLD_APART:
        return ChatCompletionChunk
    if cast_to is ResponseStreamEvent and type(data) is dict:
        return RESPONSE_EVENTS.get(data.get("type"))  # type: ignore[arg-type]
    return None


class FastEventsAsyncOpenAI(AsyncOpenAI):
    """`AsyncOpenAI` whose streamed events are built by `model_validate` (see the module)."""

    def _process_response_data(self, *, data: object, cast_to: Any, response: Any) -> Any:
        cls = event_class(cast_to, data)
        if cls is not None:
            try:
                return cls.model_validate(data)
            except pydantic.ValidationError:
                pass  # not what the types allow: openai's lenient path below builds it
        return super()._process_response_data(data=data, cast_to=cast_to, response=response)
