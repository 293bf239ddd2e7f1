"""Money as ``Decimal``, rounded to each currency's minor unit.

Stores send money as decimal strings formatted with one global "number of decimals" setting,
not per currency (a KWD store left at 2 sends "12.50"), so every amount is re-quantized here to
the currency's own ISO 4217 exponent before it is compared or sent to UPay.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, getcontext, localcontext

_THREE = ("KWD", "BHD", "OMR", "JOD", "IQD", "LYD", "TND")
_ZERO = ("JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF", "XPF", "PYG", "RWF", "KMF",
         "GNF", "DJF", "BIF", "VUV")

# Currencies not listed have 2 minor-unit digits (see exponent()).
CURRENCY_EXPONENTS: dict[str, int] = {**{c: 3 for c in _THREE}, **{c: 0 for c in _ZERO}}

DEFAULT_EXPONENT = 2

# No order is worth a quadrillion; the bound keeps every quantized amount well inside the
# 28-digit default context, so quantize() can never raise InvalidOperation on parsed input.
_MAX_ABS = Decimal(10) ** 15

# Plain decimal notation as WooCommerce's wc_format_decimal() and Saleor produce it. The exponent
# form is allowed for numbers that went through a float's str(); its length is capped so that
# "1e999999999" cannot overflow the context.
# re.ASCII: "\d" would otherwise accept Arabic-Indic and other Unicode digits.
_AMOUNT_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,4})?", re.ASCII)


def exponent(currency: str) -> int:
    return CURRENCY_EXPONENTS.get(currency.strip().upper(), DEFAULT_EXPONENT)


def quantize(amount: Decimal, currency: str) -> Decimal:
    amount = Decimal(amount)
    if not amount.is_finite():
        raise ValueError(f"cannot quantize a non-finite amount: {amount}")
    result = amount.quantize(Decimal(1).scaleb(-exponent(currency)), rounding=ROUND_HALF_UP)
    # "-0.000" would be sent as a negative zero; it means zero.
    return abs(result) if result == 0 else result


def parse_amount(value: object) -> Decimal:
    # Stores send amounts as strings, so an exact str is tested for first and read here without
    # the type tests and the call below (it is none of those types; a str subclass reaches the
    # same reading through _decimal_from_text).
    if type(value) is str:
        text = value.strip()
        # ASCII digits with at most one point ("12.500") match _AMOUNT_RE; telling them apart
        # costs well under half of the regex, which still decides everything else.
        digits = text.replace(".", "", 1)
        if digits.isascii() and digits.isdigit():
            if len(text) <= 15:  # plain digits: finite, and this short, below _MAX_ABS
                return Decimal(text)
        elif not _AMOUNT_RE.fullmatch(text):
            raise ValueError(f"not an amount: {value!r}")
        try:
            amount = Decimal(text)
        except InvalidOperation as exc:  # the checks above should make this unreachable
            raise ValueError(f"not an amount: {value!r}") from exc
    # bool is an int subclass: True must not become 1.
    elif value is None or isinstance(value, bool):
        raise ValueError(f"not an amount: {value!r}")
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        # str() gives the shortest repr that round-trips, so 0.1 becomes Decimal("0.1"), not the
        # binary expansion Decimal(0.1) would give.
        amount = _decimal_from_text(str(value), value)
    elif isinstance(value, str):
        amount = _decimal_from_text(value.strip(), value)
    else:
        raise ValueError(f"not an amount: {type(value).__name__} {value!r}")
    if not amount.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    if abs(amount) >= _MAX_ABS:
        raise ValueError(f"amount out of range: {value!r}")
    return amount


def _decimal_from_text(text: str, original: object) -> Decimal:
    if not _AMOUNT_RE.fullmatch(text):
        raise ValueError(f"not an amount: {original!r}")
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # the regex should make this unreachable
        raise ValueError(f"not an amount: {original!r}") from exc


# The digits an exact sum may need before the terms are refused as not amounts: a line's total
# plus its tax with a PHP float's leftovers (1.7763568394002505e-15) needs about 35.
_MAX_SUM_DIGITS = 1000


def add_exact(*amounts: Decimal) -> Decimal:
    """The exact sum. The default context keeps 28 digits, so "1.00049999999999999999999999999999"
    plus "0" would be rounded here to 1.0005 and then again to the currency (1.001, not 1.000).
    Raises ValueError when the terms are too far apart to add in a sane number of digits (the
    JSON number 1e-99999999999 next to 1: a hundred billion digits)."""
    if len(amounts) == 1:
        # One amount: nothing to add. Its span is its number of digits plus one, and str()
        # writes at least every digit, so a short text needs no closer look.
        (only,) = amounts
        if not only:
            return Decimal(0)
        if only.is_finite() and len(str(only)) < _MAX_SUM_DIGITS:
            return only
    terms = [a for a in amounts if a]  # a zero, whatever its exponent, adds nothing
    if not terms:
        return Decimal(0)
    # One or two terms, spelt out: every line adds its total and its (mostly zero) tax.
    n = len(terms)
    if n == 1:
        top, bottom = terms[0].adjusted(), _exponent(terms[0])
    elif n == 2:
        first, second = terms
        top = max(first.adjusted(), second.adjusted())
        bottom = min(_exponent(first), _exponent(second))
    else:
        top = max([a.adjusted() for a in terms])
        bottom = min([_exponent(a) for a in terms])
    span = top - bottom + 2
    if span > _MAX_SUM_DIGITS:
        raise ValueError("amounts too far apart in magnitude to add exactly")
    if n == 1:
        return terms[0]  # nothing to add, so no context is involved
    # Every line adds a total and its tax, and a private context for that costs more than the
    # addition itself. The caller's context serves as is when no addition can signal anything
    # in it: then it computes exactly what a copy with the same precision would, and the copy's
    # flags, which are all it could differ in, stay clear as well. With n terms every partial sum
    # is below n * 10**(top + 1) and a multiple of 10**bottom, so its coefficient has at most
    # span - 1 + ceil(log10(n)) <= span + n - 2 digits: no rounding (Inexact, Rounded). Its
    # exponent is at least bottom >= Emin: not subnormal (Subnormal, Underflow), and a zero is
    # not clamped (Clamped). Its exponent is at most top and its adjusted exponent at most
    # top + n - 1, both below Etop <= Emax: no overflow, no clamping (Overflow, Clamped).
    context = getcontext()
    if span + n - 2 <= context.prec and bottom >= context.Emin and top + n <= context.Etop():
        return sum(terms[1:], terms[0])
    with localcontext() as ctx:
        ctx.prec = max(ctx.prec, span)
        return sum(terms[1:], terms[0])


def _exponent(amount: Decimal) -> int:
    """``int(amount.as_tuple().exponent)``, read off str() when that is plain notation: as_tuple()
    builds a named tuple of every digit, which takes twice as long as this."""
    text = str(amount)
    # A finite Decimal is written without an exponent only when its exponent is <= 0, and then
    # with exactly -exponent digits after the point (none and no point for 0). The exponent
    # letter is "e" in a context with capitals=0.
    if amount.is_finite() and "E" not in text and "e" not in text:
        point = text.find(".")
        return 0 if point < 0 else point + 1 - len(text)
    return int(amount.as_tuple().exponent)


def format_amount(amount: Decimal, currency: str) -> str:
    # "f" never switches to exponent notation, whatever the Decimal's internal exponent.
    return format(quantize(amount, currency), "f")


def amounts_equal(a: Decimal, b: Decimal, currency: str) -> bool:
    return quantize(a, currency) == quantize(b, currency)
