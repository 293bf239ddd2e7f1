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
from .fakes.saleor import FakeSaleor
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


class _Harness:
    """The bridge and a simulated UPay on loopback; the store comes from the scenario."""

    def __init__(self) -> None:
        self.data_dir = tempfile.mkdtemp(prefix="upay-bridge-demo-")
        self.upay = FakeUPay(valid_keys=("jtest123",))
        self.upay_server = self.upay.serve()
        slot = AppSlot()
        self.bridge_server = serve_wsgi(slot)
        settings = load_settings({}, data_dir=self.data_dir).with_overrides(
            public_url=self.bridge_server.url,
            upay_sandbox_url=f"{self.upay_server.url}/api/v1/",
            upay_production_url=f"{self.upay_server.url}/api/v1/",
            secret_keys=(generate_key(),),
            allow_private_store_urls=True)  # the demo's stores are on this machine
        self.runtime = bootstrap(settings)
        slot.app = create_app(self.runtime)
        self.consumer = self.runtime.jobs.consumer(4)
        self.consumer.start()

    def servers(self, store_kind: str, store_url: str) -> None:
        _say("1. Three servers on this machine:")
        click.echo(f"   simulated {store_kind:<18} {store_url}")
        click.echo(f"   simulated UPay               {self.upay_server.url}")
        click.echo(f"   upay-bridge                  {self.bridge_server.url}  "
                   f"(data in {self.data_dir})")

    def close(self) -> None:
        self.consumer.stop(graceful=True)
        self.bridge_server.shutdown()
        self.upay_server.shutdown()
        self.runtime.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def run_demo(keep_running: bool = False, store: str = "woocommerce") -> int:
    harness = _Harness()
    try:
        scenario = _saleor if store == "saleor" else _woocommerce
        result = scenario(harness)
        if result == 0 and keep_running:
            _say("Running; press Ctrl-C to stop.")
            while True:
                time.sleep(1)
        return result
    except KeyboardInterrupt:
        return 0
    finally:
        harness.close()


def _woocommerce(h: _Harness) -> int:
    store = FakeWooCommerce(decimals=3, currency="KWD")
    store_server = store.serve()
    runtime, upay, bridge_server = h.runtime, h.upay, h.bridge_server
    try:
        h.servers("WooCommerce store", store_server.url)
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
        return 0
    finally:
        store_server.shutdown()


def _saleor(h: _Harness) -> int:
    saleor = FakeSaleor(currency="KWD")
    saleor_server = saleor.serve()
    runtime, upay = h.runtime, h.upay
    try:
        h.servers("Saleor", saleor.api_url)
        manifest_url = f"{h.bridge_server.url}/saleor/manifest"
        result = saleor.install(manifest_url)
        if not result.ok:
            click.echo(f"   the install failed: {result.message}")
            return 1
        record = runtime.registry.find_by_url("saleor", saleor.api_url)
        runtime.registry.update(record.id, secrets={"upay_api_key": "jtest123"})
        _say("2. Saleor installs the App from", f"{manifest_url}: token received, store {record.id}")
        order = saleor.create_order(
            [{"name": "Arabic Coffee", "variant": "250g", "sku": "COF-250", "quantity": 2,
              "unit_price": "4.125"},
             {"name": "Dallah Pot", "variant": "Gold", "sku": "DAL-G", "quantity": 1,
              "unit_price": "2.750"}], shipping="1.500")
        _say("3. A customer places order", f"#{order['number']} (ORDER_CREATED, signed with "
             "Saleor's JWS)")
        codes = ", ".join(str(d.status) for d in saleor.deliver_queued())
        _say("4. Saleor delivers the webhook:", f"the bridge answered {codes}")
        notes = _wait(lambda: saleor.notes(order["id"]), timeout=20)
        if not notes:
            click.echo("   no note appeared: see `upay-bridge orders list`")
            return 1
        _say("5. The payment link is on the order, as a note:")
        click.echo(f"   {notes[0]}")
        tx = _wait(lambda: saleor.transactions(order["id"]), timeout=20)[0]
        _say("6. And as a transaction:", f"{tx['name']}, external URL {tx['externalUrl']}")
        upay.complete_payment(tx["pspReference"], "CAPTURED")
        _say("7. The customer pays on UPay's page; the bridge confirms it with UPay's status API")
        charged = _wait(lambda: [e for e in saleor.transactions(order["id"])[0]["events"]
                                 if e["type"] == "CHARGE_SUCCESS"], timeout=20)
        if not charged:
            click.echo("   the charge was not reported: see `upay-bridge orders list`")
            return 1
        _say("8. CHARGE_SUCCESS reported:", f"{charged[0]['amount']['amount']} KWD, PSP reference "
             f"{charged[0]['pspReference']}; order charge status "
             f"{saleor.order(order['id'])['chargeStatus']}")
        return 0
    finally:
        saleor_server.shutdown()
