"""The web app's pages: chat (with the read-only replay of a run), pending approvals and account.
Data comes from the API."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST

from tokens_app.forms import TokenForm
from tokens_app.models import TooManyTokens, token_create, token_revoke, tokens_of

from .. import providers
from ..models import Approval, Run
from ..registry import all_specs
from ..selectors import approvals_for, conversations_for, run_events_after, runs_for
from ..transcript import turns_of


def chat_agents() -> list[dict]:
    """The agents a conversation can be held with (the research agent has its own page)."""
    info = providers.provider_info()  # only what /api/agents/ shows too: not the provider's base URL
    return [
        {"slug": s.slug, "title": s.title, "provider": info["provider"], "model": info["model"]}
        for s in all_specs()
        if s.uses_memory
    ]


@login_required
def chat(request, conversation_id=None):
    conversation = None
    if conversation_id is not None:
        conversation = get_object_or_404(conversations_for(request.user), pk=conversation_id)
    agents = chat_agents()
    config = {
        "agents": agents,
        "conversation": conversation
        and {"id": str(conversation.pk), "agent": conversation.agent, "title": conversation.title},
    }
    return render(request, "web/chat.html", {"nav": "chat", "agents": agents, "config": config})


@login_required
def approvals(request):
    """The caller's tool calls that wait for a decision, each with its conversation (decided there)."""
    pending = approvals_for(request.user).filter(status=Approval.Status.PENDING).select_related("run")
    context = {"nav": "approvals", "approvals": pending.order_by("-created_at")}
    return render(request, "web/approvals.html", context)


def approvals_waiting(request) -> dict:
    """Context processor: the count of the user's pending approvals, for the header of every page
    (a callable: counted only by a template that shows it)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"approvals_waiting": lambda: approvals_for(user).filter(status=Approval.Status.PENDING).count()}


@login_required
def run_replay(request, pk):
    """One run, replayed from its stored events: its owner's, or any run for staff who may view runs."""
    runs = Run.objects.all() if request.user.has_perm("agents_app.view_run") else runs_for(request.user)
    run = get_object_or_404(runs, pk=pk)
    events = [
        {**data, "at": created.timestamp()}
        for data, created in run_events_after(run).values_list("data", "created_at")
    ]
    config = {"turn": turns_of([run])[0], "events": events}
    return render(request, "web/replay.html", {"nav": "chat", "run": run, "config": config})


@login_required
def account(request):
    return _account(request)


@require_POST
@login_required
def token_new(request):
    """A new API key, shown on this page once."""
    form = TokenForm(request.POST)
    if form.is_valid():
        try:
            _token, key = token_create(request.user, form.cleaned_data["name"], form.expires_at())
        except TooManyTokens as exc:
            form.add_error(None, str(exc))
        else:
            return _account(request, new_key=key)
    return _account(request, form=form, status=400)


@require_POST
@login_required
def token_delete(request, pk):
    token = get_object_or_404(tokens_of(request.user), pk=pk)
    token_revoke(token)
    return _account(request, revoked=token)


def _account(request, new_key: str | None = None, revoked=None, form=None, status=200):
    context = {
        "nav": "account",
        "tokens": tokens_of(request.user),
        "form": form or TokenForm(),
        "new_key": new_key,
        "revoked": revoked,
        "base_url": request.build_absolute_uri("/").rstrip("/"),
    }
    return render(request, "web/account.html", context, status=status)
