"""A per-API-key limit on UPay status calls, shared by every process and machine.

UPay allows about 30 ``get-payment-status`` calls a minute per merchant key and blocks the
client for a while past that (upay-api.md §5.1). Notifications, customers' returns and the
reconciler all call it, from any web or worker process, so the limit lives in the database: a
sliding window of recent calls per key, checked and recorded in one locked transaction.
"""

from __future__ import annotations

import hashlib
import time
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import db


def key_id(api_key: str) -> str:
    """What the limiter stores for a key: a hash, so the key itself is never written."""
    return hashlib.sha256(b"upay-rate:" + api_key.encode("utf-8")).hexdigest()[:32]


class RateLimiter:
    def __init__(self, engine: Engine, limit: int, window: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.limit = limit
        self.window = window
        self.clock = clock

    def acquire(self, key: str) -> float:
        """Take one call for ``key``: 0.0 when granted, else seconds until a slot frees."""
        r = db.rate_events.c
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Serialise the check-and-insert per key across processes and machines.
                # (SQLite transactions here already begin IMMEDIATE: one writer at a time.)
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": key})
            now = self.clock()
            since = now - self.window
            count, oldest = conn.execute(
                sa.select(sa.func.count(), sa.func.min(r.at)).where(r.key == key, r.at > since)
            ).one()
            if count >= self.limit:
                return max(0.01, (oldest or now) + self.window - now)
            conn.execute(db.rate_events.insert().values(key=key, at=now))
            if count == 0:  # now and then, forget calls that can no longer count
                conn.execute(db.rate_events.delete().where(r.key == key, r.at <= since))
        return 0.0

    def give_back(self, key: str) -> None:
        """Undo the latest ``acquire`` for ``key`` (a sign-in that succeeded: only failures
        count against the limit, but a slot is taken before the password is known)."""
        r = db.rate_events.c
        with self.engine.begin() as conn:
            newest = conn.execute(sa.select(sa.func.max(r.id)).where(r.key == key)).scalar()
            if newest is not None:
                conn.execute(db.rate_events.delete().where(r.id == newest))

    def available(self, key: str) -> int:
        r = db.rate_events.c
        with db.reading(self.engine) as conn:
            used = conn.execute(sa.select(sa.func.count()).where(
                r.key == key, r.at > self.clock() - self.window)).scalar() or 0
        return max(0, self.limit - used)
