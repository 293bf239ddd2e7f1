"""A faithful fake WooCommerce store: the REST API v3 and the webhook sender.

The bridge's tests and its demo run against this instead of a real WordPress. It is a real
Flask app (serve it on loopback with :meth:`FakeWooCommerce.serve`) that reproduces what the
bridge can observe of WooCommerce 7.9 on WordPress 6.1:

* REST v3 for orders, order notes and webhooks, with WooCommerce's error codes and statuses
  (including the 404-vs-400 asymmetry for unknown orders), WordPress's parameter validation
  (``rest_missing_callback_param``, ``rest_invalid_param``, ``rest_invalid_json``), PHP-style
  JSON bodies, ``X-WP-Total`` paging headers and ``_links``.
* Authentication exactly as ``WC_REST_Authentication``: Basic / query-string keys only when
  the request counts as HTTPS, otherwise OAuth 1.0a one-legged with the PHP signature
  algorithm, 15-minute timestamp window and per-key nonce store. The PyPI ``woocommerce``
  3.0.0 client verifies over plain http, and its known quirks (values containing ``/`` fail)
  are reproduced rather than papered over.
* The webhook sender: PHP ``wp_json_encode`` bodies, the seven ``X-WC-Webhook-*`` headers in
  core's order, base64 HMAC-SHA256 signatures, the same-second Delivery-ID, success only for
  200-302, no retries, disabling on the 7th consecutive failure, the unsigned ``webhook_id=N``
  ping that must get exactly 200, and an Action-Scheduler-like queue.
* Failure scripting (:class:`FaultScript`) for proxies, caches, timeouts and maintenance mode.

Sources: ``/work/shared/reference/woocommerce.md`` (sections cited as §n) and
``woocommerce-captured.md`` (real 7.9.0 traffic; it wins where the two disagree), plus the
core files they cite (``class-wc-rest-authentication.php``, the V1-V3 orders / notes /
webhooks controllers, ``class-wc-webhook-data-store.php``).

Money is ``decimal.Decimal`` throughout; JSON never sees a float except line-item ``price``,
which WooCommerce itself emits as a number.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import hmac
import html
import http.client
import json
import math
import re
import secrets
import socket
import string
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote, unquote, unquote_plus, urljoin, urlsplit, urlencode

import flask
import requests
from werkzeug.wrappers import Response

from bridge.fakes.server import SentRequest, ServedApp, serve_wsgi

__all__ = [
    "AuthCallback",
    "Delivery",
    "Fault",
    "FaultScript",
    "FakeWooCommerce",
    "WCAuthError",
    "php_filter_validate_url",
    "php_rawurlencode",
    "webhook_signature",
    "wp_json_encode",
    "wp_specialchars_decode",
]

# --------------------------------------------------------------------------------------------
# Constants taken from WooCommerce / WordPress
# --------------------------------------------------------------------------------------------

# wc_get_order_statuses() without the "wc-" prefix, in core's order; "checkout-draft" is added
# by the blocks package (label "Draft") and is therefore part of the REST enum in 7.9.
ORDER_STATUS_LABELS: dict[str, str] = {
    "pending": "Pending payment",
    "processing": "Processing",
    "on-hold": "On hold",
    "completed": "Completed",
    "cancelled": "Cancelled",
    "refunded": "Refunded",
    "failed": "Failed",
    "checkout-draft": "Draft",
}
# WC_Webhook::should_deliver() filters these out of order.created (§1.1, §1.7: 7.9 keeps
# checkout-draft out of order.created but it leaks into order.updated, issue #66995).
_NO_CREATED_WEBHOOK = {"draft", "auto-draft", "new", "checkout-draft"}
_NO_WEBHOOK = {"draft", "auto-draft", "new"}
# WC_Order::payment_complete() only acts from these (woocommerce_valid_order_statuses_for_payment_complete).
_PAYMENT_COMPLETE_FROM = ("on-hold", "pending", "failed", "cancelled")

WEBHOOK_STATUSES = ("active", "paused", "disabled")
_WEBHOOK_RESOURCES = ("coupon", "customer", "order", "product")
_WEBHOOK_EVENTS = ("created", "updated", "deleted", "restored")
_INVALID_ACTION_TOPICS = {
    "action.woocommerce_login_credentials",
    "action.woocommerce_product_csv_importer_check_import_file_path",
    "action.woocommerce_webhook_should_deliver",
}
# WC_Webhook::get_topic_hooks() (§1.9); shown as "hooks" in the REST representation.
WEBHOOK_TOPIC_HOOKS: dict[str, list[str]] = {
    "coupon.created": ["woocommerce_process_shop_coupon_meta", "woocommerce_new_coupon"],
    "coupon.updated": ["woocommerce_process_shop_coupon_meta", "woocommerce_update_coupon"],
    "coupon.deleted": ["wp_trash_post"],
    "coupon.restored": ["untrashed_post"],
    "customer.created": ["user_register", "woocommerce_created_customer", "woocommerce_new_customer"],
    "customer.updated": ["profile_update", "woocommerce_update_customer"],
    "customer.deleted": ["delete_user"],
    "order.created": ["woocommerce_new_order"],
    "order.updated": ["woocommerce_update_order", "woocommerce_order_refunded"],
    "order.deleted": ["wp_trash_post", "woocommerce_trash_order"],
    "order.restored": ["untrashed_post", "woocommerce_untrash_order"],
    "product.created": ["woocommerce_process_product_meta", "woocommerce_new_product",
                        "woocommerce_new_product_variation"],
    "product.updated": ["woocommerce_process_product_meta", "woocommerce_update_product",
                        "woocommerce_update_product_variation"],
    "product.deleted": ["wp_trash_post"],
    "product.restored": ["untrashed_post"],
}

CURRENCY_SYMBOLS: dict[str, str] = {
    "KWD": "د.ك", "SAR": "ر.س", "AED": "د.إ", "BHD": ".د.ب", "OMR": "ر.ع.", "QAR": "ر.ق",
    "USD": "$", "EUR": "€", "GBP": "£", "EGP": "EGP", "JOD": "د.ا",
}

# ASSUMPTION: gateway titles shown as payment_method_title ("upay" is the bridge's gateway id).
PAYMENT_METHOD_TITLES: dict[str, str] = {
    "upay": "UPayments",
    "cod": "Cash on delivery",
    "bacs": "Direct bank transfer",
    "cheque": "Check payments",
}

_BILLING_KEYS = ("first_name", "last_name", "company", "address_1", "address_2", "city", "state",
                 "postcode", "country", "email", "phone")
_SHIPPING_KEYS = ("first_name", "last_name", "company", "address_1", "address_2", "city", "state",
                  "postcode", "country", "phone")

DEFAULT_BILLING: dict[str, str] = {
    "first_name": "Fatima", "last_name": "Al-Sabah", "company": "",
    "address_1": "Block 3, Street 12, House 7", "address_2": "", "city": "Salmiya", "state": "",
    "postcode": "22003", "country": "KW", "email": "fatima@example.com", "phone": "+96555512345",
}

_OAUTH_REQUIRED = ("oauth_consumer_key", "oauth_timestamp", "oauth_nonce", "oauth_signature",
                   "oauth_signature_method")
_OAUTH_WINDOW = 15 * 60  # WC_REST_Authentication::check_oauth_timestamp_and_nonce()

_WWW_AUTHENTICATE = ('Basic realm="WooCommerce API. Use a consumer key in the username field and '
                     'a consumer secret in the password field."')

# WordPress's wp_die() page for maintenance mode (wp_maintenance(), 503 + Retry-After: 600).
MAINTENANCE_HTML = """<!DOCTYPE html>
<html lang="en-US">
<head>
\t<meta http-equiv="Content-Type" content="text/html; charset=utf-8" />
\t<meta name="viewport" content="width=device-width">
\t<meta name='robots' content='max-image-preview:large, noindex, follow' />
\t<title>Maintenance</title>
\t<style type="text/css">html{background:#f1f1f1;}body{background:#fff;margin:2em auto;}</style>
</head>
<body id="error-page">
\t<div class="wp-die-message"><h1>Briefly unavailable for scheduled maintenance. Check back in a minute.</h1>
</div></body>
</html>
"""

# wp_die() page WordPress shows for a fatal error (WP_Fatal_Error_Handler, 500).
CRITICAL_ERROR_HTML = """<!DOCTYPE html>
<html lang="en-US">
<head>
\t<meta http-equiv="Content-Type" content="text/html; charset=utf-8" />
\t<meta name="viewport" content="width=device-width">
\t<title>WordPress &rsaquo; Error</title>
</head>
<body id="error-page">
\t<div class="wp-die-message"><p>There has been a critical error on this website.</p>
<p><a href="https://wordpress.org/documentation/article/faq-troubleshooting/">Learn more about troubleshooting
 WordPress.</a></p></div></body>
</html>
"""

# A front-end page served by a page-caching plugin instead of the REST answer
# (woocommerce-rest-api issue 110, W3 Total Cache; wc-api-python issue 94 "JSONDecodeError").
CACHED_PAGE_HTML = """<!DOCTYPE html>
<html lang="en-US">
<head>
<meta charset="UTF-8">
<title>Fake Woo Store &#8211; Just another WordPress site</title>
</head>
<body class="home page-template-default page">
<div id="page" class="site"><main id="main"><h1>Shop</h1></main></div>
</body>
</html>
<!--
Performance optimized by W3 Total Cache. Learn more: https://www.boldgrid.com/w3-total-cache/

Page Caching using Disk: Enhanced
Served from: shop.example @ 2026-11-23 19:03:24 by W3 Total Cache
-->
"""

GATEWAY_TIMEOUT_HTML = """<html>
<head><title>504 Gateway Time-out</title></head>
<body>
<center><h1>504 Gateway Time-out</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""

_HTML_TYPE = "text/html; charset=UTF-8"
_JSON_TYPE = "application/json; charset=UTF-8"


# --------------------------------------------------------------------------------------------
# PHP / WordPress helpers (public: tests and the bridge's own tests reuse them)
# --------------------------------------------------------------------------------------------


def wp_json_encode(obj: Any) -> str:
    """PHP ``json_encode($obj)`` with flags 0, as ``wp_json_encode`` produces it.

    PHP escapes ``/`` as ``\\/`` and every non-ASCII character as ``\\uXXXX`` and writes no
    spaces (§1.3); ``json.dumps`` with these options differs only in the slash.
    """
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/")


def php_rawurlencode(value: str) -> str:
    """PHP ``rawurlencode`` (RFC 3986: everything but ``A-Za-z0-9-_.~`` is %-encoded)."""
    return quote(value, safe="")


_ENTITY_NORMALISE = (
    (re.compile(r"&#0*39;"), "&#039;"), (re.compile(r"&#x0*27;", re.I), "&#x27;"),
    (re.compile(r"&#0*34;"), "&#034;"), (re.compile(r"&#x0*22;", re.I), "&#x22;"),
    (re.compile(r"&#0*60;"), "&#060;"), (re.compile(r"&#0*62;"), "&#062;"),
    (re.compile(r"&#0*38;"), "&#038;"), (re.compile(r"&#x0*26;", re.I), "&#x26;"),
)
_ENTITY_MAP = {
    "&#039;": "'", "&#x27;": "'", "&quot;": '"', "&#034;": '"', "&#x22;": '"',
    "&lt;": "<", "&#060;": "<", "&gt;": ">", "&#062;": ">", "&amp;": "&", "&#038;": "&",
    "&#x26;": "&",
}
_ENTITY_RE = re.compile("|".join(re.escape(k) for k in sorted(_ENTITY_MAP, key=len, reverse=True)))


def wp_specialchars_decode(text: str) -> str:
    """WordPress ``wp_specialchars_decode($text, ENT_QUOTES)``.

    WC_Webhook::generate_signature() passes the secret through this first (§1.3), so a secret
    typed as ``a&amp;b`` signs with ``a&b``. Like PHP ``strtr`` it is a single pass.
    """
    if "&" not in text:
        return text
    for pattern, repl in _ENTITY_NORMALISE:
        text = pattern.sub(repl, text)
    return _ENTITY_RE.sub(lambda m: _ENTITY_MAP[m.group(0)], text)


def webhook_signature(body: bytes, secret: str) -> str:
    """``X-WC-Webhook-Signature``: base64 of the raw HMAC-SHA256 of the exact body bytes."""
    key = wp_specialchars_decode(secret).encode("utf-8")
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode("ascii")


def _php_empty(value: Any) -> bool:
    """PHP ``empty()``: null, "", "0", 0, false and empty arrays are all empty."""
    return value is None or value is False or value == "" or value == "0" or value == 0 \
        or value == {} or value == []


def _php_parse_str(query: str) -> dict[str, Any]:
    """PHP's ``$_GET`` / ``$_POST`` parsing of ``a=1&b[c]=2&d[]=3`` (last duplicate wins)."""
    result: dict[str, Any] = {}
    for part in query.split("&"):
        if not part:
            continue
        raw_key, _, raw_value = part.partition("=")
        key = unquote_plus(raw_key)
        value = unquote_plus(raw_value)
        key = key.lstrip(" ")
        if not key:
            continue
        base, subs = key, []
        bracket = key.find("[")
        if bracket > 0 and "]" in key[bracket:]:
            base = key[:bracket]
            rest = key[bracket:]
            for match in re.finditer(r"\[([^\]]*)\]", rest):
                subs.append(match.group(1))
            # PHP stops at the first character that is not an opening bracket; good enough here.
        elif bracket == 0:
            continue
        base = base.replace(".", "_").replace(" ", "_")
        if not subs:
            result[base] = value
            continue
        container = result.get(base)
        if not isinstance(container, dict):
            container = {}
            result[base] = container
        for i, sub in enumerate(subs):
            last = i == len(subs) - 1
            if sub == "":
                ints = [k for k in container if isinstance(k, int)]
                sub_key: Any = (max(ints) + 1) if ints else 0
            else:
                sub_key = int(sub) if re.fullmatch(r"-?[1-9][0-9]*|0", sub) else sub
            if last:
                container[sub_key] = value
            else:
                nxt = container.get(sub_key)
                if not isinstance(nxt, dict):
                    nxt = {}
                    container[sub_key] = nxt
                container = nxt
    return result


def _php_array_values(value: Any) -> Any:
    """Turn a PHP-style {0: a, 1: b} dict into a list (``status[]=a&status[]=b``)."""
    if isinstance(value, dict) and all(isinstance(k, int) for k in value):
        return [value[k] for k in sorted(value)]
    return value


def _sanitize_text_field(value: Any) -> str:
    """WordPress ``sanitize_text_field`` (the parts that matter for API keys)."""
    if not isinstance(value, str):
        return ""
    value = re.sub(r"<[^>]*>", "", value)
    value = re.sub(r"%[a-fA-F0-9]{2}", "", value)
    value = re.sub(r"[\r\n\t ]+", " ", value)
    return value.strip()


def _wc_api_hash(consumer_key: str) -> str:
    # WooCommerce stores keys as hash_hmac('sha256', $key, 'wc-api'), secrets in clear (§4.1).
    return hmac.new(b"wc-api", consumer_key.encode("utf-8"), hashlib.sha256).hexdigest()


def _wp_list(items: Iterable[str]) -> str:
    """``wp_sprintf('%l')``: "a, b, and c" / "a and b" / "a"."""
    items = list(items)
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + ", and " + items[-1]


def _wc_is_valid_url(url: Any) -> bool:
    # wc_is_valid_url(): must start with http:// or https:// and pass FILTER_VALIDATE_URL.
    if not isinstance(url, str) or not (url.startswith("http://") or url.startswith("https://")):
        return False
    if re.search(r"\s", url):
        return False
    parts = urlsplit(url)
    return bool(parts.netloc) and bool(parts.hostname)


def _wc_is_valid_topic(topic: str) -> bool:
    # wc_is_webhook_valid_topic() (includes/wc-webhook-functions.php).
    if topic in _INVALID_ACTION_TOPICS:
        return False
    if topic.startswith("action.woocommerce_") or topic.startswith("action.wc_"):
        return True
    parts = topic.split(".")
    if len(parts) < 2:
        return False
    return parts[0] in _WEBHOOK_RESOURCES and parts[1] in _WEBHOOK_EVENTS


def _wp_generate_password(length: int = 50) -> str:
    # wp_generate_password($length, true, true): letters, digits, specials, extra specials.
    chars = string.ascii_letters + string.digits + "!@#$%^&*()" + "-_ []{}<>~`+=,.;:/?|"
    return "".join(secrets.choice(chars) for _ in range(length))


# --------------------------------------------------------------------------------------------
# App authorization helpers (WC_Auth, §4.4) -- PHP/WordPress functions it relies on
# --------------------------------------------------------------------------------------------

# WC_Auth::get_i18n_scope() and get_permissions_in_scope() (includes/class-wc-auth.php).
WC_AUTH_SCOPE_LABELS: dict[str, str] = {"read": "Read", "write": "Write", "read_write": "Read/Write"}
WC_AUTH_SCOPE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "read": ("View coupons", "View customers", "View orders and sales reports", "View products"),
    "write": ("Create webhooks", "Create coupons", "Create customers", "Create orders",
              "Create products"),
    "read_write": ("Create webhooks", "View and manage coupons", "View and manage customers",
                   "View and manage orders and sales reports", "View and manage products"),
}
# The order make_validation() checks them in, which decides which error a request gets first.
_WC_AUTH_PARAMS = ("app_name", "user_id", "return_url", "callback_url", "scope")
WC_AUTH_SEND_FAILED = ("An error occurred in the request and at the time were unable to send "
                       "the consumer data")

# ext/filter php_filter_url(): FILTER_VALIDATE_URL first sanitizes with this alphabet and fails
# when anything was removed (spaces, non-ASCII, control characters).
_FILTER_URL_CHARS = re.compile(r"^[A-Za-z0-9$\-_.+!*'(),{}|\\^~\[\]`<>#%\";/?:@&=]*$")
_USERINFO_RE = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2})*$")


def _php_urldecode(value: str) -> str:
    """PHP ``urldecode``: ``+`` is a space, ``%XX`` a byte."""
    return unquote_plus(value, errors="replace")


def _esc_html(value: str) -> str:
    """WordPress ``esc_html`` / ``esc_attr`` (htmlspecialchars with ENT_QUOTES)."""
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#039;"))


def _esc_url_attr(url: str) -> str:
    """``esc_url`` for an href: spaces become %20, ``&`` becomes ``&#038;``, ``'`` ``&#039;``."""
    url = url.strip().replace(" ", "%20")
    return url.replace("&", "&#038;").replace("'", "&#039;").replace('"', "").replace("<", "") \
        .replace(">", "")


def _php_validate_domain(host: str) -> bool:
    # _php_filter_validate_domain(..., FILTER_FLAG_HOSTNAME): alnum first and last, labels of
    # alnum and "-" up to 63, no "-" next to a dot, 253 characters at most.
    if host.endswith("."):
        host = host[:-1]
    if not host or len(host) > 253:
        return False
    if not host[0].isalnum() or not host[-1].isalnum() or not host.isascii():
        return False
    for label in host.split("."):
        if not label or len(label) > 63 or label[0] == "-" or label[-1] == "-":
            return False
        if not re.fullmatch(r"[A-Za-z0-9-]+", label):
            return False
    return True


def php_filter_validate_url(url: str) -> bool:
    """PHP ``filter_var($url, FILTER_VALIDATE_URL) !== false`` (ext/filter/logical_filters.c).

    A scheme is required; http(s) URLs need a valid host name or IP literal; other schemes need
    a host except mailto/news/file; user info must be RFC 3986 characters.
    """
    import ipaddress

    if not _FILTER_URL_CHARS.match(url):
        return False
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*):", url)
    if match is None:
        return False
    scheme = match.group(1).lower()
    try:
        parts = urlsplit(url)
        parts.port  # parse_url() fails on a bad or out-of-range port  # noqa: B018
    except ValueError:
        return False
    host = parts.hostname or ""
    if scheme in ("http", "https"):
        if not host:
            return False
        if "[" in parts.netloc:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                return False
        elif not _php_validate_domain(host):
            return False
    elif not host and scheme not in ("mailto", "news", "file"):
        return False
    if parts.username is not None and not _USERINFO_RE.match(parts.username):
        return False
    return True


def _wc_trim_string(value: str, chars: int = 200, suffix: str = "...") -> str:
    # wc_trim_string(): compares strlen() (bytes) but cuts with mb_substr() (characters).
    if len(value.encode("utf-8")) > chars:
        return value[:chars - len(suffix)] + suffix
    return value


def _sanitize_key(value: Any) -> str:
    # WordPress sanitize_key(): lowercase, then only a-z 0-9 _ -.
    if not isinstance(value, str):
        return ""
    return re.sub(r"[^a-z0-9_\-]", "", value.lower())


def _add_query_arg(args: Iterable[tuple[str, str]], url: str) -> str:
    """WordPress ``add_query_arg(array, $url)`` as far as WC_Auth uses it.

    Existing parameters keep their place (a repeated key is replaced in place), new ones are
    appended with ``&`` when the URL already has a query, and the #fragment stays last.
    ASSUMPTION: values are %-encoded, as esc_url()/wp_sanitize_redirect() leave them.
    """
    url, hash_sign, fragment = url.partition("#")
    base, question, query = url.partition("?")
    pairs: list[list[str]] = [part.split("=", 1) for part in query.split("&") if part] \
        if question else []
    for key, value in args:
        encoded = quote(str(value), safe="")
        for pair in pairs:
            if unquote_plus(pair[0]) == key:
                pair[:] = [pair[0], encoded]
                break
        else:
            pairs.append([quote(key, safe="[]"), encoded])
    # add_query_arg() drops the "=" of empty values: "a=&b=1" becomes "a&b=1".
    built = "&".join(p[0] if len(p) == 1 or p[1] == "" else f"{p[0]}={p[1]}" for p in pairs)
    return base + ("?" + built if built else "") + (hash_sign + fragment)


def _wp_die_html(message_html: str, title: str) -> str:
    # _default_wp_die_handler(): the page every wp_die() shows (here "Access denied", §4.4).
    return ('<!DOCTYPE html>\n<html lang="en-US">\n<head>\n'
            '\t<meta http-equiv="Content-Type" content="text/html; charset=utf-8" />\n'
            '\t<meta name="viewport" content="width=device-width">\n'
            "\t<meta name='robots' content='max-image-preview:large, noindex, follow' />\n"
            f"\t<title>{title}</title>\n"
            '\t<style type="text/css">html{background:#f1f1f1;}body{background:#fff;margin:2em auto;}'
            "</style>\n</head>\n"
            f'<body id="error-page">\n\t<div class="wp-die-message"><p>{message_html}</p></div>'
            "</body>\n</html>\n")


# --------------------------------------------------------------------------------------------
# Money
# --------------------------------------------------------------------------------------------


def _dec(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise ValueError(f"not a money amount: {value!r}")
    if isinstance(value, (int, str)):
        try:
            return Decimal(str(value).strip() or "0")
        except InvalidOperation:
            raise ValueError(f"not a money amount: {value!r}") from None
    if isinstance(value, float):  # JSON numbers from REST clients; go through str, never binary
        return Decimal(repr(value))
    raise ValueError(f"not a money amount: {value!r}")


def _round(value: Decimal, dp: int) -> Decimal:
    # PHP round() rounds half away from zero; ROUND_HALF_UP does the same on Decimals.
    return value.quantize(Decimal(1).scaleb(-dp), rounding=ROUND_HALF_UP)


def _fmt(value: Decimal, dp: int) -> str:
    """``wc_format_decimal($value, $dp)`` as the REST API renders money: "12.500"."""
    rounded = _round(value, dp)
    if rounded == 0:
        rounded = abs(rounded)
    return f"{rounded:.{dp}f}"


def _raw(value: Decimal) -> str:
    """How WooCommerce stores an amount without a fixed dp (tax breakdowns, fee ``amount``)."""
    normalised = value.normalize()
    if normalised == 0:
        return "0"
    return format(normalised, "f")


def _php_price(total: Decimal, quantity: int) -> int | float:
    """Line-item ``price`` = ``$item->get_total() / $item->get_quantity()`` evaluated by PHP.

    The stored total is a trimmed numeric string ("8", "12.5"): PHP divides two int-like
    values to an int when exact, otherwise to a float (captured: ``"price":12.5``).
    """
    if not quantity:
        return 0
    normalised = total.normalize()
    if normalised == normalised.to_integral_value() and int(normalised) % quantity == 0:
        return int(normalised) // quantity
    return float(total) / quantity


# --------------------------------------------------------------------------------------------
# Public record types
# --------------------------------------------------------------------------------------------


@dataclass
class Delivery(SentRequest):
    """One outgoing HTTP request of the webhook sender (a delivery or a ping)."""

    kind: str                      # "delivery" or "ping"
    webhook_id: int
    order_id: int | None
    topic: str
    url: str
    request_headers: list[tuple[str, str]]
    request_body: bytes
    delivery_id: str = ""
    signature: str = ""
    status: int | None = None      # HTTP status; None when the transport failed
    error: str | None = None       # transport error (cURL-style text) or None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes = b""
    duration: float = 0.0
    success: bool = False
    started_at: float = 0.0

    @property
    def status_code(self) -> int | None:
        """Alias of :attr:`status`, named like ``requests.Response.status_code``."""
        return self.status



@dataclass
class AuthCallback:
    """One ``post_consumer_data()`` of the app authorization flow (§4.4).

    ``hops`` holds every HTTP request made for it: WordPress follows up to 5 redirects
    (``wp_safe_remote_post`` default ``redirection``), so a callback may take several.
    """

    url: str                      # callback_url as WooCommerce formatted it
    body: bytes                   # the exact wp_json_encode() body posted
    key_id: int
    status: int | None = None     # final HTTP status; None when the transport failed
    error: str | None = None      # the WP_Error message shown on the error page, if any
    success: bool = False         # exactly HTTP 200
    hops: list[Delivery] = field(default_factory=list)
    started_at: float = 0.0

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    @property
    def status_code(self) -> int | None:
        return self.status


class WCAuthError(Exception):
    """Raised by :meth:`FakeWooCommerce.approve_app` when the store answers with a page
    instead of the final redirect (``wp_die`` "Access denied" pages, 404s...)."""

    def __init__(self, status: int, message: str, page: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.page = page


@dataclass
class Fault:
    kind: str
    count: int
    path_contains: str = ""
    method: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        if self.count <= 0:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return self.path_contains in path


class FaultScript:
    """Scripted infrastructure failures in front of the REST API.

    ``fake.faults.add("status", status=503)`` answers the next matching request with
    WordPress's HTML instead of running it. Kinds:

    * ``status``: answer ``status`` (503) with ``body`` / ``content_type`` (WordPress HTML) and
      extra ``headers``; the request is not applied. A WAF's or security plugin's 403 page, or
      a rate limiter's JSON 429 with ``headers={"Retry-After": "30"}``, are this kind.
    * ``timeout``: apply the request, sleep ``seconds`` (6.0), then answer normally: the
      client times out but the write happened (wc-api-python issue #61).
    * ``timeout_before``: sleep ``seconds`` then answer ``status`` (504) WITHOUT applying it.
    * ``non_json``: answer 200 with a cached HTML page (caching plugin); not applied.
    * ``redirect``: answer ``status`` (301) with ``Location: <location><path>?<query>``, the
      request's own path and query under another address, as a moved site, a forced
      http -> https or a canonical-host rule does; not applied.
    """

    KINDS = ("status", "timeout", "timeout_before", "non_json", "redirect")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pending: list[Fault] = []
        self.fired: list[tuple[Fault, str, str]] = []

    def add(self, kind: str, count: int = 1, path_contains: str = "", method: str = "",
            **params: Any) -> Fault:
        if kind not in self.KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {self.KINDS}")
        fault = Fault(kind, count, path_contains, method, dict(params))
        with self._lock:
            self.pending.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.pending.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """Consume one use of the first fault that matches this request, if any."""
        with self._lock:
            for fault in self.pending:
                if fault.matches(method, path):
                    fault.count -= 1
                    if fault.count <= 0:
                        self.pending.remove(fault)
                    self.fired.append((fault, method, path))
                    return fault
        return None


# --------------------------------------------------------------------------------------------
# Internal request machinery
# --------------------------------------------------------------------------------------------


class _WCError(Exception):
    """A WP_Error rendered by the REST server: {"code", "message", "data": {"status", ...}}."""

    def __init__(self, code: str, message: str, status: int, headers: Mapping[str, str] | None = None,
                 **data: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.headers = dict(headers or {})
        self.data = data

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": {"status": self.status, **self.data}}


class _Invalid(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Result:
    data: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    after: Callable[[], Any] | None = None   # run outside the store lock (synchronous pings)


@dataclass
class _Ctx:
    method: str
    route: str
    raw_path: str
    query: dict[str, Any]
    post: dict[str, Any]
    params: dict[str, Any]
    body_json: Any
    headers: Any
    is_ssl: bool
    scheme: str
    user: dict[str, Any] | None = None
    auth: str | None = None
    auth_error: _WCError | None = None
    www_authenticate: bool = False
    events: list[tuple[int, int, str]] = field(default_factory=list)


@dataclass
class _QueueItem:
    webhook_id: int
    order_id: int
    released: threading.Event


# Validators in WordPress's rest_validate_value_from_schema() wording (WP 6.1).

Validator = Callable[[str, Any], Any]


def _v_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _Invalid("rest_invalid_type", f"{name} is not of type boolean.")


def _v_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("rest_invalid_type", f"{name} is not of type string.")
    return value


def _v_object(name: str, value: Any) -> dict[str, Any]:
    if value == [] or value == "":
        return {}
    if not isinstance(value, dict):
        raise _Invalid("rest_invalid_type", f"{name} is not of type object.")
    return value


def _v_array(name: str, value: Any) -> list[Any]:
    value = _php_array_values(value)
    if not isinstance(value, list):
        raise _Invalid("rest_invalid_type", f"{name} is not of type array.")
    return value


def _v_int(minimum: int | None = None, maximum: int | None = None) -> Validator:
    def check(name: str, value: Any) -> int:
        number: float
        if isinstance(value, bool):
            raise _Invalid("rest_invalid_type", f"{name} is not of type integer.")
        if isinstance(value, int):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise _Invalid("rest_invalid_type", f"{name} is not of type integer.") from None
            if not math.isfinite(number) or round(number) != number:
                raise _Invalid("rest_invalid_type", f"{name} is not of type integer.")
        result = int(number)
        if minimum is not None and maximum is not None and not minimum <= result <= maximum:
            raise _Invalid("rest_out_of_bounds",
                           f"{name} must be between {minimum} (inclusive) and {maximum} (inclusive)")
        if minimum is not None and maximum is None and result < minimum:
            raise _Invalid("rest_out_of_bounds", f"{name} must be greater than or equal to {minimum}")
        return result
    return check


def _v_enum(values: Iterable[str]) -> Validator:
    allowed = list(values)

    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid("rest_invalid_type", f"{name} is not of type string.")
        if value not in allowed:
            raise _Invalid("rest_not_in_enum", f"{name} is not one of {_wp_list(allowed)}.")
        return value
    return check


def _v_enum_list(values: Iterable[str]) -> Validator:
    item_check = _v_enum(values)

    def check(name: str, value: Any) -> list[str]:
        value = _php_array_values(value)
        if isinstance(value, str):
            value = [v for v in re.split(r"[\s,]+", value) if v]  # wp_parse_list()
        if not isinstance(value, list):
            raise _Invalid("rest_invalid_type", f"{name} is not of type array.")
        return [item_check(f"{name}[{i}]", item) for i, item in enumerate(value)]
    return check


def _v_id_list(name: str, value: Any) -> list[int]:
    # wp_parse_id_list(): sanitising only, no validation error.
    value = _php_array_values(value)
    if isinstance(value, str):
        value = re.split(r"[\s,]+", value)
    if not isinstance(value, list):
        value = [value]
    out = []
    for item in value:
        try:
            out.append(abs(int(float(item))))
        except (TypeError, ValueError):
            continue
    return sorted(set(out), key=out.index)


_DATE_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|z|[+-]\d{2}(:?\d{2})?)?$")


def _v_date(name: str, value: Any) -> str:
    # rest_parse_date(): ISO 8601 with an optional fraction and offset.
    if not isinstance(value, str) or not _DATE_RE.match(value):
        raise _Invalid("rest_invalid_date", "Invalid date.")
    return value


def _v_context(name: str, value: Any) -> str:
    return _v_enum(("view", "edit"))(name, value)


# --------------------------------------------------------------------------------------------
# The fake store
# --------------------------------------------------------------------------------------------


_ROUTES: list[tuple[re.Pattern[str], dict[str, str]]] = [
    (re.compile(r"^/wc/v3/orders$", re.I), {"GET": "orders_list", "POST": "orders_create"}),
    (re.compile(r"^/wc/v3/orders/(?P<item_id>\d+)$", re.I),
     {"GET": "order_get", "POST": "order_update", "PUT": "order_update", "PATCH": "order_update",
      "DELETE": "order_delete"}),
    (re.compile(r"^/wc/v3/orders/(?P<order_id>\d+)/notes$", re.I),
     {"GET": "notes_list", "POST": "notes_create"}),
    (re.compile(r"^/wc/v3/orders/(?P<order_id>\d+)/notes/(?P<item_id>\d+)$", re.I),
     {"GET": "note_get", "DELETE": "note_delete"}),
    (re.compile(r"^/wc/v3/webhooks$", re.I), {"GET": "webhooks_list", "POST": "webhooks_create"}),
    (re.compile(r"^/wc/v3/webhooks/(?P<item_id>\d+)$", re.I),
     {"GET": "webhook_get", "POST": "webhook_update", "PUT": "webhook_update",
      "PATCH": "webhook_update", "DELETE": "webhook_delete"}),
    (re.compile(r"^/wc/v3$", re.I), {"GET": "namespace_index"}),
    (re.compile(r"^/?$"), {"GET": "index"}),
]


class FakeWooCommerce:
    """An in-memory WooCommerce store speaking REST v3 and sending webhooks.

    State is plain data, open for inspection and for tests to poke at:

    * ``orders``: ``{id: internal order dict}`` (money as Decimal; render with :meth:`order`)
    * ``webhooks``: ``{id: internal webhook dict}`` including ``secret``, ``failure_count``,
      ``pending_delivery``
    * ``deliveries`` / ``pings``: :class:`Delivery` records, in sending order
    * ``emails``: customer e-mails WooCommerce would have sent (customer notes)
    * ``requests``: every HTTP request received (method, path, query, auth kind, json, status)
    * ``faults``: a :class:`FaultScript`
    * ``api_keys``: ``{wc_api_hash(consumer_key): row}``; keys made by the app authorization
      flow carry a ``description``; ``deleted_api_keys`` lists rows a failed callback removed
    * ``auth_callbacks``: :class:`AuthCallback` records of ``/wc-auth/v1/`` key posts

    App authorization (``/wc-auth/v1/authorize``, §4.4) is modelled for a logged-in admin;
    :meth:`approve_app` / :meth:`deny_app` press the grant screen's buttons. Its one deviation
    from core: ``allow_http_callback=True`` accepts an ``http://`` callback_url (core insists
    on https) so tests can use a loopback receiver.

    Assumptions beyond the references are marked "ASSUMPTION" in comments.
    """

    def __init__(self, decimals: int = 3, currency: str = "KWD", https: bool = False,
                 wc_version: str = "7.9.0", wp_version: str = "6.1.9",
                 auto_deliver: bool = False, allow_http_callback: bool = False) -> None:
        self.decimals = decimals
        self.currency = currency
        self.https = https
        self.wc_version = wc_version
        self.wp_version = wp_version
        self.base_url = "http://shop.example"
        self.site_title = "Fake Woo Store"
        # ASSUMPTION: a KWD store runs on Asia/Kuwait time (UTC+3) so local and _gmt dates
        # differ, as in §2.4; the captured store used UTC. Set to timedelta(0) to match it.
        self.utc_offset = timedelta(hours=3)
        # Behind a proxy that sets X-Forwarded-Proto, WordPress counts the request as HTTPS
        # when wp-config maps the header (the captured store did).
        self.trust_forwarded_proto = True
        # §3.4 documents WWW-Authenticate on "Consumer secret is invalid."; note that in core's
        # code the OAuth fallback overwrites auth_method, so a live store may omit it.
        self.send_www_authenticate = True
        self.user_id = 1
        self.user_display_name = "admin"
        self.delivery_timeout = 60.0    # WC_Webhook::deliver(): MINUTE_IN_SECONDS
        self.ping_timeout = 5.0         # WordPress default http_request_timeout
        self.max_delivery_failures = 5  # woocommerce_max_webhook_delivery_failures
        # wp_safe_remote_request() refuses loopback/private hosts and odd ports unless filters
        # allow them; off by default because tests deliver to 127.0.0.1 (the capture did too).
        self.reject_unsafe_urls = False
        # Benchmarks only: seconds every REST (/wp-json) request sleeps before it is handled,
        # outside the store's lock, to stand in for a real store's response time. 0 = off.
        self.latency: float = 0.0
        self.clock: Callable[[], float] = time.time

        self.products: dict[int, dict[str, Any]] = {}
        self.coupons: dict[str, Decimal] = {}
        self.orders: dict[int, dict[str, Any]] = {}
        self.webhooks: dict[int, dict[str, Any]] = {}
        self.api_keys: dict[str, dict[str, Any]] = {}   # keyed by wc_api_hash(consumer_key)
        self.deliveries: list[Delivery] = []
        self.pings: list[Delivery] = []
        self.emails: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.faults = FaultScript()

        # App authorization (/wc-auth/v1/, §4.4). WC_Auth::make_validation() refuses any
        # callback_url not starting with https://; the fake's ONE deviation is this switch,
        # which also lets http:// through so tests can use a plain loopback receiver.
        self.allow_http_callback = allow_http_callback
        self.auth_callback_timeout = 60.0   # WC_Auth::post_consumer_data(): 'timeout' => 60
        self.auth_callbacks: list[AuthCallback] = []
        # Rows maybe_delete_key() removed from wp_woocommerce_api_keys (failed callbacks).
        self.deleted_api_keys: list[dict[str, Any]] = []
        self._auth_nonces: set[str] = set()

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._queue: list[_QueueItem] = []
        self._inflight = 0
        self._down = False
        self._salt = secrets.token_hex(32)   # wp_salt('auth') for wp_hash()
        self._next_post_id = 100   # ASSUMPTION: orders share the posts id space with products
        self._next_item_id = 1
        self._next_meta_id = 1
        self._next_comment_id = 1
        self._next_webhook_id = 1
        self._next_key_id = 1
        self._notes: dict[int, dict[str, Any]] = {}
        self._served: ServedApp | None = None
        self._stop = False
        self._worker: threading.Thread | None = None

        self.app = flask.Flask(__name__)
        self.app.before_request(self._entry)

        self.auto_deliver = auto_deliver
        if auto_deliver:
            self._worker = threading.Thread(target=self._work, name="fake-wc-action-scheduler",
                                            daemon=True)
            self._worker.start()

    # ---------------------------------------------------------------- setup and inspection

    def serve(self) -> ServedApp:
        """Run the store on a loopback port and make that its home URL."""
        served = serve_wsgi(self.app)
        self.set_base_url(served.url)
        self._served = served
        return served

    def set_base_url(self, url: str) -> None:
        self.base_url = url.rstrip("/")

    def close(self) -> None:
        """Stop the auto-delivery worker and the server started by :meth:`serve`."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5)
        if self._served is not None:
            self._served.shutdown()
            self._served = None

    def add_api_key(self, permissions: str = "read_write") -> tuple[str, str]:
        """Create a REST API key for the admin user; returns (consumer_key, consumer_secret)."""
        if permissions not in ("read", "write", "read_write"):
            raise ValueError("permissions must be read, write or read_write")
        # 'ck_' / 'cs_' + wc_rand_hash() = 40 hex characters (§4.4).
        consumer_key = "ck_" + secrets.token_hex(20)
        consumer_secret = "cs_" + secrets.token_hex(20)
        with self._lock:
            self.api_keys[_wc_api_hash(consumer_key)] = {
                "key_id": self._next_key_id, "user_id": self.user_id, "permissions": permissions,
                "consumer_secret": consumer_secret, "truncated_key": consumer_key[-7:],
                "nonces": {}, "last_access": None,
            }
            self._next_key_id += 1
        return consumer_key, consumer_secret

    def add_product(self, product_id: int, name: str, price: str | Decimal, sku: str = "",
                    virtual: bool = False) -> None:
        """Add a simple product. ``virtual=True`` means virtual *and* downloadable, the only
        kind WC_Order::needs_processing() lets skip "processing"."""
        with self._lock:
            self.products[product_id] = {"id": product_id, "name": name, "price": _dec(price),
                                         "sku": sku, "virtual": virtual}
            self._next_post_id = max(self._next_post_id, product_id + 1)

    def add_coupon(self, code: str, amount: str | Decimal) -> None:
        """Add a fixed_cart coupon that REST ``coupon_lines`` may reference (ASSUMPTION: only
        fixed_cart coupons are modelled; WooCommerce validates codes against real coupons)."""
        with self._lock:
            self.coupons[code.lower()] = _dec(amount)

    def set_down(self, down: bool) -> None:
        """Maintenance mode: every request answers 503 with WordPress's maintenance page."""
        self._down = down

    def order(self, order_id: int) -> dict[str, Any]:
        """The order as ``GET /orders/<id>`` returns it (store's own scheme, default dp)."""
        with self._lock:
            return self._order_json(self.orders[order_id], self._home_scheme())

    def notes(self, order_id: int) -> list[dict[str, Any]]:
        """The order's notes, newest first, as ``GET /orders/<id>/notes`` returns them."""
        with self._lock:
            return [self._note_json(n, self._home_scheme()) for n in self._order_notes(order_id)]

    def queued(self) -> list[tuple[int, int]]:
        """Pending (webhook_id, order_id) deliveries, oldest first."""
        with self._lock:
            return [(item.webhook_id, item.order_id) for item in self._queue]

    # ------------------------------------------------------------------------------ orders

    def create_order(self, line_items: list[dict[str, Any]], *, billing: dict[str, Any] | None = None,
                     shipping_lines: Iterable[dict[str, Any]] = (),
                     fee_lines: Iterable[dict[str, Any]] = (),
                     coupon_lines: Iterable[dict[str, Any]] = (), status: str = "pending",
                     payment_method: str = "upay", created_via: str = "checkout",
                     customer_id: int = 0, number: str | None = None) -> dict[str, Any]:
        """Create an order the way the storefront checkout does and queue ``order.created``.

        ``line_items``: ``{"product_id", "quantity"}`` (optional ``subtotal``/``total``/
        ``total_tax`` strings) or ad hoc ``{"name", "price", "quantity"}``. Coupons
        ``{"code", "discount"}`` are spread over the lines by subtotal, the last line taking
        the rounding remainder. ``status`` is set directly (no status note, nothing but
        ``order.created`` queued, which draft statuses do not fire); use
        :meth:`set_order_status` to replay a gateway's transition afterwards.
        """
        with self._lock:
            order = self._new_order(created_via=created_via, customer_id=customer_id,
                                    payment_method=payment_method)
            filled = {k: "" for k in _BILLING_KEYS}
            filled.update({k: str(v) for k, v in (billing if billing is not None
                                                    else DEFAULT_BILLING).items()
                           if k in _BILLING_KEYS})
            order["billing"] = filled
            if created_via == "checkout":
                # ASSUMPTION: what a classic checkout records (ship-to = bill-to, IP, UA, the
                # is_vat_exempt meta); REST-created orders leave these empty, as captured.
                order["shipping"] = {k: (filled[k] if k != "phone" else "") for k in _SHIPPING_KEYS}
                order["customer_ip_address"] = "203.0.113.7"
                order["customer_user_agent"] = ("Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 "
                                                "(KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36")
                order["meta_data"].append(self._meta("is_vat_exempt", "no"))
            order["line_items"] = [self._line_item_from_spec(spec) for spec in line_items]
            order["shipping_lines"] = [self._shipping_line(spec) for spec in shipping_lines]
            if created_via == "checkout" and order["shipping_lines"]:
                summary = ", ".join(f"{li['name']} &times; {li['quantity']}" for li in order["line_items"])
                for line in order["shipping_lines"]:
                    line["meta_data"].append(self._meta("Items", summary, display=True))
            order["fee_lines"] = [self._fee_line(spec) for spec in fee_lines]
            order["coupon_lines"] = [self._coupon_line(c["code"], _dec(c["discount"]))
                                     for c in coupon_lines]
            self._apply_coupon_discounts(order)
            self._calculate_totals(order)
            if created_via == "checkout":
                order["cart_hash"] = hashlib.md5(
                    repr([(li["product_id"], li["quantity"]) for li in order["line_items"]]).encode()
                ).hexdigest()
            if number is not None:
                order["number"] = str(number)
            # The status is set on the new order directly, as for the captured REST-created
            # order: no transition, so no status note and no date_paid. A gateway's later
            # transition can be replayed with set_order_status().
            order["status"] = status
            self.orders[order["id"]] = order
            self._fire_created(None, order)
            return self._order_json(order, self._home_scheme())

    def set_order_status(self, order_id: int, status: str, note: str = "") -> dict[str, Any]:
        """Change an order's status as the admin screen or a cron job would (e.g. the
        hold-stock job cancelling an unpaid order: note "Unpaid order cancelled - time limit
        reached."). Adds the status note and queues ``order.updated``."""
        with self._lock:
            order = self.orders[order_id]
            self._set_status(order, status, note)
            self._save(None, order)
            return self._order_json(order, self._home_scheme())

    # ---------------------------------------------------------------------------- webhooks

    def add_webhook(self, topic: str, delivery_url: str, secret: str, name: str = "") -> dict[str, Any]:
        """Create a webhook like ``POST /webhooks``: always active, pinged synchronously before
        returning (result ignored). Returns the REST representation (without the secret)."""
        topic = topic.strip()
        if not topic or not _wc_is_valid_topic(topic.lower()):
            raise ValueError("Webhook topic is required and must be valid.")
        if not _wc_is_valid_url(delivery_url):
            raise ValueError("Webhook delivery URL must be a valid URL starting with http:// or https://.")
        with self._lock:
            hook = self._new_webhook(name, topic, delivery_url, secret or _wp_generate_password())
            data = self._webhook_json(hook, self._home_scheme())
        self._ping(hook["id"])
        return data

    def deliver_queued(self) -> list[Delivery]:
        """Send every queued delivery now, oldest first (what Action Scheduler would do)."""
        sent: list[Delivery] = []
        while True:
            with self._lock:
                if not self._queue:
                    return sent
                item = self._queue.pop(0)
                self._inflight += 1
            try:
                record = self._deliver_one(item.webhook_id, item.order_id)
            finally:
                with self._cond:
                    self._inflight -= 1
                    self._cond.notify_all()
            if record is not None:
                sent.append(record)

    def deliver(self, webhook_id: int, order_id: int, times: int = 1, concurrently: bool = False,
                error_payload: bool = False) -> list[Delivery]:
        """Deliver ``order_id`` to a webhook now, bypassing the queue.

        ``times`` > 1 sends duplicates (as plugins re-firing ``woocommerce_new_order`` or two
        identical webhooks do, §1.7); ``concurrently`` sends them at the same instant;
        ``error_payload`` sends the signed REST error body WooCommerce delivers when the
        webhook's owner lost access (#37806).
        """
        with self._lock:
            if webhook_id not in self.webhooks:
                raise KeyError(f"no webhook {webhook_id}")
        if not concurrently or times == 1:
            records = [self._deliver_one(webhook_id, order_id, error_payload=error_payload)
                       for _ in range(times)]
            return [r for r in records if r is not None]
        results: list[Delivery | None] = [None] * times
        barrier = threading.Barrier(times)

        def run(index: int) -> None:
            barrier.wait()
            results[index] = self._deliver_one(webhook_id, order_id, error_payload=error_payload)

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(times)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [r for r in results if r is not None]

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """With ``auto_deliver``: wait until the queue is empty and nothing is in flight."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    # =========================================================================================
    # Internals: time, URLs, ids
    # =========================================================================================

    def _now(self) -> datetime:
        return datetime.fromtimestamp(int(self.clock()), tz=timezone.utc)

    def _site_date(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        return (value + self.utc_offset).strftime("%Y-%m-%dT%H:%M:%S")

    @staticmethod
    def _gmt_date(value: datetime | None) -> str | None:
        return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S")

    def _home_scheme(self) -> str:
        # Outside a request (webhook payloads, helpers) links use the home option's scheme.
        return "https" if self.https or self.base_url.startswith("https://") else "http"

    def _home(self, scheme: str) -> str:
        parts = urlsplit(self.base_url)
        return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"

    def _rest_url(self, scheme: str, route: str) -> str:
        return f"{self._home(scheme)}/wp-json{route}"

    def _meta(self, key: str, value: Any, display: bool = False) -> dict[str, Any]:
        meta = {"id": self._next_meta_id, "key": key, "value": value}
        if display:
            meta.update(display_key=key, display_value=value)
        self._next_meta_id += 1
        return meta

    def _item_id(self) -> int:
        self._next_item_id += 1
        return self._next_item_id - 1

    # =========================================================================================
    # Internals: the order model
    # =========================================================================================

    def _new_order(self, *, created_via: str, customer_id: int, payment_method: str) -> dict[str, Any]:
        now = self._now()
        order_id = self._next_post_id
        self._next_post_id += 1
        zero = Decimal(0)
        return {
            "id": order_id, "parent_id": 0, "status": "", "currency": self.currency,
            "version": self.wc_version, "date_created": now, "date_modified": now,
            "discount_total": zero, "discount_tax": zero, "shipping_total": zero,
            "shipping_tax": zero, "cart_tax": zero, "total": zero, "total_tax": zero,
            "customer_id": customer_id,
            # wc_generate_order_key(): 'wc_order_' . wp_generate_password(13, false)
            "order_key": "wc_order_" + "".join(secrets.choice(string.ascii_letters + string.digits)
                                               for _ in range(13)),
            "billing": {k: "" for k in _BILLING_KEYS}, "shipping": {k: "" for k in _SHIPPING_KEYS},
            "payment_method": payment_method,
            "payment_method_title": PAYMENT_METHOD_TITLES.get(payment_method, payment_method),
            "transaction_id": "", "customer_ip_address": "", "customer_user_agent": "",
            "created_via": created_via, "customer_note": "", "date_completed": None,
            "date_paid": None, "cart_hash": "", "number": str(order_id), "meta_data": [],
            "line_items": [], "tax_lines": [], "shipping_lines": [], "fee_lines": [],
            "coupon_lines": [], "refunds": [], "_transition": None, "_tax_item_id": None,
        }

    def _line_item_from_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        quantity = int(spec.get("quantity", 1))
        product = None
        if spec.get("product_id"):
            product = self.products.get(int(spec["product_id"]))
            if product is None:
                raise KeyError(f"no product {spec['product_id']} in the catalogue")
        elif spec.get("sku"):
            product = next((p for p in self.products.values() if p["sku"] == spec["sku"]), None)
            if product is None:
                raise KeyError(f"no product with sku {spec['sku']!r}")
        if product is not None:
            subtotal = _round(product["price"] * quantity, self.decimals)
            name, product_id, sku = product["name"], product["id"], product["sku"]
        else:
            if "price" not in spec and "subtotal" not in spec:
                raise ValueError("an ad hoc line item needs name, price and quantity")
            subtotal = _round(_dec(spec.get("price", 0)) * quantity, self.decimals)
            name, product_id, sku = str(spec.get("name", "")), 0, None
        if "subtotal" in spec:
            subtotal = _round(_dec(spec["subtotal"]), self.decimals)
        item = {
            "id": self._item_id(), "name": name, "product_id": product_id, "variation_id": 0,
            "quantity": quantity, "tax_class": "", "subtotal": subtotal,
            "subtotal_tax": _round(_dec(spec.get("subtotal_tax", spec.get("total_tax", 0))),
                                   self.decimals),
            "total": subtotal, "total_tax": _round(_dec(spec.get("total_tax", 0)), self.decimals),
            "meta_data": [], "sku": sku, "_explicit_total": "total" in spec,
        }
        if "total" in spec:
            item["total"] = _round(_dec(spec["total"]), self.decimals)
        return item

    def _shipping_line(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self._item_id(), "method_title": str(spec.get("method_title", "Flat rate")),
            "method_id": str(spec.get("method_id", "flat_rate")),
            "instance_id": str(spec.get("instance_id", "1")),
            "total": _round(_dec(spec.get("total", 0)), self.decimals),
            "total_tax": _round(_dec(spec.get("total_tax", 0)), self.decimals), "meta_data": [],
        }

    def _fee_line(self, spec: dict[str, Any]) -> dict[str, Any]:
        total = _round(_dec(spec.get("total", 0)), self.decimals)
        return {
            "id": self._item_id(), "name": str(spec.get("name", "")), "tax_class": "",
            "tax_status": str(spec.get("tax_status", "taxable")), "amount": total, "total": total,
            "total_tax": _round(_dec(spec.get("total_tax", 0)), self.decimals), "meta_data": [],
        }

    def _coupon_line(self, code: str, discount: Decimal) -> dict[str, Any]:
        return {"id": self._item_id(), "code": code, "discount": _round(discount, self.decimals),
                "discount_tax": Decimal(0), "meta_data": []}

    def _apply_coupon_discounts(self, order: dict[str, Any]) -> None:
        """Spread fixed-cart discounts over line items in proportion to their subtotals.

        WC_Discounts rounds each line's share to the store's decimals; the last line takes
        the remainder so the shares add up to the coupon exactly. Lines with an explicit
        ``total`` keep it.
        """
        discount = sum((c["discount"] for c in order["coupon_lines"]), Decimal(0))
        lines = [li for li in order["line_items"] if not li["_explicit_total"]]
        if not discount or not lines:
            return
        base = sum((li["subtotal"] for li in lines), Decimal(0))
        shares: list[Decimal] = []
        for line in lines[:-1]:
            share = _round(discount * line["subtotal"] / base, self.decimals) if base else Decimal(0)
            shares.append(share)
        shares.append(discount - sum(shares, Decimal(0)))
        for line, share in zip(lines, shares):
            line["total"] = line["subtotal"] - share

    def _calculate_totals(self, order: dict[str, Any]) -> None:
        """WC_Abstract_Order::calculate_totals() for exclusive taxes, in Decimal."""
        items = order["line_items"]
        cart_subtotal = sum((li["subtotal"] for li in items), Decimal(0))
        cart_total = sum((li["total"] for li in items), Decimal(0))
        cart_tax = sum((li["total_tax"] for li in items), Decimal(0))
        shipping_total = sum((s["total"] for s in order["shipping_lines"]), Decimal(0))
        shipping_tax = sum((s["total_tax"] for s in order["shipping_lines"]), Decimal(0))
        fee_total = sum((f["total"] for f in order["fee_lines"]), Decimal(0))
        fee_tax = sum((f["total_tax"] for f in order["fee_lines"]), Decimal(0))
        order["discount_total"] = cart_subtotal - cart_total
        order["discount_tax"] = sum((li["subtotal_tax"] - li["total_tax"] for li in items), Decimal(0))
        order["shipping_total"] = shipping_total
        order["shipping_tax"] = shipping_tax
        order["cart_tax"] = cart_tax + fee_tax
        order["total_tax"] = cart_tax + fee_tax + shipping_tax
        total = cart_total + cart_tax + shipping_total + shipping_tax + fee_total + fee_tax
        # Negative fees may not take an order below zero (WC caps them).
        order["total"] = max(Decimal(0), _round(total, self.decimals))
        if order["total_tax"]:
            if order["_tax_item_id"] is None:
                order["_tax_item_id"] = self._item_id()
            # ASSUMPTION: one exclusive tax rate; the amounts come from the items' total_tax.
            order["tax_lines"] = [{"id": order["_tax_item_id"], "rate_code": "KW-VAT-1",
                                   "rate_id": 1, "label": "VAT", "compound": False,
                                   "tax_total": order["cart_tax"],
                                   "shipping_tax_total": order["shipping_tax"], "meta_data": []}]
        else:
            order["tax_lines"] = []

    def _needs_processing(self, order: dict[str, Any]) -> bool:
        # WC_Order::needs_processing(): items whose product is gone (or ad hoc) are skipped;
        # only virtual+downloadable products skip "processing".
        for item in order["line_items"]:
            product = self.products.get(item["product_id"])
            if product is None:
                continue
            if not product["virtual"]:
                return True
        return False

    @staticmethod
    def _needs_payment(order: dict[str, Any]) -> bool:
        # WC_Abstract_Order::needs_payment(): pending/failed and total > 0 (§3.2).
        return order["status"] in ("pending", "failed") and order["total"] > 0

    def _set_status(self, order: dict[str, Any], new_status: str, note: str = "") -> None:
        """WC_Order::set_status(): record the transition, maybe set date_paid/date_completed."""
        old = order["status"]
        if new_status.startswith("wc-"):
            new_status = new_status[3:]
        if new_status not in ORDER_STATUS_LABELS and new_status not in ("auto-draft", "trash"):
            new_status = "pending"
        if old and (old == "auto-draft" or (old not in ORDER_STATUS_LABELS and old != "trash")):
            old = "pending"
        order["status"] = new_status
        if old and old != new_status:
            previous = order["_transition"]
            order["_transition"] = {"from": previous["from"] if previous else old, "to": new_status,
                                    "note": note}
            now = self._now()
            # maybe_set_date_paid(): when the "payment complete" status is reached.
            paid_status = "processing" if self._needs_processing(order) else "completed"
            if order["date_paid"] is None and (new_status == paid_status or
                                               (paid_status == "processing" and new_status == "completed")):
                order["date_paid"] = now
            # maybe_set_date_completed()
            if new_status == "completed":
                order["date_completed"] = now

    def _save(self, ctx: _Ctx | None, order: dict[str, Any]) -> None:
        """WC_Order::save(): status-transition note, date_modified, ``order.updated``."""
        order["date_modified"] = self._now()
        transition = order["_transition"]
        order["_transition"] = None
        if transition and transition["from"] != transition["to"]:
            old, new = (ORDER_STATUS_LABELS.get(transition[k], transition[k]) for k in ("from", "to"))
            text = f"Order status changed from {old} to {new}."
            if transition["note"]:
                text = f"{transition['note']} {text}"
            self._add_note(order, text, customer_note=False, added_by_user=False)
        self._emit(ctx, "order.updated", order)

    def _fire_created(self, ctx: _Ctx | None, order: dict[str, Any]) -> None:
        self._emit(ctx, "order.created", order)

    def _payment_complete(self, ctx: _Ctx | None, order: dict[str, Any], transaction_id: str) -> None:
        # WC_Order::payment_complete() (§3.2).
        if order["status"] not in _PAYMENT_COMPLETE_FROM:
            return
        if transaction_id:
            order["transaction_id"] = transaction_id
        if order["date_paid"] is None:
            order["date_paid"] = self._now()
        self._set_status(order, "processing" if self._needs_processing(order) else "completed")
        self._save(ctx, order)

    def _update_meta(self, order: dict[str, Any], key: str, value: Any, meta_id: Any = None) -> None:
        # WC_Data::update_meta_data(): by id if given and found, else by key (extra copies
        # removed), else add.
        metas = order["meta_data"]
        if meta_id:
            for meta in metas:
                if meta["id"] == meta_id:
                    meta["key"], meta["value"] = key, value
                    return
            metas.append(self._meta(key, value))
            return
        matches = [m for m in metas if m["key"] == key]
        if matches:
            matches[0]["value"] = value
            for extra in matches[1:]:
                metas.remove(extra)
            return
        metas.append(self._meta(key, value))

    def _add_note(self, order: dict[str, Any], text: str, *, customer_note: bool,
                  added_by_user: bool) -> dict[str, Any]:
        """WC_Order::add_order_note(). Author is "WooCommerce" unless added by the key's user
        (captured 7.9 output; the REST layer only maps a lower-case "woocommerce" to "system")."""
        note = {
            "id": self._next_comment_id, "order_id": order["id"],
            "author": self.user_display_name if added_by_user else "WooCommerce",
            "date": self._now(), "note": text, "customer_note": bool(customer_note),
            "added_by_user": bool(added_by_user),
        }
        self._next_comment_id += 1
        self._notes[note["id"]] = note
        if customer_note and order["billing"].get("email"):
            self._send_customer_note_email(order, note)
        return note

    def _send_customer_note_email(self, order: dict[str, Any], note: dict[str, Any]) -> None:
        # WC_Email_Customer_Note: to the billing e-mail, the note made clickable (§3.1).
        order_date = (order["date_created"] + self.utc_offset).strftime("%B %-d, %Y")
        clickable = re.sub(r"(https?://[^\s<]+)", r'<a href="\1" rel="nofollow">\1</a>', note["note"])
        body = (f"<p>Hi {order['billing'].get('first_name', '')},</p>\n"
                f"<p>The following note has been added to your order:</p>\n"
                f"<blockquote><p>{clickable}</p></blockquote>\n"
                f"<p>As a reminder, here are your order details:</p>\n"
                f"<p>Order #{order['number']} ({order_date}) - Total: {_fmt(order['total'], self.decimals)}"
                f" {order['currency']}</p>")
        self.emails.append({
            "type": "customer_note", "to": order["billing"]["email"],
            "subject": f"Note added to your {self.site_title} order from {order_date}",
            "body": body, "note": note["note"], "order_id": order["id"], "note_id": note["id"],
        })

    def _order_notes(self, order_id: int) -> list[dict[str, Any]]:
        notes = [n for n in self._notes.values() if n["order_id"] == order_id]
        # get_comments() orders by comment_date_gmt DESC, then comment_ID DESC.
        return sorted(notes, key=lambda n: (n["date"], n["id"]), reverse=True)

    # ---------------------------------------------------------------------- representations

    def _links(self, scheme: str, routes: Mapping[str, str]) -> dict[str, list[dict[str, str]]]:
        return {rel: [{"href": self._rest_url(scheme, route)}] for rel, route in routes.items()}

    def _order_json(self, order: dict[str, Any], scheme: str, dp: int | None = None) -> dict[str, Any]:
        """The REST v3 order, keys in WooCommerce's order (§2.1 + captured ``currency_symbol``)."""
        dp = self.decimals if dp is None else dp

        def money(value: Decimal) -> str:
            return _fmt(value, dp)

        def taxes(total_tax: Decimal, subtotal_tax: Decimal | None = None) -> list[dict[str, Any]]:
            if not total_tax and not subtotal_tax:
                return []
            entry: dict[str, Any] = {"id": 1, "total": _raw(total_tax)}
            if subtotal_tax is not None:
                entry["subtotal"] = _raw(subtotal_tax)
            return [entry]

        def item_meta(metas: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [copy.deepcopy(m) for m in metas]

        line_items = [{
            "id": li["id"], "name": li["name"], "product_id": li["product_id"],
            "variation_id": li["variation_id"], "quantity": li["quantity"], "tax_class": li["tax_class"],
            "subtotal": money(li["subtotal"]), "subtotal_tax": money(li["subtotal_tax"]),
            "total": money(li["total"]), "total_tax": money(li["total_tax"]),
            "taxes": taxes(li["total_tax"], li["subtotal_tax"]), "meta_data": item_meta(li["meta_data"]),
            "sku": li["sku"], "price": _php_price(li["total"], li["quantity"]),
            # Captured 7.9: a product without an image gives {"id": "", "src": ""}.
            "image": {"id": "", "src": ""}, "parent_name": None,
        } for li in order["line_items"]]
        tax_lines = [{
            "id": t["id"], "rate_code": t["rate_code"], "rate_id": t["rate_id"], "label": t["label"],
            "compound": t["compound"], "tax_total": money(t["tax_total"]),
            "shipping_tax_total": money(t["shipping_tax_total"]), "meta_data": [],
        } for t in order["tax_lines"]]
        shipping_lines = [{
            "id": s["id"], "method_title": s["method_title"], "method_id": s["method_id"],
            "instance_id": s["instance_id"], "total": money(s["total"]),
            "total_tax": money(s["total_tax"]), "taxes": taxes(s["total_tax"]),
            "meta_data": item_meta(s["meta_data"]),
        } for s in order["shipping_lines"]]
        fee_lines = [{
            "id": f["id"], "name": f["name"], "tax_class": f["tax_class"], "tax_status": f["tax_status"],
            "amount": _raw(f["amount"]), "total": money(f["total"]), "total_tax": money(f["total_tax"]),
            "taxes": taxes(f["total_tax"]), "meta_data": item_meta(f["meta_data"]),
        } for f in order["fee_lines"]]
        coupon_lines = [{
            "id": c["id"], "code": c["code"], "discount": money(c["discount"]),
            "discount_tax": money(c["discount_tax"]), "meta_data": item_meta(c["meta_data"]),
        } for c in order["coupon_lines"]]
        home = self._home(scheme)
        links = self._links(scheme, {"self": f"/wc/v3/orders/{order['id']}", "collection": "/wc/v3/orders"})
        if order["customer_id"]:
            links.update(self._links(scheme, {"customer": f"/wc/v3/customers/{order['customer_id']}"}))
        if order["parent_id"]:
            links.update(self._links(scheme, {"up": f"/wc/v3/orders/{order['parent_id']}"}))
        status = order["status"]
        return {
            "id": order["id"], "parent_id": order["parent_id"], "status": status,
            "currency": order["currency"], "version": order["version"], "prices_include_tax": False,
            "date_created": self._site_date(order["date_created"]),
            "date_modified": self._site_date(order["date_modified"]),
            "discount_total": money(order["discount_total"]), "discount_tax": money(order["discount_tax"]),
            "shipping_total": money(order["shipping_total"]), "shipping_tax": money(order["shipping_tax"]),
            "cart_tax": money(order["cart_tax"]), "total": money(order["total"]),
            "total_tax": money(order["total_tax"]), "customer_id": order["customer_id"],
            "order_key": order["order_key"], "billing": dict(order["billing"]),
            "shipping": dict(order["shipping"]), "payment_method": order["payment_method"],
            "payment_method_title": order["payment_method_title"],
            "transaction_id": order["transaction_id"],
            "customer_ip_address": order["customer_ip_address"],
            "customer_user_agent": order["customer_user_agent"], "created_via": order["created_via"],
            "customer_note": order["customer_note"],
            "date_completed": self._site_date(order["date_completed"]),
            "date_paid": self._site_date(order["date_paid"]), "cart_hash": order["cart_hash"],
            "number": order["number"],
            "meta_data": [copy.deepcopy(m) for m in order["meta_data"]],
            "line_items": line_items, "tax_lines": tax_lines, "shipping_lines": shipping_lines,
            "fee_lines": fee_lines, "coupon_lines": coupon_lines, "refunds": [],
            "payment_url": (f"{home}/checkout/order-pay/{order['id']}/?pay_for_order=true"
                            f"&key={order['order_key']}"),
            "is_editable": status in ("pending", "on-hold", "auto-draft", "checkout-draft"),
            "needs_payment": self._needs_payment(order),
            "needs_processing": self._needs_processing(order),
            "date_created_gmt": self._gmt_date(order["date_created"]),
            "date_modified_gmt": self._gmt_date(order["date_modified"]),
            "date_completed_gmt": self._gmt_date(order["date_completed"]),
            "date_paid_gmt": self._gmt_date(order["date_paid"]),
            "currency_symbol": CURRENCY_SYMBOLS.get(order["currency"], order["currency"]),
            "_links": links,
        }

    def _note_json(self, note: dict[str, Any], scheme: str) -> dict[str, Any]:
        base = f"/wc/v3/orders/{note['order_id']}"
        return {
            "id": note["id"], "author": note["author"], "date_created": self._site_date(note["date"]),
            "date_created_gmt": self._gmt_date(note["date"]), "note": note["note"],
            "customer_note": note["customer_note"],
            "_links": self._links(scheme, {"self": f"{base}/notes/{note['id']}",
                                           "collection": f"{base}/notes", "up": base}),
        }

    def _webhook_json(self, hook: dict[str, Any], scheme: str) -> dict[str, Any]:
        # WC_REST_Webhooks_V2_Controller::prepare_item_for_response(): no secret (captured).
        topic = hook["topic"]
        resource, _, event = topic.partition(".")
        hooks = WEBHOOK_TOPIC_HOOKS.get(topic, [])
        if resource == "action":
            hooks = [event]
        return {
            "id": hook["id"], "name": hook["name"], "status": hook["status"], "topic": topic,
            "resource": resource, "event": event, "hooks": list(hooks),
            "delivery_url": hook["delivery_url"],
            "date_created": self._site_date(hook["date_created"]),
            "date_created_gmt": self._gmt_date(hook["date_created"]),
            "date_modified": self._site_date(hook["date_modified"]),
            "date_modified_gmt": self._gmt_date(hook["date_modified"]),
            "_links": self._links(scheme, {"self": f"/wc/v3/webhooks/{hook['id']}",
                                           "collection": "/wc/v3/webhooks"}),
        }

    # =========================================================================================
    # Internals: webhooks, the queue and the sender
    # =========================================================================================

    def _new_webhook(self, name: str, topic: str, delivery_url: str, secret: str) -> dict[str, Any]:
        now = self._now()
        hook = {
            "id": self._next_webhook_id,
            # Default name as WC_REST_Webhooks_V1_Controller::prepare_item_for_database().
            "name": name or f"Webhook created on {now.strftime('%b %d, %Y @ %I:%M %p')}",
            "status": "active", "topic": topic, "delivery_url": delivery_url, "secret": secret,
            "user_id": self.user_id, "api_version": "wp_api_v3", "failure_count": 0,
            # The data store creates webhooks with pending_delivery = true (§1.5).
            "pending_delivery": True, "date_created": now, "date_modified": None,
        }
        self._next_webhook_id += 1
        self.webhooks[hook["id"]] = hook
        return hook

    def _emit(self, ctx: _Ctx | None, topic: str, order: dict[str, Any]) -> None:
        """An order hook fired: every active webhook on ``topic`` gets a queued delivery.

        WC_Webhook::should_deliver() runs now (status, draft filter, once per request); the
        item itself is queued at "shutdown" and sent later, building the payload then.
        """
        excluded = _NO_CREATED_WEBHOOK if topic == "order.created" else _NO_WEBHOOK
        if order["status"] in excluded:
            return
        for hook in sorted(self.webhooks.values(), key=lambda h: h["id"]):
            if hook["status"] != "active" or hook["topic"].lower() != topic:
                continue
            if ctx is None:
                self._enqueue([(hook["id"], order["id"])], released=True)
            elif (hook["id"], order["id"], topic) not in ctx.events:
                ctx.events.append((hook["id"], order["id"], topic))

    def _enqueue(self, items: Iterable[tuple[int, int]], released: bool) -> threading.Event:
        """wc_webhook_execute_queue(): one Action Scheduler action per (webhook, order), not
        added while an identical one is still pending (the 600 s rule coalesces rapid
        ``order.updated`` events into one delivery with the latest data, §1.7)."""
        event = threading.Event()
        if released:
            event.set()
        with self._cond:
            for webhook_id, order_id in items:
                if any(q.webhook_id == webhook_id and q.order_id == order_id for q in self._queue):
                    continue
                self._queue.append(_QueueItem(webhook_id, order_id, event))
            self._cond.notify_all()
        return event

    def _work(self) -> None:
        """auto_deliver: an Action Scheduler runner that picks each action up at once, but only
        after the request that queued it has finished answering (PHP shutdown)."""
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait(0.5)
                if self._stop:
                    return
                item = self._queue.pop(0)
                self._inflight += 1
            try:
                item.released.wait(1.0)
                self._deliver_one(item.webhook_id, item.order_id)
            except Exception:  # noqa: BLE001 - a failing action must not kill the runner
                pass
            finally:
                with self._cond:
                    self._inflight -= 1
                    self._cond.notify_all()

    def _payload(self, topic: str, order_id: int) -> Any:
        """WC_Webhook::build_payload(), evaluated at send time under the home URL's scheme."""
        resource, _, event = topic.partition(".")
        if event == "deleted":
            return {"id": order_id}
        if resource == "action":
            return {"action": event, "arg": order_id}
        if resource != "order":
            return {"code": "rest_no_route",
                    "message": "No route was found matching the URL and request method.",
                    "data": {"status": 404}}
        order = self.orders.get(order_id)
        if order is None:
            return {"code": "woocommerce_rest_shop_order_invalid_id", "message": "Invalid ID.",
                    "data": {"status": 404}}
        return self._order_json(order, self._home_scheme())

    def _deliver_one(self, webhook_id: int, order_id: int, error_payload: bool = False) -> Delivery | None:
        """WC_Webhook::deliver() then log_delivery(): one POST, no retry, ever (§1.6)."""
        with self._lock:
            hook = self.webhooks.get(webhook_id)
            if hook is None:
                return None  # new WC_Webhook($id) throws "Invalid webhook."; the action fails
            topic = hook["topic"]
            resource, _, event = topic.partition(".")
            if error_payload:
                payload: Any = {"code": "woocommerce_rest_cannot_view",
                                "message": "Sorry, you cannot view this resource.",
                                "data": {"status": 401}}
            else:
                payload = self._payload(topic, order_id)
            body = wp_json_encode(payload).strip().encode("utf-8")
            signature = webhook_signature(body, hook["secret"])
            # wp_hash($id . strtotime('now')): same value for the same webhook in one second.
            delivery_id = hmac.new(self._salt.encode(), f"{webhook_id}{int(self.clock())}".encode(),
                                   hashlib.md5).hexdigest()
            url = hook["delivery_url"]
            headers = self._transport_headers(url) + [
                ("Content-Type", "application/json"),
                ("X-WC-Webhook-Source", self.base_url + "/"),
                ("X-WC-Webhook-Topic", topic),
                ("X-WC-Webhook-Resource", resource),
                ("X-WC-Webhook-Event", event),
                ("X-WC-Webhook-Signature", signature),
                ("X-WC-Webhook-ID", str(webhook_id)),
                ("X-WC-Webhook-Delivery-ID", delivery_id),
                ("Connection", "close"),
                ("Content-Length", str(len(body))),
            ]
        record = Delivery(kind="delivery", webhook_id=webhook_id, order_id=order_id, topic=topic,
                          url=url, request_headers=headers, request_body=body,
                          delivery_id=delivery_id, signature=signature, started_at=self.clock())
        self._send(record, self.delivery_timeout, success=lambda s: 200 <= s < 303)
        with self._lock:
            self.deliveries.append(record)
            need_ping = self._log_delivery(webhook_id, record.success)
        if need_ping:
            self._ping(webhook_id)
        return record

    def _log_delivery(self, webhook_id: int, success: bool) -> bool:
        """WC_Webhook::log_delivery() + failed_delivery() + save(); True if the save pings."""
        hook = self.webhooks.get(webhook_id)
        if hook is None:
            return False
        if success:
            hook["failure_count"] = 0
        elif hook["failure_count"] > self.max_delivery_failures:
            # Counter already at 6: this 7th consecutive failure disables the webhook.
            hook["status"] = "disabled"
        else:
            hook["failure_count"] += 1
        hook["date_modified"] = self._now()
        # WC_Webhook_Data_Store::update() pings whenever an active webhook still has
        # pending_delivery, so a receiver that rejects pings is pinged after every delivery.
        return hook["status"] == "active" and hook["pending_delivery"]

    def _ping(self, webhook_id: int) -> Delivery | None:
        """WC_Webhook::deliver_ping(): unsigned ``webhook_id=N``, needs exactly HTTP 200."""
        with self._lock:
            hook = self.webhooks.get(webhook_id)
            if hook is None:
                return None
            url = hook["delivery_url"]
            body = f"webhook_id={webhook_id}".encode()
            # Header order as captured from 7.9 (no Content-Type given, so Requests adds the
            # form type last; no X-WC headers, no signature).
            headers = self._transport_headers(url) + [
                ("Connection", "close"),
                ("Content-Length", str(len(body))),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ]
        record = Delivery(kind="ping", webhook_id=webhook_id, order_id=None, topic="ping", url=url,
                          request_headers=headers, request_body=body, started_at=self.clock())
        self._send(record, self.ping_timeout, success=lambda s: s == 200)
        with self._lock:
            self.pings.append(record)
            hook = self.webhooks.get(webhook_id)
            if hook is not None and record.success:
                hook["pending_delivery"] = False
                hook["date_modified"] = self._now()
        return record

    def _transport_headers(self, url: str) -> list[tuple[str, str]]:
        # What WordPress's Requests library puts first (captured): Host, UA, Accept,
        # Accept-Encoding, Referer (= the URL itself).
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        default_port = 443 if parts.scheme == "https" else 80
        if parts.port and parts.port != default_port:
            host = f"{host}:{parts.port}"
        return [
            ("Host", host),
            ("User-Agent", f"WooCommerce/{self.wc_version} Hookshot (WordPress/{self.wp_version})"),
            ("Accept", "*/*"),
            ("Accept-Encoding", "deflate, gzip, br, zstd"),
            ("Referer", url),
        ]

    def _send(self, record: Delivery, timeout: float, success: Callable[[int], bool],
              method: str = "POST") -> None:
        """POST (or ``method``) over HTTP/1.0 with the headers exactly in
        ``record.request_headers`` order, no redirects followed."""
        parts = urlsplit(record.url)
        start = time.monotonic()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        conn: http.client.HTTPConnection | None = None
        try:
            if self.reject_unsafe_urls and not self._is_safe_url(parts):
                raise _Unsafe("A valid URL was not provided.")
            cls = _HTTPS10Connection if parts.scheme == "https" else _HTTP10Connection
            conn = cls(parts.hostname or "", port, timeout=timeout)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for key, value in record.request_headers:
                conn.putheader(key, value)
            conn.endheaders(record.request_body)
            response = conn.getresponse()
            raw = response.read()
            encoding = (response.getheader("Content-Encoding") or "").lower()
            if encoding == "gzip":
                raw = gzip.decompress(raw)
            elif encoding == "deflate":
                raw = zlib.decompress(raw)
            record.status = response.status
            record.response_headers = list(response.getheaders())
            record.response_body = raw
            record.success = success(response.status)
        except _Unsafe as exc:
            record.error = f"http_request_failed: {exc}"
        except (socket.timeout, TimeoutError):
            ms = int((time.monotonic() - start) * 1000)
            record.error = (f"http_request_failed: cURL error 28: Operation timed out after {ms} "
                            f"milliseconds with 0 bytes received")
        except ConnectionRefusedError:
            record.error = (f"http_request_failed: cURL error 7: Failed to connect to "
                            f"{parts.hostname} port {port}: Connection refused")
        except (OSError, http.client.HTTPException) as exc:
            record.error = f"http_request_failed: cURL error 56: {exc}"
        except Exception as exc:  # noqa: BLE001 - e.g. an unencodable URL: still just a failure
            record.error = f"http_request_failed: {exc}"
        finally:
            record.duration = time.monotonic() - start
            if conn is not None:
                conn.close()

    @staticmethod
    def _is_safe_url(parts: Any) -> bool:
        # wp_http_validate_url(): no loopback/private hosts, ports 80/443/8080 only.
        import ipaddress

        host = parts.hostname or ""
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except OSError:
            return False
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified:
                return False
        return (parts.port or (443 if parts.scheme == "https" else 80)) in (80, 443, 8080)

    # =========================================================================================
    # Internals: HTTP entry point
    # =========================================================================================

    def _entry(self) -> Response:
        """Every request comes through here (a Flask before_request hook answering all paths)."""
        req = flask.request
        raw_body = req.get_data(cache=True)
        body_json: Any = None
        if raw_body and req.mimetype == "application/json":
            try:
                body_json = json.loads(raw_body)
            except ValueError:
                body_json = None
        record: dict[str, Any] = {
            "method": req.method, "path": req.path,
            "query": _php_parse_str(req.query_string.decode("latin-1")),
            "headers": dict(req.headers), "json": body_json, "body": raw_body, "auth": None,
            "auth_error": None, "status": None, "fault": None, "time": self.clock(),
        }
        with self._lock:
            self.requests.append(record)
        if self._down:
            record["status"] = 503
            return Response(MAINTENANCE_HTML, 503, {"Content-Type": _HTML_TYPE, "Retry-After": "600"})
        fault = self.faults.take(req.method, req.path)
        if fault is not None:
            record["fault"] = fault.kind
            if fault.kind == "status":
                status = int(fault.params.get("status", 503))
                default = MAINTENANCE_HTML if status == 503 else CRITICAL_ERROR_HTML if status == 500 \
                    else f"<html><head><title>{status} Error</title></head><body><h1>{status}</h1></body>\n"
                record["status"] = status
                return Response(fault.params.get("body", default), status,
                                {"Content-Type": fault.params.get("content_type", _HTML_TYPE),
                                 **fault.params.get("headers", {})})
            if fault.kind == "non_json":
                record["status"] = int(fault.params.get("status", 200))
                return Response(fault.params.get("body", CACHED_PAGE_HTML), record["status"],
                                {"Content-Type": _HTML_TYPE})
            if fault.kind == "redirect":
                # The query goes along, as a server-level redirect keeps it: over plain http it
                # carries the OAuth consumer key and signature.
                record["status"] = int(fault.params.get("status", 301))
                target = str(fault.params["location"]).rstrip("/") + req.full_path.rstrip("?")
                return Response("", record["status"], {"Location": target,
                                                       "Content-Type": _HTML_TYPE})
            if fault.kind == "timeout_before":
                time.sleep(float(fault.params.get("seconds", 6.0)))
                record["status"] = int(fault.params.get("status", 504))
                return Response(fault.params.get("body", GATEWAY_TIMEOUT_HTML), record["status"],
                                {"Content-Type": "text/html"})
        response = self._handle(req, raw_body, body_json, record)
        if fault is not None and fault.kind == "timeout":
            # The write has happened; the answer comes too late for the client.
            time.sleep(float(fault.params.get("seconds", 6.0)))
        return response

    def _handle(self, req: Any, raw_body: bytes, body_json: Any, record: dict[str, Any]) -> Response:
        home_path = urlsplit(self.base_url).path.rstrip("/")
        path = req.path
        # WC_Auth::handle_auth_requests() runs on parse_request at priority 0, before the REST
        # server (priority 10) and the theme, so it wins on any path that carries its vars.
        auth_route = self._wc_auth_route(req, home_path)
        if auth_route is not None:
            return self._wc_auth_endpoint(req, raw_body, auth_route, record)
        prefix = f"{home_path}/wp-json"
        if not (path == prefix or path.startswith(prefix + "/")):
            return self._site_page(path, home_path, record)
        route = path[len(prefix):].rstrip("/") or "/"
        if self.latency > 0:   # simulated store response time (benchmarks); lock not held
            time.sleep(self.latency)

        forwarded = req.headers.get("X-Forwarded-Proto", "").lower() == "https"
        is_ssl = self.https or (self.trust_forwarded_proto and forwarded)
        query = _php_parse_str(req.query_string.decode("latin-1"))
        post: dict[str, Any] = {}
        form: dict[str, Any] = {}
        if req.mimetype == "application/x-www-form-urlencoded" and raw_body:
            form = _php_parse_str(raw_body.decode("utf-8", "replace"))
            if req.method == "POST":
                post = form  # PHP fills $_POST only for POST
        params: dict[str, Any] = dict(query)
        params.update(form)
        if isinstance(body_json, dict):
            params.update(body_json)
        raw_uri = req.environ.get("REQUEST_URI") or quote(req.path)
        ctx = _Ctx(method=req.method.upper(), route=route, raw_path=urlsplit(raw_uri).path,
                   query=query, post=post, params=params, body_json=body_json, headers=req.headers,
                   is_ssl=is_ssl, scheme="https" if is_ssl or self._home_scheme() == "https" else "http")

        after: Callable[[], Any] | None = None
        with self._lock:
            try:
                result = self._dispatch(ctx, req, raw_body)
                after = result.after
            except _WCError as err:
                result = _Result(err.body(), err.status, err.headers)
            record["auth"] = ctx.auth
            record["auth_error"] = ctx.auth_error.code if ctx.auth_error else None
        if after is not None:
            replacement = after()
            if replacement is not None:
                result.data = replacement
        record["status"] = result.status

        body = wp_json_encode(result.data)
        headers = {
            "Content-Type": _JSON_TYPE,
            "X-Robots-Tag": "noindex",
            "Link": f'<{self._home(ctx.scheme)}/wp-json/>; rel="https://api.w.org/"',
            "X-Content-Type-Options": "nosniff",
            "Access-Control-Expose-Headers": "X-WP-Total, X-WP-TotalPages, Link",
            "Access-Control-Allow-Headers": "Authorization, X-WP-Nonce, Content-Disposition, "
                                            "Content-MD5, Content-Type",
        }
        if ctx.user is not None:
            # WordPress sends nocache headers to logged-in users.
            headers["Expires"] = "Wed, 11 Jan 1984 05:00:00 GMT"
            headers["Cache-Control"] = "no-cache, must-revalidate, max-age=0"
        header_list = list(headers.items())
        for name, value in result.headers.items():
            if name == "Link":  # WordPress sends the paging Link header next to the api.w.org one
                header_list.append((name, value))
            else:
                header_list = [(k, v) for k, v in header_list if k != name] + [(name, value)]
        response = Response(body, result.status, headers=header_list)
        if ctx.events:
            # Deliveries are queued at PHP shutdown; an Action Scheduler runner only picks them
            # up after the response went out, which auto_deliver honours via this event.
            released = self._enqueue([(w, o) for w, o, _ in ctx.events], released=False)
            response.call_on_close(released.set)
        return response

    def _site_page(self, path: str, home_path: str, record: dict[str, Any]) -> Response:
        # Minimal front end: the home page and the "pay for order" page of payment_url.
        local = path[len(home_path):] if path.startswith(home_path) else path
        match = re.match(r"^/checkout/order-pay/(\d+)/?$", local)
        if local in ("", "/"):
            record["status"] = 200
            return Response(f"<!DOCTYPE html><html><head><title>{self.site_title}</title></head>"
                            f"<body><h1>{self.site_title}</h1></body></html>\n", 200,
                            {"Content-Type": _HTML_TYPE})
        if match and int(match.group(1)) in self.orders:
            order = self.orders[int(match.group(1))]
            record["status"] = 200
            return Response(f"<!DOCTYPE html><html><head><title>Pay for order</title></head><body>"
                            f"<h1>Pay for order #{order['number']}</h1><p>Total: "
                            f"{_fmt(order['total'], self.decimals)} {order['currency']}</p>"
                            f"</body></html>\n", 200, {"Content-Type": _HTML_TYPE})
        record["status"] = 404
        return Response("<!DOCTYPE html><html><head><title>Page not found</title></head><body>"
                        "<h1>Oops! That page can&rsquo;t be found.</h1></body></html>\n", 404,
                        {"Content-Type": _HTML_TYPE})

    def _dispatch(self, ctx: _Ctx, req: Any, raw_body: bytes) -> _Result:
        """WP_REST_Server::serve_request() + dispatch(), in WordPress's order: authentication
        errors, key permissions (rest_pre_dispatch), route match, JSON body, parameter
        validation, permission callback, callback."""
        is_wc_route = ctx.route.lower().startswith("/wc/") or ctx.route.lower().startswith("/wc-")
        if is_wc_route:
            self._authenticate(ctx, req)
            if ctx.auth_error is not None:
                err = ctx.auth_error
                if ctx.www_authenticate and self.send_www_authenticate:
                    err.headers["WWW-Authenticate"] = _WWW_AUTHENTICATE
                raise err
            if ctx.user is not None:
                self._check_key_permissions(ctx)

        method = ctx.method
        for pattern, methods in _ROUTES:
            match = pattern.match(ctx.route)
            if match is None:
                continue
            handler_name = methods.get(method) or (methods.get("GET") if method == "HEAD" else None)
            if method == "OPTIONS":
                return _Result({"namespace": "wc/v3", "methods": sorted(methods)},
                               headers={"Allow": ", ".join(sorted(methods))})
            if handler_name is None:
                break
            if raw_body and req.mimetype == "application/json" and ctx.body_json is None \
                    and raw_body.strip() not in (b"null",):
                raise _WCError("rest_invalid_json", "Invalid JSON body passed.", 400,
                               json_error_code=4, json_error_message="Syntax error")
            handler = getattr(self, f"_h_{handler_name}")
            result: _Result = handler(ctx, **{k: int(v) for k, v in match.groupdict().items()})
            result.headers.setdefault("Allow", ", ".join(m for m in ("GET", "POST", "PUT", "PATCH",
                                                                       "DELETE") if m in methods))
            return result
        raise _WCError("rest_no_route", "No route was found matching the URL and request method.", 404)

    # ------------------------------------------------------------------------ authentication

    def _key(self, consumer_key: Any) -> dict[str, Any] | None:
        return self.api_keys.get(_wc_api_hash(_sanitize_text_field(consumer_key)))

    def _authenticate(self, ctx: _Ctx, req: Any) -> None:
        """WC_REST_Authentication::authenticate(): Basic only when is_ssl(), then OAuth."""
        if ctx.is_ssl:
            self._basic_auth(ctx, req)
            if ctx.user is not None:
                return
        self._oauth(ctx, req)

    def _basic_auth(self, ctx: _Ctx, req: Any) -> None:
        consumer_key: Any = ""
        consumer_secret: Any = ""
        kind = "query_string"
        if not _php_empty(ctx.query.get("consumer_key")) and not _php_empty(ctx.query.get("consumer_secret")):
            consumer_key, consumer_secret = ctx.query["consumer_key"], ctx.query["consumer_secret"]
        if not consumer_key:
            header = req.headers.get("Authorization", "")
            if header[:6].lower() == "basic ":
                try:
                    decoded = base64.b64decode(header[6:].strip()).decode("utf-8", "replace")
                except ValueError:
                    decoded = ""
                user, _, password = decoded.partition(":")
                if user and password:
                    consumer_key, consumer_secret, kind = user, password, "basic_auth"
        if not consumer_key or not consumer_secret:
            return
        key = self._key(consumer_key)
        if key is None:
            return  # unknown key: no error, the request runs unauthenticated (§4.1)
        if not isinstance(consumer_secret, str) or not hmac.compare_digest(
                key["consumer_secret"].encode(), consumer_secret.encode()):
            ctx.auth_error = _WCError("woocommerce_rest_authentication_error", "Consumer secret is invalid.",
                                      401)
            ctx.www_authenticate = True
            return
        ctx.user, ctx.auth = key, kind

    def _oauth(self, ctx: _Ctx, req: Any) -> None:
        params: dict[str, Any] = dict(ctx.query)
        params.update(ctx.post)  # array_merge($_GET, $_POST)
        header = req.headers.get("Authorization", "").strip()
        if header.startswith("OAuth "):
            for name, quoted, bare in re.findall(r'(oauth_[a-z_-]*)=(?::?"([^"]*)"|([^,]*))', header):
                params[name] = unquote_plus(quoted or bare)
        missing = [name for name in _OAUTH_REQUIRED if _php_empty(params.get(name))]
        if len(missing) == len(_OAUTH_REQUIRED):
            return  # not even trying OAuth
        if missing:
            noun = "parameter" if len(missing) == 1 else "parameters"
            ctx.auth_error = _WCError("woocommerce_rest_authentication_missing_parameter",
                                      f"Missing OAuth {noun} {', '.join(missing)}", 401)
            return
        key = self._key(params["oauth_consumer_key"])
        if key is None:
            ctx.auth_error = _WCError("woocommerce_rest_authentication_error", "Consumer key is invalid.",
                                      401)
            return
        error = self._check_oauth_signature(ctx, key, params)
        if error is None:
            error = self._check_oauth_timestamp_and_nonce(key, params["oauth_timestamp"],
                                                          params["oauth_nonce"])
        if error is not None:
            ctx.auth_error = error
            return
        ctx.user, ctx.auth = key, "oauth1"

    def _check_oauth_signature(self, ctx: _Ctx, key: dict[str, Any],
                               params: dict[str, Any]) -> _WCError | None:
        """WC_REST_Authentication::check_oauth_signature(), step by step."""
        # base URI = rawurlencode(home_url(<request path>, is_ssl() ? 'https' : 'http')): the
        # store's canonical host, not the Host header; the raw (still %-encoded) path.
        request_path = ctx.raw_path
        wp_base = urlsplit(self.base_url).path.rstrip("/") + "/"
        if request_path.startswith(wp_base):
            request_path = request_path[len(wp_base):]
        home = self._home("https" if ctx.is_ssl else "http")
        base_request_uri = php_rawurlencode(f"{home}/{request_path.lstrip('/')}")

        signature_param = params.get("oauth_signature")
        if not isinstance(signature_param, str):
            signature_param = ""
        consumer_signature = unquote(signature_param.replace(" ", "+"))  # rawurldecode
        rest = {k: v for k, v in params.items() if k != "oauth_signature"}
        ordered = sorted(rest.items(), key=lambda kv: str(kv[0]).encode("utf-8"))  # uksort strcmp
        normalized = {php_rawurlencode(str(k)): self._rfc3986(v) for k, v in ordered}
        query_string = "%26".join(self._join_with_equals_sign(normalized))
        string_to_sign = f"{ctx.method}&{base_request_uri}&{query_string}"

        method = normalized.get("oauth_signature_method")
        if method not in ("HMAC-SHA1", "HMAC-SHA256"):
            return _WCError("woocommerce_rest_authentication_error",
                            "Invalid signature - signature method is invalid.", 401)
        digest = hashlib.sha1 if method == "HMAC-SHA1" else hashlib.sha256
        secret = (key["consumer_secret"] + "&").encode("utf-8")
        expected = base64.b64encode(hmac.new(secret, string_to_sign.encode("utf-8"), digest).digest())
        if not hmac.compare_digest(expected, consumer_signature.encode("utf-8")):
            return _WCError("woocommerce_rest_authentication_error",
                            "Invalid signature - provided signature does not match.", 401)
        return None

    @classmethod
    def _rfc3986(cls, value: Any) -> Any:
        # wc_rest_urlencode_rfc3986(): rawurlencode, mapped over arrays (values only).
        if isinstance(value, dict):
            return {k: cls._rfc3986(v) for k, v in value.items()}
        return php_rawurlencode(str(value))

    @classmethod
    def _join_with_equals_sign(cls, params: dict[Any, Any], key: str = "") -> list[str]:
        out: list[str] = []
        for param_key, param_value in params.items():
            name = f"{key}%5B{param_key}%5D" if key else str(param_key)
            if isinstance(param_value, dict):
                out.extend(cls._join_with_equals_sign(param_value, name))
            else:
                out.append(php_rawurlencode(f"{name}={param_value}"))
        return out

    def _check_oauth_timestamp_and_nonce(self, key: dict[str, Any], timestamp: Any,
                                         nonce: Any) -> _WCError | None:
        now = int(self.clock())
        try:
            ts = float(timestamp)
        except (TypeError, ValueError):
            ts = float("nan")
        if not (now - _OAUTH_WINDOW <= ts <= now + _OAUTH_WINDOW):
            return _WCError("woocommerce_rest_authentication_error", "Invalid timestamp.", 401)
        used: dict[Any, Any] = key["nonces"]
        if nonce in used.values():
            return _WCError("woocommerce_rest_authentication_error",
                            "Invalid nonce - nonce has already been used.", 401)
        # Stored as $used_nonces[$timestamp] = $nonce: a second request in the same second
        # overwrites the first one's nonce (a real quirk, kept).
        used[int(ts) if ts == int(ts) else timestamp] = nonce
        for stamp in [s for s in used if isinstance(s, int) and s < now - _OAUTH_WINDOW]:
            del used[stamp]
        return None

    def _check_key_permissions(self, ctx: _Ctx) -> None:
        # WC_REST_Authentication::check_permissions() on rest_pre_dispatch.
        permissions = ctx.user["permissions"] if ctx.user else ""
        if ctx.method in ("GET", "HEAD"):
            if permissions not in ("read", "read_write"):
                raise _WCError("woocommerce_rest_authentication_error",
                               "The API key provided does not have read permissions.", 401)
        elif ctx.method in ("POST", "PUT", "PATCH", "DELETE"):
            if permissions not in ("write", "read_write"):
                raise _WCError("woocommerce_rest_authentication_error",
                               "The API key provided does not have write permissions.", 401)
        elif ctx.method != "OPTIONS":
            raise _WCError("woocommerce_rest_authentication_error", "Unknown request method.", 401)
        ctx.user["last_access"] = self._now()

    # ------------------------------------------------------------------------ request params

    def _params(self, ctx: _Ctx, spec: Mapping[str, Validator], required: Iterable[str] = (),
                defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """WP_REST_Request::has_valid_params() + sanitize_params(): missing first, then each
        invalid parameter, reported together."""
        missing = [name for name in required if ctx.params.get(name) is None]
        if missing:
            raise _WCError("rest_missing_callback_param", f"Missing parameter(s): {', '.join(missing)}",
                           400, params=missing)
        out: dict[str, Any] = dict(defaults or {})
        invalid: dict[str, str] = {}
        details: dict[str, Any] = {}
        for name, validator in spec.items():
            if name not in ctx.params or ctx.params[name] is None:
                continue
            try:
                out[name] = validator(name, ctx.params[name])
            except _Invalid as exc:
                invalid[name] = exc.message
                details[name] = {"code": exc.code, "message": exc.message, "data": None}
        if invalid:
            raise _WCError("rest_invalid_param", f"Invalid parameter(s): {', '.join(invalid)}", 400,
                           params=invalid, details=details)
        return out

    @staticmethod
    def _need_user(ctx: _Ctx, code: str, message: str) -> None:
        # rest_authorization_required_code(): 401 when not logged in. A valid API key belongs
        # to the admin, who has every capability, so authenticated requests always pass.
        if ctx.user is None:
            raise _WCError(code, message, 401)

    _CANNOT_LIST = ("woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
    _CANNOT_VIEW = ("woocommerce_rest_cannot_view", "Sorry, you cannot view this resource.")
    _CANNOT_CREATE = ("woocommerce_rest_cannot_create", "Sorry, you are not allowed to create resources.")
    _CANNOT_EDIT = ("woocommerce_rest_cannot_edit", "Sorry, you are not allowed to edit this resource.")
    _CANNOT_DELETE = ("woocommerce_rest_cannot_delete", "Sorry, you are not allowed to delete this resource.")

    # ------------------------------------------------------------------------------ routes

    def _h_index(self, ctx: _Ctx) -> _Result:
        return _Result({"name": self.site_title, "description": "", "url": self._home(ctx.scheme),
                        "home": self._home(ctx.scheme), "namespaces": ["wc/v3", "wc/v2", "wc/v1", "wp/v2"],
                        "authentication": [], "_links": {}})

    def _h_namespace_index(self, ctx: _Ctx) -> _Result:
        return _Result({"namespace": "wc/v3", "routes": {
            f"/wc/v3/{name}": {"namespace": "wc/v3"} for name in
            ("orders", "orders/(?P<id>[\\d]+)", "orders/(?P<order_id>[\\d]+)/notes",
             "orders/(?P<order_id>[\\d]+)/notes/(?P<id>[\\d]+)", "webhooks", "webhooks/(?P<id>[\\d]+)")}})

    # orders ----------------------------------------------------------------------------------

    _ORDER_WRITE: dict[str, Validator] = {
        "status": _v_enum(ORDER_STATUS_LABELS), "set_paid": _v_bool, "transaction_id": _v_str,
        "customer_note": _v_str, "billing": _v_object, "shipping": _v_object, "meta_data": _v_array,
        "line_items": _v_array, "shipping_lines": _v_array, "fee_lines": _v_array,
        "coupon_lines": _v_array, "payment_method": _v_str, "payment_method_title": _v_str,
        "customer_id": _v_int(), "parent_id": _v_int(), "currency": _v_str,
    }

    def _h_orders_list(self, ctx: _Ctx) -> _Result:
        p = self._params(ctx, {
            "context": _v_context, "page": _v_int(1), "per_page": _v_int(1, 100), "search": _v_str,
            "after": _v_date, "before": _v_date, "modified_after": _v_date, "modified_before": _v_date,
            "dates_are_gmt": _v_bool, "exclude": _v_id_list, "include": _v_id_list, "offset": _v_int(),
            "order": _v_enum(("asc", "desc")),
            "orderby": _v_enum(("date", "id", "include", "title", "slug", "modified")),
            "parent": _v_id_list, "parent_exclude": _v_id_list,
            "status": _v_enum_list(["any", "trash", *ORDER_STATUS_LABELS]), "customer": _v_int(),
            "product": _v_int(), "dp": _v_int(),
        }, defaults={"page": 1, "per_page": 10, "order": "desc", "orderby": "date", "status": ["any"],
                     "dates_are_gmt": False, "dp": self.decimals})
        self._need_user(ctx, *self._CANNOT_LIST)
        statuses = p["status"]
        orders = list(self.orders.values())
        if "any" in statuses:
            orders = [o for o in orders if o["status"] not in ("trash", "auto-draft")]
        else:
            orders = [o for o in orders if o["status"] in statuses]
        gmt = p["dates_are_gmt"]

        def when(value: str) -> datetime:
            match = _DATE_RE.match(value)
            assert match is not None
            naive = datetime(*(int(match.group(i)) for i in range(1, 7)))
            tz = match.group(8)
            if tz:
                offset = timedelta(0) if tz in ("Z", "z") else timedelta(
                    hours=int(tz[1:3]), minutes=int(tz[-2:]) if len(tz) > 3 else 0
                ) * (1 if tz[0] == "+" else -1)
                naive = (naive - offset) + (timedelta(0) if gmt else self.utc_offset)
            return naive

        def column(order: dict[str, Any], key: str) -> datetime:
            value = order[key].replace(tzinfo=None)
            return value if gmt else value + self.utc_offset

        for param, key, later in (("after", "date_created", True), ("before", "date_created", False),
                                  ("modified_after", "date_modified", True),
                                  ("modified_before", "date_modified", False)):
            if param in p:
                limit = when(p[param])
                orders = [o for o in orders if (column(o, key) > limit if later else column(o, key) < limit)]
        if p.get("include"):
            orders = [o for o in orders if o["id"] in p["include"]]
        if p.get("exclude"):
            orders = [o for o in orders if o["id"] not in p["exclude"]]
        if p.get("parent"):
            orders = [o for o in orders if o["parent_id"] in p["parent"]]
        if "customer" in p:
            orders = [o for o in orders if o["customer_id"] == p["customer"]]
        if "product" in p:
            orders = [o for o in orders if any(li["product_id"] == p["product"] for li in o["line_items"])]
        if p.get("search"):
            # ASSUMPTION: a simple substring search over billing fields and the number.
            needle = p["search"].lower()
            orders = [o for o in orders if needle in json.dumps(o["billing"]).lower()
                      or needle in o["number"].lower()]
        reverse = p["order"] == "desc"
        if p["orderby"] == "id":
            orders.sort(key=lambda o: o["id"], reverse=reverse)
        elif p["orderby"] == "modified":
            orders.sort(key=lambda o: (o["date_modified"], o["id"]), reverse=reverse)
        elif p["orderby"] == "include" and p.get("include"):
            orders.sort(key=lambda o: p["include"].index(o["id"]))
        else:  # "date ID": date with the ID as tiebreak, both in the requested direction
            orders.sort(key=lambda o: (o["date_created"], o["id"]), reverse=reverse)
        total = len(orders)
        per_page, page = p["per_page"], p["page"]
        offset = p["offset"] if "offset" in p else (page - 1) * per_page
        window = orders[offset:offset + per_page]
        pages = math.ceil(total / per_page)
        headers = {"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)}
        links = self._paging_links(ctx, "/wc/v3/orders", page, pages)
        if links:
            headers["Link"] = links
        return _Result([self._order_json(o, ctx.scheme, p["dp"]) for o in window], headers=headers)

    def _paging_links(self, ctx: _Ctx, route: str, page: int, pages: int) -> str:
        query = {k: v for k, v in ctx.query.items() if not k.startswith("oauth_")
                 and k not in ("consumer_key", "consumer_secret") and isinstance(v, str)}
        links = []
        base = self._rest_url(ctx.scheme, route)
        if page > 1:
            links.append(f'<{base}?{urlencode({**query, "page": min(page - 1, max(pages, 1))})}>; rel="prev"')
        if pages > page:
            links.append(f'<{base}?{urlencode({**query, "page": page + 1})}>; rel="next"')
        return ", ".join(links)

    def _h_orders_create(self, ctx: _Ctx) -> _Result:
        p = self._params(ctx, self._ORDER_WRITE, defaults={"status": "pending"})
        self._need_user(ctx, *self._CANNOT_CREATE)
        if not _php_empty(ctx.params.get("id")):
            raise _WCError("woocommerce_rest_shop_order_exists", "Cannot create existing shop_order.", 400)
        order = self._new_order(created_via="rest-api", customer_id=p.get("customer_id", 0),
                                payment_method=p.get("payment_method", ""))
        order["payment_method_title"] = p.get("payment_method_title", "")
        order["currency"] = p.get("currency", self.currency)
        self._apply_order_props(order, p, creating=True)
        for posted in p.get("line_items", []):
            order["line_items"].append(self._rest_line_item(posted))
        for posted in p.get("shipping_lines", []):
            order["shipping_lines"].append(self._shipping_line(posted if isinstance(posted, dict) else {}))
        for posted in p.get("fee_lines", []):
            order["fee_lines"].append(self._fee_line(posted if isinstance(posted, dict) else {}))
        for posted in p.get("coupon_lines", []):
            code = str(posted.get("code", "")) if isinstance(posted, dict) else ""
            if not code:
                raise _WCError("woocommerce_rest_invalid_coupon", "Coupon code is required.", 400)
            if code.lower() not in self.coupons:
                raise _WCError("woocommerce_rest_invalid_coupon", f'Coupon "{code}" does not exist!', 400)
            order["coupon_lines"].append(self._coupon_line(code.lower(), self.coupons[code.lower()]))
        self._apply_coupon_discounts(order)
        self._calculate_totals(order)
        self._set_status(order, p["status"])   # from "" : no transition note for a new order
        self.orders[order["id"]] = order
        order["date_modified"] = self._now()
        self._fire_created(ctx, order)
        if p.get("set_paid") is True:
            # save_object(): set_paid on create calls payment_complete() unconditionally.
            self._payment_complete(ctx, order, p.get("transaction_id", ""))
        return _Result(self._order_json(order, ctx.scheme), 201,
                       {"Location": self._rest_url(ctx.scheme, f"/wc/v3/orders/{order['id']}")})

    def _rest_line_item(self, posted: Any) -> dict[str, Any]:
        # WC_REST_Orders_V2_Controller::prepare_line_items(): product by sku or id; an unknown
        # product leaves a product-less line (no error), ad hoc lines need a product reference.
        if not isinstance(posted, dict):
            posted = {}
        product = None
        if not _php_empty(posted.get("sku")):
            product = next((pr for pr in self.products.values() if pr["sku"] == posted["sku"]), None)
        elif not _php_empty(posted.get("product_id")) and _php_empty(posted.get("variation_id")):
            product = self.products.get(int(posted["product_id"]))
        elif not _php_empty(posted.get("variation_id")):
            product = self.products.get(int(posted["variation_id"]))
        else:
            raise _WCError("woocommerce_rest_required_product_reference",
                           "Product ID or SKU is required.", 400)
        quantity = int(posted.get("quantity", 1))
        spec: dict[str, Any] = {"quantity": quantity}
        if product is not None:
            spec["product_id"] = product["id"]
        else:
            spec.update(name=str(posted.get("name", "")), price="0")
        for key in ("subtotal", "total", "total_tax"):
            if key in posted:
                spec[key] = posted[key]
        item = self._line_item_from_spec(spec)
        if "name" in posted:
            item["name"] = str(posted["name"])
        for meta in posted.get("meta_data", []) or []:
            if isinstance(meta, dict) and "key" in meta and "value" in meta:
                item["meta_data"].append(self._meta(str(meta["key"]), meta["value"], display=True))
        return item

    def _apply_order_props(self, order: dict[str, Any], p: dict[str, Any], creating: bool) -> None:
        """prepare_object_for_database(): every writable prop except status and coupons."""
        for key in ("billing", "shipping"):
            if key in p:
                allowed = _BILLING_KEYS if key == "billing" else _SHIPPING_KEYS
                for field_name, value in p[key].items():
                    if field_name in allowed:   # only props with a setter are applied
                        order[key][field_name] = "" if value is None else str(value)
        for meta in p.get("meta_data", []):
            if isinstance(meta, dict) and "key" in meta:
                self._update_meta(order, str(meta["key"]), meta.get("value"), meta.get("id"))
        for key in ("transaction_id", "customer_note", "payment_method", "payment_method_title"):
            if key in p:
                order[key] = p[key]
        if "customer_id" in p:
            order["customer_id"] = p["customer_id"]
        if "parent_id" in p:
            order["parent_id"] = p["parent_id"]

    def _get_order_or(self, order_id: int) -> dict[str, Any] | None:
        return self.orders.get(order_id)

    def _h_order_get(self, ctx: _Ctx, item_id: int) -> _Result:
        p = self._params(ctx, {"context": _v_context, "dp": _v_int()}, defaults={"dp": self.decimals})
        order = self._get_order_or(item_id)
        # WC_REST_CRUD_Controller: the permission check only applies to an existing object.
        if order is not None:
            self._need_user(ctx, *self._CANNOT_VIEW)
        if order is None:
            raise _WCError("woocommerce_rest_shop_order_invalid_id", "Invalid ID.", 404)
        return _Result(self._order_json(order, ctx.scheme, p["dp"]))

    def _h_order_update(self, ctx: _Ctx, item_id: int) -> _Result:
        p = self._params(ctx, self._ORDER_WRITE)
        order = self._get_order_or(item_id)
        if order is not None:
            self._need_user(ctx, *self._CANNOT_EDIT)
        if order is None:
            # update_item() answers 400, not 404, for an unknown id (§3.2).
            raise _WCError("woocommerce_rest_shop_order_invalid_id", "Invalid ID.", 400)
        self._apply_order_props(order, p, creating=False)
        if any(k in p for k in ("billing", "shipping", "line_items", "shipping_lines", "fee_lines",
                                 "coupon_lines")):
            self._calculate_totals(order)
        if not _php_empty(p.get("status")):
            self._set_status(order, p["status"])
        self._save(ctx, order)
        if p.get("set_paid") is True and self._needs_payment(order):
            # Only when needs_payment(): an on-hold order is silently left alone (§3.2).
            self._payment_complete(ctx, order, p.get("transaction_id", ""))
        return _Result(self._order_json(order, ctx.scheme))

    def _h_order_delete(self, ctx: _Ctx, item_id: int) -> _Result:
        p = self._params(ctx, {"force": _v_bool}, defaults={"force": False})
        order = self._get_order_or(item_id)
        if order is not None:
            self._need_user(ctx, *self._CANNOT_DELETE)
        if order is None:
            raise _WCError("woocommerce_rest_shop_order_invalid_id", "Invalid ID.", 404)
        data = self._order_json(order, ctx.scheme)
        if p["force"]:
            del self.orders[item_id]
            for note_id in [n for n, note in self._notes.items() if note["order_id"] == item_id]:
                del self._notes[note_id]
        else:
            if order["status"] == "trash":
                raise _WCError("woocommerce_rest_already_trashed", "The shop_order has already been deleted.",
                               410)
            # wp_trash_post(): no status note; fires order.deleted (topic hook wp_trash_post).
            # ASSUMPTION: a forced delete (no trash step) fires no order.deleted in 7.9.
            order["status"] = "trash"
            order["date_modified"] = self._now()
            for hook in self.webhooks.values():
                if hook["status"] == "active" and hook["topic"] == "order.deleted":
                    ctx.events.append((hook["id"], item_id, "order.deleted"))
        return _Result(data)

    # notes -----------------------------------------------------------------------------------

    def _h_notes_list(self, ctx: _Ctx, order_id: int) -> _Result:
        p = self._params(ctx, {"context": _v_context, "type": _v_enum(("any", "customer", "internal"))},
                         defaults={"type": "any"})
        self._need_user(ctx, *self._CANNOT_LIST)
        if order_id not in self.orders:
            raise _WCError("woocommerce_rest_shop_order_invalid_id", "Invalid order ID.", 404)
        notes = self._order_notes(order_id)
        if p["type"] == "customer":
            notes = [n for n in notes if n["customer_note"]]
        elif p["type"] == "internal":
            notes = [n for n in notes if not n["customer_note"]]
        return _Result([self._note_json(n, ctx.scheme) for n in notes])

    def _h_notes_create(self, ctx: _Ctx, order_id: int) -> _Result:
        p = self._params(ctx, {"note": _v_str, "customer_note": _v_bool, "added_by_user": _v_bool},
                         required=("note",), defaults={"customer_note": False, "added_by_user": False})
        self._need_user(ctx, *self._CANNOT_CREATE)
        if not _php_empty(ctx.params.get("id")):
            raise _WCError("woocommerce_rest_shop_order_exists", "Cannot create existing shop_order.", 400)
        order = self.orders.get(order_id)
        if order is None:
            raise _WCError("woocommerce_rest_order_invalid_id", "Invalid order ID.", 404)
        # Adding a note is a comment insert, not an order save: no order.updated (§1.9).
        note = self._add_note(order, p["note"], customer_note=p["customer_note"],
                              added_by_user=p["added_by_user"])
        return _Result(self._note_json(note, ctx.scheme), 201,
                       {"Location": self._rest_url(ctx.scheme,
                                                   f"/wc/v3/orders/{order_id}/notes/{note['id']}")})

    def _note_or_404(self, order_id: int, note_id: int) -> dict[str, Any]:
        if order_id not in self.orders:
            raise _WCError("woocommerce_rest_order_invalid_id", "Invalid order ID.", 404)
        note = self._notes.get(note_id)
        if not note_id or note is None or note["order_id"] != order_id:
            raise _WCError("woocommerce_rest_invalid_id", "Invalid resource ID.", 404)
        return note

    def _h_note_get(self, ctx: _Ctx, order_id: int, item_id: int) -> _Result:
        self._params(ctx, {"context": _v_context})
        if order_id in self.orders:
            self._need_user(ctx, *self._CANNOT_VIEW)
        return _Result(self._note_json(self._note_or_404(order_id, item_id), ctx.scheme))

    def _h_note_delete(self, ctx: _Ctx, order_id: int, item_id: int) -> _Result:
        p = self._params(ctx, {"force": _v_bool}, defaults={"force": False})
        if order_id in self.orders:
            self._need_user(ctx, *self._CANNOT_DELETE)
        if not p["force"]:
            # Sic: the notes controller reuses the webhooks message.
            raise _WCError("woocommerce_rest_trash_not_supported", "Webhooks do not support trashing.", 501)
        note = self._note_or_404(order_id, item_id)
        data = self._note_json(note, ctx.scheme)
        del self._notes[item_id]
        return _Result(data)

    # webhooks --------------------------------------------------------------------------------

    def _h_webhooks_list(self, ctx: _Ctx) -> _Result:
        p = self._params(ctx, {
            "context": _v_context, "page": _v_int(1), "per_page": _v_int(1, 100), "search": _v_str,
            "after": _v_date, "before": _v_date, "exclude": _v_id_list, "include": _v_id_list,
            "offset": _v_int(), "order": _v_enum(("asc", "desc")),
            "orderby": _v_enum(("date", "id", "title")),
            "status": _v_enum(("all", *WEBHOOK_STATUSES)),
        }, defaults={"page": 1, "per_page": 10, "order": "desc", "orderby": "date", "status": "all"})
        self._need_user(ctx, *self._CANNOT_LIST)
        hooks = list(self.webhooks.values())
        if p["status"] != "all":
            hooks = [h for h in hooks if h["status"] == p["status"]]
        if p.get("search"):
            hooks = [h for h in hooks if p["search"].lower() in h["name"].lower()]
        if p.get("include"):
            hooks = [h for h in hooks if h["id"] in p["include"]]
        if p.get("exclude"):
            hooks = [h for h in hooks if h["id"] not in p["exclude"]]
        sort_key: Callable[[dict[str, Any]], Any] = {
            "date": lambda h: (h["date_created"], h["id"]), "id": lambda h: h["id"],
            "title": lambda h: (h["name"], h["id"]),
        }[p["orderby"]]
        hooks.sort(key=sort_key, reverse=p["order"] == "desc")
        total, per_page = len(hooks), p["per_page"]
        offset = p["offset"] if "offset" in p else (p["page"] - 1) * per_page
        # WC_Webhook_Data_Store::search_webhooks(): max_num_pages is 1 when limit <= 1 (sic).
        pages = math.ceil(total / per_page) if per_page > 1 else 1
        headers = {"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)}
        links = self._paging_links(ctx, "/wc/v3/webhooks", p["page"], pages)
        if links:
            headers["Link"] = links
        return _Result([self._webhook_json(h, ctx.scheme) for h in hooks[offset:offset + per_page]],
                       headers=headers)

    _WEBHOOK_WRITE: dict[str, Validator] = {
        "name": _v_str, "status": _v_enum(WEBHOOK_STATUSES), "topic": _v_str, "delivery_url": _v_str,
        "secret": _v_str,
    }

    def _h_webhooks_create(self, ctx: _Ctx) -> _Result:
        p = self._params(ctx, self._WEBHOOK_WRITE, required=("topic", "delivery_url"))
        self._need_user(ctx, *self._CANNOT_CREATE)
        if not _php_empty(ctx.params.get("id")):
            raise _WCError("woocommerce_rest_shop_webhook_exists", "Cannot create existing shop_webhook.",
                           400)
        topic = p.get("topic", "")
        if not topic or not _wc_is_valid_topic(topic.lower()):
            raise _WCError("woocommerce_rest_shop_webhook_invalid_topic",
                           "Webhook topic is required and must be valid.", 400)
        if not p.get("delivery_url") or not _wc_is_valid_url(p["delivery_url"]):
            raise _WCError("woocommerce_rest_shop_webhook_invalid_delivery_url",
                           "Webhook delivery URL must be a valid URL starting with http:// or https://.", 400)
        # A posted "status" is ignored: REST-created webhooks are always active (§3.3).
        hook = self._new_webhook(p.get("name", ""), topic, p["delivery_url"],
                                 p.get("secret") or _wp_generate_password())
        data = self._webhook_json(hook, ctx.scheme)
        webhook_id = hook["id"]

        def ping_then_answer() -> None:
            # create_item() prepares the 201 response, THEN pings synchronously, ignoring the
            # result: the receiver sees the ping before the REST client sees the answer.
            self._ping(webhook_id)
            return None

        return _Result(data, 201, {"Location": self._rest_url(ctx.scheme, f"/wc/v3/webhooks/{webhook_id}")},
                       after=ping_then_answer)

    def _h_webhook_get(self, ctx: _Ctx, item_id: int) -> _Result:
        self._params(ctx, {"context": _v_context})
        self._need_user(ctx, *self._CANNOT_VIEW)
        if not item_id:
            raise _WCError("woocommerce_rest_shop_webhook_invalid_id", "Invalid ID.", 404)
        hook = self.webhooks.get(item_id)
        if hook is None:
            raise _WCError("woocommerce_rest_shop_webhook_invalid_id", "ID is invalid.", 400)
        return _Result(self._webhook_json(hook, ctx.scheme))

    def _h_webhook_update(self, ctx: _Ctx, item_id: int) -> _Result:
        p = self._params(ctx, self._WEBHOOK_WRITE)
        self._need_user(ctx, *self._CANNOT_EDIT)
        hook = self.webhooks.get(item_id)
        if hook is None:
            raise _WCError("woocommerce_rest_shop_webhook_invalid_id", "ID is invalid.", 400)
        changes: dict[str, Any] = {}
        if p.get("topic"):
            if not _wc_is_valid_topic(p["topic"].lower()):
                raise _WCError("woocommerce_rest_shop_webhook_invalid_topic",
                               "Webhook topic must be valid.", 400)
            changes["topic"] = p["topic"]
        if p.get("delivery_url"):
            if not _wc_is_valid_url(p["delivery_url"]):
                raise _WCError("woocommerce_rest_shop_webhook_invalid_delivery_url",
                               "Webhook delivery URL must be a valid URL starting with http:// or https://.",
                               400)
            changes["delivery_url"] = p["delivery_url"]
        if p.get("secret"):
            changes["secret"] = p["secret"]
        if p.get("status"):
            # Re-activating does not reset failure_count (§1.6).
            changes["status"] = p["status"]
        if p.get("name"):
            changes["name"] = p["name"]
        url_changed = "delivery_url" in changes and changes["delivery_url"] != hook["delivery_url"]
        hook.update(changes)
        hook["date_modified"] = self._now()
        must_ping = hook["status"] == "active" and (url_changed or hook["pending_delivery"])
        scheme = ctx.scheme

        def ping_then_answer() -> dict[str, Any] | None:
            # WC_Webhook_Data_Store::update() pings inside save(), before the response is built.
            if must_ping:
                self._ping(item_id)
            with self._lock:
                current = self.webhooks.get(item_id)
                return None if current is None else self._webhook_json(current, scheme)

        return _Result(self._webhook_json(hook, ctx.scheme), after=ping_then_answer)

    def _h_webhook_delete(self, ctx: _Ctx, item_id: int) -> _Result:
        p = self._params(ctx, {"force": _v_bool}, defaults={"force": False})
        self._need_user(ctx, *self._CANNOT_DELETE)
        if not p["force"]:
            raise _WCError("woocommerce_rest_trash_not_supported", "Webhooks do not support trashing.", 501)
        hook = self.webhooks.get(item_id)
        if hook is None:
            raise _WCError("woocommerce_rest_shop_webhook_invalid_id", "Invalid ID.", 404)
        data = self._webhook_json(hook, ctx.scheme)
        del self.webhooks[item_id]
        return _Result(data)

    # =========================================================================================
    # App authorization: /wc-auth/v1/ (WC_Auth, includes/class-wc-auth.php; §4.4)
    # =========================================================================================
    #
    # Real WooCommerce sends a visitor who is not logged in to a login form first; the fake
    # assumes the admin (self.user_id, who has manage_woocommerce) is logged in, so "authorize"
    # shows the grant screen at once and "login" redirects to "authorize" as core does for a
    # logged-in user. Nonces are single-use here (WordPress nonces stay valid for 12-24 h), so a
    # replayed approval fails with "Invalid nonce verification".

    def approve_app(self, authorize_url: str) -> str:
        """Do what the admin's browser does: open ``authorize_url`` (following the store's own
        redirects, e.g. from ``login``), press *Approve*, and return the final redirect's
        ``Location`` (``return_url?success=1&user_id=...``).

        Raises :class:`WCAuthError` when the store answers with a page instead (validation
        errors, a failed callback: the "Access denied" wp_die page, status 401).
        """
        status, headers, page, url = self._browse_to_grant_page(authorize_url)
        match = re.search(r'<form id="approve"[^>]*\saction="([^"]*)"', page)
        if status != 200 or match is None:
            raise WCAuthError(status, self._page_message(page), page)
        status, headers, page = self._browse("POST", urljoin(url, html.unescape(match.group(1))))
        location = headers.get("location")
        if status not in (301, 302, 303, 307, 308) or not location:
            raise WCAuthError(status, self._page_message(page), page)
        return location

    def deny_app(self, authorize_url: str) -> str:
        """Open ``authorize_url`` and return where *Deny* leads: core's Deny button is a plain
        link to ``return_url?success=0&user_id=...`` (form-grant-access.php), so the store is
        not called again and no key is created."""
        status, _headers, page, url = self._browse_to_grant_page(authorize_url)
        match = re.search(r'<a id="deny"[^>]*\shref="([^"]*)"', page)
        if status != 200 or match is None:
            raise WCAuthError(status, self._page_message(page), page)
        return urljoin(url, html.unescape(match.group(1)))

    def _browse_to_grant_page(self, url: str) -> tuple[int, dict[str, str], str, str]:
        if url.startswith("/"):
            url = self._home(self._home_scheme()) + url
        for _ in range(5):
            status, headers, page = self._browse("GET", url)
            location = headers.get("location")
            # Follow only the store's own redirects (login -> authorize), as a browser would.
            if status in (301, 302, 303, 307, 308) and location \
                    and urljoin(url, location).startswith(self._home(self._home_scheme())):
                url = urljoin(url, location)
                continue
            return status, headers, page, url
        return status, headers, page, url

    def _browse(self, method: str, url: str) -> tuple[int, dict[str, str], str]:
        """One browser request, no redirects followed: over HTTP when :meth:`serve` runs the
        store, else through Flask's test client (same code path, minus the socket)."""
        if self._served is not None:
            resp = requests.request(method, url, allow_redirects=False,
                                    timeout=self.auth_callback_timeout + 30)
            return resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.text
        parts = urlsplit(url)
        with self.app.test_client() as client:
            result = client.open(parts.path or "/", method=method,
                                 query_string=parts.query,
                                 base_url=f"{parts.scheme}://{parts.netloc}")
            return (result.status_code, {k.lower(): v for k, v in result.headers.items()},
                    result.get_data(as_text=True))

    @staticmethod
    def _page_message(page: str) -> str:
        match = re.search(r'<div class="wp-die-message"><p>(.*?)</p>', page, re.S)
        if match is None:
            match = re.search(r"<h1[^>]*>(.*?)</h1>", page, re.S)
        return html.unescape(match.group(1)).strip() if match else ""

    def _wc_auth_route(self, req: Any, home_path: str) -> str | None:
        """The route WC_Auth::handle_auth_requests() would act on, or None.

        Pretty permalinks: rewrite rule ``^wc-auth/v([1]{1})/(.*)?`` on the home-relative path
        (WordPress trims its slashes first). Without them, or on any other path, the public
        query vars ``wc-auth-version`` and ``wc-auth-route`` (POST before GET, as WP::parse_request
        reads them); both must be non-empty, and the version's value is never checked.
        """
        version: Any = ""
        route: Any = ""
        path = req.path
        if path.startswith(home_path):
            match = re.match(r"^wc-auth/v([1]{1})/(.*)", path[len(home_path):].strip("/"))
            if match:
                version, route = match.group(1), match.group(2)
        query = _php_parse_str(req.query_string.decode("latin-1"))
        post: dict[str, Any] = {}
        if req.method == "POST" and req.mimetype == "application/x-www-form-urlencoded":
            post = _php_parse_str(req.get_data(cache=True).decode("utf-8", "replace"))
        for source in (query, post):
            if isinstance(source.get("wc-auth-version"), str) and not _php_empty(source["wc-auth-version"]):
                version = _sanitize_text_field(source["wc-auth-version"])
            if isinstance(source.get("wc-auth-route"), str) and not _php_empty(source["wc-auth-route"]):
                route = _sanitize_text_field(source["wc-auth-route"])
        if _php_empty(version) or _php_empty(route):
            return None
        return str(route)

    def _wc_auth_endpoint(self, req: Any, raw_body: bytes, route: str,
                          record: dict[str, Any]) -> Response:
        """WC_Auth::auth_endpoint(): validate, then login / authorize / access_granted; any
        exception deletes the key it created and becomes wp_die("Error: <message>.", 401)."""
        query = _php_parse_str(req.query_string.decode("latin-1"))
        post: dict[str, Any] = {}
        if req.method == "POST" and req.mimetype == "application/x-www-form-urlencoded" and raw_body:
            post = _php_parse_str(raw_body.decode("utf-8", "replace"))
        # $_REQUEST with PHP's default request_order "GP": POST values override GET ones.
        request_vars = {**query, **post}
        consumer: dict[str, Any] | None = None
        try:
            route = _sanitize_text_field(route).lower()
            data = self._wc_auth_validate(request_vars)
            if route == "login":
                # Logged in: straight on to the grant screen.
                return self._wp_redirect(self._wc_auth_build_url(data, "authorize"), record)
            if route == "authorize":
                record["status"] = 200
                return Response(self._wc_auth_grant_page(data), 200,
                                {"Content-Type": _HTML_TYPE, **self._nocache_headers()})
            if route == "access_granted":
                nonce = _sanitize_key(query.get("wc_auth_nonce"))
                with self._lock:
                    valid = nonce in self._auth_nonces
                    self._auth_nonces.discard(nonce)
                if not valid:
                    raise _AuthDenied("Invalid nonce verification")
                consumer = self._wc_auth_create_keys(data)
                self._wc_auth_post_consumer_data(consumer, self._formatted_url(data["callback_url"]))
                target = _add_query_arg([("success", "1"),
                                         ("user_id", _sanitize_text_field(data["user_id"]))],
                                        self._formatted_url(data["return_url"]))
                return self._wp_redirect(target, record)
            raise _AuthDenied("You do not have permission to access this page")
        except _AuthDenied as exc:
            if consumer is not None:
                self._wc_auth_delete_key(consumer["key_id"])
            record["status"] = 401
            page = _wp_die_html(f"Error: {_esc_html(exc.message)}.", "Access denied")
            return Response(page, 401, {"Content-Type": _HTML_TYPE, **self._nocache_headers()})

    @staticmethod
    def _formatted_url(url: str) -> str:
        # WC_Auth::get_formatted_url(): urldecode() (a second time: PHP already decoded the
        # query string), then https:// is assumed when there is no scheme separator.
        url = _php_urldecode(url)
        if "://" not in url:
            url = "https://" + url
        return url

    def _wc_auth_validate(self, request_vars: Mapping[str, Any]) -> dict[str, str]:
        """WC_Auth::make_validation(), message for message."""
        data: dict[str, str] = {}
        for name in _WC_AUTH_PARAMS:
            value = request_vars.get(name)
            if _php_empty(value):   # empty(): a missing value, "" and "0" all count as missing
                raise _AuthDenied(f"Missing parameter {name}")
            if not isinstance(value, str):   # user_id[]=1 and the like (is_scalar())
                raise _AuthDenied(f"Invalid parameter {name}")
            data[name] = value
        if data["scope"] not in WC_AUTH_SCOPE_LABELS:
            raise _AuthDenied(f"Invalid scope {_sanitize_text_field(data['scope'])}")
        for name in ("return_url", "callback_url"):
            formatted = self._formatted_url(data[name])
            if not php_filter_validate_url(formatted):
                # Core names the URL itself, not the parameter.
                raise _AuthDenied(f"The {formatted} is not a valid URL")
        callback = self._formatted_url(data["callback_url"]).lower()
        if not callback.startswith("https://") \
                and not (self.allow_http_callback and callback.startswith("http://")):
            raise _AuthDenied("The callback_url needs to be over SSL")
        return data

    def _wc_auth_build_url(self, data: Mapping[str, str], endpoint: str) -> str:
        # WC_Auth::build_url(): wc_get_endpoint_url('wc-auth/v1', $endpoint, home_url('/'))
        # with pretty permalinks ("/%postname%/" adds the trailing slash), URLs formatted and
        # rawurlencoded, the rest wc_clean()ed.
        url = f"{self._home(self._home_scheme())}/wc-auth/v1/{endpoint}/"
        return _add_query_arg([
            ("app_name", _sanitize_text_field(data["app_name"])),
            ("user_id", _sanitize_text_field(data["user_id"])),
            ("return_url", self._formatted_url(data["return_url"])),
            ("callback_url", self._formatted_url(data["callback_url"])),
            ("scope", _sanitize_text_field(data["scope"])),
        ], url)

    def _wc_auth_grant_page(self, data: Mapping[str, str]) -> str:
        # templates/auth/header.php + form-grant-access.php + footer.php. The one liberty:
        # Approve is a form POSTing to the granted URL (core: a GET link to the same URL;
        # access_granted reads its nonce from the query and ignores the method either way).
        nonce = secrets.token_hex(5)   # wp_create_nonce(): 10 hex characters
        with self._lock:
            self._auth_nonces.add(nonce)
        scope = _sanitize_text_field(data["scope"])
        app_name = _esc_html(_sanitize_text_field(data["app_name"]))
        granted = _add_query_arg([("wc_auth_nonce", nonce)], self._wc_auth_build_url(data, "access_granted"))
        deny = _add_query_arg([("success", "0"), ("user_id", _sanitize_text_field(data["user_id"]))],
                              self._formatted_url(data["return_url"]))
        logout = _add_query_arg([("action", "logout"),
                                 ("redirect_to", self._wc_auth_build_url(data, "login")),
                                 ("_wpnonce", secrets.token_hex(5))],
                                f"{self._home(self._home_scheme())}/wp-login.php")
        permissions = "".join(f"\t\t<li>{_esc_html(p)}</li>\n" for p in WC_AUTH_SCOPE_PERMISSIONS[scope])
        plugin_url = f"{self._home(self._home_scheme())}/wp-content/plugins/woocommerce"
        return (
            '<!DOCTYPE html>\n<html lang="en-US">\n<head>\n'
            '\t<meta name="viewport" content="width=device-width" />\n'
            '\t<meta http-equiv="Content-Type" content="text/html; charset=utf-8" />\n'
            '\t<meta name="robots" content="noindex, follow" />\n'
            "\t<title>Application authentication request</title>\n"
            f'\t<link rel="stylesheet" href="{_esc_url_attr(plugin_url)}/assets/css/auth.css" '
            'type="text/css" />\n'
            '</head>\n<body class="wc-auth wp-core-ui">\n'
            f'\t<h1 id="wc-logo"><img src="{_esc_url_attr(plugin_url)}/assets/images/woocommerce_logo.png" '
            'alt="WooCommerce" /></h1>\n'
            '\t<div class="wc-auth-content">\n\n'
            f"<h1>\n\t{app_name} would like to connect to your store</h1>\n\n"
            f'<p>\n\tThis will give "<strong>{app_name}</strong>" '
            f"<strong>{WC_AUTH_SCOPE_LABELS[scope]}</strong> access which will allow it to:</p>\n\n"
            f'<ul class="wc-auth-permissions">\n{permissions}</ul>\n\n'
            '<div class="wc-auth-logged-in-as">\n'
            f"\t<p>\n\t\tLogged in as {_esc_html(self.user_display_name)}\t\t"
            f'<a href="{_esc_url_attr(logout)}" class="wc-auth-logout">Logout</a>\n\t</p>\n</div>\n\n'
            '<p class="wc-auth-actions">\n'
            f'\t<form id="approve" class="wc-auth-approve" method="post" action="{_esc_url_attr(granted)}">'
            '<button type="submit" class="button button-primary">Approve</button></form>\n'
            f'\t<a id="deny" href="{_esc_url_attr(deny)}" class="button wc-auth-deny">Deny</a>\n'
            "</p>\n\n\t\t</div>\n\t</body>\n</html>\n"
        )

    def _wc_auth_create_keys(self, data: Mapping[str, str]) -> dict[str, Any]:
        """WC_Auth::create_keys(): a key row for the LOGGED-IN user (not the app's user_id)."""
        scope = data["scope"]
        consumer_key, consumer_secret = self.add_api_key(scope)
        description = "{} - API ({})".format(
            _wc_trim_string(_sanitize_text_field(data["app_name"]), 170),
            self._now().strftime("%Y-%m-%d %H:%M:%S"))   # gmdate(): UTC
        with self._lock:
            row = self.api_keys[_wc_api_hash(consumer_key)]
            row["description"] = description
            key_id = row["key_id"]
        # Key order as create_keys() returns it; user_id is the app's string echoed back.
        return {"key_id": key_id, "user_id": data["user_id"], "consumer_key": consumer_key,
                "consumer_secret": consumer_secret, "key_permissions": scope}

    def _wc_auth_delete_key(self, key_id: int) -> None:
        # WC_Auth::maybe_delete_key(): DELETE ... WHERE key_id = %d.
        with self._lock:
            for key_hash, row in list(self.api_keys.items()):
                if row["key_id"] == key_id:
                    self.deleted_api_keys.append(self.api_keys.pop(key_hash))

    def _wc_auth_post_consumer_data(self, consumer: dict[str, Any], url: str) -> AuthCallback:
        """WC_Auth::post_consumer_data(): wp_safe_remote_post() of the JSON, 60 s timeout;
        a transport error raises its WP_Error message, any status but exactly 200 the generic
        one. WordPress follows up to 5 redirects (302/303 turn into GET, as browsers do:
        WP_Http::browser_redirect_compatibility; 301/307/308 repeat the POST)."""
        body = wp_json_encode(consumer).encode("utf-8")
        callback = AuthCallback(url=url, body=body, key_id=int(consumer["key_id"]),
                                started_at=self.clock())
        method, target, payload = "POST", url, body
        max_redirects = 5
        try:
            for hop in range(max_redirects + 1):
                headers = [(k, v) for k, v in self._transport_headers(target) if k != "User-Agent"]
                # WP_Http's default user agent (WooCommerce only overrides it for webhooks).
                headers.insert(1, ("User-Agent",
                                   f"WordPress/{self.wp_version}; {self._home(self._home_scheme())}"))
                if method == "POST":
                    headers += [("Content-Type", "application/json;charset=UTF-8"),
                                ("Connection", "close"), ("Content-Length", str(len(payload)))]
                else:
                    headers += [("Connection", "close")]
                record = Delivery(kind="auth_callback", webhook_id=0, order_id=None, topic="wc-auth",
                                  url=target, request_headers=headers, request_body=payload,
                                  started_at=self.clock())
                self._send(record, self.auth_callback_timeout, success=lambda s: s == 200,
                           method=method)
                callback.hops.append(record)
                if record.error is not None:
                    callback.error = record.error.removeprefix("http_request_failed: ")
                    break
                status = record.status or 0
                location = next((v for k, v in record.response_headers if k.lower() == "location"), None)
                if (status in (300, 301, 302, 303, 307) or 307 < status < 400) and location:
                    if hop == max_redirects:
                        callback.error = "Too many redirects"   # Requests' toomanyredirects
                        break
                    if status in (302, 303):
                        method, payload = "GET", b""
                    target = urljoin(target, location)
                    continue
                callback.status = status
                callback.success = status == 200
                break
        finally:
            with self._lock:
                self.auth_callbacks.append(callback)
        if callback.error is not None:
            raise _AuthDenied(callback.error)
        if not callback.success:
            raise _AuthDenied(WC_AUTH_SEND_FAILED)
        return callback

    def _wp_redirect(self, location: str, record: dict[str, Any]) -> Response:
        # wp_redirect(): 302 with X-Redirect-By (WordPress 5.1+).
        record["status"] = 302
        return Response("", 302, {"Location": location, "X-Redirect-By": "WordPress",
                                  "Content-Type": _HTML_TYPE, **self._nocache_headers()})

    @staticmethod
    def _nocache_headers() -> dict[str, str]:
        # wp_die() and the logged-in admin's pages carry WordPress's nocache_headers().
        return {"Expires": "Wed, 11 Jan 1984 05:00:00 GMT",
                "Cache-Control": "no-cache, must-revalidate, max-age=0, no-store, private"}


class _AuthDenied(Exception):
    """An Exception thrown inside WC_Auth::auth_endpoint() (its message goes on the page)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Unsafe(Exception):
    pass


class _HTTP10Connection(http.client.HTTPConnection):
    # WC_Webhook::deliver() and deliver_ping() ask WordPress for HTTP/1.0 (captured).
    _http_vsn = 10
    _http_vsn_str = "HTTP/1.0"


class _HTTPS10Connection(http.client.HTTPSConnection):
    _http_vsn = 10
    _http_vsn_str = "HTTP/1.0"
