"""New orders as jobs on the embedded layout: the order row is the job.

On SQLite the database and the queue are two files, so queueing a new order's job after its
row is committed was a second transaction, in a second file, inside every webhook request: a
tenth of the intake's throughput (``bench/webhook_accept.py``; numbers in the README) for a
record that says nothing the row does not. Here the queue's workers find new orders in the
database instead: when the queue has no job for them, they take the next orders that are
``received``, due, and held by no worker.

Nothing is lost this way that the job would have kept: the row is written before the webhook
is answered, and it stays ``received`` until a worker takes its lease. An order handed to a
worker that dies before taking the lease is handed out again once ``HANDED_SECONDS`` have
passed (and the minute's sweep finds it anyway). Handing an order out twice is harmless, as a
job run twice is: ``process_order`` takes a lease on the row. So several worker processes on
one SQLite file may each hand out the same order: one of them runs it, the others find it held.

Only where both the database and the queue are SQLite files: there the queue is polled anyway
(its workers look every 0.5 s at most when idle), and one more read per poll of a few rows
costs nothing. Every other layout queues a job per order: Redis wakes the workers of other
machines at once, where every worker process polling PostgreSQL would not.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import db

_o = db.orders.c
# A new order: received, held by no worker, due. Uses ix_orders_work (state, next_attempt_at):
# in a steady state few rows are "received".
_IS_NEW = (_o.state == "received", _o.lease_owner.is_(None),
           _o.next_attempt_at <= sa.bindparam("b_now"))
_NEW = (sa.select(_o.id).where(*_IS_NEW)
        .order_by(_o.next_attempt_at, _o.id).limit(sa.bindparam("b_limit")))
_COUNT = sa.select(sa.func.count()).where(*_IS_NEW)


class NewOrderFeed:
    """Hands out the ids of new orders, each once, to the queue's workers (``take``)."""

    #: Seconds between two reads of the database when the last one found nothing more to do,
    #: unless this process recorded new orders meanwhile (``wake``).
    POLL_SECONDS = 0.2
    #: Orders read at once.
    BATCH = 64
    #: Seconds after which an order handed out but still not taken by its worker (it died
    #: between the queue and the lease) is handed out again.
    HANDED_SECONDS = 60.0

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._clock = clock
        self._monotonic = monotonic
        self._ready: deque[int] = deque()
        self._handed: dict[int, float] = {}  # id -> when it may be handed out again
        self._next_read = 0.0
        self._lock = threading.Lock()

    def wake(self) -> None:
        """New orders were committed (by this process): the next ``take`` reads at once."""
        self._next_read = 0.0

    def take(self) -> int | None:
        """The next new order for a worker, or None when there is none."""
        with self._lock:
            if not self._ready and self._monotonic() >= self._next_read:
                self._read()
            return self._ready.popleft() if self._ready else None

    def pending(self) -> int:
        """New orders no worker has taken yet (handed out or not)."""
        with db.reading(self._engine) as conn:
            return int(conn.execute(_COUNT, {"b_now": self._clock()}).scalar_one())

    def _read(self) -> None:
        now = self._monotonic()
        self._handed = {pk: until for pk, until in self._handed.items() if until > now}
        with db.reading(self._engine) as conn:
            ids = conn.execute(_NEW, {"b_now": self._clock(),
                                      "b_limit": self.BATCH + len(self._handed)}).scalars().all()
        fresh = [pk for pk in ids if pk not in self._handed][:self.BATCH]
        until = now + self.HANDED_SECONDS
        for pk in fresh:
            self._handed[pk] = until
        self._ready.extend(fresh)
        # A full batch: there may be more, so read again at the next call.
        self._next_read = now if len(fresh) == self.BATCH else now + self.POLL_SECONDS
