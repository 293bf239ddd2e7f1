"""The durable job queue: Huey, on SQLite by default and on Redis for several machines.

The database, not the queue, is the record of what must be done: a job only says "look at order
row N now". A job lost with a crashed machine or a flushed Redis is found again by the periodic
``sweep``, and a job run twice is harmless because ``process_order`` takes a lease on the row.
On the embedded layout (SQLite database and queue) a new order has no job at all: its row is
the job, found by the workers in the database (``bridge/new_orders.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from huey import Huey, MemoryHuey, crontab
from huey.storage import RedisStorage, SqliteStorage

from .errors import UnknownStoreError
from .new_orders import NewOrderFeed
from .payments import Payments
from .pipeline import Pipeline

if TYPE_CHECKING:
    from .store_health import StoreHealth

logger = logging.getLogger(__name__)


class _QueueFileStorage(SqliteStorage):
    """Huey's SQLite queue with ``synchronous=NORMAL`` in WAL mode: a commit survives a crash
    of the process without waiting for the disk (Huey's default syncs every enqueue). A job
    lost with the machine's power is found again by the sweep, since the job only points at
    an order row of the database."""

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        conn.execute("pragma synchronous=NORMAL")
        return conn

    #: Set by ``Jobs`` when the database is SQLite too: new orders are found in it
    #: (``bridge/new_orders.py``), each handed out as the job ``new_order_job`` makes.
    new_orders: NewOrderFeed | None = None
    new_order_job: Callable[[int], bytes]  # set with new_orders

    def enqueue_many(self, datas: list[bytes]) -> None:
        """Several jobs in one transaction and one INSERT (Huey's ``enqueue`` commits each
        job; ``executemany`` would run a statement per job, each giving up the GIL)."""
        values = ", ".join(["(?, ?, 0)"] * len(datas))
        with self.db(commit=True) as cursor:
            cursor.execute(f"insert into task (queue, data, priority) values {values}",
                           [v for data in datas for v in (self.name, self.to_blob(data))])

    def dequeue(self) -> Any:
        """A queued job first (retries, confirmations, sweeps), else a new order's."""
        data = super().dequeue()
        if data is None and self.new_orders is not None:
            pk = self.new_orders.take()
            if pk is not None:
                return self.new_order_job(pk)
        return data

    def queue_size(self) -> int:
        size = int(super().queue_size())
        if self.new_orders is not None:
            size += self.new_orders.pending()
        return size


class _RedisQueueStorage(RedisStorage):
    """Huey's Redis queue, with several jobs pushed in one command."""

    def enqueue_many(self, datas: list[bytes]) -> None:
        # LPUSH adds its values in order at the head and workers pop the tail: first in, first out.
        self.conn.lpush(self.queue_key, *datas)


#: Seconds to connect to Redis, and to wait for the answer to one command.
REDIS_TIMEOUT = 5.0


def make_huey(queue_url: str, *, name: str = "upay-bridge", immediate: bool = False) -> Huey:
    if immediate or queue_url == "memory://":
        return MemoryHuey(name, results=False, immediate=immediate, utc=True)
    if queue_url.startswith(("redis://", "rediss://", "unix://")):
        from redis import ConnectionPool

        # Explicit socket timeouts: a Redis that stops answering (hung, or a network that
        # swallows packets) otherwise holds the web thread queueing a job, /healthz and the
        # consumer's BRPOP for ever with redis-py 7 and older, which have no default timeout.
        # Workers block on BRPOP for 1 s at a time (Huey's read_timeout), well under these.
        pool = ConnectionPool.from_url(queue_url, socket_timeout=REDIS_TIMEOUT,
                                       socket_connect_timeout=REDIS_TIMEOUT)
        return Huey(name, storage_class=_RedisQueueStorage, connection_pool=pool, results=False,
                    utc=True, blocking=True)
    if queue_url.startswith("sqlite:///"):
        path = Path(queue_url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return Huey(name, storage_class=_QueueFileStorage, filename=str(path), results=False,
                    utc=True, timeout=30)
    # Only the scheme: the rest of the URL may hold the queue's password.
    raise ValueError(f"unsupported UPAY_BRIDGE_QUEUE_URL scheme {queue_url.split(':', 1)[0][:20]!r}"
                     " (use sqlite:///path, redis://host:port/db or memory://)")


class Jobs:
    """The bridge's tasks, bound to one pipeline."""

    def __init__(self, huey: Huey, pipeline: Pipeline, payments: Payments,
                 health: StoreHealth) -> None:
        self.huey = huey

        @huey.task(name="process_order")
        def process_order(pk: int) -> str:
            return pipeline.process_order(pk)

        @huey.task(name="confirm_payment")
        def confirm_payment(pk: int, hint: dict) -> str:
            return payments.confirm(pk, hint)

        @huey.periodic_task(crontab(minute="*"), name="sweep")
        def sweep() -> int:
            return pipeline.sweep()

        # The same sweep on demand (the periodic one only fires on a minute boundary).
        @huey.task(name="sweep_now")
        def sweep_now() -> int:
            return pipeline.sweep()

        @huey.periodic_task(crontab(minute="*"), name="reconcile")
        def reconcile() -> int:
            return payments.reconcile()

        # Re-activate webhooks WooCommerce disabled, and catch up lost deliveries.
        @huey.periodic_task(crontab(minute="*/5"), name="store_health")
        def store_health() -> int:
            return health.tick()

        # A store's removal cut short (see StoreRegistry.finish_removals) is finished here.
        @huey.periodic_task(crontab(minute="*/5"), name="finish_removals")
        def finish_removals() -> int:
            return pipeline.registry.finish_removals()

        @huey.task(name="register_webhook", retries=6, retry_delay=20)
        def register_webhook(store_id: str) -> None:
            health.register_webhook(store_id)

        # A store the merchant disconnected: its history goes here, not in the web request (a
        # big store takes seconds). Lost or failed for good, finish_removals does it later.
        @huey.task(name="remove_store", retries=3, retry_delay=30)
        def remove_store(store_id: str) -> None:
            try:
                pipeline.registry.remove(store_id)
            except UnknownStoreError:
                pass  # finished meanwhile (finish_removals, `store remove`)

        self._register_webhook = register_webhook
        self._remove_store = remove_store
        self._sweep_now = sweep_now
        self._settings = pipeline.settings
        self._process_order = process_order
        self._confirm_payment = confirm_payment
        pipeline.schedule = self.enqueue
        pipeline.schedule_many = self.enqueue_many
        storage = huey.storage
        if isinstance(storage, _QueueFileStorage) and pipeline.engine.dialect.name == "sqlite":
            # The embedded layout: a new order's row is its job (bridge/new_orders.py).
            feed = NewOrderFeed(pipeline.engine, clock=pipeline.clock)
            storage.new_orders = feed
            storage.new_order_job = lambda pk: huey.serialize_task(process_order.s(pk))
            pipeline.schedule_many = lambda pks: feed.wake()
        payments.schedule = self.enqueue_confirmation

    def enqueue(self, pk: int, delay: float = 0.0) -> None:
        self._submit(self._process_order, (pk,), delay)

    def enqueue_many(self, pks: list[int]) -> None:
        """New orders, each due now, in one write to the queue where the queue allows it."""
        enqueue_many = getattr(self.huey.storage, "enqueue_many", None)
        if enqueue_many is None or self.huey.immediate:
            for pk in pks:
                self.enqueue(pk)
            return
        try:
            enqueue_many([self.huey.serialize_task(self._process_order.s(pk)) for pk in pks])
        except Exception:  # noqa: BLE001 - the state is in the database; the sweeps find it
            logger.exception("could not queue %d orders; the periodic sweep will pick them up",
                             len(pks))

    def enqueue_webhook_setup(self, store_id: str) -> None:
        self._submit(self._register_webhook, (store_id,), 0.0)

    def enqueue_store_removal(self, store_id: str) -> None:
        """Delete a store already marked as being removed (StoreRegistry.mark_removing)."""
        self._submit(self._remove_store, (store_id,), 0.0)

    def catch_up(self) -> None:
        """When workers start: sweep now, for jobs lost while none ran (a crash, a flushed
        queue), and again once the leases a dead worker held have expired and the sweep's
        grace has passed, instead of waiting for the minute's periodic sweep."""
        settings = self._settings
        self._submit(self._sweep_now, (), 0.0)
        self._submit(self._sweep_now, (),
                     settings.lease_seconds + settings.sweep_grace_seconds + 1.0)

    def enqueue_confirmation(self, pk: int, hint: dict, delay: float = 0.0) -> None:
        self._submit(self._confirm_payment, (pk, hint), delay)

    def _submit(self, task: Any, args: tuple, delay: float) -> None:
        try:
            if delay > 0:
                task.schedule(args=args, delay=delay)
            else:
                task(*args)
        except Exception:  # noqa: BLE001 - the state is in the database; the sweeps find it
            logger.exception("could not queue %s%r; the periodic sweep will pick it up",
                             task.name, args[:1])

    def consumer(self, workers: int, periodic: bool = True) -> Any:
        # Threads, not processes: the work is waiting on UPay and the store. A short maximum
        # polling delay keeps an idle SQLite queue responsive (Redis blocks on the list instead).
        return self.huey.create_consumer(workers=workers, worker_type="thread",
                                         periodic=periodic, initial_delay=0.05, backoff=1.5,
                                         max_delay=0.5, scheduler_interval=1,
                                         check_worker_health=True)

    def depth(self) -> int:
        return int(self.huey.pending_count())
