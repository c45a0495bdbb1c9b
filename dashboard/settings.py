"""Settings for Streamscope.

Every value comes from an environment variable with a safe default for the embedded mode
(SQLite, in-memory channel layer, runs as asyncio tasks, built-in simulator upstream).
``STREAMSCOPE_MODE=production`` switches on the deploy hardening (see docs/operations.md).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from dashboard import garbage_collector as _garbage_collector
from dashboard import sqlite_pages as _sqlite_pages

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("STREAMSCOPE_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

PRODUCTION = os.environ.get("STREAMSCOPE_MODE", "development") == "production"


def _secret_key() -> str:
    """Use DJANGO_SECRET_KEY; in development, keep a random per-checkout key under var/."""
    key = os.environ.get("DJANGO_SECRET_KEY")
    if key:
        return key
    if PRODUCTION:
        raise RuntimeError("DJANGO_SECRET_KEY must be set when STREAMSCOPE_MODE=production")
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = os.environ.get("DJANGO_DEBUG", "0" if PRODUCTION else "1") == "1"
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "streams",
    "simulator",
    "dashboard",
]

# Most of Django's middleware as dashboard.middleware subclasses: the same hooks, run on the event loop
# under ASGI where they do no I/O instead of a thread hop each (about fifteen per request before).
# Security, CSRF and X-Frame-Options keep Django's paths: `check --deploy` looks for those names and
# skips the checks of their settings (HSTS, SSL redirect, secure cookies...) without them.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "dashboard.middleware.WhiteNoiseMiddleware",
    "dashboard.middleware.SessionMiddleware",
    "dashboard.middleware.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "dashboard.middleware.AuthenticationMiddleware",
    "dashboard.tokens.BearerTokenMiddleware",  # Authorization: Bearer <API token> on /api/ and /gateway/
    "dashboard.simulator_gate.SimulatorGateMiddleware",  # who may call /sim/, and how much
    "dashboard.middleware.LoginRequiredMiddleware",
    "dashboard.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "dashboard.middleware.ContentSecurityPolicyMiddleware",
    "dashboard.middleware.JsonErrorsMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
ASGI_APPLICATION = "dashboard.asgi.application"

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
            ],
        },
    },
]


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _database() -> dict:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        from urllib.parse import parse_qsl, unquote, urlparse

        parts = urlparse(url)
        options: dict = dict(parse_qsl(parts.query))  # e.g. ?sslmode=require
        pool_size = int(os.environ.get("STREAMSCOPE_DB_POOL_SIZE", "20"))
        if pool_size and _has_module("psycopg_pool"):
            # Daphne runs each request's sync DB work on a fresh thread, so persistent per-thread
            # connections (CONN_MAX_AGE > 0) would leak; a pool lends a warm connection to each
            # batch instead of a new TCP + auth handshake (see docs/scaling.md).
            options["pool"] = {
                "min_size": 2,
                "max_size": pool_size,
                "timeout": 10,
            }
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": 0,
            "OPTIONS": options,
            "TEST": {"NAME": os.environ.get("STREAMSCOPE_TEST_DB") or None},
        }
    if url and not url.startswith("sqlite:"):
        raise RuntimeError(f"DATABASE_URL scheme not supported: {url.split(':', 1)[0]}")
    path = url.removeprefix("sqlite:///") if url else str(VAR_DIR / "streamscope.sqlite3")
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        # Reopening SQLite (and re-running the PRAGMAs) around every batch cost ~8% of a busy
        # process; an idle connection costs nothing, and a finished request's own thread closes
        # its connection as the request ends (dashboard/request_threads.py).
        "CONN_MAX_AGE": 600,
        "OPTIONS": {
            # WAL lets viewers read while the runner writes; IMMEDIATE avoids lock upgrades.
            # A flush round's multi-row INSERT runs inside a transaction on a table with a unique
            # index, so SQLite keeps a statement journal of every page it changes (to undo that
            # statement alone): past 64 KiB that journal is a file, two writes per page, ~500 per
            # round of 1,000 events from 200 runs; temp_store=MEMORY keeps it in memory (the
            # database thread's round ~9.4 -> ~8.0 us per event, docs/performance.md, sixth session).
            # It keeps every connection's sorts and temporary indices in memory too: a query that
            # sorts many rows without an index costs their size in RAM (300,000 rows: ~75 MiB peak
            # against ~14 with temp files, in review), so such queries must go by an index.
            # An 8 MiB page cache and a checkpoint every 4,000 pages cut more in that harness but were
            # dropped: with them bench/many.py's 1,000 runs had p99 2.4 s against 0.7 s in one pair
            # (longer checkpoints on the database thread suspected), and the cache is SQLite's heap.
            # page_size first: it applies to a database not yet written (made with 16 KiB pages; an
            # existing one keeps its own until `manage.py sqlite_pages --convert`), and each connection
            # then checkpoints every ~4 MB of log whatever its database's page size (dashboard/sqlite_pages.py).
            "init_command": f"PRAGMA page_size={_sqlite_pages.PAGE_SIZE}; PRAGMA journal_mode=WAL; "
                            "PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            # Prepared statements each connection keeps (Python's default 128). The flush's
            # multi-row INSERT and UPDATE have a text per batch size, up to 1,000 rows: ~0.6 MiB of
            # SQLite's heap each prepared, so 128 of them held ~40 MiB that were seldom reused
            # (docs/performance.md). 16 keeps the ORM's frequent statements.
            "cached_statements": int(os.environ.get("STREAMSCOPE_SQLITE_CACHED_STATEMENTS", "16")),
        },
        "TEST": {"NAME": os.environ.get("STREAMSCOPE_TEST_DB") or None},
    }


DATABASES = {"default": _database()}
# The insights covering index carries INCLUDE columns for PostgreSQL's index-only scans; SQLite
# builds it without them (still a valid index), so its "no non-key columns" warning is noise there.
SILENCED_SYSTEM_CHECKS = ["models.W040"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
# Separates deployments (or test sessions) that share one Redis: channels, groups, cache keys.
REDIS_PREFIX = os.environ.get("STREAMSCOPE_REDIS_PREFIX", "streamscope")
if REDIS_URL:
    # redis-py 8 changed two defaults that break channels_redis under load: a 5 s socket
    # timeout, the same as its blocking BZPOPMIN (idle receives failed with TimeoutError, killing
    # consumers and workers), and a pool of 100 connections that raises when exhausted (200 runs
    # publishing at once failed their flushes).
    _REDIS_HOST = {"address": REDIS_URL, "socket_timeout": 15, "max_connections": 2000}
    CHANNEL_LAYERS = {
        # Viewers: Redis pub/sub. A batch is one PUBLISH and is pushed to every web process that
        # has a viewer of the run; the list-based layer needs ~4 round trips per message on each
        # side and one web process took at most ~2,000 batches/s (docs/scaling.md). At most once,
        # like every layer: viewers refill gaps from the database.
        "default": {
            # channels_redis' pub/sub layer, with a round's batches published in one round trip.
            "BACKEND": "streams.pipeline.redis_layer.BatchPubSubChannelLayer",
            "CONFIG": {"hosts": [_REDIS_HOST], "prefix": REDIS_PREFIX},
        },
        # Stream workers: a queue (each launch goes to one worker and waits up to `expiry` for
        # one) and the workers' control group. Capacity counts messages per channel.
        "workers": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [_REDIS_HOST], "prefix": REDIS_PREFIX + ":w", "capacity": 1000, "expiry": 30},
        },
    }
    # Login-failure counts must be shared by every web process.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_PREFIX,
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            # Channels' InMemoryChannelLayer minus a deep copy of each event batch per viewer.
            "BACKEND": "streams.pipeline.memory_layer.BatchInMemoryChannelLayer",
            # Each message is a batch of events, so 1000 batches is a lot of headroom.
            "CONFIG": {"capacity": 1000, "expiry": 30},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
CSRF_FAILURE_VIEW = "dashboard.pages.errors.csrf_failure"
# Every password check goes through the login brake (dashboard/auth.py): /accounts/login/,
# /admin/login/ and any other form that calls authenticate().
AUTHENTICATION_BACKENDS = ["dashboard.auth.BrakedModelBackend"]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    # One handler, on the root: Daphne's command line puts a handler of its own there before the
    # app loads, and ours beside it printed every line twice. Configuring the root replaces it.
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "streams": {"level": os.environ.get("STREAMSCOPE_LOG_LEVEL", "INFO")},
        "dashboard": {"level": os.environ.get("STREAMSCOPE_LOG_LEVEL", "INFO")},
        "simulator": {"level": os.environ.get("STREAMSCOPE_LOG_LEVEL", "INFO")},
        "daphne": {"level": "INFO"},  # "Listening on ...": what its own set-up showed
    },
}

# --- Streamscope -----------------------------------------------------------------------------
# The built-in simulator (/sim/v1/): on in development, off in production unless turned on.
# Callers need a session, an API token or the server's own internal key (docs/operations.md);
# STREAMSCOPE_SIMULATOR_OPEN=1 drops that for a simulator-only process used as a load generator.
STREAMSCOPE_SIMULATOR_ENABLED = os.environ.get("STREAMSCOPE_SIMULATOR", "0" if PRODUCTION else "1") == "1"
STREAMSCOPE_SIMULATOR_OPEN = os.environ.get("STREAMSCOPE_SIMULATOR_OPEN", "0") == "1"
# Per caller (user or API token owner): concurrent simulator streams, and frames per second.
STREAMSCOPE_SIMULATOR_MAX_STREAMS = int(os.environ.get("STREAMSCOPE_SIMULATOR_MAX_STREAMS", "16"))
STREAMSCOPE_SIMULATOR_MAX_FRAMES_PER_S = float(os.environ.get("STREAMSCOPE_SIMULATOR_MAX_FRAMES_PER_S", "5000"))
# 0: each simulated event is written at its own time (true token gaps). A load-generator process may
# set e.g. 100: a stream then writes what fell due at most every 100 ms (far less CPU per event).
STREAMSCOPE_SIMULATOR_WRITE_INTERVAL_MS = min(1000.0, max(0.0, float(
    os.environ.get("STREAMSCOPE_SIMULATOR_WRITE_INTERVAL_MS", "0"))))
# Where runs reach the simulator. Unset: wherever this server listens, learned from the first
# connection it serves (so `daphne -p 9000 ...` works without PORT). Stream workers serve no HTTP:
# set it to a web process's address there (docs/scaling.md).
STREAMSCOPE_SIMULATOR_URL = os.environ.get("STREAMSCOPE_SIMULATOR_URL", "")
# Extra OpenAI-compatible providers as JSON: [{"name", "base_url", "key_env", "protocol",
# "background", "models"}]. Only the key's variable *name* goes here; the key stays in env.
STREAMSCOPE_EXTRA_PROVIDERS = os.environ.get("STREAMSCOPE_PROVIDERS", "")
# Launcher backend: "asyncio" (runs are tasks in the web process that received them), "worker"
# (runs are handed to `manage.py streamworker` processes over the Redis channel layer), or a
# dotted path to a Launcher class.
STREAMSCOPE_LAUNCHER = os.environ.get("STREAMSCOPE_LAUNCHER", "asyncio")
# How many runs one stream worker executes at once before it leaves new ones to other workers.
STREAMSCOPE_WORKER_MAX_RUNS = int(os.environ.get("STREAMSCOPE_WORKER_MAX_RUNS", "500"))
# Flush buffered events to the database and the channel layer this often; with many runs in one
# process the interval grows towards the maximum (streams/pipeline/flush_clock.py, docs/performance.md).
STREAMSCOPE_FLUSH_INTERVAL_MS = float(os.environ.get("STREAMSCOPE_FLUSH_INTERVAL_MS", "25"))
STREAMSCOPE_FLUSH_INTERVAL_MAX_MS = float(os.environ.get("STREAMSCOPE_FLUSH_INTERVAL_MAX_MS", "100"))
STREAMSCOPE_FLUSH_MAX_EVENTS = int(os.environ.get("STREAMSCOPE_FLUSH_MAX_EVENTS", "500"))
# Limits that protect the server from one bad upstream or one busy user.
STREAMSCOPE_MAX_EVENT_BYTES = int(os.environ.get("STREAMSCOPE_MAX_EVENT_BYTES", str(8 * 1024 * 1024)))
STREAMSCOPE_MAX_EVENTS_PER_RUN = int(os.environ.get("STREAMSCOPE_MAX_EVENTS_PER_RUN", "200000"))
STREAMSCOPE_MAX_RUN_SECONDS = float(os.environ.get("STREAMSCOPE_MAX_RUN_SECONDS", "3600"))
STREAMSCOPE_MAX_ACTIVE_RUNS_PER_USER = int(os.environ.get("STREAMSCOPE_MAX_ACTIVE_RUNS_PER_USER", "8"))
STREAMSCOPE_MAX_IMPORT_BYTES = int(os.environ.get("STREAMSCOPE_MAX_IMPORT_BYTES", str(50 * 1024 * 1024)))
STREAMSCOPE_MAX_INPUT_CHARS = int(os.environ.get("STREAMSCOPE_MAX_INPUT_CHARS", "100000"))
# Seconds without a byte from upstream before a run fails as stalled.
STREAMSCOPE_STALL_TIMEOUT_S = float(os.environ.get("STREAMSCOPE_STALL_TIMEOUT_S", "60"))
STREAMSCOPE_LOGIN_MAX_FAILURES = int(os.environ.get("STREAMSCOPE_LOGIN_MAX_FAILURES", "5"))
STREAMSCOPE_LOGIN_LOCKOUT_S = int(os.environ.get("STREAMSCOPE_LOGIN_LOCKOUT_S", "300"))
# A run whose process has not written a heartbeat for this long is taken over by another process.
STREAMSCOPE_STALE_AFTER_S = float(os.environ.get("STREAMSCOPE_STALE_AFTER_S", "10"))
STREAMSCOPE_RECOVERY_INTERVAL_S = float(os.environ.get("STREAMSCOPE_RECOVERY_INTERVAL_S", "2"))
STREAMSCOPE_CONNECT_TIMEOUT_S = float(os.environ.get("STREAMSCOPE_CONNECT_TIMEOUT_S", "10"))
# A file to append one line of timings per direct gateway request to (bench/gateway.py); off when empty.
STREAMSCOPE_GATEWAY_TIMINGS = os.environ.get("STREAMSCOPE_GATEWAY_TIMINGS", "")
# Events of runs older than this many days are deleted (summaries, outputs, metrics, flags and
# verdicts stay; pinned runs keep theirs) by the housekeeping loop, at most once an hour. Unset: kept forever.
STREAMSCOPE_EVENT_RETENTION_DAYS = (int(os.environ["STREAMSCOPE_EVENT_RETENTION_DAYS"])
                                    if os.environ.get("STREAMSCOPE_EVENT_RETENTION_DAYS", "").strip() else None)
STREAMSCOPE_PRUNE_INTERVAL_S = float(os.environ.get("STREAMSCOPE_PRUNE_INTERVAL_S", "3600"))
# The garbage collector's thresholds and, for benchmarks, a JSON file its pauses are summed up in
# (dashboard/garbage_collector.py; an empty threshold keeps Python's 700,10,10). At 700, events
# buffered for a flush (up to 100 ms) outlive two young collections and are promoted, so full
# collections of the whole heap ran every 2-5 s with 1,000 runs (250-800 ms each, ~11% of the
# process's CPU); at 10,000 most of them are freed before any collection sees them
# (docs/performance.md, bench/many.py).
STREAMSCOPE_GC_THRESHOLD = os.environ.get("STREAMSCOPE_GC_THRESHOLD", "10000,10,10")
STREAMSCOPE_GC_LOG = os.environ.get("STREAMSCOPE_GC_LOG", "")
_garbage_collector.configure(STREAMSCOPE_GC_THRESHOLD, STREAMSCOPE_GC_LOG)
# glibc's malloc arenas (dashboard/garbage_collector.py; empty, or MALLOC_ARENA_MAX set: glibc decides). With one, the
# memory the database thread frees serves the event loop's allocations too: bench/many.py's peak
# fell from ~200 to ~150 KiB per run (docs/performance.md, eleventh session). Set here, before the
# process starts the threads that would get arenas of their own.
STREAMSCOPE_MALLOC_ARENAS = os.environ.get("STREAMSCOPE_MALLOC_ARENAS", "1")
_garbage_collector.limit_malloc_arenas(STREAMSCOPE_MALLOC_ARENAS)

if PRODUCTION:
    SECURE_SSL_REDIRECT = os.environ.get("DJANGO_SECURE_SSL_REDIRECT", "1") == "1"
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
