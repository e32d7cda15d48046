"""GET /api/usage/: the caller's usage by day (UTC) and agent, its total, and today's quota.

Any range may be asked for: the answer lists the days that have usage only, so its size is
bounded by the caller's own history, not by the range; `from` after `to` is a range of no days."""

import datetime as dt

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from ..registry import slugs
from ..usage import daily_quota, tokens_used, usage_report
from .errors import choice_param

DEFAULT_DAYS = 30


def _date(params, name: str, default: dt.date) -> dt.date:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise ValidationError({name: ["must be a date, YYYY-MM-DD"]}) from None


class UsageView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("from", dt.date, description=f"first day (UTC); {DEFAULT_DAYS} days back"),
            OpenApiParameter("to", dt.date, description="last day, included; default: today"),
            OpenApiParameter("agent", str, enum=slugs()),
        ],
        responses={200: dict},
    )
    def get(self, request):
        params = request.query_params
        today = dt.datetime.now(dt.UTC).date()
        end = _date(params, "to", today)
        # By ordinal: `to=0001-01-01` minus 29 days is before the first date there is (no 500).
        start = _date(params, "from", dt.date.fromordinal(max(1, end.toordinal() - (DEFAULT_DAYS - 1))))
        agent = choice_param(params, "agent", slugs())
        report = usage_report(request.user.pk, start, end, agent)
        quota = daily_quota(request.user.pk)
        report["quota"] = {"daily_tokens": quota or None, "used_today": tokens_used(request.user.pk, today)}
        return Response(report)
