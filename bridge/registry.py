"""The stores the bridge serves: their settings, and their secrets encrypted at rest."""

from __future__ import annotations

import json
import logging
import secrets as pysecrets
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Mapping, TypeVar
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import db
from .crypto import SecretBox
from .errors import ConfigError, UnknownStoreError
from .models import Language, NotificationType

_T = TypeVar("_T")
logger = logging.getLogger(__name__)

# The secrets each kind of store needs; all are encrypted together in one column.
REQUIRED_SECRETS: dict[str, tuple[str, ...]] = {
    "woocommerce": ("consumer_key", "consumer_secret", "webhook_secret", "upay_api_key"),
    # Saleor: the app token from the install, the app's id and the store's cached JWKS.
    "saleor": ("app_token", "upay_api_key"),
}
WOOCOMMERCE_STATUSES = ("pending", "on-hold", "failed", "processing", "completed", "cancelled",
                        "refunded")


@dataclass(frozen=True)
class StoreSettings:
    notification_type: NotificationType = NotificationType.LINK
    language: Language = Language.EN
    customer_note: bool = True  # a customer note makes WooCommerce e-mail the link
    payment_methods: tuple[str, ...] = ()  # empty: every payment method
    statuses: tuple[str, ...] = ("pending", "on-hold")
    currencies: tuple[str, ...] = ()  # empty: every currency UPay supports
    paid_status: str = "processing"  # what an on-hold (or re-opened) order becomes once paid
    paid_after_cancel: str = "reopen"  # reopen | flag: a payment on an order the store cancelled
    reconcile_expiry_hours: float = 72.0  # stop asking UPay about an unpaid invoice after this

    def to_json(self) -> str:
        data = asdict(self)
        data["notification_type"] = self.notification_type.value
        data["language"] = self.language.value
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "StoreSettings":
        try:
            return cls(
                notification_type=NotificationType(data.get("notification_type", "link")),
                language=Language(str(data.get("language", "en")).lower()),
                customer_note=bool(data.get("customer_note", True)),
                payment_methods=tuple(str(x) for x in data.get("payment_methods", ()) if x),
                statuses=tuple(str(x) for x in data.get("statuses", ("pending", "on-hold")) if x),
                currencies=tuple(str(x).upper() for x in data.get("currencies", ()) if x),
                paid_status=str(data.get("paid_status", "processing")),
                paid_after_cancel=str(data.get("paid_after_cancel", "reopen")),
                reconcile_expiry_hours=float(data.get("reconcile_expiry_hours", 72.0)),
            )
        except ValueError as exc:
            raise ConfigError(f"invalid store setting: {exc}") from exc


@dataclass(frozen=True)
class StoreRecord:
    id: str
    kind: str
    name: str
    url: str
    upay_sandbox: bool
    settings: StoreSettings
    secrets: Mapping[str, str] = field(repr=False)
    created_at: float = 0.0
    updated_at: float = 0.0
    merchant_id: int | None = None

    def public_dict(self) -> dict[str, Any]:
        """Everything but the secrets, which are shown as masked hints only."""
        return {
            "id": self.id, "kind": self.kind, "name": self.name, "url": self.url,
            "upay_sandbox": self.upay_sandbox,
            "settings": json.loads(self.settings.to_json()),
            "secrets": {k: mask(v) for k, v in sorted(self.secrets.items())},
            "created_at": self.created_at,
        }


def validate_settings(kind: str, settings: StoreSettings) -> None:
    if kind == "woocommerce":
        bad = [s for s in settings.statuses if s not in WOOCOMMERCE_STATUSES]
        if bad:
            raise ConfigError(f"unknown order status: {', '.join(bad)}")
        if settings.paid_status not in ("processing", "completed"):
            raise ConfigError("the paid status must be processing or completed")
    if settings.paid_after_cancel not in ("reopen", "flag"):
        raise ConfigError("paid-after-cancel must be reopen or flag")
    if not 0 < settings.reconcile_expiry_hours <= 24 * 90:
        raise ConfigError("reconciliation expiry must be between 0 and 2160 hours")


def mask(secret: str) -> str:
    if len(secret) <= 8:
        return "•" * len(secret)
    return "•" * 8 + secret[-4:]


def new_store_id() -> str:
    alphabet = "abcdefghijkmnopqrstuvwxyz23456789"
    return "s" + "".join(pysecrets.choice(alphabet) for _ in range(9))


def validate_store_url(url: str, kind: str = "woocommerce") -> str:
    try:
        parts = urlsplit(url.strip())
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:  # "http://[::1": an unclosed IPv6 bracket
        raise ConfigError(f"store URL is not a valid URL: {url[:200]!r}") from None
    if parts.scheme.lower() not in ("http", "https") or not hostname:
        raise ConfigError(f"store URL must be an http(s) URL, got {url!r}")
    if parts.query or parts.fragment:
        raise ConfigError("store URL must not have a query string or fragment")
    # The woocommerce package picks Basic auth with a case-sensitive "https" prefix test
    # (woocommerce.md §5.2): store the scheme in lower case.
    url = f"{parts.scheme.lower()}://{parts.netloc}{parts.path}"
    # A Saleor store is its API URL, kept exactly as Saleor sends it in Saleor-Api-Url
    # (with the trailing slash of "/graphql/", saleor.md §2.3).
    return url if kind == "saleor" else url.rstrip("/")


#: The ``kind`` of a store being removed: no lookup finds it (see StoreRegistry.remove).
REMOVING = "removing"
#: Orders deleted per transaction when removing a store, at most (see _Batches).
REMOVAL_BATCH = 500
#: Orders in a removal's first batch; quick batches double it up to the most asked for.
REMOVAL_FIRST_BATCH = 100
#: Seconds a removal batch should take: well under the statement timeout (db.STATEMENT_TIMEOUT),
#: since one statement's cost grows with tables the batch size does not bound (see _Batches).
REMOVAL_BATCH_SECONDS = 3.0
#: Seconds after which a removal still marked is taken for cut short (see finish_removals): far
#: longer than removing a store takes (200,000 orders: about 9 s on PostgreSQL).
REMOVAL_RESUME_SECONDS = 900.0
#: Batches in a row the database may cancel (statement timeout) or abort (deadlock) before the
#: removal gives up; running it again resumes it.
REMOVAL_RETRIES = 8
# query_canceled (the statement timeout), deadlock_detected, serialization_failure.
_RETRYABLE_SQLSTATES = {"57014": True, "40P01": False, "40001": False}  # True: shrink the batch


class StoreRegistry:
    # Every webhook and every job looks its store up: a short-lived cache saves a database read
    # and a decryption each time. Changes made in this process apply at once; changes made by
    # another process (the CLI, another web process) within CACHE_SECONDS.
    CACHE_SECONDS = 5.0

    def __init__(self, engine: Engine, box: SecretBox) -> None:
        self._engine = engine
        self._box = box
        self._cache: dict[str, tuple[float, StoreRecord]] = {}
        self._cache_lock = threading.Lock()

    def _forget(self, store_id: str) -> None:
        with self._cache_lock:
            self._cache.pop(store_id, None)

    def add(self, kind: str, url: str, secrets: Mapping[str, str], *, name: str = "",
            upay_sandbox: bool = False, settings: StoreSettings | None = None,
            merchant_id: int | None = None, require_upay_key: bool = True) -> StoreRecord:
        if kind not in REQUIRED_SECRETS:
            raise ConfigError(f"unknown store kind {kind!r}; known: {', '.join(REQUIRED_SECRETS)}")
        # A store connected from the settings page gets its UPay key afterwards, on that page.
        needed = [k for k in REQUIRED_SECRETS[kind] if require_upay_key or k != "upay_api_key"]
        missing = [k for k in needed if not secrets.get(k)]
        if missing:
            raise ConfigError(f"missing secrets: {', '.join(missing)}")
        settings = settings or StoreSettings()
        validate_settings(kind, settings)
        now = time.time()
        record = StoreRecord(id=new_store_id(), kind=kind, name=name[:200],
                             url=validate_store_url(url, kind),
                             upay_sandbox=upay_sandbox, settings=settings,
                             secrets={k: str(v) for k, v in secrets.items() if v},
                             created_at=now, updated_at=now, merchant_id=merchant_id)
        with self._engine.begin() as conn:
            conn.execute(db.stores.insert().values(
                id=record.id, kind=kind, name=record.name, url=record.url,
                upay_sandbox=upay_sandbox, settings=settings.to_json(),
                secrets=self._box.encrypt(json.dumps(dict(record.secrets))),
                created_at=now, updated_at=now, merchant_id=merchant_id))
        return record

    def get(self, store_id: str) -> StoreRecord:
        now = time.monotonic()
        with self._cache_lock:
            cached = self._cache.get(store_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        with db.reading(self._engine) as conn:
            row = conn.execute(sa.select(db.stores).where(
                db.stores.c.id == store_id, db.stores.c.kind != REMOVING)).first()
        if row is None:
            raise UnknownStoreError(f"no store with id {store_id!r}")
        record = self._record(row)
        with self._cache_lock:
            self._cache[store_id] = (now + self.CACHE_SECONDS, record)
        return record

    def find_by_url(self, kind: str, url: str) -> StoreRecord | None:
        if "\x00" in url:  # PostgreSQL's text cannot hold NUL: no store has it, not an error
            return None
        with db.reading(self._engine) as conn:
            row = conn.execute(sa.select(db.stores).where(
                db.stores.c.kind == kind, db.stores.c.kind != REMOVING,
                db.stores.c.url == url[:500])).first()
        return self._record(row) if row is not None else None

    def find(self, store_id: str) -> StoreRecord | None:
        if "\x00" in store_id:  # as in find_by_url: a NUL, from a URL's %00, matches nothing
            return None
        try:
            return self.get(store_id)
        except UnknownStoreError:
            return None

    def list(self, merchant_id: int | None = None) -> list[StoreRecord]:
        query = sa.select(db.stores).where(db.stores.c.kind != REMOVING) \
            .order_by(db.stores.c.created_at)
        if merchant_id is not None:
            query = query.where(db.stores.c.merchant_id == merchant_id)
        with db.reading(self._engine) as conn:
            rows = conn.execute(query).all()
        return [self._record(r) for r in rows]

    def remove(self, store_id: str, *, batch_size: int = REMOVAL_BATCH) -> None:
        """Delete the store and everything recorded for it.

        The history goes in batches of at most ``batch_size`` orders, one short transaction
        each, so that no statement nears the database's statement timeout and other writers
        wait at most one batch. The store is first marked as being removed (no webhook,
        callback or job finds it any more), its row goes last: an interrupted removal leaves
        a store nobody serves, and calling this again finishes it.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.mark_removing(store_id)
        batches = _Batches(batch_size)

        def orders_span(conn: Connection, lo: int, hi: int) -> None:
            _delete_orders(conn, store_id, lo, hi)

        self._delete_in_batches(batches, db.orders, store_id, orders_span)
        for table in (db.deliveries, db.notifications):  # notifications matching no order

            def store_span(conn: Connection, lo: int, hi: int, table: sa.Table = table) -> None:
                conn.execute(table.delete().where(table.c.store_id == store_id,
                                                  table.c.id.between(lo, hi)))

            self._delete_in_batches(batches, table, store_id, store_span)
        o = db.orders.c
        with self._engine.begin() as conn:
            # What arrived while the batches ran (another process serves a store from its cache
            # for up to CACHE_SECONDS): a few rows. A row committed after these deletes is
            # taken by the store row's ON DELETE CASCADE.
            span = conn.execute(sa.select(sa.func.min(o.id), sa.func.max(o.id))
                                .where(o.store_id == store_id)).first()
            if span is not None and span[0] is not None:
                _delete_orders(conn, store_id, span[0], span[1])
            # installs.store_id has no foreign key (the install is claimed before its store
            # exists): its finished installs go here, or one would lead to a store that is gone.
            for table in (db.deliveries, db.notifications, db.store_health,
                          db.dashboard_sessions, db.installs):
                conn.execute(table.delete().where(table.c.store_id == store_id))
            conn.execute(db.stores.delete().where(db.stores.c.id == store_id))
        self._forget(store_id)

    def mark_removing(self, store_id: str) -> None:
        """The first step of ``remove``, on its own: from now on no webhook, callback or job
        finds the store (the merchant's "Disconnect" does this in the request and leaves the
        rest to a worker). Raises UnknownStoreError when there is no such store."""
        self._forget(store_id)
        s = db.stores.c
        with self._engine.begin() as conn:
            marked = conn.execute(db.stores.update().where(s.id == store_id).values(
                kind=REMOVING, updated_at=time.time())).rowcount
        # Again: a get() that read the row just before the mark may have cached it since.
        self._forget(store_id)
        if marked == 0:
            raise UnknownStoreError(f"no store with id {store_id!r}")

    def _delete_in_batches(self, batches: "_Batches", table: sa.Table, store_id: str,
                           delete_span: Callable[[Connection, int, int], None]) -> None:
        """Delete the store's rows of ``table`` in id order, one batch per transaction."""
        c = table.c
        after = 0

        def batch(conn: Connection, limit: int) -> int | None:
            ids = conn.execute(sa.select(c.id).where(c.store_id == store_id, c.id > after)
                               .order_by(c.id).limit(limit)).scalars().all()
            if not ids:
                return None
            delete_span(conn, ids[0], ids[-1])
            return int(ids[-1])

        while (last := batches.run(self._engine, batch)) is not None:
            after = last

    def pending_removals(self, marked_before: float | None = None) -> list[str]:
        """The stores whose removal was interrupted (only those marked before ``marked_before``,
        a Unix time, when given): ``remove`` each to finish it."""
        s = db.stores.c
        query = sa.select(s.id).where(s.kind == REMOVING).order_by(s.updated_at)
        if marked_before is not None:
            query = query.where(s.updated_at < marked_before)
        with db.reading(self._engine) as conn:
            return list(conn.execute(query).scalars().all())

    def finish_removals(self, idle_seconds: float = REMOVAL_RESUME_SECONDS) -> int:
        """Finish the removals that were cut short (a web process killed while a merchant
        disconnected a store): without this, such a store stays hidden, its history kept, until
        an operator runs ``store remove`` again. Only removals marked ``idle_seconds`` ago or
        more, so that one still running elsewhere is left to its process (running both would
        only repeat deletes). Returns how many were finished."""
        finished = 0
        for store_id in self.pending_removals(time.time() - idle_seconds):
            try:
                self.remove(store_id)
            except UnknownStoreError:
                continue  # its own removal finished it meanwhile
            except Exception:  # noqa: BLE001 - the next pass tries again; others go on
                logger.exception("could not finish removing store %s; trying again later",
                                 store_id)
                continue
            logger.info("finished the interrupted removal of store %s", store_id,
                        extra={"store_id": store_id})
            finished += 1
        return finished

    def update(self, store_id: str, *, settings: StoreSettings | None = None,
               secrets: Mapping[str, str] | None = None,
               upay_sandbox: bool | None = None, merchant_id: int | None = None) -> StoreRecord:
        self._forget(store_id)
        with self._engine.begin() as conn:
            # Read and write in one transaction, the row locked (SQLite: BEGIN IMMEDIATE): two
            # updates at once, say a webhook keeping Saleor's rotated JWKS while the merchant
            # saves a new UPay key, each merge into what the other wrote instead of one
            # overwriting the other's change with the copy it read before.
            row = conn.execute(sa.select(db.stores).where(
                db.stores.c.id == store_id, db.stores.c.kind != REMOVING)
                .with_for_update()).first()
            if row is None:
                raise UnknownStoreError(f"no store with id {store_id!r}")
            record = self._record(row)
            if settings is not None:
                validate_settings(record.kind, settings)
            merged = dict(record.secrets)
            merged.update({k: v for k, v in (secrets or {}).items() if v})
            record = replace(
                record, settings=settings or record.settings, secrets=merged,
                updated_at=time.time(),
                upay_sandbox=record.upay_sandbox if upay_sandbox is None else upay_sandbox,
                merchant_id=record.merchant_id if merchant_id is None else merchant_id)
            conn.execute(db.stores.update().where(db.stores.c.id == store_id).values(
                settings=record.settings.to_json(), upay_sandbox=record.upay_sandbox,
                merchant_id=record.merchant_id,
                secrets=self._box.encrypt(json.dumps(merged)), updated_at=record.updated_at))
        self._forget(store_id)
        return record

    def rotate_secrets(self) -> int:
        """Re-encrypt every store's secrets with the newest key (after adding a key in front)."""
        with self._engine.begin() as conn:
            # Locked (PostgreSQL; SQLite's BEGIN IMMEDIATE serialises already): an update of a
            # store between this read and the write below would be overwritten with the old copy.
            rows = conn.execute(sa.select(db.stores.c.id, db.stores.c.secrets)
                                .with_for_update()).all()
            for row in rows:
                conn.execute(db.stores.update().where(db.stores.c.id == row.id)
                             .values(secrets=self._box.rotate(row.secrets)))
        with self._cache_lock:
            self._cache.clear()
        return len(rows)

    def _record(self, row: Any) -> StoreRecord:
        return StoreRecord(
            id=row.id, kind=row.kind, name=row.name, url=row.url,
            upay_sandbox=bool(row.upay_sandbox),
            settings=StoreSettings.from_mapping(json.loads(row.settings or "{}")),
            secrets=json.loads(self._box.decrypt(row.secrets)),
            created_at=row.created_at, updated_at=row.updated_at, merchant_id=row.merchant_id)


def _delete_orders(conn: Connection, store_id: str, lo: int, hi: int) -> None:
    """Delete the store's orders with ids in [lo, hi] and every row that belongs to them,
    children first (the foreign keys' cascades would do it on PostgreSQL, one row at a time)."""
    o = db.orders.c
    order_ids = sa.select(o.id).where(o.store_id == store_id, o.id.between(lo, hi))
    for table in (db.payments, db.store_actions, db.events, db.notifications, db.attempts):
        conn.execute(table.delete().where(table.c.order_id.between(lo, hi),
                                          table.c.order_id.in_(order_ids)))
    conn.execute(db.orders.delete().where(o.store_id == store_id, o.id.between(lo, hi)))


class _Batches:
    """Runs a removal's batches, each in a transaction of its own, and sizes them.

    Deleting an order or attempt makes PostgreSQL run each foreign key's cascade for that row;
    before migration 0009 indexed payments.order_id and attempt_id, each such row scanned the
    whole payments table, so a batch's cost grew with every store's payments, not only with the
    batch. The sizing keeps a removal safe wherever a cost like that remains. A batch slower than REMOVAL_BATCH_SECONDS halves the next one, a quick one doubles
    it (up to the size asked for), and a batch the database cancels at its statement timeout
    is rolled back and tried again at half the size.
    """

    def __init__(self, most: int) -> None:
        self.most = most
        # Small first: without the indexes, one batch of REMOVAL_BATCH orders took 10 s next to
        # 210,000 payments.
        self.size = min(most, REMOVAL_FIRST_BATCH)

    def run(self, engine: Engine, work: Callable[[Connection, int], _T]) -> _T:
        failures = 0
        while True:
            started = time.monotonic()
            try:
                with engine.begin() as conn:
                    result = work(conn, self.size)
            except sa.exc.DBAPIError as exc:
                code = getattr(exc.orig, "sqlstate", None)
                if code not in _RETRYABLE_SQLSTATES or failures >= REMOVAL_RETRIES:
                    raise
                failures += 1
                if _RETRYABLE_SQLSTATES[code]:
                    self.size = max(1, self.size // 2)
                continue
            took = time.monotonic() - started
            if took > REMOVAL_BATCH_SECONDS:
                self.size = max(1, self.size // 2)
            elif took < REMOVAL_BATCH_SECONDS / 4:
                self.size = min(self.most, self.size * 2)
            return result
