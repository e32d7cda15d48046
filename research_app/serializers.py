"""Response shapes of the research API (requests are validated by the services)."""

from rest_framework import serializers

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


class DocumentInputSerializer(serializers.Serializer):
    """JSON upload; sizes and emptiness are checked by `document_validate` so every path shares them."""

    title = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, default="")
    body = serializers.CharField(allow_blank=True, trim_whitespace=False)
    source = serializers.CharField(required=False, allow_blank=True, default="")
    # Staff only: every user lists, searches and researches the document.
    shared = serializers.BooleanField(required=False, default=False)
