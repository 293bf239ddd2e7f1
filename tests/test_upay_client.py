"""The UPay client against the fake UPay over real HTTP: every answer shape UPay gives."""

from __future__ import annotations

import socket
from decimal import Decimal

import pytest

from bridge.errors import (UPayAuthError, UPayConnectionError, UPayNotJSONError,
                           UPayRateLimitError, UPayRejectedError, UPayServerError,
                           UPayValidationError)
from bridge.upay import UPayClient, redirect_fields

from .conftest import UPAY_KEY


def invoice_request(order_id: str = "sabc-1-1", amount: str = "12.500") -> dict:
    return {
        "products": [{"name": "Arabic Coffee", "description": "COF-250",
                      "price": Decimal(amount), "quantity": 1}],
        "order": {"id": order_id, "reference": "1", "description": "Order #1",
                  "currency": "KWD", "amount": Decimal(amount)},
        "paymentGateway": {"src": "create-invoice"},
        "notificationType": "link", "language": "en", "isSaveCard": False,
        "reference": {"id": "1"},
        "customer": {"uniqueId": "guest-1", "name": "Fatima", "email": "f@example.com",
                     "mobile": "+96555512345"},
        "returnUrl": "http://127.0.0.1:9/upay/return/s/x",
        "cancelUrl": "http://127.0.0.1:9/upay/cancel/s/x",
        "notificationUrl": "http://127.0.0.1:9/upay/notify/s",
        "plugin": {"src": "woocommerce"},
    }


@pytest.fixture
def client(fake_upay) -> UPayClient:
    return UPayClient(UPAY_KEY, base_url=f"{fake_upay.url}/api/v1/", timeout=(2, 1.0))


def test_create_invoice_reads_url_not_boolean_link(client, fake_upay):
    invoice = client.create_invoice(invoice_request())
    assert invoice.url.startswith(fake_upay.url + "/invoice/")
    assert invoice.invoice_id and invoice.url.endswith(invoice.invoice_id)
    sent = fake_upay.charges()[-1]
    assert sent.headers["Authorization"] == f"Bearer {UPAY_KEY}"
    # amounts go out as exact JSON numbers, never through a float
    assert b'"amount": 12.500' in sent.body or b'"amount":12.500' in sent.body


def test_unknown_key_is_an_auth_error(fake_upay):
    bad = UPayClient("not-a-key", base_url=f"{fake_upay.url}/api/v1/")
    with pytest.raises(UPayAuthError) as info:
        bad.create_invoice(invoice_request())
    assert info.value.status == 403 and not info.value.transient
    assert "not-a-key" not in str(info.value) and "not-a-key" not in repr(bad)


def test_validation_error_carries_fields(client):
    with pytest.raises(UPayValidationError) as info:
        client.create_invoice(invoice_request(order_id="x" * 41))
    assert "order.id" in info.value.errors and not info.value.transient


def test_status_false_is_rejected(client, fake_upay):
    fake_upay.faults.add("charge", "rejected", message="Merchant is inactive")
    with pytest.raises(UPayRejectedError, match="Merchant is inactive"):
        client.create_invoice(invoice_request())


def test_non_json_says_whitelist(client, fake_upay):
    fake_upay.faults.add("charge", "non_json")
    with pytest.raises(UPayNotJSONError, match="whitelist"):
        client.create_invoice(invoice_request())


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient_with_unknown_outcome(client, fake_upay, status):
    fake_upay.faults.add("charge", "status", status=status)
    with pytest.raises(UPayServerError) as info:
        client.create_invoice(invoice_request())
    assert info.value.transient and info.value.outcome_unknown


def test_rate_limit_is_transient_and_nothing_was_done(client, fake_upay):
    fake_upay.faults.add("charge", "rate_limit")
    with pytest.raises(UPayRateLimitError) as info:
        client.create_invoice(invoice_request())
    assert info.value.transient and not info.value.outcome_unknown


def test_read_timeout_has_unknown_outcome(client, fake_upay):
    fake_upay.faults.add("charge", "timeout_after_create", seconds=2)
    with pytest.raises(UPayConnectionError) as info:
        client.create_invoice(invoice_request())
    assert info.value.transient and info.value.outcome_unknown


def test_refused_connection_was_never_sent():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    client = UPayClient(UPAY_KEY, base_url=f"http://127.0.0.1:{port}/api/v1/", timeout=(1, 1))
    with pytest.raises(UPayConnectionError) as info:
        client.create_invoice(invoice_request())
    assert info.value.transient and not info.value.outcome_unknown


def test_payment_status_by_invoice_id(client, fake_upay):
    invoice = client.create_invoice(invoice_request(amount="7.250"))
    fake_upay.complete_payment(invoice.invoice_id, "CAPTURED")
    tx = client.get_payment_status(invoice_id=invoice.invoice_id)
    assert tx["result"] == "CAPTURED"
    assert Decimal(tx["total_price"]) == Decimal("7.250")
    assert tx["merchant_requested_order_id"] == "sabc-1-1"
    assert client.get_payment_status(track_id=tx["track_id"])["payment_id"] == tx["payment_id"]


def test_errors_pickle_for_the_queue():
    import pickle

    for exc in (UPayValidationError("bad", 422, "{}", errors={"order.id": ["too long"]}),
                UPayRateLimitError("slow down", 429, "", retry_after=3.0),
                UPayConnectionError("gone", outcome_unknown=False)):
        clone = pickle.loads(pickle.dumps(exc))
        assert type(clone) is type(exc) and str(clone) == str(exc)
        assert clone.outcome_unknown == exc.outcome_unknown


@pytest.mark.parametrize("query,expected", [
    ("payment_id=100&result=CAPTURED&track_id=T1",
     {"payment_id": "100", "result": "CAPTURED", "track_id": "T1"}),
    # UPay's quirk: our own query's last value swallows UPay's first "?"
    ("lang=ar?payment_id=100&result=CAPTURED", {"lang": "ar", "payment_id": "100", "result": "CAPTURED"}),
    ("?payment_id=7&result=NOT+CAPTURED", {"payment_id": "7", "result": "NOT CAPTURED"}),
    ("payment_id=1&payment_id=2", {"payment_id": "1"}),
    ("", {}),
])
def test_redirect_fields_survive_the_double_question_mark(query, expected):
    assert redirect_fields(query) == expected
