"""Pagination of every list: a page is at most `max_limit` items, and an offset is a number a
database can take (a 20-digit offset was a 500: `bigint out of range` on PostgreSQL)."""

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
