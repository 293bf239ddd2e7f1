"""The UPay fake speaks the wire protocol of shared/reference/upay-api.md, over real HTTP."""

from __future__ import annotations

import json
import re
import threading
import time
from decimal import Decimal
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import flask
import pytest
import requests

from bridge.fakes.server import ServedApp, serve_wsgi
from bridge.fakes.upay import (PRODUCTS_MESSAGE, FakeUPay, InvoiceStateError, RecordedRequest)

KEY = "jtest123"
AUTH = {"Authorization": f"Bearer {KEY}", "Accept": "application/json"}
FIELDS = ("payment_id", "result", "post_date", "tran_id", "ref", "track_id", "auth", "order_id",
          "requested_order_id", "refund_order_id", "payment_type", "invoice_id",
          "transaction_date", "receipt_id", "trn_udf")


class Receiver:
    """A loopback merchant endpoint that records every notification it gets."""

    def __init__(self, status: int = 200) -> None:
        self.received: list[dict[str, Any]] = []
        self.event = threading.Event()
        app = flask.Flask("receiver")

        @app.post("/notify")
        def notify() -> tuple[flask.Response, int]:
            self.received.append({
                "content_type": flask.request.content_type or "",
                "form": flask.request.form.to_dict(),
                "json": flask.request.get_json(silent=True),
                "at": time.monotonic(),
            })
            self.event.set()
            return flask.jsonify({"success": True, "message": "Success", "data": None}), status

        self.served = serve_wsgi(app)
        self.url = self.served.url + "/notify"

    def wait(self, n: int = 1, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.received) >= n, f"expected {n} notifications, got {len(self.received)}"


class Slot:
    """WSGI app that forwards to whichever fake the current test put in it.

    Each ServedApp.shutdown() waits out werkzeug's 0.5 s poll, so the module shares one server.
    """

    def __init__(self) -> None:
        self.app: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def slot_server() -> Iterator[tuple[Slot, ServedApp]]:
    slot = Slot()
    with serve_wsgi(slot) as served:
        yield slot, served


@pytest.fixture
def serve(slot_server: tuple[Slot, ServedApp]) -> Callable[[FakeUPay], ServedApp]:
    """Put a fake behind the shared server and return that server."""
    slot, served = slot_server

    def put(fake: FakeUPay) -> ServedApp:
        slot.app = fake.app
        return served

    return put


@pytest.fixture
def fake() -> FakeUPay:
    return FakeUPay()


@pytest.fixture
def upay(fake: FakeUPay, serve: Callable[[FakeUPay], ServedApp]) -> ServedApp:
    return serve(fake)


@pytest.fixture(scope="module")
def shared_receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.served.shutdown()


@pytest.fixture
def receiver(shared_receiver: Receiver) -> Receiver:
    shared_receiver.received.clear()
    return shared_receiver


def invoice_body(notify_url: str = "http://127.0.0.1:9/notify", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "products": [{"name": "Widget", "description": "Blue widget", "price": 6.25,
                      "quantity": 2}],
        "order": {"id": "ORD-2024-000123", "reference": "INV-123", "description": "Order 123",
                  "currency": "KWD", "amount": 12.5},
        "paymentGateway": {"src": "create-invoice"},
        "notificationType": "email",
        "language": "en",
        "reference": {"id": "store1-123"},
        "customer": {"uniqueId": "cust-42", "name": "John Smith", "email": "john@example.com",
                     "mobile": "+96512345678"},
        "returnUrl": "https://shop.example/upay/return",
        "cancelUrl": "https://shop.example/upay/cancel",
        "notificationUrl": notify_url,
        "customerExtraData": "store=1;order=123",
    }
    for path, value in overrides.items():
        target = body
        *parents, last = path.split("__")
        for part in parents:
            target = target[part]
        if value is ...:
            target.pop(last, None)
        else:
            target[last] = value
    return body


def post_charge(upay: ServedApp, body: Any, headers: dict[str, str] | None = None,
                timeout: float = 5) -> requests.Response:
    return requests.post(upay.url + "/api/v1/charge", json=body,
                         headers=AUTH if headers is None else headers, timeout=timeout)


def create_invoice(upay: ServedApp, **overrides: Any) -> dict[str, Any]:
    r = post_charge(upay, invoice_body(**overrides))
    assert r.status_code == 201, r.text
    return r.json()["data"]


def get_status(upay: ServedApp, query: str = "", track_id: str = "",
               headers: dict[str, str] | None = None) -> requests.Response:
    path = f"/api/v1/get-payment-status/{track_id}" if track_id else "/api/v1/get-payment-status"
    return requests.get(upay.url + path + query, headers=AUTH if headers is None else headers,
                        timeout=5)


def redirect_fields(url: str) -> dict[str, str]:
    """The fields after UPay's appended "?" (the last one, because of the double-? quirk)."""
    return {k: v[0] for k, v in parse_qs(url.rsplit("?", 1)[1]).items()}


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": "Basic amtlc3Q="}])
def test_unknown_or_missing_key_gets_403(upay: ServedApp, headers: dict[str, str]) -> None:
    r = post_charge(upay, invoice_body(), headers=headers)
    assert r.status_code == 403
    assert r.json() == {"message": "Not a valid API request"}
    assert get_status(upay, "?invoice_id=x", headers=headers).status_code == 403


def test_added_key_is_accepted(fake: FakeUPay, upay: ServedApp) -> None:
    fake.add_key("merchant-2")
    r = post_charge(upay, invoice_body(), headers={"Authorization": "Bearer merchant-2"})
    assert r.status_code == 201


# --------------------------------------------------------------------------- charge


def test_create_invoice_envelope(fake: FakeUPay, upay: ServedApp) -> None:
    r = post_charge(upay, invoice_body())
    assert r.status_code == 201
    payload = r.json()
    assert payload["status"] is True
    assert payload["message"] == "Data received successfully"
    data = payload["data"]
    # link is a boolean; the URL lives in `url` (§4.4).
    assert data["link"] is True and data["email"] is True and data["sms"] is False
    assert re.fullmatch(r"[0-9A-Za-z]{10}", data["invoice_id"])
    assert data["url"] == f"{upay.url}/invoice/{data['invoice_id']}"
    assert "\\/invoice\\/" in r.text   # PHP json_encode escapes slashes

    inv = fake.invoices[data["invoice_id"]]
    assert inv.kind == "invoice" and inv.state == "pending"
    assert inv.amount == Decimal("12.5") and isinstance(inv.amount, Decimal)
    assert inv.currency == "KWD" and inv.merchant_order_id == "ORD-2024-000123"
    assert inv.reference_id == "store1-123" and inv.customer_extra_data == "store=1;order=123"
    assert inv.track_id is None and inv.payment_id is None
    assert fake.messages == [{"channel": "email", "to": "john@example.com",
                              "invoice_id": data["invoice_id"], "url": data["url"]}]


def test_notification_type_all_sets_both_channels(fake: FakeUPay, upay: ServedApp) -> None:
    data = create_invoice(upay, notificationType="all")
    assert (data["sms"], data["email"], data["link"]) == (True, True, True)
    assert sorted(m["channel"] for m in fake.messages) == ["email", "sms"]


def test_repeated_order_id_makes_a_new_invoice(fake: FakeUPay, upay: ServedApp) -> None:
    first = create_invoice(upay)
    second = create_invoice(upay)
    assert first["invoice_id"] != second["invoice_id"]
    assert len(fake.invoices) == 2
    numbers = {inv.number for inv in fake.invoices.values()}
    assert len(numbers) == 2


def test_plain_charge_returns_hosted_link(fake: FakeUPay, upay: ServedApp) -> None:
    r = post_charge(upay, invoice_body(paymentGateway={"src": "knet"}, notificationType=...))
    assert r.status_code == 201
    payload = r.json()
    assert payload["status"] is True
    assert payload["message"] == "Payment link generated successfully"
    link = payload["data"]["link"]
    assert link.startswith(upay.url + "/pay?session_id=")
    sid = parse_qs(urlsplit(link).query)["session_id"][0]
    assert fake.invoices[sid].kind == "charge" and fake.messages == []


@pytest.mark.parametrize("path,value,field,message", [
    ("order__id", "x" * 41, "order.id", "The order.id may not be greater than 40 characters."),
    ("reference__id", "r" * 36, "reference.id",
     "The reference.id may not be greater than 35 characters."),
    ("customer__name", "n" * 51, "customer.name",
     "The customer.name may not be greater than 50 characters."),
    ("order__id", ..., "order.id", "The order.id field is required."),
    ("order__amount", 0, "order.amount", "The order.amount must be greater than 0."),
    ("order__amount", "abc", "order.amount", "The order.amount must be a number."),
    ("order__currency", "KWDX", "order.currency", "The order.currency must be 3 characters."),
    ("language", "fr", "language", "The selected language is invalid."),
    ("returnUrl", "", "returnUrl", "The return url field is required."),
    ("notificationUrl", "https://x/" + "n" * 250, "notificationUrl",
     "The notification url may not be greater than 250 characters."),
    ("notificationType", ..., "notificationType", "The notification type field is required."),
    ("notificationType", "fax", "notificationType", "The selected notification type is invalid."),
    ("customer__email", ..., "customer.email",
     "The customer.email field is required when notification type is email."),
])
def test_validation_errors_are_422(fake: FakeUPay, upay: ServedApp, path: str, value: Any,
                                   field: str, message: str) -> None:
    r = post_charge(upay, invoice_body(**{path: value}))
    assert r.status_code == 422
    payload = r.json()
    assert payload["message"] == message
    assert payload["errors"][field] == [message]
    assert fake.invoices == {}


def test_limits_are_inclusive(upay: ServedApp) -> None:
    data = create_invoice(upay, order__id="x" * 40, reference__id="r" * 35,
                          customer__name="n" * 50, language="AR")
    assert data["invoice_id"]


def test_sms_needs_mobile(upay: ServedApp) -> None:
    r = post_charge(upay, invoice_body(notificationType="sms", customer__mobile=...))
    assert r.status_code == 422
    assert r.json()["message"] == ("The customer.mobile field is required when notification "
                                   "type is sms.")


@pytest.mark.parametrize("products", [
    ..., [], [{"name": "", "price": 1, "quantity": 1}],
    [{"description": "no name", "price": 1, "quantity": 1}],
    [{"name": "A", "price": 0, "quantity": 1}],
    [{"name": "A", "price": 1, "quantity": 0}],
    [{"name": "A", "price": 1, "quantity": 1.5}],
    [{"name": "A" * 256, "price": 1, "quantity": 1}],
    [{"name": "A", "description": "d" * 256, "price": 1, "quantity": 1}],
    [{"name": "A", "price": 1, "quantity": 1}, {"name": "B", "price": -2, "quantity": 1}],
])
def test_bad_products_get_upays_exact_message(fake: FakeUPay, upay: ServedApp,
                                              products: Any) -> None:
    r = post_charge(upay, invoice_body(products=products))
    assert r.status_code == 422
    assert r.json()["message"] == PRODUCTS_MESSAGE
    assert fake.invoices == {}


def test_malformed_json_is_422(fake: FakeUPay, upay: ServedApp) -> None:
    r = requests.post(upay.url + "/api/v1/charge", data=b"{not json",
                      headers={**AUTH, "Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 422
    payload = r.json()
    assert payload["message"] == "The order.id field is required."
    assert "returnUrl" in payload["errors"]
    assert fake.requests[-1].json is None and fake.requests[-1].body == b"{not json"


def test_create_invoice_refuses_extra_merchants_data(fake: FakeUPay, upay: ServedApp) -> None:
    body = invoice_body(extraMerchantData=[{"amount": 10, "ibanNumber": "KW91..."}])
    r = post_charge(upay, body)
    assert r.json() == {"status": False,
                        "message": "Create invoice does not work with extra merchants data"}
    assert fake.invoices == {}


def test_recorded_requests_keep_decimals(fake: FakeUPay, upay: ServedApp) -> None:
    create_invoice(upay)
    get_status(upay, "?invoice_id=nothing")
    (charge,) = fake.charges()
    assert isinstance(charge, RecordedRequest)
    assert charge.method == "POST" and charge.path == "/api/v1/charge"
    assert charge.json["order"]["amount"] == Decimal("12.5")
    assert charge.headers["Authorization"] == f"Bearer {KEY}"
    assert len(fake.requests) == 2 and fake.requests[1].query == {"invoice_id": "nothing"}


# --------------------------------------------------------------------------- status


def test_status_by_invoice_id_before_and_after_payment(fake: FakeUPay, upay: ServedApp,
                                                       receiver: Receiver) -> None:
    data = create_invoice(upay, notify_url=receiver.url)
    r = get_status(upay, f"?invoice_id={data['invoice_id']}")
    assert r.status_code == 201
    payload = r.json(parse_float=Decimal)
    assert payload["status"] is True and payload["message"] == "Response received successfully"
    tx = payload["data"]["transaction"]
    assert tx["result"] == "PENDING" and tx["status"] == "pending"
    assert tx["track_id"] is None and tx["payment_id"] is None
    assert tx["total_price"] == "12.500" and tx["currency_type"] == "KWD"
    assert tx["merchant_requested_order_id"] == "ORD-2024-000123"
    assert tx["reference"] == "store1-123" and tx["notify_url_called"] is False
    assert tx["whitelabel"] is False and tx["product_details"] is None

    fake.complete_payment(data["invoice_id"], "CAPTURED")
    tx = get_status(upay, f"?invoice_id={data['invoice_id']}").json()["data"]["transaction"]
    inv = fake.invoices[data["invoice_id"]]
    assert tx["result"] == "CAPTURED" and tx["status"] == "done"
    assert re.fullmatch(r"[0-9A-Za-z]{32}", tx["track_id"])
    assert tx["payment_id"] == inv.payment_id and tx["payment_type"] == "knet"
    assert tx["order_id"] == tx["refund_order_id"] == inv.upay_order_id
    assert tx["is_paid_from_knet"] is True and tx["is_paid_from_cc"] is False
    assert tx["redirect_url"] == inv.redirect_url
    assert tx["customer_extra_data"] == "store=1;order=123"
    assert tx["notify_url_called"] is True
    assert tx["notify_url_response"] == {"success": True, "message": "Success", "data": None}
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", tx["transaction_date"])


def test_status_by_track_id_and_session_id(fake: FakeUPay, upay: ServedApp) -> None:
    data = create_invoice(upay)
    inv = fake.invoices[data["invoice_id"]]
    by_session = get_status(upay, f"?session_id={inv.session_id}")
    assert by_session.status_code == 201
    fake.complete_payment(data["invoice_id"], "NOT CAPTURED")
    r = get_status(upay, track_id=inv.track_id or "")
    assert r.status_code == 201
    tx = r.json()["data"]["transaction"]
    assert tx["result"] == "NOT CAPTURED" and tx["track_id"] == inv.track_id


@pytest.mark.parametrize("query,track", [("?invoice_id=ZZZZZZZZZZ", ""), ("?session_id=abc", ""),
                                         ("", "nosuchtrack"), ("", "")])
def test_unknown_transaction_is_404(upay: ServedApp, query: str, track: str) -> None:
    r = get_status(upay, query, track_id=track)
    assert r.status_code == 404
    assert r.json() == {"status": False, "message": "Transaction not found"}


def test_status_rate_limit_429_on_31st_call(fake: FakeUPay, upay: ServedApp) -> None:
    now = [1000.0]
    fake.clock = lambda: now[0]
    data = create_invoice(upay)
    query = f"?invoice_id={data['invoice_id']}"
    for i in range(30):
        r = get_status(upay, query)
        assert r.status_code == 201, i
        now[0] += 1.0
    assert r.headers["X-RateLimit-Remaining"] == "0"
    r = get_status(upay, query)
    assert r.status_code == 429
    assert r.json() == {"message": "Too Many Attempts."}
    # The oldest call was at t=1000; now is t=1030, so a slot frees in 30 s.
    assert r.headers["Retry-After"] == "30"
    # Other keys have their own window; charges are not limited.
    fake.add_key("other")
    assert get_status(upay, query, headers={"Authorization": "Bearer other"}).status_code == 201
    assert post_charge(upay, invoice_body()).status_code == 201
    now[0] = 1060.5   # the first call left the 60 s window
    assert get_status(upay, query).status_code == 201


def test_rate_limit_can_be_disabled(serve: Callable[[FakeUPay], ServedApp]) -> None:
    served = serve(FakeUPay(status_rate_limit=None))
    data = create_invoice(served)
    for _ in range(35):
        assert get_status(served, f"?invoice_id={data['invoice_id']}").status_code == 201


# --------------------------------------------------------------------------- completion


def test_redirect_reproduces_double_question_mark(fake: FakeUPay, upay: ServedApp) -> None:
    data = create_invoice(upay, returnUrl="https://shop.example/return?a=1",
                          cancelUrl="https://shop.example/cancel?order=7")
    url = fake.complete_payment(data["invoice_id"], "CAPTURED")
    assert url.startswith("https://shop.example/return?a=1?payment_id=")
    # The merchant's last parameter swallows UPay's "?payment_id=..." (§6.2).
    assert parse_qs(urlsplit(url).query)["a"][0].startswith("1?payment_id=")
    fields = redirect_fields(url)
    assert list(fields)[:2] == ["payment_id", "result"] and fields["result"] == "CAPTURED"

    other = create_invoice(upay, cancelUrl="https://shop.example/cancel?order=7")
    cancel = fake.complete_payment(other["invoice_id"], "CANCELED")
    assert cancel.startswith("https://shop.example/cancel?order=7?payment_id=")
    assert redirect_fields(cancel)["result"] == "CANCELED"


def test_decline_goes_to_cancel_url_without_query(fake: FakeUPay, upay: ServedApp) -> None:
    data = create_invoice(upay)
    url = fake.complete_payment(data["invoice_id"], "NOT CAPTURED", payment_type="cc")
    assert url.startswith("https://shop.example/upay/cancel?payment_id=")
    assert url.count("?") == 1
    assert redirect_fields(url)["result"] == "NOT CAPTURED"
    assert redirect_fields(url)["payment_type"] == "cc"


def test_completing_twice_is_refused(fake: FakeUPay, upay: ServedApp) -> None:
    data = create_invoice(upay)
    fake.complete_payment(data["invoice_id"])
    with pytest.raises(InvoiceStateError):
        fake.complete_payment(data["invoice_id"], "CANCELED")
    with pytest.raises(KeyError):
        fake.complete_payment("nope")
    with pytest.raises(ValueError):
        fake.complete_payment(create_invoice(upay)["invoice_id"], "MAYBE")


def test_notification_is_form_encoded_with_all_fields(fake: FakeUPay, upay: ServedApp,
                                                      receiver: Receiver) -> None:
    data = create_invoice(upay, notify_url=receiver.url)
    redirect = fake.complete_payment(data["invoice_id"])
    # Sent synchronously, before the redirect is handed back.
    assert len(receiver.received) == 1
    got = receiver.received[0]
    assert got["content_type"].startswith("application/x-www-form-urlencoded")
    form = got["form"]
    inv = fake.invoices[data["invoice_id"]]
    assert tuple(form) == FIELDS
    assert form == redirect_fields(redirect) == inv.fields
    assert form["requested_order_id"] == "ORD-2024-000123"
    assert form["invoice_id"] == str(inv.number) and form["invoice_id"].isdigit()
    assert form["order_id"] == form["refund_order_id"] == form["receipt_id"] == inv.upay_order_id
    assert form["trn_udf"] == "store=1;order=123"
    assert re.fullmatch(r"[0-9A-Za-z]{32}", form["track_id"])
    assert re.fullmatch(r"\d{4}", form["post_date"]) and form["auth"]
    (note,) = fake.notifications
    assert note.url == receiver.url and note.format == "form"
    assert note.status_code == 200 and note.error is None and note.fields == form
    assert json.loads(note.response_body)["success"] is True


def test_notification_json_format(receiver: Receiver,
                                  serve: Callable[[FakeUPay], ServedApp]) -> None:
    fake = FakeUPay(notification_format="json")
    data = create_invoice(serve(fake), notify_url=receiver.url)
    fake.complete_payment(data["invoice_id"])
    got = receiver.received[0]
    assert got["content_type"].startswith("application/json")
    assert got["json"]["result"] == "CAPTURED" and tuple(got["json"]) == FIELDS


def test_notification_fault_drop(fake: FakeUPay, upay: ServedApp, receiver: Receiver) -> None:
    data = create_invoice(upay, notify_url=receiver.url)
    fake.faults.add("notification", "drop")
    fake.complete_payment(data["invoice_id"])
    time.sleep(0.1)
    assert receiver.received == [] and fake.notifications == []
    tx = get_status(upay, f"?invoice_id={data['invoice_id']}").json()["data"]["transaction"]
    assert tx["result"] == "CAPTURED" and tx["notify_url_called"] is False


def test_notification_fault_duplicate(fake: FakeUPay, upay: ServedApp, receiver: Receiver) -> None:
    data = create_invoice(upay, notify_url=receiver.url)
    fake.faults.add("notification", "duplicate", times=3)
    fake.complete_payment(data["invoice_id"])
    assert len(receiver.received) == 3 and len(fake.notifications) == 3
    assert receiver.received[0]["form"] == receiver.received[2]["form"]


def test_notification_fault_json(fake: FakeUPay, upay: ServedApp, receiver: Receiver) -> None:
    first = create_invoice(upay, notify_url=receiver.url)
    second = create_invoice(upay, notify_url=receiver.url)
    fake.faults.add("notification", "json")
    fake.complete_payment(first["invoice_id"])
    fake.complete_payment(second["invoice_id"])
    assert receiver.received[0]["json"]["track_id"]
    assert receiver.received[1]["content_type"].startswith("application/x-www-form-urlencoded")
    assert [n.format for n in fake.notifications] == ["json", "form"]


def test_notification_fault_delay(fake: FakeUPay, upay: ServedApp, receiver: Receiver) -> None:
    data = create_invoice(upay, notify_url=receiver.url)
    fake.faults.add("notification", "delay", seconds=0.3)
    started = time.monotonic()
    fake.complete_payment(data["invoice_id"])
    assert receiver.received == []   # the redirect comes first
    receiver.wait(1)
    assert receiver.received[0]["at"] - started >= 0.25


def test_failed_notification_is_recorded_not_raised(fake: FakeUPay, upay: ServedApp) -> None:
    data = create_invoice(upay, notify_url="http://127.0.0.1:9/notify")   # nothing listens
    redirect = fake.complete_payment(data["invoice_id"])
    assert redirect.startswith("https://shop.example/upay/return?")
    (note,) = fake.notifications
    assert note.status_code is None and note.error and "ConnectionError" in note.error
    assert fake.invoices[data["invoice_id"]].notify_url_called is False


# --------------------------------------------------------------------------- API faults


def test_timeout_fault_creates_nothing(fake: FakeUPay, upay: ServedApp) -> None:
    fake.faults.add("charge", "timeout", seconds=2)
    with pytest.raises(requests.Timeout):
        post_charge(upay, invoice_body(), timeout=0.5)
    assert fake.invoices == {} and len(fake.charges()) == 1
    assert post_charge(upay, invoice_body()).status_code == 201   # fault used up


def test_timeout_after_create_creates_the_invoice(fake: FakeUPay, upay: ServedApp) -> None:
    fake.faults.add("charge", "timeout_after_create", seconds=2)
    with pytest.raises(requests.Timeout):
        post_charge(upay, invoice_body(), timeout=0.5)
    (inv,) = fake.invoices.values()   # UPay did create it: the outcome was only unknown
    assert inv.merchant_order_id == "ORD-2024-000123"
    assert get_status(upay, f"?invoice_id={inv.invoice_id}").json()["data"]["transaction"][
        "result"] == "PENDING"


def test_slow_fault_then_normal(fake: FakeUPay, upay: ServedApp) -> None:
    fake.faults.add("status", "slow", seconds=0.3)
    started = time.monotonic()
    r = get_status(upay, "?invoice_id=x")
    assert r.status_code == 404 and time.monotonic() - started >= 0.3


def test_status_fault_default_html_500(fake: FakeUPay, upay: ServedApp) -> None:
    fake.faults.add("charge", "status")
    r = post_charge(upay, invoice_body())
    assert r.status_code == 500
    assert r.headers["Content-Type"].startswith("text/html") and "500" in r.text
    assert fake.invoices == {}


def test_status_fault_custom(fake: FakeUPay, upay: ServedApp) -> None:
    fake.faults.add("status", "status", count=2, status=503,
                    body='{"message":"Service Unavailable"}', content_type="application/json")
    for _ in range(2):
        r = get_status(upay, "?invoice_id=x")
        assert r.status_code == 503 and r.json() == {"message": "Service Unavailable"}
    assert get_status(upay, "?invoice_id=x").status_code == 404


def test_non_json_fault_is_a_waf_page(fake: FakeUPay, upay: ServedApp) -> None:
    fake.faults.add("charge", "non_json")
    r = post_charge(upay, invoice_body())
    assert r.status_code == 200 and "Access denied" in r.text
    with pytest.raises(ValueError):
        r.json()
    assert fake.invoices == {}


def test_rejected_fault(fake: FakeUPay, upay: ServedApp) -> None:
    fake.faults.add("charge", "rejected", message="Merchant is not active")
    r = post_charge(upay, invoice_body())
    assert r.status_code == 200
    assert r.json() == {"status": False, "message": "Merchant is not active"}
    assert fake.invoices == {}


def test_rate_limit_fault(fake: FakeUPay, upay: ServedApp) -> None:
    fake.faults.add("charge", "rate_limit", retry_after=7)
    r = post_charge(upay, invoice_body())
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert r.json() == {"message": "Too Many Attempts."}


def test_faults_apply_in_order(fake: FakeUPay, upay: ServedApp) -> None:
    fake.faults.add("charge", "status", status=502)
    fake.faults.add("charge", "rejected")
    assert post_charge(upay, invoice_body()).status_code == 502
    assert post_charge(upay, invoice_body()).json()["status"] is False
    assert post_charge(upay, invoice_body()).status_code == 201


def test_wrong_method_and_unknown_endpoint(upay: ServedApp) -> None:
    r = requests.get(upay.url + "/api/v1/charge", headers=AUTH, timeout=5)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    assert requests.post(upay.url + "/api/v1/create-refund", json={}, headers=AUTH,
                         timeout=5).status_code == 404


def test_unknown_fault_is_refused(fake: FakeUPay) -> None:
    with pytest.raises(ValueError):
        fake.faults.add("charge", "drop")
    with pytest.raises(ValueError):
        fake.faults.add("refund", "timeout")


def test_latency_is_applied_to_api_calls(serve: Callable[[FakeUPay], ServedApp]) -> None:
    served = serve(FakeUPay(latency=0.2))
    started = time.monotonic()
    get_status(served, "?invoice_id=x")
    assert time.monotonic() - started >= 0.2


# --------------------------------------------------------------------------- hosted pages


def test_hosted_page_buttons_and_post_redirect(fake: FakeUPay, upay: ServedApp,
                                               receiver: Receiver) -> None:
    data = create_invoice(upay, notify_url=receiver.url, returnUrl="https://shop.example/r?x=1")
    page = requests.get(data["url"], timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    for element in ('id="pay"', 'id="decline"', 'id="cancel"', 'value="CAPTURED"',
                    'value="NOT CAPTURED"', 'value="CANCELED"', "12.500", "KWD", "Order 123",
                    'lang="en"'):
        assert element in page.text
    action = f'/invoice/{data["invoice_id"]}/complete'
    r = requests.post(upay.url + action, data={"result": "CAPTURED", "payment_type": "knet"},
                      allow_redirects=False, timeout=5)
    assert r.status_code == 302
    assert r.headers["Location"].startswith("https://shop.example/r?x=1?payment_id=")
    assert r.headers["Location"] == fake.invoices[data["invoice_id"]].redirect_url
    assert len(receiver.received) == 1
    again = requests.post(upay.url + action, data={"result": "CANCELED"}, allow_redirects=False,
                          timeout=5)
    assert again.status_code == 409
    done = requests.get(data["url"], timeout=5).text
    assert 'id="pay"' not in done and "CAPTURED" in done


def test_plain_charge_page_in_arabic(fake: FakeUPay, upay: ServedApp) -> None:
    r = post_charge(upay, invoice_body(paymentGateway=..., language="ar"))
    page = requests.get(r.json()["data"]["link"], timeout=5)
    assert page.status_code == 200
    assert 'lang="ar"' in page.text and 'dir="rtl"' in page.text and 'id="cancel"' in page.text
    assert requests.get(upay.url + "/pay?session_id=nope", timeout=5).status_code == 404


# --------------------------------------------------------------------------- control endpoints


def test_control_endpoints(fake: FakeUPay, upay: ServedApp) -> None:
    data = create_invoice(upay)
    reqs = requests.get(upay.url + "/_fake/requests", timeout=5).json()
    assert reqs[0]["method"] == "POST" and reqs[0]["path"] == "/api/v1/charge"
    assert reqs[0]["headers"]["Authorization"] == "Bearer ***"
    assert KEY not in json.dumps(reqs)
    assert reqs[0]["json"]["order"]["id"] == "ORD-2024-000123"

    invoices = requests.get(upay.url + "/_fake/invoices", timeout=5).json()
    assert invoices[0]["invoice_id"] == data["invoice_id"] and invoices[0]["amount"] == "12.5"
    assert invoices[0]["result"] == "PENDING"

    r = requests.post(upay.url + f"/_fake/invoices/{data['invoice_id']}/complete",
                      json={"result": "CANCELED"}, timeout=5)
    assert r.status_code == 200
    assert r.json()["redirect"].startswith("https://shop.example/upay/cancel?payment_id=")
    assert fake.invoices[data["invoice_id"]].state == "CANCELED"
    assert requests.post(upay.url + "/_fake/invoices/nope/complete", json={},
                         timeout=5).status_code == 404
    assert requests.get(upay.url + "/_fake/notifications", timeout=5).json()[0]["error"]

    r = requests.post(upay.url + "/_fake/faults",
                      json={"endpoint": "charge", "kind": "status", "count": 1, "status": 503},
                      timeout=5)
    assert r.status_code == 201
    assert post_charge(upay, invoice_body()).status_code == 503
    requests.post(upay.url + "/_fake/faults", timeout=5, json={
        "endpoint": "status", "kind": "status", "status": 502, "body": {"message": "Bad Gateway"}})
    r = get_status(upay, "?invoice_id=x")
    assert r.status_code == 502 and r.json() == {"message": "Bad Gateway"}
    assert requests.post(upay.url + "/_fake/faults", json={"endpoint": "charge", "kind": "nope"},
                         timeout=5).status_code == 400

    assert requests.post(upay.url + "/_fake/reset", timeout=5).json() == {"ok": True}
    assert fake.requests == [] and fake.invoices == {} and fake.notifications == []
    assert requests.get(upay.url + "/_fake/invoices", timeout=5).json() == []


def test_two_fakes_are_independent(serve: Callable[[FakeUPay], ServedApp]) -> None:
    a, b = FakeUPay(), FakeUPay(valid_keys=("k2",))
    sa = serve(a)
    with b.serve() as sb:   # serve() is the real thing: its own loopback server
        assert b.url == sb.url != sa.url
        create_invoice(sa)
        assert post_charge(sb, invoice_body()).status_code == 403
        assert len(a.invoices) == 1 and b.invoices == {}
        assert b.requests[0].path == "/api/v1/charge"
