"""The webhook endpoint over real HTTP: signatures, the ping, and bad input that changes nothing."""

from __future__ import annotations

import json
import logging

import pytest
import requests

from bridge import db
from bridge.stores.woocommerce import webhook_signature

from .conftest import UPAY_KEY, WEBHOOK_SECRET


def php_json(obj: object) -> bytes:
    # WordPress's wp_json_encode: ASCII only, no spaces, "/" escaped (woocommerce.md §1.3)
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode()


def order_payload(order_id: int = 1234, **overrides: object) -> dict:
    payload = {
        "id": order_id, "parent_id": 0, "status": "pending", "currency": "KWD", "total": "12.500",
        "total_tax": "0.000", "shipping_total": "1.500", "discount_total": "1.000",
        "customer_id": 0, "order_key": "wc_order_abc", "number": str(order_id),
        "payment_method": "upay", "created_via": "checkout",
        "billing": {"first_name": "فاطمة", "last_name": "Al-Sabah", "email": "fatima@example.com",
                    "phone": "+96555512345", "country": "KW"},
        "line_items": [{"id": 1, "name": "Arabic Coffee", "quantity": 2, "subtotal": "9.000",
                        "total": "8.000", "total_tax": "0.000", "sku": "COF", "price": 4},
                       {"id": 2, "name": "Dallah", "quantity": 1, "subtotal": "3.000",
                        "total": "3.000", "total_tax": "0.000", "sku": "DAL", "price": 3}],
        "shipping_lines": [{"id": 3, "method_title": "Flat rate", "total": "1.500",
                            "total_tax": "0.000"}],
        "fee_lines": [], "coupon_lines": [{"id": 4, "code": "welcome1", "discount": "1.000"}],
    }
    payload.update(overrides)
    return payload


def post(bridge, record, body: bytes, *, topic: str = "order.created", secret: str = WEBHOOK_SECRET,
         signature: str | None = None, extra: dict | None = None) -> requests.Response:
    headers = {
        "User-Agent": "WooCommerce/7.9.0 Hookshot (WordPress/6.1.9)",
        "Content-Type": "application/json",
        "X-WC-Webhook-Source": record.url + "/",
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": topic.split(".")[0],
        "X-WC-Webhook-Event": topic.split(".")[-1],
        "X-WC-Webhook-Signature": signature if signature is not None else webhook_signature(body, secret),
        "X-WC-Webhook-ID": "1",
        "X-WC-Webhook-Delivery-ID": "4d5f8c61922109b869b31c8a9348dfd0",
    }
    headers.update(extra or {})
    return requests.post(bridge.webhook_url(record), data=body, headers=headers, timeout=10)


@pytest.fixture
def quiet_bridge(bridge_factory):
    return bridge_factory(worker=False)


def assert_json_error(resp: requests.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json()["error"]["code"] == code
    assert resp.json()["error"]["message"]


def assert_nothing_recorded(bridge) -> None:
    assert bridge.count(db.orders) == 0
    assert bridge.count(db.deliveries) == 0


def test_signature_matches_woocommerce_test_vector():
    body = (b'{"id":1234,"number":"1234","status":"pending","currency":"KWD","total":"12.500",'
            b'"billing":{"first_name":"\\u0641\\u0627\\u0637\\u0645\\u0629","email":"fatima@example.com"},'
            b'"_links":{"self":[{"href":"https:\\/\\/shop.example\\/wp-json\\/wc\\/v3\\/orders\\/1234"}]}}')
    assert webhook_signature(body, "s3cr3t-for-tests") == "8Vo9ljz9KTXpWKTXCr1WCtBLoJga5Le/j8JYCo1m23o="


def test_activation_ping_gets_exactly_200(quiet_bridge, connect_store, fake_wc):
    record = connect_store(quiet_bridge)  # creating the webhook pings synchronously
    ping = fake_wc.pings[-1]
    assert ping.status_code == 200
    resp = requests.post(quiet_bridge.webhook_url(record), data="webhook_id=42",
                         headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=5)
    assert resp.status_code == 200
    assert_nothing_recorded(quiet_bridge)


def test_signed_order_is_recorded_and_answered_before_any_invoice(quiet_bridge, connect_store,
                                                                  fake_upay, fake_wc):
    record = connect_store(quiet_bridge, webhook=False)
    order = fake_wc.create_order([{"name": "Coffee", "price": "6.250", "quantity": 2}],
                                 billing={"first_name": "A", "email": "a@example.com"})
    resp = post(quiet_bridge, record, php_json(fake_wc.order(order["id"])))
    assert resp.status_code == 200 and resp.json()["order"] == "queued"
    row = quiet_bridge.order(order["id"])
    assert row.state == "received" and row.total == "12.500"
    assert fake_upay.charges() == []  # the webhook request never calls UPay
    quiet_bridge.start_worker()
    quiet_bridge.wait_state(order["id"], "done")
    assert len(fake_upay.charges()) == 1


@pytest.mark.parametrize("signature", ["", "bm9wZQ==", "not base64 at all"])
def test_bad_signature_is_401_and_records_nothing(quiet_bridge, connect_store, signature):
    record = connect_store(quiet_bridge, webhook=False)
    assert_json_error(post(quiet_bridge, record, php_json(order_payload()), signature=signature),
                      401, "bad_signature")
    assert_nothing_recorded(quiet_bridge)


def test_signature_with_another_secret_is_401(quiet_bridge, connect_store):
    record = connect_store(quiet_bridge, webhook=False)
    resp = post(quiet_bridge, record, php_json(order_payload()), secret="someone-else")
    assert_json_error(resp, 401, "bad_signature")
    assert_nothing_recorded(quiet_bridge)


def test_body_changed_after_signing_is_401(quiet_bridge, connect_store):
    record = connect_store(quiet_bridge, webhook=False)
    body = php_json(order_payload())
    sig = webhook_signature(body, WEBHOOK_SECRET)
    resp = post(quiet_bridge, record, body.replace(b"12.500", b"0.001"), signature=sig)
    assert_json_error(resp, 401, "bad_signature")


@pytest.mark.parametrize("body", [
    b'{"id": 12, "total": ',
    # A number past what Decimal holds: decimal.InvalidOperation, not a ValueError.
    b'{"id": 12, "status": "pending", "currency": "KWD", "total": 1e99999999999999999999999}',
], ids=["truncated", "number-out-of-range"])
def test_malformed_json_is_400(quiet_bridge, connect_store, body):
    record = connect_store(quiet_bridge, webhook=False)
    assert_json_error(post(quiet_bridge, record, body), 400, "malformed_body")
    assert_nothing_recorded(quiet_bridge)


def test_absurd_quantity_in_exponent_form_is_422_at_once(quiet_bridge, connect_store):
    # 1e100000000 decodes to a small Decimal; turning it into an int would take minutes.
    record = connect_store(quiet_bridge, webhook=False)
    payload = order_payload()
    body = php_json(payload).replace(b'"quantity":2', b'"quantity":1e100000000', 1)
    assert b"1e100000000" in body
    assert_json_error(post(quiet_bridge, record, body), 422, "invalid_payload")
    assert_nothing_recorded(quiet_bridge)


@pytest.mark.parametrize("payload", [
    {"code": "woocommerce_rest_cannot_view", "message": "Sorry, you cannot view this resource.",
     "data": {"status": 401}},
    {"hello": "world"},
    [1, 2, 3],
    "a string",
    order_payload(id="12"),
    order_payload(total="twelve"),
    order_payload(currency=None),
])
def test_non_order_payload_is_422(quiet_bridge, connect_store, payload):
    record = connect_store(quiet_bridge, webhook=False)
    assert_json_error(post(quiet_bridge, record, php_json(payload)), 422, "invalid_payload")
    assert_nothing_recorded(quiet_bridge)


def test_ten_megabyte_body_is_413(quiet_bridge, connect_store):
    record = connect_store(quiet_bridge, webhook=False)
    body = b'{"pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    assert_json_error(post(quiet_bridge, record, body), 413, "body_too_large")
    assert_nothing_recorded(quiet_bridge)


def test_unknown_store_is_404(quiet_bridge, connect_store):
    record = connect_store(quiet_bridge, webhook=False)
    body = php_json(order_payload())
    resp = requests.post(f"{quiet_bridge.url}/webhooks/woocommerce/snosuchstore", data=body,
                         headers={"X-WC-Webhook-Topic": "order.created",
                                  "X-WC-Webhook-Signature": webhook_signature(body, WEBHOOK_SECRET)},
                         timeout=5)
    assert_json_error(resp, 404, "unknown_store")
    resp = requests.post(f"{quiet_bridge.url}/webhooks/saleor/{record.id}", data=body, timeout=5)
    assert_json_error(resp, 404, "unknown_store")
    assert_nothing_recorded(quiet_bridge)


def test_other_topics_are_ignored_with_200(quiet_bridge, connect_store, fake_upay):
    record = connect_store(quiet_bridge, webhook=False)
    resp = post(quiet_bridge, record, php_json(order_payload()), topic="order.updated")
    assert resp.status_code == 200 and resp.json()["ignored"] == "order.updated"
    assert quiet_bridge.count(db.orders) == 0
    assert fake_upay.charges() == []


def test_wrong_method_is_a_json_405(quiet_bridge, connect_store):
    record = connect_store(quiet_bridge, webhook=False)
    assert_json_error(requests.get(quiet_bridge.webhook_url(record), timeout=5), 405,
                      "method_not_allowed")


def test_logs_never_contain_secrets(bridge, connect_store, fake_wc, caplog):
    caplog.set_level(logging.DEBUG)
    record = connect_store(bridge)
    post(bridge, record, php_json(order_payload()), secret="wrong")
    fake_wc.add_product(1, "Coffee", "2.000")
    order = fake_wc.create_order([{"product_id": 1, "quantity": 1}],
                                 billing={"email": "a@example.com", "first_name": "A"})
    fake_wc.deliver_queued()
    bridge.wait_state(order["id"], "done")
    text = caplog.text
    for secret in (WEBHOOK_SECRET, UPAY_KEY, record.secrets["consumer_secret"],
                   record.secrets["consumer_key"]):
        assert secret not in text
