from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.money import (
    CURRENCY_EXPONENTS,
    add_exact,
    amounts_equal,
    exponent,
    format_amount,
    parse_amount,
    quantize,
)


@pytest.mark.parametrize("currency, expected", [
    ("KWD", 3), ("BHD", 3), ("OMR", 3), ("JOD", 3), ("IQD", 3), ("LYD", 3), ("TND", 3),
    ("JPY", 0), ("KRW", 0), ("VND", 0), ("CLP", 0), ("ISK", 0), ("UGX", 0), ("XAF", 0),
    ("XOF", 0), ("XPF", 0), ("PYG", 0), ("RWF", 0), ("KMF", 0), ("GNF", 0), ("DJF", 0),
    ("BIF", 0), ("VUV", 0),
    ("USD", 2), ("SAR", 2), ("EUR", 2), ("QAR", 2), ("AED", 2), ("XYZ", 2),
    ("kwd", 3), (" jpy ", 0),
])
def test_exponent(currency: str, expected: int) -> None:
    assert exponent(currency) == expected


def test_currency_exponents_table_only_lists_non_default() -> None:
    assert set(CURRENCY_EXPONENTS.values()) == {0, 3}
    assert len(CURRENCY_EXPONENTS) == 7 + 16


@pytest.mark.parametrize("amount, currency, expected", [
    ("12.5", "KWD", "12.500"),
    ("12.50", "KWD", "12.500"),
    ("0.0005", "KWD", "0.001"),  # half up, not half even
    ("0.0004", "KWD", "0.000"),
    ("2.345", "USD", "2.35"),
    ("2.355", "USD", "2.36"),
    ("2.344999", "USD", "2.34"),
    ("-2.345", "USD", "-2.35"),  # half up means away from zero
    ("1499.5", "JPY", "1500"),
    ("1500", "JPY", "1500"),
    ("7", "KWD", "7.000"),
    ("1E+3", "KWD", "1000.000"),
    ("-0.0001", "KWD", "0.000"),
])
def test_quantize(amount: str, currency: str, expected: str) -> None:
    result = quantize(Decimal(amount), currency)
    assert str(result) == expected
    assert result.as_tuple().exponent == -exponent(currency)


def test_quantize_negative_zero_is_plain_zero() -> None:
    assert str(quantize(Decimal("-0.000"), "KWD")) == "0.000"
    assert not quantize(Decimal("-0.0001"), "KWD").is_signed()


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_quantize_rejects_non_finite(bad: Decimal) -> None:
    with pytest.raises(ValueError):
        quantize(bad, "KWD")


@pytest.mark.parametrize("value, expected", [
    ("12.500", Decimal("12.500")),
    ("12.50", Decimal("12.50")),
    (" 12.5 ", Decimal("12.5")),
    ("-1.000", Decimal("-1.000")),
    ("+3", Decimal("3")),
    (".5", Decimal("0.5")),
    ("5.", Decimal("5")),
    ("0", Decimal("0")),
    (12, Decimal("12")),
    (0, Decimal("0")),
    (-7, Decimal("-7")),
    (0.1, Decimal("0.1")),  # via str(), not the binary expansion
    (12.5, Decimal("12.5")),
    (1e-05, Decimal("0.00001")),
    (Decimal("4.25"), Decimal("4.25")),
])
def test_parse_amount(value: object, expected: Decimal) -> None:
    result = parse_amount(value)
    assert isinstance(result, Decimal)
    assert result == expected


def test_parse_amount_keeps_the_places_it_was_given() -> None:
    assert str(parse_amount("12.500")) == "12.500"
    assert str(parse_amount(0.1)) == "0.1"


@pytest.mark.parametrize("bad", [
    True, False, None, "", "   ", "abc", "12,5", "1,000.00", "12.5 KWD", "KWD 12.5", "--1",
    "1.2.3", "NaN", "nan", "Infinity", "-Infinity", "inf", "sNaN", "0x10", "1_000", "١٢",
    float("nan"), float("inf"), float("-inf"), Decimal("NaN"), Decimal("Infinity"),
    [], {}, b"12", object(), "1e99999", Decimal("1E+400"), 10 ** 20,
])
def test_parse_amount_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_amount(bad)


@pytest.mark.parametrize("amount, currency, expected", [
    (Decimal("12.5"), "KWD", "12.500"),
    (Decimal("12.5"), "USD", "12.50"),
    (Decimal("1500.4"), "JPY", "1500"),
    (Decimal("1E+2"), "KWD", "100.000"),
    (Decimal("0"), "BHD", "0.000"),
])
def test_format_amount(amount: Decimal, currency: str, expected: str) -> None:
    assert format_amount(amount, currency) == expected


@pytest.mark.parametrize("a, b, currency, expected", [
    ("12.5", "12.500", "KWD", True),
    ("12.50", "12.5004", "KWD", True),
    ("12.50", "12.501", "KWD", False),
    ("10.004", "10.00", "USD", True),
    ("10.005", "10.00", "USD", False),
    ("1500.4", "1500", "JPY", True),
])
def test_amounts_equal(a: str, b: str, currency: str, expected: bool) -> None:
    assert amounts_equal(Decimal(a), Decimal(b), currency) is expected


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-10 ** 12,
                   max_value=10 ** 12, places=6))
def test_parse_amount_round_trips_decimal_text(value: Decimal) -> None:
    assert parse_amount(str(value)) == value
    assert parse_amount(format(value, "f")) == value


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12))
def test_parse_amount_of_float_is_its_shortest_repr(value: float) -> None:
    assert parse_amount(value) == Decimal(repr(value))


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-10 ** 12,
                   max_value=10 ** 12),
       st.sampled_from(["KWD", "USD", "JPY"]))
def test_quantize_is_idempotent_and_exact_in_places(value: Decimal, currency: str) -> None:
    once = quantize(value, currency)
    assert quantize(once, currency) == once
    assert once.as_tuple().exponent == -exponent(currency)
    assert abs(once - value) <= Decimal(1).scaleb(-exponent(currency)) / 2


def test_add_exact_keeps_every_digit() -> None:
    a = Decimal("1.00049999999999999999999999999999")
    assert add_exact(a, Decimal("0")) == a
    assert add_exact(Decimal("999999999999999.999"), Decimal("1.7763568394002505e-15")) == \
        Decimal("999999999999999.9990000000000017763568394002505")
    assert add_exact() == 0 and add_exact(Decimal("0E-99999999999"), Decimal("2.5")) == Decimal("2.5")


def test_add_exact_refuses_terms_too_far_apart() -> None:
    with pytest.raises(ValueError, match="too far apart"):
        add_exact(Decimal(1), Decimal("1e-99999999999"))


@given(st.lists(st.decimals(allow_nan=False, allow_infinity=False, places=30,
                            min_value=-10 ** 14, max_value=10 ** 14), max_size=5))
def test_add_exact_is_the_exact_sum(terms: list[Decimal]) -> None:
    from fractions import Fraction
    assert Fraction(add_exact(*terms)) == sum(map(Fraction, terms))
