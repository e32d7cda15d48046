"""Research API: start research, read reports, add and search documents, and the reference `/research`."""

from adrf.views import APIView as AsyncAPIView
from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from agents_app.api.errors import CURSOR_MAX, choice_param, error_body
from agents_app.api.pagination import MAX_OFFSET, Pagination, page_of, paginated
from agents_app.api.parsers import CleanJSONParser
from agents_app.api.throttles import RunStartThrottle
from agents_app.db import in_sync_thread
from agents_app.errors import NotFound
from agents_app.runs.errors import UPSTREAM_ERROR_CODES
from agents_app.runs.read import RunFollower
from agents_app.text import NOT_BLANK

from . import services
from .models import ResearchReport
from .search import documents_search
from .selectors import documents_for, reports_for
from .serializers import (
    DocumentInputSerializer,
    DocumentSerializer,
    ResearchReportListSerializer,
    ResearchReportSerializer,
)

# A multipart upload's `shared` form field: the text of a boolean.
SHARED_FIELD = serializers.ChoiceField(choices=["true", "false"])
UPLOAD = {
    "type": "object",
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "A .md or .txt file (UTF-8)."},
        "title": {"type": "string", "maxLength": 300, "description": "Default: its first heading."},
        "source": {"type": "string", "maxLength": 500, "description": "Default: the file's name."},
        "shared": {"type": "string", "enum": ["true", "false"], "description": "Staff only."},
    },
    "required": ["file"],
}
# Multipart framing and JSON escaping add to the document's own size.
UPLOAD_OVERHEAD = 64 * 1024


def query_schema() -> dict:
    """A research question as the services take it (`query_validate`)."""
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": settings.RESEARCH_MAX_QUERY_CHARS,
        "pattern": NOT_BLANK,
    }


RESEARCH_REQUEST = {"type": "object", "properties": {"query": query_schema()}, "required": ["query"]}
# The reference server's clients may name the question `input`.
RESEARCH_REQUEST_INPUT = {
    "type": "object",
    "properties": {"input": query_schema(), "query": {"not": {}}},
    "required": ["input"],
}


def _request_query(request) -> str:
    data = request.data if isinstance(request.data, dict) else {}
    query = request.query_params.get("query", data.get("query", data.get("input")))
    return services.query_validate(query)


def _links(report: ResearchReport) -> dict:
    run_id = report.run_id
    return {
        "run_id": str(run_id),
        "report_id": report.pk,
        "status": report.status,
        "query": report.query,
        "report_url": f"/api/research/{report.pk}/",
        "stream_url": f"/api/runs/{run_id}/stream",
        "events_url": f"/api/runs/{run_id}/events",
        "cancel_url": f"/api/runs/{run_id}/cancel",
        "websocket_url": "/ws/agents/research/",
    }


class ResearchCollectionView(AsyncAPIView):
    """GET: the caller's reports. POST {"query"}: start a research run and return where to follow it."""

    def get_throttles(self):
        return [RunStartThrottle()] if self.request.method == "POST" else []

    @extend_schema(
        operation_id="api_research_list",
        parameters=[OpenApiParameter("status", str, enum=ResearchReport.Status.values)],
        responses={200: paginated("PaginatedResearchReportList", ResearchReportListSerializer(many=True))},
    )
    async def get(self, request):
        return await in_sync_thread(self._list)(request)

    def _list(self, request):
        reports = reports_for(request.user)
        status = choice_param(request.query_params, "status", ResearchReport.Status.values)
        if status:
            reports = reports.filter(status=status)
        paginator = Pagination()
        page = paginator.paginate_queryset(reports, request, view=self)
        return paginator.get_paginated_response(ResearchReportListSerializer(page, many=True).data)

    @extend_schema(
        request={"application/json": {"oneOf": [RESEARCH_REQUEST, RESEARCH_REQUEST_INPUT]}},
        responses={202: dict},
    )
    async def post(self, request):
        query = _request_query(request)
        _run, report = await services.research_start(user=request.user, query=query)
        return Response(_links(report), status=202)


class ResearchReportDetailView(generics.RetrieveAPIView):
    serializer_class = ResearchReportSerializer

    def get_queryset(self):
        return reports_for(self.request.user)

    def get_object(self):
        report = self.get_queryset().filter(pk=self.kwargs["pk"]).first()
        if report is None:
            raise NotFound(f"research report {self.kwargs['pk']} not found")
        return report


class ReferenceResearchView(AsyncAPIView):
    """The reference server's `POST /research?query=...`: waits for the report and returns it."""

    throttle_classes = [RunStartThrottle]

    @extend_schema(
        parameters=[OpenApiParameter("query", query_schema(), required=True)],
        request=None,
        responses={200: dict},
    )
    async def post(self, request):
        query = _request_query(request)
        follower = RunFollower()
        run, report = await services.research_start(
            user=request.user, query=query, on_disconnect="continue", reader=follower.inbox
        )
        # A client that goes away does not cancel the research (the report is still stored).
        run = await follower.wait(run, started=True)
        await in_sync_thread(report.refresh_from_db)()
        if report.status != ResearchReport.Status.COMPLETED:
            body = error_body(
                run.error_code or report.status,
                report.error or run.error or f"research {report.status}",
                report_id=report.pk,
                run_id=str(run.pk),
            )
            # As a run's REST answer: 502 when the model's provider failed, else 500.
            return Response(body, status=502 if run.error_code in UPSTREAM_ERROR_CODES else 500)
        return Response(
            {
                "short_summary": report.short_summary,
                "markdown_report": report.markdown_report,
                "follow_up_questions": report.follow_up_questions,
                "report_id": report.pk,
                "run_id": str(run.pk),
            }
        )


# A page of documents, or (with ?q=) the search's hits.
DOCUMENTS_OR_HITS = {
    "oneOf": [
        page_of({"$ref": "#/components/schemas/Document"}),
        {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "results": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["query", "results"],
        },
    ]
}


class DocumentCollectionView(APIView):
    """GET ?q=: search the corpus (or list it). POST: add a document, as JSON or a .md/.txt file upload."""

    parser_classes = [CleanJSONParser, MultiPartParser]

    @extend_schema(
        parameters=[
            OpenApiParameter("q", str, description="Search the corpus for these words (their best hits)."),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": CURSOR_MAX},
                description="Hits (at most 50) or documents per page (at most 500).",
            ),
            OpenApiParameter("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}),
        ],
        responses={200: DOCUMENTS_OR_HITS},
    )
    def get(self, request):
        q = request.query_params.get("q", "").strip()
        if q:
            services.query_validate(q)
            # Hits have no pages, but their limit and offset keep the pages' rules.
            limit = Pagination.bounded(request, "limit", 1, CURSOR_MAX) or 10
            Pagination.bounded(request, "offset", 0, MAX_OFFSET)
            hits = documents_search(q, min(limit, 50), request.user.pk)
            return Response({"query": q, "results": [hit.as_dict() for hit in hits]})
        paginator = Pagination()
        page = paginator.paginate_queryset(
            documents_for(request.user).order_by("title", "id"), request, view=self
        )
        return paginator.get_paginated_response(DocumentSerializer(page, many=True).data)

    @extend_schema(
        request={"application/json": DocumentInputSerializer, "multipart/form-data": UPLOAD},
        responses={201: DocumentSerializer},
    )
    def post(self, request):
        limit = settings.RESEARCH_MAX_DOCUMENT_BYTES
        # Refuse a huge body before reading it; the exact check happens on the decoded document.
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit + UPLOAD_OVERHEAD:
            raise services.DocumentTooLarge(
                f"request body is larger than the limit of {limit} bytes", max_bytes=limit
            )
        data = request.data  # a body over DATA_UPLOAD_MAX_MEMORY_SIZE is a 413 from the API error handler
        upload = request.FILES.get("file") if hasattr(request, "FILES") else None
        if upload is not None:
            if upload.size > limit:
                raise services.DocumentTooLarge(
                    f"file is {upload.size} bytes, more than the limit of {limit}", max_bytes=limit
                )
            title, body = services.document_from_file(upload.name, upload.read())
            title = data.get("title") or title
            source = data.get("source") or upload.name
            try:
                shared = SHARED_FIELD.run_validation(data.get("shared", "false")) == "true"
            except serializers.ValidationError as exc:
                raise ValidationError({"shared": exc.detail}) from None
        elif request.content_type.startswith("multipart/"):
            raise ValidationError({"file": ["a multipart upload needs its file (or send JSON)"]})
        else:
            if not isinstance(data, dict) or not data:
                raise ValidationError({"body": ["send JSON {title, body, source} or a multipart 'file'"]})
            serializer = DocumentInputSerializer(data=data)
            serializer.is_valid(raise_exception=True)
            title, body, source, shared = (
                serializer.validated_data[k] for k in ("title", "body", "source", "shared")
            )
        document = services.document_create(
            title=title, body=body, source=source, user=request.user, shared=shared
        )
        return Response(DocumentSerializer(document).data, status=201)
