"""Streamed OpenAI events built by pydantic's compiled validator instead of openai's `construct`.

The project's one use of a library's private API (docs/decisions.md says why). `openai` turns each
streamed chunk into its model class with `construct_type`, a walk over the class's type hints in
Python (with a runtime-`Protocol` check per nested model): about 90 µs for a one-word Chat
Completions chunk on this machine, which made it ~40 % of the server's CPU in a stream of short
deltas. The class's own `model_validate` (pydantic-core) builds the same object in about 4 µs.

So `FastEventsAsyncOpenAI` overrides the client's private `_process_response_data` and builds the
two streamed types, `ChatCompletionChunk` and the `ResponseStreamEvent` union (by its `type`
member), with `model_validate`: the same class with the same values and the same fields set.
(openai itself validates a union, so the Responses events and every Optional member come out
validated either way; it constructs only a chunk, its choices and their deltas, and leaves their
unknown members, such as a compatible server's `reasoning_content`, out of `model_fields_set`, as
`as_constructed` does.) Anything else the client receives (non-streamed responses, other
endpoints, a `type` it does not know) and any event the fast way fails on (a value the types do not
allow yet, such as a new enum member, or any other error) goes through openai's own path.

Guards: the provider uses this client only with the openai versions in `TESTED_OPENAI_VERSIONS`
(others get the stock `AsyncOpenAI`, with a warning), and only while `OPENAI_FAST_EVENTS` is on;
`tests/test_fast_events.py` replays a recorded stream of every event type through both ways and
requires equal objects.
"""

from __future__ import annotations

import functools
import logging
import typing
from typing import Any

import openai
import pydantic
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent

log = logging.getLogger(__name__)

# `openai.__version__` values the override was tested with (tests/test_fast_events.py). After an
# upgrade: re-record tests/data, run that test, then add the version here.
TESTED_OPENAI_VERSIONS = frozenset({"3.54.0"})


def tested_openai() -> bool:
    """Whether the installed openai is one this module was tested with."""
    return openai.__version__ in TESTED_OPENAI_VERSIONS


def _events_by_type() -> dict[str, type[pydantic.BaseModel]]:
    """The members of the `ResponseStreamEvent` union, by the value of their `type` field."""
    union = typing.get_args(ResponseStreamEvent)[0]  # Annotated[Union[...], <discriminator>]
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


@functools.cache
def _constructed_members(cls: type[pydantic.BaseModel]) -> tuple[str, ...]:
    """Members of `cls` that openai's `construct` builds without validating them: a model class or a
    list of one (openai validates a union, which includes every Optional member)."""
    members = []
    for name, field in cls.model_fields.items():
        hint = field.annotation
        if typing.get_origin(hint) is list:
            hint = typing.get_args(hint)[0]
        if isinstance(hint, type) and issubclass(hint, pydantic.BaseModel):
            members.append(name)
    return tuple(members)


def as_constructed(model: pydantic.BaseModel) -> pydantic.BaseModel:
    """`model` with its unknown members left out of `model_fields_set` (validation puts them in)
    wherever openai's `construct` builds it: in a chunk, the chunk, its choices and their deltas."""
    if model.model_extra:
        model.model_fields_set.difference_update(model.model_extra)
    for name in _constructed_members(type(model)):
        value = getattr(model, name)
        for item in value if type(value) is list else (value,):
            as_constructed(item)
    return model


@functools.cache
def _warn_failure(kind: type[BaseException]) -> None:
    log.warning(
        "fast event parsing failed (%s); openai's own parsing takes over", kind.__name__, exc_info=True
    )


class FastEventsAsyncOpenAI(AsyncOpenAI):
    """`AsyncOpenAI` whose streamed events are built by `model_validate` (see the module)."""

    def validate_event(self, cls: type[pydantic.BaseModel], data: object) -> pydantic.BaseModel:
        """The fast way: the event built by its class's validator (and a chunk as openai builds it)."""
        event = cls.model_validate(data)
        return event if cls is not ChatCompletionChunk else as_constructed(event)

    def _process_response_data(self, *, data: object, cast_to: Any, response: Any) -> Any:
        try:
            cls = event_class(cast_to, data)
            if cls is not None:
                return self.validate_event(cls, data)
        except pydantic.ValidationError:
            pass  # not what the types allow (yet): openai's lenient path below builds it
        except Exception as exc:
            _warn_failure(type(exc))
        return super()._process_response_data(data=data, cast_to=cast_to, response=response)
