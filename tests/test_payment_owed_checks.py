"""Status checks the database must remember until they are answered: the checks a signal's check
queues for the other invoices of its order, and the return page's follow-ups, one chain per
order however often the customer reloads the page.

As in tests/test_payment_followups.py, the tests take the queue's place (``payments.schedule``
records what would be queued, and a job the test never runs is a job the queue lost) and the
clock's (``payments.clock``).
"""

from __future__ import annotations

import pytest
import requests

from bridge.payments import LOST_ANSWER_TRACKS, SIGNAL_CHECK_LOST_SECONDS

from .test_payment_followups import _hand_clock_and_queue, _paid_an_hour_ago, _status_calls
from .test_payments import _both_invoices_paid, invoiced, payments

BOTH_LAYOUTS = True


@pytest.fixture
def shop(fake_wc):
    fake_wc.add_product(101, "Arabic Coffee 250g", "4.500", sku="COF-250")
    return fake_wc


def _notify(bridge, record, fields) -> None:
    assert requests.post(f"{bridge.url}/upay/notify/{record.id}", data=fields,
                         timeout=5).status_code == 200


def _second_payment_merged(bridge, record, fake_upay, shop, *, forged: int = 0,
                           forged_after: int = 0):
    """A paid order (its newest invoice, an hour ago). UPay repeats that notification twice,
    so the second repeat's check waits for the gap; while it waits, the customer also pays the
    superseded invoice (whose create answer was lost), after ``forged`` notifications naming
    each invoice: all of them merge into the waiting check (the newest naming an invoice is the
    one its check follows), and ``forged_after`` naming the superseded invoice after its real
    one. Returns the order, its row, the attempts, the lost invoice, the hand clock and queue,
    and that check's job."""
    order, row, first, second, lost = _both_invoices_paid(bridge, shop, fake_upay)
    _paid_an_hour_ago(bridge, fake_upay, order, second)
    bridge.stop_worker()
    p = bridge.runtime.payments
    now, queue = _hand_clock_and_queue(p)
    repeat = fake_upay.invoices[second.invoice_id].fields
    _notify(bridge, record, repeat)
    [(pk, x, _)] = queue.jobs
    assert p.confirm(pk, x) == "already-recorded"
    now[0] += 1
    _notify(bridge, record, repeat)
    [(_, y, gap)] = queue.jobs[1:]
    assert gap > 0
    now[0] += 1
    for i in range(forged):
        for attempt in (first, second):
            _notify(bridge, record, {"result": "CAPTURED", "track_id": f"F{i:031d}",
                                     "requested_order_id": attempt.upay_order_id})
    fake_upay.complete_payment(lost.invoice_id, "CAPTURED")
    for i in range(forged_after):
        _notify(bridge, record, {"result": "CAPTURED", "track_id": f"A{i:031d}",
                                 "requested_order_id": first.upay_order_id})
    assert len(queue.jobs) == 2  # everything merged into the waiting check
    now[0] += gap
    return order, row, first, second, lost, now, queue, y


def test_a_lost_check_of_another_invoice_is_made_again(bridge, connect_store, shop, fake_upay):
    """The check a merged notification caused for another invoice of a paid order was lost
    with the queue (a flushed Redis, a killed worker). Reconcile does not follow a paid order:
    the second payment was never checked, the double payment never flagged."""
    record = connect_store(bridge)
    order, row, first, second, lost, now, queue, y = _second_payment_merged(
        bridge, record, fake_upay, shop)
    p = bridge.runtime.payments
    assert p.confirm(row.id, y) == "already-recorded"
    [(_, other, _)] = queue.jobs[2:]
    assert other["upay_order_id"] == first.upay_order_id
    del queue.jobs[2:]  # ... and the queue loses it
    now[0] += SIGNAL_CHECK_LOST_SECONDS - 10
    assert p.reconcile() == 0  # not overdue yet
    now[0] += 20
    assert p.reconcile() == 1
    for _ in range(5):  # the redone check, and what it queues in turn
        if len(queue.jobs) == 2:
            break
        p.confirm(*queue.jobs.pop(2)[:2])
    assert len(queue.jobs) == 2
    assert bridge.order(order["id"]).payment_state == "flagged"
    assert sorted(x.track_id for x in payments(bridge, row.id)) == sorted(
        [lost.track_id, fake_upay.invoices[second.invoice_id].track_id])
    calls = _status_calls(fake_upay)
    now[0] += 6 * 3600  # answered: nothing is owed any more, hours later either
    assert p.reconcile() == 0
    assert _status_calls(fake_upay) == calls


def test_answered_checks_of_other_invoices_owe_nothing(bridge, connect_store, shop, fake_upay):
    """The same, with the queue keeping every job: the other invoice's check finds the double
    payment, and reconcile asks nothing more about the paid order."""
    record = connect_store(bridge)
    order, row, first, second, lost, now, queue, y = _second_payment_merged(
        bridge, record, fake_upay, shop)
    p = bridge.runtime.payments
    calls = _status_calls(fake_upay)
    assert p.confirm(row.id, y) == "already-recorded"
    [(_, other, _)] = queue.jobs[2:]
    now[0] += 1
    assert p.confirm(row.id, other) == "double-payment"
    assert len(queue.jobs) == 3
    assert _status_calls(fake_upay) - calls == 2
    for later in (SIGNAL_CHECK_LOST_SECONDS + 1, 6 * 3600):
        now[0] += later
        assert p.reconcile() == 0
    assert _status_calls(fake_upay) - calls == 2
    assert bridge.order(order["id"]).payment_state == "flagged"


def test_forged_notifications_cost_a_bounded_number_of_checks_even_when_lost(
        bridge, connect_store, shop, fake_upay):
    """Forged notifications naming both invoices merge into the waiting check: none for the
    check's own invoice and at most LOST_ANSWER_TRACKS for the other (its create answer was
    lost, so each distinct track id could be the real one), however many; lost, they are made
    again once, and nothing is asked again and again."""
    record = connect_store(bridge)
    order, row, first, second, lost, now, queue, y = _second_payment_merged(
        bridge, record, fake_upay, shop, forged=20)
    p = bridge.runtime.payments
    calls = _status_calls(fake_upay)
    assert p.confirm(row.id, y) == "already-recorded"
    assert [h["upay_order_id"] for _, h, _ in queue.jobs[2:]] == [first.upay_order_id]
    del queue.jobs[2:]  # lost
    now[0] += SIGNAL_CHECK_LOST_SECONDS + 1
    assert p.reconcile() == 1
    made = 0
    while len(queue.jobs) > 2:
        p.confirm(*queue.jobs.pop(2)[:2])
        made += 1
        # The redone check names the invoice whose answer was lost (the newest signal did):
        # up to LOST_ANSWER_TRACKS track ids for it, its own among them, and one for the other.
        assert made <= LOST_ANSWER_TRACKS + 1
    assert bridge.order(order["id"]).payment_state == "flagged"
    assert _status_calls(fake_upay) - calls == 1 + made
    for later in (SIGNAL_CHECK_LOST_SECONDS + 1, 6 * 3600):
        now[0] += later
        assert p.reconcile() == 0
    assert len(queue.jobs) == 2
    assert _status_calls(fake_upay) - calls == 1 + made


@pytest.mark.parametrize("forged_after", [1, LOST_ANSWER_TRACKS - 1])
def test_forged_notifications_after_the_real_one_do_not_stand_in_for_it(
        bridge, connect_store, shop, fake_upay, forged_after):
    """The superseded invoice's create answer was lost: only the track id a notification gives
    can find its payment. Forged notifications naming it with made-up track ids, merged into
    the same waiting check after the real one, are asked about too, not instead: the double
    payment is still found. A flood of them costs at most LOST_ANSWER_TRACKS calls for it."""
    record = connect_store(bridge)
    order, row, first, second, lost, now, queue, y = _second_payment_merged(
        bridge, record, fake_upay, shop, forged_after=forged_after)
    p = bridge.runtime.payments
    calls = _status_calls(fake_upay)
    assert p.confirm(row.id, y) == "already-recorded"
    outcomes = []
    while len(queue.jobs) > 2:
        _, hint, _ = queue.jobs.pop(2)
        assert hint["upay_order_id"] == first.upay_order_id
        outcomes.append(p.confirm(row.id, hint))
    assert outcomes[-1] == "double-payment"  # the real one, after the newer forgeries
    assert len(outcomes) == forged_after + 1
    assert _status_calls(fake_upay) - calls == 1 + forged_after + 1
    assert bridge.order(order["id"]).payment_state == "flagged"
    assert sorted(x.track_id for x in payments(bridge, row.id)) == sorted(
        [lost.track_id, fake_upay.invoices[second.invoice_id].track_id])


def test_a_flood_of_forgeries_for_a_lost_answer_invoice_costs_a_bounded_number_of_checks(
        bridge, connect_store, shop, fake_upay):
    record = connect_store(bridge)
    order, row, first, second, lost, now, queue, y = _second_payment_merged(
        bridge, record, fake_upay, shop, forged_after=30)
    p = bridge.runtime.payments
    calls = _status_calls(fake_upay)
    assert p.confirm(row.id, y) == "already-recorded"
    asked = 0
    while len(queue.jobs) > 2:
        p.confirm(*queue.jobs.pop(2)[:2])
        asked += 1
    assert asked == LOST_ANSWER_TRACKS
    assert _status_calls(fake_upay) - calls == 1 + LOST_ANSWER_TRACKS


def test_a_retried_check_of_another_invoice_is_not_taken_for_lost(bridge, connect_store, shop,
                                                                  fake_upay):
    """The other invoice's check meets a 5xx and is queued again: while it is, reconcile does
    not make it a second time; its answer ends what was owed."""
    record = connect_store(bridge)
    order, row, first, second, lost, now, queue, y = _second_payment_merged(
        bridge, record, fake_upay, shop)
    p = bridge.runtime.payments
    assert p.confirm(row.id, y) == "already-recorded"
    [(_, other, _)] = queue.jobs[2:]
    fake_upay.faults.add("status", "status", status=503)
    assert p.confirm(row.id, other) == "retrying"
    [(_, retry, delay)] = queue.jobs[3:]
    now[0] += SIGNAL_CHECK_LOST_SECONDS + delay / 2
    assert p.reconcile() == 0
    now[0] += delay / 2
    assert p.confirm(row.id, retry) == "double-payment"
    now[0] += SIGNAL_CHECK_LOST_SECONDS + 1
    assert p.reconcile() == 0
    assert len(queue.jobs) == 4


# -- the return page's follow-ups ----------------------------------------------------------


def test_repeated_return_visits_share_one_chain_of_follow_ups(bridge, connect_store, shop,
                                                             fake_upay):
    """The customer reloads the return page again and again while UPay's status lags. Each
    visit after the merge gap queued a check whose answer started a chain of follow-ups of its
    own (a status call every 15 s each): with a few reloads, the order alone spent the key's
    budget and other orders' checks waited."""
    order, p, now, queue, redirect = _paid_while_status_lags(bridge, connect_store, shop,
                                                             fake_upay)

    def visit() -> None:
        assert requests.get(redirect, timeout=5).status_code == 200

    def run(job) -> str:
        queue.jobs.remove(job)
        return p.confirm(job[0], job[1])

    visit()
    [first] = queue.jobs
    assert run(first) == "pending"
    [chain] = queue.jobs
    assert chain[1]["source"] == "return" and chain[2] == 15.0
    due = now[0] + chain[2]
    calls = _status_calls(fake_upay)
    for _ in range(36):  # three minutes: a reload every 5 s
        now[0] += 5
        if now[0] >= due:  # the chain's check
            assert run(chain) == "pending"
            [chain] = _follow_ups(queue)
            due = now[0] + chain[2]
        visit()
        for job in [j for j in queue.jobs if "until" in j[1]]:  # a visit's own check
            if float(job[1]["until"]) <= now[0]:
                assert run(job) == "pending"
        assert _follow_ups(queue) == [chain]  # one chain, however many visits
    # 12 for the chain; the visits' own checks are spaced by the signal gap (at most 60 s).
    assert _status_calls(fake_upay) - calls <= 12 + 6
    assert bridge.order(order["id"]).payment_state == "open"


def _paid_while_status_lags(bridge, connect_store, shop, fake_upay):
    """An invoiced order paid at UPay, whose notification is lost and whose status stays
    pending, with the worker stopped and the clock and job queue in the test's hands: the
    order, the payments service, the clock, the queue and the customer's return URL."""
    connect_store(bridge)
    order, row = invoiced(bridge, shop)
    bridge.stop_worker()
    p = bridge.runtime.payments
    now, queue = _hand_clock_and_queue(p)
    fake_upay.faults.add("status", "stale", count=100)
    fake_upay.faults.add("notification", "drop")
    redirect = fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    return order, p, now, queue, redirect


def _follow_ups(queue) -> list:
    return [j for j in queue.jobs if j[1].get("source") == "return" and "until" not in j[1]]


def test_a_visit_after_the_chain_was_lost_starts_a_new_one(bridge, connect_store, shop,
                                                          fake_upay):
    """The chain is one per order, not none: lost with the queue, the customer's next visit
    starts it again."""
    order, p, now, queue, redirect = _paid_while_status_lags(bridge, connect_store, shop,
                                                             fake_upay)
    assert requests.get(redirect, timeout=5).status_code == 200
    [(pk, returned, _)] = queue.jobs
    assert p.confirm(pk, returned) == "pending"
    [(_, chain, delay)] = queue.jobs[1:]
    assert chain["source"] == "return"
    queue.jobs.clear()  # the queue loses the chain
    now[0] += delay + 60
    assert requests.get(redirect, timeout=5).status_code == 200
    [(_, again, wait)] = queue.jobs
    now[0] += wait
    assert p.confirm(pk, again) == "pending"
    [(_, chain, delay)] = queue.jobs[1:]
    assert chain["source"] == "return" and delay == 15.0
