"""HTTP sessions for the bridge's outbound calls (UPay and the stores).

One ``requests.Session`` per remote party and process: its connection pool keeps connections
alive between jobs, where a bare ``requests.request`` (what the ``woocommerce`` package calls)
opens a new connection, and builds a new session, for every call.
"""

from __future__ import annotations

import re
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from .errors import (StoreAuthError, StoreError, StoreRateLimitError, StoreResponseError,
                     StoreServerError)
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


# -- what a failed answer means: try again later, or not until someone changes something ------

#: 4xx answers that mean "not now" rather than "not this": 408 Request Timeout (the server gave
#: up waiting for the request), 425 Too Early (RFC 8470) and 429 Too Many Requests (RFC 6585).
#: The request was not acted on, and the same call may succeed later, like a 5xx. 409 Conflict
#: is not one: a conflict with the resource's state does not pass by waiting, and neither
#: WooCommerce's REST API nor Saleor's GraphQL answers it for the calls the bridge makes.
TRY_LATER = frozenset({408, 425, 429})

_DELTA_SECONDS = re.compile(r"[0-9]{1,9}")


def retry_after_seconds(resp: requests.Response) -> float | None:
    """The answer's ``Retry-After`` as seconds from now; None when it has none that reads.

    RFC 9110 §10.2.3: delta-seconds (digits only: not "1e3", "inf" or "-5") or an HTTP-date.
    A date is measured against the answer's own ``Date`` header when there is one, so a server
    whose clock is off still means what it says; a date already past is 0.
    """
    value = resp.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    when = _http_date(value)
    if when is None:
        return None
    now = _http_date(resp.headers.get("Date", "")) or time.time()
    return max(0.0, when - now)


def _http_date(value: str) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp() if value.strip() else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def transient_error(resp: requests.Response, message: str, code: str = "") -> StoreError | None:
    """The transient error for an answer that says "try later", whatever its body; else None.

    429 is a rate limiter (the host's, a CDN's, a security plugin's, Saleor Cloud's): nothing
    was done. 5xx, 408 and 425 are a server or a proxy that could not answer now. Either may
    carry ``Retry-After`` (WordPress's maintenance page sends 600): it rides on the error.
    """
    status = resp.status_code
    if status == 429:
        return StoreRateLimitError(message, status, code, retry_after_seconds(resp))
    if status >= 500 or status in TRY_LATER:
        return StoreServerError(message, status, code, retry_after_seconds(resp))
    return None


def not_json_error(resp: requests.Response, who: str, api: str) -> StoreError:
    """The error for an answer whose body is not JSON: a page from something in front of
    ``api`` (a firewall, a security plugin, a proxy, a maintenance or caching page), not the
    API itself (woocommerce.md §3.4), classified by its status as the API's own answers are.

    * 5xx, 408, 425, 429 (a WAF's or maintenance 503 included): transient, with Retry-After.
    * 401/403: a StoreAuthError, as the API's own 401/403 (not transient): a security plugin,
      a WAF or password protection refuses the bridge, and does so on every try until the
      merchant lets the bridge through.
    * 404 and any other 4xx: permanent; the page says the API is not reachable at this address
      (a rule hiding ``/wp-json/``, a moved site), which no retry changes.
    * a 2xx page (a caching plugin's copy of the home page): transient, as before; the cache
      may be purged.
    Every message starts "<who> answered HTTP <status> with a page that is not JSON".
    """
    status = resp.status_code
    what = f"{who} answered HTTP {status} with a page that is not JSON"
    if status < 400 or status >= 500 or status in TRY_LATER:
        text = f"{what}: too many requests (rate limited)" if status == 429 else what
        return (transient_error(resp, text, "not_json")
                or StoreServerError(text, status, "not_json", retry_after_seconds(resp)))
    if status in (401, 403):
        return StoreAuthError(
            f"{what}: a firewall, security plugin or password protection in front of {api} "
            "refuses the bridge; let the bridge's requests through", status, "not_json")
    if status == 404:
        return StoreResponseError(
            f"{what}: {api} is not at this address (a rule or plugin hiding it, or a moved "
            "site); check the store URL", status, "not_json")
    return StoreResponseError(
        f"{what}: something in front of {api} (a firewall, security plugin or proxy) refused "
        "the request", status, "not_json")
