from django.urls import path
from rest_framework.routers import SimpleRouter

from . import approvals
from . import rest as views
from .usage import UsageView

router = SimpleRouter()
# The slash is optional, as in the and the reference server's paths (`/api/runs/<id>/events`):
# `SimpleRouter(trailing_slash=...)` only knows "/" or "", so the pattern is set here.
router.trailing_slash = "/?"
router.register("conversations", views.ConversationViewSet, basename="conversation")
router.register("runs", views.RunViewSet, basename="run")

urlpatterns = [
    path("agents/", views.AgentListView.as_view(), name="agent-list"),
    path("agents/<slug:slug>/info", views.AgentInfoView.as_view(), name="agent-info"),
    path("agents/<slug:slug>/run", views.AgentRunView.as_view(), name="agent-run"),
    path("runs/<uuid:pk>/cancel", views.RunCancelView.as_view(), name="run-cancel"),
    path("runs/<uuid:pk>/approvals/", approvals.RunApprovalListView.as_view(), name="run-approvals"),
    path(
        "runs/<uuid:pk>/approvals/<uuid:approval_id>",
        approvals.ApprovalDecisionView.as_view(),
        name="approval-decide",
    ),
    path("approvals/", approvals.ApprovalListView.as_view(), name="approval-list"),
    path("usage/", UsageView.as_view(), name="usage"),
    *router.urls,
]
