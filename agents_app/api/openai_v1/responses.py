"""The Responses API over runs: `POST /v1/responses` (streamed, whole, or `background`),
`GET /v1/responses/{id}` (the response as it stands, or its event stream resumed after
`starting_after`), `DELETE /v1/responses/{id}` and `POST /v1/responses/{id}/cancel`.

A response is a run (`resp_<run id>`). Without `store: false` it belongs to a conversation:
a new one, or with `previous_response_id` the conversation of that response, which must be
the latest of its conversation (conversations here are linear, not trees)."""

import asyncio
import contextlib

import orjson
from adrf.views import APIView as AsyncAPIView
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response as DRFResponse

from ...db import in_sync_thread
from ...models import Run, RunEvent
from ...runs.cancel import cancel_run
from ...runs.read import Batch, refresh_liveness, wait_for_end
from ...runs.start import RunRequest, start_run
from ...selectors import runs_for
from ..auth import authenticated_request
from ..errors import cursor
from ..sse import RunStreamConsumer, query_params
from ..throttles import RUN_START, STREAM_OPEN, check_throttles
from .errors import OpenAIError, OpenAIErrors, from_api_error, retry_headers
from .requests import agent_for, body_object, responses_input
from .response_events import ResponseTranslator, run_id_of, sse_frame

CANCEL_WAIT = 10.0  # seconds a cancel waits for the run to end before answering


def not_found(value: str) -> OpenAIError:
    return OpenAIError(404, f"No response found with id '{value}'.", param="response_id", code="not_found")


def own_run(user, value: str) -> Run:
    """The caller's run behind a response id (another user's is not found, like a missing one)."""
    run_id = run_id_of(value)
    run = runs_for(user).filter(pk=run_id).first() if run_id else None
    if run is None:
        raise not_found(value)
    return run


def previous_conversation(user, value: str, spec) -> str:
    previous = own_run(user, value)
    if previous.agent != spec.slug:
        raise OpenAIError(
            400,
            f"previous_response_id: {value} is a response of model {previous.agent!r}",
            "previous_response_id",
        )
    if previous.conversation_id is None:
        raise OpenAIError(
            400, "previous_response_id: that response was not stored (store: false)", "previous_response_id"
        )
    latest = Run.objects.filter(conversation_id=previous.conversation_id).order_by("-created_at").first()
    if latest.pk != previous.pk:
        raise OpenAIError(
            400,
            "previous_response_id: only the latest response of a conversation can be continued "
            "(conversations on this server do not branch)",
            "previous_response_id",
        )
    return str(previous.conversation_id)


def translated(run: Run) -> ResponseTranslator:
    """A run's response as its stored events make it (sync: one query)."""
    translator = ResponseTranslator(run)
    for data in RunEvent.objects.filter(run=run).order_by("seq").values_list("data", flat=True):
        translator.feed(data)
    return translator


def as_json(translator: ResponseTranslator) -> dict:
    return translator.response().model_dump(mode="json", exclude_unset=True)


class ResponseStream(RunStreamConsumer):
    """Shared by the create and retrieve consumers: OpenAI's frames, errors and no `retry:`."""

    translator: ResponseTranslator
    starting_after = -1
    until_paused = True  # a paused run's response is `incomplete`, and its stream ends there

    def prologue(self) -> bytes:
        return b""

    def frames(self, batch: Batch) -> bytes:
        out = []
        for _seq, text in batch:
            for event in self.translator.feed(orjson.loads(text)):
                if event.sequence_number > self.starting_after:
                    out.append(sse_frame(event))
        return b"".join(out)

    def result(self) -> tuple[int, dict, list]:
        return 200, as_json(self.translator), []

    def refusal(self, status: int, body: dict):
        return status, from_api_error(status, body), retry_headers(status)


class ResponsesConsumer(ResponseStream):
    """POST /v1/responses."""

    methods = ("POST",)

    async def open(self, body: bytes):
        run = await start_run(lambda: self.run_request(body), reader=self.reader.inbox)
        self.translator = ResponseTranslator(run)
        if self.background and not self.streaming:
            # Answers at once; the run goes on, detached from this request.
            await self._json(200, as_json(self.translator))
            return None
        return run, 0, True

    def run_request(self, body: bytes) -> RunRequest:
        request = authenticated_request(self.scope, body, RUN_START)
        data = body_object(request.data)
        spec = agent_for(data)
        items = responses_input(data)
        self.streaming = data.get("stream", False)
        if self.streaming:
            check_throttles(request, STREAM_OPEN)
        self.background = data.get("background", False)
        store = data.get("store", True)
        previous = data.get("previous_response_id")
        if previous is not None and not store:
            raise OpenAIError(400, "previous_response_id: needs store: true here", "previous_response_id")
        if previous is not None and not isinstance(previous, str):
            raise OpenAIError(400, "previous_response_id: must be a response id", "previous_response_id")
        options = {
            "background": self.background,
            "store": store,
            "metadata": data.get("metadata") or {},
            "instructions": data.get("instructions"),
            "previous_response_id": previous,
        }
        return RunRequest(
            user=request.user,
            spec=spec,
            input=items,
            conversation_id=previous_conversation(request.user, previous, spec) if previous else None,
            memory=store and spec.uses_memory,
            options=options,
        )


class ResponseConsumer(ResponseStream):
    """GET /v1/responses/{id} (?stream=true&starting_after=N) and DELETE /v1/responses/{id}."""

    methods = ("GET", "DELETE")

    async def open(self, body: bytes):
        answer = await in_sync_thread(self.read)(body)
        if answer is not None:
            await self._json(*answer)
            return None
        # Replayed from its first event: the translation numbers the events as it did live.
        return self.run, 0, False

    def read(self, body: bytes) -> tuple | None:
        request = authenticated_request(self.scope, body)
        value = self.scope["url_route"]["kwargs"]["response_id"]
        run = self.run = own_run(request.user, value)
        if self.scope["method"] == "DELETE":
            if run.is_active:
                raise OpenAIError(
                    409, "the response is still in progress: cancel it first", code="response_in_progress"
                )
            run.delete()
            return 200, {"id": value, "object": "response", "deleted": True}, []
        query = query_params(self.scope)
        stream = query.get("stream", ["false"])[0]
        if stream not in ("true", "false"):
            raise OpenAIError(400, "stream: must be true or false", param="stream")
        self.streaming = stream == "true"
        raw = query.get("starting_after", [None])[0]
        starting_after = cursor(raw) if raw is not None else None
        if raw is not None and starting_after is None:
            raise OpenAIError(400, "starting_after: must be a non-negative integer", "starting_after")
        if not self.streaming:
            return 200, as_json(translated(run)), []
        check_throttles(request, STREAM_OPEN)
        if starting_after is not None:
            self.starting_after = starting_after
            if not run.is_active and self.starting_after > translated(run).events.sequence:
                raise OpenAIError(
                    400, "starting_after: the response's stream ends before that event", "starting_after"
                )
        self.translator = ResponseTranslator(run)
        return None


class ResponseCancelView(OpenAIErrors, AsyncAPIView):
    """POST /v1/responses/{id}/cancel: the response once its run has ended (cancelled, or
    finished meanwhile)."""

    @extend_schema(request=None, responses={200: dict})
    async def post(self, request, response_id: str):
        run = await in_sync_thread(own_run)(request.user, response_id)
        await refresh_liveness(run)
        if not run.is_active:
            raise OpenAIError(
                400, f"response {response_id} is already {run.status}", code="response_not_active"
            )
        await cancel_run(run)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CANCEL_WAIT):
                await wait_for_end(run)
        await in_sync_thread(run.refresh_from_db)()
        return DRFResponse(as_json(await in_sync_thread(translated)(run)))
