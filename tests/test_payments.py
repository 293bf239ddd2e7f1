"""Payment confirmation end to end: UPay's notification, the customer's return, reconciliation,
through the real HTTP interfaces of the bridge, the fake UPay and the fake WooCommerce store."""

from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal

import pytest
import requests

from bridge import db
from bridge.pipeline import order_events

from .conftest import wait_for
from .test_pipeline import BILLING

# Every test runs on the embedded default and on PostgreSQL + Redis with a worker process.
BOTH_LAYOUTS = True


@pytest.fixture
def shop(fake_wc):
    fake_wc.add_product(101, "Arabic Coffee 250g", "4.500", sku="COF-250")
    return fake_wc


def invoiced(bridge, shop, **order_kwargs):
    order = shop.create_order([{"product_id": 101, "quantity": 2}], billing=BILLING, **order_kwargs)
    shop.deliver_queued()
    return order, bridge.wait_state(order["id"], "done")


def payments(bridge, pk):
    with bridge.runtime.engine.connect() as conn:
        return conn.execute(db.payments.select().where(db.payments.c.order_id == pk)).all()


def notes_with(shop, order_id, text):
    return [n for n in shop.notes(order_id) if text in n["note"]]


def test_paid_invoice_marks_the_order_paid_once(bridge, connect_store, shop, fake_upay):
    connect_store(bridge)
    order, row = invoiced(bridge, shop)
    redirect = fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    wait_for(lambda: shop.order(order["id"])["status"] == "processing")
    invoice = fake_upay.invoices[row.invoice_id]
    paid = shop.order(order["id"])
    assert paid["transaction_id"] == invoice.payment_id and paid["date_paid"]
    wait_for(lambda: notes_with(shop, order["id"], "Payment confirmed"))
    [note] = notes_with(shop, order["id"], "Payment confirmed")
    for detail in (invoice.payment_id, invoice.track_id, "9.000 KWD", "knet"):
        assert detail in note["note"]
    assert note["customer_note"] is False
    # the customer's return page waits for the confirmed status, then goes to the store
    page = requests.get(redirect, timeout=5)
    assert page.status_code == 200 and "/upay/status/" in page.text
    token = redirect.split("/upay/return/")[1].split("?")[0].split("/")[1]
    status = requests.get(f"{bridge.url}/upay/status/{row.store_id}/{token}", timeout=5).json()
    assert status["state"] == "paid"
    assert status["redirect"] == (f"{shop.base_url}/checkout/order-received/{order['id']}/"
                                  f"?key={order['order_key']}")
    assert bridge.order(order["id"]).payment_state == "paid"


def test_cancelled_payment_leaves_the_order_payable(bridge, connect_store, shop, fake_upay):
    connect_store(bridge)
    order, row = invoiced(bridge, shop)
    redirect = fake_upay.complete_payment(row.invoice_id, "CANCELED")
    assert "/upay/cancel/" in redirect
    page = requests.get(redirect, timeout=5)
    assert page.status_code == 200 and "not completed" in page.text
    wait_for(lambda: notes_with(shop, order["id"], "did not complete"))
    assert shop.order(order["id"])["status"] == "pending"
    assert bridge.order(order["id"]).payment_state == "open"


def test_forged_notification_changes_nothing(bridge, connect_store, shop, fake_upay, caplog):
    record = connect_store(bridge)
    order, row = invoiced(bridge, shop)
    caplog.set_level(logging.WARNING)
    forged = {"payment_id": "100326010000027219", "result": "CAPTURED", "track_id": "F" * 32,
              "requested_order_id": row.upay_order_id, "invoice_id": "784"}
    resp = requests.post(f"{bridge.url}/upay/notify/{record.id}", data=forged, timeout=5)
    assert resp.status_code == 200 and resp.json() == {"success": True, "message": "Success"}
    unknown = dict(forged, requested_order_id="sother-1-1")
    assert requests.post(f"{bridge.url}/upay/notify/{record.id}", json=unknown,
                         timeout=5).status_code == 200
    # The web side warns of the unknown order id; the worker (maybe another process) checks
    # the forged one with UPay and records what it found.
    wait_for(lambda: "not an invoice of this store" in caplog.text)
    wait_for(lambda: any(e["kind"] == "suspicious" and "claimed CAPTURED" in e["message"]
                         for e in order_events(bridge.runtime.engine, row.id)))
    time.sleep(0.5)
    assert shop.order(order["id"])["status"] == "pending"
    assert bridge.order(order["id"]).payment_state == "open"
    assert payments(bridge, row.id) == []
    assert len(shop.notes(order["id"])) == 1  # the payment link only


def test_lost_notification_is_found_by_the_reconciler(bridge, connect_store, shop, fake_upay):
    connect_store(bridge)
    order, row = invoiced(bridge, shop)
    fake_upay.faults.add("notification", "drop")
    fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    time.sleep(0.5)
    assert shop.order(order["id"])["status"] == "pending"
    assert bridge.runtime.payments.reconcile() == 1
    wait_for(lambda: shop.order(order["id"])["status"] == "processing")
    assert [p.source for p in payments(bridge, row.id)] == ["reconcile"]


def test_notification_and_return_racing_make_one_transition(bridge, connect_store, shop,
                                                            fake_upay):
    connect_store(bridge)
    order, row = invoiced(bridge, shop)
    fake_upay.faults.add("notification", "duplicate", times=3)
    redirect = fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    threads = [threading.Thread(target=requests.get, args=(redirect,), kwargs={"timeout": 5})
               for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: notes_with(shop, order["id"], "Payment confirmed"))
    wait_for(lambda: bridge.runtime.jobs.depth() == 0)
    time.sleep(1)
    assert len(notes_with(shop, order["id"], "Payment confirmed")) == 1
    assert len(payments(bridge, row.id)) == 1
    changes = [n for n in shop.notes(order["id"]) if "Order status changed" in n["note"]]
    assert len(changes) == 1  # WooCommerce saw one transition


def test_duplicate_notifications_make_one_note(bridge, connect_store, shop, fake_upay):
    connect_store(bridge)
    order, row = invoiced(bridge, shop)
    fake_upay.faults.add("notification", "duplicate", times=10)
    fake_upay.complete_payment(row.invoice_id, "NOT CAPTURED")
    wait_for(lambda: notes_with(shop, order["id"], "did not complete"))
    wait_for(lambda: bridge.runtime.jobs.depth() == 0)
    time.sleep(1)
    assert len(notes_with(shop, order["id"], "did not complete")) == 1
    assert shop.order(order["id"])["status"] == "pending"


@pytest.mark.parametrize("policy,status,words", [("reopen", "processing", "re-opened"),
                                                  ("flag", "cancelled", "refund the customer")])
def test_paid_after_the_store_cancelled(bridge, connect_store, shop, fake_upay, policy, status,
                                        words):
    connect_store(bridge, paid_after_cancel=policy)
    order, row = invoiced(bridge, shop)
    shop.set_order_status(order["id"], "cancelled", "Unpaid order cancelled - time limit reached.")
    fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    wait_for(lambda: notes_with(shop, order["id"], words))
    assert shop.order(order["id"])["status"] == status
    assert notes_with(shop, order["id"], "Payment confirmed")


@pytest.mark.parametrize("field,value,words", [("amount", Decimal("1.000"), "paid 1.000 KWD"),
                                               ("currency", "USD", "paid in USD")])
def test_amount_or_currency_mismatch_is_flagged_not_paid(bridge, connect_store, shop, fake_upay,
                                                         field, value, words):
    connect_store(bridge)
    order, row = invoiced(bridge, shop)
    setattr(fake_upay.invoices[row.invoice_id], field, value)
    fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    wait_for(lambda: notes_with(shop, order["id"], "does not match"))
    assert words in notes_with(shop, order["id"], "does not match")[0]["note"]
    assert shop.order(order["id"])["status"] == "pending"
    assert bridge.order(order["id"]).payment_state == "flagged"


def test_payment_on_a_superseded_attempt_counts_and_a_second_is_flagged(bridge, connect_store,
                                                                         shop, fake_upay):
    connect_store(bridge)
    fake_upay.faults.add("charge", "timeout_after_create", seconds=3)
    order, row = invoiced(bridge, shop)
    first, second = bridge.attempts(row.id)
    assert first.state == "unknown" and first.invoice_id is None
    lost = next(i for i in fake_upay.invoices.values() if i.merchant_order_id == first.upay_order_id)
    fake_upay.complete_payment(lost.invoice_id, "CAPTURED")  # the customer paid the lost invoice
    wait_for(lambda: shop.order(order["id"])["status"] == "processing")
    assert shop.order(order["id"])["transaction_id"] == fake_upay.invoices[lost.invoice_id].payment_id
    fake_upay.complete_payment(second.invoice_id, "CAPTURED")  # and then the other one too
    wait_for(lambda: notes_with(shop, order["id"], "paid twice") or
             notes_with(shop, order["id"], "second confirmed"))
    assert bridge.order(order["id"]).payment_state == "flagged"
    assert len(payments(bridge, row.id)) == 2


def test_arabic_return_page_is_right_to_left(bridge, connect_store, shop, fake_upay):
    from bridge.models import Language
    connect_store(bridge, language=Language.AR)
    order, row = invoiced(bridge, shop)
    page = requests.get(fake_upay.complete_payment(row.invoice_id, "CAPTURED"), timeout=5)
    assert 'dir="rtl"' in page.text and 'lang="ar"' in page.text


def test_rate_limiter_keeps_every_caller_under_the_limit(bridge_factory, connect_store, shop,
                                                         fake_upay):
    # time compressed: 5 calls per 2 s window stands for UPay's 30 per minute
    bridge = bridge_factory(status_rate_limit=5, status_rate_window=2.0)
    fake_upay.status_rate_limit = 5
    fake_upay.clock = lambda: time.monotonic() * 30  # the fake's 60 s window is 2 s here
    connect_store(bridge)
    orders = []
    for _ in range(16):
        orders.append(invoiced(bridge, shop))
    for _, row in orders[:4]:  # customers coming back at once, plus the reconciler
        fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    started = time.monotonic()
    while time.monotonic() - started < 7:
        bridge.runtime.payments.reconcile()
        time.sleep(0.3)
    calls = sorted(r.at for r in fake_upay.requests if "get-payment-status" in r.path)
    assert len(calls) >= 10
    for i, at in enumerate(calls):
        in_window = [c for c in calls[i:] if c - at < 2.0]
        assert len(in_window) <= 5, f"{len(in_window)} status calls within 2 s"
    statuses = [r for r in fake_upay.requests if "get-payment-status" in r.path]
    assert all(getattr(r, "status_code", 201) != 429 for r in statuses)
    for order, row in orders[:4]:
        wait_for(lambda: shop.order(order["id"])["status"] == "processing", timeout=30)


def test_reconciler_spends_the_budget_on_returned_customers_first_and_stops_at_expiry(
        bridge_factory, connect_store, shop):
    bridge = bridge_factory(status_rate_limit=2)
    connect_store(bridge)
    rows = [invoiced(bridge, shop)[1] for _ in range(5)]
    bridge.stop_worker()
    returned, expired = rows[3], rows[4]
    with bridge.runtime.engine.begin() as conn:
        conn.execute(db.orders.update().where(db.orders.c.id == returned.id)
                     .values(returned_at=time.time()))
        conn.execute(db.orders.update().where(db.orders.c.id == expired.id)
                     .values(created_at=time.time() - 100 * 3600))
    queued = []
    bridge.runtime.payments.schedule = lambda pk, hint, delay: queued.append(pk)
    assert bridge.runtime.payments.reconcile() == 2  # the key's budget
    assert queued[0] == returned.id and expired.id not in queued
    assert bridge.order(expired.external_id).payment_state == "expired"
    # checked orders wait for their next turn; the others are next
    queued.clear()
    bridge.runtime.payments.reconcile()
    assert set(queued) <= {rows[0].id, rows[1].id, rows[2].id} and returned.id not in queued


def test_return_before_a_delayed_notification_makes_one_transition(bridge, connect_store, shop,
                                                                   fake_upay):
    connect_store(bridge)
    order, row = invoiced(bridge, shop)
    fake_upay.faults.add("notification", "delay", seconds=1.5)
    redirect = fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    assert requests.get(redirect, timeout=5).status_code == 200  # the browser comes back first
    wait_for(lambda: shop.order(order["id"])["status"] == "processing")
    wait_for(lambda: any(n.status_code == 200 for n in fake_upay.notifications))  # then UPay's
    wait_for(lambda: bridge.runtime.jobs.depth() == 0)
    time.sleep(1)
    assert len(payments(bridge, row.id)) == 1
    assert len(notes_with(shop, order["id"], "Payment confirmed")) == 1


def test_operator_retry_finishes_a_payment_the_store_refused_to_record(bridge, connect_store,
                                                                       fake_wc, fake_upay):
    """The payment is confirmed, but the store answers 503 to marking the order paid until the
    job parks; after the operator's retry, the order is marked paid and the note written."""
    import sqlalchemy as sa

    fake_wc.add_product(101, "Arabic Coffee 250g", "4.500", sku="COF-250")
    connect_store(bridge)
    order = fake_wc.create_order([{"product_id": 101, "quantity": 2}], billing=BILLING)
    fake_wc.deliver_queued()
    row = bridge.wait_state(order["id"], "done")
    fake_wc.faults.add("status", count=50, path_contains=f"orders/{order['id']}", method="PUT",
                       status=503)
    fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    wait_for(lambda: bridge.order(order["id"]).state == "parked", timeout=60)
    fake_wc.faults.clear()  # the store is back
    bridge.runtime.pipeline.retry(row.id)
    wait_for(lambda: fake_wc.order(order["id"])["status"] == "processing", timeout=30)
    wait_for(lambda: bridge.order(order["id"]).state == "done", timeout=30)

    def actions() -> list:
        with bridge.runtime.engine.connect() as conn:
            return conn.execute(sa.select(db.store_actions.c.kind, db.store_actions.c.state)
                                .where(db.store_actions.c.order_id == row.id)).all()

    # The order's state is "done" as soon as the retry is queued; its store actions (mark paid,
    # then the note) are carried out by the job after that, so wait for them, not the state.
    wait_for(lambda: all(state == "done" for _, state in actions()), timeout=30)
    assert actions() and all(state == "done" for _, state in actions())


def test_nul_bytes_in_callbacks_are_refused_not_crashes(bridge, connect_store):
    """PostgreSQL's text cannot hold NUL: a %00 in an id or token matches nothing (on both
    layouts), rather than reaching the database and failing there."""
    record = connect_store(bridge, webhook=False)
    u = bridge.url
    answers = [
        requests.post(f"{u}/upay/notify/{record.id}",
                      data={"requested_order_id": "a\x00b", "result": "CAPTURED"}, timeout=5),
        requests.post(f"{u}/upay/notify/{record.id}", json={"requested_order_id": "a\u0000b"},
                      timeout=5),
        requests.post(f"{u}/upay/notify/ab%00cd", data={"x": "1"}, timeout=5),
        requests.get(f"{u}/upay/return/{record.id}/tok%00en?result=CAPTURED", timeout=5),
        requests.get(f"{u}/upay/cancel/{record.id}/tok%00en", timeout=5),
        requests.get(f"{u}/upay/status/{record.id}/tok%00en", timeout=5),
        requests.get(f"{u}/upay/return/ab%00/tok", timeout=5),
        requests.post(f"{u}/webhooks/woocommerce/ab%00cd", data=b"{}", timeout=5),
    ]
    assert [r.status_code for r in answers] == [200, 200, 404, 404, 404, 200, 404, 404]


def _both_invoices_paid(bridge, shop, fake_upay, notification="drop"):
    """An order with two invoices (the first one's answer was lost), both paid by the customer."""
    fake_upay.faults.add("charge", "timeout_after_create", seconds=3)
    order, row = invoiced(bridge, shop)
    first, second = bridge.attempts(row.id)
    assert first.invoice_id is None
    lost = next(i for i in fake_upay.invoices.values() if i.merchant_order_id == first.upay_order_id)
    return order, row, first, second, lost


def test_two_payments_confirmed_at_the_same_moment_are_flagged(bridge, connect_store, shop,
                                                               fake_upay, monkeypatch):
    """Two checks, each confirming a different payment of one order, run at once: one marks it
    paid, the other sees that payment and flags the second. Without the order row's lock,
    PostgreSQL's READ COMMITTED let each miss the other's payment (both "paid")."""
    from bridge import payments as payments_module

    connect_store(bridge)
    order, row, first, second, lost = _both_invoices_paid(bridge, shop, fake_upay)
    fake_upay.faults.add("notification", "drop", count=2)  # the checks below are the only ones
    fake_upay.complete_payment(lost.invoice_id, "CAPTURED")
    fake_upay.complete_payment(second.invoice_id, "CAPTURED")
    real_insert = payments_module._insert_payment

    def slow_insert(*args, **kwargs):  # widen the window between the insert and the count
        new = real_insert(*args, **kwargs)
        time.sleep(0.5)
        return new

    monkeypatch.setattr(payments_module, "_insert_payment", slow_insert)
    p = bridge.runtime.payments
    hints = [{"source": "notify", "upay_order_id": a.upay_order_id, "track_id": inv.track_id}
             for a, inv in ((first, lost), (second, fake_upay.invoices[second.invoice_id]))]
    results: list[str] = []
    threads = [threading.Thread(target=lambda h=h: results.append(p.confirm(row.id, h)))
               for h in hints]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["double-payment", "paid"]
    assert bridge.order(order["id"]).payment_state == "flagged"
    assert len(payments(bridge, row.id)) == 2
    wait_for(lambda: notes_with(shop, order["id"], "paid twice")
             or notes_with(shop, order["id"], "second confirmed"))


def test_payment_on_a_superseded_invoice_is_found_after_its_check_failed(bridge, connect_store,
                                                                         shop, fake_upay):
    """The customer paid the invoice whose create answer was lost (no invoice id); the status
    check its notification caused failed for good. Reconcile asks about that payment's track id
    in turn with the newest invoice, so the payment is still found."""
    connect_store(bridge)
    order, row, first, second, lost = _both_invoices_paid(bridge, shop, fake_upay)
    fake_upay.faults.add("status", "rejected", message="Transaction is being processed")
    fake_upay.complete_payment(lost.invoice_id, "CAPTURED")
    wait_for(lambda: any(e["kind"] == "status_error"
                         for e in order_events(bridge.runtime.engine, row.id)))
    assert bridge.order(order["id"]).payment_state == "open"
    for _ in range(4):  # reconcile passes, each due at once here
        with bridge.runtime.engine.begin() as conn:
            conn.execute(db.orders.update().where(db.orders.c.id == row.id)
                         .values(next_check_at=None))
        assert bridge.runtime.payments.reconcile() == 1
        try:
            wait_for(lambda: bridge.order(order["id"]).payment_state != "open", timeout=5)
            break
        except AssertionError:
            continue
    wait_for(lambda: shop.order(order["id"])["status"] == "processing")
    [paid] = payments(bridge, row.id)
    assert paid.track_id == lost.track_id and paid.source == "reconcile"
    assert bridge.order(order["id"]).payment_state == "paid"


def test_a_flood_of_forged_notifications_makes_one_status_check(bridge, connect_store, shop,
                                                               fake_upay):
    """Forty forged notifications for one order merge into one status check, and one more
    queued after a gap, so they cannot spend the key's status budget (30 a minute)."""
    record = connect_store(bridge)
    order, row = invoiced(bridge, shop)

    def status_calls() -> int:
        return sum("get-payment-status" in r.path for r in fake_upay.requests)

    before = status_calls()
    forged = {"payment_id": "100326010000027219", "result": "CAPTURED", "track_id": "F" * 32,
              "requested_order_id": row.upay_order_id}

    def send(n: int) -> None:
        for _ in range(n):
            assert requests.post(f"{bridge.url}/upay/notify/{record.id}", data=forged,
                                 timeout=5).status_code == 200

    threads = [threading.Thread(target=send, args=(5,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: any(e["kind"] == "suspicious"
                         for e in order_events(bridge.runtime.engine, row.id)))
    time.sleep(1.5)
    assert status_calls() - before == 1
    # Another order's real payment is confirmed at once: the budget was not spent.
    order2, row2 = invoiced(bridge, shop)
    fake_upay.complete_payment(row2.invoice_id, "CAPTURED")
    wait_for(lambda: shop.order(order2["id"])["status"] == "processing", timeout=10)
    # The merged signals' one queued check runs after its gap (10 s after a pending verdict).
    wait_for(lambda: status_calls() - before == 3, timeout=20)
    time.sleep(1.0)
    assert status_calls() - before == 3
    assert bridge.order(order["id"]).payment_state == "open"
