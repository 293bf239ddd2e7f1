"""The same pipeline on the scale-out layout: PostgreSQL as the database, Redis as the queue.

.ci/run starts both servers on 127.0.0.1; outside CI the tests are skipped when they are absent.
"""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from .test_pipeline import BILLING, charge_for

PG_ADMIN_URL = os.environ.get("UPAY_BRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("UPAY_BRIDGE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _available() -> str:
    try:
        import redis

        engine = sa.create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
        return ""
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture
def scaled_bridge(bridge_factory):
    problem = _available()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL/Redis must run in CI: {problem}")
        pytest.skip(f"PostgreSQL or Redis not reachable: {problem}")
    name = f"upay_bridge_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    db_url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    bridge = bridge_factory(database_url=db_url, queue_url=REDIS_URL, queue_name=name)
    yield bridge
    bridge.stop_worker()
    bridge.runtime.jobs.huey.flush()
    bridge.runtime.close()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_postgres_and_redis_layout_invoices_once(scaled_bridge, connect_store, fake_wc, fake_upay):
    assert scaled_bridge.runtime.engine.dialect.name == "postgresql"
    connect_store(scaled_bridge)
    fake_wc.add_product(1, "Oud oil", "7.125")
    orders = [fake_wc.create_order([{"product_id": 1, "quantity": 2}], billing=BILLING)
              for _ in range(5)]
    fake_wc.deliver_queued()
    webhook_id = next(iter(fake_wc.webhooks.values()))["id"] if isinstance(fake_wc.webhooks, dict) \
        else fake_wc.webhooks[0]["id"]
    fake_wc.deliver(webhook_id, orders[0]["id"], times=5, concurrently=True)
    for order in orders:
        scaled_bridge.wait_state(order["id"], "done", timeout=30)
        assert len(charge_for(fake_upay, order["id"])) == 1
        assert len(fake_wc.notes(order["id"])) == 1
