from __future__ import annotations

import hashlib
import re
import unicodedata
from decimal import Decimal

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from bridge.mapping import (
    CUSTOMER_NAME_LIMIT,
    DESCRIPTION_LIMIT,
    ORDER_ID_LIMIT,
    ORDER_REFERENCE_LIMIT,
    PRODUCT_DESCRIPTION_LIMIT,
    PRODUCT_NAME_LIMIT,
    REFERENCE_ID_LIMIT,
    SUPPORTED_CURRENCIES,
    UNIQUE_ID_LIMIT,
    URL_LIMIT,
    Blocker,
    clean_name,
    invoice_blockers,
    invoice_request_from_order,
    normalize_mobile,
    order_description,
    products_from_order,
    reference_id_for,
    truncate_text,
    upay_order_id_for,
    valid_email,
)
from bridge.models import (
    CallbackUrls,
    Customer,
    InvoiceOptions,
    Language,
    LineKind,
    NotificationType,
    Order,
    OrderLine,
)
from bridge.money import exponent, quantize

ELLIPSIS = "\u2026"
ZWJ = "\u200d"
FAMILY = "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466"  # 7 code points
KUWAIT_FLAG = "\U0001F1F0\U0001F1FC"
SAUDI_FLAG = "\U0001F1F8\U0001F1E6"
URLS = CallbackUrls(
    return_url="https://bridge.example/upay/return/s1",
    cancel_url="https://bridge.example/upay/cancel/s1",
    notification_url="https://bridge.example/upay/notify/s1",
)


def item(name: str, quantity: int, amount: str, sku: str = "") -> OrderLine:
    return OrderLine(LineKind.ITEM, name, quantity, Decimal(amount), sku)


def shipping(name: str, amount: str) -> OrderLine:
    return OrderLine(LineKind.SHIPPING, name, 1, Decimal(amount))


def fee(name: str, amount: str) -> OrderLine:
    return OrderLine(LineKind.FEE, name, 1, Decimal(amount))


def make_order(currency: str = "KWD", total: str = "12.500", lines: tuple = (),
               customer: Customer | None = None, number: str = "1234",
               external_id: str = "1234") -> Order:
    return Order(
        external_id=external_id,
        number=number,
        status="pending",
        currency=currency,
        total=Decimal(total),
        customer=customer or Customer(id="17", first_name="Fatima", last_name="Al-Sabah",
                                      email="fatima@example.com", phone="+96555512345",
                                      country="KW"),
        lines=tuple(lines),
    )


def summary(products: list[dict]) -> list[tuple[str, str, str, int]]:
    return [(p["name"], p["description"], str(p["price"]), p["quantity"]) for p in products]


# --- products_from_order ----------------------------------------------------------------------

PRODUCT_CASES = [
    pytest.param(
        "KWD", "12.500",
        [item("Arabic Coffee 250g", 2, "8.000", "COF-250"), item("Dallah Pot - Gold", 1, "3.000",
                                                                 "DAL-G"),
         shipping("Flat rate", "1.500")],
        [("Arabic Coffee 250g", "COF-250", "4.000", 2), ("Dallah Pot - Gold", "DAL-G", "3.000", 1),
         ("Flat rate", "Shipping", "1.500", 1)],
        id="kwd-coupon-in-line-totals-and-shipping"),
    pytest.param(
        "KWD", "25.000", [item("E2E Product", 2, "25.000", "E2E-001")],
        [("E2E Product", "E2E-001", "12.500", 2)],
        id="captured-wc79-price-12.5"),
    pytest.param(
        "KWD", "10.750", [item("Oud", 1, "10.000", "OUD"), fee("Gift wrap", "0.750")],
        [("Oud", "OUD", "10.000", 1), ("Gift wrap", "Fee", "0.750", 1)],
        id="fee"),
    pytest.param(
        "KWD", "8.000", [item("Shirt", 2, "10.000", "SH"), fee("Loyalty discount", "-2.000")],
        [("Shirt", "SH", "4.000", 2)],
        id="negative-fee-reduces-last-candidate"),
    pytest.param(
        "KWD", "3.000",
        [item("Dates", 1, "5.000"), shipping("Courier", "1.000"), fee("Voucher", "-3.000")],
        [("Dates", "Item", "3.000", 1)],
        id="negative-fee-removes-shipping-and-carries-on"),
    pytest.param(
        "KWD", "5.000",
        [item("Dates", 1, "5.000"), shipping("Courier", "1.000"), fee("Voucher", "-1.000")],
        [("Dates", "Item", "5.000", 1)],
        id="reduction-equal-to-last-candidate-removes-it"),
    pytest.param(
        "KWD", "9.000", [item("Shirt", 2, "10.000", "SH")],
        [("Shirt", "SH", "4.500", 2)],
        id="discount-not-in-line-totals"),
    pytest.param(
        "KWD", "1.500", [item("Free sample", 1, "0.000", "FS"), shipping("Flat rate", "1.500")],
        [("Flat rate", "Shipping", "1.500", 1)],
        id="full-discount-leaves-shipping-only"),
    pytest.param(
        "KWD", "10.000", [item("Widget", 3, "10.000", "W-1")],
        [("Widget \u00d7 3", "W-1", "10.000", 1)],
        id="line-total-not-divisible-by-quantity"),
    pytest.param(
        "KWD", "10.00",
        [item("A", 1, "3.33"), item("B", 1, "3.33"), item("C", 1, "3.34")],
        [("A", "Item", "3.330", 1), ("B", "Item", "3.330", 1), ("C", "Item", "3.340", 1)],
        id="kwd-with-2-decimal-store-strings"),
    pytest.param(
        "KWD", "10.00", [item("Cups", 3, "9.99")],
        [("Cups", "Item", "3.330", 3), ("Other charges", "Taxes, fees and rounding", "0.010", 1)],
        id="kwd-2-decimal-rounding-gap-becomes-other-charges"),
    pytest.param(
        "USD", "6.000", [item("Pen", 2, "4.995", "P"), shipping("Post", "1.005")],
        [("Pen", "P", "2.50", 2), ("Post", "Shipping", "1.00", 1)],
        id="usd-with-3-decimal-store-strings"),
    pytest.param(
        "JPY", "2300", [item("Matcha", 3, "1500", "M"), shipping("Yamato", "800")],
        [("Matcha", "M", "500", 3), ("Yamato", "Shipping", "800", 1)],
        id="jpy-zero-decimals"),
    pytest.param(
        "JPY", "1000.00", [item("Mochi", 3, "1000.00")],
        [("Mochi \u00d7 3", "Item", "1000", 1)],
        id="jpy-with-2-decimal-store-strings-not-divisible"),
    pytest.param(
        "USD", "17.25", [item("Tea", 2, "11.50", "T"), shipping("UPS", "5.75")],
        [("Tea", "T", "5.75", 2), ("UPS", "Shipping", "5.75", 1)],
        id="taxes-inside-lines"),
    pytest.param(
        "USD", "10.50", [item("Tea", 1, "10.00", "T")],
        [("Tea", "T", "10.00", 1), ("Other charges", "Taxes, fees and rounding", "0.50", 1)],
        id="order-level-tax-not-in-lines"),
    pytest.param(
        "KWD", "5.000", [],
        [("Order 1234", "Order total", "5.000", 1)],
        id="no-lines"),
    pytest.param(
        "KWD", "5.000", [item("Gift", 1, "0.000"), fee("Discount", "-1.000")],
        [("Order 1234", "Order total", "5.000", 1)],
        id="no-positive-lines"),
    pytest.param(
        "KWD", "2.000", [item("", 1, "1.000"), shipping("", "1.000")],
        [("Item", "Item", "1.000", 1), ("Shipping", "Shipping", "1.000", 1)],
        id="empty-names-fall-back-to-kind"),
    pytest.param(
        "KWD", "2.000", [item("Odd", 0, "2.000")],
        [("Odd", "Item", "2.000", 1)],
        id="quantity-below-one-treated-as-one"),
    pytest.param(
        "BHD", "1.0005", [item("Karak", 1, "1.0005")],
        [("Karak", "Item", "1.001", 1)],
        id="half-up-rounding-of-total-and-line"),
]


@pytest.mark.parametrize("currency, total, lines, expected", PRODUCT_CASES)
def test_products_from_order(currency: str, total: str, lines: list[OrderLine],
                             expected: list[tuple]) -> None:
    order = make_order(currency, total, tuple(lines))
    products = products_from_order(order)
    assert summary(products) == expected
    assert sum(p["price"] * p["quantity"] for p in products) == quantize(order.total, currency)
    for p in products:
        assert isinstance(p["price"], Decimal)
        assert p["price"].as_tuple().exponent == -exponent(currency)
        assert type(p["quantity"]) is int


def test_products_from_order_survives_absurd_quantities() -> None:
    order = make_order("KWD", "1.000", (item("Grain", 10 ** 300, "1.000", "   "),))
    (product,) = products_from_order(order)
    assert len(product["name"]) <= PRODUCT_NAME_LIMIT
    assert (product["description"], product["price"], product["quantity"]) == (
        "Item", Decimal("1.000"), 1)


@pytest.mark.parametrize("total", ["0", "0.000", "0.0004", "-5.000"])
def test_products_from_order_empty_for_non_positive_total(total: str) -> None:
    assert products_from_order(make_order("KWD", total, (item("A", 1, "5.000"),))) == []


def test_products_from_order_truncates_long_names() -> None:
    long_name = "Premium Saffron " * 30
    order = make_order("KWD", "10.000", (item(long_name, 1, "5.000", "S" * 400),
                                         item(long_name, 3, "5.000")))
    first, second = products_from_order(order)
    assert len(first["name"]) == PRODUCT_NAME_LIMIT and first["name"].endswith(ELLIPSIS)
    assert len(first["description"]) == PRODUCT_DESCRIPTION_LIMIT
    assert len(second["name"]) <= PRODUCT_NAME_LIMIT
    assert second["name"].endswith(ELLIPSIS + " \u00d7 3")
    assert second["quantity"] == 1


# The property: any order with a positive total maps to products that sum exactly to it.

_CURRENCIES = st.sampled_from(["KWD", "BHD", "USD", "EUR", "JPY", "KRW"])


@st.composite
def random_orders(draw: st.DrawFn) -> Order:
    currency = draw(_CURRENCIES)
    # Store strings may carry fewer or more places than the currency (store-wide setting).
    places = draw(st.integers(min_value=0, max_value=4))
    amount = st.decimals(min_value=-500, max_value=5000, places=places,
                         allow_nan=False, allow_infinity=False)
    lines = draw(st.lists(
        st.builds(OrderLine, kind=st.sampled_from(list(LineKind)),
                  name=st.text(max_size=300), quantity=st.integers(min_value=1, max_value=50),
                  amount=amount, sku=st.text(max_size=300)),
        max_size=8))
    total = draw(st.decimals(min_value=Decimal(1).scaleb(-places), max_value=20000,
                             places=places, allow_nan=False, allow_infinity=False))
    assume(quantize(total, currency) > 0)
    return make_order(currency, str(total), tuple(lines))


@settings(max_examples=400)
@given(random_orders())
def test_products_always_sum_exactly_to_the_quantized_total(order: Order) -> None:
    products = products_from_order(order)
    places = exponent(order.currency)
    assert products
    assert sum(p["price"] * p["quantity"] for p in products) == quantize(order.total,
                                                                         order.currency)
    for p in products:
        assert isinstance(p["price"], Decimal) and p["price"] > 0
        assert -p["price"].as_tuple().exponent <= places
        assert type(p["quantity"]) is int and p["quantity"] >= 1
        assert 0 < len(p["name"]) <= PRODUCT_NAME_LIMIT
        assert len(p["description"]) <= PRODUCT_DESCRIPTION_LIMIT


# --- truncate_text ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, limit, expected", [
    ("Arabic Coffee", 50, "Arabic Coffee"),
    ("Arabic Coffee", 13, "Arabic Coffee"),
    ("Arabic Coffee", 12, "Arabic Coff" + ELLIPSIS),
    ("Arabic Coffee", 8, "Arabic" + ELLIPSIS),  # no space before the ellipsis
    ("  many   spaces\there\n ", 50, "many spaces here"),
    ("bell\x07 and\x00null", 50, "bell andnull"),
    ("line\r\nbreak", 50, "line break"),
    ("\u202eevil\u202c name", 50, "evil name"),
    ("abc", 1, ELLIPSIS),
    ("abc", 0, ""),
    ("", 10, ""),
    # Arabic with harakat: a letter keeps its marks or goes with them.
    ("\u0645\u064f\u062d\u064e\u0645\u0651\u064e\u062f", 8,
     "\u0645\u064f\u062d\u064e\u0645\u0651\u064e\u062f"),
    ("\u0645\u064f\u062d\u064e\u0645\u0651\u064e\u062f", 7,
     "\u0645\u064f\u062d\u064e" + ELLIPSIS),
    ("\u0645\u064f\u062d\u064e\u0645\u0651\u064e\u062f", 6,
     "\u0645\u064f\u062d\u064e" + ELLIPSIS),
    ("\u0645\u064f\u062d\u064e\u0645\u0651\u064e\u062f", 4, "\u0645\u064f" + ELLIPSIS),
    # Latin letters with combining accents (NFD).
    ("Cafe\u0301 au lait", 6, "Cafe\u0301" + ELLIPSIS),
    ("Cafe\u0301 au lait", 5, "Caf" + ELLIPSIS),
    # Emoji: ZWJ families, flags, variation selectors, skin tones, keycaps.
    (FAMILY + FAMILY, 10, FAMILY + ELLIPSIS),
    (FAMILY + FAMILY, 7, ELLIPSIS),
    ("Gift " + FAMILY, 11, "Gift" + ELLIPSIS),
    (KUWAIT_FLAG + SAUDI_FLAG, 4, KUWAIT_FLAG + SAUDI_FLAG),
    (KUWAIT_FLAG + SAUDI_FLAG + KUWAIT_FLAG, 5, KUWAIT_FLAG + SAUDI_FLAG + ELLIPSIS),
    (KUWAIT_FLAG + SAUDI_FLAG + KUWAIT_FLAG, 4, KUWAIT_FLAG + ELLIPSIS),
    (KUWAIT_FLAG + SAUDI_FLAG, 3, KUWAIT_FLAG + ELLIPSIS),
    (KUWAIT_FLAG + SAUDI_FLAG, 2, ELLIPSIS),
    ("I \u2764\ufe0f KW", 5, "I \u2764\ufe0f" + ELLIPSIS),
    ("I \u2764\ufe0f KW", 4, "I" + ELLIPSIS),
    ("\U0001F44D\U0001F3FD\U0001F44D\U0001F3FD", 3, "\U0001F44D\U0001F3FD" + ELLIPSIS),
    ("1\ufe0f\u20e32\ufe0f\u20e3", 4, "1\ufe0f\u20e3" + ELLIPSIS),
    # Conjoining Hangul jamo (decomposed syllables) stay whole.
    ("\u1112\u1161\u11ab\u1100\u116e\u11a8", 4, "\u1112\u1161\u11ab" + ELLIPSIS),
])
def test_truncate_text(text: str, limit: int, expected: str) -> None:
    assert truncate_text(text, limit) == expected


def test_truncate_text_rejects_negative_limit() -> None:
    with pytest.raises(ValueError):
        truncate_text("abc", -1)


def test_truncate_text_long_arabic_product_name() -> None:
    name = "\u0642\u064e\u0647\u0652\u0648\u064e\u0629\u064c \u0639\u064e\u0631\u064e\u0628\u0650\u064a\u0651\u064e\u0629\u064c " * 40
    result = truncate_text(name, PRODUCT_NAME_LIMIT)
    assert len(result) <= PRODUCT_NAME_LIMIT and result.endswith(ELLIPSIS)
    body = result[:-1]
    cleaned = " ".join(name.split())
    assert cleaned.startswith(body)
    assert unicodedata.category(cleaned[len(body)]) != "Mn"


_TRICKY = st.sampled_from([
    "a", "b", " ", "\u0645", "\u064e", "\u0651", "\u0301", ZWJ, "\ufe0f", "\U0001F468",
    "\U0001F469", "\U0001F3FD", "\U0001F1F0", "\U0001F1FC", "\u20e3", "\n", "\x00", "\u0600",
    "\u1100", "\u1161", "\u11a8", "\uac00", "\u200c", "\U000E0067",
])


def _starts_cluster(ch: str) -> bool:
    return not (unicodedata.category(ch) in ("Mn", "Me", "Mc") or ch in (ZWJ, "\u200c")
                or 0x1F3FB <= ord(ch) <= 0x1F3FF or 0xE0020 <= ord(ch) <= 0xE007F)


@settings(max_examples=500)
@given(st.lists(_TRICKY, max_size=60).map("".join), st.integers(min_value=0, max_value=70))
@example("\u200d\naa", 3)  # the joiner takes the newline into its cluster, and rstrip drops it
def test_truncate_text_never_splits_a_character(text: str, limit: int) -> None:
    result = truncate_text(text, limit)
    cleaned = truncate_text(text, 10 ** 6)
    assert len(result) <= limit
    if len(cleaned) <= limit:
        assert result == cleaned
        return
    assert result.endswith(ELLIPSIS) or limit == 0
    body = result[:-1]
    assert cleaned.startswith(body)
    assert not body.endswith(ZWJ)
    if body:  # a mark at the very start of the text has nothing to attach to
        assert _starts_cluster(cleaned[len(body)])
    regional = 0
    for ch in reversed(body):  # flags are never cut in half
        if not 0x1F1E6 <= ord(ch) <= 0x1F1FF:
            break
        regional += 1
    if regional % 2 == 1:
        assert not 0x1F1E6 <= ord(cleaned[len(body)]) <= 0x1F1FF


# --- clean_name -------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("Arabic Coffee 250g", "Arabic Coffee 250g"),
    ("Dallah Pot &ndash; Gold", "Dallah Pot \u2013 Gold"),
    ("Coffee 250g &times; 2", "Coffee 250g \u00d7 2"),
    ("Fish &amp; Chips", "Fish & Chips"),
    ("Fish &amp;amp; Chips", "Fish & Chips"),
    ("Caf&eacute; &nbsp; Latte", "Caf\u00e9 Latte"),
    ("&#1602;&#1607;&#1608;&#1577;", "\u0642\u0647\u0648\u0629"),
    ("<strong>Bold</strong> name", "Bold name"),
    ("Size<br/>Large", "Size Large"),
    ("<p>Para one</p><p>two</p>", "Para one two"),
    ("&lt;b&gt;Escaped&lt;/b&gt; tags", "Escaped tags"),
    ("<script>alert(1)</script>Tea", "Tea"),
    ("5 < 6 and 7 > 3", "5 < 6 and 7 > 3"),
    ("  spaced\tout \n", "spaced out"),
    ("", ""),
])
def test_clean_name(raw: str, expected: str) -> None:
    assert clean_name(raw) == expected


# --- normalize_mobile -------------------------------------------------------------------------

@pytest.mark.parametrize("phone, country, expected", [
    ("+96555512345", "KW", "+96555512345"),
    ("55512345", "KW", "+96555512345"),
    ("55512345", "", "+96555512345"),
    ("55512345", "kw", "+96555512345"),
    ("5551 2345", "KW", "+96555512345"),
    ("555-12-345", "KW", "+96555512345"),
    ("(555) 12.345", "KW", "+96555512345"),
    ("0096555512345", "KW", "+96555512345"),
    ("+965 5551 2345", "KW", "+96555512345"),
    ("\u0665\u0665\u0665\u0661\u0662\u0663\u0664\u0665", "KW", "+96555512345"),
    ("00966501234567", "SA", "+966501234567"),
    ("0501234567", "SA", "0501234567"),
    ("55512345", "SA", "55512345"),
    ("96555512345", "KW", "96555512345"),
    ("+1 (415) 555-2671", "US", "+14155552671"),
    ("1234567", "US", "1234567"),
    ("123456789012345", "US", "123456789012345"),
    ("+123456789012345", "", "+123456789012345"),
    ("", "KW", ""),
    ("   ", "KW", ""),
    ("123456", "KW", ""),
    ("+123456", "KW", ""),
    ("1234567890123456", "US", ""),
    ("+1234567890123456", "", ""),
    ("555-CALL-NOW", "US", ""),
    ("55512345 ext 2", "KW", ""),
    ("+965+55512345", "KW", ""),
    ("965+55512345", "KW", ""),
    ("+", "KW", ""),
    ("00", "KW", ""),
    ("#55512345", "KW", ""),
])
def test_normalize_mobile(phone: str, country: str, expected: str) -> None:
    assert normalize_mobile(phone, country) == expected


@given(st.text(max_size=30), st.sampled_from(["KW", "", "SA", "US"]))
def test_normalize_mobile_output_is_empty_or_e164_like(phone: str, country: str) -> None:
    result = normalize_mobile(phone, country)
    assert result == "" or re.fullmatch(r"\+?[0-9]{7,15}", result)


# --- valid_email ------------------------------------------------------------------------------

@pytest.mark.parametrize("email, expected", [
    ("fatima@example.com", "fatima@example.com"),
    ("  fatima@example.com \n", "fatima@example.com"),
    ("first.last+tag@mail.example.com.kw", "first.last+tag@mail.example.com.kw"),
    ("a@b.co", "a@b.co"),
    ("x" * 38 + "@example.com", "x" * 38 + "@example.com"),  # exactly 50
    ("x" * 39 + "@example.com", ""),  # 51
    ("", ""),
    ("fatima", ""),
    ("fatima@localhost", ""),
    ("fatima@@example.com", ""),
    ("fa@tima@example.com", ""),
    ("@example.com", ""),
    ("fatima@.com", ""),
    ("fatima@example.", ""),
    ("fatima@example..com", ""),
    ("fat ima@example.com", ""),
    ("Fatima <fatima@example.com>", ""),
    ("a@example.com, b@example.com", ""),
    ("fatima@exa\x00mple.com", ""),
])
def test_valid_email(email: str, expected: str) -> None:
    assert valid_email(email) == expected


# --- invoice_blockers -------------------------------------------------------------------------

NO_CONTACT = Customer(first_name="Guest")


@pytest.mark.parametrize("currency, total, customer, notification, expected", [
    ("KWD", "12.500", None, NotificationType.LINK, []),
    ("KWD", "12.500", None, NotificationType.ALL, []),
    ("JPY", "1500", None, NotificationType.LINK, [Blocker.UNSUPPORTED_CURRENCY]),
    ("kwd", "12.500", None, NotificationType.LINK, []),
    ("KWD", "0.000", None, NotificationType.LINK, [Blocker.ZERO_TOTAL]),
    ("KWD", "0.0004", None, NotificationType.LINK, [Blocker.ZERO_TOTAL]),
    ("KWD", "-1.000", None, NotificationType.LINK, [Blocker.ZERO_TOTAL]),
    ("KWD", "0.0005", None, NotificationType.LINK, []),
    ("KWD", "5.000", NO_CONTACT, NotificationType.LINK, []),
    ("KWD", "5.000", NO_CONTACT, NotificationType.EMAIL, [Blocker.NO_EMAIL]),
    ("KWD", "5.000", NO_CONTACT, NotificationType.SMS, [Blocker.NO_MOBILE]),
    ("KWD", "5.000", NO_CONTACT, NotificationType.ALL, [Blocker.NO_EMAIL, Blocker.NO_MOBILE]),
    ("KWD", "5.000", Customer(email="not-an-email", phone="12"), NotificationType.ALL,
     [Blocker.NO_EMAIL, Blocker.NO_MOBILE]),
    ("KWD", "5.000", Customer(email="a@b.co"), NotificationType.EMAIL, []),
    ("KWD", "5.000", Customer(phone="55512345", country="KW"), NotificationType.SMS, []),
    ("XYZ", "0", NO_CONTACT, NotificationType.ALL,
     [Blocker.UNSUPPORTED_CURRENCY, Blocker.ZERO_TOTAL, Blocker.NO_EMAIL, Blocker.NO_MOBILE]),
])
def test_invoice_blockers(currency: str, total: str, customer: Customer | None,
                          notification: NotificationType, expected: list[Blocker]) -> None:
    order = make_order(currency, total, customer=customer)
    assert invoice_blockers(order, InvoiceOptions(notification_type=notification)) == expected


def test_supported_currencies_are_upays_woocommerce_list() -> None:
    assert SUPPORTED_CURRENCIES == {"KWD", "SAR", "USD", "BHD", "EUR", "OMR", "QAR", "AED"}


# --- order_description ------------------------------------------------------------------------

def test_order_description_lists_items_with_quantities() -> None:
    order = make_order(lines=(item("Arabic Coffee 250g", 2, "8.000"), item("Dallah Pot", 1, "3.000"),
                              shipping("Flat rate", "1.500")))
    assert order_description(order) == "Order #1234: Arabic Coffee 250g \u00d7 2, Dallah Pot \u00d7 1"


def test_order_description_without_items() -> None:
    assert order_description(make_order(lines=())) == "Order #1234"


def test_order_description_is_cut_to_the_limit() -> None:
    lines = tuple(item(f"Product number {i} with a long name", 1, "1.000") for i in range(40))
    description = order_description(make_order(total="40.000", lines=lines))
    assert len(description) == DESCRIPTION_LIMIT and description.endswith(ELLIPSIS)
    assert description.startswith("Order #1234: Product number 0 with a long name \u00d7 1, ")


# --- identifiers ------------------------------------------------------------------------------

@pytest.mark.parametrize("store_id, external_id, attempt, expected", [
    ("s1", "1234", 1, "s1-1234-1"),
    ("shop42", "a_b-C", 0, "shop42-a_b-C-0"),
    ("abcdefghijkl", "x" * 25, 3, "abcdefghijkl-" + "x" * 25 + "-3"),  # exactly 40
    ("abcdefghijkl", "x" * 26, 3,
     "abcdefghijkl-" + hashlib.sha256(b"x" * 26).hexdigest()[:16] + "-3"),
    ("s1", "T3JkZXI6MQ==", 1, "s1-" + hashlib.sha256(b"T3JkZXI6MQ==").hexdigest()[:16] + "-1"),
    ("s1", "order 7", 2, "s1-" + hashlib.sha256(b"order 7").hexdigest()[:16] + "-2"),
])
def test_upay_order_id_for(store_id: str, external_id: str, attempt: int, expected: str) -> None:
    result = upay_order_id_for(store_id, external_id, attempt)
    assert result == expected
    assert len(result) <= ORDER_ID_LIMIT


@pytest.mark.parametrize("store_id, attempt", [
    ("", 1), ("Shop", 1), ("abcdefghijklm", 1), ("s-1", 1), ("s1", -1), ("s1", True),
    ("abcdefghijkl", 10 ** 30),
])
def test_upay_order_id_for_rejects_bad_arguments(store_id: str, attempt: int) -> None:
    with pytest.raises(ValueError):
        upay_order_id_for(store_id, "1234", attempt)


@given(st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True), st.text(max_size=100),
       st.integers(min_value=0, max_value=10 ** 9))
def test_upay_order_id_for_always_fits(store_id: str, external_id: str, attempt: int) -> None:
    result = upay_order_id_for(store_id, external_id, attempt)
    assert len(result) <= ORDER_ID_LIMIT
    assert re.fullmatch(r"[A-Za-z0-9_-]+", result)
    assert result.startswith(store_id + "-") and result.endswith(f"-{attempt}")


@pytest.mark.parametrize("number, expected", [
    ("1234", "1234"),
    ("INV-1001", "INV-1001"),
    ("X" * 35, "X" * 35),
    ("X" * 36, "X" * 18 + "-" + hashlib.sha256(b"X" * 36).hexdigest()[:16]),
    ("INV 1001", "INV1001-" + hashlib.sha256(b"INV 1001").hexdigest()[:16]),
    ("\u0637\u0644\u0628", hashlib.sha256("\u0637\u0644\u0628".encode()).hexdigest()[:16]),
    ("", hashlib.sha256(b"").hexdigest()[:16]),
])
def test_reference_id_for(number: str, expected: str) -> None:
    assert reference_id_for(number) == expected


@given(st.text(max_size=200))
def test_reference_id_for_always_fits_printable_ascii(number: str) -> None:
    result = reference_id_for(number)
    assert 0 < len(result) <= REFERENCE_ID_LIMIT
    assert re.fullmatch(r"[!-~]+", result)
    assert reference_id_for(number) == result


# --- invoice_request_from_order ---------------------------------------------------------------

def _walk(value: object):
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)
    else:
        yield value


def test_invoice_request_from_order_full_shape() -> None:
    order = make_order(lines=(item("Arabic Coffee 250g", 2, "8.000", "COF-250"),
                              item("Dallah Pot - Gold", 1, "3.000", "DAL-G"),
                              shipping("Flat rate", "1.500")))
    request = invoice_request_from_order(
        order, upay_order_id="s1-1234-1", reference_id="1234",
        options=InvoiceOptions(notification_type=NotificationType.EMAIL),
        urls=URLS)
    assert request == {
        "products": [
            {"name": "Arabic Coffee 250g", "description": "COF-250", "price": Decimal("4.000"),
             "quantity": 2},
            {"name": "Dallah Pot - Gold", "description": "DAL-G", "price": Decimal("3.000"),
             "quantity": 1},
            {"name": "Flat rate", "description": "Shipping", "price": Decimal("1.500"),
             "quantity": 1},
        ],
        "order": {"id": "s1-1234-1", "reference": "1234",
                  "description": "Order #1234: Arabic Coffee 250g \u00d7 2, Dallah Pot - Gold \u00d7 1",
                  "currency": "KWD", "amount": Decimal("12.500")},
        "paymentGateway": {"src": "create-invoice"},
        "notificationType": "email",
        "language": "en",
        "isSaveCard": False,
        "reference": {"id": "1234"},
        "customer": {"uniqueId": "customer-17", "name": "Fatima Al-Sabah",
                     "email": "fatima@example.com", "mobile": "+96555512345"},
        "returnUrl": URLS.return_url,
        "cancelUrl": URLS.cancel_url,
        "notificationUrl": URLS.notification_url,
        "plugin": {"src": "woocommerce"},
    }
    assert str(request["order"]["amount"]) == "12.500"
    assert not any(isinstance(v, float) for v in _walk(request))


def test_invoice_request_options_and_amount_rounding() -> None:
    order = make_order("KWD", "12.50", (item("A", 1, "12.50"),))
    request = invoice_request_from_order(
        order, upay_order_id="s1-1234-1", reference_id="1234", urls=URLS,
        options=InvoiceOptions(notification_type=NotificationType.ALL, language=Language.AR,
                               plugin_src="saleor"))
    assert request["notificationType"] == "all"
    assert request["language"] == "ar"
    assert request["plugin"] == {"src": "saleor"}
    assert str(request["order"]["amount"]) == "12.500"


@pytest.mark.parametrize("customer, unique_id, name, email, mobile", [
    (Customer(id="17", first_name="Fatima", last_name="Al-Sabah", email="fatima@example.com",
              phone="55512345", country="KW"),
     "customer-17", "Fatima Al-Sabah", "fatima@example.com", "+96555512345"),
    (Customer(email="smoke.test@example.com"),
     "guest-1234", "smoke.test", "smoke.test@example.com", ""),
    (Customer(email="broken"), "guest-1234", "Customer", "", ""),
    (Customer(), "guest-1234", "Customer", "", ""),
    (Customer(first_name="  ", last_name="Al-Sabah"), "guest-1234", "Al-Sabah", "", ""),
    (Customer(first_name="A" * 40, last_name="B" * 40), "guest-1234",
     "A" * 40 + " " + "B" * 8 + ELLIPSIS, "", ""),
    (Customer(id="9" * 200), "customer-" + "9" * 124 + "-"
     + hashlib.sha256(("customer-" + "9" * 200).encode()).hexdigest()[:16], "Customer", "", ""),
])
def test_invoice_request_customer(customer: Customer, unique_id: str, name: str, email: str,
                                  mobile: str) -> None:
    order = make_order(customer=customer)
    request = invoice_request_from_order(order, upay_order_id="s1-1234-1", reference_id="1234",
                                         options=InvoiceOptions(), urls=URLS)
    assert request["customer"] == {"uniqueId": unique_id, "name": name, "email": email,
                                   "mobile": mobile}
    assert len(request["customer"]["uniqueId"]) <= UNIQUE_ID_LIMIT
    assert len(request["customer"]["name"]) <= CUSTOMER_NAME_LIMIT


def test_invoice_request_cuts_long_order_reference_but_not_amounts() -> None:
    order = make_order("KWD", "123456789.123", (item("A", 1, "123456789.123"),),
                       number="N" * 400)
    request = invoice_request_from_order(order, upay_order_id="s1-1234-1",
                                         reference_id=reference_id_for(order.number),
                                         options=InvoiceOptions(), urls=URLS)
    assert len(request["order"]["reference"]) == ORDER_REFERENCE_LIMIT
    assert request["order"]["amount"] == Decimal("123456789.123")
    assert len(request["reference"]["id"]) <= REFERENCE_ID_LIMIT


def _urls(**changes: str) -> CallbackUrls:
    values = {"return_url": URLS.return_url, "cancel_url": URLS.cancel_url,
              "notification_url": URLS.notification_url}
    values.update(changes)
    return CallbackUrls(**values)


@pytest.mark.parametrize("upay_order_id, reference_id, urls", [
    ("x" * (ORDER_ID_LIMIT + 1), "1234", URLS),
    ("", "1234", URLS),
    ("s1-1234-1", "r" * (REFERENCE_ID_LIMIT + 1), URLS),
    ("s1-1234-1", "", URLS),
    ("s1-1234-1", "1234", _urls(return_url="https://bridge.example/return?store=s1")),
    ("s1-1234-1", "1234", _urls(cancel_url="https://bridge.example/cancel?")),
    ("s1-1234-1", "1234", _urls(notification_url="https://bridge.example/n?x=1")),
    ("s1-1234-1", "1234", _urls(return_url="https://bridge.example/" + "r" * URL_LIMIT)),
    ("s1-1234-1", "1234", _urls(notification_url="")),
    ("s1-1234-1", "1234", _urls(cancel_url="/relative/cancel")),
])
def test_invoice_request_rejects_programming_errors(upay_order_id: str, reference_id: str,
                                                    urls: CallbackUrls) -> None:
    with pytest.raises(ValueError):
        invoice_request_from_order(make_order(), upay_order_id=upay_order_id,
                                   reference_id=reference_id, options=InvoiceOptions(), urls=urls)


def test_invoice_request_accepts_urls_at_the_limit() -> None:
    base = "https://bridge.example/"
    url = base + "r" * (URL_LIMIT - len(base))
    request = invoice_request_from_order(make_order(), upay_order_id="x" * ORDER_ID_LIMIT,
                                         reference_id="r" * REFERENCE_ID_LIMIT,
                                         options=InvoiceOptions(), urls=_urls(return_url=url))
    assert request["returnUrl"] == url


@settings(max_examples=200)
@given(random_orders(), st.text(max_size=120), st.text(max_size=120), st.text(max_size=80))
def test_invoice_request_respects_every_text_limit(order: Order, first: str, last: str,
                                                   number: str) -> None:
    order = Order(external_id=order.external_id, number=number or "1", status=order.status,
                  currency=order.currency, total=order.total, lines=order.lines,
                  customer=Customer(first_name=first, last_name=last))
    request = invoice_request_from_order(order, upay_order_id="s1-1-1",
                                         reference_id=reference_id_for(order.number),
                                         options=InvoiceOptions(), urls=URLS)
    assert len(request["order"]["reference"]) <= ORDER_REFERENCE_LIMIT
    assert len(request["order"]["description"]) <= DESCRIPTION_LIMIT
    assert 0 < len(request["customer"]["name"]) <= CUSTOMER_NAME_LIMIT
    assert len(request["reference"]["id"]) <= REFERENCE_ID_LIMIT
    assert sum(p["price"] * p["quantity"] for p in request["products"]) == \
        request["order"]["amount"]
