"""From a recorded order to an invoice at UPay and a payment link on the store's order.

The web request only records the order (``accept``); a worker runs ``process_order``. Each order
row is a small state machine, and every step that talks to another system is committed *before*
the call, so a worker that dies anywhere leaves a row the next worker can finish:

* ``received``/``retrying`` -> create the invoice (an *attempt* row is written as ``sending`` first)
* ``invoiced`` -> write the order meta, then the note -> ``done``
* final: ``done``, ``skipped``, ``not_invoiceable``, ``failed``, ``parked``

Unknown outcome. UPay has no idempotency keys and no way to look an invoice up by our order id.
When a create-invoice POST may have reached UPay but its answer was lost (read timeout, dropped
connection, 5xx, or a worker that died mid-request), the attempt is marked ``unknown`` and a new
attempt is made with a fresh ``order.id`` (``<store>-<order>-<n>``). The superseded attempt is
kept: its ``order.id`` comes back as ``requested_order_id`` if the customer ever pays it, so the
payment is still matched to the order. Only a request known not to have been processed (refused
connection, 429) is sent again with the same ``order.id``.

Notes are not idempotent at WooCommerce (and a customer note e-mails the customer), so the note
state is ``sending`` while the POST is in flight; a later try first looks for the note.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from . import db, metrics
from .config import Settings
from .digests import sha256_hex
from .errors import (BridgeError, ConfigError, InvalidPayloadError, OrderBusyError,
                     OrderNotFoundError, StoreAuthError, StoreError, UPayError)
from .group_commit import GroupCommit
from .intake_writer import IntakeCursor, IntakeWriter
from .mapping import (invoice_blockers, invoice_request_from_order, reference_id_for,
                      upay_order_id_for)
from .models import CallbackUrls, InvoiceOptions, Order
from .money import quantize
from .notes import (invoice_failed_note, not_invoiceable_note, paid_after_cancel_note,
                    payment_link_note)
from .registry import StoreRecord, StoreRegistry
from .stores import (META_INVOICE_ID, META_INVOICE_URL, META_UPAY_ORDER_ID, Store, WebhookEvent,
                     adapter_for)
from .upay import UPayClient

logger = logging.getLogger(__name__)

WORK_STATES = ("received", "retrying", "invoiced")
NOTE_OPEN = ("pending", "sending")


class _LeaseLost(Exception):
    """This worker's lease on the order ran out and another worker (or the operator's retry)
    has the order now: what this worker still holds must not reach UPay, the store or the row."""


@dataclass(frozen=True)
class _Intake:
    """One delivery of an order, as ``accept`` hands it to the batch writer."""
    order: dict[str, Any]  # the orders row
    delivery: dict[str, Any]  # the deliveries row, without its outcome
    events: list[tuple[str, str]]  # recorded when the order is new
    reason: str  # why the order is skipped ("" to invoice it)


@dataclass(frozen=True)
class Accepted:
    outcome: str  # queued | duplicate | skipped
    order_pk: int | None
    reason: str = ""


def callback_urls(public_url: str, store_id: str, token: str) -> CallbackUrls:
    # No query strings: UPay appends "?payment_id=..." to these as they are (upay-api.md §6.2),
    # so everything the bridge needs to find the order is in the path. The token is the
    # attempt's random id: the customer's pages must not be reachable by guessing order ids.
    base = public_url.rstrip("/")
    return CallbackUrls(return_url=f"{base}/upay/return/{store_id}/{token}",
                        cancel_url=f"{base}/upay/cancel/{store_id}/{token}",
                        notification_url=f"{base}/upay/notify/{store_id}")


def skip_reason(record: StoreRecord, order: Order) -> str:
    """Why the store's settings leave this order alone ("" when it should be invoiced)."""
    s = record.settings
    if order.status not in s.statuses:
        return f"order status is {order.status!r}; invoices are made for {', '.join(s.statuses)}"
    if s.payment_methods and order.payment_method not in s.payment_methods:
        return f"payment method {order.payment_method!r} is not one of {', '.join(s.payment_methods)}"
    if s.currencies and order.currency not in s.currencies:
        return f"currency {order.currency} is not one of {', '.join(s.currencies)}"
    return ""


class Pipeline:
    def __init__(self, engine: Engine, registry: StoreRegistry, settings: Settings, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.registry = registry
        self.settings = settings
        self.clock = clock
        # Set by the job queue: schedule(order_pk, delay_seconds). A lost call is not fatal:
        # ``sweep`` finds every order that still needs work.
        self.schedule: Callable[[int, float], None] = lambda pk, delay: None
        # The same for a batch of new orders, each due now (one queue write for the batch).
        self.schedule_many: Callable[[list[int]], None] = \
            lambda pks: [self.schedule(pk, 0.0) for pk in pks]  # type: ignore[func-returns-value]
        # Deliveries are written in batches (bridge/group_commit.py).
        self._intake: GroupCommit[_Intake, Accepted] = GroupCommit(self.accept_batch)
        self._intake_writer = IntakeWriter(engine)
        self._clients: dict[tuple[str, float], UPayClient] = {}
        self._clients_lock = threading.Lock()

    # -- intake: runs inside the webhook request, so it only writes and returns -----------------

    def accept(self, record: StoreRecord, event: WebhookEvent, body: bytes) -> Accepted:
        item = self.intake_item(record, event, body)
        accepted = self._intake.submit(item)
        metrics.of(self).delivered(record.kind, accepted.outcome)
        logger.info("order %s of store %s: %s", item.order["external_id"], record.id,
                    accepted.outcome,
                    extra={"store_id": record.id, "order_id": item.order["external_id"]})
        return accepted

    def intake_item(self, record: StoreRecord, event: WebhookEvent, body: bytes) -> _Intake:
        """The rows one delivery of an order adds, as ``accept_batch`` writes them."""
        order = event.order
        assert order is not None
        reason = skip_reason(record, order)
        now = self.clock()
        events = [("received", f"order #{order.number} {order.total} {order.currency} "
                               f"({order.status})")]
        if reason:
            events.append(("skipped", reason))
        return _Intake(
            order=dict(store_id=record.id, external_id=order.external_id[:100],
                       number=order.number[:100], currency=order.currency[:3],
                       total=str(order.total)[:40], payload=body.decode("utf-8"),
                       state="skipped" if reason else "received", reason=reason,
                       next_attempt_at=now, created_at=now, updated_at=now),
            delivery=dict(store_id=record.id, topic=event.topic, delivery_id=event.delivery_id,
                          external_order_id=order.external_id[:100],
                          body_sha256=sha256_hex(body), received_at=now),
            events=events, reason=reason)

    def accept_batch(self, batch: Sequence[_Intake]) -> list[Accepted]:
        """Record a batch of deliveries in one transaction (see ``group_commit``), then queue
        the new orders in one go."""
        def write(cursor: IntakeCursor) -> list[Accepted]:
            # Only rows actually inserted come back: an order already recorded (or delivered
            # twice within this batch) is a duplicate, and the first delivery in the batch wins.
            created = cursor.insert_orders([item.order for item in batch])
            results, deliveries, events = [], [], []
            for item in batch:
                pk = created.pop((item.order["store_id"], item.order["external_id"]), None)
                outcome = "duplicate" if pk is None else ("skipped" if item.reason else "queued")
                deliveries.append({**item.delivery, "outcome": outcome})
                if pk is not None:
                    at = item.order["created_at"]
                    events.extend((pk, at, kind, message[:2000]) for kind, message in item.events)
                results.append(Accepted(outcome, pk, item.reason))
            cursor.insert_deliveries(deliveries)
            cursor.insert_events(events)
            return results

        results = self._intake_writer.write(write)
        queued = [r.order_pk for r in results if r.outcome == "queued"]
        if queued:
            try:
                self.schedule_many(queued)
            except Exception:  # noqa: BLE001 - committed already; the sweep finds these orders
                logger.exception("could not queue %d new orders; the sweep will pick them up",
                                 len(queued))
        return results

    def close(self) -> None:
        with self._intake.paused():
            self._intake_writer.close()

    def record_ignored(self, record: StoreRecord, event: WebhookEvent, body: bytes) -> None:
        with self.engine.begin() as conn:
            conn.execute(_INSERT_DELIVERY, dict(
                store_id=record.id, topic=event.topic, delivery_id=event.delivery_id,
                outcome="ignored", body_sha256=sha256_hex(body), received_at=self.clock()))
        metrics.of(self).delivered(record.kind, "ignored")

    # -- the job -------------------------------------------------------------------------------

    def process_order(self, pk: int) -> str:
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        row = self._claim(pk, owner)
        if row is None:
            return "not-claimed"
        retry_delay: float | None = None
        try:
            record = self.registry.find(row.store_id)
            if record is None:
                self._update(pk, state="failed", reason="the store was removed from the bridge")
                return "failed"
            store = adapter_for(record, timeout=(self.settings.store_connect_timeout,
                                                 self.settings.store_read_timeout))
            if row.state in ("received", "retrying"):
                row = self._invoice(row, record, store, owner)
            if row.state != "parked" and (row.note_state in NOTE_OPEN or
                                          (row.state == "invoiced" and not row.meta_written)):
                row = self._write_back(row, store, owner)
            if row.state == "done" and row.lease_owner == owner:
                self._run_actions(row, record, store, owner)
            return row.state
        except _LeaseLost:
            # The worker that holds the order now finishes it; this one only stops.
            logger.warning("order row %s: the lease ran out during the job and another worker "
                           "has the order now; this worker stops", pk)
            return "lease-lost"
        except BridgeError as exc:
            retry_delay = self._after_error(self._row(pk), exc, owner)
            return "retrying" if retry_delay is not None else "parked"
        except Exception as exc:  # noqa: BLE001 - a bug must not lose the order: retry, then park
            logger.exception("unexpected error processing order row %s", pk)
            retry_delay = self._after_error(self._row(pk), exc, owner)
            return "retrying" if retry_delay is not None else "parked"
        finally:
            if row is None or row.lease_owner == owner:
                self._release(pk, owner)
            if retry_delay is not None:
                self.schedule(pk, retry_delay)

    def sweep(self) -> int:
        """Queue every order that needs work and that no worker holds: nothing is left behind
        when a queued job was lost (a crash, a flushed Redis) or a retry was never scheduled."""
        now = self.clock()
        due = now - self.settings.sweep_grace_seconds
        with db.reading(self.engine) as conn:
            ids = conn.execute(_SWEEP, {"b_due": due, "b_now": now}).scalars().all()
        for pk in ids:
            self.schedule(pk, 0.0)
        return len(ids)

    def retry(self, pk: int) -> None:
        """Operator's "try again now" for a parked or failed order."""
        row = self._row(pk)
        if row is None:
            raise InvalidPayloadError(f"no order row {pk}")
        state = row.state
        if state in ("parked", "failed"):
            if not row.invoice_url:
                state = "retrying"
            elif row.meta_written and row.note_state not in NOTE_OPEN:
                # Parked after the write-back, by a store action (marking it paid): "done" is
                # the state in which a job carries out the store actions still open.
                state = "done"
            else:
                state = "invoiced"
        with self.engine.begin() as conn:
            # Only a row nobody holds, and still in the state read above: clearing a live lease
            # would let a second worker start a second invoice while the first one's create-
            # invoice call is in flight (and both write a payment link on the order).
            now = self.clock()
            o = db.orders.c
            changed = conn.execute(db.orders.update().where(
                o.id == pk, o.state == row.state,
                sa.or_(o.lease_expires.is_(None), o.lease_expires < now)).values(
                state=state, retries=0, next_attempt_at=now, lease_expires=None,
                lease_owner=None, updated_at=now).returning(o.id)).first()
            if changed is None:
                raise OrderBusyError(
                    f"order row {pk} is being worked on right now; try again when its job ends")
            if state == "retrying":
                # A permanent UPay error is final for that attempt only; a new try needs a new id.
                conn.execute(db.attempts.update().where(
                    db.attempts.c.order_id == pk, db.attempts.c.state == "failed")
                    .values(state="unknown", updated_at=now))
            _event(conn, pk, now, "retry", "retry requested by the operator")
        self.schedule(pk, 0.0)

    # -- steps ---------------------------------------------------------------------------------

    def _invoice(self, row: Any, record: StoreRecord, store: Store, owner: str) -> Any:
        pk = row.id
        order = store.parse_order(row.payload)
        options = InvoiceOptions(notification_type=record.settings.notification_type,
                                 language=record.settings.language, plugin_src=store.plugin_src)
        blockers = invoice_blockers(order, options)
        if blockers:
            reason = ", ".join(b.value for b in blockers)
            return self._update(pk, state="not_invoiceable", reason=reason, note_state="pending",
                                note_text=not_invoiceable_note(blockers, record.settings.language),
                                note_customer=False, event=("not_invoiceable", reason))
        attempt = self._start_attempt(pk, record.id, order.external_id, owner)
        request = invoice_request_from_order(
            order, upay_order_id=attempt.upay_order_id, reference_id=reference_id_for(order.number),
            options=options, urls=callback_urls(self.settings.public_url, record.id,
                                                attempt.token))
        try:
            invoice = self._client(record).create_invoice(request)
        except UPayError as exc:
            now = self.clock()
            if exc.transient:
                state = "unknown" if exc.outcome_unknown else "not_sent"
                self._set_attempt(attempt.id, state=state, error=str(exc))
                raise
            self._set_attempt(attempt.id, state="failed", error=str(exc))
            metrics.of(self).invoices_failed.inc()
            logger.warning("UPay refused the invoice for order %s of store %s: %s",
                           order.external_id, record.id, exc,
                           extra={"store_id": record.id, "order_id": order.external_id})
            failed = self._update(pk, state="failed", reason=str(exc), last_error=str(exc),
                                  note_state="pending", note_customer=False,
                                  note_text=invoice_failed_note(str(exc), record.settings.language),
                                  event=("upay_refused", str(exc)), now=now, hold=owner)
            if failed is None:
                raise _LeaseLost() from None
            return failed
        with self.engine.begin() as conn:
            now = self.clock()
            # The invoice exists at UPay whoever holds the order now: its attempt records it, so
            # a payment on it still finds the order.
            conn.execute(_UPDATE_ATTEMPT, {
                "b_id": attempt.id, "state": "created", "invoice_id": invoice.invoice_id[:100],
                "invoice_url": invoice.url[:500], "updated_at": now})
            # The order takes it only while this worker holds the lease: after a takeover the
            # other worker has superseded this attempt and writes its own link, once.
            row = conn.execute(_UPDATE_HELD, {
                "b_pk": pk, "b_holder": owner,
                "lease_expires": now + self.settings.lease_seconds,
                "state": "invoiced", "invoice_id": invoice.invoice_id[:100],
                "invoice_url": invoice.url[:500], "upay_order_id": attempt.upay_order_id,
                "retries": 0, "last_error": "", "note_state": "pending",
                "note_customer": record.settings.customer_note,
                "note_text": payment_link_note(invoice.url, quantize(order.total, order.currency),
                                               order.currency, record.settings.language),
                "updated_at": now}).first()
            if row is None:
                _event(conn, pk, now, "invoice_superseded",
                       f"invoice {invoice.invoice_id} ({attempt.upay_order_id}) came back after "
                       f"the lease ran out; another worker has the order: {invoice.url}")
            else:
                _event(conn, pk, now, "invoice_created",
                       f"invoice {invoice.invoice_id} ({attempt.upay_order_id}): {invoice.url}")
        if row is None:
            raise _LeaseLost()
        metrics.of(self).invoices_created.inc()
        logger.info("invoice %s created for order %s of store %s", invoice.invoice_id,
                    order.external_id, record.id,
                    extra={"store_id": record.id, "order_id": order.external_id})
        return row

    def _write_back(self, row: Any, store: Store, owner: str) -> Any:
        pk, ext = row.id, row.external_id
        if row.note_state == "sending":
            # The last POST may have created the note before its answer was lost.
            found = store.find_note(ext, row.invoice_url or row.note_text)
            if found is not None:
                row = self._update(pk, note_state="written", note_id=found[:40],
                                   event=("note_found", f"note {found} was already on the order"))
        events: list[tuple[str, str]] = []
        values: dict[str, Any] = {}
        meta_written = bool(row.meta_written)
        if row.state == "invoiced" and not meta_written:
            # No lease check of its own here: the claim or the invoice's commit renewed the lease
            # just before, and the commit below checks it before the note is sent.
            store.write_invoice_meta(ext, {META_INVOICE_ID: row.invoice_id or "",
                                           META_INVOICE_URL: row.invoice_url or "",
                                           META_UPAY_ORDER_ID: row.upay_order_id or ""})
            values["meta_written"] = meta_written = True
            events.append(("meta_written", "invoice id and URL saved in the order's meta data"))
        if row.note_state in NOTE_OPEN:
            # One commit records the meta and marks the note as in flight, if the order is still
            # this worker's (and keeps it so for the POST).
            if self._update(pk, note_state="sending", events=events, hold=owner,
                            **values) is None:
                raise _LeaseLost()
            note_id = store.add_note(ext, row.note_text, customer_note=row.note_customer)
            kind = "customer note" if row.note_customer else "private note"
            events = [("note_written", f"{kind} {note_id}: {row.note_text}")]
            values = {"note_state": "written", "note_id": note_id[:40]}
        note_written = values.get("note_state", row.note_state) == "written"
        if row.state == "invoiced" and meta_written and note_written:
            values.update(state="done", retries=0, last_error="")
        if values:
            # The last step of the job also gives the lease back: one commit fewer per order.
            row = self._update(pk, events=events, release=owner, **values)
        return row

    def _after_error(self, row: Any, exc: BaseException, owner: str) -> float | None:
        """Record a failed step; return the delay before the next try, or None when parked
        (or when the order is no longer this worker's: then its holder decides)."""
        if row is None or row.lease_owner != owner:
            logger.warning("order row %s: %s, after the lease went to another worker",
                           getattr(row, "id", "?"), str(exc) or type(exc).__name__)
            return None
        pk = row.id
        message = str(exc) or type(exc).__name__
        if isinstance(exc, OrderNotFoundError):
            self._update(pk, state="failed", reason=message, last_error=message,
                         note_state="none" if row.note_state in NOTE_OPEN else row.note_state,
                         event=("store_error", message), hold=owner, **_LET_GO)
            return None
        transient = getattr(exc, "transient", False) or isinstance(exc, StoreAuthError) \
            or not isinstance(exc, BridgeError)
        retries = row.retries + 1
        if not transient or retries > self.settings.max_retries:
            why = message if not transient else f"gave up after {row.retries} retries: {message}"
            logger.error("order %s of store %s parked: %s", row.external_id, row.store_id, why,
                         extra={"store_id": row.store_id, "order_id": row.external_id})
            self._update(pk, state="parked", reason=why, last_error=message,
                         event=("parked", why), hold=owner, **_LET_GO)
            return None
        delay = self._backoff(retries)
        # UPay's and a store's Retry-After (429, a maintenance page's 503): never sooner than
        # asked, and never later than the longest backoff, so a "Retry-After: 86400" does not
        # hold an order for a day per try.
        hint = getattr(exc, "retry_after", None)
        if hint:
            delay = max(delay, min(float(hint), self.settings.retry_max_seconds))
        state = "retrying" if row.state == "received" else row.state
        where = "UPay" if isinstance(exc, UPayError) else ("the store" if isinstance(exc, StoreError)
                                                           else "the bridge")
        logger.warning("order %s of store %s: %s failed (%s); retry %d in %.1fs", row.external_id,
                       row.store_id, where, message, retries, delay,
                       extra={"store_id": row.store_id, "order_id": row.external_id})
        if self._update(pk, state=state, retries=retries, last_error=message,
                        next_attempt_at=self.clock() + delay, hold=owner,
                        event=("retry_scheduled",
                               f"{where}: {message}; retry {retries} in {delay:.0f}s")) is None:
            return None  # the order went to another worker meanwhile
        return delay

    def _backoff(self, retries: int) -> float:
        # Exponential backoff with jitter: half fixed, half random, so a burst of orders that
        # failed together (UPay down) does not come back together.
        ceiling = min(self.settings.retry_max_seconds,
                      self.settings.retry_base_seconds * (2 ** (retries - 1)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _run_actions(self, row: Any, record: StoreRecord, store: Store, owner: str) -> None:
        """Carry out what payment confirmation asked of the store, in order, each once.

        The lease is renewed before each store call and each result is recorded only while this
        worker still holds it, as for the invoice and the link note: a slow store can outlast
        the lease, and the worker that took the order over runs the actions from the database
        (a note in flight is looked for first), while the list read here would be out of date."""
        a = db.store_actions.c
        with db.reading(self.engine) as conn:
            actions = conn.execute(sa.select(db.store_actions).where(
                a.order_id == row.id, a.state.in_(NOTE_OPEN)).order_by(a.id)).all()
        for action in actions:
            data = json.loads(action.data)
            if action.kind == "mark_paid":
                language = record.settings.language
                # mark_paid reads the order first, so a repeat after a takeover changes nothing
                # at the store; the renewal keeps the order this worker's for the call.
                self._hold(row.id, owner)

                def queue_reopened_note() -> None:
                    # Queued before the PUT that re-opens the order: if its answer is lost, the
                    # retry finds the order paid ("already_paid") and could not tell the
                    # merchant it had been cancelled (stock it released may be gone).
                    self.add_action(row.id, "note", f"cancel-note:{row.id}",
                                    text=paid_after_cancel_note(True, language))

                result = store.mark_paid(row.external_id, data["transaction_id"],
                                         paid_status=record.settings.paid_status,
                                         reopen_cancelled=record.settings.paid_after_cancel == "reopen",
                                         before_reopen=queue_reopened_note)
                message = f"{result.outcome} (order {result.status} at the store)"
                self._finish_action(action.id, row.id, message, "store_paid", owner=owner)
                if result.outcome in ("reopened", "cancelled_left"):
                    self.add_action(row.id, "note", f"cancel-note:{row.id}", text=paid_after_cancel_note(
                        result.outcome == "reopened", language))
                    self._run_actions(row, record, store, owner)
                    return
            elif action.kind == "note":
                if action.state == "sending":
                    self._hold(row.id, owner)
                    found = store.find_note(row.external_id, data["text"])
                    if found is not None:
                        self._finish_action(action.id, row.id, f"note {found}", "note_found",
                                            owner=owner)
                        continue
                with self.engine.begin() as conn:
                    # One commit checks (and renews) the lease and marks the note as in flight,
                    # as the link note does: a worker that lost the order must not post it again.
                    self._hold(row.id, owner, conn)
                    conn.execute(db.store_actions.update().where(a.id == action.id)
                                 .values(state="sending", updated_at=self.clock()))
                customer = bool(data.get("customer"))
                note_id = store.add_note(row.external_id, data["text"], customer_note=customer)
                kind = "customer note" if customer else "private note"
                self._finish_action(action.id, row.id, f"note {note_id}", "note_written",
                                    f"{kind} {note_id}: {data['text']}", owner=owner)

    def add_action(self, pk: int, kind: str, dedupe_key: str, conn: Connection | None = None,
                   **data: Any) -> bool:
        """Queue an action on the store's order; False when one with that key exists already."""
        dialect = sqlite if (conn or self.engine).dialect.name == "sqlite" else postgresql
        now = self.clock()
        stmt = (dialect.insert(db.store_actions).values(
            order_id=pk, kind=kind, data=json.dumps(data, sort_keys=True), state="pending",
            dedupe_key=dedupe_key[:120], created_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            # RETURNING, not rowcount: SQLAlchemy reports no rowcount for an INSERT on
            # PostgreSQL (-1), so "was it new?" is "did it return a row?".
            .returning(db.store_actions.c.id))
        if conn is not None:
            return conn.execute(stmt).first() is not None
        with self.engine.begin() as own:
            return own.execute(stmt).first() is not None

    def _finish_action(self, action_id: int, pk: int, result: str, kind: str,
                       message: str | None = None, *, owner: str) -> None:
        """Record an action as done, only while ``owner`` holds the order (``_LeaseLost``
        otherwise: the worker that has it now redoes the action, which the store's state, the
        order already paid or the note already there, makes a no-op, and records it once)."""
        with self.engine.begin() as conn:
            now = self.clock()
            self._hold(pk, owner, conn)
            conn.execute(db.store_actions.update().where(db.store_actions.c.id == action_id)
                         .values(state="done", result=result[:500], updated_at=now))
            _event(conn, pk, now, kind, message or result)

    # -- attempts ------------------------------------------------------------------------------

    def _start_attempt(self, pk: int, store_id: str, external_id: str,
                       owner: str | None = None) -> Any:
        with self.engine.begin() as conn:
            now = self.clock()
            if owner is not None:
                # Still ours (and kept so for the call): a worker whose lease ran out must not
                # supersede the attempt of the worker that has the order now.
                self._hold(pk, owner, conn)
            last = conn.execute(_LAST_ATTEMPT, {"b_pk": pk}).first()
            if last is not None and last.state == "not_sent":
                return conn.execute(_UPDATE_ATTEMPT.returning(db.attempts), {
                    "b_id": last.id, "state": "sending", "updated_at": now}).first()
            if last is not None and last.state == "sending":
                # The worker holding this attempt stopped while its POST was in flight.
                conn.execute(_UPDATE_ATTEMPT, {
                    "b_id": last.id, "state": "unknown",
                    "error": "the worker stopped during the request", "updated_at": now})
            if last is not None and last.state in ("sending", "unknown"):
                _event(conn, pk, now, "superseded",
                       f"attempt {last.upay_order_id} has an unknown outcome; a new order id is "
                       "used, and a payment on the old one still counts for this order")
            number = 1 if last is None else last.number + 1
            upay_order_id = upay_order_id_for(store_id, external_id, number)
            attempt = conn.execute(_INSERT_ATTEMPT, dict(
                order_id=pk, number=number, upay_order_id=upay_order_id, state="sending",
                token=secrets.token_urlsafe(16), created_at=now, updated_at=now)).first()
            _event(conn, pk, now, "attempt", f"creating invoice with order id {upay_order_id}")
            return attempt

    def _set_attempt(self, attempt_id: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(_UPDATE_ATTEMPT, {"b_id": attempt_id, "updated_at": self.clock(),
                                           **values})

    # -- rows ----------------------------------------------------------------------------------

    def _client(self, record: StoreRecord) -> UPayClient:
        if not record.secrets.get("upay_api_key"):
            raise ConfigError("no UPay API key is set for this store; add it on the settings page")
        key = (record.id, record.updated_at)
        with self._clients_lock:
            client = self._clients.get(key)
            if client is None:
                base = (self.settings.upay_sandbox_url if record.upay_sandbox
                        else self.settings.upay_production_url)
                client = UPayClient(record.secrets["upay_api_key"], base_url=base,
                                    timeout=(self.settings.upay_connect_timeout,
                                             self.settings.upay_read_timeout))
                self._clients[key] = client
            return client

    def _claim(self, pk: int, owner: str) -> Any:
        now = self.clock()
        with self.engine.begin() as conn:
            return conn.execute(_CLAIM, {"b_pk": pk, "b_due": now + 2, "b_now": now,
                                         "lease_owner": owner,
                                         "lease_expires": now + self.settings.lease_seconds}
                                ).first()

    def _hold(self, pk: int, owner: str, conn: Connection | None = None) -> None:
        """Renew this worker's lease before a call to another system; ``_LeaseLost`` when the
        order is no longer this worker's."""
        params = {"b_pk": pk, "b_holder": owner,
                  "b_expires": self.clock() + self.settings.lease_seconds}
        if conn is not None:
            held = conn.execute(_HOLD, params).first()
        else:
            with self.engine.begin() as own:
                held = own.execute(_HOLD, params).first()
        if held is None:
            raise _LeaseLost()

    def _release(self, pk: int, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(_RELEASE, {"b_pk": pk, "b_owner": owner})

    def _row(self, pk: int) -> Any:
        with db.reading(self.engine) as conn:
            return conn.execute(_ORDER_BY_PK, {"b_pk": pk}).first()

    def _update(self, pk: int, *, event: tuple[str, str] | None = None,
                events: list[tuple[str, str]] = (), now: float | None = None,
                release: str | None = None, hold: str | None = None, **values: Any) -> Any:
        """Update the order row (and record events) in one commit; return the row as it is now.
        With ``hold``, only while that worker holds the lease (renewed): None when it does not."""
        now = self.clock() if now is None else now
        params = {"b_pk": pk, "updated_at": now, **values}
        stmt = _UPDATE_ORDER
        if release is not None:
            params["b_owner"] = release
            stmt = _UPDATE_AND_RELEASE
        elif hold is not None:
            params["b_holder"] = hold
            params.setdefault("lease_expires", now + self.settings.lease_seconds)
            stmt = _UPDATE_HELD
        with self.engine.begin() as conn:
            row = conn.execute(stmt, params).first()
            if row is None:
                return None
            for kind, message in ([event] if event else []) + list(events):
                _event(conn, pk, now, kind, message)
        return row


# What "needs work" means, in three parts: a working state; or, unless parked, an open note or
# an open store action. A claim tests them together on one row (``_needs_work``); the sweep
# looks each up on its own index (``_SWEEP``).
_WORKING = db.orders.c.state.in_(WORK_STATES)
_NOT_PARKED = db.orders.c.state != "parked"
_NOTE_IS_OPEN = db.orders.c.note_state.in_(NOTE_OPEN)
_ACTION_IS_OPEN = db.store_actions.c.state.in_(NOTE_OPEN)


def _needs_work() -> Any:
    open_actions = sa.exists().where(db.store_actions.c.order_id == db.orders.c.id,
                                     _ACTION_IS_OPEN)
    return sa.and_(_NOT_PARKED, sa.or_(_WORKING, _NOTE_IS_OPEN, open_actions))


def _event(conn: Connection, pk: int, at: float, kind: str, message: str) -> None:
    conn.execute(_INSERT_EVENT, {"order_id": pk, "at": at, "kind": kind[:30],
                                 "message": message[:2000]})


# The statements of the hot path, built once. Values travel as parameters: SQLAlchemy then
# finds the compiled form in its cache without walking a statement full of literal values.
_o = db.orders.c
_ORDER_BY_PK = sa.select(db.orders).where(_o.id == sa.bindparam("b_pk"))
_UPDATE_ORDER = db.orders.update().where(_o.id == sa.bindparam("b_pk")).returning(db.orders)
# The lease goes back only if it is still ours (after a long stall another worker may hold the
# row now) and no store action waits: those run under this lease.
_STILL_OURS = sa.and_(_o.lease_owner == sa.bindparam("b_owner"), ~sa.exists().where(
    db.store_actions.c.order_id == _o.id, _ACTION_IS_OPEN))
_UPDATE_AND_RELEASE = _UPDATE_ORDER.values(
    lease_owner=sa.case((_STILL_OURS, None), else_=_o.lease_owner),
    lease_expires=sa.case((_STILL_OURS, None), else_=_o.lease_expires))
# A final state gives the lease back in the same commit: an operator's retry, which leaves a held
# order alone, may then follow at once.
_LET_GO = {"lease_owner": None, "lease_expires": None}
_UPDATE_HELD = _UPDATE_ORDER.where(_o.lease_owner == sa.bindparam("b_holder"))
_HOLD = (db.orders.update().where(_o.id == sa.bindparam("b_pk"),
                                  _o.lease_owner == sa.bindparam("b_holder"))
         .values(lease_expires=sa.bindparam("b_expires")).returning(_o.id))
_CLAIM = db.orders.update().where(
    _o.id == sa.bindparam("b_pk"), _needs_work(), _o.next_attempt_at <= sa.bindparam("b_due"),
    sa.or_(_o.lease_expires.is_(None), _o.lease_expires < sa.bindparam("b_now"))
).returning(db.orders)
# The sweep's "needs work" as three lookups, each on an index (ix_orders_work, ix_orders_note,
# ix_store_actions_open), instead of one OR that reads every order ever received: finished
# orders pile up for years and the sweep runs every minute.
_FREE_AND_DUE = sa.and_(_o.next_attempt_at <= sa.bindparam("b_due"), sa.or_(
    _o.lease_expires.is_(None), _o.lease_expires < sa.bindparam("b_now")))
_SWEEP_PARTS = sa.union(
    sa.select(_o.id, _o.next_attempt_at).where(_WORKING, _FREE_AND_DUE),
    sa.select(_o.id, _o.next_attempt_at).where(_NOTE_IS_OPEN, _NOT_PARKED, _FREE_AND_DUE),
    sa.select(_o.id, _o.next_attempt_at).where(
        _o.id.in_(sa.select(db.store_actions.c.order_id).where(_ACTION_IS_OPEN)),
        _NOT_PARKED, _FREE_AND_DUE),
).subquery()
_SWEEP = sa.select(_SWEEP_PARTS.c.id).order_by(_SWEEP_PARTS.c.next_attempt_at).limit(1000)
_RELEASE = db.orders.update().where(_o.id == sa.bindparam("b_pk"),
                                    _o.lease_owner == sa.bindparam("b_owner")).values(
    lease_owner=None, lease_expires=None)
_INSERT_EVENT = db.events.insert()
_a = db.attempts.c
_LAST_ATTEMPT = (sa.select(db.attempts).where(_a.order_id == sa.bindparam("b_pk"))
                 .order_by(_a.number.desc()).limit(1))
_UPDATE_ATTEMPT = db.attempts.update().where(_a.id == sa.bindparam("b_id"))
_INSERT_ATTEMPT = db.attempts.insert().returning(db.attempts)
_INSERT_DELIVERY = db.deliveries.insert()


def order_events(engine: Engine, pk: int) -> list[dict[str, Any]]:
    with db.reading(engine) as conn:
        rows = conn.execute(sa.select(db.events).where(db.events.c.order_id == pk)
                            .order_by(db.events.c.id)).all()
    return [dict(at=r.at, kind=r.kind, message=r.message) for r in rows]


def order_attempts(engine: Engine, pk: int) -> list[dict[str, Any]]:
    with db.reading(engine) as conn:
        rows = conn.execute(sa.select(db.attempts).where(db.attempts.c.order_id == pk)
                            .order_by(db.attempts.c.number)).all()
    return [dict(number=r.number, upay_order_id=r.upay_order_id, state=r.state,
                 invoice_id=r.invoice_id, invoice_url=r.invoice_url, error=r.error) for r in rows]

