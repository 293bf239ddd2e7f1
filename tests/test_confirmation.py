"""The pure verdict on UPay's payment status, and the reconciliation schedule."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bridge.confirmation import Outcome, next_check_delay, verdict_from_status

IDS = ["sabc-7-1", "sabc-7-2"]


def tx(**overrides):
    base = {"result": "CAPTURED", "merchant_requested_order_id": "sabc-7-2", "total_price": "12.500",
            "currency_type": "KWD", "track_id": "T" * 32, "payment_id": "100326010000027219",
            "payment_type": "knet"}
    base.update(overrides)
    return base


@pytest.mark.parametrize("overrides,outcome,reason", [
    ({}, Outcome.CAPTURED, ""),
    ({"merchant_requested_order_id": "sabc-7-1"}, Outcome.CAPTURED, ""),  # a superseded attempt
    ({"total_price": "12.5"}, Outcome.CAPTURED, ""),  # compared as decimals
    ({"total_price": "12.499"}, Outcome.MISMATCH, "paid 12.499"),
    ({"total_price": "125.000"}, Outcome.MISMATCH, "paid 125.000"),
    ({"total_price": "twelve"}, Outcome.MISMATCH, "not a number"),
    ({"currency_type": "USD"}, Outcome.MISMATCH, "paid in USD"),
    ({"merchant_requested_order_id": "sother-7-1"}, Outcome.MISMATCH, "not one of"),
    ({"merchant_requested_order_id": None}, Outcome.MISMATCH, "not one of"),
    ({"track_id": None}, Outcome.MISMATCH, "no track id"),
    ({"result": "NOT CAPTURED"}, Outcome.NOT_PAID, "NOT CAPTURED"),
    ({"result": "CANCELED"}, Outcome.NOT_PAID, "CANCELED"),
    ({"result": "cancelled"}, Outcome.NOT_PAID, "CANCELLED"),
    ({"result": "PENDING"}, Outcome.PENDING, "PENDING"),
    ({"result": None}, Outcome.PENDING, "not yet known"),
    ({"result": "AUTHORIZED"}, Outcome.PENDING, "AUTHORIZED"),
    ({"result": "SUCCESS"}, Outcome.PENDING, "SUCCESS"),  # only CAPTURED is paid
])
def test_verdict(overrides, outcome, reason):
    verdict = verdict_from_status(tx(**overrides), amount=Decimal("12.500"), currency="KWD",
                                  attempt_ids=IDS)
    assert verdict.outcome == outcome
    assert reason in verdict.reason


def test_verdict_at_two_decimals():
    verdict = verdict_from_status(tx(currency_type="USD", total_price="10.000"),
                                  amount=Decimal("10"), currency="USD", attempt_ids=IDS)
    assert verdict.outcome == Outcome.CAPTURED and verdict.amount == Decimal("10.000")


def test_checks_back_off_with_age_and_favour_returned_customers():
    ages = [60, 20 * 60, 3 * 3600, 2 * 86400]
    delays = [next_check_delay(age, returned_recently=False) for age in ages]
    assert delays == sorted(delays) and delays[0] == 60 and delays[-1] == 7200
    assert next_check_delay(3 * 3600, returned_recently=True) < delays[0]
