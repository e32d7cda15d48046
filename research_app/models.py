"""The documents corpus searched offline, and the stored research reports."""

from django.conf import settings
from django.db import models

from agents_app.models import Run


class Document(models.Model):
    """One text of the local corpus. Full-text indexes live outside the ORM (see search.py)."""

    title = models.CharField(max_length=300)
    body = models.TextField()
    # Where the text came from: a URL, a file path, or "corpus:<file>" for the demo corpus.
    source = models.CharField(max_length=500, blank=True, db_index=True)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # A document belongs to whoever added it: only its uploader lists, searches and researches it,
    # unless staff share it with every user (the demo corpus and `load_documents` are shared).
    shared = models.BooleanField(default=False, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class ResearchReport(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"
        INTERRUPTED = "interrupted"  # the server stopped, or the process running it died

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="research_report")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="research_reports"
    )
    query = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    # [{"query", "reason"}] as planned.
    plan = models.JSONField(default=list, blank=True)
    # [{"query", "reason", "status", "summary", "error", "sources": [{"title", "source", "snippet", ...}]}]
    search_results = models.JSONField(default=list, blank=True)
    # The distinct sources the searches returned, in citation order.
    sources = models.JSONField(default=list, blank=True)
    short_summary = models.TextField(blank=True)
    markdown_report = models.TextField(blank=True)
    follow_up_questions = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    trace_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        text = " ".join(self.query.split())
        return text[:80] + ("…" if len(text) > 80 else "")
