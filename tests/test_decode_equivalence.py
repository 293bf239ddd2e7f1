"""Decoding a webhook body takes shortcuts for the common case; they must change nothing.

Every ``_reference_*`` function below is a copy of the code of the straightforward
implementation the shortcuts replaced (renamed, calling the other reference copies, comments
trimmed), kept as the specification: for any input the current code must give the same value (Decimal exponents and
signs included, compared through ``as_tuple()``), or raise the same exception type with the same
message, and leave the thread's decimal context flags as the reference leaves them.
"""

from __future__ import annotations

import copy
import dataclasses
import html
import json
import re
from decimal import (ROUND_05UP, ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_DOWN,
                     ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP, Clamped, Context, Decimal,
                     DivisionByZero, Inexact, InvalidOperation, Overflow, Rounded, Subnormal,
                     Underflow, getcontext, localcontext)
from typing import Any, Callable

import pytest
import simplejson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import InvalidPayloadError, MalformedBodyError
from bridge.json_depth import MAX_DEPTH, too_deep
from bridge.mapping import _DROPPED_RE, _clean_text, clean_name
from bridge.models import Customer, LineKind, Order, OrderLine
from bridge.money import add_exact, parse_amount
from bridge.stores.payload import (_UNSTORABLE, decode_json, objects, quantity, storable,
                                   storable_id)
from bridge.stores.woocommerce_payload import order_from_woocommerce
from tests.test_woocommerce_payload import CAPTURED_WC79, REALISTIC_KWD

# --- reference copies: bridge/money.py ----------------------------------------------------------

_REF_MAX_ABS = Decimal(10) ** 15
_REF_AMOUNT_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,4})?", re.ASCII)


def _reference_parse_amount(value: object) -> Decimal:
    # bool is an int subclass: True must not become 1.
    if value is None or isinstance(value, bool):
        raise ValueError(f"not an amount: {value!r}")
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        # str() gives the shortest repr that round-trips, so 0.1 becomes Decimal("0.1"), not the
        # binary expansion Decimal(0.1) would give.
        amount = _reference_decimal_from_text(str(value), value)
    elif isinstance(value, str):
        amount = _reference_decimal_from_text(value.strip(), value)
    else:
        raise ValueError(f"not an amount: {type(value).__name__} {value!r}")
    if not amount.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    if abs(amount) >= _REF_MAX_ABS:
        raise ValueError(f"amount out of range: {value!r}")
    return amount


def _reference_decimal_from_text(text: str, original: object) -> Decimal:
    if not _REF_AMOUNT_RE.fullmatch(text):
        raise ValueError(f"not an amount: {original!r}")
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # the regex should make this unreachable
        raise ValueError(f"not an amount: {original!r}") from exc


_REF_MAX_SUM_DIGITS = 1000


def _reference_add_exact(*amounts: Decimal) -> Decimal:
    terms = [a for a in amounts if a]  # a zero, whatever its exponent, adds nothing
    if not terms:
        return Decimal(0)
    span = max(a.adjusted() for a in terms) - min(int(a.as_tuple().exponent) for a in terms) + 2
    if span > _REF_MAX_SUM_DIGITS:
        raise ValueError("amounts too far apart in magnitude to add exactly")
    with localcontext() as ctx:
        ctx.prec = max(ctx.prec, span)
        return sum(terms[1:], terms[0])


# --- reference copies: bridge/stores/payload.py -------------------------------------------------

def _reference_decode_json(body: bytes | str) -> Any:
    try:
        value = simplejson.loads(body, use_decimal=True)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBodyError(f"body is not valid JSON: {exc}") from None
    except ArithmeticError:
        raise MalformedBodyError("body is not valid JSON: a number is out of range") from None
    except RecursionError:
        raise MalformedBodyError("body is JSON nested too deeply") from None
    if too_deep(value, text=body):
        raise MalformedBodyError(f"body is JSON nested too deeply (more than {MAX_DEPTH} "
                                 "levels)")
    return value


_REF_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _reference_storable(text: str) -> str:
    return _REF_UNSTORABLE.sub("", text)


def _reference_storable_id(text: str, where: str, key: str) -> str:
    if _REF_UNSTORABLE.search(text):
        raise InvalidPayloadError(f"{where}: '{key}' has a character that is not text "
                                  f"(NUL or a lone surrogate): {_reference_short(text)}")
    return text


_REF_MAX_QUANTITY = 10 ** 9


def _reference_quantity(value: Any, where: str) -> int:
    original = value
    if isinstance(value, Decimal) and value.is_finite() and value.adjusted() < 10 and \
            value == value.to_integral_value():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or \
            not 1 <= value <= _REF_MAX_QUANTITY:
        raise InvalidPayloadError(f"{where}: 'quantity' must be an integer from 1 to "
                                  f"{_REF_MAX_QUANTITY}, got {_reference_short(original)}")
    return value


def _reference_short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _reference_objects(container: dict, key: str, where: str) -> list[tuple[str, dict]]:
    raw = container.get(key)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidPayloadError(f"{where}: '{key}' must be a list, got {type(raw).__name__}")
    out = []
    for index, item in enumerate(raw):
        here = f"{where} {key}[{index}]"
        if not isinstance(item, dict):
            raise InvalidPayloadError(f"{here} must be an object, got {type(item).__name__}")
        out.append((here, item))
    return out


# --- reference copies: bridge/mapping.py --------------------------------------------------------

_REF_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_REF_DROPPED_RE = re.compile("[" + "".join(
    re.escape(ch) for ch in map(chr, [*range(0x20), *range(0x7f, 0xa0)]) if not ch.isspace()
) + "\ud800-\udfff" + "".join(sorted(_REF_BIDI_CONTROLS)) + "]")


def _reference_clean_text(text: str) -> str:
    return " ".join(_REF_DROPPED_RE.sub("", text).split())


_REF_DROP_WITH_CONTENT_RE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.I | re.S)
_REF_BLOCK_TAG_RE = re.compile(r"<\s*/?\s*(?:br|p|div|li|ul|ol|tr|td|h[1-6])\b[^>]*>", re.I)
_REF_TAG_RE = re.compile(r"<!--.*?-->|<[/!]?[A-Za-z][^<>]*>", re.S)


def _reference_strip_tags(text: str) -> str:
    text = _REF_DROP_WITH_CONTENT_RE.sub("", text)
    text = _REF_BLOCK_TAG_RE.sub(" ", text)
    return _REF_TAG_RE.sub("", text)


def _reference_clean_name(text: str) -> str:
    if "<" not in text and "&" not in text:
        return _reference_clean_text(text)
    text = _reference_strip_tags(text)
    for _ in range(3):
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    return _reference_clean_text(_reference_strip_tags(text))


# --- reference copies: bridge/stores/woocommerce_payload.py -------------------------------------

_REF_CURRENCY_RE = re.compile(r"[A-Za-z]{3}")


def _reference_order_from_woocommerce(payload: object) -> Order:
    if not isinstance(payload, dict):
        raise InvalidPayloadError(
            f"WooCommerce order payload must be a JSON object, got {type(payload).__name__}")
    if "code" in payload:
        raise InvalidPayloadError(_reference_error_payload_message(payload))

    order_id = payload.get("id")
    if isinstance(order_id, bool) or not isinstance(order_id, int) or order_id <= 0:
        raise InvalidPayloadError(f"order 'id' must be a positive integer, got {order_id!r}")
    status = payload.get("status")
    if not isinstance(status, str) or not status.strip():
        raise InvalidPayloadError(f"order {order_id}: 'status' must be a non-empty string, "
                                  f"got {status!r}")
    status = _reference_storable_id(status, f"order {order_id}", "status")
    currency = payload.get("currency")
    if not isinstance(currency, str) or not _REF_CURRENCY_RE.fullmatch(currency.strip()):
        raise InvalidPayloadError(f"order {order_id}: 'currency' must be a 3-letter ISO 4217 "
                                  f"code, got {currency!r}")
    where = f"order {order_id}"
    total = _reference_money(payload, "total", where)
    discount_total = _reference_money(payload, "discount_total", where, default=Decimal("0"))

    number = payload.get("number")
    if isinstance(number, bool) or not isinstance(number, (str, int)) or not str(number).strip():
        number = order_id
    number = _reference_storable_id(str(number), f"order {order_id}", "number")
    lines = (
        _reference_lines(payload, "line_items", where, LineKind.ITEM)
        + _reference_lines(payload, "shipping_lines", where, LineKind.SHIPPING)
        + _reference_lines(payload, "fee_lines", where, LineKind.FEE)
    )
    return Order(
        external_id=str(order_id),
        number=str(number).strip(),
        status=status.strip(),
        currency=currency.strip().upper(),
        total=total,
        customer=_reference_customer(payload, where),
        lines=tuple(lines),
        discount_total=discount_total,
        payment_method=_reference_text(payload.get("payment_method")),
        order_key=_reference_text(payload.get("order_key")),
        created_via=_reference_text(payload.get("created_via")),
    )


def _reference_error_payload_message(payload: dict) -> str:
    data = payload.get("data")
    status = data.get("status") if isinstance(data, dict) else None
    message = f"WooCommerce sent an error instead of an order: {payload.get('code')!s}"
    if payload.get("message"):
        message += f": {payload.get('message')!s}"
    if status is not None:
        message += f" (HTTP status {status!s})"
    return message + "; the webhook's owner may have been deleted or lost access to orders"


def _reference_text(value: Any) -> str:
    return _reference_storable(value).strip() if isinstance(value, str) else ""


def _reference_money(obj: dict, key: str, where: str, default: Decimal | None = None) -> Decimal:
    value = obj.get(key)
    if value is None and default is not None:
        return default
    try:
        return _reference_parse_amount(value)
    except ValueError:
        raise InvalidPayloadError(
            f"{where}: '{key}' must be a decimal amount, got {value!r}") from None


def _reference_lines(payload: dict, key: str, where: str, kind: LineKind) -> list[OrderLine]:
    lines = []
    for here, item in _reference_objects(payload, key, where):
        total, tax = _reference_money(item, "total", here), _reference_money(
            item, "total_tax", here, default=Decimal("0"))
        try:
            amount = _reference_add_exact(total, tax)
        except ValueError as exc:
            raise InvalidPayloadError(f"{here}: 'total' plus 'total_tax': {exc}") from None
        if kind == LineKind.ITEM:
            name = _reference_raw_name(item, "name")
            quantity_, sku = _reference_quantity(item.get("quantity"), here), _reference_text(
                item.get("sku"))
        elif kind == LineKind.SHIPPING:
            name, quantity_, sku = _reference_raw_name(item, "method_title") or "Shipping", 1, ""
        else:
            name, quantity_, sku = _reference_raw_name(item, "name") or "Fee", 1, ""
        lines.append(OrderLine(kind=kind, name=name, quantity=quantity_, amount=amount, sku=sku))
    return lines


def _reference_raw_name(item: dict, key: str) -> str:
    value = item.get(key)
    return _reference_clean_name(value) if isinstance(value, str) else ""


def _reference_customer(payload: dict, where: str) -> Customer:
    billing = payload.get("billing")
    if billing is None:
        billing = {}
    if not isinstance(billing, dict):
        raise InvalidPayloadError(f"{where}: 'billing' must be an object")
    customer_id = payload.get("customer_id")
    if isinstance(customer_id, bool) or not isinstance(customer_id, (int, str)):
        customer_id = 0
    customer_text = _reference_storable(str(customer_id)).strip()
    return Customer(
        id="" if customer_text in ("", "0") else customer_text,
        first_name=_reference_clean_name(_reference_text(billing.get("first_name"))),
        last_name=_reference_clean_name(_reference_text(billing.get("last_name"))),
        email=_reference_text(billing.get("email")),
        phone=_reference_text(billing.get("phone")),
        country=_reference_text(billing.get("country")).upper(),
    )


# --- comparing outcomes -------------------------------------------------------------------------

_SIGNALS = (Clamped, DivisionByZero, Inexact, InvalidOperation, Overflow, Rounded, Subnormal,
            Underflow)


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down; Decimals also with the same sign,
    coefficient and exponent (Decimal("1.0") == Decimal("1.00") is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()
    if dataclasses.is_dataclass(a):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _outcome(function: Callable[..., Any], *args: Any) -> tuple:
    """What a call gives: its value, or its exception (type, message, how it was chained), plus
    the decimal context flags it raised."""
    context = getcontext()
    context.clear_flags()
    try:
        result: tuple = ("value", function(*args))
    except Exception as exc:  # noqa: BLE001 - the exception is what is compared
        result = ("raised", type(exc), str(exc), type(exc.__cause__), exc.__suppress_context__)
    return result + (tuple(s for s in _SIGNALS if context.flags[s]),)


def _assert_same(new: Callable[..., Any], reference: Callable[..., Any], *args: Any) -> None:
    # Each call gets its own copy: neither may see what the other did to a mutable argument.
    expected = _outcome(reference, *copy.deepcopy(args))
    got = _outcome(new, *copy.deepcopy(args))
    assert _same(got, expected), f"{args!r}:\n  got      {got!r}\n  expected {expected!r}"


# --- strategies ---------------------------------------------------------------------------------

_EXPONENTS = st.one_of(
    st.integers(-12, 6),
    st.integers(-1100, 1100),
    st.integers(-1_000_050, 1_000_050),
    st.sampled_from([-999999, -1000000, -1000025, -1000026, -1000027, 999999, 1000000,
                     999972, 999971, 10 ** 17, -(10 ** 18), 999999999999999990,
                     -1999999999999999990]),
)


@st.composite
def _finite_decimals(draw: st.DrawFn) -> Decimal:
    sign = draw(st.integers(0, 1))
    size = draw(st.sampled_from([1, 3, 6, 28, 40, 1005]))
    digits = draw(st.lists(st.integers(0, 9), min_size=1, max_size=size))
    if draw(st.booleans()):
        digits = [0] if not any(digits) else digits
    exponent = draw(_EXPONENTS)
    try:
        return Decimal((sign, tuple(digits), exponent))
    except InvalidOperation:  # past what Decimal holds at all
        return Decimal((sign, tuple(digits), 0))


_SPECIAL_DECIMALS = st.sampled_from([Decimal(s) for s in (
    "NaN", "-NaN", "NaN123", "sNaN", "-sNaN", "Infinity", "-Infinity", "0", "-0", "0E-1000",
    "-0E+999999", "0E+1000000", "1E-1000026", "9.999999999999999999999999999E+999999")])

_FINITE_DECIMALS = st.one_of(
    _finite_decimals(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-10 ** 6,
                max_value=10 ** 6),
)
_DECIMALS = st.one_of(
    _FINITE_DECIMALS,
    _SPECIAL_DECIMALS,
    st.decimals(allow_nan=True, allow_infinity=True),
)

_DIGITS = "0123456789"
_ODD_DIGITS = "\u0660\u0661\u0669\u06f4\uff11\u00b2\u2460"  # Arabic-Indic, fullwidth, superscript
_SPACES = ["", " ", "  ", "\t", "\n", "\u00a0", "\u2003", "\u3000", "\x1c", "\u200b", "\ufeff"]


@st.composite
def _amount_texts(draw: st.DrawFn) -> str:
    def digits(low: int, high: int) -> str:
        alphabet = draw(st.sampled_from([_DIGITS, _DIGITS, _DIGITS + "_", _DIGITS + _ODD_DIGITS]))
        return draw(st.text(st.sampled_from(alphabet), min_size=low, max_size=high))

    sign = draw(st.sampled_from(["", "", "-", "+", "--", "\u2212"]))
    whole = digits(0, draw(st.sampled_from([3, 16, 40])))
    point = draw(st.sampled_from(["", ".", ".", ",", ".."]))
    fraction = digits(0, draw(st.sampled_from([3, 20, 40])))
    exponent = ""
    if draw(st.integers(0, 3)) == 0:
        exponent = (draw(st.sampled_from(["e", "E", "e+", "E-", "e-", "x"]))
                    + digits(0, draw(st.sampled_from([2, 4, 7]))))
    text = sign + whole + point + fraction + exponent
    return draw(st.sampled_from(_SPACES)) + text + draw(st.sampled_from(_SPACES))


_AMOUNT_WORDS = st.sampled_from([
    "", " ", ".", "-", "+", "e5", "1e", "1.", ".5", "-.5", "+0", "-0", "-0.000", "0e-9999",
    "1e9999", "1e99999", "1e-9999", "1_000", "NaN", "nan", "sNaN", "Infinity", "-inf", "Inf",
    "999999999999999", "999999999999999.9", "999999999999999.99999999999999999",
    "1000000000000000", "-999999999999999.999", "1E+15", "9.99999999999999E14", "12.500",
    "0.000", "1.7763568394002505e-15", "\u0661\u0662.\u0665", "\uff11\uff12", "12.5 KWD"])

_AMOUNTS = st.one_of(
    _amount_texts(),
    _AMOUNT_WORDS,
    _DECIMALS,
    st.integers(),
    st.integers(-10 ** 16, 10 ** 16),
    st.floats(),
    st.sampled_from([None, True, False, 0, -0.0, 1e15, 1e-300, 5e-324, b"1.0", ["1"], {"a": 1},
                     object, 1j]),
    st.text(max_size=12),
)

_ODD_CHARS = (
    "\x00\x01\x08\x1f\x7f\x80\x85\x9f\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\u00a0\u00ad\u034f\u061c"
    "\u180e\u200b\u200c\u200d\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2060"
    "\u2066\u2067\u2068\u2069\u3000\ufeff\ufffd\ue000\U000e0001\U0001f600\U0001f1f0\U0001f1fc"
    "\u0301\u064b\u0670&<>;#/! ")
_CHARS = st.one_of(
    st.sampled_from(_ODD_CHARS),
    st.characters(min_codepoint=0x20, max_codepoint=0x7e),
    st.characters(min_codepoint=0x600, max_codepoint=0x6ff),  # Arabic
    st.characters(min_codepoint=0xd800, max_codepoint=0xdfff, categories=["Cs"]),
    st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Co", "Cn", "Mn"]),
    st.characters(),
)
_TEXTS = st.one_of(
    st.text(_CHARS, max_size=40),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40),
    st.text(st.characters(min_codepoint=0x600, max_codepoint=0x6ff) | st.just(" "), max_size=30),
    st.sampled_from([
        "", " ", "Fatima", "  Al-Sabah  ", "\u0641\u0627\u0637\u0645\u0629", "a\x00b", "\ud800",
        "\ud83d\ude00", "x\udfff", "<b>Oud</b>", "Size<br>Large", "&amp;ndash;",
        "&amp;amp;lt;b&gt;",
        "a &lt;script&gt;x&lt;/script&gt; b", "<script>alert(1)</script>Dates", "&#0;", "&#xd800;",
        "&#x202e;evil", "&#128;", "5 < 6 and 7 > 3", "<!-- c -->x", "\u202eReversed\u202c",
        "\u200fRLM\u200e", "tab\there", "line\nbreak", "\x85next", "zw\u200bj", "&nbsp;x&nbsp;",
        "\u0627\u0644\u0633\u0628\u0627\u062d\u200d", "1 & 2", "&", "<", "a<b", "&#x0;"]),
)


# --- small functions ----------------------------------------------------------------------------

@settings(max_examples=3000, deadline=None)
@given(_AMOUNTS)
def test_parse_amount(value: object) -> None:
    _assert_same(parse_amount, _reference_parse_amount, value)


@settings(max_examples=3000, deadline=None)
@given(st.lists(_FINITE_DECIMALS, max_size=5))
def test_add_exact(terms: list[Decimal]) -> None:
    _assert_same(add_exact, _reference_add_exact, *terms)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_FINITE_DECIMALS | _DECIMALS | st.decimals(
    places=3, allow_nan=False, allow_infinity=False, min_value=-100, max_value=100), max_size=14))
def test_add_exact_of_many_terms(terms: list[Decimal]) -> None:
    _assert_same(add_exact, _reference_add_exact, *terms)


@settings(max_examples=2000, deadline=None)
@given(total=st.sampled_from(["9.500", "0.001", "-1.000", "12.345", "999999999999999.999"])
       .map(Decimal) | _DECIMALS,
       tax=st.sampled_from(["0.000", "0", "1.7763568394002505e-15", "0.125", "-0E+5"])
       .map(Decimal) | _DECIMALS)
def test_add_exact_of_a_line_total_and_its_tax(total: Decimal, tax: Decimal) -> None:
    _assert_same(add_exact, _reference_add_exact, total, tax)


_CONTEXTS = st.builds(
    lambda prec, emax, emin, clamp, capitals, rounding, traps, flags: Context(
        prec=prec, Emax=emax, Emin=emin, clamp=clamp, capitals=capitals, rounding=rounding,
        traps=traps, flags=flags),
    prec=st.integers(1, 40) | st.just(28),
    emax=st.integers(0, 40) | st.just(999999),
    emin=st.integers(-40, 0) | st.just(-999999),
    clamp=st.integers(0, 1),
    capitals=st.integers(0, 1),  # str() writes the exponent "e" or "E"
    rounding=st.sampled_from([ROUND_05UP, ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR,
                              ROUND_HALF_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP]),
    traps=st.lists(st.sampled_from(_SIGNALS), unique=True),
    flags=st.lists(st.sampled_from(_SIGNALS), unique=True),
)


@settings(max_examples=2000, deadline=None)
@given(context=_CONTEXTS, terms=st.lists(
    _DECIMALS | st.builds(lambda c, e: Decimal((0, tuple(int(d) for d in str(c)), e)),
                          st.integers(1, 10 ** 30), st.integers(-45, 45)), max_size=4))
def test_add_exact_in_any_context(context: Context, terms: list[Decimal]) -> None:
    """The caller's context (precision, exponent limits, clamping, rounding, traps) is honoured
    exactly as before, and its flags are raised exactly as before."""
    with localcontext(context):
        _assert_same(add_exact, _reference_add_exact, *terms)


@settings(max_examples=3000, deadline=None)
@given(_TEXTS)
def test_storable(text: str) -> None:
    _assert_same(storable, _reference_storable, text)
    _assert_same(storable_id, _reference_storable_id, text, "order 7", "status")


@settings(max_examples=3000, deadline=None)
@given(_TEXTS)
def test_clean_name_and_clean_text(text: str) -> None:
    _assert_same(clean_name, _reference_clean_name, text)
    _assert_same(_clean_text, _reference_clean_text, text)


class _Text(str):
    """A str subclass: what the regexes gave for one (a plain str) is what is given."""


@pytest.mark.parametrize("text", ["plain", "", "a\x00b", "\u0641 \u200f", "<b>x</b>"])
def test_text_functions_on_a_str_subclass(text: str) -> None:
    for new, reference in ((storable, _reference_storable), (_clean_text, _reference_clean_text),
                           (clean_name, _reference_clean_name)):
        _assert_same(new, reference, _Text(text))
    _assert_same(storable_id, _reference_storable_id, _Text(text), "order 7", "number")


@pytest.mark.parametrize("value", [None, b"abc", b"a\x00", 5, ["a"], ("<",), {"&": 1}])
def test_text_functions_on_what_is_not_text(value: object) -> None:
    for new, reference in ((storable, _reference_storable), (_clean_text, _reference_clean_text),
                           (clean_name, _reference_clean_name)):
        _assert_same(new, reference, value)
    _assert_same(storable_id, _reference_storable_id, value, "order 7", "number")


def test_printable_text_holds_nothing_the_cleaning_drops() -> None:
    """The text shortcuts trust str.isprintable(): a printable character is never one the
    cleaning regexes match. Checked for every code point, so a Unicode update that broke it
    would show here."""
    for code in range(0x110000):
        ch = chr(code)
        if ch.isprintable():
            assert not _REF_DROPPED_RE.match(ch), hex(code)
            assert not _REF_UNSTORABLE.match(ch), hex(code)
    assert _DROPPED_RE.pattern == _REF_DROPPED_RE.pattern
    assert _UNSTORABLE.pattern == _REF_UNSTORABLE.pattern


def test_quantity_and_objects_unchanged() -> None:
    for value in (1, 2, Decimal("2.0"), Decimal("1e100000000"), True, 0, "1", None, 10 ** 9,
                  10 ** 9 + 1, Decimal("NaN"), 2.0):
        _assert_same(quantity, _reference_quantity, value, "order 1 line_items[0]")
    for container in ({}, {"k": None}, {"k": []}, {"k": [{}, {"a": 1}]}, {"k": [{}, 3]},
                      {"k": "x"}, {"k": {"a": 1}}):
        _assert_same(objects, _reference_objects, container, "k", "order 1")


# --- whole orders -------------------------------------------------------------------------------

def _bench_like_body() -> bytes:
    from bridge.fakes.woocommerce import FakeWooCommerce, wp_json_encode

    fake = FakeWooCommerce(decimals=3, currency="KWD")
    fake.set_base_url("https://shop.example.com")
    fake.add_product(11, "Arabic coffee beans 500 g", "4.750", sku="COF-500")
    fake.add_product(12, "Dallah coffee pot", "12.500", sku="DAL-1")
    fake.add_product(13, "\u062a\u0645\u0631 &amp; dates <b>gift</b> box", "7.250", sku="DAT-GB")
    order = fake.create_order(
        [{"product_id": 11, "quantity": 2}, {"product_id": 12, "quantity": 1},
         {"product_id": 13, "quantity": 3}],
        shipping_lines=[{"method_id": "flat_rate", "method_title": "Flat rate",
                         "total": "1.500"}])
    return wp_json_encode(order).encode("utf-8")


_BASE_BODIES = [REALISTIC_KWD.encode(), CAPTURED_WC79.encode(), _bench_like_body()]
_BASES = ([json.loads(b, parse_float=Decimal) for b in _BASE_BODIES]
          + [json.loads(CAPTURED_WC79)]  # floats, as a decoder without parse_float gives them
          + [_reference_decode_json(b) for b in _BASE_BODIES])

_TOP_KEYS = ["id", "status", "currency", "total", "discount_total", "number", "customer_id",
             "billing", "line_items", "shipping_lines", "fee_lines", "payment_method",
             "order_key", "created_via", "code", "message", "data"]
_LINE_LISTS = ["line_items", "shipping_lines", "fee_lines"]
_LINE_KEYS = ["name", "method_title", "quantity", "sku", "total", "total_tax"]
_BILLING_KEYS = ["first_name", "last_name", "email", "phone", "country"]

_SCALARS = st.one_of(
    _AMOUNTS, _TEXTS, st.integers(-3, 3), st.sampled_from(["KWD", "kwd ", " USD", "KW", "KWDD",
                                                           "\u0643\u062f\u0643", "pending"]))
_VALUES = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=3),
    st.dictionaries(st.sampled_from(_LINE_KEYS + _BILLING_KEYS + ["status"]), _SCALARS,
                    max_size=4),
)


@st.composite
def _orders(draw: st.DrawFn) -> object:
    payload = copy.deepcopy(draw(st.sampled_from(_BASES)))
    for _ in range(draw(st.integers(0, 6))):
        where = draw(st.sampled_from(["top", "line", "line", "billing", "new line", "drop"]))
        value = draw(_VALUES)
        if where == "top":
            payload[draw(st.sampled_from(_TOP_KEYS))] = value
        elif where == "drop":
            payload.pop(draw(st.sampled_from(_TOP_KEYS)), None)
        elif where == "billing" and isinstance(payload.get("billing"), dict):
            payload["billing"][draw(st.sampled_from(_BILLING_KEYS))] = value
        elif where == "new line":
            lines = payload.setdefault(draw(st.sampled_from(_LINE_LISTS)), [])
            if isinstance(lines, list):
                lines.append(draw(st.dictionaries(st.sampled_from(_LINE_KEYS), _SCALARS,
                                                  max_size=6)))
        elif where == "line":
            lines = payload.get(draw(st.sampled_from(_LINE_LISTS)))
            if isinstance(lines, list) and lines and isinstance(lines[-1], dict):
                index = draw(st.integers(0, len(lines) - 1))
                if isinstance(lines[index], dict):
                    lines[index][draw(st.sampled_from(_LINE_KEYS))] = value
    if draw(st.integers(0, 15)) == 0:
        return draw(st.sampled_from([None, [], "order", 7, [payload]]))
    return payload


@pytest.mark.parametrize("body", _BASE_BODIES)
def test_known_orders(body: bytes) -> None:
    _assert_same(decode_json, _reference_decode_json, body)
    _assert_same(decode_json, _reference_decode_json, body.decode())
    payload = _reference_decode_json(body)
    expected = _outcome(_reference_order_from_woocommerce, payload)
    assert expected[0] == "value"  # the fixtures are orders, so the comparison means something
    _assert_same(order_from_woocommerce, _reference_order_from_woocommerce, payload)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_orders())
def test_mutated_orders(payload: object) -> None:
    _assert_same(order_from_woocommerce, _reference_order_from_woocommerce, payload)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(
    st.text(st.sampled_from("KWDkwd \t\u00c4\u00df\u0131\u212a\uff2b\u0643\u062f\u00aa\u02b0"
                            "1_-"), max_size=5),
    st.text(max_size=4),
    st.sampled_from(["KWD", "kwd", " Kwd\n", "KW", "KWDD", "K D", "\u0643\u062f\u0643",
                     "\uff2b\uff37\uff24", "\u212aWD", "\u00c4BC", "ABC\x00"])))
def test_currency_codes(currency: str) -> None:
    payload = json.loads(REALISTIC_KWD, parse_float=Decimal)
    payload["currency"] = currency
    _assert_same(order_from_woocommerce, _reference_order_from_woocommerce, payload)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_orders().filter(lambda p: isinstance(p, dict)), st.booleans())
def test_mutated_orders_through_json(payload: dict, as_bytes: bool) -> None:
    """Body to Order, as a webhook request does it."""
    try:
        body: str | bytes = simplejson.dumps(payload, use_decimal=True)
    except (TypeError, ValueError):
        return  # a value JSON cannot spell (a set, object, NaN float...)
    if as_bytes:
        body = body.encode("utf-8", "surrogatepass")
    _assert_same(decode_json, _reference_decode_json, body)
    expected = _outcome(_reference_decode_json, body)
    if expected[0] == "value":
        _assert_same(order_from_woocommerce, _reference_order_from_woocommerce, expected[1])


_NUMBER_LITERALS = st.one_of(
    st.from_regex(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{0,30})?([eE][+-]?[0-9]{1,25})?",
                  fullmatch=True),
    st.sampled_from(["1e99999999999999999999", "-0.0", "0e-999999999", "1E+999999999999999999",
                     "NaN", "Infinity", "-Infinity", "01", "1.", ".5", "1e", "--1", "1_0"]),
)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(
    st.binary(max_size=60),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.text(max_size=60),
    _NUMBER_LITERALS.map(lambda n: '{"total": ' + n + ', "x": [' + n + "]}"),
    _NUMBER_LITERALS,
    st.integers(0, 70).map(lambda n: "[" * n + "]" * n),
    st.integers(0, 70).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(0, 40).map(lambda n: ('["[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", ' * n + "1"
                                      + "]" * n).encode()),
    st.sampled_from([b"\xef\xbb\xbf{}", "\ufeff{}", b"{} x", b"{}\n", b"\xff", b'"\\ud800"',
                     b'{"a": "\\u0000"}', b"", b" ", b"nul", b"[1,]", b'{"a" 1}']),
))
def test_decode_json(body: bytes | str) -> None:
    _assert_same(decode_json, _reference_decode_json, body)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-10 ** 40, 10 ** 40)
    | _FINITE_DECIMALS | _TEXTS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(_TEXTS, children, max_size=4),
    max_leaves=40)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_JSON_VALUES, st.booleans(), st.booleans(), st.sampled_from([None, 1, "\t"]))
def test_any_json_document(value: object, ascii_only: bool, as_bytes: bool,
                           indent: object) -> None:
    """decode_json reads with msgspec first and falls back to simplejson on any refusal: for
    every document, either way, the value (Decimal exponents included) or the error is the
    reference's."""
    body: str | bytes = simplejson.dumps(value, use_decimal=True, ensure_ascii=ascii_only,
                                         indent=indent)
    if as_bytes:
        body = body.encode("utf-8", "surrogatepass")
    _assert_same(decode_json, _reference_decode_json, body)
