"""From "the customer paid" to "the order is paid in the store": exactly once, never on a forged
or mistaken signal.

Three things say "look now": UPay's notification (unsigned), the customer's browser coming back,
and the reconciler, which asks about invoices still open because UPay's notification sometimes
never arrives (upay-api.md §6.2, §15). All three lead to ``confirm``, which asks UPay's
``get-payment-status`` through the per-key rate limiter and applies the verdict of
``bridge.confirmation``. A confirmed payment is recorded under its UPay track id (unique), in
the same transaction as the store actions it causes, so ten notifications and a racing return
page still make one transition and one note.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Mapping

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from . import db
from .config import Settings
from .confirmation import Outcome, Verdict, next_check_delay, verdict_from_status
from .errors import UPayError
from .money import quantize
from .notes import (double_payment_note, payment_confirmed_note, payment_mismatch_note,
                    payment_not_completed_note)
from .pipeline import Pipeline, _event
from .ratelimit import RateLimiter, key_id
from .registry import StoreRecord, StoreRegistry
from .stores import adapter_for

logger = logging.getLogger(__name__)

RETURN_WATCH_SECONDS = 10 * 60  # after the customer came back, look again often for this long
# Signals (notifications, returns) for one order merge into one queued status check, and checks
# caused by signals are spaced by a gap that doubles with each check already made for the order
# (5 s, 10 s, ... at most 60 s). UPay's notifications are unsigned: without this, anyone who
# knows an invoice's order id could spend the key's 30 status calls a minute with forged ones
# and hold back real confirmations for every order of the store.
SIGNAL_GAP_SECONDS = 5.0
SIGNAL_GAP_MAX_SECONDS = 60.0
# How many other invoices of one order reconcile also asks about, in turn with the newest.
RECONCILE_OTHER_LOOKUPS = 3
# How many distinct track ids one status check follows up for an invoice whose create answer
# was lost. Such an invoice can only be asked about by the track id a notification gives, and
# notifications are unsigned: one per invoice would let a forged one, merged into the same
# check as the real one, take the real one's place. More than one, but few, so that a flood
# of forgeries still costs the key's status budget a bounded number of calls.
LOST_ANSWER_TRACKS = 3
# A signal's status check not made this long after it was due was lost by the job queue (a
# crash, a flushed Redis): reconcile makes it. Longer than a queued job normally waits plus one
# status call (UPAY_BRIDGE_UPAY_READ_TIMEOUT, 30 s by default); a check queued again (rate
# limit, a 5xx) moves its due time along, so it is never taken for lost while it is alive.
SIGNAL_CHECK_LOST_SECONDS = 300.0
# Payment states reconcile does not follow; it still makes a signal's check that was lost.
SETTLED_STATES = ("paid", "flagged", "expired")


class Payments:
    def __init__(self, engine: Engine, registry: StoreRegistry, settings: Settings,
                 pipeline: Pipeline, limiter: RateLimiter, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.registry = registry
        self.settings = settings
        self.pipeline = pipeline
        self.limiter = limiter
        self.clock = clock
        # Set by the job queue: schedule(order_pk, hint, delay); a hint is what the signal said
        # (source, track_id, upay_order_id, claimed result), never trusted.
        self.schedule: Callable[[int, dict, float], None] = lambda *a: None

    # -- signals in (web requests: record, match, queue, return) -------------------------------

    def on_notification(self, record: StoreRecord, fields: Mapping[str, str]) -> str:
        attempt = self._attempt_by("upay_order_id", fields.get("requested_order_id", ""))
        pk = attempt.order_id if attempt is not None and self._owned(attempt, record) else None
        state = "matched" if pk else "unmatched"
        self._record_signal(record.id, "notify", fields, state, pk)
        if pk is None:
            logger.warning("suspicious UPay notification for store %s: requested_order_id %r is "
                           "not an invoice of this store", record.id,
                           fields.get("requested_order_id", "")[:40], extra={"store_id": record.id})
            return state
        self._signal_check(pk, _hint("notify", fields, attempt.upay_order_id))
        return state

    def on_return(self, record: StoreRecord, token: str, kind: str,
                  fields: Mapping[str, str]) -> Any:
        """The customer's browser is back from UPay (kind "return" or "cancel")."""
        attempt = self._attempt_by("token", token)
        if attempt is None or not self._owned(attempt, record):
            self._record_signal(record.id, kind, fields, "unmatched", None)
            return None
        self._record_signal(record.id, kind, fields, "matched", attempt.order_id)
        with self.engine.begin() as conn:
            conn.execute(db.orders.update().where(db.orders.c.id == attempt.order_id)
                         .values(returned_at=self.clock()))
        # The browser's parameters are only a hint (never proof): confirm with UPay.
        self._signal_check(attempt.order_id, _hint(kind, fields, attempt.upay_order_id))
        return attempt

    def status_for(self, record: StoreRecord, token: str) -> dict[str, Any]:
        """What the waiting page shows; reads the database only, never UPay."""
        attempt = self._attempt_by("token", token)
        if attempt is None or not self._owned(attempt, record):
            return {"state": "unknown"}
        row = self.pipeline._row(attempt.order_id)
        state = {"paid": "paid", "flagged": "review"}.get(row.payment_state, "pending")
        out: dict[str, Any] = {"state": state}
        if state == "paid":
            store = adapter_for(record)
            out["redirect"] = store.customer_order_url(store.parse_order(row.payload))
        return out

    # -- the confirmation job ------------------------------------------------------------------

    def confirm(self, pk: int, hint: Mapping[str, str] | None = None) -> str:
        hint = dict(hint or {"source": "reconcile"})
        outcome = self._confirm(pk, hint)
        if hint.get("then") and outcome not in ("gone", "rate-limited", "retrying"):
            # Answered: the next of the order's other invoices that signals named is asked
            # about now, and the record that a check is owed passes on to that check.
            self._check_next_invoice(pk, hint)
        return outcome

    def _confirm(self, pk: int, hint: dict[str, str]) -> str:
        source = hint.get("source", "reconcile")
        track_id, upay_order_id = hint.get("track_id", ""), hint.get("upay_order_id", "")
        row = self.pipeline._row(pk)
        record = self.registry.find(row.store_id) if row is not None else None
        if row is None or record is None:
            return "gone"
        attempts = self._attempts(pk)
        if source == "reconcile" and not upay_order_id:
            lookup = self._reconcile_lookup(row, attempts)
        else:
            lookup = self._lookup(attempts, track_id, upay_order_id)
        if lookup is None:
            self._next_check(row, count=False, settles=_owns(hint))  # nothing can be asked
            return "nothing-to-ask"
        wait = self.limiter.acquire(key_id(record.secrets["upay_api_key"]))
        if wait:
            # Over UPay's budget for this key: ask again when a slot frees, never exceed it.
            self._requeue(pk, hint, wait)
            return "rate-limited"
        # Signals merged into this check while it was queued may name another invoice of the
        # order: each is asked about after this check (reconcile does not look at a paid
        # order). A customer's return merged into it makes it the start of the return's
        # follow-ups.
        if self._check_merged(pk, hint, attempts) and source != "return":
            hint["follow_up"] = "return"
        hint.pop("since", None)  # a retry of this check does not look at them again
        # The signal check this is, if any: its answer settles the record that it is owed,
        # unless other invoices are still to be asked about (the record passes on to them).
        owns = _owns(hint)
        try:
            tx = self.pipeline._client(record).get_payment_status(**lookup)
        except UPayError as exc:
            return self._status_failed(row, record, hint, exc)
        order = adapter_for(record).parse_order(row.payload)
        verdict = verdict_from_status(tx, amount=quantize(order.total, order.currency),
                                      currency=order.currency,
                                      attempt_ids=[a.upay_order_id for a in attempts])
        claimed = hint.get("claimed", "").upper()
        if claimed == "CAPTURED" and verdict.outcome != Outcome.CAPTURED:
            # Someone said "paid" and UPay says otherwise: a forgery or a mistake. Nothing changes.
            logger.warning("suspicious %s for order %s of store %s: it claims CAPTURED, UPay says "
                           "%s", source, row.external_id, record.id, verdict.result or "nothing",
                           extra={"store_id": record.id, "order_id": row.external_id})
            with self.engine.begin() as conn:
                _event(conn, pk, self.clock(), "suspicious",
                       f"{source} claimed CAPTURED; UPay says {verdict.result or 'nothing'}")
        if verdict.outcome != Outcome.PENDING:
            # Every check with an answer counts (a pending one counts in _next_check): the count
            # turns reconcile's lookups, and a lookup answered "not paid" or "mismatch" again and
            # again must not hold the rotation on itself for ever. The answer also settles a
            # signal's check that was owed (see _signal_check).
            self._next_check(row, settles=owns)
        follow_up = source == "return" or hint.get("follow_up") == "return"
        return self._apply(row, record, verdict, attempts, source, follow_up=follow_up,
                           settles=owns, chain=_float(hint.get("at")))

    def _lookup(self, attempts: list[Any], track_id: str, upay_order_id: str) -> dict | None:
        # Our own invoice id is the authority for our invoices (a forged notification cannot
        # point the check elsewhere); a track id is used only for an attempt UPay never gave an
        # invoice id for (its answer was lost).
        hinted = next((a for a in attempts if a.upay_order_id == upay_order_id), None)
        if hinted is not None and hinted.invoice_id:
            return {"invoice_id": hinted.invoice_id}
        if hinted is not None and track_id:
            return {"track_id": track_id}
        created = [a for a in attempts if a.invoice_id]
        return {"invoice_id": created[-1].invoice_id} if created else None

    def _reconcile_lookup(self, row: Any, attempts: list[Any]) -> dict | None:
        """What this reconcile pass asks UPay about: the newest invoice, in turn with the other
        invoices of the order that UPay's notifications named.

        A customer can pay an invoice that was superseded (its create-invoice answer was lost,
        so the bridge made another): only a notification tells of it, with the payment's track
        id. If the status check it caused failed for good, asking only about the newest invoice
        would never find that payment. Those track ids come from the recorded notifications
        (unsigned, so a forged one costs a status call in turn, never a wrong verdict), and
        reconcile's own backoff spaces the checks.
        """
        created = [a for a in attempts if a.invoice_id]
        newest = created[-1] if created else None
        lookups: list[dict] = [{"invoice_id": newest.invoice_id}] if newest is not None else []
        by_order_id = {a.upay_order_id: a for a in attempts}
        with db.reading(self.engine) as conn:
            n = db.notifications.c
            signals = conn.execute(sa.select(n.fields).where(
                n.order_id == row.id, n.kind == "notify", n.state == "matched")
                .order_by(n.id.desc()).limit(50)).scalars().all()
            recorded = set(conn.execute(sa.select(db.payments.c.track_id).where(
                db.payments.c.order_id == row.id)).scalars())
        others: list[dict] = []
        for raw in signals:
            try:
                fields = json.loads(raw)
            except ValueError:
                continue
            attempt = by_order_id.get(str(fields.get("requested_order_id", ""))[:40])
            if attempt is None or attempt is newest:
                continue
            track = str(fields.get("track_id", ""))[:64]
            lookup = ({"invoice_id": attempt.invoice_id} if attempt.invoice_id
                      else {"track_id": track} if track and track not in recorded else None)
            if lookup is not None and lookup not in others:
                others.append(lookup)
        lookups += others[:RECONCILE_OTHER_LOOKUPS]
        return lookups[row.check_count % len(lookups)] if lookups else None

    def _status_failed(self, row: Any, record: StoreRecord, hint: dict, exc: UPayError) -> str:
        source = hint.get("source", "reconcile")
        if exc.transient:
            delay = min(300.0, max(5.0, getattr(exc, "retry_after", None) or 30.0))
            self._requeue(row.id, hint, delay)
            return "retrying"
        logger.warning("UPay status for order %s of store %s (%s) failed: %s", row.external_id,
                       record.id, source, exc, extra={"store_id": record.id,
                                                      "order_id": row.external_id})
        self._next_check(row, settles=_owns(hint))
        with self.engine.begin() as conn:
            _event(conn, row.id, self.clock(), "status_error", f"{source}: {exc}")
        return "status-error"

    def _apply(self, row: Any, record: StoreRecord, verdict: Verdict, attempts: list[Any],
               source: str, follow_up: bool = False, settles: float | None = None,
               chain: float | None = None) -> str:
        pk, lang, now = row.id, record.settings.language, self.clock()
        attempt = next((a for a in attempts if a.upay_order_id == verdict.upay_order_id), None)
        if verdict.outcome == Outcome.PENDING:
            self._next_check(row, follow_up=follow_up, settles=settles, chain=chain)
            return "pending"
        if verdict.outcome == Outcome.MISMATCH:
            logger.warning("suspicious UPay status for order %s of store %s (%s): %s",
                           row.external_id, record.id, source, verdict.reason,
                           extra={"store_id": record.id, "order_id": row.external_id})
            with self.engine.begin() as conn:
                _event(conn, pk, now, "suspicious", f"{source}: {verdict.reason}")
                if verdict.result == "CAPTURED" and attempt is not None:
                    # UPay confirms a capture on our invoice, but not for this order's amount or
                    # currency: never paid, always the merchant's to look at.
                    conn.execute(db.orders.update().where(db.orders.c.id == pk).values(
                        payment_state="flagged", reason=verdict.reason, updated_at=now,
                        next_check_at=_OWED_ONLY))
                    self.pipeline.add_action(pk, "note", f"mismatch:{verdict.track_id or pk}", conn,
                                             text=payment_mismatch_note(verdict.reason, lang))
            self.pipeline.schedule(pk, 0.0)
            return "mismatch"
        with self.engine.begin() as conn:
            # The order row is locked first: two different payments confirmed at the same moment
            # must see each other, or (READ COMMITTED on PostgreSQL) both count as the first and
            # the double payment is never flagged. SQLite's BEGIN IMMEDIATE serialises already.
            conn.execute(sa.select(db.orders.c.id).where(db.orders.c.id == pk).with_for_update())
            new = _insert_payment(conn, pk, attempt, verdict, source, now)
            if not new:
                return "already-recorded"
            if verdict.outcome == Outcome.NOT_PAID:
                _event(conn, pk, now, "payment_failed", verdict.reason)
                self.pipeline.add_action(pk, "note", f"notpaid:{verdict.track_id or verdict.upay_order_id}",
                                         conn, text=payment_not_completed_note(verdict.result, lang))
                outcome = "not-paid"
            else:
                earlier = conn.execute(sa.select(sa.func.count()).where(
                    db.payments.c.order_id == pk, db.payments.c.result == "CAPTURED",
                    db.payments.c.track_id != verdict.track_id)).scalar()
                if earlier:
                    conn.execute(db.orders.update().where(db.orders.c.id == pk).values(
                        payment_state="flagged", reason="paid twice: refund one payment",
                        updated_at=now, next_check_at=_OWED_ONLY))
                    _event(conn, pk, now, "double_payment", f"second payment {verdict.payment_id}")
                    self.pipeline.add_action(pk, "note", f"double:{verdict.track_id}", conn,
                                             text=double_payment_note(payment_id=verdict.payment_id,
                                                                      track_id=verdict.track_id,
                                                                      language=lang))
                    outcome = "double-payment"
                else:
                    conn.execute(db.orders.update().where(db.orders.c.id == pk).values(
                        payment_state="paid", paid_at=now, updated_at=now,
                        next_check_at=_OWED_ONLY))
                    _event(conn, pk, now, "payment_confirmed",
                           f"{verdict.amount} {verdict.currency} payment {verdict.payment_id} "
                           f"track {verdict.track_id} ({source})")
                    self.pipeline.add_action(pk, "mark_paid", f"paid:{pk}", conn,
                                             transaction_id=verdict.payment_id or verdict.track_id)
                    self.pipeline.add_action(pk, "note", f"paid-note:{verdict.track_id}", conn,
                                             text=payment_confirmed_note(
                                                 amount=verdict.amount, currency=verdict.currency,
                                                 payment_id=verdict.payment_id,
                                                 track_id=verdict.track_id,
                                                 payment_type=verdict.payment_type,
                                                 upay_order_id=verdict.upay_order_id,
                                                 language=lang))
                    outcome = "paid"
        logger.info("order %s of store %s: %s (%s)", row.external_id, record.id, outcome, source,
                    extra={"store_id": record.id, "order_id": row.external_id})
        self.pipeline.schedule(pk, 0.0)
        return outcome

    # -- reconciliation ------------------------------------------------------------------------

    def reconcile(self) -> int:
        """Queue status checks for open invoices that are due, within each key's budget; and
        make every signal's check that the job queue lost, whatever the order's state."""
        now = self.clock()
        lost_before = now - SIGNAL_CHECK_LOST_SECONDS
        o = db.orders.c
        columns = (o.id, o.store_id, o.external_id, o.created_at, o.returned_at, o.check_count,
                   o.next_check_at, o.signal_check_at)
        with db.reading(self.engine) as conn:
            # Settled orders (paid, flagged, expired) have a next check time only while a
            # signal's check is owed (see _signal_check): few rows, found by ix_orders_payment.
            settled = conn.execute(sa.select(*columns).where(
                o.payment_state.in_(SETTLED_STATES), o.next_check_at <= lost_before,
            ).order_by(o.next_check_at.asc()).limit(2000)).all()
            # Only the columns the loop reads: whole rows carry the order's payload (kilobytes),
            # and sorting 2,000 of them every minute left each worker thread's malloc arena
            # holding ~10 MiB it had freed (bench/memory.py).
            rows = conn.execute(sa.select(*columns).where(
                o.state == "done", o.payment_state == "open", o.invoice_id.is_not(None),
                sa.or_(o.next_check_at.is_(None), o.next_check_at <= now),
                # A signal's check is queued for this time: it is the next check, unless lost.
                sa.or_(o.signal_check_at.is_(None), o.next_check_at.is_(None),
                       o.next_check_at != o.signal_check_at, o.next_check_at <= lost_before),
            ).order_by(o.returned_at.desc().nulls_last(), o.next_check_at.asc().nulls_first(),
                       o.created_at.desc()).limit(2000)).all()
        stale = [r.id for r in settled if not _owed(r)]
        if stale:
            # Settled before this version, with the next check time they had then: nothing is
            # owed (reconcile never asked about them again). Forgotten, once, so that they cost
            # no status call and no read in later passes.
            with self.engine.begin() as conn:
                conn.execute(db.orders.update().where(
                    o.id.in_(stale), o.payment_state.in_(SETTLED_STATES),
                    sa.or_(o.signal_check_at.is_(None), o.next_check_at != o.signal_check_at))
                    .values(next_check_at=None))
        queued = 0
        budgets: dict[str, int] = {}
        records: dict[str, StoreRecord | None] = {}
        # The checks owed to signals first: a notification or a customer said "look now".
        work = [(r, False) for r in settled if _owed(r)] + [(r, True) for r in rows]
        for row, is_open in work:
            if row.store_id not in records:
                records[row.store_id] = self.registry.find(row.store_id)
            record = records[row.store_id]
            if record is None:
                continue
            owed = _owed(row) and row.next_check_at <= lost_before
            if is_open and now - row.created_at > record.settings.reconcile_expiry_hours * 3600:
                self._set(row.id, payment_state="expired", next_check_at=_OWED_ONLY,
                          event=("expired", "no payment before the store's expiry; the bridge "
                                 "stops asking UPay (a late notification is still checked)"))
                if not owed:
                    continue
            key = key_id(record.secrets["upay_api_key"])
            if key not in budgets:
                budgets[key] = self.limiter.available(key)
            if budgets[key] <= 0:
                continue  # this key's budget is spent; its oldest checks wait for the next pass
            if owed:
                if not self._replay(row, now):
                    continue
            else:
                # Not counted here: the check counts itself when it has an answer, and the
                # count turns reconcile's lookups (see _reconcile_lookup).
                self._next_check(row, count=False)
                self.schedule(row.id, {"source": "reconcile"}, 0.0)
            budgets[key] -= 1
            queued += 1
        return queued

    def _replay(self, row: Any, now: float) -> bool:
        """Queue again the signal's check that the job queue lost: the check the order's newest
        signal asked for, with the signals merged into it (their other invoices, a customer's
        return). False when it is no longer owed (the check answered meanwhile)."""
        o = db.orders.c
        with self.engine.begin() as conn:
            # Due now, and owed until it answers: lost again, it is made again after the delay.
            claimed = conn.execute(db.orders.update().where(
                o.id == row.id, o.signal_check_at == row.signal_check_at,
                o.next_check_at == o.signal_check_at)
                .values(signal_check_at=now, next_check_at=now).returning(o.id)).first()
        if claimed is None:
            return False
        hint: dict[str, str] = {"source": "reconcile"}
        n = db.notifications.c
        with db.reading(self.engine) as conn:
            signal = conn.execute(sa.select(n.kind, n.fields, n.received_at).where(
                n.order_id == row.id, n.state == "matched",
                n.kind.in_(("notify", "return", "cancel"))).order_by(n.id.desc()).limit(1)).first()
        fields = _fields(signal.fields) if signal is not None else None
        if signal is not None and fields is not None:
            named = fields.get("requested_order_id", "")[:40]
            known = {a.upay_order_id for a in self._attempts(row.id)}
            # The signals merged into the lost check came at most one gap before it was due.
            hint = dict(_hint(signal.kind, fields, named if named in known else ""),
                        since=repr(signal.received_at - SIGNAL_GAP_MAX_SECONDS))
        logger.warning("order %s of store %s: the status check a signal queued was not made (the "
                       "job queue lost it); checking now", row.external_id, row.store_id,
                       extra={"store_id": row.store_id, "order_id": row.external_id})
        self.schedule(row.id, dict(hint, until=repr(now)), 0.0)
        return True

    # -- helpers -------------------------------------------------------------------------------

    def _signal_check(self, pk: int, hint: dict[str, str]) -> None:
        """Queue a status check for a signal, unless one queued earlier has yet to run."""
        now = self.clock()
        o = db.orders.c
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(o.signal_check_at, o.check_count)
                               .where(o.id == pk).with_for_update()).first()
            if row is None:
                return
            if row.signal_check_at is not None and row.signal_check_at > now:
                # A check is queued and runs after this signal came in: it asks UPay about this
                # order then, and the verdict covers this signal too. (The signal's track id is
                # kept with the notification; reconcile asks about it if it names another invoice.)
                return
            gap = min(SIGNAL_GAP_MAX_SECONDS, SIGNAL_GAP_SECONDS * 2 ** min(row.check_count, 6))
            last = row.signal_check_at
            run_at = now if last is None else max(now, last + gap)
            # The database, not the queue, records that this check is owed: next_check_at equal
            # to signal_check_at, until a check answers (see _next_check). If the queue loses
            # the job, reconcile makes the check, whatever the order's payment state: a late
            # notification on an expired invoice, a second payment on a paid order.
            conn.execute(db.orders.update().where(o.id == pk).values(
                signal_check_at=run_at, next_check_at=run_at))
        # "since" to "until": signals recorded from now until the check runs merge into it
        # (see _check_merged); "until" also names the check that owes the record.
        self.schedule(pk, dict(hint, since=repr(now), until=repr(run_at)), run_at - now)

    def _requeue(self, pk: int, hint: dict[str, str], delay: float) -> None:
        """Queue this check again in ``delay`` seconds (over the rate limit, a transient error).

        When it is the order's queued signal check, the record moves with it: signals keep
        merging into it, and reconcile does not take it for lost (and add a second check that
        would retry on its own) while it is queued again and again through an outage."""
        until = _float(hint.get("until"))
        if until is not None:
            at = self.clock() + delay
            if self._move_owed(pk, until, at):
                # Signals that merge from now on are this retry's (the earlier ones were seen).
                hint = dict(hint, until=repr(at))
                hint.setdefault("since", repr(until))
        self.schedule(pk, hint, delay)

    def _check_merged(self, pk: int, hint: dict[str, str], attempts: list[Any]) -> bool:
        """Add to ``hint["then"]`` the notifications merged into this queued check that name
        another invoice of the order, one per invoice: the check asks only about its own
        signal's invoice, and a second payment on another invoice (the order already paid)
        would never be looked at. At most one per invoice UPay gave an id for, so a flood of
        forged notifications still cannot spend the key's budget; for an invoice whose create
        answer was lost, which only a notification's track id can find, up to
        LOST_ANSWER_TRACKS distinct track ids, its own check's among them, so that a forged one
        cannot stand in for the real one. Track ids already recorded as payments are known and
        not asked about again. They are asked about one after the other once this check has
        its answer (see _check_next_invoice).

        True when a customer's return merged into it: that return queued nothing of its own,
        so this check starts its follow-ups (a notification's check does not, see _apply). A
        return needs its invoice's secret token: forged notifications cannot start them."""
        since = _float(hint.get("since"))
        if not since:
            return False
        until = _float(hint.get("until"))
        by_order_id = {a.upay_order_id: a for a in attempts}
        n = db.notifications.c
        window = [n.order_id == pk, n.state == "matched", n.received_at >= since]
        if until is not None:  # signals from the check's due time on merge into the next one
            window.append(n.received_at < until)
        chained = _ids(hint.get("then"))
        with db.reading(self.engine) as conn:
            signals = conn.execute(sa.select(n.id, n.fields).where(
                n.kind == "notify", *window).order_by(n.id.desc()).limit(50)).all()
            returned = conn.execute(sa.select(n.id).where(
                n.kind == "return", *window).limit(1)).first() is not None
            # A retry of this check (see _requeue) already has some to ask about.
            earlier = conn.execute(sa.select(n.fields).where(
                n.id.in_(chained), n.order_id == pk)).scalars().all() if chained else []
            recorded = set(conn.execute(sa.select(db.payments.c.track_id).where(
                db.payments.c.order_id == pk)).scalars())
        asked: dict[str, set[str]] = {}  # per invoice: the track ids asked about

        def ask(fields: Mapping[str, str]) -> bool:
            upay_order_id = fields.get("requested_order_id", "")[:40]
            attempt = by_order_id.get(upay_order_id)
            if attempt is None:
                return False
            tracks = asked.setdefault(upay_order_id, set())
            if attempt.invoice_id:  # its own invoice id is asked about, whatever the track id
                if tracks:
                    return False
                tracks.add("")
                return True
            track = fields.get("track_id", "")[:64]
            if track in tracks or len(tracks) >= LOST_ANSWER_TRACKS:
                return False
            tracks.add(track)
            return True

        ask({"requested_order_id": hint.get("upay_order_id", ""),
             "track_id": hint.get("track_id", "")})
        for raw in earlier:
            ask(_fields(raw) or {})
        for signal in signals:
            fields = _fields(signal.fields)
            if fields is None or fields.get("track_id", "")[:64] in recorded:
                continue
            if ask(fields):
                chained.append(signal.id)
        if chained:
            hint["then"] = _join(chained)
        return returned

    def _check_next_invoice(self, pk: int, hint: Mapping[str, str]) -> None:
        """Queue the check of the next invoice in ``hint["then"]`` (notifications that named
        another invoice of the order, see _check_merged), with the rest after it.

        The answered check hands the record that a check is owed (see _signal_check) to this
        one, so that the order stays owed until the last of them answers: lost with the job
        queue, they are made again by reconcile (see _replay), even on a paid order. Handed on
        only while the answered check still holds the record: a signal that came after it was
        due queued a check of its own, which holds it."""
        ids = _ids(hint.get("then"))
        n = db.notifications.c
        with db.reading(self.engine) as conn:
            found = dict(conn.execute(sa.select(n.id, n.fields).where(
                n.id.in_(ids), n.order_id == pk)).all()) if ids else {}
        todo = [(i, fields) for i in ids if (fields := _fields(found.get(i, "null")))]
        until = _float(hint.get("until"))
        if not todo:
            # None of them is left (they go with their order or store): what the answered
            # check owed ends here, as it would have with its answer.
            row = self.pipeline._row(pk)
            if row is not None:
                self._next_check(row, count=False, settles=until)
            return
        fields, rest = todo[0][1], [i for i, _ in todo[1:]]
        nxt = _hint("notify", fields, fields.get("requested_order_id", "")[:40])
        if rest:
            nxt["then"] = _join(rest)
        if until is not None:
            now = self.clock()
            if self._move_owed(pk, until, now):
                nxt["until"] = repr(now)
        self.schedule(pk, nxt, 0.0)

    def _move_owed(self, pk: int, until: float, at: float) -> bool:
        """Move the record that the signal check due at ``until`` is owed to a check due at
        ``at``; False when that check no longer holds it (a later signal's check does)."""
        o = db.orders.c
        with self.engine.begin() as conn:
            return conn.execute(db.orders.update().where(o.id == pk, o.signal_check_at == until)
                                .values(signal_check_at=at, next_check_at=at)
                                .returning(o.id)).first() is not None

    def _next_check(self, row: Any, follow_up: bool = False, count: bool = True,
                    settles: float | None = None, chain: float | None = None) -> None:
        """After a check (or when reconcile queues one): when to ask UPay next.

        ``settles``: the due time of the signal check this is (its hint's "until"); its answer
        ends what was owed, whatever this machine's clock says. Another signal's check not
        answered yet stays owed; otherwise an open order is next checked by the schedule,
        and a settled one (paid, flagged, expired) owes nothing. ``follow_up``: the answer
        is for a customer back on the return page; ``chain``: the due time of the follow-up
        this is, if it is one (see _follow_up)."""
        now = self.clock()
        returned = row.returned_at is not None and now - row.returned_at < RETURN_WATCH_SECONDS
        delay = next_check_delay(now - row.created_at, returned)
        o = db.orders.c
        scheduled = sa.case((o.payment_state == "open", sa.literal(now + delay, sa.Float)),
                            else_=sa.null())
        whens = [] if settles is None else [(o.signal_check_at == settles, scheduled)]
        # Another check's answer (reconcile's, a follow-up, a late one) does not end what a
        # signal's check owes, even past its due time: it asked about another invoice, or
        # before that signal came.
        next_at = sa.case(*whens, (sa.or_(o.signal_check_at > now,
                                          o.next_check_at == o.signal_check_at),
                                   o.signal_check_at), else_=scheduled)
        if count:
            self._set(row.id, next_check_at=next_at, check_count=o.check_count + 1)
        else:
            self._set(row.id, next_check_at=next_at)
        if follow_up and returned:
            self._follow_up(row.id, delay, chain)

    def _follow_up(self, pk: int, delay: float, chain: float | None) -> None:
        """A customer is waiting on the return page: look again in ``delay`` seconds, without
        waiting for the next reconcile pass, unless a chain of follow-ups is running already.

        One chain per order: each follow-up queues the next, and orders.follow_up_at holds
        when the next is due. A check caused by a return (the customer reloading the page)
        starts a chain only when none is due later; otherwise each reload would start one more
        chain, each costing a status call every 15 s of the key's 30 a minute. A chain lost
        with the job queue is due in the past: the next return starts a new one."""
        now = self.clock()
        at = now + delay
        o = db.orders.c
        free = sa.or_(o.follow_up_at.is_(None), o.follow_up_at <= now)
        if chain is not None:
            free = sa.or_(free, o.follow_up_at == chain)  # the chain goes on
        with self.engine.begin() as conn:
            started = conn.execute(db.orders.update().where(o.id == pk, free)
                                   .values(follow_up_at=at).returning(o.id)).first()
        if started is not None:
            self.schedule(pk, {"source": "return", "at": repr(at)}, delay)

    def _set(self, pk: int, event: tuple[str, str] | None = None, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(db.orders.update().where(db.orders.c.id == pk).values(**values))
            if event:
                _event(conn, pk, self.clock(), *event)

    def _attempt_by(self, column: str, value: str) -> Any:
        if not value:
            return None
        with db.reading(self.engine) as conn:
            return conn.execute(sa.select(db.attempts).where(
                getattr(db.attempts.c, column) == value[:40])).first()

    def _owned(self, attempt: Any, record: StoreRecord) -> bool:
        row = self.pipeline._row(attempt.order_id)
        return row is not None and row.store_id == record.id

    def _attempts(self, pk: int) -> list[Any]:
        with db.reading(self.engine) as conn:
            return conn.execute(sa.select(db.attempts).where(db.attempts.c.order_id == pk)
                                .order_by(db.attempts.c.number)).all()

    def _record_signal(self, store_id: str, kind: str, fields: Mapping[str, str], state: str,
                       pk: int | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(db.notifications.insert().values(
                store_id=store_id, kind=kind, fields=json.dumps(dict(fields), sort_keys=True),
                state=state, order_id=pk, received_at=self.clock()))


# For an order leaving "open": it keeps its next check time only when that is a signal's check
# still owed (see Payments._signal_check).
_OWED_ONLY = sa.case((db.orders.c.next_check_at == db.orders.c.signal_check_at,
                      db.orders.c.next_check_at), else_=sa.null())


def _owed(row: Any) -> bool:
    """A signal's check is owed: queued for signal_check_at and not answered yet."""
    return row.signal_check_at is not None and row.next_check_at == row.signal_check_at


def _owns(hint: Mapping[str, str]) -> float | None:
    """The due time of the signal check ``hint`` is, when its answer settles what is owed: not
    while other invoices are still to be asked about after it (see _check_next_invoice)."""
    return None if hint.get("then") else _float(hint.get("until"))


def _ids(value: str | None) -> list[int]:
    return [int(x) for x in (value or "").split(",") if x.isdigit()]


def _join(ids: list[int]) -> str:
    return ",".join(str(i) for i in ids)


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _fields(raw: str) -> dict[str, str] | None:
    try:
        fields = json.loads(raw)
    except ValueError:
        return None
    return {k: str(v) for k, v in fields.items()} if isinstance(fields, dict) else None


def _hint(source: str, fields: Mapping[str, str], upay_order_id: str) -> dict[str, str]:
    return {"source": source, "track_id": fields.get("track_id", "")[:64],
            "upay_order_id": upay_order_id, "claimed": fields.get("result", "")[:30]}


def _insert_payment(conn: Any, pk: int, attempt: Any, verdict: Verdict, source: str,
                    now: float) -> bool:
    track = verdict.track_id or f"none:{verdict.upay_order_id}:{verdict.result}"
    dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
    stmt = (dialect.insert(db.payments).values(
        order_id=pk, attempt_id=attempt.id if attempt is not None else None, track_id=track[:64],
        payment_id=verdict.payment_id, result=verdict.result or "?",
        amount=str(verdict.amount) if verdict.amount is not None else "",
        currency=verdict.currency, payment_type=verdict.payment_type,
        upay_order_id=verdict.upay_order_id, source=source[:12], created_at=now)
        .on_conflict_do_nothing(index_elements=["track_id"])
        .returning(db.payments.c.id))  # not rowcount: -1 for an INSERT on PostgreSQL
    return conn.execute(stmt).first() is not None
