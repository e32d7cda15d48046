"""Conversations, their memory items, runs and the stored event stream of each run."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Case, Q, Value, When


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    agent = models.CharField(max_length=64)
    # Client-chosen name of the conversation (the reference API's `session_id`).
    session_key = models.CharField(max_length=128, null=True, blank=True)
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "agent", "session_key"], name="conversation_session_key_unique"
            )
        ]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or f"{self.agent} conversation {str(self.id)[:8]}"


class ConversationItem(models.Model):
    """One SDK input item (message, tool call, tool output...) of a conversation's memory."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="items")
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.data.get('type') or self.data.get('role') or 'item'} #{self.pk}"


class RunQuerySet(models.QuerySet):
    def active(self):
        """The active runs, in the order a conversation takes them: the running one first, then
        the queued ones in the order they came."""
        current = Case(When(status__in=Run.CURRENT, then=Value(0)), default=Value(1))
        return self.filter(status__in=Run.ACTIVE).order_by(current, "created_at", "pk")


class Run(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"  # waits for its conversation's earlier runs (`if_busy=enqueue`)
        RUNNING = "running"
        # Paused on tool calls that need a person's decision (`Approval`); no process runs it.
        AWAITING_APPROVAL = "awaiting_approval"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"
        INTERRUPTED = "interrupted"

    # Not ended: the run's stream goes on and its conversation is busy.
    ACTIVE = (Status.QUEUED, Status.RUNNING, Status.AWAITING_APPROVAL)
    # Held by a process (heartbeats, the stale sweep, the per-user cap of running runs).
    EXECUTING = (Status.QUEUED, Status.RUNNING)
    # A conversation's current run: the one that runs, or waits for approval.
    CURRENT = (Status.RUNNING, Status.AWAITING_APPROVAL)
    # The `worker_channel` of a run that waits for a worker to take its job (not a channel's name:
    # the channel layer refuses to send to it).
    UNCLAIMED = "(unclaimed)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="runs")
    agent = models.CharField(max_length=64, db_index=True)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="runs", null=True, blank=True
    )
    input = models.JSONField()
    context = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.QUEUED, db_index=True)
    final_output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    provider = models.CharField(max_length=32, blank=True)
    model = models.CharField(max_length=128, blank=True)
    response_id = models.CharField(max_length=128, blank=True)
    requests = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    current_turn = models.PositiveIntegerField(default=0)
    last_seq = models.PositiveIntegerField(default=0)
    # Worker mode: how many times another worker took the run over from a dead (or stopping) one.
    restarts = models.PositiveSmallIntegerField(default=0)
    on_disconnect = models.CharField(max_length=16, default="continue")
    # Options of the request that started the run: `events` ("full": every raw model event is
    # journalled, as the reference server streams them), and what a protocol adapter keeps to
    # answer later reads in its own terms (`background`, `metadata`...).
    options = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Which executor owns the run: the channel-layer channel it listens on for control.
    worker_channel = models.CharField(max_length=200, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_mode = models.CharField(max_length=16, blank=True)
    # Under a daily token quota: the tokens this run counts as while it is active
    # (AGENTS_RUN_TOKEN_RESERVATION); once it ends, its usage counts instead.
    reserved_tokens = models.PositiveIntegerField(default=0)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One running run per conversation, enforced by the database itself (any number may
            # wait their turn, `queued`).
            models.UniqueConstraint(
                fields=["conversation"],
                condition=Q(status="running"),
                name="one_running_run_per_conversation",
            )
        ]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.agent} run {str(self.id)[:8]} ({self.status})"

    @staticmethod
    def beat_before(cutoff) -> Q:
        """Runs whose last heartbeat (or, before their first, their creation) is older than `cutoff`."""
        return Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)

    @staticmethod
    def unclaimed() -> Q:
        """Runs no process holds yet (RUN_EXECUTION=worker: accepted, or decided after a pause,
        waiting for a worker to take them): no heartbeat is kept for them, and none is missed."""
        return Q(worker_channel=Run.UNCLAIMED, status__in=Run.EXECUTING)

    @property
    def is_claimed(self) -> bool:
        return self.worker_channel != self.UNCLAIMED or self.status not in self.EXECUTING

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def duration(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    @property
    def trace_id(self) -> str:
        """The id of the run's Agents SDK trace (traces_app stores it)."""
        return f"trace_{self.pk.hex}"

    @property
    def usage(self) -> dict:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }


class RunEvent(models.Model):
    # No index of its own: the unique (run, seq) index serves every lookup by run, and one index
    # fewer per row is measurably cheaper at thousands of inserted events per second.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events", db_index=False)
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=32)
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="run_event_seq_unique")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.type}"


class RunPause(models.Model):
    """Where a run goes on from, in any process: the SDK's `RunState` as its public serialisation
    (`RunState.to_json`) gives it. Written with the run's `approval_required` event (a pause), or
    at a turn boundary in worker mode (a checkpoint, from which another worker restarts the run
    if its worker dies); each replaces the one before."""

    class Kind(models.TextChoices):
        PAUSE = "pause"  # waits for decisions on its tool calls
        TURN = "turn"  # a checkpoint: the turns before `turn` are done

    run = models.OneToOneField(Run, on_delete=models.CASCADE, primary_key=True, related_name="pause")
    state = models.JSONField()
    paused_at = models.DateTimeField()
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.PAUSE)
    turn = models.PositiveIntegerField(default=0)  # a checkpoint's: the turn that comes next
    seq = models.PositiveIntegerField(default=0)  # the run's events the state covers
    # A checkpoint's: the conversation items the run added so far (written at its end).
    memory = models.JSONField(default=list)

    def __str__(self) -> str:
        return f"pause of run {str(self.run_id)[:8]}"


class Approval(models.Model):
    """One tool call of a paused run that waits for (or got) a person's decision."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="approvals")
    call_id = models.CharField(max_length=128)
    tool_name = models.CharField(max_length=128)
    agent_name = models.CharField(max_length=128)
    arguments = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    # Approve this tool for the rest of the run (the SDK's `always_approve`).
    always = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Where the decision came from: rest, websocket, admin, ai_sdk, ag_ui, expiry, interrupt.
    surface = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "call_id"]
        constraints = [models.UniqueConstraint(fields=["run", "call_id"], name="approval_call_unique")]

    def __str__(self) -> str:
        return f"{self.tool_name} of run {str(self.run_id)[:8]} ({self.status})"


class UsageDay(models.Model):
    """A user's usage of one agent on one day (UTC): runs ended, model requests and tokens. The
    journal adds each run's usage in the transaction that ends it (agents_app/usage.py)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_days")
    day = models.DateField()
    agent = models.CharField(max_length=64)
    runs = models.PositiveIntegerField(default=0)
    requests = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-day", "agent"]
        verbose_name = "usage by day"
        verbose_name_plural = "usage by day"
        constraints = [models.UniqueConstraint(fields=["user", "day", "agent"], name="usage_day_unique")]

    def __str__(self) -> str:
        return f"{self.user_id} {self.day} {self.agent}"


class UserQuota(models.Model):
    """A user's own daily token quota, instead of AGENTS_DAILY_TOKEN_QUOTA."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota")
    daily_tokens = models.PositiveBigIntegerField(
        help_text="Tokens this user's runs may use per day (UTC); 0: no limit."
    )

    class Meta:
        verbose_name = "token quota"

    def __str__(self) -> str:
        return f"{self.user}: {self.daily_tokens or 'no limit'}"
