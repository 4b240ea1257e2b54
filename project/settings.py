"""Settings for the voiceconv example project.

Everything comes from the environment, with defaults that run on a laptop with nothing
installed: SQLite and the in-memory channel layer. Set ``DATABASE_URL`` (PostgreSQL) and
``REDIS_URL`` (channels_redis) for anything with more than one process.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-insecure-key-change-me")
ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "*").split(",") if h]
CSRF_TRUSTED_ORIGINS = [
    o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o
]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "voiceconv",
    "project",
]
# More apps from the environment (comma-separated), e.g. a test app with extra tools.
INSTALLED_APPS += [a for a in os.environ.get("EXTRA_INSTALLED_APPS", "").split(",") if a]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's CSS) under daphne and uvicorn too, not only runserver.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

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

# Connections are kept (and health-checked) rather than opened per query: each call's writer
# saves turns from a thread pool, and a new connection per write would dominate its cost.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Concurrent writers (the transcript writers, the admin) wait for each other rather than
    # fail: a generous busy timeout, and write transactions that take the lock when they
    # begin (a deferred one that reads first cannot wait for the lock when it then writes).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    )
    # A file, not memory, so that end-to-end tests' server process shares the test database.
    # One file per test run, so that concurrent runs do not share it.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"voiceconv-test-{os.getpid()}.sqlite3")
    }

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # The client's socket timeout must outlast the layer's 5 s blocking receive
            # (redis' default is 5 s too): see voiceconv.layers.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 10}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# WhiteNoise serves what `collectstatic` put in STATIC_ROOT and, so that the example works
# without that step, the apps' own static folders as well.
WHITENOISE_USE_FINDERS = True
# ... and says nothing about a STATIC_ROOT that `collectstatic` has not made yet.
warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Credentials used by the app (read by voiceconv through these settings names).
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
TWILIO_ACCOUNT_SID = os.environ.get("TWILIO_ACCOUNT_SID", "")
TWILIO_AUTH_TOKEN = os.environ.get("TWILIO_AUTH_TOKEN", "")

VOICECONV: dict[str, object] = {
    "PUBLIC_URL": os.environ.get("PUBLIC_URL", ""),
}
# Any VOICECONV key can be set from the environment as VOICECONV_<KEY>, its value JSON
# (VOICECONV_MAX_CALL_SECONDS=600, VOICECONV_GREETING='"Hi!"'); a non-JSON value is a string.
for _name, _value in os.environ.items():
    if _name.startswith("VOICECONV_") and _name != "VOICECONV_LOG_LEVEL":
        try:
            VOICECONV[_name[len("VOICECONV_") :]] = json.loads(_value)
        except ValueError:
            VOICECONV[_name[len("VOICECONV_") :]] = _value

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "voiceconv": {
            "handlers": ["console"],
            "level": os.environ.get("VOICECONV_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
    },
}
