"""The duplicate deliveries of a burst on both layouts: the embedded default, and PostgreSQL as
the database with Redis as the queue and the worker in a process of its own.

.ci/run starts both servers on 127.0.0.1; outside CI the scale-out runs are skipped when they are
absent (conftest.require_scaled). The whole pipeline and payment suites run on both layouts too
(BOTH_LAYOUTS in test_pipeline.py and test_payments.py).
"""

from __future__ import annotations

from .test_pipeline import BILLING, charge_for

BOTH_LAYOUTS = True


def test_a_burst_with_duplicates_invoices_each_order_once(bridge, layout, connect_store, fake_wc,
                                                          fake_upay):
    assert bridge.runtime.engine.dialect.name == ("postgresql" if layout == "scaled" else "sqlite")
    connect_store(bridge)
    fake_wc.add_product(1, "Oud oil", "7.125")
    orders = [fake_wc.create_order([{"product_id": 1, "quantity": 2}], billing=BILLING)
              for _ in range(5)]
    fake_wc.deliver_queued()
    webhook_id = next(iter(fake_wc.webhooks.values()))["id"] if isinstance(fake_wc.webhooks, dict) \
        else fake_wc.webhooks[0]["id"]
    fake_wc.deliver(webhook_id, orders[0]["id"], times=5, concurrently=True)
    for order in orders:
        bridge.wait_state(order["id"], "done", timeout=30)
        assert len(charge_for(fake_upay, order["id"])) == 1
        assert len(fake_wc.notes(order["id"])) == 1


def _drop_intake_connection(bridge, layout: str) -> None:
    """Break the connection the intake keeps between batches, as a database restart would."""
    kept = bridge.runtime.pipeline._intake_writer._connection  # noqa: SLF001
    assert kept is not None, "the first delivery should have left the intake a connection"
    if layout == "scaled":
        import sqlalchemy as sa

        from .conftest import PG_ADMIN_URL

        admin = sa.create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"),
                                 isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"),
                                {"pid": kept.dbapi_connection.info.backend_pid}).scalar()
        admin.dispose()
    else:
        kept.dbapi_connection.close()


def test_intake_recovers_when_its_kept_database_connection_is_dropped(bridge, layout,
                                                                      connect_store, fake_wc,
                                                                      fake_upay):
    connect_store(bridge)
    fake_wc.add_product(1, "Oud oil", "7.125")
    first = fake_wc.create_order([{"product_id": 1, "quantity": 1}], billing=BILLING)
    assert [d.status for d in fake_wc.deliver_queued()] == [200]
    _drop_intake_connection(bridge, layout)
    second = fake_wc.create_order([{"product_id": 1, "quantity": 2}], billing=BILLING)
    # Answered 200 and recorded: the intake retried on a new connection.
    assert [d.status for d in fake_wc.deliver_queued()] == [200]
    for order in (first, second):
        bridge.wait_state(order["id"], "done", timeout=30)
        assert len(charge_for(fake_upay, order["id"])) == 1
        assert len(fake_wc.notes(order["id"])) == 1


def _intake(pipeline, store, external_id: str, delivery: str):
    """The rows of one delivery, as the webhook hands them to accept_batch."""
    from decimal import Decimal

    from bridge.models import Customer, Order
    from bridge.stores import WebhookEvent

    # Cancelled: skipped by the store's settings, so no worker takes it while the test reads.
    order = Order(external_id=external_id, number=external_id, status="cancelled",
                  currency="KWD", total=Decimal("1.000"), customer=Customer())
    return pipeline.intake_item(store, WebhookEvent("order.created", delivery, order), b"{}")


def test_a_batch_with_duplicates_gives_each_new_order_its_own_id(bridge, layout, connect_store):
    """accept_batch's ids, events and outcomes as the database holds them, for a batch with an
    order already recorded, an order twice, and new ones: each layout's way of returning the
    new orders' ids (intake_writer.IntakeCursor.insert_orders) has to keep these."""
    import sqlalchemy as sa

    pipeline = bridge.runtime.pipeline
    store = connect_store(bridge)
    [first] = pipeline.accept_batch([_intake(pipeline, store, "A", "d1")])
    results = pipeline.accept_batch([_intake(pipeline, store, external, f"d{n}")
                                     for n, external in enumerate(["B", "A", "B", "C"], 2)])
    assert [r.outcome for r in results] == ["skipped", "duplicate", "duplicate", "skipped"]
    assert results[1].order_pk is None and results[2].order_pk is None
    all_new = pipeline.accept_batch([_intake(pipeline, store, external, f"d{n}")
                                     for n, external in enumerate(["D", "E"], 6)])
    with bridge.runtime.engine.connect() as conn:
        ids = dict(conn.execute(sa.text("SELECT external_id, id FROM orders")).all())
        events = conn.execute(sa.text(
            "SELECT order_id, message FROM events WHERE kind = 'received'")).all()
        outcomes = dict(conn.execute(sa.text(
            "SELECT delivery_id, outcome FROM deliveries")).all())
    assert ids == {"A": first.order_pk, "B": results[0].order_pk, "C": results[3].order_pk,
                   "D": all_new[0].order_pk, "E": all_new[1].order_pk}
    assert sorted((pk, message.split()[1]) for pk, message in events) == \
        sorted((pk, f"#{external}") for external, pk in ids.items())
    assert outcomes == {"d1": "skipped", "d2": "skipped", "d3": "duplicate", "d4": "duplicate",
                        "d5": "skipped", "d6": "skipped", "d7": "skipped"}
