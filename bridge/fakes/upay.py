"""A faithful, stateful fake of the UPayments ("UPay") v1 API for tests and ``upay-bridge demo``.

It speaks the wire protocol the bridge sees in production, quirks included. Section numbers (§n)
refer to ``shared/reference/upay-api.md``; "[INF]" marks behaviour the reference does not pin down
and that this fake had to choose.

* ``POST /api/v1/charge``: plain charge (hosted link) or create-invoice (``paymentGateway.src``).
* ``GET /api/v1/get-payment-status[/<track_id>]`` by track_id, ``?invoice_id=`` or ``?session_id=``.
* ``POST /api/v1/check-merchant-api-key`` (key in the body, Bearer optional) and
  ``GET /api/v1/check-payment-button-status`` (§10).
* Hosted pages ``/invoice/<id>`` and ``/pay?session_id=`` with Pay / Decline / Cancel buttons.
* The redirect and the notification carry the §6.1 flat fields.
* ``/_fake/...`` control endpoints let other processes script and inspect the fake over HTTP.
* ``FaultScript`` injects timeouts, 5xx, WAF pages, rejections, 429s and notification trouble.

Usage::

    fake = FakeUPay()
    with fake.serve() as served:        # real loopback HTTP server
        ...  # point the bridge at served.url + "/api/v1/"
        redirect = fake.complete_payment(invoice_id, "CAPTURED")
"""

from __future__ import annotations

import json
import math
import re
import secrets
import string
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from http import HTTPStatus
from typing import Any, Callable, Iterable
from urllib.parse import quote, urlencode

import flask
import requests as requests_lib
from markupsafe import escape

from bridge.fakes.faults import Fault, FaultScript
from bridge.fakes.server import ServedApp, serve_wsgi

# Kuwait has no DST; UPay's timestamps are local time without an offset (§6.1 [INF]).
KUWAIT_TZ = timezone(timedelta(hours=3))
BASE62 = string.digits + string.ascii_letters

# The exact text the sandbox answered for missing or bad products (§4.1, §12 [3P]).
PRODUCTS_MESSAGE = "Parameter is missing please check product name, quantity, price, quantity at 0"
EXTRA_MERCHANTS_MESSAGE = "Create invoice does not work with extra merchants data"
NOT_VALID_KEY_MESSAGE = "Not a valid API request"
TOO_MANY_MESSAGE = "Too Many Attempts."
VALID_KEY_MESSAGE = "Valid API key"

# check-payment-button-status `data.payButtons` for a plain (non-whitelabel) sandbox merchant:
# KNET and cards on, wallets off. Keys as the official plugins read them (§10).
DEFAULT_PAY_BUTTONS: dict[str, bool] = {
    "knet": True, "credit_card": True, "samsung_pay": False, "apple_pay": False,
    "google_pay": False, "amex": False,
}

RESULTS = ("CAPTURED", "NOT CAPTURED", "CANCELED", "ERROR")
NOTIFICATION_TYPES = ("email", "sms", "link", "all")

# §6.1 field order, as UPay emits it in redirect_url; the redirect and notification share it.
NOTIFICATION_FIELDS = (
    "payment_id", "result", "post_date", "tran_id", "ref", "track_id", "auth", "order_id",
    "requested_order_id", "refund_order_id", "payment_type", "invoice_id", "transaction_date",
    "receipt_id", "trn_udf",
)

# Fault endpoint names: "key_check" is POST check-merchant-api-key, "buttons" is
# GET check-payment-button-status.
API_ENDPOINTS = ("charge", "status", "key_check", "buttons")
API_FAULTS = ("timeout", "timeout_after_create", "slow", "status", "non_json", "rejected",
              "rate_limit")
NOTIFICATION_FAULTS = ("drop", "duplicate", "delay", "json")
# Status only: the status API does not show the payment yet (see UPayFaultScript).
STATUS_FAULTS = API_FAULTS + ("stale",)

RATE_WINDOW_SECONDS = 60.0


# --------------------------------------------------------------------------- records


@dataclass
class RecordedRequest:
    """One request the fake received under ``/api/v1/`` (headers unmasked: tests use test keys)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str] = field(repr=False)   # keep the API key out of failure output
    json: Any
    body: bytes
    at: float

    def to_public(self) -> dict[str, Any]:
        """JSON-safe view for ``/_fake/requests``: the API key never leaves the process."""
        headers = {name: (_mask_authorization(value) if name.lower() == "authorization" else value)
                   for name, value in self.headers.items()}
        return {"method": self.method, "path": self.path, "query": self.query,
                "headers": headers, "json": _loads_plain(self.body), "at": self.at}


@dataclass
class SentNotification:
    """One notification POST the fake made (or tried to make)."""

    url: str
    fields: dict[str, str]
    format: str                       # "form" or "json"
    status_code: int | None = None    # None when no HTTP answer came back
    response_body: str = ""
    error: str | None = None          # e.g. "ConnectionError: ..." when the receiver was down
    invoice_id: str = ""              # the fake's key of the invoice (encrypted id / session id)
    at: float = 0.0


@dataclass
class FakeInvoice:
    """What UPay keeps for one charge or invoice.

    Keyed in ``FakeUPay.invoices`` by ``invoice_id``: the 10-char "encrypted id" for
    create-invoice, the session id for a plain charge.
    """

    invoice_id: str
    kind: str                          # "invoice" (create-invoice) or "charge"
    request: dict[str, Any]
    amount: Decimal
    currency: str
    merchant_order_id: str             # the merchant's order.id (requested_order_id)
    reference_id: str                  # reference.id
    description: str | None
    language: str
    return_url: str
    cancel_url: str
    notification_url: str
    customer_extra_data: str | None
    customer_unique_id: str | None
    notification_type: str | None
    number: int                        # numeric internal invoice number (§6.1 invoice_id)
    upay_order_id: str                 # UPay's internal id: order_id, refund_order_id, receipt_id
    session_id: str
    url: str                           # the hosted page the customer is sent to
    created_at: str
    state: str = "pending"             # pending -> CAPTURED / NOT CAPTURED / CANCELED / ERROR
    payment_type: str | None = None
    track_id: str | None = None        # issued only when the customer acts (§4.3)
    payment_id: str | None = None
    tran_id: str | None = None
    ref: str | None = None
    auth: str | None = None
    post_date: str | None = None
    transaction_date: str | None = None
    fields: dict[str, str] | None = None   # the §6.1 field set, once completed
    redirect_url: str | None = None
    notify_url_called: bool = False
    notify_url_response: Any = None

    @property
    def result(self) -> str:
        return "PENDING" if self.state == "pending" else self.state

    @property
    def finished(self) -> bool:
        return self.state != "pending"


class InvoiceStateError(ValueError):
    """complete_payment on an invoice the customer already paid, declined or cancelled."""


# --------------------------------------------------------------------------- faults


class UPayFaultScript(FaultScript):
    """Scripted failures, consumed in the order added by the next matching requests.

    ``add(endpoint, kind, count=1, **params)``; endpoint "charge", "status", "key_check"
    (check-merchant-api-key) or "buttons" (check-payment-button-status):

    * "timeout" (``seconds``=30): sleep, then 504 with nothing done.
    * "timeout_after_create" (``seconds``=30): act normally, then sleep before answering
      (on "status" this is a late answer).
    * "slow" (``seconds``=1): sleep, then act normally.
    * "status" (``status``=500, ``body``=nginx error page, ``content_type``): nothing done.
    * "non_json" (``status``=200): a WAF "Access denied" HTML page, UPay's IP-block answer.
    * "rejected" (``status``=200, ``message``): ``{"status": false, "message": ...}``.
    * "rate_limit" (``retry_after``=60): 429 "Too Many Attempts." with Retry-After.
    * "stale" (endpoint "status" only): the answer shows the transaction as it was before the
      customer acted (result PENDING, no track or payment id), although the payment is made.
      [INF] Non-final states such as PENDING and "Processing" are listed (§5.3) and the
      notification can come before the status API has the payment; how long UPay lags is not
      documented. Use ``count`` for how many status answers lag.

    endpoint "notification": "drop", "duplicate" (``times``=2), "delay" (``seconds``=1, sent from
    a thread after the redirect), "json" (this one as JSON).
    """

    def __init__(self) -> None:
        kinds = {endpoint: API_FAULTS for endpoint in API_ENDPOINTS}
        kinds["status"] = STATUS_FAULTS
        kinds["notification"] = NOTIFICATION_FAULTS
        super().__init__(kinds)


# --------------------------------------------------------------------------- the fake


class FakeUPay:
    """The fake gateway. Serve ``app`` with ``serve_wsgi`` (or call :meth:`serve`)."""

    def __init__(self, valid_keys: Iterable[str] = ("jtest123",),
                 status_rate_limit: int | None = 30, notification_format: str = "form",
                 latency: float = 0.0) -> None:
        if notification_format not in ("form", "json"):
            raise ValueError("notification_format must be 'form' or 'json'")
        self.valid_keys: set[str] = set(valid_keys)
        self.status_rate_limit = status_rate_limit
        self.notification_format = notification_format
        self.latency = latency
        # UPay calls the notification URL once with a 10 s timeout and no retry (§6.2 [INF]).
        self.notification_timeout = 10.0
        # Replaceable so tests can move the rate-limit window without sleeping a minute.
        self.clock: Callable[[], float] = time.monotonic

        self.requests: list[RecordedRequest] = []
        self.invoices: dict[str, FakeInvoice] = {}
        self.notifications: list[SentNotification] = []
        # E-mails/SMS production would have sent for create-invoice; the sandbox sends none (§4.4).
        self.messages: list[dict[str, Any]] = []
        self.faults = UPayFaultScript()
        # Base URL of the last serve() (None until served, or when served by other means).
        self.url: str | None = None
        # What check-payment-button-status and check-merchant-api-key report (§10); the
        # sandbox key jtest123 is a non-whitelabel merchant (§0.3).
        self.pay_buttons: dict[str, bool] = dict(DEFAULT_PAY_BUTTONS)
        self.is_white_label = False

        self._lock = threading.RLock()
        self._status_hits: dict[str, deque[float]] = {}
        # Internal invoice numbers look like 784 or 39686284 (§6.1); never reused, even after reset.
        self._next_number = 39_000_000 + secrets.randbelow(1_000_000)
        self.app = self._build_app()

    # ----------------------------------------------------------------- public helpers

    def add_key(self, key: str) -> None:
        self.valid_keys.add(key)

    def charges(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.path == "/api/v1/charge"]

    def serve(self) -> ServedApp:
        served = serve_wsgi(self.app)
        self.url = served.url
        return served

    def reset(self) -> None:
        """Forget requests, invoices, notifications, messages, faults and rate-limit windows."""
        with self._lock:
            self.requests.clear()
            self.invoices.clear()
            self.notifications.clear()
            self.messages.clear()
            self._status_hits.clear()
        self.faults.clear()

    def find(self, *, invoice_id: str | None = None, session_id: str | None = None,
             track_id: str | None = None) -> FakeInvoice | None:
        """Look an invoice up the ways get-payment-status does."""
        with self._lock:
            if invoice_id is not None:
                inv = self.invoices.get(invoice_id)
                # ?invoice_id= takes the create-invoice "encrypted id" only (§4.4).
                return inv if inv is not None and inv.kind == "invoice" else None
            for inv in self.invoices.values():
                if session_id is not None and inv.session_id == session_id:
                    return inv
                if track_id is not None and inv.track_id == track_id:
                    return inv
        return None

    def complete_payment(self, invoice_id: str, result: str = "CAPTURED",
                         payment_type: str = "knet") -> str:
        """Do what the hosted page's buttons do; returns the browser redirect URL.

        Sets the outcome, sends the notification (subject to notification faults; synchronously
        unless a "delay" fault says otherwise) and builds the redirect. Raises KeyError for an
        unknown invoice and InvoiceStateError when it was already completed.
        """
        if result not in RESULTS:
            raise ValueError(f"result must be one of {RESULTS}")
        with self._lock:
            inv = self.invoices.get(invoice_id)
            if inv is None:
                raise KeyError(invoice_id)
            if inv.finished:
                raise InvoiceStateError(f"invoice {invoice_id} is already {inv.state}")
            fields = self._finish(inv, result, payment_type)
        self._notify(inv, fields, self.faults.take("notification"))
        assert inv.redirect_url is not None
        return inv.redirect_url

    # ----------------------------------------------------------------- completion

    def _finish(self, inv: FakeInvoice, result: str, payment_type: str) -> dict[str, str]:
        """Issue the gateway ids, build the §6.1 fields and the redirect (caller holds the lock)."""
        now = datetime.now(KUWAIT_TZ)
        captured = result == "CAPTURED"
        cancelled = result == "CANCELED"
        inv.state = result
        inv.payment_type = payment_type
        # track_id/payment_id exist only once the customer acts on the hosted page (§4.3).
        inv.track_id = _random(BASE62, 32)
        inv.payment_id = _digits(18)
        # [INF] A cancel never reached the acquirer, so it has no tran_id/ref; only a capture
        # has an authorization code.
        inv.tran_id = "" if cancelled else _digits(15)
        inv.ref = "" if cancelled else _digits(12)
        inv.auth = _random(string.ascii_uppercase + string.digits, 6) if captured else ""
        inv.post_date = now.strftime("%m%d")
        inv.transaction_date = now.strftime("%Y-%m-%d %H:%M:%S")
        fields = {
            "payment_id": inv.payment_id,
            "result": result,
            "post_date": inv.post_date,
            "tran_id": inv.tran_id,
            "ref": inv.ref,
            "track_id": inv.track_id,
            "auth": inv.auth,
            # order_id is UPay's internal id in the live sample, not the merchant's (§17.6).
            "order_id": inv.upay_order_id,
            "requested_order_id": inv.merchant_order_id,
            "refund_order_id": inv.upay_order_id,
            "payment_type": payment_type,
            # The NUMERIC internal invoice number, not the encrypted id (§6.1).
            "invoice_id": str(inv.number),
            "transaction_date": inv.transaction_date,
            "receipt_id": inv.upay_order_id,
            "trn_udf": inv.customer_extra_data or "",
        }
        inv.fields = fields
        base = inv.return_url if captured else inv.cancel_url
        # UPay appends "?" + fields even when the URL already has a query, so
        # "https://x/cb?a=1" becomes "https://x/cb?a=1?payment_id=..." (§6.2, the double-? quirk).
        inv.redirect_url = base + "?" + urlencode(fields)
        return fields

    def _notify(self, inv: FakeInvoice, fields: dict[str, str], fault: Fault | None) -> None:
        kind = fault.kind if fault else None
        if kind == "drop":
            # Integrators report notifications that never arrive (§6.2).
            return
        fmt = "json" if kind == "json" else self.notification_format
        if kind == "delay":
            seconds = float(fault.params.get("seconds", 1.0)) if fault else 1.0
            threading.Thread(target=self._send_later, args=(seconds, inv, fields, fmt),
                             daemon=True, name=f"upay-notify-{inv.invoice_id}").start()
            return
        times = int(fault.params.get("times", 2)) if fault and kind == "duplicate" else 1
        for _ in range(times):
            self._send_notification(inv, fields, fmt)

    def _send_later(self, seconds: float, inv: FakeInvoice, fields: dict[str, str],
                    fmt: str) -> None:
        time.sleep(seconds)
        self._send_notification(inv, fields, fmt)

    def _send_notification(self, inv: FakeInvoice, fields: dict[str, str], fmt: str) -> None:
        """One POST to notificationUrl; failures are recorded, never raised (no retry, §6.2)."""
        note = SentNotification(url=inv.notification_url, fields=dict(fields), format=fmt,
                                invoice_id=inv.invoice_id, at=time.time())
        try:
            kwargs: dict[str, Any] = {"json": fields} if fmt == "json" else {"data": fields}
            # A server-side POST that follows redirects would turn into a GET; UPay's does not.
            resp = requests_lib.post(inv.notification_url, timeout=self.notification_timeout,
                                     allow_redirects=False, **kwargs)
        except requests_lib.RequestException as exc:
            note.error = f"{type(exc).__name__}: {exc}"
        else:
            note.status_code = resp.status_code
            note.response_body = resp.text
            with self._lock:
                # [INF] "called" means the endpoint answered; the status shows what it said.
                inv.notify_url_called = True
                inv.notify_url_response = _loads_or_text(resp.text)
        with self._lock:
            self.notifications.append(note)

    # ----------------------------------------------------------------- the Flask app

    def _build_app(self) -> flask.Flask:
        app = flask.Flask(__name__)

        @app.before_request
        def record() -> None:
            if not flask.request.path.startswith("/api/v1/"):
                return
            body = flask.request.get_data(cache=True)
            parsed = _loads_decimal(body)
            flask.g.upay_json = parsed
            with self._lock:
                self.requests.append(RecordedRequest(
                    method=flask.request.method, path=flask.request.path,
                    query=flask.request.args.to_dict(), headers=dict(flask.request.headers),
                    json=parsed, body=body, at=time.time()))

        @app.post("/api/v1/charge")
        def charge() -> flask.Response:
            return self._api("charge", lambda: self._charge(flask.g.upay_json))

        @app.get("/api/v1/get-payment-status")
        @app.get("/api/v1/get-payment-status/<track_id>")
        def status(track_id: str | None = None) -> flask.Response:
            return self._api("status", lambda: self._status(track_id))

        @app.post("/api/v1/check-merchant-api-key")
        def check_merchant_api_key() -> flask.Response:
            # CS-Cart sends no Authorization header, only the body (§2): the key is the body's.
            return self._api("key_check", lambda: self._key_check(flask.g.upay_json), bearer=False)

        @app.get("/api/v1/check-payment-button-status")
        def check_payment_button_status() -> flask.Response:
            return self._api("buttons", self._button_status)

        @app.route("/api/v1/<path:rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
        def unknown_api(rest: str) -> flask.Response:
            allowed = {"charge": "POST", "get-payment-status": "GET", "check-merchant-api-key": "POST",
                       "check-payment-button-status": "GET"}.get(rest.split("/")[0])
            if allowed is not None:
                # Laravel's wording for a known route called with the wrong method.
                message = (f"The {flask.request.method} method is not supported for this route. "
                           f"Supported methods: {allowed}.")
                return _json_response({"message": message}, 405, {"Allow": allowed})
            # Endpoints this fake does not implement (refunds, cards, ...): say so plainly.
            return _json_response({"message": "Not Found"}, 404)

        @app.get("/invoice/<invoice_id>")
        def invoice_page(invoice_id: str) -> flask.Response:
            return self._page(self.invoices.get(invoice_id))

        @app.get("/pay")
        def pay_page() -> flask.Response:
            return self._page(self.find(session_id=flask.request.args.get("session_id", "")))

        @app.post("/invoice/<invoice_id>/complete")
        def page_complete(invoice_id: str) -> flask.Response:
            result = flask.request.form.get("result", "")
            payment_type = flask.request.form.get("payment_type", "knet") or "knet"
            try:
                url = self.complete_payment(invoice_id, result, payment_type)
            except KeyError:
                return _html_response(_error_page(404, "Invoice not found"), 404)
            except InvoiceStateError as exc:
                return _html_response(_error_page(409, str(exc)), 409)
            except ValueError as exc:
                return _html_response(_error_page(400, str(exc)), 400)
            resp = flask.Response(status=302)
            resp.headers["Location"] = url   # set verbatim: the double "?" must survive
            return resp

        self._add_control_routes(app)
        return app

    def _add_control_routes(self, app: flask.Flask) -> None:
        @app.get("/_fake/requests")
        def list_requests() -> flask.Response:
            with self._lock:
                return flask.jsonify([r.to_public() for r in self.requests])

        @app.get("/_fake/invoices")
        def list_invoices() -> flask.Response:
            with self._lock:
                return flask.jsonify([_invoice_public(inv) for inv in self.invoices.values()])

        @app.get("/_fake/notifications")
        def list_notifications() -> flask.Response:
            with self._lock:
                return flask.jsonify([vars(n).copy() for n in self.notifications])

        @app.get("/_fake/messages")
        def list_messages() -> flask.Response:
            with self._lock:
                return flask.jsonify(list(self.messages))

        @app.post("/_fake/invoices/<invoice_id>/complete")
        def control_complete(invoice_id: str) -> tuple[flask.Response, int]:
            body = flask.request.get_json(silent=True) or {}
            try:
                url = self.complete_payment(invoice_id, str(body.get("result", "CAPTURED")),
                                            str(body.get("payment_type", "knet")))
            except KeyError:
                return flask.jsonify({"error": "unknown invoice"}), 404
            except InvoiceStateError as exc:
                return flask.jsonify({"error": str(exc)}), 409
            except ValueError as exc:
                return flask.jsonify({"error": str(exc)}), 400
            return flask.jsonify({"redirect": url}), 200

        @app.post("/_fake/faults")
        def add_fault() -> tuple[flask.Response, int]:
            body = dict(flask.request.get_json(silent=True) or {})
            try:
                endpoint = str(body.pop("endpoint"))
                kind = str(body.pop("kind"))
                count = int(body.pop("count", 1))
                self.faults.add(endpoint, kind, count, **body)
            except (KeyError, TypeError, ValueError) as exc:
                return flask.jsonify({"error": f"bad fault: {exc}"}), 400
            return flask.jsonify({"ok": True, "pending": len(self.faults)}), 201

        @app.post("/_fake/keys")
        def add_key() -> tuple[flask.Response, int]:
            key = (flask.request.get_json(silent=True) or {}).get("key")
            if not isinstance(key, str) or not key:
                return flask.jsonify({"error": "key required"}), 400
            self.add_key(key)
            return flask.jsonify({"ok": True}), 201

        @app.post("/_fake/reset")
        def reset() -> flask.Response:
            self.reset()
            return flask.jsonify({"ok": True})

    # ----------------------------------------------------------------- API plumbing

    def _api(self, endpoint: str, handler: Callable[[], flask.Response],
             bearer: bool = True) -> flask.Response:
        """Latency, then scripted faults (they act in front of the app, like a proxy), then auth,
        then the rate limit, then the handler. ``bearer=False``: the handler checks the key."""
        if self.latency > 0:
            time.sleep(self.latency)
        fault = self.faults.take(endpoint)
        flask.g.upay_fault = fault  # for a handler whose answer the fault changes ("stale")
        if fault is not None:
            early = _fault_response(fault)
            if early is not None:
                return early
        key = _bearer_key(flask.request.headers.get("Authorization", ""))
        if bearer and (key is None or key not in self.valid_keys):
            # Observed 403 for unknown or non-activated keys; the docs say 401 (§2, §12).
            return _json_response({"message": NOT_VALID_KEY_MESSAGE}, 403)
        limit_headers: dict[str, str] = {}
        if endpoint == "status" and self.status_rate_limit is not None:
            allowed, value = self._hit_status_limit(key)
            if not allowed:
                return _too_many(value, self.status_rate_limit)
            limit_headers = {"X-RateLimit-Limit": str(self.status_rate_limit),
                             "X-RateLimit-Remaining": str(value)}
        resp = handler()
        resp.headers.update(limit_headers)
        if fault is not None and fault.kind == "timeout_after_create":
            # The work is done; only the answer is late: the client's "unknown outcome" case.
            time.sleep(float(fault.params.get("seconds", 30)))
        return resp

    def _hit_status_limit(self, key: str) -> tuple[bool, int]:
        """Sliding 60 s window per key (§5.1: 30/min). Returns (allowed, remaining or Retry-After).

        Refused calls do not count, as with Laravel's throttle middleware.
        """
        limit = self.status_rate_limit or 0
        now = self.clock()
        with self._lock:
            hits = self._status_hits.setdefault(key, deque())
            while hits and hits[0] <= now - RATE_WINDOW_SECONDS:
                hits.popleft()
            if len(hits) >= limit:
                return False, max(1, math.ceil(hits[0] + RATE_WINDOW_SECONDS - now))
            hits.append(now)
            return True, limit - len(hits)

    # ----------------------------------------------------------------- charge

    def _charge(self, body: Any) -> flask.Response:
        # Malformed JSON reaches Laravel as empty input, so it fails as missing fields (422).
        if not isinstance(body, dict):
            body = {}
        errors = _validate_charge(body)
        if errors:
            first = next(iter(errors.values()))[0]
            return _json_response({"message": first, "errors": errors}, 422)
        if not _products_ok(body.get("products")):
            # [INF] the errors key is ours; the observed 422 reported only this message.
            return _json_response({"message": PRODUCTS_MESSAGE,
                                   "errors": {"products": [PRODUCTS_MESSAGE]}}, 422)
        is_invoice = _text(_get(body, "paymentGateway.src")) == "create-invoice"
        if is_invoice and (_has_value(body.get("extraMerchantData"))
                           or _has_value(body.get("ExtraMerchantsData"))):
            # §4.4; [INF] answered 200 like other business refusals ({"status": false}).
            return _json_response({"status": False, "message": EXTRA_MERCHANTS_MESSAGE}, 200)

        inv = self._create_invoice(body, is_invoice, flask.request.host_url.rstrip("/"))
        if not is_invoice:
            return _json_response({"status": True, "message": "Payment link generated successfully",
                                   "data": {"link": inv.url}}, 201)
        ntype = inv.notification_type
        sms = ntype in ("sms", "all")
        email = ntype in ("email", "all")
        self._record_messages(inv, sms=sms, email=email)
        # `link` is a boolean ("a link was produced"); the URL is in `url` (§4.4, §15).
        return _json_response({"status": True, "message": "Data received successfully",
                               "data": {"sms": sms, "email": email, "link": True,
                                        "url": inv.url, "invoice_id": inv.invoice_id}}, 201)

    def _create_invoice(self, body: dict[str, Any], is_invoice: bool, host: str) -> FakeInvoice:
        # A repeated order.id simply makes a new invoice: UPay documents no duplicate check and
        # has no idempotency keys (§13).
        with self._lock:
            session_id = secrets.token_hex(16)
            if is_invoice:
                key = _random(BASE62, 10)
                while key in self.invoices:
                    key = _random(BASE62, 10)
                url = f"{host}/invoice/{key}"
            else:
                key = session_id
                url = f"{host}/pay?session_id={session_id}"
            number = self._next_number
            self._next_number += 1
            merchant_order_id = _text(_get(body, "order.id")) or ""
            # Shaped like the §5.2 example: encrypted id + order.id + ms timestamp + hex.
            upay_order_id = (_random(BASE62, 10) + re.sub(r"[^0-9A-Za-z]", "", merchant_order_id)
                             + str(int(time.time() * 1000)) + secrets.token_hex(9))
            inv = FakeInvoice(
                invoice_id=key,
                kind="invoice" if is_invoice else "charge",
                request=body,
                amount=_to_decimal(_get(body, "order.amount")) or Decimal(0),
                currency=(_text(_get(body, "order.currency")) or "").upper(),
                merchant_order_id=merchant_order_id,
                reference_id=_text(_get(body, "reference.id")) or "",
                description=_text(_get(body, "order.description")),
                language=(_text(body.get("language")) or "en").lower(),
                return_url=_text(body.get("returnUrl")) or "",
                cancel_url=_text(body.get("cancelUrl")) or "",
                notification_url=_text(body.get("notificationUrl")) or "",
                customer_extra_data=_text(body.get("customerExtraData")),
                customer_unique_id=_text(_get(body, "customer.uniqueId")),
                notification_type=_text(body.get("notificationType")) if is_invoice else None,
                number=number,
                upay_order_id=upay_order_id,
                session_id=session_id,
                url=url,
                created_at=datetime.now(KUWAIT_TZ).strftime("%Y-%m-%d %H:%M:%S"),
            )
            self.invoices[key] = inv
            return inv

    def _record_messages(self, inv: FakeInvoice, *, sms: bool, email: bool) -> None:
        customer = inv.request.get("customer") or {}
        with self._lock:
            if email:
                self.messages.append({"channel": "email", "to": _text(customer.get("email")),
                                      "invoice_id": inv.invoice_id, "url": inv.url})
            if sms:
                self.messages.append({"channel": "sms", "to": _text(customer.get("mobile")),
                                      "invoice_id": inv.invoice_id, "url": inv.url})

    # ----------------------------------------------------------------- merchant utilities

    def _key_check(self, body: Any) -> flask.Response:
        """check-merchant-api-key (§10): validates ``apiKey`` from the body.

        [INF] No doc page exists: success is 201 like the other documented successes; an
        unknown, missing or non-string key gets the same 403 as a bad Bearer token; a Bearer
        header, when sent (Magento does), is not what is checked.
        """
        key = body.get("apiKey") if isinstance(body, dict) else None
        if not isinstance(key, str) or key not in self.valid_keys:
            return _json_response({"message": NOT_VALID_KEY_MESSAGE}, 403)
        return _json_response({"status": True, "message": VALID_KEY_MESSAGE,
                               "data": {"isWhiteLabel": self.is_white_label}}, 201)

    def _button_status(self) -> flask.Response:
        """check-payment-button-status (§10, OAS): enabled methods and isWhiteLabel, 201.
        [INF] Its documented 1 request/minute limit is not enforced; ``?source=sdk`` (Magento)
        changes nothing."""
        return _json_response({"status": True, "message": "Data received successfully",
                               "data": {"payButtons": dict(self.pay_buttons),
                                        "isWhiteLabel": self.is_white_label}}, 201)

    # ----------------------------------------------------------------- status

    def _status(self, track_id: str | None) -> flask.Response:
        args = flask.request.args
        if track_id is not None:
            inv = self.find(track_id=track_id)
        elif "invoice_id" in args:
            inv = self.find(invoice_id=args["invoice_id"])
        elif "session_id" in args:
            inv = self.find(session_id=args["session_id"])
        else:
            inv = None
        if inv is None:
            # [INF] The reference does not say what an unknown id returns; 404 + status false.
            return _json_response({"status": False, "message": "Transaction not found"}, 404)
        fault = flask.g.get("upay_fault")
        with self._lock:
            if fault is not None and fault.kind == "stale":
                # The payment is made but not shown yet: the transaction as it was before.
                inv = replace(inv, state="pending", payment_type=None, track_id=None,
                              payment_id=None, transaction_date=None, redirect_url=None,
                              notify_url_called=False, notify_url_response=None)
            transaction = _transaction(inv)
        return _json_response({"status": True, "message": "Response received successfully",
                               "data": {"transaction": transaction}}, 201)

    # ----------------------------------------------------------------- hosted page

    def _page(self, inv: FakeInvoice | None) -> flask.Response:
        if inv is None:
            return _html_response(_error_page(404, "Invoice not found"), 404)
        return _html_response(_hosted_page(inv), 200)


# --------------------------------------------------------------------------- validation


def _validate_charge(body: dict[str, Any]) -> dict[str, list[str]]:
    """Laravel-style rules for POST /charge; returns field path -> messages, in rule order."""
    errors: dict[str, list[str]] = {}

    def add(path: str, message: str) -> None:
        errors.setdefault(path, []).append(message)

    def string(path: str, max_len: int | None = None, required: bool = False,
               required_when: str = "") -> str | None:
        value = _get(body, path)
        # Laravel trims strings and turns "" into null before validating.
        if isinstance(value, str):
            value = value.strip() or None
        if value is None:
            if required:
                add(path, f"The {_display(path)} field is required{required_when}.")
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            add(path, f"The {_display(path)} must be a string.")
            return None
        text = str(value)
        if max_len is not None and len(text) > max_len:
            add(path, f"The {_display(path)} may not be greater than {max_len} characters.")
        return text

    is_invoice = _text(_get(body, "paymentGateway.src")) == "create-invoice"
    # order.id: 40 on the sandbox pages vs 50 elsewhere; the reference says keep 40 (§17.4).
    string("order.id", 40, required=True)
    string("order.reference", 255)
    string("order.description", 500)
    currency = string("order.currency", required=True)
    if currency is not None:
        if len(currency) != 3:
            add("order.currency", "The order.currency must be 3 characters.")
        elif not currency.isalpha():
            add("order.currency", "The order.currency may only contain letters.")
    amount_raw = _get(body, "order.amount")
    if amount_raw is None or (isinstance(amount_raw, str) and not amount_raw.strip()):
        add("order.amount", "The order.amount field is required.")
    else:
        amount = _to_decimal(amount_raw)
        if amount is None:
            add("order.amount", "The order.amount must be a number.")
        elif amount <= 0:
            add("order.amount", "The order.amount must be greater than 0.")
    ntype = string("notificationType", required=is_invoice)
    if is_invoice and ntype is not None and ntype not in NOTIFICATION_TYPES:
        add("notificationType", "The selected notification type is invalid.")
    language = string("language", required=True)
    if language is not None and language.lower() not in ("en", "ar"):
        add("language", "The selected language is invalid.")
    # reference.id: "150" in one doc crawl, but 35 observed on the sandbox (§17.5).
    string("reference.id", 35, required=True)
    string("customer.uniqueId", 150)
    string("customer.name", 50)
    # Laravel's required_if wording: "... field is required when notification type is sms."
    when = f" when {_display('notificationType')} is {ntype}"
    string("customer.email", 50, required=ntype in ("email", "all"), required_when=when)
    string("customer.mobile", required=ntype in ("sms", "all"), required_when=when)
    string("returnUrl", 250, required=True)
    string("cancelUrl", 250, required=True)
    string("notificationUrl", 250, required=True)
    return errors


def _products_ok(products: Any) -> bool:
    """UPay's own product check (§4.1): non-empty list; name, price > 0, integer quantity > 0."""
    if not isinstance(products, list) or not products:
        return False
    for product in products:
        if not isinstance(product, dict):
            return False
        name = product.get("name")
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > 255:
            return False
        description = product.get("description")
        if description is not None and (not isinstance(description, str) or len(description) > 255):
            return False
        price = _to_decimal(product.get("price"))
        if price is None or price <= 0:
            return False
        quantity = product.get("quantity")
        if isinstance(quantity, str) and quantity.strip().isdigit():
            quantity = int(quantity.strip())   # Laravel's integer rule accepts "2"
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            return False
    return True


def _display(path: str) -> str:
    """Laravel's displayable attribute: snake_case, "_" -> " " ("returnUrl" -> "return url")."""
    return re.sub(r"(.)(?=[A-Z])", r"\1_", path).lower().replace("_", " ")


# --------------------------------------------------------------------------- responses


def _transaction(inv: FakeInvoice) -> dict[str, Any]:
    """The §5.2 transaction object."""
    total = _money(inv.amount)
    return {
        "order_id": inv.upay_order_id,
        "refund_order_id": inv.upay_order_id,
        "payment_id": inv.payment_id,
        "result": inv.result,
        "payment_type": inv.payment_type,
        "track_id": inv.track_id,
        "transaction_date": inv.transaction_date,
        "product_details": None,
        "reference": inv.reference_id,
        # [INF] Both are the order amount in the order currency, 3 dp; the fake converts nothing.
        "total_paid_non_kwd": total,
        "total_price": total,
        "currency_type": inv.currency,
        "status": "done" if inv.finished else "pending",
        "session_id": inv.session_id,
        "error_url": inv.cancel_url,
        "success_url": inv.return_url,
        "redirect_url": inv.redirect_url,
        "notify_url": inv.notification_url,
        "notify_url_called": inv.notify_url_called,
        "notify_url_response": inv.notify_url_response,
        "whitelabel": False,
        "customer_unique_id": inv.customer_unique_id,
        "merchant_requested_order_id": inv.merchant_order_id,
        "extra_merchants_data": None,
        "is_paid_from_knet": inv.state == "CAPTURED" and inv.payment_type == "knet",
        "is_paid_from_cc": inv.state == "CAPTURED" and inv.payment_type == "cc",
        "is_from_nbk": False,
        "customer_extra_data": inv.customer_extra_data,
        "created_at": inv.created_at,
    }


def _invoice_public(inv: FakeInvoice) -> dict[str, Any]:
    return {
        "invoice_id": inv.invoice_id, "kind": inv.kind, "url": inv.url,
        "amount": str(inv.amount), "currency": inv.currency,
        "merchant_order_id": inv.merchant_order_id, "reference_id": inv.reference_id,
        "number": inv.number, "upay_order_id": inv.upay_order_id, "session_id": inv.session_id,
        "state": inv.state, "result": inv.result, "payment_type": inv.payment_type,
        "track_id": inv.track_id, "payment_id": inv.payment_id, "fields": inv.fields,
        "redirect_url": inv.redirect_url, "return_url": inv.return_url,
        "cancel_url": inv.cancel_url, "notification_url": inv.notification_url,
        "notification_type": inv.notification_type, "language": inv.language,
        "customer_extra_data": inv.customer_extra_data,
        "notify_url_called": inv.notify_url_called,
        "notify_url_response": inv.notify_url_response, "created_at": inv.created_at,
    }


def _fault_response(fault: Fault) -> flask.Response | None:
    """The answer a fault gives instead of the API, or None when the API should still run."""
    params = fault.params
    kind = fault.kind
    if kind == "slow":
        time.sleep(float(params.get("seconds", 1.0)))
        return None
    if kind == "timeout_after_create":
        return None   # sleeps after the handler ran
    if kind == "timeout":
        # Like a proxy giving up on a hung upstream: nothing reached the app.
        time.sleep(float(params.get("seconds", 30)))
        return _html_response(_error_page(504, "Gateway Time-out"), 504)
    if kind == "status":
        code = int(params.get("status", 500))
        body = params.get("body")
        ctype = params.get("content_type", "text/html; charset=UTF-8")
        if body is None:
            body = _error_page(code, _reason(code))
        elif not isinstance(body, (str, bytes)):
            # A JSON body scripted through POST /_fake/faults arrives already parsed.
            body = json.dumps(body)
            ctype = params.get("content_type", "application/json")
        return flask.Response(body, status=code, content_type=ctype)
    if kind == "non_json":
        # What an unwhitelisted server IP gets: a WAF page, not JSON (§1, §15).
        return _html_response(_ACCESS_DENIED_PAGE, int(params.get("status", 200)))
    if kind == "rejected":
        message = params.get("message", "Something went wrong, please try again later.")
        return _json_response({"status": False, "message": message}, int(params.get("status", 200)))
    if kind == "rate_limit":
        return _too_many(int(params.get("retry_after", 60)), None)
    if kind == "stale":
        return None  # the status handler answers, with the payment not shown yet
    raise ValueError(f"unhandled fault kind {kind!r}")


def _too_many(retry_after: int, limit: int | None) -> flask.Response:
    # The status code for the limit is not documented (§17.13); 429 as Laravel's throttle does.
    headers = {"Retry-After": str(retry_after)}
    if limit is not None:
        headers.update({"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0"})
    return _json_response({"message": TOO_MANY_MESSAGE}, 429, headers)


def _json_response(payload: Any, status: int,
                   headers: dict[str, str] | None = None) -> flask.Response:
    # Laravel's response()->json() uses PHP's json_encode: compact, "/" escaped as "\/" and
    # non-ASCII as \uXXXX; clients must parse JSON, not match strings. ("/" only occurs inside
    # JSON strings, so the replace is safe.)
    text = json.dumps(payload, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/")
    return flask.Response(text, status=status, mimetype="application/json", headers=headers)


def _html_response(html: str, status: int) -> flask.Response:
    return flask.Response(html, status=status, content_type="text/html; charset=UTF-8")


def _reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"


def _error_page(code: int, reason: str) -> str:
    # Shaped like nginx's default error page, which is what sits in front of the API.
    title = f"{code} {escape(reason)}"
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n")


_ACCESS_DENIED_PAGE = (
    "<html><head><title>Access denied</title></head><body>"
    "<h1>Access denied</h1><p>You don't have permission to access this resource. "
    "Your IP address is not allowed.</p></body></html>"
)

_LABELS = {
    "en": {"title": "UPayments invoice", "pay": "Pay", "decline": "Decline", "cancel": "Cancel",
           "amount": "Amount", "done": "This payment has been processed"},
    "ar": {"title": "فاتورة يو بيمنتس", "pay": "ادفع", "decline": "رفض", "cancel": "إلغاء",
           "amount": "المبلغ", "done": "تمت معالجة هذه الدفعة"},
}


def _hosted_page(inv: FakeInvoice) -> str:
    arabic = inv.language == "ar"
    labels = _LABELS["ar" if arabic else "en"]
    action = f"/invoice/{quote(inv.invoice_id, safe='')}/complete"
    if inv.finished:
        result = escape(inv.result)
        actions = f'<p id="result" data-result="{result}">{labels["done"]}: {result}</p>'
    else:
        actions = (
            f'<form method="post" action="{action}" id="pay-form">'
            '<input type="hidden" name="result" value="CAPTURED">'
            '<select name="payment_type" id="payment-type">'
            '<option value="knet">KNET</option><option value="cc">Credit card</option></select>'
            f'<button type="submit" id="pay">{labels["pay"]}</button></form>\n'
            f'<form method="post" action="{action}" id="decline-form">'
            '<input type="hidden" name="result" value="NOT CAPTURED">'
            '<input type="hidden" name="payment_type" value="knet">'
            f'<button type="submit" id="decline">{labels["decline"]}</button></form>\n'
            f'<form method="post" action="{action}" id="cancel-form">'
            '<input type="hidden" name="result" value="CANCELED">'
            '<input type="hidden" name="payment_type" value="knet">'
            f'<button type="submit" id="cancel">{labels["cancel"]}</button></form>'
        )
    return (
        "<!doctype html>\n"
        f'<html lang="{"ar" if arabic else "en"}" dir="{"rtl" if arabic else "ltr"}">\n'
        f'<head><meta charset="utf-8"><title>{labels["title"]}</title></head>\n<body>\n'
        f'<main id="invoice" data-invoice-id="{escape(inv.invoice_id)}"'
        f' data-state="{escape(inv.state)}">\n'
        f'<h1>{labels["title"]}</h1>\n'
        f'<p id="description">{escape(inv.description or "")}</p>\n'
        f'<p>{labels["amount"]}: <span id="amount">{_money(inv.amount)}</span> '
        f'<span id="currency">{escape(inv.currency)}</span></p>\n'
        f"{actions}\n</main>\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------- small helpers


def _get(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = str(value).strip()
    return text or None


def _has_value(value: Any) -> bool:
    return value not in (None, "", [], {})


def _to_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, (int, str)):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            return None
    else:
        return None
    return number if number.is_finite() else None


def _money(amount: Decimal) -> str:
    """3-dp string, as UPay renders KWD amounts ("12.500")."""
    return str(amount.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _digits(length: int) -> str:
    return str(secrets.randbelow(9) + 1) + _random(string.digits, length - 1)


def _bearer_key(header: str) -> str | None:
    scheme, _, key = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def _mask_authorization(value: str) -> str:
    return "Bearer ***" if value.strip().lower().startswith("bearer") else "***"


def _loads_decimal(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body, parse_float=Decimal)
    except (ValueError, RecursionError):
        return None


def _loads_plain(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _loads_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
