"""Wire the bridge's parts together once, for the web app, a worker or a CLI command."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from . import db
from .accounts import Accounts
from .config import Settings, load_settings
from .crypto import SecretBox, load_or_create_keys
from .payments import Payments
from .pipeline import Pipeline
from .ratelimit import RateLimiter
from .queue import Jobs, make_huey
from .registry import StoreRegistry
from .store_health import StoreHealth

#: How much longer than UPay's own window the status-call limiter counts (see bootstrap).
STATUS_WINDOW_MARGIN = 1.05


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    box: SecretBox
    registry: StoreRegistry
    pipeline: Pipeline
    payments: Payments
    jobs: Jobs
    health: StoreHealth
    accounts: Accounts

    def close(self) -> None:
        self.pipeline.close()
        self.engine.dispose()


def quiet_transport_logs() -> None:
    # urllib3 logs every request URL at DEBUG, and over plain http the woocommerce package puts
    # the OAuth consumer key in the URL: keep those lines out of the bridge's logs at any level.
    logging.getLogger("urllib3").setLevel(logging.INFO)


def bootstrap(settings: Settings | None = None, *, migrate: bool = True,
              immediate: bool = False) -> Runtime:
    settings = settings or load_settings()
    quiet_transport_logs()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Workers and web threads (waitress' 8, or gunicorn's) each hold a connection at a time.
    engine = db.make_engine(settings.database_url, pool_size=settings.workers + 8)
    if migrate:
        db.migrate(engine)
    box = SecretBox(load_or_create_keys(settings.secret_keys, settings.data_dir))
    registry = StoreRegistry(engine, box)
    pipeline = Pipeline(engine, registry, settings)
    # UPay counts calls as they arrive; the limiter, as it grants them. A call granted a moment
    # before it is sent, or on a machine whose clock is a little behind, would let the next
    # window's first call arrive inside UPay's window; 5 % more window absorbs that.
    limiter = RateLimiter(engine, settings.status_rate_limit,
                          settings.status_rate_window * STATUS_WINDOW_MARGIN)
    payments = Payments(engine, registry, settings, pipeline, limiter)
    health = StoreHealth(engine, registry, pipeline, settings)
    jobs = Jobs(make_huey(settings.queue_url, name=settings.queue_name, immediate=immediate),
                pipeline, payments, health)
    return Runtime(settings, engine, box, registry, pipeline, payments, jobs, health,
                   Accounts(engine))
