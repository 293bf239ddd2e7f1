"""On the embedded layout a new order's row is its job (bridge/new_orders.py): the webhook
writes no queue entry, the workers find the order in the database, each once, and an order
handed to a worker that died before taking it is handed out again."""

from __future__ import annotations

import time
from typing import Any

from bridge import db
from bridge.new_orders import NewOrderFeed

from .test_pipeline import BILLING, charge_for


def _order(conn: Any, store_id: str, name: str, **values: Any) -> int:
    now = time.time()
    row = dict(store_id=store_id, external_id=name, payload="{}", state="received",
               next_attempt_at=now - 1, created_at=now, updated_at=now) | values
    return conn.execute(db.orders.insert().values(**row)).inserted_primary_key[0]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_delivered_order_is_queued_by_its_row_alone(bridge_factory, connect_store, fake_wc,
                                                       fake_upay):
    bridge = bridge_factory(worker=False)
    connect_store(bridge)
    fake_wc.add_product(1, "Oud oil", "7.125")
    orders = [fake_wc.create_order([{"product_id": 1, "quantity": 1}], billing=BILLING)
              for _ in range(3)]
    assert [d.status for d in fake_wc.deliver_queued()] == [200, 200, 200]
    huey = bridge.runtime.jobs.huey
    assert huey.storage.enqueued_items() == []  # no job row: the order rows are the jobs
    assert bridge.runtime.jobs.depth() == 3  # yet the queue counts them, for /healthz and /metrics

    bridge.start_worker()
    for order in orders:
        bridge.wait_state(order["id"], "done")
        assert len(charge_for(fake_upay, order["id"])) == 1
    assert bridge.runtime.jobs.depth() == 0


def test_the_queue_hands_out_each_new_order_once_and_queued_jobs_first(bridge_factory,
                                                                       connect_store):
    bridge = bridge_factory(worker=False)
    store_id = connect_store(bridge).id
    with bridge.runtime.engine.begin() as conn:
        first = _order(conn, store_id, "first", next_attempt_at=time.time() - 2)
        second = _order(conn, store_id, "second")
    jobs = bridge.runtime.jobs
    jobs.enqueue_confirmation(7, {"source": "test"})
    storage = jobs.huey.storage
    handed = [jobs.huey.deserialize_task(storage.dequeue()) for _ in range(3)]
    assert [(t.name, t.args) for t in handed] == [
        ("confirm_payment", (7, {"source": "test"})), ("process_order", (first,)),
        ("process_order", (second,))]
    assert storage.dequeue() is None
    # Handed out, not yet taken by a worker: still pending.
    assert jobs.depth() == 2


def test_only_due_unheld_received_orders_are_handed_out_and_a_lost_one_again(bridge_factory,
                                                                             connect_store):
    bridge = bridge_factory(worker=False)
    store_id = connect_store(bridge).id
    engine = bridge.runtime.engine
    now = time.time()
    with engine.begin() as conn:
        due = _order(conn, store_id, "due")
        _order(conn, store_id, "held", lease_owner="w1", lease_expires=now + 60)
        _order(conn, store_id, "later", next_attempt_at=now + 3600)
        _order(conn, store_id, "done", state="done")
        _order(conn, store_id, "retrying", state="retrying")  # has a queued job of its own
    mono = Clock()
    feed = NewOrderFeed(engine, monotonic=mono)
    assert feed.take() == due
    assert feed.take() is None
    assert feed.pending() == 1

    with engine.begin() as conn:
        new = _order(conn, store_id, "new")
    assert feed.take() is None  # read again only after POLL_SECONDS...
    feed.wake()  # ...or when this process recorded new orders
    assert feed.take() == new

    mono.now += NewOrderFeed.POLL_SECONDS
    assert feed.take() is None  # both handed out: not again while their workers may run them
    mono.now += NewOrderFeed.HANDED_SECONDS
    assert sorted([feed.take(), feed.take()]) == [due, new]  # never taken: handed out again

    with engine.begin() as conn:  # a worker takes one
        conn.execute(db.orders.update().where(db.orders.c.id == due).values(
            lease_owner="w2", lease_expires=now + 60))
    assert feed.pending() == 1


def test_a_burst_larger_than_a_read_is_handed_out_whole(bridge_factory, connect_store):
    bridge = bridge_factory(worker=False)
    store_id = connect_store(bridge).id
    engine = bridge.runtime.engine
    count = NewOrderFeed.BATCH * 2 + 5
    with engine.begin() as conn:
        ids = [_order(conn, store_id, f"o{i}", next_attempt_at=1000.0 + i) for i in range(count)]
    feed = NewOrderFeed(engine, monotonic=Clock())
    handed = []
    while (pk := feed.take()) is not None:
        handed.append(pk)
    assert handed == ids  # in the order they came, without waiting between full reads
