"""Is this order paid? UPay's payment status, checked against what the bridge asked for.

Pure functions, no I/O. A notification or a customer's return only says "look now": the bridge
asks UPay's ``get-payment-status`` and accepts the payment only when UPay says ``CAPTURED`` for
one of this order's own attempts, for the order's amount in the order's currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Iterable, Mapping

from .money import quantize


class Outcome(str, Enum):
    CAPTURED = "captured"  # paid, and it is this order's payment
    NOT_PAID = "not_paid"  # declined, cancelled, failed: the order stays payable
    PENDING = "pending"  # the customer has not finished: ask again later
    MISMATCH = "mismatch"  # UPay says something that does not fit this order: suspicious


# UPay's result vocabulary (upay-api.md §5.3). Anything not listed counts as still pending.
NOT_PAID_RESULTS = frozenset({"NOT CAPTURED", "CANCELED", "CANCELLED", "ERROR", "FAILURE",
                              "FAILED", "VOIDED", "DECLINED"})


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str = ""
    track_id: str = ""
    payment_id: str = ""
    result: str = ""
    amount: Decimal | None = None
    currency: str = ""
    payment_type: str = ""
    upay_order_id: str = ""


def _text(tx: Mapping[str, Any], key: str) -> str:
    value = tx.get(key)
    return "" if value is None else str(value).strip()


def verdict_from_status(tx: Mapping[str, Any], *, amount: Decimal, currency: str,
                        attempt_ids: Iterable[str]) -> Verdict:
    result = _text(tx, "result").upper()
    upay_order_id = _text(tx, "merchant_requested_order_id")
    facts = dict(track_id=_text(tx, "track_id")[:64], payment_id=_text(tx, "payment_id")[:64],
                 result=result[:30], currency=_text(tx, "currency_type").upper()[:3],
                 payment_type=_text(tx, "payment_type")[:30], upay_order_id=upay_order_id[:40])
    if upay_order_id not in set(attempt_ids):
        return Verdict(Outcome.MISMATCH, f"UPay's transaction is for order id {upay_order_id!r}, "
                       "not one of this order's invoices", **facts)
    if result == "CAPTURED":
        try:
            paid = Decimal(_text(tx, "total_price"))
        except InvalidOperation:
            return Verdict(Outcome.MISMATCH, "UPay's total_price is not a number", **facts)
        if facts["currency"] != currency.upper():
            return Verdict(Outcome.MISMATCH, f"paid in {facts['currency'] or 'no currency'}, "
                           f"the order is in {currency}", amount=paid, **facts)
        if quantize(paid, currency) != quantize(amount, currency):
            return Verdict(Outcome.MISMATCH, f"paid {paid} {currency}, the order is for "
                           f"{quantize(amount, currency)} {currency}", amount=paid, **facts)
        if not facts["track_id"]:
            return Verdict(Outcome.MISMATCH, "UPay's transaction has no track id", **facts)
        return Verdict(Outcome.CAPTURED, amount=paid, **facts)
    if result in NOT_PAID_RESULTS:
        return Verdict(Outcome.NOT_PAID, f"UPay result {result}", **facts)
    return Verdict(Outcome.PENDING, f"UPay result {result or 'not yet known'}", **facts)


def next_check_delay(age_seconds: float, returned_recently: bool) -> float:
    """How long to wait before asking UPay again about an invoice that is still open.

    The status budget is small (30 calls a minute per key), so it goes where a payment is most
    likely: a customer who just came back from the payment page, then recent invoices; old ones
    are asked about rarely, and not at all after the store's expiry.
    """
    if returned_recently:
        return 15.0
    if age_seconds < 15 * 60:
        return 60.0
    if age_seconds < 2 * 3600:
        return 5 * 60.0
    if age_seconds < 24 * 3600:
        return 30 * 60.0
    return 2 * 3600.0
