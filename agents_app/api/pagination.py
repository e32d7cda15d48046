"""Pagination of every list: a page is at most `max_limit` items, and an offset is a number a
database can take (a 20-digit offset was a 500: `bigint out of range` on PostgreSQL). A limit or
offset that is not such a number is a 400 naming it, not a silent first page (DRF's default); a
limit past `max_limit` gives `max_limit` items, as DRF does. The schema states the bounds."""

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

from .errors import CURSOR_MAX, cursor

MAX_OFFSET = 1_000_000_000


class Pagination(LimitOffsetPagination):
    max_limit = 500

    def get_limit(self, request):
        limit = self.bounded(request, self.limit_query_param, 1, CURSOR_MAX)
        return min(limit, self.max_limit) if limit else self.default_limit

    def get_offset(self, request):
        return self.bounded(request, self.offset_query_param, 0, MAX_OFFSET) or 0

    @staticmethod
    def bounded(request, name: str, low: int, high: int) -> int | None:
        raw = request.query_params.get(name)
        if raw is None:
            return None
        value = cursor(raw)
        if value is None or not low <= value <= high:
            raise ValidationError({name: [f"must be an integer from {low} to {high}"]})
        return value

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["schema"].update(minimum=1, maximum=CURSOR_MAX)
                parameter["description"] = (
                    f"Items per page, at most {self.max_limit} (a larger limit gives that many)."
                )
            else:
                parameter["schema"].update(minimum=0, maximum=MAX_OFFSET)
        return parameters


def page_of(items: dict) -> dict:
    """The schema of a page of `items` (a schema), where the items have no serializer."""
    link = {"type": "string", "format": "uri", "nullable": True}
    return {
        "type": "object",
        "properties": {
            "count": {"type": "integer"},
            "next": link,
            "previous": link,
            "results": {"type": "array", "items": items},
        },
        "required": ["count", "next", "previous", "results"],
    }


def paginated(name: str, serializer: serializers.Serializer) -> serializers.Serializer:
    """The schema of a page of `serializer` items, for a view that paginates by hand."""
    return inline_serializer(
        name,
        fields={
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer,
        },
    )
