from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from agents_app.api import rest as agent_views

# The reference server's paths (DESIGN section 9), same auth as the rest of the API.
reference_urls = []
for slug in ("chat", "assistant"):
    reference_urls += [
        path(f"{slug}/run", agent_views.AgentRunView.as_view(), {"slug": slug}, name=f"ref-{slug}-run"),
        path(f"{slug}/info", agent_views.AgentInfoView.as_view(), {"slug": slug}, name=f"ref-{slug}-info"),
    ]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include("agents_app.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("redoc", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("health", agent_views.health, name="health"),
    path("", agent_views.index, name="index"),
    path("", include("research_app.urls")),
    *reference_urls,
]

handler404 = "agents_app.api.rest.not_found"
handler500 = "agents_app.api.rest.server_error"
