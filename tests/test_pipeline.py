"""Order -> invoice -> note, end to end: the bridge with its worker against fake UPay and a fake
WooCommerce store, all over real HTTP on loopback."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import requests

from bridge import db

from .conftest import wait_for
from .test_webhooks import php_json, post

# Every test runs on the embedded default and on PostgreSQL + Redis with a worker process.
BOTH_LAYOUTS = True


@pytest.fixture
def shop(fake_wc):
    fake_wc.add_product(101, "Arabic Coffee 250g", "4.500", sku="COF-250")
    fake_wc.add_product(120, "Dallah Pot &ndash; Gold", "3.000", sku="DAL-G")
    fake_wc.add_product(130, "Cardamom", "3.335", sku="CAR")
    return fake_wc


BILLING = {"first_name": "Fatima", "last_name": "Al-Sabah", "email": "fatima@example.com",
           "phone": "555 123 45", "country": "KW"}


def place(shop, **kwargs):
    kwargs.setdefault("billing", BILLING)
    order = shop.create_order(kwargs.pop("items", [{"product_id": 101, "quantity": 2},
                                                   {"product_id": 120, "quantity": 1}]), **kwargs)
    shop.deliver_queued()
    return order


def charge_for(fake_upay, order_id: int) -> list:
    return [c for c in fake_upay.charges() if c.json["order"]["reference"] == str(order_id)]


def products_total(request_json: dict) -> Decimal:
    return sum((Decimal(str(p["price"])) * p["quantity"] for p in request_json["products"]),
               Decimal("0"))


def test_order_gets_invoice_note_and_meta(bridge, connect_store, shop, fake_upay):
    connect_store(bridge)
    order = place(shop, shipping_lines=[{"method_title": "Flat rate", "method_id": "flat_rate",
                                         "total": "1.500"}],
                  coupon_lines=[{"code": "welcome1", "discount": "1.000"}],
                  fee_lines=[{"name": "Gift wrap", "total": "0.250"}])
    row = bridge.wait_state(order["id"], "done")

    [charge] = charge_for(fake_upay, order["id"])
    body = charge.json
    assert body["paymentGateway"] == {"src": "create-invoice"}
    assert body["plugin"] == {"src": "woocommerce"}
    assert body["notificationType"] == "link" and body["language"] == "en"
    assert Decimal(str(body["order"]["amount"])) == Decimal(order["total"]) == Decimal("12.750")
    assert products_total(body) == Decimal("12.750")  # exactly, in fils
    assert body["order"]["currency"] == "KWD"
    assert body["customer"]["email"] == "fatima@example.com"
    assert body["customer"]["mobile"] == "+96555512345"
    for key in ("returnUrl", "cancelUrl", "notificationUrl"):
        assert "?" not in body[key] and body[key].startswith(bridge.url)
    assert body["order"]["id"] == row.upay_order_id and len(row.upay_order_id) <= 40

    [note] = shop.notes(order["id"])
    assert row.invoice_url in note["note"] and note["customer_note"] is True
    assert [e["to"] for e in shop.emails] == ["fatima@example.com"]
    meta = {m["key"]: m["value"] for m in shop.order(order["id"])["meta_data"]}
    assert meta["upay_invoice_id"] == row.invoice_id
    assert meta["upay_invoice_url"] == row.invoice_url
    assert meta["upay_order_id"] == row.upay_order_id


def test_private_note_when_the_store_says_so(bridge, connect_store, shop):
    connect_store(bridge, customer_note=False)
    order = place(shop)
    bridge.wait_state(order["id"], "done")
    [note] = shop.notes(order["id"])
    assert note["customer_note"] is False and shop.emails == []


def test_arabic_store_gets_arabic_note(bridge, connect_store, shop, fake_upay):
    from bridge.models import Language
    connect_store(bridge, language=Language.AR)
    order = place(shop)
    bridge.wait_state(order["id"], "done")
    assert charge_for(fake_upay, order["id"])[0].json["language"] == "ar"
    assert any("\u0600" <= ch <= "\u06ff" for ch in shop.notes(order["id"])[0]["note"])


def test_duplicate_and_concurrent_deliveries_make_one_invoice_and_one_note(
        bridge, connect_store, shop, fake_upay):
    connect_store(bridge)
    order = shop.create_order([{"product_id": 101, "quantity": 1}], billing=BILLING)
    shop.deliver_queued()
    webhook_id = shop.webhooks and next(iter(shop.webhooks.values()))["id"] \
        if isinstance(shop.webhooks, dict) else shop.webhooks[0]["id"]
    shop.deliver(webhook_id, order["id"], times=10, concurrently=True)
    shop.deliver(webhook_id, order["id"], times=2)
    bridge.wait_state(order["id"], "done")
    wait_for(lambda: bridge.runtime.jobs.depth() == 0)
    assert len(charge_for(fake_upay, order["id"])) == 1
    assert len(shop.notes(order["id"])) == 1
    assert bridge.count(db.orders) == 1
    assert bridge.count(db.deliveries) == 13


def test_burst_of_orders_is_invoiced_concurrently(bridge, connect_store, shop, fake_upay):
    connect_store(bridge)
    fake_upay.latency = 0.3
    orders = [shop.create_order([{"product_id": 101, "quantity": 1}], billing=BILLING)
              for _ in range(12)]
    shop.deliver_queued()
    for order in orders:
        bridge.wait_state(order["id"], "done", timeout=30)
    arrivals = sorted(c.at for c in fake_upay.charges())
    # with 0.3 s per call, two arrivals closer than that were in flight together
    overlapping = sum(1 for a, b in zip(arrivals, arrivals[1:]) if b - a < 0.3)
    assert len(arrivals) == 12 and overlapping >= 6


@pytest.mark.parametrize("settings,order_kwargs,reason", [
    ({}, {"status": "processing", "payment_method": "cod"}, "status"),
    ({"payment_methods": ("upay",)}, {"payment_method": "bacs"}, "payment method"),
    ({"statuses": ("pending",)}, {"status": "on-hold"}, "status"),
])
def test_orders_the_store_does_not_invoice_are_skipped(bridge, connect_store, shop, fake_upay,
                                                       settings, order_kwargs, reason):
    connect_store(bridge, **settings)
    order = place(shop, **order_kwargs)
    row = wait_for(lambda: bridge.order(order["id"]))
    assert row.state == "skipped" and reason in row.reason
    assert fake_upay.charges() == [] and shop.notes(order["id"]) == []


def test_on_hold_orders_are_invoiced_by_default(bridge, connect_store, shop):
    connect_store(bridge)
    order = place(shop, status="on-hold", payment_method="bacs")
    bridge.wait_state(order["id"], "done")


@pytest.mark.parametrize("settings,order_kwargs,words", [
    ({}, {"items": [{"name": "Free sample", "price": "0.000", "quantity": 1}]}, "zero"),
    ({"notification_type": "email"}, {"billing": {"first_name": "No", "email": ""}}, "e-mail"),
    ({"notification_type": "sms"}, {"billing": {"first_name": "No", "email": "a@b.co"}}, "mobile"),
])
def test_orders_that_cannot_be_invoiced_get_a_private_note(bridge, connect_store, shop, fake_upay,
                                                           settings, order_kwargs, words):
    from bridge.models import NotificationType
    if "notification_type" in settings:
        settings = {**settings, "notification_type": NotificationType(settings["notification_type"])}
    connect_store(bridge, **settings)
    order = place(shop, **order_kwargs)
    row = bridge.wait_state(order["id"], "not_invoiceable")
    wait_for(lambda: bridge.order(order["id"]).note_state == "written")
    [note] = shop.notes(order["id"])
    assert note["customer_note"] is False and words in note["note"].lower()
    assert fake_upay.charges() == [] and row.reason


def test_unsupported_currency_gets_a_note(bridge, connect_store, shop, fake_upay):
    record = connect_store(bridge)
    # a store-side order in a currency UPay does not take (delivered as WooCommerce would sign it)
    order = shop.create_order([{"product_id": 101, "quantity": 1}], billing=BILLING)
    payload = shop.order(order["id"])
    payload["currency"] = "GBP"
    assert post(bridge, record, php_json(payload)).status_code == 200
    bridge.wait_state(order["id"], "not_invoiceable")
    wait_for(lambda: shop.notes(order["id"]))
    assert "GBP" in shop.notes(order["id"])[0]["note"] or "currency" in shop.notes(order["id"])[0]["note"]
    assert fake_upay.charges() == []


@pytest.mark.parametrize("fault,words", [
    (dict(kind="rejected", message="Merchant account is inactive"), "inactive"),
    (dict(kind="non_json"), "whitelist"),
    (dict(kind="status", status=422, content_type="application/json",
          body=json.dumps({"message": "The customer.email must be a valid email address.",
                           "errors": {"customer.email": ["must be a valid email address."]}})),
     "customer.email"),
])
def test_upay_refusals_are_reported_on_the_order(bridge, connect_store, shop, fake_upay, fault,
                                                 words):
    connect_store(bridge)
    fake_upay.faults.add("charge", **fault)
    order = place(shop)
    row = bridge.wait_state(order["id"], "failed")
    wait_for(lambda: shop.notes(order["id"]))
    [note] = shop.notes(order["id"])
    assert words in note["note"] and note["customer_note"] is False
    assert words in row.reason
    assert [a.state for a in bridge.attempts(row.id)] == ["failed"]


def test_a_wrong_upay_key_is_reported(bridge, connect_store, shop, fake_upay):
    record = connect_store(bridge)
    bridge.runtime.registry.update(record.id, secrets={"upay_api_key": "revoked-key"})
    order = place(shop)
    row = bridge.wait_state(order["id"], "failed")
    assert "API key" in row.reason
    wait_for(lambda: shop.notes(order["id"]))
    assert "revoked-key" not in shop.notes(order["id"])[0]["note"]


def test_upay_5xx_is_retried_with_fresh_order_ids(bridge, connect_store, shop, fake_upay):
    connect_store(bridge)
    fake_upay.faults.add("charge", "status", status=503, count=2)
    order = place(shop)
    row = bridge.wait_state(order["id"], "done")
    states = [a.state for a in bridge.attempts(row.id)]
    assert states == ["unknown", "unknown", "created"]
    ids = [c.json["order"]["id"] for c in charge_for(fake_upay, order["id"])]
    assert len(ids) == 3 and len(set(ids)) == 3  # an unknown outcome is never re-sent as is
    assert len(shop.notes(order["id"])) == 1


def test_timeout_after_upay_created_the_invoice_is_superseded_not_lost(bridge, connect_store, shop,
                                                                         fake_upay):
    connect_store(bridge)
    fake_upay.faults.add("charge", "timeout_after_create", seconds=3)  # bridge reads for 2 s
    order = place(shop)
    row = bridge.wait_state(order["id"], "done")
    first, second = bridge.attempts(row.id)
    assert first.state == "unknown" and second.state == "created"
    # UPay did create the first invoice; its order id is remembered on the superseded attempt,
    # so a payment on it still finds this order
    made = [inv for inv in fake_upay.invoices.values()
            if inv.merchant_order_id in (first.upay_order_id, second.upay_order_id)]
    assert sorted(inv.merchant_order_id for inv in made) == sorted(
        [first.upay_order_id, second.upay_order_id])
    assert len(shop.notes(order["id"])) == 1 and row.upay_order_id == second.upay_order_id


def test_rate_limited_request_is_sent_again_with_the_same_order_id(bridge, connect_store, shop,
                                                                   fake_upay):
    connect_store(bridge)
    fake_upay.faults.add("charge", "rate_limit", retry_after=1)  # Retry-After is honoured
    order = place(shop)
    row = bridge.wait_state(order["id"], "done")
    ids = [c.json["order"]["id"] for c in charge_for(fake_upay, order["id"])]
    assert len(ids) == 2 and ids[0] == ids[1]
    assert [a.state for a in bridge.attempts(row.id)] == ["created"]


def test_upay_down_too_long_parks_the_order_then_retry_finishes_it(bridge_factory, connect_store,
                                                                    shop, fake_upay):
    bridge = bridge_factory(max_retries=2)
    connect_store(bridge)
    fake_upay.faults.add("charge", "status", status=502, count=3)
    order = place(shop)
    row = bridge.wait_state(order["id"], "parked")
    assert "gave up" in row.reason
    bridge.runtime.pipeline.retry(row.id)
    bridge.wait_state(order["id"], "done")
    assert len(shop.notes(order["id"])) == 1


def test_store_down_then_back_gets_the_note(bridge, connect_store, shop, fake_upay):
    connect_store(bridge)
    order = shop.create_order([{"product_id": 101, "quantity": 1}], billing=BILLING)
    shop.set_down(True)
    shop.deliver_queued()  # the webhook reaches the bridge; the store's REST API is down
    wait_for(lambda: (r := bridge.order(order["id"])) and r.retries >= 2 and r)
    assert bridge.order(order["id"]).state == "invoiced"
    shop.set_down(False)
    bridge.wait_state(order["id"], "done")
    assert len(shop.notes(order["id"])) == 1
    assert len(charge_for(fake_upay, order["id"])) == 1


def test_note_written_but_answer_lost_is_not_written_twice(bridge, connect_store, shop):
    connect_store(bridge)
    shop.faults.add("timeout", path_contains="/notes", method="POST", seconds=3)
    order = place(shop)
    bridge.wait_state(order["id"], "done")
    assert len(shop.notes(order["id"])) == 1
    assert len(shop.emails) == 1  # the customer got the link once


def test_customer_return_with_double_question_mark(bridge, connect_store, shop, fake_upay):
    record = connect_store(bridge)
    order = place(shop)
    row = bridge.wait_state(order["id"], "done")
    redirect = fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    resp = requests.get(redirect, timeout=5)
    assert resp.status_code == 200 and "confirming" in resp.text
    # UPay's naive "url?params" on a URL that already has a query (upay-api.md §6.2)
    quirky = redirect.replace("?", "?lang=en?", 1)
    assert requests.get(quirky, timeout=5).status_code == 200
    with bridge.runtime.engine.connect() as conn:
        rows = conn.execute(db.notifications.select().order_by(db.notifications.c.id)).all()
    kinds = [r.kind for r in rows]
    assert kinds.count("notify") == 1 and kinds.count("return") == 2
    for r in rows:
        fields = json.loads(r.fields)
        assert fields["result"] == "CAPTURED" and fields["requested_order_id"] == row.upay_order_id
        assert r.store_id == record.id


def test_each_store_uses_its_own_upay_key(bridge, connect_store, shop, fake_upay, fake_wc):
    first = connect_store(bridge)
    second = connect_store(bridge)
    fake_upay.add_key("second-store-key-77")
    bridge.runtime.registry.update(second.id, secrets={"upay_api_key": "second-store-key-77"})
    order = place(shop)  # both stores' webhooks receive it: one order row per store
    for record in (first, second):
        wait_for(lambda: (r := _row(bridge, record.id, order["id"])) and r.state == "done")
    keys = sorted(c.headers["Authorization"] for c in charge_for(fake_upay, order["id"]))
    assert keys == sorted([f"Bearer {first.secrets['upay_api_key']}", "Bearer second-store-key-77"])


def _row(bridge, store_id, external_id):
    with bridge.runtime.engine.connect() as conn:
        return conn.execute(db.orders.select().where(db.orders.c.store_id == store_id,
                                                     db.orders.c.external_id == str(external_id))).first()


def test_long_texts_are_cut_to_upay_limits_and_accepted(bridge, connect_store, shop, fake_upay):
    connect_store(bridge)
    long_name = "قهوة عربية فاخرة بالهيل والزعفران " * 12  # ~400 characters with spaces
    order = place(shop, items=[{"name": long_name, "price": "2.500", "quantity": 3}],
                  billing={**BILLING, "first_name": "عبدالرحمن" * 5, "last_name": "الصباح" * 5})
    bridge.wait_state(order["id"], "done")
    [charge] = charge_for(fake_upay, order["id"])
    body = charge.json
    assert len(body["products"][0]["name"]) <= 255 and len(body["customer"]["name"]) <= 50
    assert len(body["order"]["description"]) <= 500
    assert Decimal(str(body["order"]["amount"])) == Decimal("7.500") == products_total(body)


def test_store_rejecting_the_keys_is_retried_then_parked(bridge_factory, connect_store, shop):
    bridge = bridge_factory(max_retries=2)
    record = connect_store(bridge)
    bridge.runtime.registry.update(record.id, secrets={"consumer_secret": "cs_revoked"})
    order = place(shop)
    row = bridge.wait_state(order["id"], "parked")
    assert "refused the API keys" in row.reason and row.invoice_url  # the invoice is kept
    assert "cs_revoked" not in row.reason


def test_a_lost_job_is_found_by_the_sweep(bridge, connect_store, shop):
    connect_store(bridge)
    real_schedule = bridge.runtime.pipeline.schedule
    bridge.runtime.pipeline.schedule = lambda pk, delay: None  # the queue loses the job
    order = place(shop)
    row = wait_for(lambda: bridge.order(order["id"]))
    assert row.state == "received"
    bridge.runtime.pipeline.schedule = real_schedule
    assert bridge.runtime.pipeline.sweep() == 1
    bridge.wait_state(order["id"], "done")


def test_worker_dying_during_the_upay_call_is_an_unknown_outcome(bridge_factory, connect_store,
                                                                  shop, fake_upay):
    bridge = bridge_factory(worker=False, lease_seconds=0.5)
    connect_store(bridge)
    pipeline = bridge.runtime.pipeline
    order = place(shop)
    row = wait_for(lambda: bridge.order(order["id"]))
    # a worker claims the order, commits its attempt as "sending", sends, and dies
    claimed = pipeline._claim(row.id, "dead-worker")
    attempt = pipeline._start_attempt(row.id, claimed.store_id, claimed.external_id)
    assert attempt.state == "sending" and bridge.order(order["id"]).lease_owner == "dead-worker"
    wait_for(lambda: pipeline.sweep() == 1)  # once the lease has run out
    bridge.start_worker()
    row = bridge.wait_state(order["id"], "done")
    assert [(a.number, a.state) for a in bridge.attempts(row.id)] == [(1, "unknown"), (2, "created")]
    assert row.upay_order_id == bridge.attempts(row.id)[1].upay_order_id
    assert len(shop.notes(order["id"])) == 1


def test_backoff_grows_exponentially_with_jitter(bridge_factory):
    bridge = bridge_factory(worker=False, retry_base_seconds=5, retry_max_seconds=300)
    backoff = bridge.runtime.pipeline._backoff
    for retries, ceiling in [(1, 5), (2, 10), (3, 20), (5, 80), (7, 300), (12, 300)]:
        delays = [backoff(retries) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 150  # jittered, so a burst does not come back together
