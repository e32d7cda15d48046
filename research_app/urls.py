"""Research routes; mounted at the site root so the reference `POST /research` keeps its path."""

from django.urls import path

from . import pages, views

urlpatterns = [
    path("api/research/", views.ResearchCollectionView.as_view(), name="research-list"),
    path("api/research/documents/", views.DocumentCollectionView.as_view(), name="research-documents"),
    path("api/research/<int:pk>/", views.ResearchReportDetailView.as_view(), name="research-detail"),
    path("research", views.ReferenceResearchView.as_view(), name="ref-research"),
    path("research/", pages.research, name="research-page"),
    path("research/<int:pk>/", pages.research, name="research-report-page"),
]
