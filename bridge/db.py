"""The bridge's database: tables, the engine, and migrations.

SQLite by default (WAL mode and a busy timeout, so the web process and worker threads can write
at once), PostgreSQL through ``UPAY_BRIDGE_DATABASE_URL``. Only SQLAlchemy Core is used: every
query is in this module or in the repository modules next to it, written once for both.
Timestamps are UTC epoch seconds (floats): simple to compare in both databases.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

logger = logging.getLogger(__name__)

metadata = sa.MetaData()

merchants = sa.Table(
    "merchants", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("language", sa.String(2), nullable=False, server_default="en"),
    sa.Column("created_at", sa.Float, nullable=False),
    # Raised by "sign out": a session cookie carries the version it was issued under, and one
    # from an older version is refused (the cookie itself is stateless and cannot be revoked).
    sa.Column("session_version", sa.Integer, nullable=False, server_default="0"),
)

# The session version of the Saleor Dashboard's sessions of each store (migration 0007): those
# sessions have no merchant account, so the account's version cannot end them. No row means
# version 0.
dashboard_sessions = sa.Table(
    "dashboard_sessions", metadata,
    sa.Column("store_id", sa.String(16), sa.ForeignKey("stores.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
)

installs = sa.Table(
    "installs", metadata,
    # One WooCommerce app authorization in progress: the token travels as wc-auth's user_id.
    sa.Column("token", sa.String(64), primary_key=True),
    sa.Column("merchant_id", sa.Integer, sa.ForeignKey("merchants.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("store_url", sa.String(500), nullable=False),
    sa.Column("store_id", sa.String(16), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

stores = sa.Table(
    "stores", metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("url", sa.String(500), nullable=False),
    sa.Column("upay_sandbox", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("settings", sa.Text, nullable=False, server_default="{}"),
    # One Fernet token holding a JSON object of every secret of the store.
    sa.Column("secrets", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("merchant_id", sa.Integer, nullable=True),  # who may see it on the settings page
)

orders = sa.Table(
    "orders", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("store_id", sa.String(16), sa.ForeignKey("stores.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("external_id", sa.String(100), nullable=False),
    sa.Column("number", sa.String(100), nullable=False, server_default=""),
    sa.Column("currency", sa.String(3), nullable=False, server_default=""),
    sa.Column("total", sa.String(40), nullable=False, server_default="0"),
    sa.Column("payload", sa.Text, nullable=False),
    # received -> retrying* -> invoiced -> done; or skipped / not_invoiceable / failed / parked
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("retries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_expires", sa.Float, nullable=True),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    sa.Column("invoice_id", sa.String(100), nullable=True),
    sa.Column("invoice_url", sa.String(500), nullable=True),
    sa.Column("upay_order_id", sa.String(40), nullable=True),
    sa.Column("meta_written", sa.Boolean, nullable=False, server_default=sa.false()),
    # none -> pending -> sending -> written; "sending" after a crash means "look before posting"
    sa.Column("note_state", sa.String(10), nullable=False, server_default="none"),
    sa.Column("note_text", sa.Text, nullable=False, server_default=""),
    sa.Column("note_customer", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("note_id", sa.String(40), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # payment: open -> paid | flagged | expired (see bridge/confirmation.py)
    sa.Column("payment_state", sa.String(12), nullable=False, server_default="open"),
    sa.Column("paid_at", sa.Float, nullable=True),
    sa.Column("returned_at", sa.Float, nullable=True),
    sa.Column("next_check_at", sa.Float, nullable=True),
    sa.Column("check_count", sa.Integer, nullable=False, server_default="0"),
    # When the status check queued by a notification or return runs (or last ran): signals for
    # the same order merge into it, so a flood of them cannot spend UPay's status budget.
    sa.Column("signal_check_at", sa.Float, nullable=True),
    # When the next follow-up check for a customer waiting on the return page is due: one chain
    # of them per order however often the page is reloaded (a time in the past: none running).
    sa.Column("follow_up_at", sa.Float, nullable=True),
    sa.UniqueConstraint("store_id", "external_id", name="uq_orders_store_external"),
)
sa.Index("ix_orders_work", orders.c.state, orders.c.next_attempt_at)
sa.Index("ix_orders_payment", orders.c.payment_state, orders.c.next_check_at)
sa.Index("ix_orders_note", orders.c.note_state, orders.c.next_attempt_at)

attempts = sa.Table(
    "attempts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("upay_order_id", sa.String(40), nullable=False, unique=True),
    # sending -> created | failed | unknown (superseded) | not_sent (safe to send again)
    sa.Column("state", sa.String(12), nullable=False),
    sa.Column("invoice_id", sa.String(100), nullable=True),
    sa.Column("invoice_url", sa.String(500), nullable=True),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # An unguessable id for the customer's return/cancel URLs (the order id is guessable).
    sa.Column("token", sa.String(32), nullable=True, unique=True),
    sa.UniqueConstraint("order_id", "number", name="uq_attempts_order_number"),
)

payments = sa.Table(
    "payments", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("attempt_id", sa.Integer, sa.ForeignKey("attempts.id", ondelete="CASCADE"),
              nullable=True),
    # UPay's transaction; one row per track id, so a payment is counted once however often
    # it is reported.
    sa.Column("track_id", sa.String(64), nullable=False, unique=True),
    sa.Column("payment_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("result", sa.String(30), nullable=False),
    sa.Column("amount", sa.String(40), nullable=False, server_default=""),
    sa.Column("currency", sa.String(3), nullable=False, server_default=""),
    sa.Column("payment_type", sa.String(30), nullable=False, server_default=""),
    sa.Column("upay_order_id", sa.String(40), nullable=False, server_default=""),
    sa.Column("source", sa.String(12), nullable=False),  # notify | return | reconcile
    sa.Column("created_at", sa.Float, nullable=False),
)
# Foreign keys with ON DELETE CASCADE: without them PostgreSQL scans payments once per order or
# attempt deleted (migration 0009).
sa.Index("ix_payments_order", payments.c.order_id)
sa.Index("ix_payments_attempt", payments.c.attempt_id)

store_actions = sa.Table(
    "store_actions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # mark_paid | note
    sa.Column("data", sa.Text, nullable=False, server_default="{}"),
    # pending -> sending -> done; "sending" after a crash means "look before doing it again"
    sa.Column("state", sa.String(10), nullable=False, server_default="pending"),
    sa.Column("result", sa.Text, nullable=False, server_default=""),
    sa.Column("dedupe_key", sa.String(120), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
sa.Index("ix_store_actions_order", store_actions.c.order_id, store_actions.c.state)
sa.Index("ix_store_actions_open", store_actions.c.state, store_actions.c.order_id)

store_health = sa.Table(
    "store_health", metadata,
    sa.Column("store_id", sa.String(16), sa.ForeignKey("stores.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("webhook_ids", sa.Text, nullable=False, server_default="[]"),  # the bridge's own
    sa.Column("webhook_status", sa.String(20), nullable=False, server_default=""),
    sa.Column("last_check_at", sa.Float, nullable=True),
    sa.Column("last_failure_at", sa.Float, nullable=True),
    sa.Column("last_failure", sa.Text, nullable=False, server_default=""),
    sa.Column("last_catch_up_at", sa.Float, nullable=True),  # orders modified after this seen
    sa.Column("reactivations", sa.Integer, nullable=False, server_default="0"),
)

rate_events = sa.Table(
    "rate_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(64), nullable=False),  # a hash of the API key, never the key
    sa.Column("at", sa.Float, nullable=False),
)
sa.Index("ix_rate_events_key_at", rate_events.c.key, rate_events.c.at)

deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("store_id", sa.String(16), sa.ForeignKey("stores.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("topic", sa.String(60), nullable=False, server_default=""),
    sa.Column("delivery_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("external_order_id", sa.String(100), nullable=False, server_default=""),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("body_sha256", sa.String(64), nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
)

notifications = sa.Table(
    "notifications", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("store_id", sa.String(16), sa.ForeignKey("stores.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("kind", sa.String(12), nullable=False),  # notify | return | cancel
    sa.Column("fields", sa.Text, nullable=False),
    sa.Column("state", sa.String(12), nullable=False, server_default="received"),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"),
              nullable=True),
)
sa.Index("ix_notifications_order", notifications.c.order_id)

events = sa.Table(
    "events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(30), nullable=False),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
)
sa.Index("ix_events_order", events.c.order_id)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    # WAL lets readers run during a write; busy_timeout makes a writer wait for the lock
    # instead of failing with "database is locked" when two processes collide.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


# One lock per SQLite file in this process. SQLite lets one writer in at a time, and a writer
# that finds the file locked polls for it in growing sleeps (1 ms ... 100 ms); with dozens of
# worker threads those sleeps, not the work, set the pace. Writers of one process therefore
# queue on this lock and are woken the moment it is free; the busy timeout still covers a
# second process (``serve --no-worker`` next to ``worker``).
_WRITE_LOCKS: dict[str, threading.RLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()

#: Execution option of a read-only connection (see :func:`reading`).
READ_ONLY = "bridge_read_only"


def _write_lock(path: str) -> threading.RLock:
    key = os.path.realpath(path) if path not in ("", ":memory:") else f"memory:{id(path)}"
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(key, threading.RLock())


class _LockingConnection(sqlite3.Connection):
    """A pysqlite connection that holds its file's process lock from BEGIN IMMEDIATE to the
    end of the transaction, however it ends (commit, rollback, close)."""

    write_lock: threading.RLock
    holds_lock = False

    def take_write_lock(self) -> None:
        self.write_lock.acquire()
        self.holds_lock = True

    def drop_write_lock(self) -> None:
        if self.holds_lock:
            self.holds_lock = False
            self.write_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.drop_write_lock()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.drop_write_lock()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.drop_write_lock()


def reading(engine: Engine) -> Connection:
    """A connection for reads. On SQLite it opens a deferred transaction (a consistent WAL
    snapshot) that never waits for writers; writes belong in ``engine.begin()``."""
    return engine.connect().execution_options(**{READ_ONLY: True})


def make_engine(url: str, *, pool_size: int = 10, connect_timeout: float | None = None,
                statement_timeout: float | None = None) -> Engine:
    """The engine for ``url``; ``pool_size`` is how many threads of this process may hold a
    connection at once (web threads plus workers) before the others wait for one.

    On PostgreSQL, ``connect_timeout`` and ``statement_timeout`` (seconds; CONNECT_TIMEOUT and
    STATEMENT_TIMEOUT by default) bound every wait on the server (see below)."""
    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        lock = _write_lock(path)

        def factory(*args: Any, **kwargs: Any) -> _LockingConnection:
            conn = _LockingConnection(*args, **kwargs)
            conn.write_lock = lock
            return conn

        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30,
                                                     "factory": factory},
                                  pool_size=pool_size, max_overflow=pool_size)
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take it over so that
        # "BEGIN IMMEDIATE" below really takes the write lock up front.
        @event.listens_for(engine, "connect")
        def _no_pysqlite_txn(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            if conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("BEGIN")  # deferred: a snapshot, no lock
                return
            raw = conn.connection.dbapi_connection
            raw.take_write_lock()
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                raw.drop_write_lock()
                raise
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    engine = sa.create_engine(url, pool_size=pool_size, max_overflow=max(20, pool_size),
                              pool_pre_ping=True)
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        _bound_postgres_waits(engine, CONNECT_TIMEOUT if connect_timeout is None
                              else connect_timeout,
                              STATEMENT_TIMEOUT if statement_timeout is None else statement_timeout)
    return engine


# -- PostgreSQL that stops answering ----------------------------------------------------------
#
# psycopg waits for an answer without any limit of its own (130 s to connect): a server that
# accepts TCP but never answers (hung, or behind a stuck proxy) held the thread that asked, a web
# thread or a worker, and its pooled connection for as long as the stall lasted, and /healthz
# hung instead of answering 503. TCP keepalives and tcp_user_timeout do not help there, since
# the peer's kernel still acknowledges every byte. So the bridge bounds every wait itself:
#
# - connecting: libpq's ``connect_timeout`` (a ``connect_timeout`` in the URL wins);
# - a slow statement (a lock wait, a bad plan): the server's ``statement_timeout``, sent as a
#   startup option; generous, since workers lock order rows (SELECT ... FOR UPDATE) and wait for
#   each other, and the connection stays usable after the server cancels the statement;
# - no answer at all: the client gives up STALL_GRACE seconds after the statement timeout
#   would have fired on a live server, and closes the connection (its state is unknown), which
#   SQLAlchemy then takes for a disconnect and drops from the pool.
#
# Migrations lift both limits (see migrate), and a probe can shorten them (see deadline).

#: Seconds a new PostgreSQL connection may take (libpq counts whole seconds, at least 2).
CONNECT_TIMEOUT = 5
#: Seconds one statement may run on PostgreSQL before the server cancels it.
STATEMENT_TIMEOUT = 30.0
#: Seconds past the statement timeout the client waits for any answer before giving up.
STALL_GRACE = 5.0

# The end (time.monotonic()) of the current thread's deadline() block, if any.
_DEADLINE: ContextVar[float | None] = ContextVar("bridge_db_deadline", default=None)


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Within the block, give up on PostgreSQL after about ``seconds`` in all: connecting,
    a pool's pre-ping, statements, commit and rollback of this thread (no effect on SQLite, or
    with ``None``). For probes such as /healthz, which must answer promptly."""
    if seconds is None:
        yield
        return
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _remaining() -> float | None:
    end = _DEADLINE.get()
    return None if end is None else end - time.monotonic()


@lru_cache(maxsize=None)
def _bounded_connection_class() -> type:
    import inspect

    import psycopg

    # psycopg 3.3.6 and later bound a wait with Connection.wait(timeout=...) and raise
    # _WaitTimeout; with an older one only connect_timeout and statement_timeout apply.
    wait_timeout = getattr(psycopg.errors, "_WaitTimeout", None)
    if wait_timeout is None \
            or "timeout" not in inspect.signature(psycopg.Connection.wait).parameters:
        logger.warning("psycopg %s cannot bound a wait on PostgreSQL: a server that stops "
                       "answering holds a thread until TCP gives up (psycopg 3.3.6 can)",
                       psycopg.__version__)

        class UnboundedConnection(psycopg.Connection):  # type: ignore[type-arg]
            stall_timeout: float | None = None  # not applied

        return UnboundedConnection

    class BoundedConnection(psycopg.Connection):  # type: ignore[type-arg]
        """A psycopg connection whose every wait on the server ends: psycopg runs all its
        network exchanges (statements, commit, rollback, the pool's ping) through ``wait``."""

        stall_timeout: float | None = None  # None: wait as long as the server takes

        def wait(self, gen: Any, *args: Any, timeout: float | None = None,
                 **kwargs: Any) -> Any:
            if timeout is not None:  # psycopg's own bounded waits (notifies, cancel)
                return super().wait(gen, *args, timeout=timeout, **kwargs)
            limit = self.stall_timeout
            remaining = _remaining()
            if remaining is not None:
                limit = max(0.1, remaining if limit is None else min(limit, remaining))
            try:
                return super().wait(gen, *args, timeout=limit, **kwargs)
            except wait_timeout:
                # Half an exchange may be on the wire: the connection can never be used again.
                # Closed, it is a disconnect to SQLAlchemy, which drops it from the pool.
                self.pgconn.finish()
                raise psycopg.OperationalError(
                    f"the database did not answer within {limit:g} s") from None

    return BoundedConnection


def _bound_postgres_waits(engine: Engine, connect_timeout: float,
                          statement_timeout: float) -> None:
    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: list, cparams: dict) -> Any:
        import psycopg

        params = dict(cparams)
        # As libpq reads it: whole seconds, at least 2; 0 (or less) in the URL means no limit,
        # which the operator asked for and gets, except within a deadline() block.
        connect_s: int | None = int(float(params.get("connect_timeout", connect_timeout)))
        if connect_s is not None and connect_s <= 0:
            connect_s = None
        remaining = _remaining()
        if remaining is not None:
            if remaining <= 0:
                raise psycopg.errors.ConnectionTimeout("no time left to connect to the database "
                                                     "(see deadline)")
            connect_s = math.ceil(remaining) if connect_s is None \
                else min(connect_s, math.ceil(remaining))
        params["connect_timeout"] = 0 if connect_s is None else max(2, connect_s)
        # First, so that a statement_timeout in the URL's own options still wins.
        params["options"] = (f"-c statement_timeout={int(statement_timeout * 1000)} "
                             + str(params.get("options", ""))).strip()
        conn = _bounded_connection_class().connect(*cargs, **params)
        conn.stall_timeout = statement_timeout + STALL_GRACE
        return conn


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest version (Alembic, migrations shipped in the package)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        raw = conn.connection.dbapi_connection
        stall_timeout = getattr(raw, "stall_timeout", None)
        if conn.dialect.name == "postgresql":
            # A migration may rewrite a big table, and the processes waiting for the lock below
            # wait as long as it takes: no statement timeout, and no limit on waiting for the
            # server (at start, before this process serves anything).
            conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
            if stall_timeout is not None:
                raw.stall_timeout = None
            # Several processes start at once in the scale-out layout: one migrates, the others
            # wait for it and then find nothing to do. (SQLite: BEGIN IMMEDIATE serialises.)
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(8675309)"))
        cfg.attributes["connection"] = conn
        try:
            command.upgrade(cfg, "head")
        finally:
            if stall_timeout is not None:  # back to the engine's limit (see make_engine)
                raw.stall_timeout = stall_timeout


def ping(engine: Engine, timeout: float | None = None) -> None:
    """``SELECT 1``; on PostgreSQL, with ``timeout``, an error after about that many seconds
    however the server behaves (see :func:`deadline`)."""
    with deadline(timeout), reading(engine) as conn:
        conn.execute(sa.text("SELECT 1"))
