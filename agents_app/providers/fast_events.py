"""Streamed OpenAI events built by pydantic's compiled validator instead of openai's `construct`.

`openai` turns each streamed chunk into its model class with `construct_type`, a walk over the
class's type hints in Python (with a runtime-`Protocol` check per nested model): about 90 µs for
a one-word Chat Completions chunk on this machine, which made it ~40 % of the server's CPU in a
stream of short deltas. The class's own `model_validate` (pydantic-core) builds the same object in
about 4 µs.

So the clients of our OpenAI provider build the two streamed types, `ChatCompletionChunk` and the
`ResponseStreamEvent` union (by its `type` member), with `model_validate`. The result is the same
class with the same values and the same fields set (`tests/test_fast_events.py` compares the two
ways on every kind of event the fake upstream sends). Unions inside an event come out the same
too: `construct_type` itself first tries pydantic's validation of a union and only falls back to
its discriminator when that fails. Validation is stricter than `construct`: where it refuses an
event (a value the types do not allow yet, such as a new enum member), the event goes through
openai's own lenient path, as it did before. Everything else the client receives (non-streamed
responses, other endpoints) is untouched. `OPENAI_FAST_EVENTS=false` turns this off.
"""

from __future__ import annotations

import typing
from typing import Any

import pydantic
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent


def _events_by_type() -> dict[str, type[pydantic.BaseModel]]:
    """The members of the `ResponseStreamEvent` union, by the value of their `type` field."""
    union = typing.get_args(ResponseStreamEvent)[0]  # Annotated[Union[...], PropertyInfo(...)]
    by_type: dict[str, type[pydantic.BaseModel]] = {}
    for member in typing.get_args(union):
        for value in typing.get_args(member.model_fields["type"].annotation):
            by_type[value] = member
    return by_type


RESPONSE_EVENTS = _events_by_type()


def event_class(cast_to: Any, data: object) -> type[pydantic.BaseModel] | None:
    """The class to validate `data` with, or None when it is not a streamed event we build."""
    if cast_to is ChatCompletionChunk:
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
