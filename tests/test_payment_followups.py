"""Follow-up checks after a signal: a return merged into a queued check, and a signal's check
that the job queue lost. Each reproduced against the fake UPay and the fake store.

The tests that follow one check after another take the queue's place (``payments.schedule``
records what would be queued) and the clock's (``payments.clock``): the order of events is
then exact, and no test waits for a gap or a follow-up to come round.
"""

from __future__ import annotations

import time

import pytest
import requests

from bridge import db
from bridge.payments import SIGNAL_CHECK_LOST_SECONDS

from .conftest import wait_for
from .test_payments import _both_invoices_paid, invoiced, notes_with, payments

BOTH_LAYOUTS = True


@pytest.fixture
def shop(fake_wc):
    fake_wc.add_product(101, "Arabic Coffee 250g", "4.500", sku="COF-250")
    return fake_wc


def _status_calls(fake_upay) -> int:
    return sum("get-payment-status" in r.path for r in fake_upay.requests)


class _Queue:
    """Stands in for the job queue: records each job; the test runs them in its own order."""

    def __init__(self) -> None:
        self.jobs: list[tuple[int, dict, float]] = []

    def __call__(self, pk: int, hint: dict, delay: float) -> None:
        self.jobs.append((pk, dict(hint), delay))


def _hand_clock_and_queue(payments) -> tuple[list[float], _Queue]:
    """The payments' clock, moved by hand (``now[0]``), and its jobs recorded, not run."""
    now = [time.time()]
    payments.clock = lambda: now[0]
    queue = _Queue()
    payments.schedule = queue
    return now, queue


def _forge_notification(bridge, record, row) -> None:
    """An unsigned notification claiming a capture on ``row``'s invoice."""
    forged = {"result": "CAPTURED", "track_id": "F" * 32, "requested_order_id": row.upay_order_id}
    requests.post(f"{bridge.url}/upay/notify/{record.id}", data=forged, timeout=5)


def _paid_an_hour_ago(bridge, fake_upay, order, attempt) -> None:
    """The customer pays ``attempt``'s invoice, and the bridge records it, an hour ago."""
    p = bridge.runtime.payments
    p.clock = lambda: time.time() - 3600
    try:
        fake_upay.complete_payment(attempt.invoice_id, "CAPTURED")
        wait_for(lambda: bridge.order(order["id"]).payment_state == "paid")
        wait_for(lambda: bridge.runtime.jobs.depth() == 0)
    finally:
        p.clock = time.time


def _expire(bridge, row) -> None:
    """The store's expiry passes: reconcile marks the unpaid invoice expired, as it does."""
    with bridge.runtime.engine.begin() as conn:
        conn.execute(db.orders.update().where(db.orders.c.id == row.id)
                     .values(created_at=time.time() - 100 * 3600, next_check_at=None))
    assert bridge.runtime.payments.reconcile() == 0
    assert bridge.order(row.external_id).payment_state == "expired"


def _lose_the_check(bridge, seconds_ago: float):
    """Until the returned function is called, the queue loses every status check, and the
    payments' clock says it is ``seconds_ago`` earlier (the signal came that long ago)."""
    p = bridge.runtime.payments
    real_schedule, real_clock = p.schedule, p.clock
    p.schedule = lambda pk, hint, delay: None
    p.clock = lambda: time.time() - seconds_ago

    def restore() -> None:
        p.schedule, p.clock = real_schedule, real_clock
    return restore


# -- a return merged into a queued check --------------------------------------------------------


def test_a_return_merged_into_a_queued_check_still_gets_its_follow_ups(bridge, connect_store,
                                                                       shop, fake_upay):
    """UPay notifies twice (the second check is queued after the gap), the customer comes back
    while that check is queued, and UPay's status shows the payment a few seconds late. The
    return merged into the notification's check, that check's answer was "pending", and no
    follow-up was ever queued: the return page waited for the minute's reconcile."""
    record = connect_store(bridge)
    order, row = invoiced(bridge, shop)
    bridge.stop_worker()
    p = bridge.runtime.payments
    now = [time.time()]
    p.clock = lambda: now[0]
    queue = _Queue()
    p.schedule = queue
    calls = _status_calls(fake_upay)

    fake_upay.faults.add("status", "stale", count=2)  # UPay's status lags behind the payment
    fake_upay.faults.add("notification", "duplicate", times=2)
    redirect = fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    [(pk, first, _), (_, second, gap)] = queue.jobs
    assert pk == row.id and first["source"] == second["source"] == "notify" and gap > 0
    assert p.confirm(pk, first) == "pending"

    now[0] += 1
    assert requests.get(redirect, timeout=5).status_code == 200  # the customer is back
    for _ in range(10):  # UPay (or anyone) repeats the notification: merged as well
        assert requests.post(f"{bridge.url}/upay/notify/{record.id}",
                             data=fake_upay.invoices[row.invoice_id].fields,
                             timeout=5).status_code == 200
    assert len(queue.jobs) == 2  # the return and the repeats merged into the queued check

    now[0] += gap - 1
    assert p.confirm(pk, second) == "pending"
    follow_ups = queue.jobs[2:]
    assert [(h["source"], d) for _, h, d in follow_ups] == [("return", 15.0)]

    now[0] += 15
    assert p.confirm(pk, follow_ups[0][1]) == "paid"
    assert len(queue.jobs) == 3  # one chain, and it ends with the payment
    assert _status_calls(fake_upay) - calls == 3
    token = redirect.split("/upay/return/")[1].split("?")[0].split("/")[1]
    status = requests.get(f"{bridge.url}/upay/status/{record.id}/{token}", timeout=5).json()
    assert status["state"] == "paid"
    bridge.start_worker()
    wait_for(lambda: shop.order(order["id"])["status"] == "processing")


def test_a_return_with_its_own_check_gets_one_chain_not_two(bridge, connect_store, shop,
                                                            fake_upay):
    """The customer comes back first (the return's own check starts the follow-ups), then
    UPay's notification queues a check of its own: that check merged no return and starts no
    second chain (each costs a status call every 15 s; the budget is 30 a minute per key)."""
    record = connect_store(bridge)
    order, row = invoiced(bridge, shop)
    bridge.stop_worker()
    p = bridge.runtime.payments
    now = [time.time()]
    p.clock = lambda: now[0]
    queue = _Queue()
    p.schedule = queue
    fake_upay.faults.add("status", "stale", count=3)
    fake_upay.faults.add("notification", "drop")  # UPay's notification comes later, below
    redirect = fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    assert requests.get(redirect, timeout=5).status_code == 200
    [(pk, returned, _)] = queue.jobs
    assert returned["source"] == "return"
    assert p.confirm(pk, returned) == "pending"
    [(_, chain, _)] = queue.jobs[1:]
    assert chain["source"] == "return"
    now[0] += 1
    requests.post(f"{bridge.url}/upay/notify/{record.id}",
                  data=fake_upay.invoices[row.invoice_id].fields, timeout=5)
    [(_, notified, gap)] = queue.jobs[2:]
    assert notified["source"] == "notify"
    now[0] += gap
    assert p.confirm(pk, notified) == "pending"
    assert len(queue.jobs) == 3  # no second chain
    now[0] += 15
    assert p.confirm(pk, chain) == "pending"
    assert [h["source"] for _, h, _ in queue.jobs[3:]] == ["return"]  # the one chain goes on


# -- a signal's check lost by the queue ---------------------------------------------------------


def test_late_notification_on_an_expired_order_is_checked_when_its_job_is_lost(
        bridge, connect_store, shop, fake_upay):
    """The invoice expired (reconcile stopped asking), then the customer paid it after all. The
    status check its notification queued was lost (a crash, a flushed Redis): nothing ever
    asked UPay again and the payment was never recorded."""
    connect_store(bridge)
    order, row = invoiced(bridge, shop)
    _expire(bridge, row)
    restore = _lose_the_check(bridge, seconds_ago=400)
    fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    restore()
    assert bridge.order(order["id"]).payment_state == "expired"
    calls = _status_calls(fake_upay)
    assert bridge.runtime.payments.reconcile() == 1
    wait_for(lambda: shop.order(order["id"])["status"] == "processing")
    assert bridge.order(order["id"]).payment_state == "paid"
    assert [p.source for p in payments(bridge, row.id)] == ["notify"]
    assert _status_calls(fake_upay) - calls == 1
    assert bridge.runtime.payments.reconcile() == 0  # nothing is owed any more


def test_a_lost_check_is_asked_once_and_the_expired_order_stays_expired(
        bridge, connect_store, shop, fake_upay):
    """A late notification UPay does not confirm (here a forged one) on an expired order, its
    check lost: the check is made once, and the order is not followed again."""
    record = connect_store(bridge)
    order, row = invoiced(bridge, shop)
    _expire(bridge, row)
    restore = _lose_the_check(bridge, seconds_ago=400)
    forged = {"result": "CAPTURED", "track_id": "F" * 32, "requested_order_id": row.upay_order_id}
    assert requests.post(f"{bridge.url}/upay/notify/{record.id}", data=forged,
                         timeout=5).status_code == 200
    restore()
    calls = _status_calls(fake_upay)
    checks = bridge.order(order["id"]).check_count
    assert bridge.runtime.payments.reconcile() == 1
    wait_for(lambda: bridge.order(order["id"]).check_count > checks)
    assert _status_calls(fake_upay) - calls == 1
    assert bridge.order(order["id"]).payment_state == "expired"
    p = bridge.runtime.payments
    p.clock = lambda: time.time() + 3 * 3600  # hours later, still nothing owed
    try:
        assert p.reconcile() == 0
    finally:
        p.clock = time.time
    assert _status_calls(fake_upay) - calls == 1


def test_a_second_payment_on_a_paid_order_is_found_when_its_check_is_lost(
        bridge, connect_store, shop, fake_upay):
    """Reconcile does not follow a paid order. The customer also paid the superseded invoice
    (whose create answer was lost); the check its notification queued was lost: the double
    payment was never flagged."""
    connect_store(bridge)
    order, row, first, second, lost = _both_invoices_paid(bridge, shop, fake_upay)
    _paid_an_hour_ago(bridge, fake_upay, order, second)
    restore = _lose_the_check(bridge, seconds_ago=400)
    fake_upay.complete_payment(lost.invoice_id, "CAPTURED")
    restore()
    assert bridge.runtime.payments.reconcile() == 1
    wait_for(lambda: bridge.order(order["id"]).payment_state == "flagged")
    assert sorted(p.track_id for p in payments(bridge, row.id)) == sorted(
        [lost.track_id, fake_upay.invoices[second.invoice_id].track_id])
    wait_for(lambda: notes_with(shop, order["id"], "paid twice")
             or notes_with(shop, order["id"], "second confirmed"))


def test_a_check_retrying_through_an_outage_is_not_taken_for_lost(bridge, connect_store, shop,
                                                                  fake_upay):
    """A signal's check that UPay answers with a 5xx is queued again; while it keeps being
    queued, reconcile does not add a second one (each would retry on its own and spend the
    status budget). When the retry is lost, reconcile asks."""
    record = connect_store(bridge)
    order, row = invoiced(bridge, shop)
    _expire(bridge, row)
    bridge.stop_worker()
    p = bridge.runtime.payments
    now, queue = _hand_clock_and_queue(p)
    start = now[0]
    _forge_notification(bridge, record, row)
    [(pk, hint, _)] = queue.jobs
    fake_upay.faults.add("status", "status", status=503)
    assert p.confirm(pk, hint) == "retrying"
    [(_, retry, delay)] = queue.jobs[1:]
    # The first try is overdue, but the retry is queued for later: it is not taken for lost.
    now[0] = start + SIGNAL_CHECK_LOST_SECONDS + delay / 2
    assert p.reconcile() == 0
    # The retry was lost: once it is overdue, reconcile asks UPay.
    now[0] = start + SIGNAL_CHECK_LOST_SECONDS + delay + 1
    assert p.reconcile() == 1
    assert p.confirm(*queue.jobs[-1][:2]) == "pending"
    assert p.reconcile() == 0
    assert bridge.order(order["id"]).payment_state == "expired"


def test_old_next_check_times_on_settled_orders_cost_no_status_calls(bridge, connect_store,
                                                                   shop, fake_upay):
    """Orders settled before this version kept whatever next check time they had: reconcile
    must not take those for checks owed (after an upgrade, every paid order would be asked
    about once more)."""
    connect_store(bridge)
    order, row = invoiced(bridge, shop)
    fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    wait_for(lambda: bridge.order(order["id"]).payment_state == "paid")
    wait_for(lambda: bridge.runtime.jobs.depth() == 0)
    with bridge.runtime.engine.begin() as conn:
        conn.execute(db.orders.update().where(db.orders.c.id == row.id).values(
            next_check_at=time.time() - 3600, signal_check_at=time.time() - 3500))
    calls = _status_calls(fake_upay)
    assert bridge.runtime.payments.reconcile() == 0
    assert bridge.runtime.payments.reconcile() == 0
    assert _status_calls(fake_upay) == calls


def test_a_worker_clock_behind_the_web_clock_still_settles_the_check(bridge, connect_store, shop,
                                                                    fake_upay):
    """The web process records the notification's check as due; a worker whose clock is a
    little behind makes it. Its answer ends what was owed: reconcile does not take the check
    for lost and ask UPay a second time."""
    record = connect_store(bridge)
    order, row = invoiced(bridge, shop)
    _expire(bridge, row)
    bridge.stop_worker()
    p = bridge.runtime.payments
    now, queue = _hand_clock_and_queue(p)
    start = now[0]
    _forge_notification(bridge, record, row)
    [(pk, hint, _)] = queue.jobs
    now[0] = start - 2  # the worker's clock
    assert p.confirm(pk, hint) == "pending"
    now[0] = start + 3600
    assert p.reconcile() == 0
    assert len(queue.jobs) == 1


def test_another_checks_late_answer_does_not_settle_a_signals_owed_check(
        bridge, connect_store, shop, fake_upay):
    """A paid order: UPay repeats the paid invoice's notification (check X, due now), then
    notifies the payment on the superseded invoice (check Y, due after the gap). X runs late
    (a backlog, or a worker clock ahead of the web's), after Y was due, and asks only about
    the paid invoice. Its answer must not end what Y owes: Y is lost with the queue, and
    reconcile must still make it, or the second payment is never flagged."""
    record = connect_store(bridge)
    order, row, first, second, lost = _both_invoices_paid(bridge, shop, fake_upay)
    p = bridge.runtime.payments
    _paid_an_hour_ago(bridge, fake_upay, order, second)
    bridge.stop_worker()
    now, queue = _hand_clock_and_queue(p)
    assert requests.post(f"{bridge.url}/upay/notify/{record.id}",
                         data=fake_upay.invoices[second.invoice_id].fields,
                         timeout=5).status_code == 200
    now[0] += 1
    fake_upay.complete_payment(lost.invoice_id, "CAPTURED")
    [(pk, x, _), (_, y, gap)] = queue.jobs
    assert y["upay_order_id"] == first.upay_order_id and gap > 0
    now[0] += gap + 1  # X runs after Y was due; Y is lost
    assert p.confirm(pk, x) == "already-recorded"
    now[0] += SIGNAL_CHECK_LOST_SECONDS + 1
    assert p.reconcile() == 1
    [(_, replay, _)] = queue.jobs[2:]
    assert p.confirm(pk, replay) == "double-payment"
    assert bridge.order(order["id"]).payment_state == "flagged"
    assert p.reconcile() == 0
