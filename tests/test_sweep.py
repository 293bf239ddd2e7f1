"""The sweep finds exactly the orders that need work and no worker holds, on both layouts, by
index lookups rather than a read of every order; and the schema the migrations build is the one
the models declare."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from bridge import db
from bridge import pipeline as pipeline_module

BOTH_LAYOUTS = True


def _order(conn: Any, store_id: str, name: str, **values: Any) -> int:
    now = time.time()
    row = dict(store_id=store_id, external_id=name, payload="{}", state="done",
               note_state="written", next_attempt_at=now - 3600, created_at=now,
               updated_at=now) | values
    return conn.execute(db.orders.insert().values(**row)).inserted_primary_key[0]


def _action(conn: Any, order_id: int, state: str) -> None:
    now = time.time()
    conn.execute(db.store_actions.insert().values(
        order_id=order_id, kind="mark_paid", state=state, dedupe_key=f"paid:{order_id}:{state}",
        created_at=now, updated_at=now))


def test_the_sweep_queues_exactly_the_orders_that_need_work(bridge_factory, connect_store):
    bridge = bridge_factory(worker=False, sweep_grace_seconds=60)
    store_id = connect_store(bridge).id
    pipeline = bridge.runtime.pipeline
    now = time.time()
    with pipeline.engine.begin() as conn:
        wanted = {
            _order(conn, store_id, "received", state="received", note_state="none"),
            _order(conn, store_id, "retrying", state="retrying", note_state="none"),
            _order(conn, store_id, "invoiced", state="invoiced", note_state="none"),
            _order(conn, store_id, "note-pending", note_state="pending"),
            _order(conn, store_id, "note-sending", state="not_invoiceable", note_state="sending"),
            _order(conn, store_id, "lease-ran-out", state="received", lease_owner="gone",
                   lease_expires=now - 1),
        }
        with_open_action = _order(conn, store_id, "paid-pending")
        _action(conn, with_open_action, "pending")
        with_sending_action = _order(conn, store_id, "paid-sending")
        _action(conn, with_sending_action, "sending")
        wanted |= {with_open_action, with_sending_action}
        # Not due, finished, parked or held by a worker: left alone.
        finished = _order(conn, store_id, "finished")
        _action(conn, finished, "done")
        _order(conn, store_id, "failed", state="failed")
        _order(conn, store_id, "parked", state="parked", note_state="pending")
        parked_with_action = _order(conn, store_id, "parked-action", state="parked")
        _action(conn, parked_with_action, "pending")
        _order(conn, store_id, "leased", state="received", lease_owner="w1",
               lease_expires=now + 300)
        _order(conn, store_id, "in-grace", state="received", next_attempt_at=now - 10)
    queued: list[int] = []
    pipeline.schedule = lambda pk, delay: queued.append(pk)
    assert pipeline.sweep() == len(wanted)
    assert sorted(queued) == sorted(wanted)


def test_the_sweep_reads_indexes_not_every_order(bridge_factory):
    bridge = bridge_factory(worker=False)
    if bridge.runtime.pipeline.engine.dialect.name != "sqlite":
        return  # PostgreSQL's plan depends on table statistics; SQLite's on the schema alone
    engine = bridge.runtime.pipeline.engine
    statement = pipeline_module._SWEEP.params(b_due=0.0, b_now=0.0).compile(
        engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        plan = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}")]
    assert not [s for s in plan if s.startswith(("SCAN orders", "SCAN store_actions"))], plan
    assert {"ix_orders_work", "ix_orders_note", "ix_store_actions_open"} <= {
        word for step in plan for word in step.split()}, plan


def test_the_migrations_build_the_schema_the_models_declare(bridge_factory):
    bridge = bridge_factory(worker=False)
    with bridge.runtime.pipeline.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), db.metadata) == []


def test_a_notification_pointing_at_no_order_is_kept_unlinked_by_the_upgrade(layout):
    if layout != "embedded":
        return  # the upgrade's SQL is the same on PostgreSQL; SQLite's table rebuild is the risk
    with tempfile.TemporaryDirectory() as tmp:
        engine = db.make_engine(f"sqlite:///{Path(tmp) / 'bridge.db'}")
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0004")
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO stores (id, kind, url, secrets, created_at, updated_at)"
                " VALUES ('s1', 'woocommerce', 'https://shop.example', 'x', 0, 0)")
            conn.exec_driver_sql(
                "INSERT INTO notifications (store_id, kind, fields, received_at, order_id)"
                " VALUES ('s1', 'notify', '{}', 0, 424242)")
        db.migrate(engine)
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT store_id, order_id FROM notifications").all()
            assert [tuple(r) for r in rows] == [("s1", None)]
            assert compare_metadata(MigrationContext.configure(conn), db.metadata) == []
        engine.dispose()
