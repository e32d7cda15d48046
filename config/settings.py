"""Django settings, read from the environment (and a `.env` file when present)."""

from pathlib import Path

import dj_database_url
from corsheaders.defaults import default_headers as default_cors_headers
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

from .env import env_bool, env_float, env_int, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
load_dotenv(BASE_DIR / ".env")


# Off unless turned on: `make demo` and the tests turn it on; a developer sets DEBUG=true (.env).
DEBUG = env_bool("DEBUG", False)

_INSECURE_KEY = "django-insecure-dev-key-change-me"
SECRET_KEY = env_str("SECRET_KEY") or _INSECURE_KEY
# A guessable key lets anyone forge sessions; refuse it outside development.
if not DEBUG and (
    SECRET_KEY == _INSECURE_KEY
    or SECRET_KEY.startswith("django-insecure")
    or len(SECRET_KEY) < 50
    or len(set(SECRET_KEY)) < 5
):
    raise ImproperlyConfigured(
        "SECRET_KEY is missing or weak; set a random value of 50+ characters when DEBUG is off "
        "(or DEBUG=true for development, as `make demo` does)"
    )

ALLOWED_HOSTS = [
    h.strip() for h in env_str("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()
]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in env_str("CSRF_TRUSTED_ORIGINS").split(",") if o.strip()]

# CORS (django-cors-headers): closed unless origins are configured; then those sites' pages may
# call the API paths (a preflight needs no credentials; the request itself still does).
CORS_ALLOWED_ORIGINS = [o.strip() for o in env_str("CORS_ALLOWED_ORIGINS").split(",") if o.strip()]
CORS_URLS_REGEX = r"^/(api/|v1/|chat/|assistant/|research|health)"
CORS_ALLOW_HEADERS = (*default_cors_headers, "last-event-id")
CORS_EXPOSE_HEADERS = ["Retry-After", "X-Run-Id"]

# --- production behind HTTPS (README "Production"; `check --deploy` passes with these) -------
# HTTPS=true: cookies only over HTTPS, plain HTTP redirected, browsers told to keep to HTTPS
# (HSTS for SECURE_HSTS_SECONDS, a year by default, subdomains included unless turned off;
# `preload` in the header, which puts no domain on the browsers' list by itself).
HTTPS = env_bool("HTTPS", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS)
# Load balancers probe over plain HTTP: the probes answer there instead of redirecting.
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$"]
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", HTTPS)
# Behind a proxy that terminates TLS: the header it sets, e.g. "HTTP_X_FORWARDED_PROTO=https".
# Set it only when the proxy always sets (or strips) that header.
if env_str("SECURE_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = tuple(env_str("SECURE_PROXY_SSL_HEADER").split("=", 1))

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "corsheaders",
    "axes",
    "agents_app",
    "research_app",
    "tokens_app",
    "traces_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "agents_app.logs.request_id_middleware",
    # Before anything that answers by itself, so preflights and refusals carry CORS headers.
    "corsheaders.middleware.CorsMiddleware",
    "agents_app.api.middleware.clean_query_middleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]

# Login attempts (the login page and the admin's) are limited by django-axes: after
# LOGIN_FAILURE_LIMIT failures for one account, or from one IP address, further attempts are
# refused for LOGIN_LOCKOUT_MINUTES, the right password too. Staff unlock in the admin (Axes >
# Access attempts) or with `manage.py axes_reset`.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = env_float("LOGIN_LOCKOUT_MINUTES", 15.0) / 60  # hours
# Locked out: an account from one address (the pair), so nobody can lock a known username for
# everyone, or every account behind a shared address (docs/web.md).
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Proxies in front of the server that append the client's address to X-Forwarded-For (0: clients
# connect directly). With N, the address N hops back in that header is the client's, for login
# lockouts and the rate limits of anonymous callers; the header is ignored otherwise (a client
# could write anything in it).
TRUSTED_PROXIES = env_int("TRUSTED_PROXIES", 0)
AXES_CLIENT_IP_CALLABLE = "agents_app.api.throttles.client_address"

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "agents_app.web.views.approvals_waiting",
            ],
        },
    },
]

(BASE_DIR / "var").mkdir(exist_ok=True)
DATABASE_URL = env_str("DATABASE_URL")
# PostgreSQL connections come from Django's pool (psycopg_pool), at most DB_POOL_MAX_SIZE per
# process: under ASGI every request runs in a thread of its own, and a connection kept per thread
# (CONN_MAX_AGE > 0) leaked until the database refused new clients. A request, a consumer's
# database hop and the event journal take a connection and give it back when done; a request
# beyond the pool waits up to DB_POOL_TIMEOUT seconds for one. 0 turns the pool off (behind
# pgbouncer, say), and DB_CONN_MAX_AGE then applies.
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 10)
DB_POOL_MIN_SIZE = env_int("DB_POOL_MIN_SIZE", 2)
DB_POOL_TIMEOUT = env_float("DB_POOL_TIMEOUT", 30.0)
# Seconds a connection is kept by the thread that opened it, where there is no pool (SQLite, or
# DB_POOL_MAX_SIZE=0): Channels closes "old" connections around every consumer message, and with 0
# SQLite re-opened its file (and ran its PRAGMAs) per request.
DB_CONN_MAX_AGE = env_int("DB_CONN_MAX_AGE", 300)
# SQLite: WAL lets readers run beside the writer; IMMEDIATE + timeout makes concurrent writers
# queue instead of failing with "database is locked".
SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=DB_CONN_MAX_AGE, conn_health_checks=True)
    if DATABASE_URL
    else {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": env_str("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
        "CONN_MAX_AGE": DB_CONN_MAX_AGE,
        "CONN_HEALTH_CHECKS": True,
        # A file, not shared-cache memory: concurrent async tests need real WAL locking.
        "TEST": {"NAME": env_str("SQLITE_TEST_PATH", str(BASE_DIR / "var" / "test.sqlite3"))},
    }
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(SQLITE_OPTIONS)
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DB_POOL_MAX_SIZE > 0:
    # A connection goes back to the pool after each use; the pool checks each one it hands out
    # (CONN_HEALTH_CHECKS) and replaces a dead one.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(DB_POOL_MIN_SIZE, DB_POOL_MAX_SIZE),
        "max_size": DB_POOL_MAX_SIZE,
        "timeout": DB_POOL_TIMEOUT,
    }

# The job queue of the worker tier (RUN_EXECUTION=worker): its tables are PostgreSQL's only.
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    INSTALLED_APPS.append("procrastinate.contrib.django")
PROCRASTINATE_IMPORT_PATHS = ["agents_app.runs.worker"]
PROCRASTINATE_AUTODISCOVER_MODULE_NAME = ""

REDIS_URL = env_str("REDIS_URL")
# Seconds a read from Redis may take. channels_redis waits for messages with a blocking pop of
# 5 s; redis-py's default read timeout is also 5 s, so every receive on a channel that stayed
# idle for 5 s failed with "Timeout reading from ..." (a consumer died mid-stream, the executor's
# control channel dropped out). It must stay above 5. A `socket_timeout` in REDIS_URL wins.
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 15.0)
# Active (unrevoked, unexpired) API tokens a user may hold at once.
API_TOKENS_PER_USER = env_int("API_TOKENS_PER_USER", 50)
# Rate limits (agents_app/api/throttles.py), per user (an IP address when unauthenticated), as
# DRF rates ("60/min"); empty: no limit. Counted in the cache below.
THROTTLE_RUN_START = env_str("THROTTLE_RUN_START", "60/min")
THROTTLE_STREAM_OPEN = env_str("THROTTLE_STREAM_OPEN", "300/min")
# Rate-limit counters (and login attempts) must be shared by every process: Redis when there is
# one, else this process's memory (one process: the demo, the tests).
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}

if REDIS_URL:
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # `retry`: a command sent on a pooled connection that Redis dropped (it restarted
                # meanwhile) is sent once more on a new connection; redis-py's default is not to
                # retry, and the first group_add or send after a restart failed.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": REDIS_SOCKET_TIMEOUT,
                        "retry": Retry(NoBackoff(), 1),
                    }
                ],
                "capacity": env_int("CHANNEL_CAPACITY", 1000),
                "expiry": 60,
                "prefix": env_str("CHANNEL_PREFIX", "asgi"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": env_int("CHANNEL_CAPACITY", 1000), "expiry": 60},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# The ASGI app serves /static/ itself unless a proxy does it (then: collectstatic, SERVE_STATIC=false).
SERVE_STATIC = env_bool("SERVE_STATIC", True)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 1024 * 1024)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# Every page's scripts, styles, fonts and images come from this server: no inline script or style,
# no eval. `connect-src 'self'` covers the same-origin WebSocket. The API docs pages relax it
# (config/urls.py): Swagger UI and ReDoc set styles inline.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tokens_app.auth.ApiTokenAuthentication",
        "tokens_app.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON that cannot be stored (NUL, lone surrogates, numbers overflowing to infinity, nesting
    # deeper than JSON_MAX_DEPTH) is a 400 naming the field (agents_app/text.py).
    # The API takes JSON (document uploads add multipart: research_app/views.py).
    "DEFAULT_PARSER_CLASSES": ["agents_app.api.parsers.CleanJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "agents_app.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "agents_app.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    # The client address of throttles (TRUSTED_PROXIES above).
    "NUM_PROXIES": TRUSTED_PROXIES or None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Django Agents Server",
    "DESCRIPTION": "Hosts OpenAI Agents SDK agents over REST, SSE and WebSocket.",
    "VERSION": "0.1.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # System fonts: the docs pages load nothing from outside this server (templates/drf_spectacular/).
    "REDOC_UI_SETTINGS": {
        "theme": {
            "typography": {
                "fontFamily": "system-ui, sans-serif",
                "headings": {"fontFamily": "system-ui, sans-serif"},
            }
        }
    },
    "SERVE_INCLUDE_SCHEMA": False,
    # Two `status` enums: a run's and a research report's.
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "agents_app.models.Run.Status",
        "ReportStatusEnum": "research_app.models.ResearchReport.Status",
    },
    # The streaming endpoints are Channels consumers: the hook adds them (agents_app/api/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "agents_app.api.schema.add_stream_paths",
    ],
}

# --- agents, their runs and streams: config/agents_settings.py --------------
from .agents_settings import *  # noqa: E402, F403

if RUN_EXECUTION == "worker" and "procrastinate.contrib.django" not in INSTALLED_APPS:  # noqa: F405
    raise ImproperlyConfigured("RUN_EXECUTION=worker needs PostgreSQL (DATABASE_URL): the job queue is there")

PORT = env_int("PORT", 8000)

# /metrics (Prometheus) answers staff, and a scraper that sends `Authorization: Bearer <this>`.
# Several processes: also set PROMETHEUS_MULTIPROC_DIR (agents_app/metrics.py).
METRICS_TOKEN = env_str("METRICS_TOKEN")

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
# text: one readable line per record; json: one JSON object per line, with the record's fields
# (a run's start and end carry run_id, user_id, agent, status, duration_s, tokens) and request_id.
LOG_FORMAT = env_str("LOG_FORMAT", "text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'text' or 'json', got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "agents_app.logs.RequestIdFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "agents_app.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "openai.agents": {"level": "WARNING"},
        # A line per job (a run's start and end are logged by the engine already).
        "procrastinate": {"level": "WARNING"},
    },
}
