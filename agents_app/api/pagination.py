"""Pagination of every list: a page is at most `max_limit` items, and an offset is a number a
database can take (a 20-digit offset was a 500: `bigint out of range` on PostgreSQL)."""

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

MAX_OFFSET = 1_000_000_000


class Pagination(LimitOffsetPagination):
    max_limit = 500

    def get_offset(self, request):
        offset = super().get_offset(request)
        if offset > MAX_OFFSET:
            raise ValidationError({self.offset_query_param: [f"must be at most {MAX_OFFSET}"]})
        return offset


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
