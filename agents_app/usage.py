"""Usage and quotas: every run's usage summed per user, day (UTC) and agent as the run ends, and
a daily token quota per user (AGENTS_DAILY_TOKEN_QUOTA, or the user's own `UserQuota`) that
refuses new runs once reached, until the day ends. A run counts as a reservation
(AGENTS_RUN_TOKEN_RESERVATION) while it is active and as its usage once it ends, so runs started
together cannot all slip under the quota. A run that crosses the quota finishes; the next start
is refused."""

import datetime as dt

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Sum

from .errors import ServiceError
from .models import Run, UsageDay, UserQuota

COUNTERS = ("requests", "input_tokens", "output_tokens", "total_tokens")


class QuotaExceeded(ServiceError):
    status = 429
    code = "quota_exceeded"

    def __init__(self, message: str, resets_at: dt.datetime, now: dt.datetime) -> None:
        super().__init__(message, resets_at=resets_at.isoformat().replace("+00:00", "Z"))
        self.retry_after = max(1, int((resets_at - now).total_seconds()) + 1)


def usage_record(user_id: int, agent: str, usage: dict, now: dt.datetime) -> None:
    """Add one ended run's usage to its user's day (in the transaction that ends the run)."""
    counts = {"runs": 1, **{name: usage.get(name, 0) for name in COUNTERS}}
    day = now.astimezone(dt.UTC).date()
    rows = UsageDay.objects.filter(user_id=user_id, day=day, agent=agent)
    if rows.update(**{name: F(name) + value for name, value in counts.items()}):
        return
    try:
        with transaction.atomic():  # a savepoint: the run's end goes on if another run created the row
            UsageDay.objects.create(user_id=user_id, day=day, agent=agent, **counts)
    except IntegrityError:
        rows.update(**{name: F(name) + value for name, value in counts.items()})


def daily_quota(user_id: int) -> int:
    """The user's daily token quota; 0: none."""
    own = UserQuota.objects.filter(user_id=user_id).values_list("daily_tokens", flat=True).first()
    return settings.AGENTS_DAILY_TOKEN_QUOTA if own is None else own


def tokens_used(user_id: int, day: dt.date) -> int:
    return UsageDay.objects.filter(user_id=user_id, day=day).aggregate(used=Sum("total_tokens"))["used"] or 0


def quota_reservation(user_id: int, quota: int, now: dt.datetime) -> int:
    """The tokens a new run of the user reserves under their `quota` (`daily_quota`), or
    QuotaExceeded when today's usage (UTC) and the reservations of their active runs reach it.
    Called with the user's starts serialized (runs/start.py locks the user's row), so parallel
    starts can take the user at most one reservation past the quota."""
    today = now.astimezone(dt.UTC).date()
    # Reservations before usage: a run that ends between the two reads (its usage is recorded
    # in the transaction that ends it) is then counted once or twice, never not at all, as it
    # would be in the other order under READ COMMITTED.
    active = Run.objects.filter(owner_id=user_id, status__in=Run.ACTIVE)
    reserved = active.aggregate(reserved=Sum("reserved_tokens"))["reserved"] or 0
    used = tokens_used(user_id, today)
    if used + reserved >= quota:
        resets_at = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        held = f" and your runs in progress hold {reserved} more" if reserved else ""
        raise QuotaExceeded(
            f"your runs used {used} of your {quota} tokens for today (UTC){held}; new runs start "
            f"again at {resets_at:%Y-%m-%d %H:%M} UTC",
            resets_at,
            now,
        )
    return settings.AGENTS_RUN_TOKEN_RESERVATION


def usage_report(user_id: int, start: dt.date, end: dt.date, agent: str | None = None) -> dict:
    """The user's usage from `start` to `end` (inclusive) by day and agent, and its total."""
    rows = UsageDay.objects.filter(user_id=user_id, day__gte=start, day__lte=end)
    if agent:
        rows = rows.filter(agent=agent)
    fields = ("runs", *COUNTERS)
    days = [
        {"day": row["day"].isoformat(), "agent": row["agent"], **{name: row[name] for name in fields}}
        for row in rows.order_by("day", "agent").values("day", "agent", *fields)
    ]
    total = {name: sum(day[name] for day in days) for name in fields}
    return {"from": start.isoformat(), "to": end.isoformat(), "agent": agent, "days": days, "total": total}
