"""Reading store payloads: the checks every platform's parser shares."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import msgspec
import simplejson

from ..errors import InvalidPayloadError, MalformedBodyError
from ..json_depth import MAX_DEPTH, too_deep


# What simplejson.loads(body, use_decimal=True) builds on every call, built once: a decoder keeps
# no state between documents (the key memo is emptied after each), and simplejson shares its own
# default decoder between threads the same way.
_DECODER = simplejson.JSONDecoder(parse_float=Decimal)
# msgspec reads the same documents in about half the time (a webhook body of 3 kB: 6 against
# 14.5 µs, on the request's path) but is stricter: it refuses a byte-order mark, a lone surrogate
# escape (\ud800), NaN and Infinity, which simplejson takes. So it only goes first: every body it
# refuses is decoded by simplejson, which decides, and whose messages are the errors.
# tests/test_decode_equivalence.py holds the two to the same values for what msgspec takes.
_FAST_DECODER = msgspec.json.Decoder(float_hook=Decimal)


def decode_json(body: bytes | str) -> Any:
    """JSON with every number as ``Decimal``: money never passes through a float."""
    try:
        value = _FAST_DECODER.decode(body)
    except Exception:  # noqa: BLE001 - any refusal: simplejson decides (see above)
        value = _decode_slowly(body)
    if too_deep(value, text=body):
        raise MalformedBodyError(f"body is JSON nested too deeply (more than {MAX_DEPTH} "
                                 "levels)")
    return value


def _decode_slowly(body: bytes | str) -> Any:
    try:
        return _DECODER.decode(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBodyError(f"body is not valid JSON: {exc}") from None
    except ArithmeticError:
        # A number whose exponent is past what Decimal holds (1e99999999999999999999) raises
        # decimal.InvalidOperation, which is not a ValueError.
        raise MalformedBodyError("body is not valid JSON: a number is out of range") from None
    except RecursionError:
        # The parser recurses per nesting level and stops at Python's recursion limit.
        raise MalformedBodyError("body is JSON nested too deeply") from None


# JSON can spell characters no database column holds: NUL (\u0000; PostgreSQL's text refuses it)
# and a lone UTF-16 surrogate (\ud800 without its pair; no UTF-8 encoding exists, so SQLite and
# PostgreSQL both fail). A pair (\ud83d\ude00) decodes to one character and is fine.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` without the characters no database column can hold (see above)."""
    # NUL and surrogates are not printable, so printable text (nearly every string sent, in any
    # script) has none; isprintable() runs in a fraction of the substitution's time. A str
    # subclass still goes through sub(), which gives a plain str.
    if type(text) is str and text.isprintable():
        return text
    return _UNSTORABLE.sub("", text)


def storable_id(text: str, where: str, key: str) -> str:
    """An identifier as sent; InvalidPayloadError when it has a character no column holds."""
    if type(text) is str and text.isprintable():  # neither NUL nor a surrogate (see storable)
        return text
    if _UNSTORABLE.search(text):
        raise InvalidPayloadError(f"{where}: '{key}' has a character that is not text "
                                  f"(NUL or a lone surrogate): {_short(text)}")
    return text


#: UPay takes a quantity as an integer; no real order line comes near this.
MAX_QUANTITY = 10 ** 9


def quantity(value: Any, where: str) -> int:
    # Decoded with Decimal numbers, a float 2.0 (PHP's json_encode, a Saleor Int) arrives as
    # Decimal("2.0"): integral, so it is still a count. Its size is checked before int(): the
    # JSON number 1e100000000 is a small Decimal but int() of it would run for minutes.
    original = value
    if isinstance(value, Decimal) and value.is_finite() and value.adjusted() < 10 and \
            value == value.to_integral_value():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_QUANTITY:
        raise InvalidPayloadError(f"{where}: 'quantity' must be an integer from 1 to "
                                  f"{MAX_QUANTITY}, got {_short(original)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def objects(container: dict, key: str, where: str) -> list[tuple[str, dict]]:
    """The objects of a list field, each with its place for error messages; [] when absent."""
    return [(f"{where} {key}[{index}]", item)
            for index, item in enumerate(checked_objects(container, key, where))]


def checked_objects(container: dict, key: str, where: str) -> list[dict]:
    """The objects of a list field, checked to be objects; [] when absent. For a caller that
    writes an object's place only when it has an error to report."""
    raw = container.get(key)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidPayloadError(f"{where}: '{key}' must be a list, got {type(raw).__name__}")
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidPayloadError(f"{where} {key}[{index}] must be an object, got "
                                      f"{type(item).__name__}")
    return raw
