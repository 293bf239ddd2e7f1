"""The intake's writes: new orders, their deliveries and events, as plain SQL on one connection.

This is the one place the bridge bypasses SQLAlchemy's Core, because it is the hot path of a
flash sale: every webhook passes here before it is answered. Measured on a batch of one order
(``bench/intake_parts.py``), Core spent about 250 µs where the same three INSERTs take under
100 µs on the driver's cursor: a pool checkout and return (with its reset) per transaction and
each row's parameters processed per statement. The statements are the same on SQLite and
PostgreSQL (both have ``ON CONFLICT ... DO NOTHING RETURNING``); only the placeholder differs.

A batch is one INSERT per table, never ``executemany``: every statement the driver runs gives up
the GIL (and on PostgreSQL is a round trip), and under a burst a thread that gave it up waits
behind the other request threads to get it back.

Only one thread uses the writer at a time: the group commit's leader (``bridge/group_commit.py``).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

from sqlalchemy.engine import Engine

ORDER_COLUMNS = ("store_id", "external_id", "number", "currency", "total", "payload", "state",
                 "reason", "next_attempt_at", "created_at", "updated_at")
DELIVERY_COLUMNS = ("store_id", "topic", "delivery_id", "external_order_id", "outcome",
                    "body_sha256", "received_at")
EVENT_COLUMNS = ("order_id", "at", "kind", "message")
_COLUMNS = {"orders": ORDER_COLUMNS, "deliveries": DELIVERY_COLUMNS, "events": EVENT_COLUMNS}

T = TypeVar("T")
logger = logging.getLogger(__name__)


def _insert(table: str, columns: Sequence[str], mark: str, rows: int = 1) -> str:
    values = ", ".join(["(" + ", ".join([mark] * len(columns)) + ")"] * rows)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}"


class IntakeCursor:
    def __init__(self, cursor: Any, writer: IntakeWriter) -> None:
        self._cursor = cursor
        self._writer = writer

    def insert_orders(self, rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], int]:
        """Insert the rows that are new; return ``{(store_id, external_id): id}`` for those
        only. An order already recorded, or given twice in ``rows``, is left out: the first
        of the same order in ``rows`` is the one inserted."""
        self._cursor.execute(self._writer.sql("orders", len(rows)),
                             [row[c] for row in rows for c in ORDER_COLUMNS])
        return {(store_id, external_id): pk
                for pk, store_id, external_id in self._cursor.fetchall()}

    def insert_deliveries(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self._cursor.execute(self._writer.sql("deliveries", len(rows)),
                                 [row[c] for row in rows for c in DELIVERY_COLUMNS])

    def insert_events(self, rows: Sequence[Sequence[Any]]) -> None:
        """Rows of (order_id, at, kind, message)."""
        if rows:
            self._cursor.execute(self._writer.sql("events", len(rows)),
                                 [value for row in rows for value in row])


class IntakeWriter:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._mark = "?" if self._sqlite else "%s"
        self._connection: Any = None  # a pooled DBAPI connection, kept between batches
        self._sql: dict[tuple[str, int], str] = {}

    def sql(self, table: str, rows: int) -> str:
        """One INSERT of ``rows`` rows into ``table``; the text is kept per size, so each size
        is prepared once by the driver's statement cache."""
        sql = self._sql.get((table, rows))
        if sql is None:
            sql = _insert(table, _COLUMNS[table], self._mark, rows)
            if table == "orders":
                sql += (" ON CONFLICT (store_id, external_id) DO NOTHING"
                        " RETURNING id, store_id, external_id")
            self._sql[(table, rows)] = sql
        return sql

    def write(self, fn: Callable[[IntakeCursor], T]) -> T:
        """``fn(cursor)`` in one transaction, committed when it returns.

        The connection is kept between batches, so nobody checks it before use (the pool's
        pre-ping would): when a kept connection fails, e.g. because PostgreSQL restarted since
        the last batch, ``fn`` runs once more on a new one. It must not act outside the cursor.
        """
        kept = self._connection is not None
        try:
            with self.transaction() as cursor:
                return fn(cursor)
        except Exception as exc:  # noqa: BLE001 - once more, then the error is the caller's
            if not kept:
                raise
            logger.warning("intake: the kept database connection failed (%s); retrying on a "
                           "new one", type(exc).__name__)
        with self.transaction() as cursor:
            return fn(cursor)

    @contextmanager
    def transaction(self) -> Iterator[IntakeCursor]:
        """One transaction, committed when the block ends; on any error it is rolled back and
        the connection dropped, so the next batch starts on a fresh one."""
        if self._connection is None:
            self._connection = self._engine.raw_connection()
        connection = self._connection
        try:
            cursor = connection.cursor()
            if self._sqlite:
                # The same order as every other writer of this file (bridge/db.py): the
                # process lock first, then SQLite's; commit and rollback release both.
                connection.dbapi_connection.take_write_lock()
                cursor.execute("BEGIN IMMEDIATE")
            yield IntakeCursor(cursor, self)
            connection.commit()
        except BaseException:
            self._connection = None
            try:
                connection.rollback()
            except Exception:  # noqa: BLE001 - a broken connection: it is dropped below anyway
                pass
            connection.invalidate()
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
