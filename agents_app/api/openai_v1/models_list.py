"""`GET /v1/models` and `GET /v1/models/{id}`: the agents, as the models a client may ask for."""

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from ...registry import AgentSpec
from .errors import OpenAIErrors
from .requests import agent_for, chat_models

# The models' `created` (OpenAI's clients show it): the agents are part of this server's code.
CREATED = 1767225600  # 2026-01-01
OWNER = "django-agents-server"


def model_of(spec: AgentSpec) -> dict:
    return {"id": spec.slug, "object": "model", "created": CREATED, "owned_by": OWNER}


class ModelListView(OpenAIErrors, APIView):
    @extend_schema(responses={200: dict}, operation_id="v1_models_list")
    def get(self, request):
        return Response({"object": "list", "data": [model_of(spec) for spec in chat_models()]})


class ModelDetailView(OpenAIErrors, APIView):
    @extend_schema(responses={200: dict})
    def get(self, request, model: str):
        return Response(model_of(agent_for({"model": model})))
