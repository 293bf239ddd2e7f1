from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import sqlalchemy as sa

from bridge import db
from bridge.app import create_app
from bridge.config import load_settings
from bridge.crypto import generate_key
from bridge.fakes.lazy import AppSlot
from bridge.fakes.saleor import FakeSaleor
from bridge.fakes.server import ServedApp, serve_wsgi
from bridge.fakes.upay import FakeUPay
from bridge.fakes.woocommerce import FakeWooCommerce
from bridge.registry import StoreRecord, StoreSettings
from bridge.runtime import Runtime, bootstrap

UPAY_KEY = "upay-key-9f2c81d7e4"
WEBHOOK_SECRET = "whsec-4b1d7e29c0aa57f3"


# Test modules that set BOTH_LAYOUTS = True run every test twice: on the embedded default
# (SQLite, the worker's threads in the test process) and on the scale-out layout (PostgreSQL,
# a Redis queue, and the worker in a process of its own).
LAYOUTS = ("embedded", "scaled")
PG_ADMIN_URL = os.environ.get("UPAY_BRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("UPAY_BRIDGE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "layout" in metafunc.fixturenames and getattr(metafunc.module, "BOTH_LAYOUTS", False):
        metafunc.parametrize("layout", LAYOUTS)


def scaled_available() -> str:
    """"" when PostgreSQL and Redis answer, else why not."""
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


def require_scaled() -> None:
    problem = scaled_available()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL/Redis must run in CI: {problem}")
        pytest.skip(f"PostgreSQL or Redis not reachable: {problem}")


class PgDatabases:
    """Fresh PostgreSQL databases (and Redis queue names) for one test, dropped after it."""

    def __init__(self) -> None:
        self._admin = sa.create_engine(
            PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"),
            isolation_level="AUTOCOMMIT")
        self.names: list[str] = []

    def create(self) -> str:
        import uuid

        name = f"upay_bridge_t_{uuid.uuid4().hex[:10]}"
        with self._admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return name

    def url(self, name: str) -> str:
        return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    def drop_all(self) -> None:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for name in self.names:
            for key in client.scan_iter(f"*{name.replace('_', '')}*"):
                client.delete(key)
            with self._admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._admin.dispose()


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@dataclass
class Bridge:
    runtime: Runtime
    served: ServedApp
    url: str
    consumer: Any = None
    layout: str = "embedded"

    def start_worker(self, workers: int = 4) -> None:
        if self.consumer is None:
            if self.layout == "scaled":
                from .worker_process import WorkerProcess

                self.consumer = WorkerProcess(self.runtime.settings, workers)
                return
            # No periodic tasks in tests: a sweep, reconcile or webhook check firing at a minute
            # boundary would make results depend on the clock; tests call them directly.
            self.consumer = self.runtime.jobs.consumer(workers, periodic=False)
            self.consumer.start()

    def stop_worker(self) -> None:
        if self.consumer is not None:
            if self.layout == "scaled":
                self.consumer.stop()
            else:
                self.consumer.stop(graceful=True)
            self.consumer = None

    def orders(self) -> list[Any]:
        with self.runtime.engine.connect() as conn:
            return conn.execute(sa.select(db.orders).order_by(db.orders.c.id)).all()

    def order(self, external_id: Any) -> Any:
        with self.runtime.engine.connect() as conn:
            return conn.execute(sa.select(db.orders).where(
                db.orders.c.external_id == str(external_id))).first()

    def attempts(self, pk: int) -> list[Any]:
        with self.runtime.engine.connect() as conn:
            return conn.execute(sa.select(db.attempts).where(db.attempts.c.order_id == pk)
                                .order_by(db.attempts.c.number)).all()

    def count(self, table: sa.Table) -> int:
        with self.runtime.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()

    def wait_state(self, external_id: Any, *states: str, timeout: float = 30.0) -> Any:
        return wait_for(lambda: (r := self.order(external_id)) is not None and r.state in states
                        and r.lease_owner is None and r, timeout)

    def webhook_url(self, record: StoreRecord) -> str:
        return f"{self.url}/webhooks/{record.kind}/{record.id}"


@pytest.fixture
def fake_upay() -> Iterator[FakeUPay]:
    fake = FakeUPay(valid_keys=("jtest123", UPAY_KEY))
    served = fake.serve()
    fake.url = served.url  # type: ignore[attr-defined]
    yield fake
    served.shutdown()


@pytest.fixture
def fake_wc() -> Iterator[FakeWooCommerce]:
    fake = FakeWooCommerce(decimals=3, currency="KWD")
    fake.delivery_timeout = 10
    served = fake.serve()
    yield fake
    served.shutdown()


@pytest.fixture
def settings_factory(tmp_path: Path, fake_upay: FakeUPay) -> Callable[..., Any]:
    def make(**overrides: Any) -> Any:
        base = dict(
            data_dir=tmp_path / "data",
            upay_sandbox_url=f"{fake_upay.url}/api/v1/",  # type: ignore[attr-defined]
            upay_production_url=f"{fake_upay.url}/api/v1/",  # type: ignore[attr-defined]
            secret_keys=(generate_key(),),
            upay_read_timeout=2.0, store_read_timeout=2.0,
            retry_base_seconds=0.05, retry_max_seconds=0.2, lease_seconds=30.0,
            sweep_grace_seconds=0.0, max_retries=6,
            # The fake stores listen on loopback; tests of the refusal turn this off.
            allow_private_store_urls=True,
        )
        data_dir = overrides.pop("data_dir", base.pop("data_dir"))
        base.update(database_url=f"sqlite:///{data_dir / 'bridge.db'}",
                    queue_url=f"sqlite:///{data_dir / 'queue.db'}")
        base.update(overrides)
        return load_settings({}, data_dir=data_dir).with_overrides(**base)
    return make


@pytest.fixture
def layout() -> str:
    """The embedded default, unless the module asks for BOTH_LAYOUTS."""
    return "embedded"


@pytest.fixture
def bridge_factory(settings_factory: Callable[..., Any],
                   layout: str) -> Iterator[Callable[..., Bridge]]:
    made: list[Bridge] = []
    databases: PgDatabases | None = None
    if layout == "scaled":
        require_scaled()
        databases = PgDatabases()

    def make(worker: bool = True, **overrides: Any) -> Bridge:
        slot = AppSlot()
        served = serve_wsgi(slot)
        if databases is not None and "database_url" not in overrides:
            name = databases.create()
            overrides = {"database_url": databases.url(name), "queue_url": REDIS_URL,
                         "queue_name": name, **overrides}
        settings = settings_factory(public_url=served.url, **overrides)
        rt = bootstrap(settings)
        slot.app = create_app(rt)
        bridge = Bridge(rt, served, served.url, layout=layout)
        made.append(bridge)
        if worker:
            bridge.start_worker()
        return bridge

    yield make
    for bridge in made:
        bridge.stop_worker()
        bridge.served.shutdown()
        if databases is not None:
            bridge.runtime.jobs.huey.flush()
        bridge.runtime.close()
    if databases is not None:
        databases.drop_all()


@pytest.fixture
def bridge(bridge_factory: Callable[..., Bridge]) -> Bridge:
    return bridge_factory()


@pytest.fixture
def connect_store(fake_wc: FakeWooCommerce) -> Callable[..., StoreRecord]:
    """Register a fake WooCommerce store on a bridge and point a webhook at it."""

    def connect(bridge: Bridge, *, webhook: bool = True, **settings: Any) -> StoreRecord:
        ck, cs = fake_wc.add_api_key("read_write")
        record = bridge.runtime.registry.add(
            "woocommerce", fake_wc.base_url,
            {"consumer_key": ck, "consumer_secret": cs, "webhook_secret": WEBHOOK_SECRET,
             "upay_api_key": UPAY_KEY},
            name="Test shop", upay_sandbox=True, settings=StoreSettings(**settings))
        if webhook:
            fake_wc.add_webhook("order.created", bridge.webhook_url(record), WEBHOOK_SECRET)
        return record

    return connect


@pytest.fixture
def scaled_env(tmp_path, fake_upay):
    """Environment for bridge processes on PostgreSQL and Redis (a fresh database and queue)."""
    from .test_serve import free_port
    require_scaled()
    import uuid

    import sqlalchemy as sa
    name = f"upay_bridge_s_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    port = free_port()
    env = {**os.environ,
           "UPAY_BRIDGE_DATA_DIR": str(tmp_path / "data"),
           "UPAY_BRIDGE_DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name,
           "UPAY_BRIDGE_QUEUE_URL": REDIS_URL, "UPAY_BRIDGE_QUEUE_NAME": name,
           "UPAY_BRIDGE_SECRET_KEY": generate_key(),
           "UPAY_BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
           "UPAY_BRIDGE_UPAY_SANDBOX_URL": f"{fake_upay.url}/api/v1/",
           "PORT_FOR_TEST": str(port)}
    yield env
    import redis
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"*{name.replace('_', '')}*"):
        client.delete(key)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def saleor() -> Iterator[FakeSaleor]:
    fake = FakeSaleor(currency="KWD")
    served = fake.serve()
    yield fake
    served.shutdown()


@pytest.fixture
def installed(bridge: Bridge, saleor: FakeSaleor) -> StoreRecord:
    """The bridge installed as an App on the fake Saleor, with a UPay key set."""
    result = saleor.install(f"{bridge.url}/saleor/manifest")
    assert result.ok, result.message
    record = bridge.runtime.registry.find_by_url("saleor", saleor.api_url)
    assert record is not None and record.secrets["app_token"] == result.token
    bridge.runtime.registry.update(record.id, secrets={"upay_api_key": UPAY_KEY})
    return bridge.runtime.registry.get(record.id)


# The settings page's browser tests: Debian's chromium, driven by playwright (which cannot
# download a browser here).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium must be installed in CI (.ci/run installs it)")
        pytest.skip("chromium is not installed")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()
