"""Races around the order's lease: a worker whose lease ran out while UPay was answering, and an
operator's retry while a worker holds the order. Real fakes over HTTP, on both layouts."""

from __future__ import annotations

import threading
import time

import pytest

from bridge.errors import BridgeError

from .conftest import wait_for
from .test_pipeline import BILLING, charge_for

BOTH_LAYOUTS = True


def _place(fake_wc):
    fake_wc.add_product(101, "Arabic Coffee 250g", "4.500", sku="COF-250")
    order = fake_wc.create_order([{"product_id": 101, "quantity": 2}], billing=BILLING)
    fake_wc.deliver_queued()
    return order


def test_a_worker_whose_lease_ran_out_during_the_upay_call_does_not_write_a_second_link(
        bridge_factory, connect_store, fake_wc, fake_upay):
    # The lease runs out while UPay is still answering the first worker; a second worker takes
    # the order over (as a re-queued job or the sweep would) and supersedes the attempt.
    bridge = bridge_factory(worker=False, lease_seconds=1.0, upay_read_timeout=10.0)
    connect_store(bridge)
    pipeline = bridge.runtime.pipeline
    order = _place(fake_wc)
    row = wait_for(lambda: bridge.order(order["id"]))
    fake_upay.latency = 2.5
    results: list[str] = []
    first = threading.Thread(target=lambda: results.append(pipeline.process_order(row.id)))
    first.start()
    wait_for(lambda: bridge.attempts(row.id))  # the first worker's POST is in flight
    time.sleep(1.3)  # its lease has run out
    second = pipeline.process_order(row.id)
    first.join(timeout=30)
    fake_upay.latency = 0.0
    pipeline.sweep()
    for _ in range(3):  # whatever is left to do, done by ordinary jobs
        pipeline.process_order(row.id)
    row = bridge.order(order["id"])
    assert row.state == "done", (results, second, row.state)
    # The second worker took over: exactly one payment link reached the customer, the one the
    # order records, and the meta agrees with it.
    notes = fake_wc.notes(order["id"])
    assert len(notes) == 1, [n["note"] for n in notes]
    assert row.invoice_url in notes[0]["note"]
    meta = {m["key"]: m["value"] for m in fake_wc.order(order["id"])["meta_data"]}
    assert meta["upay_invoice_url"] == row.invoice_url
    assert meta["upay_order_id"] == row.upay_order_id
    attempts = bridge.attempts(row.id)
    assert [a.number for a in attempts] == [1, 2]
    assert row.upay_order_id == attempts[1].upay_order_id
    # The first invoice UPay made is still recorded on its attempt, so a payment on it matches.
    assert attempts[0].invoice_id and attempts[0].state == "created"
    assert len(charge_for(fake_upay, order["id"])) == 2


def test_operator_retry_while_a_worker_holds_the_order_does_not_start_a_second_invoice(
        bridge_factory, connect_store, fake_wc, fake_upay):
    bridge = bridge_factory(worker=False, upay_read_timeout=10.0)
    connect_store(bridge)
    pipeline = bridge.runtime.pipeline
    order = _place(fake_wc)
    row = wait_for(lambda: bridge.order(order["id"]))
    fake_upay.latency = 2.0
    results: list[str] = []
    worker = threading.Thread(target=lambda: results.append(pipeline.process_order(row.id)))
    worker.start()
    wait_for(lambda: bridge.attempts(row.id))  # the worker's POST is in flight
    # The operator sees the order in the list and asks to try it again now.
    with pytest.raises(BridgeError, match="being worked on"):
        pipeline.retry(row.id)
    second = pipeline.process_order(row.id)  # the job the retry would have queued
    worker.join(timeout=30)
    fake_upay.latency = 0.0
    assert second == "not-claimed"
    row = bridge.wait_state(order["id"], "done", timeout=5)
    assert len(charge_for(fake_upay, order["id"])) == 1
    assert [a.state for a in bridge.attempts(row.id)] == ["created"]
    assert len(fake_wc.notes(order["id"])) == 1


def test_operator_retry_of_a_parked_order_still_works(bridge_factory, connect_store, fake_wc,
                                                       fake_upay):
    bridge = bridge_factory(worker=False, max_retries=0)
    connect_store(bridge)
    pipeline = bridge.runtime.pipeline
    order = _place(fake_wc)
    row = wait_for(lambda: bridge.order(order["id"]))
    fake_upay.faults.add("charge", "status", status=502)
    assert pipeline.process_order(row.id) == "parked"
    pipeline.retry(row.id)
    assert pipeline.process_order(row.id) == "done"
    assert len(fake_wc.notes(order["id"])) == 1
    assert [a.state for a in bridge.attempts(row.id)] == ["unknown", "created"]
