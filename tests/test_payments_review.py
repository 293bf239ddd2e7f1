"""Review of payment confirmation: bugs found and fixed, each reproduced against the fakes."""

from __future__ import annotations

import pytest
import requests

from bridge import db
from bridge.pipeline import order_events

from .conftest import wait_for
from .test_payments import _both_invoices_paid, invoiced, notes_with, payments

BOTH_LAYOUTS = True


@pytest.fixture
def shop(fake_wc):
    fake_wc.add_product(101, "Arabic Coffee 250g", "4.500", sku="COF-250")
    return fake_wc


def _reconcile_now(bridge, pk):
    with bridge.runtime.engine.begin() as conn:
        conn.execute(db.orders.update().where(db.orders.c.id == pk).values(next_check_at=None))
    assert bridge.runtime.payments.reconcile() == 1


def _status_calls(fake_upay):
    return sum("get-payment-status" in r.path for r in fake_upay.requests)


def test_reconcile_turns_past_a_declined_newest_invoice(bridge, connect_store, shop, fake_upay):
    """The customer paid the invoice whose create answer was lost (its notification's check
    failed for good), and was declined on the newest one. A check with an answer other than
    "pending" (here "not paid", then "already recorded") did not count, so reconcile's rotation
    stayed on the newest invoice for ever and the real payment was never found."""
    connect_store(bridge)
    order, row, first, second, lost = _both_invoices_paid(bridge, shop, fake_upay)
    # One reconcile pass while nothing is paid yet: a pending answer (counted).
    before = _status_calls(fake_upay)
    _reconcile_now(bridge, row.id)
    wait_for(lambda: bridge.order(order["id"]).check_count == 1)
    assert _status_calls(fake_upay) == before + 1
    # The customer pays the lost invoice; the check its notification causes fails for good.
    fake_upay.faults.add("status", "rejected", message="Transaction is being processed")
    fake_upay.complete_payment(lost.invoice_id, "CAPTURED")
    wait_for(lambda: any(e["kind"] == "status_error"
                         for e in order_events(bridge.runtime.engine, row.id)))
    # ... and is declined on the newest invoice (that notification is lost).
    fake_upay.faults.add("notification", "drop")
    fake_upay.complete_payment(second.invoice_id, "NOT CAPTURED")
    for _ in range(4):  # reconcile passes, each due at once here
        n = _status_calls(fake_upay)
        _reconcile_now(bridge, row.id)
        wait_for(lambda: _status_calls(fake_upay) > n)
        try:
            wait_for(lambda: bridge.order(order["id"]).payment_state != "open", timeout=3)
            break
        except AssertionError:
            continue
    assert bridge.order(order["id"]).payment_state == "paid"
    wait_for(lambda: shop.order(order["id"])["status"] == "processing")
    paid = [p for p in payments(bridge, row.id) if p.result == "CAPTURED"]
    assert [p.track_id for p in paid] == [lost.track_id]


def test_lone_surrogates_in_a_json_notification_are_not_a_500(bridge, connect_store, shop,
                                                                fake_upay, caplog):
    """JSON can carry a lone surrogate ("\\ud800"), which no database or URL can encode: in
    requested_order_id it made the notification endpoint answer 500; in the track id of a
    notification naming an invoice whose create answer was lost, it crashed the status checks."""
    record = connect_store(bridge)
    fake_upay.faults.add("charge", "timeout_after_create", seconds=3)
    order, row = invoiced(bridge, shop)
    first, second = bridge.attempts(row.id)
    assert first.invoice_id is None
    url = f"{bridge.url}/upay/notify/{record.id}"
    headers = {"Content-Type": "application/json"}
    resp = requests.post(url, data='{"requested_order_id": "\\ud800x", "result": "CAPTURED"}',
                         headers=headers, timeout=5)
    assert resp.status_code == 200 and resp.json()["success"] is True
    before = _status_calls(fake_upay)
    resp = requests.post(url, data='{"requested_order_id": "%s", "track_id": "T\\udfff"}'
                         % first.upay_order_id, headers=headers, timeout=5)
    assert resp.status_code == 200
    # The check runs and ends with UPay's answer (no such transaction), not an exception.
    wait_for(lambda: _status_calls(fake_upay) > before)
    wait_for(lambda: any(e["kind"] == "status_error"
                         for e in order_events(bridge.runtime.engine, row.id)))
    assert "surrogates not allowed" not in caplog.text
    assert bridge.order(order["id"]).payment_state == "open"


def test_second_payment_whose_notification_merged_is_still_flagged(bridge, connect_store, shop,
                                                                  fake_upay):
    """The order is paid on its newest invoice, and UPay repeats that notification: the repeat
    queues a check after the gap. The customer then also pays the superseded invoice (whose
    create answer was lost). Its notification merged into the queued check, which asks about
    the newest invoice only; reconcile does not look at a paid order: the second payment was
    never checked and the double payment never flagged."""
    connect_store(bridge)
    order, row, first, second, lost = _both_invoices_paid(bridge, shop, fake_upay)
    fake_upay.faults.add("notification", "duplicate", times=2)
    fake_upay.complete_payment(second.invoice_id, "CAPTURED")
    wait_for(lambda: bridge.order(order["id"]).payment_state == "paid")
    fake_upay.complete_payment(lost.invoice_id, "CAPTURED")
    wait_for(lambda: bridge.order(order["id"]).payment_state == "flagged", timeout=40)
    assert sorted(p.track_id for p in payments(bridge, row.id)) == sorted(
        [lost.track_id, fake_upay.invoices[second.invoice_id].track_id])
    wait_for(lambda: [n for n in shop.notes(order["id"]) if "paid twice" in n["note"]
                      or "second confirmed" in n["note"]])


def test_reopened_note_survives_a_lost_answer_to_the_reopening(bridge, connect_store, shop,
                                                               fake_upay):
    """The store cancelled the unpaid order, then the payment came. The PUT that re-opens it
    took effect but its answer was lost: the retry finds the order paid ("already_paid"). The
    note telling the merchant the order was re-opened is still written, once."""
    connect_store(bridge, paid_after_cancel="reopen")
    order, row = invoiced(bridge, shop)
    shop.set_order_status(order["id"], "cancelled", "Unpaid order cancelled - time limit reached.")
    # The write happens; the answer comes after the bridge's store read timeout (2 s in tests).
    shop.faults.add("timeout", path_contains=f"orders/{order['id']}", method="PUT", seconds=3.0)
    fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    wait_for(lambda: notes_with(shop, order["id"], "re-opened"), timeout=60)
    assert shop.order(order["id"])["status"] == "processing"
    wait_for(lambda: notes_with(shop, order["id"], "Payment confirmed"), timeout=60)
    wait_for(lambda: bridge.runtime.jobs.depth() == 0)
    assert len(notes_with(shop, order["id"], "re-opened")) == 1
