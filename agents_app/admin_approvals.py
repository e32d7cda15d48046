"""Approvals in the admin: every tool call that waited for a person, and for staff, Approve and
Reject on the pending ones.

The list is a read-only ModelAdmin. A decision is posted to `decide_view`, an async view of its
own (admin actions are sync, and a decision goes through the run engine, which lives on the
event loop): it checks the caller is staff, decides as the REST endpoint does (surface `admin`)
and returns to the list with a message.
"""

import uuid

from django.contrib import admin, messages
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from .db import in_sync_thread
from .errors import ServiceError
from .models import Approval
from .runs.approvals import DECISIONS, check_decision, decide
from .runs.engine import get_engine


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):
    list_display = ["tool_name", "arguments", "run_link", "owner", "status", "created_at", "verdict"]
    list_display += ["decide"]
    list_filter = ["status", "tool_name", "surface"]
    list_select_related = ["run__owner", "decided_by"]
    search_fields = ["tool_name", "run__owner__username", "call_id"]
    date_hierarchy = "created_at"
    change_list_template = "admin/agents_app/approval/change_list.html"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # decided through the engine (below), never edited

    @admin.display(description="run")
    def run_link(self, obj: Approval) -> str:
        url = reverse("admin:agents_app_run_change", args=[obj.run_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.run_id)[:8])

    @admin.display(description="owner", ordering="run__owner__username")
    def owner(self, obj: Approval) -> str:
        return obj.run.owner.get_username()

    @admin.display(description="decided")
    def verdict(self, obj: Approval) -> str:
        if obj.status == Approval.Status.PENDING:
            return ""
        who = obj.decided_by.get_username() if obj.decided_by_id else "no one"
        return f"by {who} via {obj.surface or '?'}" + (f": {obj.reason}" if obj.reason else "")

    @admin.display(description="decide")
    def decide(self, obj: Approval) -> str:
        """Buttons of the one decision form of the page (`form=` attribute: the list's own form
        holds the admin actions, and forms do not nest)."""
        if obj.status != Approval.Status.PENDING:
            return ""
        return format_html(
            '<input form="decide-form" name="reason-{id}" placeholder="reason" aria-label="reason"'
            ' maxlength="2000">'
            ' <button form="decide-form" class="button" name="decision" value="approve:{id}">Approve</button>'
            ' <button form="decide-form" class="button" name="decision" value="reject:{id}">Reject</button>',
            id=obj.pk,
        )


@require_POST
async def decide_view(request):
    user = await request.auser()
    if not (user.is_active and user.is_staff):
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    decision, _, approval_id = request.POST.get("decision", "").partition(":")
    back = redirect(reverse("admin:agents_app_approval_changelist") + "?status__exact=pending")
    try:
        decision, reason, _always = check_decision(decision, request.POST.get(f"reason-{approval_id}"), False)
        approval = await in_sync_thread(Approval.objects.filter(pk=_uuid(approval_id)).first)()
        if approval is None:
            raise ServiceError(f"approval {approval_id} not found")
        run_id, executor = approval.run_id, get_engine().executor
        await decide(executor, run_id, approval.pk, decision, user=user, surface="admin", reason=reason)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return back
    messages.success(request, f"{approval.tool_name}: {DECISIONS[decision]}.")
    return back


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ServiceError(f"{value!r} is not an approval's id") from None
