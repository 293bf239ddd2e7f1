"""HTTP sessions for the bridge's outbound calls (UPay and the stores).

One ``requests.Session`` per remote party and process: its connection pool keeps connections
alive between jobs, where a bare ``requests.request`` (what the ``woocommerce`` package calls)
opens a new connection, and builds a new session, for every call.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from .errors import StoreResponseError
from urllib3.util.retry import Retry

#: Connections kept per host; the worker threads of one process share them.
POOL_SIZE = 64


class Session(requests.Session):
    """A session that reads the proxy and CA-bundle environment once per host, not per call.

    ``requests`` looks at every environment variable (twice) and for a ``.netrc`` file on each
    request; the environment of a running process does not change, so the answer is kept.
    """

    def __init__(self) -> None:
        super().__init__()
        self._env_cache: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._env_lock = threading.Lock()

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        if proxies:  # explicit proxies for this call: nothing to cache
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, stream, verify, cert)
        with self._env_lock:
            found = self._env_cache.get(key)
        if found is None:
            found = super().merge_environment_settings(url, proxies, stream, verify, cert)
            with self._env_lock:
                self._env_cache[key] = found
        # Callers may change the dict they get (requests does not, but be safe).
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in found.items()}


def new_session(*, retry_connect: int = 0) -> Session:
    """A session; ``retry_connect`` retries only connections that were never made (nothing was
    sent), so a POST is never sent twice by the transport."""
    session = Session()
    retry = Retry(total=retry_connect, connect=retry_connect, read=0, status=0, other=0,
                  redirect=0, backoff_factor=0.2, allowed_methods=None, raise_on_status=False,
                  respect_retry_after_header=False)
    for prefix in ("https://", "http://"):
        session.mount(prefix, HTTPAdapter(max_retries=retry, pool_connections=4,
                                          pool_maxsize=POOL_SIZE))
    return session


class SessionCache:
    """One session per key (a store id, an API base URL) in this process."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Session:
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = self._sessions[key] = new_session(**self._options)
            return session

    def drop(self, key: str) -> None:
        with self._lock:
            session = self._sessions.pop(key, None)
        if session is not None:
            session.close()


def redirect_location(resp: requests.Response) -> str | None:
    """Where a 3xx answer points, fit for an error message; None when ``resp`` is not a 3xx.

    The store calls never follow redirects (the adapters say why); this only names the address
    for the merchant. A relative ``Location`` is made absolute against the request's URL. Only
    scheme, host, port and path are kept: the query may repeat the request's own OAuth
    parameters (a server-level redirect keeps it), and user info may hold a password.
    "" when the answer names no address.
    """
    if not 300 <= resp.status_code < 400:
        return None
    location = resp.headers.get("Location", "").strip()
    if not location:
        return ""
    try:
        parts = urlsplit(urljoin(resp.url or "", location))
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # e.g. an unclosed IPv6 bracket or a port out of range
        return "an address that is not a valid URL"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))[:300]


def refuse_redirect(resp: requests.Response, who: str) -> None:
    """StoreResponseError when ``resp`` is a 3xx, which store calls never follow.

    Following it would send the request (keys, signature, app token, order data) to an address
    the store-URL check never saw. A moved site, a forced https or a canonical host gives the
    same answer on every try until the merchant changes the address: a permanent error.
    """
    location = redirect_location(resp)
    if location is not None:
        raise StoreResponseError(
            f"{who} answered with a redirect (HTTP {resp.status_code}) to "
            f"{location or 'no address'}; the bridge does not follow redirects: update the "
            "store URL to the final address", resp.status_code, "redirect")
