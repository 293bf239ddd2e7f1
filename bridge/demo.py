"""``upay-bridge demo``: the whole flow on one machine, with a simulated store and UPay.

Everything is real except the two outside systems: the bridge's web app, its queue and workers,
its database and the HTTP between them. The simulated store and UPay are the same fakes the test
suite runs against (``bridge.fakes``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from typing import Any

import click

from .app import create_app
from .config import load_settings
from .crypto import generate_key
from .fakes.lazy import AppSlot
from .fakes.server import serve_wsgi
from .fakes.upay import FakeUPay
from .fakes.woocommerce import FakeWooCommerce
from .registry import StoreSettings
from .runtime import bootstrap


def _say(step: str, text: str = "") -> None:
    click.echo(click.style(step, bold=True) + (f" {text}" if text else ""))


def _wait(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return None


def run_demo(keep_running: bool = False) -> int:
    data_dir = tempfile.mkdtemp(prefix="upay-bridge-demo-")
    upay = FakeUPay(valid_keys=("jtest123",))
    store = FakeWooCommerce(decimals=3, currency="KWD")
    upay_server = upay.serve()
    store_server = store.serve()
    slot = AppSlot()
    bridge_server = serve_wsgi(slot)
    settings = load_settings({}, data_dir=data_dir).with_overrides(
        public_url=bridge_server.url,
        upay_sandbox_url=f"{upay_server.url}/api/v1/",
        upay_production_url=f"{upay_server.url}/api/v1/",
        secret_keys=(generate_key(),))
    runtime = bootstrap(settings)
    slot.app = create_app(runtime)
    consumer = runtime.jobs.consumer(4)
    consumer.start()
    try:
        _say("1. Three servers on this machine:")
        click.echo(f"   simulated WooCommerce store  {store_server.url}")
        click.echo(f"   simulated UPay               {upay_server.url}")
        click.echo(f"   upay-bridge                  {bridge_server.url}  (data in {data_dir})")

        ck, cs = store.add_api_key("read_write")
        record = runtime.registry.add(
            "woocommerce", store.base_url,
            {"consumer_key": ck, "consumer_secret": cs, "webhook_secret": "demo-webhook-secret",
             "upay_api_key": "jtest123"},
            name="Demo coffee shop", upay_sandbox=True, settings=StoreSettings())
        webhook_url = f"{bridge_server.url}/webhooks/woocommerce/{record.id}"
        _say("2. Store registered:", f"id {record.id}, webhook URL {webhook_url}")

        hook = store.add_webhook("order.created", webhook_url, "demo-webhook-secret")
        ping = store.pings[-1] if store.pings else None
        ping_text = f"answered {ping.status_code}" if ping is not None else "not sent"
        _say("3. WooCommerce webhook created:", f"#{hook['id']}, activation ping {ping_text}")

        store.add_product(101, "Arabic Coffee 250g", "4.500", sku="COF-250")
        store.add_product(120, "Dallah Pot - Gold", "3.000", sku="DAL-G")
        order = store.create_order(
            [{"product_id": 101, "quantity": 2}, {"product_id": 120, "quantity": 1}],
            billing={"first_name": "Fatima", "last_name": "Al-Sabah", "email": "fatima@example.com",
                     "phone": "55512345", "country": "KW"},
            shipping_lines=[{"method_title": "Flat rate", "method_id": "flat_rate", "total": "1.500"}],
            coupon_lines=[{"code": "welcome1", "discount": "1.000"}])
        _say("4. A customer places order", f"#{order['number']}: {order['total']} {order['currency']} "
             "(2 x coffee, 1 x dallah, shipping, a 1.000 KWD coupon)")

        started = time.monotonic()
        deliveries = store.deliver_queued()
        took = (time.monotonic() - started) * 1000
        codes = ", ".join(str(getattr(d, "status_code", "?")) for d in deliveries)
        _say("5. WooCommerce delivers order.created:", f"the bridge answered {codes} in {took:.0f} ms; "
             "a worker creates the invoice")

        notes = _wait(lambda: store.notes(order["id"]), timeout=20)
        if not notes:
            click.echo("   no note appeared: see `upay-bridge orders list` in the data directory")
            return 1
        charge = upay.charges()[-1].json
        products = " + ".join(f"{p['price']} x {p['quantity']}" for p in charge["products"])
        _say("6. UPay create-invoice request:", f"products {products} = order.amount "
             f"{charge['order']['amount']} {charge['order']['currency']}")
        note = notes[0]
        kind = "customer note (WooCommerce e-mails it)" if note.get("customer_note") else "private note"
        _say("7. The payment link is on the order, as a " + kind + ":")
        click.echo(f"   {note['note']}")
        meta = {m["key"]: m["value"] for m in store.order(order["id"]).get("meta_data", [])}
        click.echo(f"   order meta: upay_invoice_id={meta.get('upay_invoice_id')}, "
                   f"upay_invoice_url={meta.get('upay_invoice_url')}")

        redirect = upay.complete_payment(str(meta.get("upay_invoice_id")), "CAPTURED")
        _say("8. The customer pays on UPay's page:", "UPay notifies the bridge and sends the "
             "browser back to it; the bridge confirms the payment with UPay's status API")
        paid = _wait(lambda: store.order(order["id"])["status"] == "processing"
                     and store.order(order["id"]), timeout=20)
        if not paid:
            click.echo("   the order was not marked paid: see `upay-bridge orders list`")
            return 1
        _say("9. The order is paid:", f"status {paid['status']}, transaction id "
             f"{paid['transaction_id']}")
        confirmed = _wait(lambda: [n for n in store.notes(order["id"])
                                   if "Payment confirmed" in n["note"]], timeout=20)
        if confirmed:
            click.echo(f"   {confirmed[0]['note']}")
        click.echo(f"   the customer's return page: {redirect.split('?')[0]}")
        if keep_running:
            _say("Running; press Ctrl-C to stop.", f"Open {meta.get('upay_invoice_url')} to see the "
                 "simulated payment page.")
            while True:
                time.sleep(1)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        consumer.stop(graceful=True)
        bridge_server.shutdown()
        store_server.shutdown()
        upay_server.shutdown()
        runtime.close()
        shutil.rmtree(data_dir, ignore_errors=True)
