"""The lease during the store actions a payment causes (mark paid, notes): a worker whose lease
ran out during a slow store call stops, and the worker that took the order over does each action
once. Real fakes over HTTP, on both layouts.

The race is made deterministic instead of timed: the first worker's store call, while "in
flight", lets the lease run out and runs the second worker's whole job before it returns."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

import bridge.pipeline as pipeline_module
from bridge import db
from bridge.pipeline import order_events

from .test_pipeline_review import _place

BOTH_LAYOUTS = True


def _paid_order(bridge: Any, fake_wc: Any, fake_upay: Any) -> Any:
    """An invoiced order whose payment is confirmed: its store actions wait for a worker."""
    pipeline = bridge.runtime.pipeline
    order = _place(fake_wc)
    row = bridge.order(order["id"])
    assert pipeline.process_order(row.id) == "done"
    row = bridge.order(order["id"])
    fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    # No worker runs in these tests: the status check the notification queued runs here.
    assert bridge.runtime.payments.confirm(row.id) == "paid"
    return order, row


def _take_over_during(monkeypatch: Any, bridge: Any, pk: int, method: str) -> list[str]:
    """Make the first ``method`` call a worker makes on the store a slow one: after the store
    has carried it out, and before its answer is back, the worker's lease runs out and a second
    worker takes the order and runs its whole job."""
    pipeline = bridge.runtime.pipeline
    real_adapter_for = pipeline_module.adapter_for
    second: list[str] = []

    def adapter_for(record: Any, **kwargs: Any) -> Any:
        store = real_adapter_for(record, **kwargs)
        if second:
            return store
        real = getattr(store, method)

        def slow(*args: Any, **kw: Any) -> Any:
            # The request reaches the store; its answer is slow to come back.
            answer = real(*args, **kw)
            if not second:
                second.append("running")
                with bridge.runtime.engine.begin() as conn:  # the lease runs out now
                    conn.execute(db.orders.update().where(db.orders.c.id == pk)
                                 .values(lease_expires=pipeline.clock() - 1))
                second[0] = pipeline.process_order(pk)
            return answer

        setattr(store, method, slow)
        return store

    monkeypatch.setattr(pipeline_module, "adapter_for", adapter_for)
    return second


def _actions(bridge: Any, pk: int) -> list[tuple[str, str]]:
    a = db.store_actions.c
    with bridge.runtime.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(a.kind, a.state).where(a.order_id == pk).order_by(a.id)).all()]


def test_a_worker_whose_lease_ran_out_while_marking_paid_does_not_write_a_second_note(
        bridge_factory, connect_store, fake_wc, fake_upay, monkeypatch):
    bridge = bridge_factory(worker=False)
    connect_store(bridge)
    order, row = _paid_order(bridge, fake_wc, fake_upay)
    second = _take_over_during(monkeypatch, bridge, row.id, "mark_paid")

    first = bridge.runtime.pipeline.process_order(row.id)

    # The second worker took the order over and did both actions; the first one, back from its
    # slow call, found the order no longer its own and stopped before the note.
    assert second == ["done"]
    notes = [n["note"] for n in fake_wc.notes(order["id"]) if "Payment confirmed" in n["note"]]
    assert len(notes) == 1, notes
    assert first == "lease-lost"
    assert fake_wc.order(order["id"])["status"] == "processing"
    kinds = [e["kind"] for e in order_events(bridge.runtime.engine, row.id)]
    assert kinds.count("store_paid") == 1, kinds
    assert kinds.count("note_written") == 2, kinds  # the payment link and the payment note
    assert _actions(bridge, row.id) == [("mark_paid", "done"), ("note", "done")]
    final = bridge.order(order["id"])
    assert final.state == "done" and final.lease_owner is None


def test_a_worker_whose_lease_ran_out_while_posting_a_note_does_not_post_the_next_one(
        bridge_factory, connect_store, fake_wc, fake_upay, monkeypatch):
    # Two notes wait (the payment's, and "send the link again"); the lease runs out while the
    # first is being posted. The second worker finds that note (it reached the store) and posts
    # the next one; the first worker must not post it a second time.
    bridge = bridge_factory(worker=False)
    connect_store(bridge)
    order, row = _paid_order(bridge, fake_wc, fake_upay)
    pipeline = bridge.runtime.pipeline
    pipeline.add_action(row.id, "note", f"resend:{row.id}", text="Pay here: resend-marker")
    # Mark paid first, with no race, so only the two notes are left.
    a = db.store_actions.c
    with bridge.runtime.engine.begin() as conn:
        conn.execute(db.store_actions.update().where(a.order_id == row.id, a.kind == "note")
                     .values(state="done"))
    assert pipeline.process_order(row.id) == "done"
    with bridge.runtime.engine.begin() as conn:
        conn.execute(db.store_actions.update().where(a.order_id == row.id, a.kind == "note")
                     .values(state="pending"))
    second = _take_over_during(monkeypatch, bridge, row.id, "add_note")

    first = pipeline.process_order(row.id)

    assert second == ["done"]
    texts = [n["note"] for n in fake_wc.notes(order["id"])]
    assert sum("Payment confirmed" in t for t in texts) == 1, texts
    assert sum("resend-marker" in t for t in texts) == 1, texts
    assert first == "lease-lost"
    assert all(state == "done" for _, state in _actions(bridge, row.id))
