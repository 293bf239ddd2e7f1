"""Settings, read from the environment once when the app or a worker starts.

Every variable is optional; the defaults give the embedded layout (SQLite database and SQLite
job queue in one data directory, no server to install). The README lists them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError

PREFIX = "UPAY_BRIDGE_"

# UPay's hosts as the official plugins use them (upay-api.md §1); both are settings because
# UPay itself publishes more than one name for each and tests point them at a local fake.
DEFAULT_UPAY_SANDBOX_URL = "https://sandboxapi.upayments.com/api/v1/"
DEFAULT_UPAY_PRODUCTION_URL = "https://apiv2api.upayments.com/api/v1/"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    queue_url: str
    public_url: str
    queue_name: str = "upay-bridge"
    upay_sandbox_url: str = DEFAULT_UPAY_SANDBOX_URL
    upay_production_url: str = DEFAULT_UPAY_PRODUCTION_URL
    secret_keys: tuple[str, ...] = ()
    workers: int = 8
    upay_connect_timeout: float = 5.0
    upay_read_timeout: float = 30.0
    store_connect_timeout: float = 5.0
    store_read_timeout: float = 30.0
    lease_seconds: float = 300.0
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 1800.0
    max_retries: int = 12
    sweep_grace_seconds: float = 60.0
    max_body_bytes: int = 1024 * 1024
    status_rate_limit: int = 30  # UPay status calls per window per API key (upay-api.md §5.1)
    status_rate_window: float = 60.0
    allow_private_store_urls: bool = False  # only for local tests: see bridge/netguard.py
    saleor_allowed_api_urls: str = ""  # a regex; empty: any Saleor may install the app
    # Origins of Saleor Dashboards served apart from their API (self-hosted, e.g. the Dashboard
    # on :9000 and the API on :8000): the app page trusts a handshake from its Saleor's own
    # origin and from these, and from no one else.
    saleor_dashboard_origins: tuple[str, ...] = ()
    log_level: str = "INFO"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def with_overrides(self, **overrides: Any) -> "Settings":
        return replace(self, **overrides)


class SettingsError(ConfigError, ValueError):
    """A setting that the bridge cannot work with (a ``ConfigError``, and a ``ValueError`` as
    settings errors always were)."""


def _origins(raw: str) -> tuple[str, ...]:
    """Comma-separated origins (scheme://host[:port]); anything else is a configuration error."""
    out = []
    for item in (x.strip().rstrip("/") for x in raw.split(",")):
        if not item:
            continue
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path \
                or parts.query or parts.fragment or "@" in parts.netloc:
            raise SettingsError(f"UPAY_BRIDGE_SALEOR_DASHBOARD_ORIGINS: {item!r} is not an "
                                "origin such as https://dashboard.example.com")
        out.append(f"{parts.scheme}://{parts.netloc.lower()}")
    return tuple(out)


def _number(env: Mapping[str, str], name: str, default: Any, kind: type, minimum: float,
            *, strict: bool) -> Any:
    """A number from the environment: one the bridge cannot work with (not a number, zero or
    negative where that makes no sense) is a configuration error naming the variable, rather
    than a value accepted at start that breaks every request later (``requests`` refuses a
    timeout of 0, a consumer with 0 workers runs no job at all)."""
    raw = env.get(PREFIX + name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        raise SettingsError(f"{PREFIX}{name} must be a{'n integer' if kind is int else ' number'}"
                            f", got {raw.strip()[:40]!r}") from None
    if value != value or value in (float("inf"), float("-inf")) \
            or (value <= minimum if strict else value < minimum):
        bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
        raise SettingsError(f"{PREFIX}{name} must be {bound}, got {raw.strip()[:40]!r}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0,
           strict: bool = True) -> float:
    return _number(env, name, default, float, minimum, strict=strict)


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1) -> int:
    return _number(env, name, default, int, minimum, strict=False)


def _public_url(raw: str) -> str:
    """The bridge's public base URL: scheme and host, optionally a path prefix (a proxy that
    serves the bridge under one); every callback and webhook URL is this plus a path, so a
    query, a fragment or user info would break (or leak into) all of them."""
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = parts._replace(scheme="")
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment or "@" in parts.netloc or "?" in value or "#" in value:
        raise SettingsError(f"{PREFIX}PUBLIC_URL must be the bridge's base URL, such as "
                            "https://pay.example.com (no query, fragment or user name), "
                            f"got {value[:80]!r}")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, "", ""))


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    env = os.environ if env is None else env
    data_dir = Path(overrides.pop("data_dir", None) or env.get(PREFIX + "DATA_DIR")
                    or "upay-bridge-data").resolve()
    keys = tuple(k.strip() for k in env.get(PREFIX + "SECRET_KEY", "").split(",") if k.strip())
    host_port = "http://127.0.0.1:8000"
    settings = Settings(
        data_dir=data_dir,
        database_url=env.get(PREFIX + "DATABASE_URL") or f"sqlite:///{data_dir / 'bridge.db'}",
        queue_url=env.get(PREFIX + "QUEUE_URL") or f"sqlite:///{data_dir / 'queue.db'}",
        public_url=_public_url(env.get(PREFIX + "PUBLIC_URL") or host_port),
        queue_name=env.get(PREFIX + "QUEUE_NAME") or "upay-bridge",
        upay_sandbox_url=env.get(PREFIX + "UPAY_SANDBOX_URL") or DEFAULT_UPAY_SANDBOX_URL,
        upay_production_url=env.get(PREFIX + "UPAY_PRODUCTION_URL") or DEFAULT_UPAY_PRODUCTION_URL,
        secret_keys=keys,
        workers=_int(env, "WORKERS", 8, minimum=1),
        upay_connect_timeout=_float(env, "UPAY_CONNECT_TIMEOUT", 5.0),
        upay_read_timeout=_float(env, "UPAY_READ_TIMEOUT", 30.0),
        store_connect_timeout=_float(env, "STORE_CONNECT_TIMEOUT", 5.0),
        store_read_timeout=_float(env, "STORE_READ_TIMEOUT", 30.0),
        lease_seconds=_float(env, "LEASE_SECONDS", 300.0),
        retry_base_seconds=_float(env, "RETRY_BASE_SECONDS", 5.0),
        retry_max_seconds=_float(env, "RETRY_MAX_SECONDS", 1800.0),
        max_retries=_int(env, "MAX_RETRIES", 12, minimum=0),
        sweep_grace_seconds=_float(env, "SWEEP_GRACE_SECONDS", 60.0, strict=False),
        max_body_bytes=_int(env, "MAX_BODY_BYTES", 1024 * 1024, minimum=1),
        status_rate_limit=_int(env, "STATUS_RATE_LIMIT", 30, minimum=1),
        status_rate_window=_float(env, "STATUS_RATE_WINDOW", 60.0),
        saleor_allowed_api_urls=env.get(PREFIX + "SALEOR_ALLOWED_API_URLS", ""),
        saleor_dashboard_origins=_origins(env.get(PREFIX + "SALEOR_DASHBOARD_ORIGINS", "")),
        allow_private_store_urls=env.get(PREFIX + "ALLOW_PRIVATE_STORE_URLS", "") in ("1", "true", "yes"),
        log_level=env.get(PREFIX + "LOG_LEVEL", "INFO"),
    )
    return settings.with_overrides(**overrides) if overrides else settings
