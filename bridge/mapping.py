"""Turn an :class:`~bridge.models.Order` into a UPay create-invoice request.

Pure: no I/O, no Flask. Money stays ``Decimal`` from input to output; text is cleaned and cut to
UPay's field limits, amounts never are.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from decimal import Decimal
from enum import Enum
from typing import Iterator

from bridge.models import CallbackUrls, InvoiceOptions, LineKind, NotificationType, Order
from bridge.money import exponent, quantize

# The currencies UPay's own WooCommerce plugin offers the gateway for (upay-api.md §13).
SUPPORTED_CURRENCIES = frozenset({"KWD", "SAR", "USD", "BHD", "EUR", "OMR", "QAR", "AED"})

# Field limits in code points (upay-api.md §4.1). Where the docs conflict (§17) the smaller value
# wins: order.id 40 not 50, reference.id 35 (observed) not 150.
ORDER_ID_LIMIT = 40
REFERENCE_ID_LIMIT = 35
ORDER_REFERENCE_LIMIT = 255
DESCRIPTION_LIMIT = 500
CUSTOMER_NAME_LIMIT = 50
CUSTOMER_EMAIL_LIMIT = 50
UNIQUE_ID_LIMIT = 150
PRODUCT_NAME_LIMIT = 255
PRODUCT_DESCRIPTION_LIMIT = 255
URL_LIMIT = 250

ELLIPSIS = "\u2026"
OTHER_CHARGES = "Other charges"
_KIND_LABELS = {LineKind.ITEM: "Item", LineKind.SHIPPING: "Shipping", LineKind.FEE: "Fee"}


# --- text -------------------------------------------------------------------------------------

# Bidi embeddings, overrides and isolates: an unbalanced one (easily left by a cut) flips the
# rest of whatever page or SMS the text is pasted into. LRM/RLM/ALM are harmless and stay.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


# What _clean_text drops: control characters (Cc) other than whitespace, lone surrogates (Cs) and
# the bidi controls. Cc is exactly U+0000-001F and U+007F-009F; whitespace among them ("\t",
# "\x1c", "\x85"...) is kept for the split below.
_DROPPED_RE = re.compile("[" + "".join(
    re.escape(ch) for ch in map(chr, [*range(0x20), *range(0x7f, 0xa0)]) if not ch.isspace()
) + "\ud800-\udfff" + "".join(sorted(_BIDI_CONTROLS)) + "]")


def _clean_text(text: str) -> str:
    # Nothing _DROPPED_RE matches is printable, so printable text (most names, in any script)
    # skips the substitution.
    if type(text) is not str or not text.isprintable():
        text = _DROPPED_RE.sub("", text)
    # Whitespace is collapsed, so "a\nb" becomes "a b" rather than "ab".
    return " ".join(text.split())


_ZWJ = "\u200d"
# Prepend characters that occur in Arabic text (U+0600 number sign etc.): they attach forward.
_PREPEND = frozenset("\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2")


def _is_extend(ch: str) -> bool:
    # Grapheme_Cluster_Break Extend/SpacingMark, approximated from the general category (the
    # stdlib has no cluster-break property): combining marks such as Arabic harakat and Latin
    # accents, variation selectors (Mn), enclosing keycaps (Me), plus ZWNJ, emoji skin-tone
    # modifiers, tag characters of subdivision flags and halfwidth kana voicing marks.
    if unicodedata.category(ch) in ("Mn", "Me", "Mc"):
        return True
    cp = ord(ch)
    return (cp == 0x200C or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F
            or 0xFF9E <= cp <= 0xFF9F)


def _is_regional_indicator(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _hangul_type(ch: str) -> str:
    cp = ord(ch)
    if 0x1100 <= cp <= 0x115F or 0xA960 <= cp <= 0xA97C:
        return "L"
    if 0x1160 <= cp <= 0x11A7 or 0xD7B0 <= cp <= 0xD7C6:
        return "V"
    if 0x11A8 <= cp <= 0x11FF or 0xD7CB <= cp <= 0xD7FB:
        return "T"
    if 0xAC00 <= cp <= 0xD7A3:
        return "LV" if (cp - 0xAC00) % 28 == 0 else "LVT"
    return ""


def _continues_cluster(cluster: str, ch: str) -> bool:
    prev = cluster[-1]
    if _is_extend(ch) or ch == _ZWJ or prev == _ZWJ or prev in _PREPEND:
        # After a ZWJ we always join (UAX #29 only requires it after a pictograph): a ZWJ between
        # Arabic letters selects joining forms, so keeping those together costs nothing.
        return True
    if _is_regional_indicator(prev) and _is_regional_indicator(ch):
        # Flags are pairs: the third indicator starts a new flag.
        return sum(1 for c in cluster if _is_regional_indicator(c)) % 2 == 1
    before, after = _hangul_type(prev), _hangul_type(ch)
    if before == "L":
        return after in ("L", "V", "LV", "LVT")
    if before in ("LV", "V"):
        return after in ("V", "T")
    if before in ("LVT", "T"):
        return after == "T"
    return False


def _clusters(text: str) -> Iterator[str]:
    cluster = ""
    for ch in text:
        if cluster and _continues_cluster(cluster, ch):
            cluster += ch
        else:
            if cluster:
                yield cluster
            cluster = ch
    if cluster:
        yield cluster


def truncate_text(text: str, limit: int) -> str:
    if limit < 0:
        raise ValueError(f"negative limit: {limit}")
    cleaned = _clean_text(text)
    if len(cleaned) <= limit:
        return cleaned
    if limit == 0:
        return ""
    budget = limit - len(ELLIPSIS)
    kept: list[str] = []
    used = 0
    for cluster in _clusters(cleaned):
        if used + len(cluster) > budget:
            break
        kept.append(cluster)
        used += len(cluster)
    # A joiner joins what follows it, whitespace included, so the rstrip below can leave a
    # cluster ending in a bare joiner ("\u200d " -> "\u200d"): drop that cluster whole.
    while kept and "".join(kept).rstrip().endswith(_ZWJ):
        kept.pop()
    return "".join(kept).rstrip() + ELLIPSIS


_DROP_WITH_CONTENT_RE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.I | re.S)
_BLOCK_TAG_RE = re.compile(r"<\s*/?\s*(?:br|p|div|li|ul|ol|tr|td|h[1-6])\b[^>]*>", re.I)
# A tag starts with a letter, "/" or "!" right after "<", so "5 < 6 and 7 > 3" is left alone.
_TAG_RE = re.compile(r"<!--.*?-->|<[/!]?[A-Za-z][^<>]*>", re.S)


def _strip_tags(text: str) -> str:
    text = _DROP_WITH_CONTENT_RE.sub("", text)
    # Block tags separate words ("Size<br>Large"); inline ones (<strong>) sit inside them.
    text = _BLOCK_TAG_RE.sub(" ", text)
    return _TAG_RE.sub("", text)


def clean_name(text: str) -> str:
    if "<" not in text and "&" not in text:  # no markup, no entity: the common case
        return _clean_text(text)
    text = _strip_tags(text)
    # Some plugins store names already escaped and WordPress escapes again ("&amp;ndash;"), so
    # unescape until nothing changes (bounded: a real name needs at most two rounds).
    for _ in range(3):
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    # Markup that arrived escaped (&lt;b&gt;) is markup all the same once unescaped.
    return _clean_text(_strip_tags(text))


# --- customer contact -------------------------------------------------------------------------

_PHONE_SEPARATORS = frozenset(" \t-.()\u00a0\u2010\u2011\u2012\u2013\u2212")


def normalize_mobile(phone: str, country: str) -> str:
    chars: list[str] = []
    for ch in (phone or "").strip():
        if ch in _PHONE_SEPARATORS or ch.isspace():
            continue
        digit = unicodedata.decimal(ch, None)
        if digit is not None:
            # Customers in Kuwait often type Arabic-Indic digits (٩٦٥...); they are still digits.
            chars.append(str(digit))
        else:
            chars.append(ch)
    number = "".join(chars)
    if number.startswith("00"):
        number = "+" + number[2:]
    plus = number.startswith("+")
    digits = number[1:] if plus else number
    if not digits.isdigit() or not digits.isascii():
        return ""  # letters ("ext"), a second "+", or other symbols: not something SMS can use
    if not plus and len(digits) == 8 and country.strip().upper() in ("KW", ""):
        # Kuwaiti numbers are 8 digits with no trunk prefix; UPay's docs send "+965XXXXXXXX".
        return "+965" + digits
    if not 7 <= len(digits) <= 15:  # E.164 allows at most 15 digits
        return ""
    return ("+" if plus else "") + digits


_EMAIL_FORBIDDEN = frozenset(',;<>"')


def valid_email(email: str) -> str:
    address = (email or "").strip()
    if not address or len(address) > CUSTOMER_EMAIL_LIMIT or address.count("@") != 1:
        return ""
    if any(ch.isspace() or ch in _EMAIL_FORBIDDEN or unicodedata.category(ch) == "Cc"
           for ch in address):
        return ""
    local, domain = address.split("@")
    labels = domain.split(".")
    if not local or len(labels) < 2 or not all(labels):
        return ""
    return address


# --- blockers ---------------------------------------------------------------------------------

class Blocker(str, Enum):
    UNSUPPORTED_CURRENCY = "unsupported_currency"
    ZERO_TOTAL = "zero_total"
    NO_EMAIL = "no_email"
    NO_MOBILE = "no_mobile"


_NEEDS_EMAIL = (NotificationType.EMAIL, NotificationType.ALL)
_NEEDS_MOBILE = (NotificationType.SMS, NotificationType.ALL)


def invoice_blockers(order: Order, options: InvoiceOptions) -> list[Blocker]:
    blockers: list[Blocker] = []
    if order.currency.strip().upper() not in SUPPORTED_CURRENCIES:
        blockers.append(Blocker.UNSUPPORTED_CURRENCY)
    if quantize(order.total, order.currency) <= 0:
        blockers.append(Blocker.ZERO_TOTAL)
    if options.notification_type in _NEEDS_EMAIL and not valid_email(order.customer.email):
        blockers.append(Blocker.NO_EMAIL)
    if options.notification_type in _NEEDS_MOBILE and not normalize_mobile(
            order.customer.phone, order.customer.country):
        blockers.append(Blocker.NO_MOBILE)
    return blockers


# --- products ---------------------------------------------------------------------------------

def _minor_units(amount: Decimal, currency: str) -> int:
    return int(quantize(amount, currency).scaleb(exponent(currency)))


def products_from_order(order: Order) -> list[dict]:
    currency = order.currency
    total = quantize(order.total, currency)
    if total <= 0:
        return []

    # Work in integer minor units: exact, and "divides by the quantity" is a plain modulo.
    # Each candidate is [name, description, amount_units, quantity].
    candidates: list[list] = []
    for line in order.lines:
        units = _minor_units(line.amount, currency)
        if units > 0:
            label = _KIND_LABELS.get(line.kind, "Item")
            name = _clean_text(line.name) or label
            description = _clean_text(line.sku) or label
            candidates.append([name, description, units, max(line.quantity, 1)])
        # Zero lines (free items, 100% discounts) cannot be sent: UPay rejects price 0. Negative
        # lines (negative fees) are store-side discounts; the remainder below absorbs them.

    remainder = _minor_units(total, currency) - sum(c[2] for c in candidates)
    if not candidates:
        candidates.append([f"Order {order.number}", "Order total", remainder, 1])
    elif remainder > 0:
        # Whatever the lines do not show: taxes charged at order level, rounding, fees.
        candidates.append([OTHER_CHARGES, "Taxes, fees and rounding", remainder, 1])
    elif remainder < 0:
        # Discounts not already inside the line totals (negative fees, order-level discounts)
        # come off the end, where shipping and fees sit, before they reach the goods.
        reduction = -remainder
        while reduction:
            last = candidates[-1]
            if last[2] > reduction:
                last[2] -= reduction
                reduction = 0
            else:
                reduction -= last[2]
                candidates.pop()  # cannot empty the list: the total is > 0

    places = exponent(currency)
    products = []
    for name, description, units, quantity in candidates:
        if units % quantity == 0:
            price_units = units // quantity
            name = truncate_text(name, PRODUCT_NAME_LIMIT)
        else:
            # The line total cannot be split into equal unit prices in this currency (3 for
            # 10.000 KWD): charge it as one product and keep the quantity in the name.
            suffix = f" \u00d7 {quantity}"
            room = max(PRODUCT_NAME_LIMIT - len(suffix), 0)
            # The outer cut only matters for absurd quantities whose digits alone fill the name.
            name = truncate_text(truncate_text(name, room) + suffix, PRODUCT_NAME_LIMIT)
            price_units, quantity = units, 1
        products.append({
            "name": name,
            "description": truncate_text(description, PRODUCT_DESCRIPTION_LIMIT),
            "price": quantize(Decimal(price_units).scaleb(-places), currency),
            "quantity": quantity,
        })
    return products


def order_description(order: Order) -> str:
    items = [f"{_clean_text(line.name) or 'Item'} \u00d7 {line.quantity}"
             for line in order.lines if line.kind == LineKind.ITEM]
    text = f"Order #{order.number}"
    if items:
        text += ": " + ", ".join(items)
    return truncate_text(text, DESCRIPTION_LIMIT)


# --- identifiers ------------------------------------------------------------------------------

_SAFE_ID_RE = re.compile(r"[A-Za-z0-9_-]+")
_STORE_ID_RE = re.compile(r"[a-z0-9]{1,12}")
_PRINTABLE_RE = re.compile(r"[!-~]+")  # printable ASCII without space


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def upay_order_id_for(store_id: str, external_id: str, attempt: int) -> str:
    # UPay has no idempotency keys and its handling of a repeated order.id is undocumented, so
    # every attempt gets its own id; store and attempt stay readable for support.
    if not _STORE_ID_RE.fullmatch(store_id):
        raise ValueError(f"store id must be 1-12 characters of [a-z0-9]: {store_id!r}")
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
        raise ValueError(f"attempt must be an int >= 0: {attempt!r}")
    plain = f"{store_id}-{external_id}-{attempt}"
    if len(plain) <= ORDER_ID_LIMIT and _SAFE_ID_RE.fullmatch(plain):
        return plain
    hashed = f"{store_id}-{_sha256_hex(external_id)[:16]}-{attempt}"
    if len(hashed) > ORDER_ID_LIMIT:
        raise ValueError(f"attempt number too large for a {ORDER_ID_LIMIT}-character id")
    return hashed


def reference_id_for(number: str) -> str:
    if len(number) <= REFERENCE_ID_LIMIT and _PRINTABLE_RE.fullmatch(number):
        return number
    # Keep a readable prefix for the merchant; the hash of the whole number keeps it unique.
    digest = _sha256_hex(number)[:16]
    prefix = "".join(ch for ch in number if "!" <= ch <= "~")[:REFERENCE_ID_LIMIT - 17]
    return f"{prefix}-{digest}" if prefix else digest


def _fit_id(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    return f"{value[:limit - 17]}-{_sha256_hex(value)[:16]}"


# --- the request ------------------------------------------------------------------------------

def _check_url(name: str, url: str) -> None:
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"{name} must be an absolute http(s) URL: {url!r}")
    if "?" in url:
        # UPay appends "?payment_id=..." to the URL as it is; a query of ours would swallow it.
        raise ValueError(f"{name} must not carry a query string: {url!r}")
    if len(url) > URL_LIMIT:
        raise ValueError(f"{name} is longer than {URL_LIMIT} characters")


def _customer_name(order: Order) -> str:
    name = _clean_text(order.customer.full_name)
    if not name:
        local = valid_email(order.customer.email).partition("@")[0]
        name = _clean_text(local)
    return truncate_text(name or "Customer", CUSTOMER_NAME_LIMIT)


def invoice_request_from_order(order: Order, *, upay_order_id: str, reference_id: str,
                               options: InvoiceOptions, urls: CallbackUrls) -> dict:
    if not upay_order_id or len(upay_order_id) > ORDER_ID_LIMIT:
        raise ValueError(f"UPay order id must be 1-{ORDER_ID_LIMIT} characters: {upay_order_id!r}")
    if not reference_id or len(reference_id) > REFERENCE_ID_LIMIT:
        raise ValueError(
            f"reference id must be 1-{REFERENCE_ID_LIMIT} characters: {reference_id!r}")
    _check_url("returnUrl", urls.return_url)
    _check_url("cancelUrl", urls.cancel_url)
    _check_url("notificationUrl", urls.notification_url)

    customer = order.customer
    if customer.id:
        unique_id = f"customer-{customer.id}"
    else:
        unique_id = f"guest-{order.external_id}"
    return {
        "products": products_from_order(order),
        "order": {
            "id": upay_order_id,
            "reference": truncate_text(order.number, ORDER_REFERENCE_LIMIT),
            "description": order_description(order),
            "currency": order.currency.strip().upper(),
            "amount": quantize(order.total, order.currency),
        },
        "paymentGateway": {"src": "create-invoice"},
        "notificationType": options.notification_type.value,
        "language": options.language.value,
        "isSaveCard": False,
        "reference": {"id": reference_id},
        "customer": {
            "uniqueId": _fit_id(unique_id, UNIQUE_ID_LIMIT),
            "name": _customer_name(order),
            "email": valid_email(customer.email),
            "mobile": normalize_mobile(customer.phone, customer.country),
        },
        "returnUrl": urls.return_url,
        "cancelUrl": urls.cancel_url,
        "notificationUrl": urls.notification_url,
        "plugin": {"src": options.plugin_src},
    }
