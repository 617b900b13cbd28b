"""Django settings, all from the environment (see docs/configuration.md).

``AGENTFLOW_ENV`` picks the mode: ``development`` (default; what ``make run``
uses), ``test`` or ``production`` (secure cookies, HSTS, required secrets; the
mode for which ``manage.py check --deploy`` is clean).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from celery.schedules import crontab  # noqa: F401 - available for beat entries below
from kombu import Exchange, Queue

from agentflow.server.env import (
    ImproperlyConfiguredEnv,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
)
from agentflow.server.logging_config import build_logging
from agentflow.server.urls_parse import celery_redis_url, database_config, redis_py_url

BASE_DIR = Path(__file__).resolve().parents[2]
ENVIRONMENT = env_str("AGENTFLOW_ENV", "development") or "development"
if ENVIRONMENT not in {"development", "test", "production"}:
    raise ImproperlyConfiguredEnv(
        f"AGENTFLOW_ENV={ENVIRONMENT!r}: use development, test or production"
    )
PRODUCTION = ENVIRONMENT == "production"
AGENTFLOW_HOME = Path(env_str("AGENTFLOW_HOME", str(BASE_DIR / ".agentflow")) or ".agentflow")
# Written by the run command while embedded services are up, so that
# `manage.py shell` in another terminal reaches the same database and Redis.
RUNTIME_FILE = AGENTFLOW_HOME / "runtime.json"


def _runtime_value(key: str) -> str | None:
    try:
        value = json.loads(RUNTIME_FILE.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError):
        return None
    return str(value) if value else None


def _development_secret_key() -> str:
    key_file = AGENTFLOW_HOME / "secret_key"
    try:
        return key_file.read_text(encoding="utf-8").strip()
    except OSError:
        key = secrets.token_urlsafe(50)
        try:
            AGENTFLOW_HOME.mkdir(parents=True, exist_ok=True)
            key_file.write_text(key, encoding="utf-8")
            key_file.chmod(0o600)
        except OSError:
            pass  # read-only home: an ephemeral key only logs sessions out on restart
        return key


if PRODUCTION:
    SECRET_KEY = env_str("SECRET_KEY", required=True) or ""
else:
    SECRET_KEY = env_str("SECRET_KEY") or _development_secret_key()

DEBUG = env_bool("DEBUG", default=False)
ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]", "testserver"]
)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    # Swagger UI's files, served from our static files: /api/docs/ works offline.
    "drf_spectacular_sidecar",
    "guardian",
    "channels",
    "agentflow.apps.AgentsConfig",
    "tenants",
    "hitl",
    "governance",
    "learning",
    "frontend",
]

MIDDLEWARE = [
    "agentflow.server.middleware.CorrelationIdMiddleware",
    # Before sessions, auth and views: a NUL or non-UTF-8 path or query is a 400, an
    # over-long query string a 414, both in the error shape (docs/api.md).
    "agentflow.server.middleware.RequestLineMiddleware",
    "agentflow.server.middleware.BodySizeLimitMiddleware",
    # Redis down under a dashboard page: 503 with Retry-After, not a 500.
    "agentflow.server.middleware.ServiceUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Sync, like every middleware here: the web's handler (agentflow.server.asgi_http) runs
    # the whole chain and the view in one thread hop, as under WSGI.
    "agentflow.server.middleware.RequestMetricsMiddleware",
]

ROOT_URLCONF = "agentflow.server.urls"
ASGI_APPLICATION = "agentflow.server.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL") or _runtime_value("database_url")
if DATABASE_URL is None:
    if PRODUCTION:
        raise ImproperlyConfiguredEnv("DATABASE_URL is required in production")
    # Nothing running yet (e.g. `manage.py check` before `make run`): settings
    # still load; the first query fails with a clear connection error.
    _socket_dir = AGENTFLOW_HOME / "postgres" / "pgdata"
    DATABASE_URL = f"postgresql://agentflow_app@/agentflow?host={_socket_dir}"
    DATABASE_OWNER_URL: str | None = f"postgresql://postgres:@/agentflow?host={_socket_dir}"
else:
    # The schema's owner: `migrate` and `provision_db` connect as it (AGENTFLOW_DB_ROLE=owner)
    # and grant DATABASE_URL's role what the app needs, on the audit table only SELECT and
    # INSERT (governance/roles.py). Unset: one role for everything, as before.
    DATABASE_OWNER_URL = env_str("DATABASE_OWNER_URL") or _runtime_value("database_owner_url")
DATABASE_ROLE = env_str("AGENTFLOW_DB_ROLE", "app") or "app"
if DATABASE_ROLE not in {"app", "owner"}:
    raise ImproperlyConfiguredEnv(f"AGENTFLOW_DB_ROLE={DATABASE_ROLE!r}: use app or owner")
if DATABASE_ROLE == "owner" and not DATABASE_OWNER_URL:
    raise ImproperlyConfiguredEnv("AGENTFLOW_DB_ROLE=owner needs DATABASE_OWNER_URL")
# The app's role (what `migrate` as owner provisions), whichever role this process uses.
APP_DATABASE = database_config(DATABASE_URL)
DATABASES = {
    "default": database_config(
        DATABASE_OWNER_URL if DATABASE_ROLE == "owner" and DATABASE_OWNER_URL else DATABASE_URL
    )
}
# A connection pool per process: under ASGI every request runs its sync code in a new
# thread, and per-thread persistent connections would pile up until PostgreSQL refuses
# more clients. The pool hands each request a warm connection and takes it back.
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 10)
if DB_POOL_MAX_SIZE > 0:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # required with the pool
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": env_int("DB_POOL_MIN_SIZE", 1),
        "max_size": DB_POOL_MAX_SIZE,
        "timeout": env_float("DB_POOL_TIMEOUT_SECONDS", 10.0),
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Server-side parameters, and statements prepared once a connection has run them this many
# times (psycopg): PostgreSQL then parses and plans a run's ~23 statements once per pooled
# connection instead of every time, 2.5 ms of its CPU per run of 8 (issue 15). 0: client-side
# binding, nothing prepared (behind PgBouncer's transaction pooling before 1.21).
DB_PREPARE_THRESHOLD = env_int("DB_PREPARE_THRESHOLD", 2)
if DB_PREPARE_THRESHOLD < 0:
    raise ImproperlyConfiguredEnv(f"DB_PREPARE_THRESHOLD={DB_PREPARE_THRESHOLD}: 0 or more")
if DB_PREPARE_THRESHOLD > 0:
    DATABASES["default"]["OPTIONS"]["server_side_binding"] = True
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = DB_PREPARE_THRESHOLD
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, channel layer, Celery broker and results -------------------
_redis_url = env_str("REDIS_URL") or _runtime_value("redis_url")
if _redis_url is None:
    if PRODUCTION:
        raise ImproperlyConfiguredEnv("REDIS_URL is required in production")
    _redis_url = f"unix://{AGENTFLOW_HOME / 'redis' / 'redis.sock'}?db=0"
REDIS_URL = redis_py_url(_redis_url)

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "agentflow",
        "TIMEOUT": 300,
    }
}
# Sessions live in PostgreSQL only: a dashboard login must not depend on Redis being up.
SESSION_ENGINE = "django.contrib.sessions.backends.db"

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # The read timeout must exceed channels_redis's 5 s BRPOP, or every idle socket
            # times out and drops after 5 s (redis-py 8 defaults it to 5 s: FINDINGS.md).
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
            "prefix": "agentflow:ws",
            "capacity": 1000,
        },
    }
}

CELERY_BROKER_URL = celery_redis_url(env_str("CELERY_BROKER_URL") or REDIS_URL)
CELERY_RESULT_BACKEND = celery_redis_url(env_str("CELERY_RESULT_BACKEND") or REDIS_URL)
CELERY_TASK_ACKS_LATE = True  # a task is acknowledged after it ran, not when received
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # a killed worker's task goes back to the queue
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_PREFETCH_MULTIPLIER", 4)
# Redis redelivers an unacknowledged task after the visibility timeout. It must
# exceed the longest task (runs are bounded well below an hour); see
# docs/operations.md before lowering it.
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    # A live worker rescans for expired unacknowledged tasks every interval x throttle
    # seconds (kombu's default: about 100 s), on top of the visibility timeout.
    "unacked_restore_interval": env_int("CELERY_UNACKED_RESTORE_INTERVAL", 10),
    "unacked_restore_throttle": env_int("CELERY_UNACKED_RESTORE_THROTTLE", 10),
}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
# One result backend per process, not per thread: Django's ASGI handler runs each request's
# sync view in a new thread, and every task published there built its own Redis backend
# (~1.7 ms of CPU per 202, issue 15). Its connection pool is thread-safe; only
# `ping_workers` and tests read results.
CELERY_RESULT_BACKEND_THREAD_SAFE = True
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = [
    Queue(name, Exchange(name), routing_key=name)
    for name in ("default", "runs", "hitl", "learning", "webhooks", "maintenance")
]
# Tasks are routed by the app that owns them; see docs/operations.md for sizing.
CELERY_TASK_ROUTES = {
    "agentflow.runs.*": {"queue": "runs"},
    "hitl.*": {"queue": "hitl"},
    "learning.*": {"queue": "learning"},
    "webhooks.*": {"queue": "webhooks"},
    "maintenance.*": {"queue": "maintenance"},
}
CELERY_BEAT_SCHEDULE = {
    "maintenance.recover_runs": {
        "task": "maintenance.recover_runs",
        "schedule": env_float("RUN_RECOVERY_SECONDS", 15.0),
    },
    "maintenance.recover_tool_calls": {
        "task": "maintenance.recover_tool_calls",
        "schedule": env_float("RUN_RECOVERY_SECONDS", 15.0),
    },
    "maintenance.heartbeat": {
        "task": "maintenance.heartbeat",
        "schedule": env_float("HEARTBEAT_SECONDS", 15.0),
        "kwargs": {"source": "beat"},
    },
    # Audit chain heads leave the database on this schedule (governance/checkpoints.py).
    "maintenance.audit_checkpoint": {
        "task": "maintenance.audit_checkpoint",
        "schedule": env_float("AUDIT_CHECKPOINT_SECONDS", 300.0),
    },
    # Events appended unsealed on the run path get their place in the chain this often
    # (governance/audit.py); readers of a chain seal it first anyway.
    "maintenance.audit_seal": {
        "task": "maintenance.audit_seal",
        "schedule": env_float("AUDIT_SEAL_SECONDS", 1.0),
        "options": {"expires": 10.0},
    },
    # Between checkpoints, moved chain heads are anchored in AUDIT_CHECKPOINT_PATH this often:
    # events deleted from a chain's tail later than this are named by verify.
    "maintenance.audit_anchor": {
        "task": "maintenance.audit_anchor",
        "schedule": env_float("AUDIT_ANCHOR_SECONDS", 5.0),
    },
    # The activity stream's recovery: replay from PostgreSQL, claim dead consumers' entries.
    "learning.activity_sweep": {
        "task": "learning.activity_sweep",
        "schedule": env_float("ACTIVITY_SWEEP_SECONDS", 30.0),
        "options": {"expires": env_float("ACTIVITY_SWEEP_SECONDS", 30.0)},
    },
    # Large tenants' own vector indexes, built concurrently (agentflow/vector_search.py).
    "learning.ensure_vector_indexes": {
        "task": "learning.ensure_vector_indexes",
        "schedule": env_float("VECTOR_INDEX_SWEEP_SECONDS", 3600.0),
        "options": {"expires": env_float("VECTOR_INDEX_SWEEP_SECONDS", 3600.0)},
    },
    # Golden paths of decisions whose learning task was lost (broker down at the decision).
    "learning.review_outcome_sweep": {
        "task": "learning.review_outcome_sweep",
        "schedule": env_float("REVIEW_OUTCOME_SWEEP_SECONDS", 300.0),
        "options": {"expires": env_float("REVIEW_OUTCOME_SWEEP_SECONDS", 300.0)},
    },
    # Playbooks are re-extracted from the latest traces of agents that ran since.
    "learning.extract_playbooks": {
        "task": "learning.extract_playbooks",
        "schedule": env_float("PLAYBOOK_EXTRACT_SECONDS", 900.0),
        "options": {"expires": env_float("PLAYBOOK_EXTRACT_SECONDS", 900.0)},
    },
    # Scheduled compliance audits (docs/blueprints.md): each due period is audited once.
    "maintenance.compliance_audits": {
        "task": "maintenance.compliance_audits",
        "schedule": env_float("COMPLIANCE_AUDIT_SECONDS", 900.0),
        "options": {"expires": env_float("COMPLIANCE_AUDIT_SECONDS", 900.0)},
    },
    # Onboarding stalls (docs/blueprints.md): each is recorded once as an activity event.
    "maintenance.onboarding_nudges": {
        "task": "maintenance.onboarding_nudges",
        "schedule": env_float("ONBOARDING_NUDGE_SECONDS", 900.0),
        "options": {"expires": env_float("ONBOARDING_NUDGE_SECONDS", 900.0)},
    },
    # Breaches are marked within one sweep interval of the deadline (SPEC 6: <= 1 minute).
    "hitl.sla_sweep": {
        "task": "hitl.sla_sweep",
        "schedule": env_float("HITL_SLA_SWEEP_SECONDS", 30.0),
        # A sweep that waited longer than an interval is superseded by the next one.
        "options": {"expires": env_float("HITL_SLA_SWEEP_SECONDS", 30.0)},
    },
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(AGENTFLOW_HOME / "celerybeat-schedule")

# --- REST API --------------------------------------------------------------------
# Edge limits on hostile input (docs/configuration.md). JSON bodies nested deeper than
# MAX_JSON_DEPTH are a 400 before parsing recurses; longer query strings are a 414.
MAX_JSON_DEPTH = env_int("MAX_JSON_DEPTH", 64)
MAX_QUERY_STRING_BYTES = env_int("MAX_QUERY_STRING_BYTES", 16384)
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "agentflow.core.api.schema.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.APIKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PARSER_CLASSES": ["agentflow.core.api.parsers.BoundedJSONParser"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "agentflow.server.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "AgentFlow API",
    "DESCRIPTION": "Run customer-support AI agents under human oversight.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # From drf-spectacular-sidecar (pinned in pyproject.toml), never a CDN's @latest.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "agentflow.core.api.schema.add_common_error_responses",
    ],
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": [
            "pending",
            "processing",
            "awaiting_review",
            "completed",
            "failed",
            "cancelled",
        ],
        "TenantStatusEnum": "tenants.models.TenantStatus",
        "GraphNodeKindEnum": "learning.models.NodeKind",
        # Serializers list these choices by value (labels equal values), hence the lists.
        "GoldenPathSourceEnum": ["approved", "edited", "feedback"],
        "ActivitySourceEnum": ["zendesk", "slack", "jira", "generic", "internal"],
        "PlaybookStatusEnum": ["active", "superseded", "retired"],
        # Invitations (governance): the role granted on acceptance, and where one stands.
        "MemberRoleEnum": ["owner", "operator", "reviewer", "viewer"],
        "InvitationStatusEnum": ["pending", "accepted", "revoked", "expired"],
    },
}

# --- Auth ------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/login/"  # the dashboard's sign-in page (the admin keeps its own)
ANONYMOUS_USER_NAME = None  # guardian: no anonymous object permissions

# --- Security --------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    # The header only makes the site eligible; submitting it to the preload list is manual.
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=True)
    # Behind a TLS-terminating proxy, it tells us the original scheme.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Health probes come over plain HTTP from the orchestrator.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 1_048_576)

# --- I18N / time -----------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(AGENTFLOW_HOME / "static")) or "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION
if not PRODUCTION:
    # Development serves from the finders; WhiteNoise still wants the folder to exist.
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "agentflow@localhost")
# The SMTP backend's server and login (Django's defaults when unset).
EMAIL_HOST = env_str("EMAIL_HOST", "localhost") or "localhost"
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "") or ""
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=False)

# --- Logging ---------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO") or "INFO"
LOG_JSON = env_bool("LOG_JSON", default=True)
LOGGING_CONFIG = None  # configured once below, by structlog
build_logging(LOG_LEVEL, json_output=LOG_JSON)

# --- AgentFlow ---------------------------------------------------------------------
_HITL_SLA_DEFAULTS = {
    "free": {"critical": 60, "high": 240, "medium": 1440, "low": 2880},
    "starter": {"critical": 30, "high": 120, "medium": 480, "low": 1440},
    "professional": {"critical": 15, "high": 60, "medium": 240, "low": 720},
    "enterprise": {"critical": 15, "high": 30, "medium": 120, "low": 480},
}


def _hitl_sla_minutes() -> dict[str, dict[str, int]]:
    """The defaults, with ``HITL_SLA_MINUTES`` (JSON, e.g. {"free": {"critical": 30}}) over them."""
    raw = env_str("HITL_SLA_MINUTES")
    try:
        overrides = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise ImproperlyConfiguredEnv(f"HITL_SLA_MINUTES is not JSON: {exc}") from exc
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise ImproperlyConfiguredEnv("HITL_SLA_MINUTES must map tiers to {priority: minutes}")
    tiers = [*_HITL_SLA_DEFAULTS, *(tier for tier in overrides if tier not in _HITL_SLA_DEFAULTS)]
    return {tier: {**_HITL_SLA_DEFAULTS.get(tier, {}), **overrides.get(tier, {})} for tier in tiers}


_PRICE_KEYS = ("input_per_million", "output_per_million")


def _llm_model_prices() -> dict[str, dict[str, float]]:
    """``LLM_MODEL_PRICES``: JSON {model: {input_per_million, output_per_million}} in US
    dollars, over the kernel's price table (docs/local-llm.md). Checked at start-up."""
    raw = env_str("LLM_MODEL_PRICES")
    try:
        table = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise ImproperlyConfiguredEnv(f"LLM_MODEL_PRICES is not JSON: {exc}") from exc
    if not isinstance(table, dict):
        raise ImproperlyConfiguredEnv("LLM_MODEL_PRICES must map model names to prices")
    for model, price in table.items():
        if not (
            isinstance(price, dict)
            and sorted(price) == sorted(_PRICE_KEYS)
            and all(_is_price(value) for value in price.values())
        ):
            raise ImproperlyConfiguredEnv(
                f"LLM_MODEL_PRICES[{model!r}] must be "
                '{"input_per_million": N, "output_per_million": N} with N a number >= 0'
            )
    return {model: {key: float(p[key]) for key in _PRICE_KEYS} for model, p in table.items()}


def _is_price(value: object) -> bool:
    # bool is an int to Python, never a price; NaN and infinity compare False here.
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e12


def _intent_model_keep_days() -> float:
    days = env_float("INTENT_MODEL_CACHE_KEEP_DAYS", 30.0)
    if days < 0:
        raise ImproperlyConfiguredEnv(f"INTENT_MODEL_CACHE_KEEP_DAYS={days:g}: 0 or more")
    return days


AGENTFLOW = {
    "HEALTH_CHECK_TIMEOUT_SECONDS": env_float("HEALTH_CHECK_TIMEOUT_SECONDS", 2.0),
    # Knowledge uploads may be larger than JSON bodies (SPEC 5: 413/415/422).
    "MAX_UPLOAD_BYTES": env_int("MAX_UPLOAD_BYTES", 5 * 1_048_576),
    "IDEMPOTENCY_TTL_SECONDS": env_int("IDEMPOTENCY_TTL_SECONDS", 24 * 3600),
    # How long POST .../runs waits for a result before answering 202 (Prefer: wait=N overrides).
    "RUN_DEFAULT_WAIT_SECONDS": env_float("RUN_DEFAULT_WAIT_SECONDS", 2.0),
    "RUN_MAX_WAIT_SECONDS": env_float("RUN_MAX_WAIT_SECONDS", 30.0),
    # The recovery sweep re-enqueues runs whose task was lost (see docs/operations.md).
    "RUN_PENDING_GRACE_SECONDS": env_int("RUN_PENDING_GRACE_SECONDS", 30),
    # A run re-enqueued by the sweep is not re-enqueued again for base x 2^attempts s.
    "RUN_RECOVERY_BACKOFF_SECONDS": env_float("RUN_RECOVERY_BACKOFF_SECONDS", 30.0),
    "RUN_RECOVERY_BATCH": env_int("RUN_RECOVERY_BATCH", 500),
    # Tenants' agent configs may only name these LLM endpoints (no SSRF through base_url) and
    # reference API keys by these server environment variables, never hold keys themselves.
    "LLM_ALLOWED_BASE_URLS": env_list("LLM_ALLOWED_BASE_URLS", []),
    "LLM_API_KEY_ENV_VARS": env_list("LLM_API_KEY_ENV_VARS", ["OPENAI_API_KEY"]),
    # Dollars per million tokens of models the built-in price table lacks (self-hosted ones,
    # often 0); an agent's own llm.prices wins over it (agentflow.core.prices).
    "LLM_MODEL_PRICES": _llm_model_prices(),
    # The embedder of knowledge and of the messages searched against it (docs/local-llm.md):
    # offline, wordllama (quality extra), sentence-transformers[:model] or openai:model on
    # EMBEDDER_BASE_URL (one of LLM_ALLOWED_BASE_URLS) with EMBEDDER_API_KEY as ${NAME} of
    # LLM_API_KEY_ENV_VARS.
    "EMBEDDER": env_str("EMBEDDER", "offline"),
    "EMBEDDER_BASE_URL": env_str("EMBEDDER_BASE_URL", ""),
    "EMBEDDER_API_KEY": env_str("EMBEDDER_API_KEY", ""),
    # Agents' offline intent classifiers are trained in a child process and cached here by
    # content, so scikit-learn never stays resident in a worker (issue 15). Empty: train in
    # the worker's own process.
    "INTENT_MODEL_CACHE_DIR": env_str(
        "INTENT_MODEL_CACHE_DIR", str(AGENTFLOW_HOME / "intent-models")
    ),
    # Models unused this many days are deleted when the folder next gains one; 0: kept.
    "INTENT_MODEL_CACHE_KEEP_DAYS": _intent_model_keep_days(),
    # Built-in tools (docs/tools.md): the URL prefixes their settings may point at (empty:
    # no URL tool is usable) and the environment variables their secrets may reference.
    "TOOL_ALLOWED_URLS": env_list("TOOL_ALLOWED_URLS", []),
    "TOOL_SECRET_ENV_VARS": env_list("TOOL_SECRET_ENV_VARS", []),
    # Agent tools (docs/configuration.md): the executables an agent's stdio MCP server may
    # start and the URL prefixes of its http ones (empty: none), and the server environment
    # variables its env/headers may reference as ${VAR} (secrets never sit in a config).
    "MCP_ALLOWED_COMMANDS": env_list("MCP_ALLOWED_COMMANDS", []),
    "MCP_ALLOWED_URLS": env_list("MCP_ALLOWED_URLS", []),
    "MCP_SECRET_ENV_VARS": env_list("MCP_SECRET_ENV_VARS", []),
    # Bound of starting an MCP server and listing its tools.
    "MCP_CONNECT_TIMEOUT_SECONDS": env_float("MCP_CONNECT_TIMEOUT_SECONDS", 30.0),
    # A tool call's stored result is cut to this many characters of JSON.
    "TOOL_RESULT_MAX_CHARS": env_int("TOOL_RESULT_MAX_CHARS", 16_384),
    # Governance (docs/operations.md). Audit chain heads are exported on a schedule to this
    # directory (one JSON-lines file per chain) and/or POSTed to this URL: both belong
    # outside the database's reach (another host, a write-once bucket).
    "AUDIT_CHECKPOINT_PATH": env_str(
        "AUDIT_CHECKPOINT_PATH", str(AGENTFLOW_HOME / "audit-checkpoints")
    ),
    "AUDIT_CHECKPOINT_URL": env_str("AUDIT_CHECKPOINT_URL"),
    "AUDIT_CHECKPOINT_TOKEN": env_str("AUDIT_CHECKPOINT_TOKEN"),
    "AUDIT_CHECKPOINT_TIMEOUT_SECONDS": env_float("AUDIT_CHECKPOINT_TIMEOUT_SECONDS", 10.0),
    # Exports up to this size go out whole (with a Content-Length); larger ones stream.
    "EXPORT_BUFFER_BYTES": env_int("EXPORT_BUFFER_BYTES", 256 * 1024),
    # Human in the loop (docs/operations.md). SLA minutes per tier and priority; a tenant's
    # or agent's review settings override them per priority. Checked at start-up.
    "HITL_SLA_MINUTES": _hitl_sla_minutes(),
    "HITL_DEFAULT_CHAIN": env_list("HITL_DEFAULT_CHAIN", ["reviewer", "operator", "owner"]),
    # Minutes after the first deadline at which an undecided request expires (0: never),
    # and what expiry does: auto_reject (deliver the hand-off) or escalate (top of chain).
    "HITL_EXPIRE_AFTER_MINUTES": env_int("HITL_EXPIRE_AFTER_MINUTES", 24 * 60),
    "HITL_ON_EXPIRY": env_str("HITL_ON_EXPIRY", "auto_reject"),
    "HITL_HANDOFF_MESSAGE": env_str(
        "HITL_HANDOFF_MESSAGE",
        "Thanks for your patience. A member of our team will follow up with you directly.",
    ),
    "HITL_DEFAULT_CAPACITY": env_int("HITL_DEFAULT_CAPACITY", 5),
    "HITL_SLACK_WEBHOOK_URL": env_str("HITL_SLACK_WEBHOOK_URL"),
    "HITL_NOTIFY_RETRY_SECONDS": env_float("HITL_NOTIFY_RETRY_SECONDS", 10.0),
    "HITL_NOTIFY_MAX_RETRIES": env_int("HITL_NOTIFY_MAX_RETRIES", 5),
    # Webhooks and the activity stream (docs/configuration.md, docs/operations.md). Signing
    # secrets are stored encrypted with a key derived from WEBHOOK_SECRET_KEY (else SECRET_KEY).
    "WEBHOOK_SECRET_KEY": env_str("WEBHOOK_SECRET_KEY"),
    "WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS": env_int("WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS", 300),
    "WEBHOOK_MAX_BODY_BYTES": env_int("WEBHOOK_MAX_BODY_BYTES", 1_048_576),
    "WEBHOOK_ROTATION_OVERLAP_SECONDS": env_int("WEBHOOK_ROTATION_OVERLAP_SECONDS", 24 * 3600),
    # How long the digest of what a delivery's signature covered is kept: a replay of that
    # content under a new (unsigned) delivery id is a duplicate (Jira retries for 30 min).
    "WEBHOOK_REPLAY_RETENTION_SECONDS": env_int("WEBHOOK_REPLAY_RETENTION_SECONDS", 24 * 3600),
    "WEBHOOK_MESSAGE_MAX_CHARS": env_int("WEBHOOK_MESSAGE_MAX_CHARS", 8000),
    # Rules may only send replies to URLs under these prefixes (no SSRF through rules).
    "WEBHOOK_REPLY_ALLOWED_URLS": env_list(
        "WEBHOOK_REPLY_ALLOWED_URLS", ["https://hooks.slack.com/"]
    ),
    "WEBHOOK_REPLY_TIMEOUT_SECONDS": env_float("WEBHOOK_REPLY_TIMEOUT_SECONDS", 10.0),
    "WEBHOOK_REPLY_RETRY_SECONDS": env_float("WEBHOOK_REPLY_RETRY_SECONDS", 10.0),
    "WEBHOOK_REPLY_MAX_RETRIES": env_int("WEBHOOK_REPLY_MAX_RETRIES", 5),
    "ACTIVITY_STREAM_MAXLEN": env_int("ACTIVITY_STREAM_MAXLEN", 100_000),
    "ACTIVITY_DRAIN_BATCH": env_int("ACTIVITY_DRAIN_BATCH", 100),
    # The drain a burst's first event schedules starts this much later, so that one
    # transaction consumes the burst instead of a task and a transaction per event.
    "ACTIVITY_DRAIN_DELAY_SECONDS": env_float("ACTIVITY_DRAIN_DELAY_SECONDS", 0.25),
    "ACTIVITY_CLAIM_IDLE_SECONDS": env_float("ACTIVITY_CLAIM_IDLE_SECONDS", 60.0),
    "ACTIVITY_REPUBLISH_AFTER_SECONDS": env_float("ACTIVITY_REPUBLISH_AFTER_SECONDS", 10.0),
    "ACTIVITY_MAX_ATTEMPTS": env_int("ACTIVITY_MAX_ATTEMPTS", 5),
    # Learning loop (SPEC 9, docs/configuration.md): a new outcome this similar to a golden
    # path of the same agent and category is merged into it instead of added.
    "GOLDEN_PATH_MERGE_SIMILARITY": env_float("GOLDEN_PATH_MERGE_SIMILARITY", 0.95),
    # Feedback at or above this normalised score (4 of 5, thumbs up) makes a golden path.
    "GOLDEN_PATH_MIN_FEEDBACK_SCORE": env_float("GOLDEN_PATH_MIN_FEEDBACK_SCORE", 0.75),
    "PLAYBOOK_MIN_SAMPLES": env_int("PLAYBOOK_MIN_SAMPLES", 20),
    "PLAYBOOK_MIN_SUCCESS_RATE": env_float("PLAYBOOK_MIN_SUCCESS_RATE", 0.8),
    # A step belongs to the playbook when this share of the successful traces took it.
    "PLAYBOOK_MIN_STEP_SUPPORT": env_float("PLAYBOOK_MIN_STEP_SUPPORT", 0.6),
    "PLAYBOOK_WINDOW_RUNS": env_int("PLAYBOOK_WINDOW_RUNS", 500),
    "PLAYBOOK_EXTRACT_SECONDS": env_float("PLAYBOOK_EXTRACT_SECONDS", 900.0),
    # Tenants with this many golden paths (or knowledge chunks) get their own partial HNSW
    # index (agentflow/vector_search.py; docs/operations.md "Vector search").
    "VECTOR_TENANT_INDEX_MIN_ROWS": env_int("VECTOR_TENANT_INDEX_MIN_ROWS", 50_000),
}
