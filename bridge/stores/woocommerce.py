"""WooCommerce: signed webhooks in, REST API v3 (through the ``woocommerce`` package) out.

The package returns raw ``requests`` responses and never raises on 4xx/5xx (woocommerce.md §5),
so every call goes through ``_call``, which checks the status and maps WooCommerce's error codes.
"""

from __future__ import annotations

import base64
import functools
import hmac
import json
import logging
import re
from typing import Any, Callable, Mapping
from urllib.parse import urlencode

import requests
import simplejson
from woocommerce import API

from ..digests import hmac_sha256
from ..transport import (SessionCache, not_json_error, refuse_redirect, retry_after_seconds,
                         transient_error)

from ..errors import (OrderNotFoundError, SignatureError, StoreAuthError,
                      StoreConnectionError, StoreRateLimitError, StoreResponseError)
from ..models import Order
from ..registry import StoreRecord
from . import PaidResult, WebhookEvent
from .payload import decode_json
from .woocommerce_payload import order_from_woocommerce

logger = logging.getLogger(__name__)

ORDER_CREATED = "order.created"
_PING = re.compile(rb"^webhook_id=\d+$")
CATCH_UP_PAGE_SIZE = 50
_WEBHOOK_PAGES = 10  # 100 webhooks a page; a store has a handful


# wp_specialchars_decode($text, ENT_QUOTES): numeric forms are first normalised, then a single
# strtr() pass over these entities only. Not html.unescape(), which also decodes "&copy;",
# "&#65;" and legacy entities without ";" ("&amp", "&LT"), none of which WordPress touches.
_WP_ENTITY_NORMALISE = (
    (re.compile(r"&#0*39;"), "&#039;"), (re.compile(r"&#x0*27;", re.I), "&#x27;"),
    (re.compile(r"&#0*34;"), "&#034;"), (re.compile(r"&#x0*22;", re.I), "&#x22;"),
    (re.compile(r"&#0*60;"), "&#060;"), (re.compile(r"&#0*62;"), "&#062;"),
    (re.compile(r"&#0*38;"), "&#038;"), (re.compile(r"&#x0*26;", re.I), "&#x26;"),
)
_WP_ENTITIES = {
    "&#039;": "'", "&#x27;": "'", "&quot;": '"', "&#034;": '"', "&#x22;": '"',
    "&lt;": "<", "&#060;": "<", "&gt;": ">", "&#062;": ">", "&amp;": "&", "&#038;": "&",
    "&#x26;": "&",
}
_WP_ENTITY_RE = re.compile("|".join(re.escape(k) for k in sorted(_WP_ENTITIES, key=len,
                                                                   reverse=True)))


def wp_specialchars_decode(text: str) -> str:
    """WordPress ``wp_specialchars_decode($text, ENT_QUOTES)`` (woocommerce.md §1.3)."""
    if "&" not in text:
        return text
    for pattern, replacement in _WP_ENTITY_NORMALISE:
        text = pattern.sub(replacement, text)
    return _WP_ENTITY_RE.sub(lambda m: _WP_ENTITIES[m.group(0)], text)


def webhook_signature(body: bytes, secret: str) -> str:
    """WooCommerce's ``X-WC-Webhook-Signature``: base64 of the raw HMAC-SHA256 of the body.

    WooCommerce runs the secret through ``wp_specialchars_decode(…, ENT_QUOTES)`` before
    signing (woocommerce.md §1.3), so ``&amp;`` typed into the admin form signs as ``&``, while
    any other entity-like text (``&copy;``, ``&amp`` without ``;``) signs as typed.
    """
    key = wp_specialchars_decode(secret)
    digest = hmac_sha256(key.encode("utf-8"), body)
    return base64.b64encode(digest).decode("ascii")


# One kept-alive session per store and process, shared by every job of that store.
_SESSIONS = SessionCache()


class _RestClient(API):
    """The package's client, sending through a shared session.

    The package calls ``requests.request`` for every call: a new session and a new TCP (and
    TLS) connection each time. This is the package's ``__request``, unchanged but for the
    session it sends through, and for redirects, which it never follows.
    """

    def __init__(self, *, session: requests.Session, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._session = session

    def _API__request(self, method: str, endpoint: str, data: Any, params: Any = None,
                      **kwargs: Any) -> requests.Response:
        params = {} if params is None else params
        url = self._API__get_url(endpoint)
        auth = None
        headers = {"user-agent": f"{self.user_agent}", "accept": "application/json"}
        if self.is_ssl and not self.query_string_auth:
            auth = requests.auth.HTTPBasicAuth(self.consumer_key, self.consumer_secret)
        elif self.is_ssl:
            params.update({"consumer_key": self.consumer_key,
                           "consumer_secret": self.consumer_secret})
        else:  # OAuth 1.0a over http, signed over the URL with its query string
            url = self._API__get_oauth_url(f"{url}?{urlencode(params)}", method, **kwargs)
        if data is not None:
            data = json.dumps(data, ensure_ascii=False).encode("utf-8")
            headers["content-type"] = "application/json;charset=utf-8"
        # Never follow a redirect (requests does by default, and so does the package): it would
        # send this signed request (the OAuth query over http, a PUT's order data) to wherever
        # the store points, an address check_store_url never saw. ``_checked`` reports it.
        kwargs["allow_redirects"] = False
        return self._session.request(method=method, url=url, verify=self.verify_ssl, auth=auth,
                                     params=params, data=data, timeout=self.timeout,
                                     headers=headers, **kwargs)


class WooCommerceStore:
    kind = "woocommerce"
    plugin_src = "woocommerce"

    def __init__(self, record: StoreRecord, *, timeout: tuple[float, float] = (5.0, 30.0)) -> None:
        self.record = record
        self._timeout = timeout

    @functools.cached_property
    def _api(self) -> _RestClient:
        # Made on first use: a webhook is checked and read on every delivery of a burst with
        # no REST call at all.
        return _RestClient(
            session=_SESSIONS.get(f"{self.record.id} {self.record.url}"), url=self.record.url,
            consumer_key=self.record.secrets["consumer_key"],
            consumer_secret=self.record.secrets["consumer_secret"], version="wc/v3",
            timeout=self._timeout, user_agent="upay-bridge (WooCommerce REST client)")

    # -- webhooks in ---------------------------------------------------------------------------

    def is_ping(self, headers: Mapping[str, str], body: bytes) -> bool:
        # The activation ping is unsigned, carries no X-WC headers, and must get exactly 200
        # (woocommerce.md §1.5); anything else here is a delivery and must be signed.
        return "X-WC-Webhook-Topic" not in headers and bool(_PING.match(body.strip()))

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> None:
        given = headers.get("X-WC-Webhook-Signature", "")
        if not given:
            raise SignatureError("missing X-WC-Webhook-Signature")
        expected = webhook_signature(body, self.record.secrets["webhook_secret"])
        if not hmac.compare_digest(expected.encode("ascii"), given.strip().encode("utf-8", "replace")):
            raise SignatureError("X-WC-Webhook-Signature does not match the body")

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        topic = headers.get("X-WC-Webhook-Topic", "")
        delivery_id = headers.get("X-WC-Webhook-Delivery-ID", "")[:64]
        if topic != ORDER_CREATED:
            return WebhookEvent(topic=topic[:60], delivery_id=delivery_id, order=None)
        return WebhookEvent(topic=topic, delivery_id=delivery_id, order=self.parse_order(body))

    def parse_order(self, body: bytes | str) -> Order:
        return order_from_woocommerce(decode_json(body))

    # -- REST API out --------------------------------------------------------------------------

    def get_order(self, order_id: str) -> dict[str, Any]:
        return self._call("get", f"orders/{int(order_id)}")

    def write_invoice_meta(self, order_id: str, meta: Mapping[str, str]) -> None:
        # PUT with meta keys only: WooCommerce updates an existing key or adds it, so sending the
        # same meta twice is harmless (woocommerce.md §3.2).
        data = {"meta_data": [{"key": k, "value": v} for k, v in meta.items()]}
        self._call("put", f"orders/{int(order_id)}", data)

    def add_note(self, order_id: str, text: str, *, customer_note: bool) -> str:
        note = self._call("post", f"orders/{int(order_id)}/notes",
                          {"note": text, "customer_note": bool(customer_note)})
        return str(note.get("id", ""))

    def find_note(self, order_id: str, contains: str) -> str | None:
        notes = self._call("get", f"orders/{int(order_id)}/notes", params={"type": "any"})
        for note in notes if isinstance(notes, list) else []:
            if isinstance(note, dict) and contains in str(note.get("note", "")):
                return str(note.get("id", ""))
        return None

    def mark_paid(self, order_id: str, transaction_id: str, *, paid_status: str = "processing",
                  reopen_cancelled: bool = True,
                  before_reopen: Callable[[], None] | None = None) -> PaidResult:
        """Move the order to paid the way WooCommerce accepts it; safe to repeat.

        ``set_paid`` only acts while the order needs payment (pending or failed); WooCommerce
        silently ignores it on an on-hold order, which needs an explicit status instead
        (woocommerce.md §3.2). A cancelled order (the hold-stock timer) is re-opened the same way.
        """
        order = self.get_order(order_id)
        status = str(order.get("status", ""))
        if status in ("processing", "completed"):
            same = str(order.get("transaction_id", "")) == transaction_id
            return PaidResult("already_paid" if same else "paid_otherwise", status)
        if status in ("pending", "failed"):
            data: dict[str, Any] = {"set_paid": True, "transaction_id": transaction_id}
        elif status == "on-hold" or (status == "cancelled" and reopen_cancelled):
            data = {"status": paid_status, "transaction_id": transaction_id}
        elif status == "cancelled":
            return PaidResult("cancelled_left", status)
        else:
            return PaidResult("left", status)
        if status == "cancelled" and before_reopen is not None:
            before_reopen()
        updated = self._call("put", f"orders/{int(order_id)}", data)
        new_status = str(updated.get("status", "")) if isinstance(updated, dict) else ""
        if new_status not in ("processing", "completed"):
            raise StoreResponseError(f"the store left the order {new_status or 'unchanged'} "
                                     "after marking it paid", 200, "not_paid")
        return PaidResult("reopened" if status == "cancelled" else "paid", new_status)

    def check_connection(self) -> None:
        """One cheap authenticated read: raises a StoreError saying what is wrong."""
        self._call("get", "orders", params={"per_page": "1"})

    def customer_order_url(self, order: Order) -> str:
        # WooCommerce's "order received" page; the order key lets a guest see it.
        return (f"{self.record.url}/checkout/order-received/{order.external_id}/"
                f"?key={order.order_key}")

    # -- webhook upkeep and catch-up (bridge/store_health.py) ----------------------------------

    def webhooks_for(self, delivery_url: str) -> list[dict[str, Any]]:
        """Every webhook of the store, whatever its status, that delivers to ``delivery_url``."""
        found: list[dict[str, Any]] = []
        for page in range(1, _WEBHOOK_PAGES + 1):
            hooks = self._call("get", "webhooks", params={"status": "all", "per_page": "100",
                                                          "page": str(page), "orderby": "id",
                                                          "order": "asc"})
            hooks = hooks if isinstance(hooks, list) else []
            found += [h for h in hooks if isinstance(h, dict)
                      and _same_url(str(h.get("delivery_url", "")), delivery_url)]
            if len(hooks) < 100:
                break
        return found

    def ensure_webhook(self, topic: str, delivery_url: str, secret: str, name: str) -> dict[str, Any]:
        """One active webhook for ``topic`` delivering to ``delivery_url`` with ``secret``.

        An existing one (any status) is updated in place, so calling this again, or after a
        POST whose answer was lost, never makes a second webhook. WooCommerce pings the URL
        synchronously inside the POST (woocommerce.md §1.5), so the bridge must already know
        the store, and it ignores ``status`` in a create body (§3.3): new webhooks are active.
        """
        existing = [h for h in self.webhooks_for(delivery_url)
                    if str(h.get("topic", "")).lower() == topic.lower()]
        if not existing:
            return self._call("post", "webhooks", {"name": name, "topic": topic,
                                                   "delivery_url": delivery_url, "secret": secret})
        first: dict[str, Any] | None = None
        for hook in existing:
            # Every duplicate gets the secret too: one signing with an old secret would fail
            # each delivery and be disabled by WooCommerce.
            updated = self._call("put", f"webhooks/{int(hook['id'])}",
                                 {"name": name, "secret": secret, "status": "active"})
            first = first or updated
        assert first is not None
        return first

    def remove_webhooks(self, delivery_url: str) -> int:
        """Delete (``force=true``: webhooks have no trash) every webhook delivering to the URL."""
        removed = 0
        for hook in self.webhooks_for(delivery_url):
            try:
                self._call("delete", f"webhooks/{int(hook['id'])}", params={"force": "true"})
            except StoreResponseError as exc:
                if exc.code != "woocommerce_rest_shop_webhook_invalid_id":
                    raise
                continue  # deleted meanwhile
            removed += 1
        return removed

    def reactivate_webhook(self, webhook_id: int) -> dict[str, Any]:
        # WooCommerce keeps failure_count (woocommerce.md §1.6): one more failed delivery
        # disables it again unless a delivery succeeds first.
        return self._call("put", f"webhooks/{int(webhook_id)}", {"status": "active"})

    def orders_modified_since(self, after_iso: str, page: int, *,
                              statuses: tuple[str, ...] = ("pending", "on-hold")) -> list[dict[str, Any]]:
        """One page (50, oldest first) of the orders awaiting payment modified after ``after_iso``.

        ``after_iso`` is UTC, ``YYYY-MM-DDTHH:MM:SS``: ``dates_are_gmt`` makes WooCommerce
        compare it with the GMT dates rather than the site's local time.
        """
        orders = self._call("get", "orders", params={
            "status": ",".join(statuses), "modified_after": after_iso, "dates_are_gmt": "true",
            "orderby": "date", "order": "asc", "per_page": str(CATCH_UP_PAGE_SIZE),
            "page": str(int(page))})
        return [o for o in orders if isinstance(o, dict)] if isinstance(orders, list) else []

    def _call(self, method: str, endpoint: str, data: Any = None,
              params: Mapping[str, str] | None = None) -> Any:
        try:
            if method in ("post", "put"):
                resp = getattr(self._api, method)(endpoint, data)
            else:
                resp = getattr(self._api, method)(endpoint, params=dict(params or {}))
        except requests.exceptions.ConnectTimeout:
            raise StoreConnectionError("could not connect to the store (timeout)") from None
        except requests.exceptions.ConnectionError as exc:
            raise StoreConnectionError(f"could not reach the store: {type(exc).__name__}") from None
        except requests.exceptions.Timeout:
            raise StoreConnectionError("the store did not answer in time") from None
        except requests.exceptions.RequestException as exc:
            raise StoreConnectionError(f"request to the store failed: {type(exc).__name__}") from None
        return _checked(resp)


def _same_url(a: str, b: str) -> bool:
    return a.strip().rstrip("/") == b.strip().rstrip("/")


def _checked(resp: requests.Response) -> Any:
    status = resp.status_code
    refuse_redirect(resp, "the store")  # permanent: the order is parked
    try:
        body = simplejson.loads(resp.text, use_decimal=True)
    except ValueError:
        body = None
    if 200 <= status < 300 and body is not None:
        return body
    code = body.get("code", "") if isinstance(body, dict) else ""
    message = body.get("message", "") if isinstance(body, dict) else ""
    if body is None:
        # An HTML page, not WordPress's REST server (which answers every error as JSON,
        # woocommerce.md §3.4): a maintenance page, a WAF, a security plugin or a caching
        # plugin. Classified by its status like the REST API's own answers (not_json_error).
        raise not_json_error(resp, "the store", "WooCommerce's REST API")
    if status == 429:
        # A rate limiter answering in JSON (a host's, a plugin's): nothing was done, and
        # the same call succeeds later; its Retry-After is kept on the error.
        raise StoreRateLimitError(f"the store is rate limiting the bridge (HTTP 429 {code}): "
                                  f"{message}", status, code, retry_after_seconds(resp))
    transient = transient_error(resp, f"the store failed (HTTP {status} {code}): {message}", code)
    if transient is not None:  # 5xx, 408, 425
        raise transient
    if status in (401, 403):
        raise StoreAuthError(f"the store refused the API keys (HTTP {status} {code}): {message}",
                             status, code)
    if code in ("woocommerce_rest_shop_order_invalid_id", "woocommerce_rest_order_invalid_id"):
        raise OrderNotFoundError(f"the order does not exist at the store ({code})", status, code)
    raise StoreResponseError(f"the store rejected the request (HTTP {status} {code}): {message}",
                             status, code)

