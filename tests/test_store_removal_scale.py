"""Removing a store with a long history: in batches, every table emptied for that store, other
stores untouched, and an interrupted removal finished by running it again."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import requests
import sqlalchemy as sa

from bridge import db
from bridge import registry as registry_module
from bridge.errors import UnknownStoreError
from bridge.registry import REMOVING, StoreRecord

from .conftest import Bridge

BOTH_LAYOUTS = True

SECRETS = {"consumer_key": "ck_0123456789", "consumer_secret": "cs_0123456789",
           "webhook_secret": "whsec-0123456789", "upay_api_key": "upay-key-0123456789"}
# Every table that holds rows of a store, directly or through its orders.
BY_STORE = (db.orders, db.deliveries, db.notifications, db.store_health, db.dashboard_sessions,
            db.installs)
BY_ORDER = (db.events, db.attempts, db.payments, db.store_actions, db.notifications)

ORDERS = 1200  # of the store removed; its batches below are of 100 orders
OTHER_ORDERS = 300
BATCH = 100


def add_store(bridge: Bridge, host: str) -> StoreRecord:
    return bridge.runtime.registry.add("woocommerce", f"https://{host}.example", SECRETS,
                                       name=host)


def add_history(bridge: Bridge, store_id: str, orders: int, tag: str) -> None:
    """``orders`` finished orders, each with two events, an attempt, a payment, a store action,
    a delivery and a notification; plus notifications and deliveries that match no order."""
    with bridge.runtime.engine.begin() as conn:
        conn.execute(db.orders.insert(), [dict(
            store_id=store_id, external_id=f"{tag}{n}", payload="{}", state="done",
            payment_state="paid", next_attempt_at=0.0, created_at=0.0, updated_at=0.0,
            invoice_id=f"inv-{tag}{n}") for n in range(orders)])
        ids = conn.execute(sa.select(db.orders.c.id).where(
            db.orders.c.store_id == store_id, db.orders.c.external_id.like(f"{tag}%"))
            .order_by(db.orders.c.id)).scalars().all()
        conn.execute(db.events.insert(), [dict(order_id=pk, at=0.0, kind=kind, message="")
                                          for pk in ids for kind in ("received", "invoiced")])
        conn.execute(db.attempts.insert(), [dict(
            order_id=pk, number=1, upay_order_id=f"u-{pk}", state="created", created_at=0.0,
            updated_at=0.0, token=f"t-{pk}") for pk in ids])
        attempts = dict(conn.execute(sa.select(db.attempts.c.order_id, db.attempts.c.id).where(
            db.attempts.c.order_id.in_(ids))).all())
        conn.execute(db.payments.insert(), [dict(
            order_id=pk, attempt_id=attempts[pk], track_id=f"track-{pk}", result="CAPTURED",
            source="notify", created_at=0.0) for pk in ids])
        conn.execute(db.store_actions.insert(), [dict(
            order_id=pk, kind="mark_paid", dedupe_key=f"mark_paid:{pk}", state="done",
            created_at=0.0, updated_at=0.0) for pk in ids])
        conn.execute(db.deliveries.insert(), [dict(
            store_id=store_id, topic="order.created", outcome=outcome, body_sha256="0" * 64,
            received_at=0.0, external_order_id=f"{tag}{n}")
            for n in range(orders) for outcome in ("accepted", "ignored")])
        conn.execute(db.notifications.insert(), [dict(
            store_id=store_id, kind="notify", fields="{}", state="matched", received_at=0.0,
            order_id=pk) for pk in ids] + [dict(
            store_id=store_id, kind="notify", fields="{}", state="unmatched", received_at=0.0,
            order_id=None) for _ in range(orders // 10)])


def seed(bridge: Bridge) -> tuple[StoreRecord, StoreRecord]:
    """Two stores whose rows interleave (ids of one between ids of the other)."""
    gone, kept = add_store(bridge, "gone"), add_store(bridge, "kept")
    for part in range(4):
        add_history(bridge, gone.id, ORDERS // 4, f"g{part}-")
        add_history(bridge, kept.id, OTHER_ORDERS // 4, f"k{part}-")
    with bridge.runtime.engine.begin() as conn:
        merchant = conn.execute(db.merchants.insert().values(
            email="owner@shop.example", password_hash="x", created_at=0.0)).inserted_primary_key[0]
        for record in (gone, kept):
            conn.execute(db.store_health.insert().values(store_id=record.id))
            conn.execute(db.dashboard_sessions.insert().values(store_id=record.id, version=1))
            conn.execute(db.installs.insert().values(
                token=f"install-{record.id}", merchant_id=merchant, store_url=record.url,
                store_id=record.id, created_at=0.0))
    return gone, kept


def rows_of(bridge: Bridge, store_id: str) -> dict[str, int]:
    """How many rows each table holds for the store."""
    counts: dict[str, int] = {}
    order_ids = sa.select(db.orders.c.id).where(db.orders.c.store_id == store_id)
    with bridge.runtime.engine.connect() as conn:
        for table in BY_STORE:
            counts[table.name] = conn.execute(sa.select(sa.func.count()).select_from(table)
                                              .where(table.c.store_id == store_id)).scalar()
        for table in BY_ORDER:
            counts[f"{table.name} of orders"] = conn.execute(
                sa.select(sa.func.count()).select_from(table)
                .where(table.c.order_id.in_(order_ids))).scalar()
    return counts


def store_rows(bridge: Bridge, store_id: str) -> int:
    with bridge.runtime.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(db.stores)
                            .where(db.stores.c.id == store_id)).scalar()


def watch(bridge: Bridge, hook: Callable[[str, Any], None]) -> Callable[[], None]:
    """Call ``hook(statement, parameters)`` before each statement; returns the unhooking."""
    engine = bridge.runtime.engine

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
               _executemany: bool) -> None:
        hook(" ".join(statement.split()), parameters)

    sa.event.listen(engine, "before_cursor_execute", before)
    return lambda: sa.event.remove(engine, "before_cursor_execute", before)


def is_batch_start(statement: str) -> bool:
    return statement.startswith("SELECT orders.id FROM orders WHERE orders.store_id")


def test_removal_empties_every_table_of_the_store_and_no_other(bridge_factory):
    bridge = bridge_factory(worker=False)
    gone, kept = seed(bridge)
    before = rows_of(bridge, gone.id)
    assert before["orders"] == ORDERS and before["payments of orders"] == ORDERS
    assert before["notifications"] == ORDERS + ORDERS // 10
    kept_before = rows_of(bridge, kept.id)

    batches: list[str] = []
    unhook = watch(bridge, lambda s, _p: batches.append(s) if is_batch_start(s) else None)
    try:
        bridge.runtime.registry.remove(gone.id, batch_size=BATCH)
    finally:
        unhook()

    assert set(rows_of(bridge, gone.id).values()) == {0}
    assert store_rows(bridge, gone.id) == 0
    assert rows_of(bridge, kept.id) == kept_before
    assert store_rows(bridge, kept.id) == 1
    # Several short transactions, not one: no batch holds more than BATCH orders.
    assert len(batches) >= ORDERS // BATCH
    assert bridge.runtime.registry.pending_removals() == []
    with pytest.raises(UnknownStoreError):
        bridge.runtime.registry.remove(gone.id)


def test_an_interrupted_removal_is_finished_by_removing_again(bridge_factory):
    bridge = bridge_factory(worker=False)
    registry = bridge.runtime.registry
    gone, kept = seed(bridge)
    kept_before = rows_of(bridge, kept.id)
    assert registry.get(gone.id).id == gone.id  # cached: the removal must drop it

    class Crash(Exception):
        pass

    started: list[str] = []

    def crash_before_fourth_batch(statement: str, _parameters: Any) -> None:
        if is_batch_start(statement):
            started.append(statement)
            if len(started) == 4:
                raise Crash()

    unhook = watch(bridge, crash_before_fourth_batch)
    try:
        with pytest.raises(Crash):
            registry.remove(gone.id, batch_size=BATCH)
    finally:
        unhook()

    # Half removed: three batches done, the rest of the history and the store row still there.
    left = rows_of(bridge, gone.id)
    assert 0 < left["orders"] < ORDERS
    assert left["payments of orders"] == left["attempts of orders"] == left["orders"]
    assert left["events of orders"] == 2 * left["orders"]
    assert store_rows(bridge, gone.id) == 1
    # ... and served by nobody meanwhile: no lookup finds it, a webhook for it is refused.
    with pytest.raises(UnknownStoreError):
        registry.get(gone.id)
    assert registry.find(gone.id) is None
    assert registry.find_by_url("woocommerce", gone.url) is None
    assert [r.id for r in registry.list()] == [kept.id]
    with pytest.raises(UnknownStoreError):
        registry.update(gone.id, secrets={"upay_api_key": "another-key-0123456789"})
    resp = requests.post(bridge.webhook_url(gone), data=b"{}", timeout=10,
                         headers={"Content-Type": "application/json"})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "unknown_store"
    assert registry.pending_removals() == [gone.id]
    with bridge.runtime.engine.connect() as conn:
        assert conn.execute(sa.select(db.stores.c.kind).where(db.stores.c.id == gone.id)
                            ).scalar() == REMOVING

    registry.remove(gone.id, batch_size=BATCH)

    assert set(rows_of(bridge, gone.id).values()) == {0}
    assert store_rows(bridge, gone.id) == 0
    assert rows_of(bridge, kept.id) == kept_before
    assert registry.pending_removals() == []


class _Cancelled(Exception):
    """What the database driver raises for a statement cancelled at its statement timeout."""

    sqlstate = "57014"


def test_a_batch_cancelled_by_the_statement_timeout_is_retried_smaller(bridge_factory,
                                                                       monkeypatch):
    # Only the cancel changes the batch size here, however long a batch takes on this machine.
    monkeypatch.setattr(registry_module, "REMOVAL_BATCH_SECONDS", float("inf"))
    bridge = bridge_factory(worker=False)
    gone, kept = seed(bridge)
    kept_before = rows_of(bridge, kept.id)
    limits: list[int] = []

    def cancel_third_batch(statement: str, parameters: Any) -> None:
        if is_batch_start(statement):
            limits.append(_limit(parameters))
            if len(limits) == 3:
                raise sa.exc.OperationalError(statement, parameters, _Cancelled())

    unhook = watch(bridge, cancel_third_batch)
    try:
        bridge.runtime.registry.remove(gone.id, batch_size=BATCH)
    finally:
        unhook()

    assert limits[2] == BATCH and limits[3] == BATCH // 2  # the cancelled batch, then its retry
    assert set(rows_of(bridge, gone.id).values()) == {0}
    assert store_rows(bridge, gone.id) == 0
    assert rows_of(bridge, kept.id) == kept_before


def _limit(parameters: Any) -> int:
    """The LIMIT of a batch's SELECT: its third parameter (after the store and the last id)."""
    values = list(parameters.values()) if isinstance(parameters, dict) else list(parameters)
    return int(values[2])


def test_a_removal_cut_short_is_finished_by_the_periodic_task_and_the_cli(
        bridge_factory, monkeypatch):
    # A web process killed while a merchant disconnected a store leaves it hidden with part of
    # its history: the worker's periodic task finishes it once it is clearly not running any
    # more, and so does `store remove` (which no longer finds it by the usual lookup).
    from click.testing import CliRunner

    from bridge import cli

    bridge = bridge_factory(worker=False)
    registry = bridge.runtime.registry
    gone, kept = seed(bridge)
    other = add_store(bridge, "other")
    kept_before = rows_of(bridge, kept.id)
    for record in (gone, other):
        with bridge.runtime.engine.begin() as conn:  # marked as a removal that stopped early
            conn.execute(db.stores.update().where(db.stores.c.id == record.id)
                         .values(kind=REMOVING, updated_at=1000.0))

    # Marked just now: maybe still running elsewhere, so left alone.
    assert registry.finish_removals(idle_seconds=1e12) == 0
    assert store_rows(bridge, gone.id) == 1

    assert registry.finish_removals() == 2
    assert set(rows_of(bridge, gone.id).values()) == {0}
    assert store_rows(bridge, gone.id) == store_rows(bridge, other.id) == 0
    assert rows_of(bridge, kept.id) == kept_before
    assert registry.pending_removals() == []

    # The operator's command finishes one too, and says so.
    third = add_store(bridge, "third")
    with bridge.runtime.engine.begin() as conn:
        conn.execute(db.stores.update().where(db.stores.c.id == third.id).values(kind=REMOVING))
    monkeypatch.setattr(cli, "_runtime", lambda: bridge.runtime)
    result = CliRunner().invoke(cli.main, ["store", "remove", third.id, "--yes"])
    assert result.exit_code == 0, result.output
    assert "finished an interrupted removal" in result.output
    assert store_rows(bridge, third.id) == 0
    result = CliRunner().invoke(cli.main, ["store", "remove", third.id, "--yes"])
    assert result.exit_code == 1 and "no store" in result.output
