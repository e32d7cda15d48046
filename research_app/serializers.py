"""Response shapes of the research API (requests are validated by the services)."""

from django.core.validators import RegexValidator
from rest_framework import serializers

from agents_app.api.serializers import Text
from agents_app.text import NOT_BLANK

from .models import Document, ResearchReport


class ResearchReportSerializer(serializers.ModelSerializer):
    run_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = ResearchReport
        fields = [
            "id",
            "run_id",
            "query",
            "status",
            "plan",
            "search_results",
            "sources",
            "short_summary",
            "markdown_report",
            "follow_up_questions",
            "error",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class ResearchReportListSerializer(ResearchReportSerializer):
    class Meta(ResearchReportSerializer.Meta):
        fields = ["id", "run_id", "query", "status", "short_summary", "created_at", "finished_at"]
        read_only_fields = fields


class DocumentSerializer(serializers.ModelSerializer):
    size = serializers.SerializerMethodField()

    class Meta:
        model = Document
        fields = ["id", "title", "source", "size", "shared", "created_at", "updated_at"]
        read_only_fields = fields

    def get_size(self, document: Document) -> int:
        return len(document.body.encode("utf-8"))


class StrictBoolean(serializers.BooleanField):
    """true or false, not DRF's "yes", 1 or "0" (JSON has booleans)."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class DocumentInputSerializer(serializers.Serializer):
    """JSON upload; sizes and emptiness are checked by `document_validate` so every path shares them."""

    title = Text(required=False, allow_blank=True, trim_whitespace=False, default="", max_length=300)
    body = Text(
        trim_whitespace=False,
        validators=[RegexValidator(NOT_BLANK, "must not be empty (or only white space)")],
    )
    source = Text(required=False, allow_blank=True, default="", max_length=500)
    # Staff only: every user lists, searches and researches the document.
    shared = StrictBoolean(required=False, default=False)
