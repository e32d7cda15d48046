"""Channels routes: SSE consumers on HTTP, the agent socket on WebSocket."""

from django.urls import path, re_path

from .ag_ui import AgUiConsumer
from .ai_sdk import UIChatConsumer, UIResumeConsumer
from .openai_v1.chat import ChatCompletionsConsumer
from .openai_v1.responses import ResponseConsumer, ResponsesConsumer
from .sockets import AgentSocketConsumer, ConversationSocketConsumer
from .sse import AgentStreamConsumer, RunJoinConsumer

http_urlpatterns = [
    path("api/agents/<slug:slug>/stream", AgentStreamConsumer.as_asgi()),
    path("api/runs/<uuid:run_id>/stream", RunJoinConsumer.as_asgi()),
    # Any agent name reaches the adapters, so an unknown one gets a 404 in the protocol's own shape.
    path("api/agents/<str:slug>/ui", UIChatConsumer.as_asgi()),
    # A chat id is the client's: any characters, line breaks included (`<path:>` stops at one).
    re_path(r"^api/agents/(?P<slug>[^/]+)/ui/(?P<chat_id>(?s:.+))/stream$", UIResumeConsumer.as_asgi()),
    path("api/agents/<str:slug>/ag-ui", AgUiConsumer.as_asgi()),
    # The OpenAI-compatible API (its other paths are Django views: config/urls.py).
    path("v1/chat/completions", ChatCompletionsConsumer.as_asgi()),
    path("v1/responses", ResponsesConsumer.as_asgi()),
    path("v1/responses/<str:response_id>", ResponseConsumer.as_asgi()),
    # The reference server's paths.
    path("chat/stream", AgentStreamConsumer.as_asgi(slug="chat")),
    path("assistant/stream", AgentStreamConsumer.as_asgi(slug="assistant")),
]

websocket_urlpatterns = [
    path("ws/agents/<slug:slug>/", AgentSocketConsumer.as_asgi()),
    path("ws/conversations/<uuid:conversation_id>/", ConversationSocketConsumer.as_asgi()),
]
