"""REST API. Views validate, call the run engine, serialize; the run itself belongs to the executor."""

import asyncio
import uuid

from adrf.views import APIView as AsyncAPIView
from adrf.viewsets import GenericViewSet as AsyncGenericViewSet
from django.http import JsonResponse
from django.shortcuts import render
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from ..conversations import conversation_clear, conversation_delete
from ..db import in_sync_thread
from ..errors import NotFound
from ..models import Conversation, Run
from ..registry import all_specs, slugs
from ..runs.cancel import cancel_run
from ..runs.errors import UPSTREAM_ERROR_CODES
from ..runs.read import RunFollower, refresh_liveness
from ..runs.start import start_run
from ..runs.sweep import is_stale
from ..selectors import agent_describe, conversations_for, run_events_after, runs_for
from ..session import DjangoSession
from ..transcript import turns_of
from .approvals import pending_approvals
from .errors import choice_param, cursor, error_body
from .pagination import Pagination, page_of, paginated
from .schema import CURSOR
from .serializers import (
    CancelRequestSerializer,
    ConversationCreateSerializer,
    ConversationItemSerializer,
    ConversationSerializer,
    RunEventSerializer,
    RunRequestSerializer,
    RunSerializer,
    parse_run_request,
    run_request,
    spec_or_404,
)
from .throttles import RunStartThrottle

UUID_RE = "[0-9a-fA-F-]{36}"
# A run as the chat page shows it (transcript.turn_of).
TURN = {
    "type": "object",
    "properties": {
        "run_id": {"type": "string", "format": "uuid"},
        "agent": {"type": "string"},
        "status": {"type": "string"},
        "input": {"type": "string"},
        "steps": {"type": "array", "items": {"type": "object"}},
        "answer": {"type": "string"},
        "html": {"type": "string"},
        "usage": {"type": "object"},
        "model": {"type": "string"},
        "error": {"type": "string"},
        "error_code": {"type": "string"},
        "last_seq": {"type": "integer"},
        "created_at": {"type": "string", "format": "date-time"},
    },
    "required": ["run_id", "agent", "status", "input", "steps", "answer", "html", "created_at"],
}
NOT_ACTIVE = OpenApiResponse(description="The run has already ended (`run_not_active`, with its `status`).")


def agent_filter(description: str) -> OpenApiParameter:
    return OpenApiParameter("agent", str, enum=slugs(), description=description)


class AgentListView(APIView):
    @extend_schema(responses={200: {"type": "array", "items": {"type": "object"}}})
    def get(self, request):
        return Response([agent_describe(spec) for spec in all_specs()])


class AgentInfoView(APIView):
    @extend_schema(responses={200: dict})
    def get(self, request, slug: str):
        return Response(agent_describe(spec_or_404(slug)))


def run_response(run: Run, session_key: str | None) -> dict:
    """The reference server's run shape, plus our ids and status."""
    return {
        "final_output": run.final_output,
        "success": run.status == Run.Status.COMPLETED,
        "error": run.error or None,
        "usage": run.usage,
        "response_id": run.response_id or None,
        "session_id": session_key or (str(run.conversation_id) if run.conversation_id else None),
        "run_id": str(run.pk),
        "conversation_id": str(run.conversation_id) if run.conversation_id else None,
        "status": run.status,
    }


class AgentRunView(AsyncAPIView):
    """Start a run and wait for its result (async: a waiting run holds no thread)."""

    throttle_classes = [RunStartThrottle]

    @extend_schema(request=RunRequestSerializer, responses={200: dict})
    async def post(self, request, slug: str):
        spec = spec_or_404(slug)
        data = parse_run_request(request)
        # A run that pauses for approval is answered then, with its pending calls.
        follower = RunFollower(until_paused=True)
        run = await start_run(run_request(request.user, spec, data), reader=follower.inbox)
        try:
            run = await follower.wait(run, started=True)
        except asyncio.CancelledError:
            # The client went away; the run continues unless it asked otherwise.
            if data["on_disconnect"] == "cancel":
                await cancel_run(run)
            raise
        body = run_response(run, data.get("session_id"))
        if run.status == Run.Status.AWAITING_APPROVAL:
            body["approvals"] = await in_sync_thread(pending_approvals)(run)
        if run.status in (Run.Status.FAILED, Run.Status.INTERRUPTED):
            body["error_code"] = run.error_code
            upstream = run.error_code in UPSTREAM_ERROR_CODES
            return Response(body, status=502 if upstream else 500)
        return Response(body)


class SessionHistoryView(AsyncAPIView):
    """GET /chat/session/<session_id> (and /assistant/...): the memory items of the caller's
    conversation with that `session_id`, in order; DELETE clears them (the conversation and its
    runs stay). A session that was never used has no items; another user's is not visible."""

    @extend_schema(responses={200: dict})
    async def get(self, request, slug: str, session_id: str):
        conversation = await self._conversation(request, slug, session_id)
        items = [] if conversation is None else await DjangoSession(conversation).get_items()
        return Response(
            {
                "session_id": session_id,
                "conversation_id": str(conversation.pk) if conversation else None,
                "items": items,
            }
        )

    @extend_schema(responses={204: None})
    async def delete(self, request, slug: str, session_id: str):
        conversation = await self._conversation(request, slug, session_id)
        if conversation is not None:
            await in_sync_thread(conversation_clear)(conversation)
        return Response(status=204)

    @staticmethod
    async def _conversation(request, slug: str, session_id: str) -> Conversation | None:
        if len(session_id) > 128:
            raise ValidationError({"session_id": ["at most 128 characters"]})
        mine = conversations_for(request.user).filter(agent=spec_or_404(slug).slug, session_key=session_id)
        return await in_sync_thread(mine.first)()


class RunCancelView(AsyncAPIView):
    @extend_schema(request=CancelRequestSerializer, responses={202: RunSerializer, 409: NOT_ACTIVE})
    async def post(self, request, pk):
        serializer = CancelRequestSerializer(data=request.data if isinstance(request.data, dict) else {})
        serializer.is_valid(raise_exception=True)
        run = await in_sync_thread(runs_for(request.user).filter(pk=pk).first)()
        if run is None:
            raise NotFound(f"run {pk} not found")
        await refresh_liveness(run)
        run = await cancel_run(run, serializer.validated_data["mode"])
        return Response(RunSerializer(run).data, status=202)


@extend_schema_view(
    list=extend_schema(
        parameters=[
            agent_filter("Only the conversations with this agent."),
            OpenApiParameter("search", str, description="Only titles that contain this text."),
        ]
    )
)
class ConversationViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = ConversationSerializer
    lookup_value_regex = UUID_RE
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        qs = conversations_for(self.request.user)
        params = self.request.query_params
        agent = choice_param(params, "agent", slugs())
        if agent:
            qs = qs.filter(agent=agent)
        if params.get("search"):
            qs = qs.filter(title__icontains=params["search"])
        return qs

    @extend_schema(request=ConversationCreateSerializer, responses={201: ConversationSerializer})
    def create(self, request, *args, **kwargs):
        serializer = ConversationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = Conversation.objects.create(owner=request.user, **serializer.validated_data)
        return Response(ConversationSerializer(conversation).data, status=201)

    def perform_destroy(self, instance):
        conversation_delete(instance)

    @extend_schema(
        responses={200: paginated("PaginatedConversationItemList", ConversationItemSerializer(many=True))}
    )
    @action(detail=True, methods=["get"])
    def items(self, request, pk=None):
        conversation = self.get_object()
        page = self.paginate_queryset(conversation.items.order_by("id"))
        return self.get_paginated_response(ConversationItemSerializer(page, many=True).data)

    @extend_schema(responses={200: page_of(TURN)})
    @action(detail=True, methods=["get"])
    def turns(self, request, pk=None):
        """The conversation's runs as the chat page shows them, newest page first, each page in order."""
        conversation = self.get_object()
        page = self.paginate_queryset(conversation.runs.order_by("-created_at"))
        return self.get_paginated_response(turns_of(page[::-1]))


class EventPagination(Pagination):
    default_limit = 500
    max_limit = 2000


@extend_schema_view(
    list=extend_schema(
        parameters=[
            agent_filter("Only the runs of this agent."),
            OpenApiParameter("status", str, enum=Run.Status.values),
            OpenApiParameter("conversation", uuid.UUID, description="Only the runs of this conversation."),
        ]
    )
)
class RunViewSet(mixins.ListModelMixin, AsyncGenericViewSet):
    """The caller's runs. Reading one whose process died ends it first (`interrupted`), rather
    than showing it `running` for ever: the engine does that, so the reads of one run are async."""

    serializer_class = RunSerializer
    lookup_value_regex = UUID_RE

    def get_queryset(self):
        qs = runs_for(self.request.user)
        if self.action != "list":
            return qs
        params = self.request.query_params
        agent = choice_param(params, "agent", slugs())
        if agent:
            qs = qs.filter(agent=agent)
        status = choice_param(params, "status", Run.Status.values)
        if status:
            qs = qs.filter(status=status)
        if params.get("conversation") is not None:
            try:
                conversation = uuid.UUID(params["conversation"])
            except ValueError:
                raise ValidationError({"conversation": ["must be a conversation id (a UUID)"]}) from None
            qs = qs.filter(conversation=conversation)
        return qs

    async def live_object(self) -> Run:
        run = await in_sync_thread(self.get_object)()
        if is_stale(run):  # its process died: it ends now, not `running` for ever
            await refresh_liveness(run)
        return run

    async def retrieve(self, request, pk=None):
        return Response(RunSerializer(await self.live_object()).data)

    @extend_schema(
        parameters=[OpenApiParameter("after", CURSOR, description="Only the events after this seq.")],
        responses={200: paginated("PaginatedRunEventList", RunEventSerializer(many=True))},
    )
    @action(detail=True, methods=["get"], pagination_class=EventPagination)
    async def events(self, request, pk=None):
        run = await self.live_object()
        after = cursor(request.query_params.get("after", 0))
        if after is None:
            raise ValidationError({"after": ["must be a non-negative integer of at most 10 digits"]})
        return await in_sync_thread(self.events_page)(run, after)

    def events_page(self, run: Run, after: int) -> Response:
        page = self.paginate_queryset(run_events_after(run, after))
        return self.get_paginated_response(RunEventSerializer(page, many=True).data)

    @extend_schema(responses={200: TURN})
    @action(detail=True, methods=["get"])
    async def turn(self, request, pk=None):
        """The run as the chat page shows it: input, steps, the answer as sanitized HTML, usage."""
        run = await self.live_object()
        return Response((await in_sync_thread(turns_of)([run]))[0])


# Paths of the API and of the reference server's endpoints: a 404 there is JSON, elsewhere a page.
API_PREFIXES = ("/api/", "/v1/", "/chat/", "/assistant/")


def not_found(request, exception=None):
    if request.path.startswith(API_PREFIXES) or request.path == "/research":
        return JsonResponse(error_body("not_found", f"no such path: {request.path}"), status=404)
    return render(request, "404.html", status=404)


def server_error(request):
    return JsonResponse(error_body("server_error", "internal server error"), status=500)
