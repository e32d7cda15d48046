"""Agents SDK traces and spans, stored in this server's database (traces_app/exporter.py).

A run's trace has the id `Run.trace_id` (`trace_<run id in hex>`), and its metadata the run's id:
a run finds its trace and a trace its run without a constraint that an export racing the run's
deletion could break."""

from django.db import models


class Trace(models.Model):
    id = models.CharField(primary_key=True, max_length=64)
    workflow_name = models.CharField(max_length=200)
    group_id = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # The run it traces (no database constraint: spans may be exported after the run is deleted).
    run = models.ForeignKey(
        "agents_app.Run",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    # Over the spans stored so far (the exporter has the database compute them at each batch).
    started_at = models.DateTimeField(null=True, blank=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    span_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.workflow_name} ({self.id})"

    @property
    def duration_ms(self) -> int | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return round((self.ended_at - self.started_at).total_seconds() * 1000)


class Span(models.Model):
    id = models.CharField(primary_key=True, max_length=64)
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, db_constraint=False, related_name="spans")
    parent_id = models.CharField(max_length=64, blank=True)
    span_type = models.CharField(max_length=32)
    name = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)  # the span's data, long values cut
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]
        indexes = [models.Index(fields=["trace", "started_at"])]

    def __str__(self) -> str:
        return f"{self.span_type} {self.name}"
