from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from agents_app import health
from agents_app.admin_approvals import decide_view
from agents_app.api import rest as agent_views
from agents_app.api.openai_v1.models_list import ModelDetailView, ModelListView
from agents_app.api.openai_v1.responses import ResponseCancelView
from agents_app.metrics import metrics_view

# The reference server's paths (DESIGN section 9), same auth as the rest of the API.
reference_urls = []
for slug in ("chat", "assistant"):
    reference_urls += [
        path(f"{slug}/run", agent_views.AgentRunView.as_view(), {"slug": slug}, name=f"ref-{slug}-run"),
        path(f"{slug}/info", agent_views.AgentInfoView.as_view(), {"slug": slug}, name=f"ref-{slug}-info"),
        path(
            f"{slug}/session/<str:session_id>",
            agent_views.SessionHistoryView.as_view(),
            {"slug": slug},
            name=f"ref-{slug}-session",
        ),
    ]

# Swagger UI and ReDoc (served from this server by drf-spectacular-sidecar) set styles inline, and
# ReDoc runs a blob: worker; the rest of the site allows neither. Scripts: this server's files only
# (Swagger's split view serves its start script; ReDoc's: templates/drf_spectacular/redoc.html).
docs_csp = csp_update({"style-src": [SELF, UNSAFE_INLINE], "worker-src": [SELF, "blob:"]})

urlpatterns = [
    # Before the admin's own paths: the staff's decisions on pending tool calls (an async view).
    path("admin/approvals/decide", decide_view, name="admin-approval-decide"),
    path("admin/", admin.site.urls),
    # Log in and out, and change one's password. No password reset by email: this server sends no
    # email; staff set passwords in the admin (docs/web.md).
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path(
        "accounts/password_change/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("api/", include("agents_app.api.urls")),
    path("api/", include("tokens_app.urls")),
    path("v1/models", ModelListView.as_view(), name="v1-models"),
    path("v1/models/<str:model>", ModelDetailView.as_view(), name="v1-model"),
    path("v1/responses/<str:response_id>/cancel", ResponseCancelView.as_view(), name="v1-response-cancel"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs", docs_csp(SpectacularSwaggerSplitView.as_view(url_name="schema")), name="docs"),
    path("redoc", docs_csp(SpectacularRedocView.as_view(url_name="schema")), name="redoc"),
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    path("metrics", metrics_view, name="metrics"),
    path("", include("agents_app.web.urls")),
    path("", include("research_app.urls")),
    *reference_urls,
]

handler404 = "agents_app.api.rest.not_found"
handler500 = "agents_app.api.rest.server_error"
