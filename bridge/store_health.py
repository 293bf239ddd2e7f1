"""Keep each store's webhook alive, and catch up the orders whose delivery was lost.

WooCommerce sends each delivery once, never retries it, and DISABLES a webhook after seven
failed deliveries in a row (woocommerce.md §1.6): a bridge that was down for a while silently
stops receiving orders. So every five minutes, per store:

* ``check``: the webhooks pointing at the bridge are listed; a ``disabled`` (or ``paused``) one
  is set ``active`` again and the reason is recorded for the settings page; no webhook at all is
  recorded as a failure.
* ``catch_up``: the orders awaiting payment modified since the last catch-up (with an overlap)
  are fed through ``Pipeline.accept`` exactly as a webhook would, so a lost delivery still gets
  its invoice. ``accept`` is idempotent on (store, order id), so an order already seen changes
  nothing (peers-and-reliability.md §B.6).

Everything is recorded in ``store_health`` (one row per store). No message carries a secret.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable

import simplejson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from . import db
from .config import Settings
from .errors import StoreError
from .pipeline import Pipeline, skip_reason
from .registry import StoreRecord, StoreRegistry
from .stores import META_INVOICE_ID, Store, WebhookEvent, adapter_for
from .stores.woocommerce import CATCH_UP_PAGE_SIZE

logger = logging.getLogger(__name__)

ORDER_CREATED = "order.created"
CATCH_UP_DELIVERY_ID = "catch-up"  # the deliveries row an order found by catch-up gets
CATCH_UP_OVERLAP_SECONDS = 300.0  # re-read the last 5 minutes: clock skew, slow commits
FIRST_CATCH_UP_LOOKBACK_SECONDS = 3600.0  # first run: from an hour before the store was added
CATCH_UP_MAX_PAGES = 20  # 1000 orders a run; more and the window is read again next time
# An order younger than this is left to its webhook, which may still be on its way (WooCommerce
# sends from a queue). It is still inside the next run's window because this is <= the overlap.
CATCH_UP_MIN_AGE_SECONDS = 120.0
# The periodic task lets a freshly started process settle first (and a short-lived bridge, as
# in the tests, never runs it).
SETTLE_SECONDS = 60.0
assert CATCH_UP_MIN_AGE_SECONDS <= CATCH_UP_OVERLAP_SECONDS
PAYABLE_STATUSES = ("pending", "on-hold")
REVIVE_STATUSES = ("disabled", "paused")


class StoreHealth:
    def __init__(self, engine: Engine, registry: StoreRegistry, pipeline: Pipeline,
                 settings: Settings, *, clock: Callable[[], float] = time.time,
                 adapter: Callable[..., Store] = adapter_for) -> None:
        self.engine = engine
        self.registry = registry
        self.pipeline = pipeline
        self.settings = settings
        self.clock = clock
        self._adapter = adapter
        self.min_age_seconds = CATCH_UP_MIN_AGE_SECONDS
        self.settle_seconds = SETTLE_SECONDS
        self._started = clock()

    def tick(self) -> int:
        """The periodic task (every 5 minutes): ``run``, once the process is a minute old."""
        if self.clock() - self._started < self.settle_seconds:
            return 0
        return self.run()

    # -- the periodic task ---------------------------------------------------------------------

    def run(self) -> int:
        """Check and catch up every store; returns how many lost orders were queued.

        One store's failure (down, bad keys, undecryptable secrets, a bug) is logged and
        recorded, and the next store is still served.
        """
        with db.reading(self.engine) as conn:
            # WooCommerce only: it never retries and disables failing webhooks. Saleor retries
            # failed deliveries itself and owns the webhooks of its apps.
            ids = conn.execute(sa.select(db.stores.c.id).where(db.stores.c.kind == "woocommerce")
                               .order_by(db.stores.c.created_at)).scalars().all()
        queued = 0
        for store_id in ids:
            try:
                record = self.registry.find(store_id)
            except Exception:  # noqa: BLE001 - e.g. secrets encrypted with a key we lost
                logger.exception("store health: cannot load store %s", store_id,
                                 extra={"store_id": store_id})
                continue
            if record is None:
                continue  # removed meanwhile
            try:
                self.check(record)  # records its own failures; raises only on a bug
            except Exception as exc:  # noqa: BLE001 - one store must not stop the others
                logger.exception("store health: check of store %s failed", record.id,
                                 extra={"store_id": record.id})
                self._record_failure(record, f"check failed: {type(exc).__name__}")
            try:
                queued += self.catch_up(record)
            except Exception as exc:  # noqa: BLE001
                logger.exception("store health: catch-up of store %s failed", record.id,
                                 extra={"store_id": record.id})
                self._record_failure(record, f"catch-up failed: {type(exc).__name__}")
        return queued

    # -- webhooks ------------------------------------------------------------------------------

    def webhook_url(self, record: StoreRecord) -> str:
        return f"{self.settings.public_url}/webhooks/{record.kind}/{record.id}"

    def check(self, record: StoreRecord) -> dict[str, Any]:
        """Look at the store's webhooks for the bridge, re-activate what WooCommerce disabled."""
        now = self.clock()
        url = self.webhook_url(record)
        result: dict[str, Any] = {"store_id": record.id, "webhook_ids": [], "webhook_status": "",
                                  "reactivated": [], "failure": ""}
        try:
            store = self._store(record)
            hooks = store.webhooks_for(url)
            problems: list[str] = []
            for hook in hooks:
                status = str(hook.get("status", ""))
                if status not in REVIVE_STATUSES:
                    continue
                hook_id = int(hook["id"])
                updated = store.reactivate_webhook(hook_id)
                hook["status"] = str(updated.get("status", "active")) if isinstance(updated, dict) \
                    else "active"
                result["reactivated"].append(hook_id)
                why = ("was disabled by WooCommerce after repeated delivery failures"
                       if status == "disabled" else "was paused at the store")
                problems.append(f"webhook {hook_id} {why}; re-activated")
                logger.warning("store %s: webhook %s %s; re-activated", record.id, hook_id, why,
                               extra={"store_id": record.id})
            created = [h for h in hooks if str(h.get("topic", "")).lower() == ORDER_CREATED]
            if not hooks:
                problems.append("no webhook points at the bridge")
            elif not created:
                problems.append(f"no {ORDER_CREATED} webhook points at the bridge")
            statuses = {str(h.get("status", "")) for h in created or hooks}
            if not hooks:
                summary = "missing"
            elif result["reactivated"]:
                summary = "reactivated"
            else:
                summary = "active" if statuses == {"active"} else ",".join(sorted(statuses))
            result["webhook_ids"] = [int(h["id"]) for h in hooks]
            result["webhook_status"] = summary[:20]
            result["failure"] = "; ".join(problems)
        except Exception as exc:  # noqa: BLE001 - StoreError above all; recorded, never raised
            if not isinstance(exc, StoreError):
                logger.exception("store health: check of store %s failed", record.id,
                                 extra={"store_id": record.id})
            result["webhook_status"] = "unknown"
            result["failure"] = f"could not check the webhooks: {_describe(exc)}"
            result["failure"] = _scrub(result["failure"], record)
            self._save(record.id, now, webhook_status="unknown", failure=result["failure"])
            logger.warning("store %s: %s", record.id, result["failure"], extra={"store_id": record.id})
            return result
        if result["failure"] and not result["reactivated"]:
            logger.warning("store %s: %s", record.id, result["failure"], extra={"store_id": record.id})
        self._save(record.id, now, webhook_ids=result["webhook_ids"],
                   webhook_status=result["webhook_status"],
                   failure=_scrub(result["failure"], record),
                   reactivations=len(result["reactivated"]))
        return result

    # -- catch-up ------------------------------------------------------------------------------

    def catch_up(self, record: StoreRecord) -> int:
        """Feed the orders modified since the last catch-up through ``Pipeline.accept``.

        Returns how many were new to the bridge (queued for an invoice). The mark only moves
        forward once every page was read; a failure leaves it, so the next run reads the same
        window again (an order already seen is a no-op).
        """
        started = self.clock()
        since = self._catch_up_from(record)
        after_iso = datetime.fromtimestamp(since, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        # Orders created before the store was connected are the merchant's business, not lost
        # deliveries: an old order edited now must not suddenly get an invoice.
        oldest = record.created_at - FIRST_CATCH_UP_LOOKBACK_SECONDS
        statuses = tuple(s for s in PAYABLE_STATUSES if s in record.settings.statuses)
        if not statuses:
            self._save(record.id, None, catch_up_at=started)
            return 0
        queued = 0
        try:
            store = self._store(record)
            seen: set[str] = set()
            complete = False
            for page in range(1, CATCH_UP_MAX_PAGES + 1):
                orders = store.orders_modified_since(after_iso, page)
                for payload in orders:
                    queued += self._catch_up_one(record, store, payload, oldest, started, seen)
                if len(orders) < CATCH_UP_PAGE_SIZE:
                    complete = True
                    break
        except Exception as exc:  # noqa: BLE001 - recorded; the window is read again next time
            if not isinstance(exc, StoreError):
                logger.exception("store health: catch-up of store %s failed", record.id,
                                 extra={"store_id": record.id})
            failure = _scrub(f"catch-up failed: {_describe(exc)}", record)
            logger.warning("store %s: %s", record.id, failure, extra={"store_id": record.id})
            self._save(record.id, None, failure=failure)
            return queued
        if not complete:
            failure = (f"catch-up read {CATCH_UP_MAX_PAGES} pages of orders and stopped; "
                       "the rest is read on the next run")
            logger.warning("store %s: %s", record.id, failure, extra={"store_id": record.id})
            self._save(record.id, None, failure=failure)
            return queued
        self._save(record.id, None, catch_up_at=started)
        if queued:
            logger.warning("store %s: catch-up found %d order(s) whose webhook never arrived",
                           record.id, queued, extra={"store_id": record.id})
        return queued

    def _catch_up_one(self, record: StoreRecord, store: Store, payload: dict[str, Any],
                      oldest: float, started: float, seen: set[str]) -> int:
        external_id = str(payload.get("id", ""))
        if not external_id or external_id in seen:
            return 0
        seen.add(external_id)
        created = _gmt_timestamp(payload.get("date_created_gmt"))
        if created is not None and created < oldest:
            return 0
        if created is not None and created > started - self.min_age_seconds:
            return 0  # its webhook may be on its way; the next run looks again
        if any(isinstance(m, dict) and m.get("key") == META_INVOICE_ID and m.get("value")
               for m in payload.get("meta_data") or ()):
            return 0  # invoiced already (by this bridge before a reset, or another one)
        if self._known(record.id, external_id):
            return 0  # the webhook came: nothing to do, and no deliveries row for it
        body = simplejson.dumps(payload).encode("utf-8")
        try:
            order = store.parse_order(body)
        except Exception as exc:  # noqa: BLE001 - one bad payload must not stop the catch-up
            logger.warning("store %s: catch-up skipped order %s: %s", record.id, external_id,
                           _describe(exc), extra={"store_id": record.id, "order_id": external_id})
            return 0
        if skip_reason(record, order):
            return 0  # the store's filters leave it alone; a webhook would only record "skipped"
        accepted = self.pipeline.accept(
            record, WebhookEvent(topic=ORDER_CREATED, delivery_id=CATCH_UP_DELIVERY_ID, order=order),
            body)
        if accepted.outcome == "queued":
            logger.info("store %s: order %s caught up (its webhook never arrived)", record.id,
                        external_id, extra={"store_id": record.id, "order_id": external_id})
            return 1
        return 0

    def _catch_up_from(self, record: StoreRecord) -> float:
        row = self.status(record.id)
        last = row.get("last_catch_up_at") if row else None
        if last is None:
            return record.created_at - FIRST_CATCH_UP_LOOKBACK_SECONDS
        return float(last) - CATCH_UP_OVERLAP_SECONDS

    def _known(self, store_id: str, external_id: str) -> bool:
        o = db.orders.c
        with db.reading(self.engine) as conn:
            return conn.execute(sa.select(o.id).where(
                o.store_id == store_id, o.external_id == external_id[:100])).first() is not None

    # -- what the settings page shows ----------------------------------------------------------

    def register_webhook(self, store_id: str) -> None:
        """Point the store's order.created webhook at the bridge (after an install).

        WooCommerce pings the delivery URL while this call is still open, so it runs in a
        worker while the web processes answer the ping. Raises on failure, to be retried.
        """
        record = self.registry.get(store_id)
        try:
            hook = self._store(record).ensure_webhook(
                "order.created", self.webhook_url(record), record.secrets["webhook_secret"],
                "UPay Bridge: order created")
        except Exception as exc:
            self._record_failure(record, f"could not register the webhook: {_describe(exc)}")
            raise
        self._save(record.id, self.clock(), webhook_ids=[int(hook.get("id", 0))],
                   webhook_status=str(hook.get("status", "active")))

    def status(self, store_id: str) -> dict[str, Any] | None:
        """The store's ``store_health`` row (``webhook_ids`` decoded), or None before a check."""
        with db.reading(self.engine) as conn:
            row = conn.execute(sa.select(db.store_health).where(
                db.store_health.c.store_id == store_id)).first()
        if row is None:
            return None
        data = dict(row._mapping)
        try:
            data["webhook_ids"] = json.loads(data["webhook_ids"] or "[]")
        except ValueError:
            data["webhook_ids"] = []
        return data

    def last_delivery(self, store_id: str) -> float | None:
        """When the store's last webhook arrived (catch-up's own rows do not count)."""
        d = db.deliveries.c
        with db.reading(self.engine) as conn:
            return conn.execute(sa.select(sa.func.max(d.received_at)).where(
                d.store_id == store_id, d.delivery_id != CATCH_UP_DELIVERY_ID)).scalar()

    # -- internals -----------------------------------------------------------------------------

    def _store(self, record: StoreRecord) -> Store:
        return self._adapter(record, timeout=(self.settings.store_connect_timeout,
                                              self.settings.store_read_timeout))

    def _record_failure(self, record: StoreRecord, failure: str) -> None:
        try:
            self._save(record.id, None, failure=_scrub(failure, record))
        except Exception:  # noqa: BLE001 - the log line above already says it
            logger.exception("store health: could not record the failure of store %s", record.id)

    def _save(self, store_id: str, checked_at: float | None, *, webhook_ids: list[int] | None = None,
              webhook_status: str | None = None, failure: str = "", reactivations: int = 0,
              catch_up_at: float | None = None) -> None:
        """Upsert the row; only the given fields change (``reactivations`` is added)."""
        now = self.clock()
        h = db.store_health.c
        values: dict[str, Any] = {}
        if checked_at is not None:
            values["last_check_at"] = checked_at
        if webhook_ids is not None:
            values["webhook_ids"] = json.dumps(webhook_ids)
        if webhook_status is not None:
            values["webhook_status"] = webhook_status[:20]
        if failure:
            values["last_failure"] = failure[:2000]
            values["last_failure_at"] = now
        if catch_up_at is not None:
            values["last_catch_up_at"] = catch_up_at
        insert_values = dict(values, store_id=store_id, reactivations=reactivations)
        update_values: dict[str, Any] = dict(values)
        if reactivations:
            update_values["reactivations"] = h.reactivations + reactivations
        with self.engine.begin() as conn:
            dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
            stmt = dialect.insert(db.store_health).values(**insert_values)
            if update_values:
                stmt = stmt.on_conflict_do_update(index_elements=["store_id"], set_=update_values)
            else:
                stmt = stmt.on_conflict_do_nothing(index_elements=["store_id"])
            conn.execute(stmt)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _scrub(text: str, record: StoreRecord) -> str:
    """Belt and braces: no stored secret of the store ever reaches the health row or the log."""
    for secret in record.secrets.values():
        if secret and len(secret) >= 6 and secret in text:
            text = text.replace(secret, "•" * 8)
    return text


def _gmt_timestamp(value: Any) -> float | None:
    """WooCommerce's ``date_*_gmt`` ("2026-11-23T19:03:24", UTC without an offset) as epoch."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", ""))
    except ValueError:
        return None
    return parsed.replace(tzinfo=timezone.utc).timestamp()
