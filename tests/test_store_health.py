"""Webhook upkeep and catch-up: WooCommerce never retries a delivery and disables a webhook after
seven failures in a row (woocommerce.md §1.6), so the bridge re-activates it and reads the orders
it missed. Real HTTP on loopback: the bridge with its worker, fake UPay, fake WooCommerce."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from bridge.fakes.woocommerce import FakeWooCommerce
from bridge.registry import StoreSettings
from bridge.store_health import StoreHealth
from bridge.stores import adapter_for

from .conftest import UPAY_KEY, WEBHOOK_SECRET, wait_for

BILLING = {"first_name": "Fatima", "last_name": "Al-Sabah", "email": "fatima@example.com",
           "phone": "555 123 45", "country": "KW"}


@pytest.fixture
def shop(fake_wc):
    fake_wc.add_product(101, "Arabic Coffee 250g", "4.500", sku="COF-250")
    return fake_wc


def new_order(shop, quantity: int = 1) -> dict:
    """An order whose order.created is queued at the store and never delivered."""
    return shop.create_order([{"product_id": 101, "quantity": quantity}], billing=BILLING)


def charges_for(fake_upay, order_id: int) -> list:
    return [c for c in fake_upay.charges() if c.json["order"]["reference"] == str(order_id)]


def fresh_orders_too(bridge):
    """The bridge's StoreHealth, catching up orders however young (by default an order gets two
    minutes for its webhook to arrive first)."""
    health = bridge.runtime.health
    health.min_age_seconds = 0
    return health


def only_hook(shop) -> dict:
    [hook] = shop.webhooks.values()
    return hook


def test_disabled_webhook_is_reactivated_and_reason_recorded(bridge, connect_store, shop):
    record = connect_store(bridge)
    health = fresh_orders_too(bridge)
    hook = only_hook(shop)
    hook["status"] = "disabled"

    result = health.check(record)

    assert result["reactivated"] == [hook["id"]]
    assert shop.webhooks[hook["id"]]["status"] == "active"
    row = health.status(record.id)
    assert row["webhook_ids"] == [hook["id"]] and row["reactivations"] == 1
    assert row["webhook_status"] == "reactivated" and row["last_check_at"] is not None
    assert row["last_failure"] == (f"webhook {hook['id']} was disabled by WooCommerce after "
                                   "repeated delivery failures; re-activated")
    assert row["last_failure_at"] is not None

    # A healthy check changes nothing but the time and the status; the last failure stays.
    again = health.check(record)
    assert again["reactivated"] == [] and again["failure"] == ""
    row = health.status(record.id)
    assert row["reactivations"] == 1 and row["webhook_status"] == "active"
    assert "disabled by WooCommerce" in row["last_failure"]

    # And the re-activated webhook delivers again.
    order = new_order(shop)
    shop.deliver_queued()
    bridge.wait_state(order["id"], "done")
    assert health.last_delivery(record.id) is not None


def test_seven_failed_deliveries_then_recovery(bridge, connect_store, shop, fake_upay):
    """The real way in: the bridge answers 401 (the store signs with another secret) seven
    times, WooCommerce disables the webhook; the check re-activates it, ensure_webhook puts the
    right secret back, and catch-up invoices the seven orders whose deliveries failed."""
    record = connect_store(bridge)
    hook = only_hook(shop)
    hook["secret"] = "a-secret-the-bridge-does-not-know"
    orders = [new_order(shop) for _ in range(7)]
    sent = shop.deliver_queued()
    assert [d.status for d in sent] == [401] * 7
    assert hook["status"] == "disabled" and bridge.orders() == []

    health = fresh_orders_too(bridge)
    assert health.check(record)["reactivated"] == [hook["id"]]
    store = adapter_for(record)
    store.ensure_webhook("order.created", bridge.webhook_url(record), WEBHOOK_SECRET, "UPay bridge")
    assert hook["secret"] == WEBHOOK_SECRET and hook["status"] == "active"
    assert len(shop.webhooks) == 1

    assert health.catch_up(record) == 7
    for order in orders:
        bridge.wait_state(order["id"], "done")
        assert len(charges_for(fake_upay, order["id"])) == 1
        assert len(shop.notes(order["id"])) == 1


def test_lost_delivery_is_caught_up_once(bridge, connect_store, shop, fake_upay):
    record = connect_store(bridge)
    health = fresh_orders_too(bridge)
    order = new_order(shop, quantity=2)  # its order.created stays queued at the store: "lost"

    assert health.catch_up(record) == 1
    row = bridge.wait_state(order["id"], "done")
    [charge] = charges_for(fake_upay, order["id"])
    assert charge.json["order"]["id"] == row.upay_order_id
    [note] = shop.notes(order["id"])
    assert row.invoice_url in note["note"]
    meta = {m["key"]: m["value"] for m in shop.order(order["id"])["meta_data"]}
    assert meta["upay_invoice_url"] == row.invoice_url
    first_mark = health.status(record.id)["last_catch_up_at"]
    assert first_mark is not None
    assert health.last_delivery(record.id) is None  # catch-up is not a webhook delivery

    # Again (the order is still pending, inside the overlap): nothing new.
    assert health.catch_up(record) == 0
    assert health.status(record.id)["last_catch_up_at"] >= first_mark
    # The delivery finally arrives: a duplicate, still one invoice and one note.
    shop.deliver_queued()
    wait_for(lambda: health.last_delivery(record.id))
    assert len(charges_for(fake_upay, order["id"])) == 1
    assert len(fake_upay.charges()) == 1
    assert len(shop.notes(order["id"])) == 1
    assert len(bridge.orders()) == 1


def test_catch_up_pages_and_skips_what_it_must(bridge, connect_store, shop, fake_upay, caplog):
    record = connect_store(bridge, statuses=("pending",))
    health = fresh_orders_too(bridge)
    bridge.stop_worker()  # only the intake matters here
    pending = [new_order(shop) for _ in range(53)]  # two pages of 50
    shop.create_order([{"product_id": 101, "quantity": 1}], billing=BILLING,
                      status="on-hold")  # the store invoices pending orders only
    paid = new_order(shop)
    shop.set_order_status(paid["id"], "processing")  # not awaiting payment
    invoiced = new_order(shop)  # invoiced by an earlier bridge: has the meta
    shop.orders[invoiced["id"]]["meta_data"].append({"id": 999, "key": "upay_invoice_id",
                                                     "value": "INV-OLD"})
    broken = new_order(shop)
    shop.orders[broken["id"]]["currency"] = ""  # a payload the parser refuses
    old = new_order(shop)  # created long before the store was connected, edited now
    shop.orders[old["id"]]["date_created"] = shop.orders[old["id"]]["date_created"].replace(
        year=2020)

    with caplog.at_level("WARNING", logger="bridge.store_health"):
        assert health.catch_up(record) == 53
    assert f"catch-up skipped order {broken['id']}" in caplog.text
    ids = {int(r.external_id) for r in bridge.orders()}
    assert ids == {o["id"] for o in pending}
    assert all(r.state == "received" for r in bridge.orders())


def test_catch_up_failure_keeps_the_mark(bridge, connect_store, shop):
    record = connect_store(bridge)
    health = fresh_orders_too(bridge)
    assert health.catch_up(record) == 0
    mark = health.status(record.id)["last_catch_up_at"]
    shop.faults.add("status", count=1, path_contains="/orders", status=500)
    assert health.catch_up(record) == 0
    row = health.status(record.id)
    assert row["last_catch_up_at"] == mark
    assert row["last_failure"].startswith("catch-up failed: the store answered HTTP 500")


def test_ensure_webhook_twice_is_one_webhook_and_remove_deletes_it(bridge, connect_store, shop):
    record = connect_store(bridge, webhook=False)
    store = adapter_for(record)
    url = bridge.webhook_url(record)
    # Someone's other webhook on the store is left alone.
    shop.add_webhook("order.updated", "https://elsewhere.example/hook", "other-secret")

    first = store.ensure_webhook("order.created", url, WEBHOOK_SECRET, "UPay bridge")
    assert first["status"] == "active" and first["delivery_url"] == url
    assert [p.status for p in shop.pings if p.url == url] == [200]  # pinged inside the POST
    shop.webhooks[first["id"]]["status"] = "disabled"
    second = store.ensure_webhook("order.created", url, WEBHOOK_SECRET, "UPay bridge")
    assert second["id"] == first["id"] and second["status"] == "active"
    assert [h["id"] for h in store.webhooks_for(url)] == [first["id"]]
    assert len(shop.webhooks) == 2
    assert shop.webhooks[first["id"]]["secret"] == WEBHOOK_SECRET

    # The webhook works: an order reaches the bridge through it.
    order = new_order(shop)
    shop.deliver_queued()
    bridge.wait_state(order["id"], "done")

    assert store.remove_webhooks(url) == 1
    assert store.webhooks_for(url) == [] and len(shop.webhooks) == 1
    assert store.remove_webhooks(url) == 0

    result = bridge.runtime.health.check(record)
    assert result["failure"] == "no webhook points at the bridge"
    row = bridge.runtime.health.status(record.id)
    assert row["last_failure"] == "no webhook points at the bridge"
    assert row["webhook_status"] == "missing" and row["webhook_ids"] == []


def test_store_down_is_recorded_and_run_carries_on(bridge, connect_store, shop, fake_upay):
    down = connect_store(bridge)  # on the fake_wc store, which goes into maintenance
    other = FakeWooCommerce(decimals=3, currency="KWD")
    served = other.serve()
    try:
        other.add_product(101, "Arabic Coffee 250g", "4.500", sku="COF-250")
        ck, cs = other.add_api_key("read_write")
        up = bridge.runtime.registry.add(
            "woocommerce", other.base_url,
            {"consumer_key": ck, "consumer_secret": cs, "webhook_secret": WEBHOOK_SECRET,
             "upay_api_key": UPAY_KEY}, name="Second shop", upay_sandbox=True,
            settings=StoreSettings())
        hook = other.add_webhook("order.created", bridge.webhook_url(up), WEBHOOK_SECRET)
        other.webhooks[hook["id"]]["status"] = "disabled"
        lost = new_order(other)
        shop.set_down(True)

        assert fresh_orders_too(bridge).run() == 1

        bad = bridge.runtime.health.status(down.id)
        assert bad["webhook_status"] == "unknown" and bad["last_check_at"] is not None
        assert bad["last_failure"].startswith("catch-up failed: the store answered HTTP 503")
        assert bad["last_catch_up_at"] is None
        text = json.dumps(bad)
        for secret in (*down.secrets.values(), *up.secrets.values()):
            assert secret not in text
        good = bridge.runtime.health.status(up.id)
        assert good["reactivations"] == 1 and other.webhooks[hook["id"]]["status"] == "active"
        assert good["last_catch_up_at"] is not None
        bridge.wait_state(lost["id"], "done")
        assert len(charges_for(fake_upay, lost["id"])) == 1

        # The store is back: the next run checks it and clears nothing but records success.
        shop.set_down(False)
        fresh_orders_too(bridge).run()
        assert bridge.runtime.health.status(down.id)["webhook_status"] == "active"
        assert bridge.runtime.health.status(down.id)["last_catch_up_at"] is not None
    finally:
        served.shutdown()


def test_check_failure_text_has_no_secret(bridge, connect_store, shop):
    record = connect_store(bridge)
    shop.faults.add("status", count=1, path_contains="/webhooks", status=503)
    result = bridge.runtime.health.check(record)
    assert result["failure"].startswith("could not check the webhooks: the store answered HTTP 503")
    for secret in record.secrets.values():
        assert secret not in result["failure"]


def test_store_health_is_a_periodic_task(bridge):
    tasks = {t.name: t for t in bridge.runtime.jobs.huey._registry.periodic_tasks}
    assert {"sweep", "reconcile", "store_health"} <= set(tasks)
    task = tasks["store_health"]
    assert task.validate_datetime(datetime(2026, 11, 23, 19, 5))
    assert not task.validate_datetime(datetime(2026, 11, 23, 19, 7))


def test_young_orders_are_left_to_their_webhook_then_caught_up(bridge, connect_store, shop):
    record = connect_store(bridge)
    rt = bridge.runtime
    order = new_order(shop)
    now = StoreHealth(rt.engine, rt.registry, rt.pipeline, rt.settings)
    assert now.catch_up(record) == 0 and bridge.orders() == []
    assert now.status(record.id)["last_catch_up_at"] is not None

    # Next run, three minutes later: still inside the window thanks to the overlap.
    later = StoreHealth(rt.engine, rt.registry, rt.pipeline, rt.settings,
                        clock=lambda: time.time() + 180)
    assert later.catch_up(record) == 1
    bridge.wait_state(order["id"], "done")


def test_periodic_entry_lets_a_new_process_settle(bridge, connect_store, shop):
    record = connect_store(bridge)
    health = bridge.runtime.health
    shop.webhooks[only_hook(shop)["id"]]["status"] = "disabled"
    assert health.tick() == 0 and health.status(record.id) is None
    health.settle_seconds = 0
    health.tick()
    assert health.status(record.id)["reactivations"] == 1
