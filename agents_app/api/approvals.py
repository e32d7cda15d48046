"""Approvals over REST: the caller's pending (or decided) tool calls, and deciding one.

GET /api/approvals/?status=pending   the calls of the caller's runs, newest first
GET /api/runs/<id>/approvals/        one run's calls, in the order the run made them
POST /api/runs/<id>/approvals/<approval_id>  {"decision": "approve"|"reject", "reason"?, "always"?}

The run's owner and staff may decide; for anyone else the run and its calls are a 404.
"""

import uuid

from adrf.views import APIView as AsyncAPIView
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from ..db import in_sync_thread
from ..errors import NotFound
from ..models import Approval, Run
from ..runs.approvals import approval_body, check_decision, decide
from ..runs.engine import get_engine
from ..selectors import approvals_for, decidable_runs
from .errors import choice_param
from .pagination import Pagination

DECISION_REQUEST = inline_serializer(
    "ApprovalDecision",
    fields={
        "decision": serializers.ChoiceField(choices=["approve", "reject"]),
        "reason": serializers.CharField(required=False, max_length=2000),
        "always": serializers.BooleanField(required=False),
    },
)


class ApprovalListView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=Approval.Status.values)],
        responses={200: dict},
    )
    def get(self, request):
        approvals = approvals_for(request.user).order_by("-created_at", "call_id")
        status = choice_param(request.query_params, "status", Approval.Status.values)
        if status:
            approvals = approvals.filter(status=status)
        paginator = Pagination()
        page = paginator.paginate_queryset(approvals.select_related("decided_by"), request, view=self)
        return paginator.get_paginated_response([approval_body(a) for a in page])


class RunApprovalListView(APIView):
    @extend_schema(responses={200: dict})
    def get(self, request, pk):
        run = decidable_runs(request.user).filter(pk=pk).first()
        if run is None:
            raise NotFound(f"run {pk} not found")
        approvals = Approval.objects.filter(run=run).select_related("decided_by")
        return Response(
            {"run_id": str(run.pk), "status": run.status, "approvals": [approval_body(a) for a in approvals]}
        )


class ApprovalDecisionView(AsyncAPIView):
    @extend_schema(request=DECISION_REQUEST, responses={200: dict})
    async def post(self, request, pk, approval_id):
        data = request.data if isinstance(request.data, dict) else {}
        decision, reason, always = check_decision(
            data.get("decision"), data.get("reason"), data.get("always")
        )
        run = await in_sync_thread(decidable_runs(request.user).filter(pk=pk).first)()
        if run is None:
            raise NotFound(f"run {pk} not found")
        executor = get_engine().executor
        event = await decide(
            executor,
            run.pk,
            approval_id,
            decision,
            user=request.user,
            surface="rest",
            reason=reason,
            always=always,
        )
        approval = await in_sync_thread(_approval)(approval_id)
        return Response({**approval_body(approval), "pending": event["pending"], "seq": event["seq"]})


def _approval(approval_id: uuid.UUID) -> Approval:
    return Approval.objects.select_related("decided_by").get(pk=approval_id)


def pending_approvals(run: Run) -> list[dict]:
    """A paused run's calls that wait for a decision (the REST run endpoints answer them)."""
    pending = Approval.objects.filter(run=run, status=Approval.Status.PENDING)
    return [approval_body(a) for a in pending]
