"""Processes killed with SIGKILL in the middle of a burst of 500 orders, on PostgreSQL + Redis.

* A worker killed mid-request: after a restart every order has its invoice and its note, and each
  create-invoice call whose outcome the dead worker never learned is handled by the
  unknown-outcome design (a superseded attempt, never a silent duplicate).
* A web process killed while WooCommerce delivers: deliveries fail while it is down (WooCommerce
  never sends them again, and disables the webhook after repeated failures); after a restart,
  ``store catch-up`` re-activates the webhook and finds the lost orders, and every order still
  gets exactly one invoice and one note.

The kill point is random (the seed is printed, and ``UPAY_BRIDGE_CRASH_SEED`` replays it).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from bridge import db

from .conftest import UPAY_KEY, wait_for
from .test_scale_out import _up
from .test_serve import command

ORDERS = 500
SECRET = "crash-secret"


@dataclass
class Deployment:
    env: dict[str, str]
    store: dict[str, Any]
    port: str
    engine: Any

    def web(self) -> subprocess.Popen:
        proc = subprocess.Popen(command("serve", "--port", self.port, "--no-worker"),
                                env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_for(lambda: _up(self.port), timeout=30)
        return proc

    def worker(self) -> subprocess.Popen:
        return subprocess.Popen(command("worker", "--workers", "8"), env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def count(self, *where: Any) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(db.orders)
                                .where(*where)).scalar()

    def attempts(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.select(db.attempts.c.upay_order_id,
                                               db.attempts.c.state)).all())


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(command(*args), env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"upay-bridge {args[:2]} exited {done.returncode}: {done.stderr}"
    return done.stdout


@pytest.fixture
def deployment(scaled_env, fake_wc, fake_upay):
    env = {**scaled_env, "UPAY_BRIDGE_LEASE_SECONDS": "3", "UPAY_BRIDGE_RETRY_BASE_SECONDS": "0.2",
           "UPAY_BRIDGE_RETRY_MAX_SECONDS": "1", "UPAY_BRIDGE_SWEEP_GRACE_SECONDS": "2"}
    _cli(env, "db", "upgrade")
    ck, cs = fake_wc.add_api_key("read_write")
    store = json.loads(_cli(env, "store", "add", "woocommerce", "--allow-private",
                            "--url", fake_wc.base_url, "--consumer-key", ck,
                            "--consumer-secret", cs, "--webhook-secret", SECRET,
                            "--upay-api-key", UPAY_KEY, "--upay-sandbox", "--json"))
    engine = db.make_engine(env["UPAY_BRIDGE_DATABASE_URL"])
    procs: list[subprocess.Popen] = []
    yield Deployment(env, store, env["PORT_FOR_TEST"], engine), procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    engine.dispose()


def _seeded() -> random.Random:
    seed = int(os.environ.get("UPAY_BRIDGE_CRASH_SEED") or random.randrange(1 << 30))
    print(f"\ncrash seed {seed} (UPAY_BRIDGE_CRASH_SEED={seed} replays it)")
    return random.Random(seed)


def _place_orders(fake_wc) -> list[dict[str, Any]]:
    return [fake_wc.create_order([{"name": "Tea", "price": "1.250", "quantity": 2}],
                                 billing={"first_name": "A", "email": "a@example.com"})
            for _ in range(ORDERS)]


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _check_every_order_once(d: Deployment, fake_wc, fake_upay, orders: list[dict]) -> tuple:
    for order in orders:
        assert len(fake_wc.notes(order["id"])) == 1, order["id"]
    states = d.attempts()
    created = [k for k, v in states.items() if v == "created"]
    unknown = [k for k, v in states.items() if v == "unknown"]
    assert len(created) == ORDERS and set(states.values()) <= {"created", "unknown"}
    # Every invoice UPay made belongs to one of our attempts: the order's own invoice, or an
    # attempt nobody heard back from, kept as superseded so that a payment on it still finds
    # the order. (An unknown attempt may also never have reached UPay.)
    sent = [c.json["order"]["id"] for c in fake_upay.charges()]
    assert set(sent) <= set(states) and len(sent) == len(set(sent))
    assert set(created) <= set(sent)
    extra = set(sent) - set(created)
    assert extra <= set(unknown)
    return unknown, extra


@pytest.mark.slow
def test_worker_killed_during_a_burst(deployment, fake_wc, fake_upay):
    d, procs = deployment
    rng = _seeded()
    procs.append(d.web())
    fake_wc.add_webhook("order.created", d.store["webhook_url"], SECRET)
    fake_upay.latency = 0.05  # so the kill lands while calls are in flight
    worker = d.worker()
    procs.append(worker)
    orders = _place_orders(fake_wc)
    delivered = fake_wc.deliver_queued()
    assert all(r.status_code == 200 for r in delivered), {r.status_code for r in delivered}
    kill_after = rng.randrange(20, 400)
    wait_for(lambda: len(fake_upay.charges()) >= kill_after, timeout=90)
    _kill(worker)  # mid-burst, mid-request
    killed_at = len(fake_upay.charges())
    procs.append(d.worker())
    # The restarted worker sweeps at once, and again when the dead one's leases have expired.
    wait_for(lambda: d.count(db.orders.c.state == "done") == ORDERS, timeout=180, interval=0.5)
    unknown, extra = _check_every_order_once(d, fake_wc, fake_upay, orders)
    print(f"worker killed after {killed_at} UPay calls: {len(unknown)} attempts had an unknown "
          f"outcome ({len(extra)} of them had reached UPay); all were superseded")


@pytest.mark.slow
def test_web_process_killed_during_a_burst(deployment, fake_wc, fake_upay):
    d, procs = deployment
    rng = _seeded()
    web = d.web()
    procs.append(web)
    procs.append(d.worker())
    fake_wc.add_webhook("order.created", d.store["webhook_url"], SECRET)
    orders = _place_orders(fake_wc)
    delivered: list[Any] = []
    sender = threading.Thread(target=lambda: delivered.extend(fake_wc.deliver_queued()),
                              daemon=True)
    sender.start()
    kill_after = rng.randrange(20, 400)
    wait_for(lambda: d.count() >= kill_after, timeout=60, interval=0.01)
    _kill(web)  # mid-burst: requests in flight are cut, the rest find nobody listening
    recorded_at_kill = d.count()
    procs.append(d.web())
    sender.join(timeout=120)
    failed = sum(1 for r in delivered if r.status_code != 200)
    assert failed > 0  # the kill did lose deliveries
    status = [h["status"] for h in fake_wc.webhooks.values()]
    caught = subprocess.run(command("store", "catch-up", d.store["id"], "--min-age", "0"),
                            env=d.env, check=True, capture_output=True, text=True).stdout
    wait_for(lambda: d.count(db.orders.c.state == "done") == ORDERS, timeout=180, interval=0.5)
    unknown, extra = _check_every_order_once(d, fake_wc, fake_upay, orders)
    assert not unknown  # the worker never stopped: no call had an unknown outcome
    print(f"web killed with {recorded_at_kill} orders recorded: {failed} deliveries failed "
          f"(webhook then {status}); catch-up: {caught.strip()}")
