"""The settings of the agents, their runs and streams (imported by config/settings.py): the model
provider, traces, limits and quotas, the run engine's timings, research, streams, retention."""

from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_float, env_int, env_str

OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")
AGENTS_MODEL_PROVIDER = env_str("AGENTS_MODEL_PROVIDER")
if AGENTS_MODEL_PROVIDER and AGENTS_MODEL_PROVIDER not in ("offline", "openai"):
    raise ImproperlyConfigured(
        f"AGENTS_MODEL_PROVIDER must be 'offline' or 'openai', got {AGENTS_MODEL_PROVIDER!r}"
    )
AGENTS_DEFAULT_MODEL = env_str("AGENTS_DEFAULT_MODEL")
# Responses API unless OPENAI_BASE_URL is set (then Chat Completions); true/false forces one.
OPENAI_USE_RESPONSES = env_bool("OPENAI_USE_RESPONSES", None)
# Upstream connections per process (one per concurrently streaming run).
OPENAI_MAX_CONNECTIONS = env_int("OPENAI_MAX_CONNECTIONS", 10_000)
# Seconds an upstream request may wait at any step (connect, send, read; openai's default is
# 600); the longest silence between two streamed chunks (at most OPENAI_TIMEOUT; a stalled
# upstream ends the run `model_unavailable`); how often a refused or failed request is retried
# before its answer began (408, 409, 429, 5xx, connection errors; openai's default is 2); and
# the longest wait for the answer to begin, all tries and their waits together (a Retry-After
# that would end past it is not waited for: agents_app/providers/upstream.py).
OPENAI_TIMEOUT = env_float("OPENAI_TIMEOUT", 600.0)
OPENAI_STREAM_IDLE_TIMEOUT = env_float("OPENAI_STREAM_IDLE_TIMEOUT", 120.0)
OPENAI_MAX_RETRIES = env_int("OPENAI_MAX_RETRIES", 2)
OPENAI_FIRST_BYTE_TIMEOUT = env_float("OPENAI_FIRST_BYTE_TIMEOUT", 60.0)
# Build streamed upstream events with pydantic's validator rather than openai's slower
# `construct` (same objects; openai's way for any event it fails on, and always with an openai
# version it was not tested with: agents_app/providers/fast_events.py).
OPENAI_FAST_EVENTS = env_bool("OPENAI_FAST_EVENTS", True)
# Seconds the offline model waits between streamed deltas (0 in tests).
OFFLINE_MODEL_DELAY = env_float("OFFLINE_MODEL_DELAY", 0.02)
# Every run's Agents SDK trace (its agents, model calls, tools, handoffs, guardrails) stored in
# this database (traces_app), written in batches every AGENTS_TRACE_FLUSH_INTERVAL seconds (the
# SDK's default; at 1 s the batches' transactions cost 8 % of the streams/s, docs/performance.md),
# each value of a span's data cut at AGENTS_TRACE_MAX_FIELD_CHARS characters.
AGENTS_TRACES = env_bool("AGENTS_TRACES", True)
AGENTS_TRACE_FLUSH_INTERVAL = env_float("AGENTS_TRACE_FLUSH_INTERVAL", 5.0)
AGENTS_TRACE_MAX_FIELD_CHARS = env_int("AGENTS_TRACE_MAX_FIELD_CHARS", 2000)
# SDK trace export sends run data to OpenAI; only when asked for.
AGENTS_TRACE_EXPORT = env_bool("AGENTS_TRACE_EXPORT", False)
# Largest accepted run input, in characters.
AGENTS_MAX_INPUT_CHARS = env_int("AGENTS_MAX_INPUT_CHARS", 32_000)
# Most runs one user may have queued or running at once, across processes (a start beyond it
# gets 429 too_many_runs). 0: no limit.
AGENTS_MAX_ACTIVE_RUNS_PER_USER = env_int("AGENTS_MAX_ACTIVE_RUNS_PER_USER", 0)
# Tokens one user's runs may use per day (UTC), all agents together; 0: no limit. Staff set a
# user's own quota in the admin (Token quotas). A run over it is refused with 429 quota_exceeded.
AGENTS_DAILY_TOKEN_QUOTA = env_int("AGENTS_DAILY_TOKEN_QUOTA", 0)
# Under a quota, each run counts as this many tokens from its start until it ends (then its real
# usage counts): runs started at the same moment cannot all slip under the quota.
AGENTS_RUN_TOKEN_RESERVATION = env_int("AGENTS_RUN_TOKEN_RESERVATION", 4_000)
# What a run sends the model of its conversation's memory: the last items up to these bounds
# (tokens estimated as 4 characters each; 0: no bound), starting at a user message so a turn is
# never cut in two. The whole history stays stored and visible.
AGENTS_MEMORY_MAX_ITEMS = env_int("AGENTS_MEMORY_MAX_ITEMS", 200)
AGENTS_MEMORY_MAX_TOKENS = env_int("AGENTS_MEMORY_MAX_TOKENS", 0)
# Seconds a run may take once started (queued time not counted); past it the run ends `failed`
# with code `run_timeout`, keeping what it produced. 0: no limit.
AGENTS_RUN_TIMEOUT = env_float("AGENTS_RUN_TIMEOUT", 1800.0)
# Most model turns a run may take (each tool call or handoff costs one; the SDK's default is
# 10): past it the run ends `failed`, code `max_turns_exceeded`.
AGENTS_MAX_TURNS = env_int("AGENTS_MAX_TURNS", 10)
# Seconds a tool call may wait for a person's approval (docs/approvals.md); past it the call is
# rejected (reason `expired`) and the run goes on. Checked with the stale sweep (RUN_SWEEP_INTERVAL).
AGENTS_APPROVAL_TIMEOUT = env_float("AGENTS_APPROVAL_TIMEOUT", 86400.0)
# Most input items (messages, tool calls...) one request may send, besides AGENTS_MAX_INPUT_CHARS.
AGENTS_MAX_INPUT_ITEMS = env_int("AGENTS_MAX_INPUT_ITEMS", 200)
# Event persistence batching: flush after this many events or this many seconds.
RUN_EVENT_BATCH_SIZE = env_int("RUN_EVENT_BATCH_SIZE", 64)
RUN_EVENT_FLUSH_INTERVAL = env_float("RUN_EVENT_FLUSH_INTERVAL", 0.01)
# How long the executor keeps retrying a run's event and end writes while the database is
# unavailable (restart, failover, SQLite lock) before it gives up on them, in seconds.
RUN_DB_RETRY_SECONDS = env_float("RUN_DB_RETRY_SECONDS", 60.0)
# When the serving process stops (SIGTERM to daphne, ASGI lifespan shutdown elsewhere), its runs
# get this many seconds to finish; the others are recorded as interrupted at once.
RUN_SHUTDOWN_GRACE = env_float("RUN_SHUTDOWN_GRACE", 5.0)
# Under load the event loop's thread holds the GIL nearly all the time, and Django's sync thread
# (auth, run rows) and the event writer need it back after every database round trip: with
# Python's default 5 ms switch interval that wait dominated each request's database work.
# Seconds; config/asgi.py applies it to the serving process. 0 leaves Python's default.
GIL_SWITCH_INTERVAL = env_float("GIL_SWITCH_INTERVAL", 0.0002)
# Allocations between young-generation garbage collections in the serving process (Python's
# default is 700). A run's objects live for a second or so: with 700 the collector scanned them
# ~35 times a second at C=50 and promoted many to older generations before they died. 0 leaves
# Python's default.
GC_GEN0_THRESHOLD = env_int("GC_GEN0_THRESHOLD", 20_000)
# Every process beats for its runs every RUN_HEARTBEAT_INTERVAL seconds; a running run whose
# heartbeat is older than RUN_STALE_AFTER is taken for dead (its process was killed), and every
# process looks for such runs every RUN_SWEEP_INTERVAL seconds: a dead process's runs end
# `interrupted` within RUN_STALE_AFTER + RUN_SWEEP_INTERVAL (15 s by default).
RUN_HEARTBEAT_INTERVAL = env_float("RUN_HEARTBEAT_INTERVAL", 3.0)
RUN_STALE_AFTER = env_float("RUN_STALE_AFTER", 10.0)
RUN_SWEEP_INTERVAL = env_float("RUN_SWEEP_INTERVAL", 5.0)
# Where runs execute: "in-process" (in the process that accepted the start: the default, and
# the only mode on SQLite) or "worker" (PostgreSQL: `manage.py run_worker` processes take runs from
# the database's job queue, procrastinate's; web processes accept, stream, replay and cancel).
RUN_EXECUTION = env_str("RUN_EXECUTION", "in-process")
if RUN_EXECUTION not in ("in-process", "worker"):
    raise ImproperlyConfigured(f"RUN_EXECUTION must be 'in-process' or 'worker', got {RUN_EXECUTION!r}")
# Runs one worker process executes at once (a run mostly waits on the model: they are cheap).
WORKER_CONCURRENCY = env_int("WORKER_CONCURRENCY", 100)
# Seconds between a worker's looks for jobs it was not notified of (a run freed by its
# conversation's previous run, a retried one); new runs are notified at once.
WORKER_POLL_INTERVAL = env_float("WORKER_POLL_INTERVAL", 0.5)
# A worker whose heartbeat in the job queue is older than this is taken for dead (SIGKILL, a lost
# machine): another worker takes its runs over, each from its last checkpoint (a turn boundary).
RUN_WORKER_DEAD_AFTER = env_float("RUN_WORKER_DEAD_AFTER", 30.0)
# Takeovers a run survives; one more and it ends `failed` with code `interrupted`.
RUN_MAX_RESTARTS = env_int("RUN_MAX_RESTARTS", 2)
# A cancel of a run of another process waits this long for that process to answer (through the
# channel layer); one that does not is taken for dead, and the run ends `cancelled` at once.
RUN_OWNER_TIMEOUT = env_float("RUN_OWNER_TIMEOUT", 1.0)
# Research pipeline (research_app): plan size, parallel searches, hits per search, limits.
RESEARCH_MAX_SEARCHES = env_int("RESEARCH_MAX_SEARCHES", 5)
RESEARCH_SEARCH_CONCURRENCY = env_int("RESEARCH_SEARCH_CONCURRENCY", 3)
RESEARCH_SEARCH_RESULTS = env_int("RESEARCH_SEARCH_RESULTS", 5)
RESEARCH_SEARCH_TIMEOUT = env_float("RESEARCH_SEARCH_TIMEOUT", 120.0)
# auto: the hosted web search with OpenAI's Responses API, the local corpus otherwise; or local / web.
RESEARCH_SEARCH_BACKEND = env_str("RESEARCH_SEARCH_BACKEND", "auto")
if RESEARCH_SEARCH_BACKEND not in ("auto", "local", "web"):
    raise ImproperlyConfigured(
        f"RESEARCH_SEARCH_BACKEND must be auto, local or web, got {RESEARCH_SEARCH_BACKEND!r}"
    )
RESEARCH_MAX_QUERY_CHARS = env_int("RESEARCH_MAX_QUERY_CHARS", 2000)
RESEARCH_MAX_DOCUMENT_BYTES = env_int("RESEARCH_MAX_DOCUMENT_BYTES", 512 * 1024)
SSE_KEEPALIVE_INTERVAL = env_float("SSE_KEEPALIVE_INTERVAL", 15.0)
# Most streams (SSE responses and sockets) one process holds open; past it a new one gets 503
# with Retry-After (a socket: close code 4503) and the load balancer can try another process.
# 0: no cap.
MAX_OPEN_STREAMS = env_int("MAX_OPEN_STREAMS", 10_000)
# Retention (`manage.py prune`, docs/retention.md), in days; 0 keeps for ever. Stream events of
# finished runs (their summary and terminal event stay), traces, and conversations left idle
# (deleted with their runs; off by default).
RETAIN_RUN_EVENTS_DAYS = env_int("RETAIN_RUN_EVENTS_DAYS", 30)
RETAIN_TRACES_DAYS = env_int("RETAIN_TRACES_DAYS", 30)
RETAIN_IDLE_CONVERSATIONS_DAYS = env_int("RETAIN_IDLE_CONVERSATIONS_DAYS", 0)
# JSON in a request body or a socket message nested deeper than this is a 400 (agents_app/text.py).
JSON_MAX_DEPTH = env_int("JSON_MAX_DEPTH", 64)
SSE_RETRY_MS = env_int("SSE_RETRY_MS", 2000)
