"""A store that answers with a redirect: the bridge never follows it.

``requests`` follows 3xx by default, which would let a store (or whoever controls its DNS or
its answers) send the bridge's authenticated request, OAuth query, Basic auth or app token and
order data included, to an address the connect-time check refuses (a cloud metadata service,
the bridge's own network). The bridge stops at the redirect, says where it pointed, and parks
the order like any permanent store error; nothing is lost.

``Trap`` stands for the address the redirect points at: a second loopback server that records
whatever reaches it.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Iterator

import pytest
import requests

from bridge.errors import StoreError, StoreResponseError
from bridge.fakes.saleor import FakeSaleor
from bridge.fakes.server import serve_wsgi
from bridge.fakes.woocommerce import FakeWooCommerce
from bridge.registry import StoreRecord, StoreSettings
from bridge.stores.saleor import SaleorStore
from bridge.stores.woocommerce import WooCommerceStore

from .conftest import Bridge, wait_for

BILLING = {"first_name": "Fatima", "email": "fatima@example.com"}


class Trap:
    """A loopback HTTP server that records every request and answers 200 with JSON."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.served = serve_wsgi(self._app)
        self.url = self.served.url

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        self.requests.append({
            "method": environ["REQUEST_METHOD"], "path": environ.get("PATH_INFO", ""),
            "query": environ.get("QUERY_STRING", ""),
            "headers": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
            "body": environ["wsgi.input"].read(length) if length else b""})
        # A plausible answer, so that a client that followed the redirect would carry on.
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"id": 1, "status": "processing", "meta_data": []}).encode()]

    def seen(self, *needles: str) -> list[str]:
        """Which of ``needles`` appear anywhere in what the trap received."""
        text = repr(self.requests)
        return [n for n in needles if n and n in text]


@pytest.fixture
def trap() -> Iterator[Trap]:
    t = Trap()
    yield t
    t.served.shutdown()


# -- WooCommerce -------------------------------------------------------------------------------


def test_woocommerce_write_back_redirect_is_not_followed_and_parks_the_order(
        bridge: Bridge, connect_store: Callable[..., StoreRecord], fake_wc: FakeWooCommerce,
        trap: Trap, fake_upay: Any) -> None:
    record = connect_store(bridge)
    # The write-back's first call, the PUT of the invoice meta, is answered with a redirect
    # elsewhere; over plain http its query carries the OAuth consumer key and signature.
    fake_wc.faults.add("redirect", method="PUT", path_contains="/orders/", location=trap.url)
    order = fake_wc.create_order([{"name": "Coffee", "price": "4.500", "quantity": 1}],
                                 billing=BILLING)
    fake_wc.deliver_queued()
    row = bridge.wait_state(order["id"], "parked", "done")

    assert trap.requests == []  # (a) the bridge's request never reached the redirect target
    assert trap.seen(record.secrets["consumer_key"], record.secrets["consumer_secret"]) == []  # (c)
    # (b) parked at once (a redirect is configuration, not bad luck), with a message that says
    # where the store pointed and what to do; the OAuth query is not repeated in it.
    assert row.state == "parked" and row.retries == 0, row
    assert f"redirect (HTTP 301) to {trap.url}/wp-json/wc/v3/orders/{order['id']}" in row.reason
    assert "update the store URL" in row.reason and row.last_error == row.reason
    assert "oauth" not in row.reason and record.secrets["consumer_key"] not in row.reason
    assert row.invoice_url and fake_wc.notes(order["id"]) == []

    # Nothing is lost: once the store answers again, the operator's retry finishes the order
    # with the invoice it already has.
    bridge.runtime.pipeline.retry(row.id)
    bridge.wait_state(order["id"], "done")
    assert len(fake_wc.notes(order["id"])) == 1
    assert len(fake_upay.charges()) == 1
    assert trap.requests == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_woocommerce_no_call_follows_a_redirect(status: int, fake_wc: FakeWooCommerce,
                                               trap: Trap) -> None:
    ck, cs = fake_wc.add_api_key("read_write")
    record = StoreRecord(id=f"redirect-{status}", kind="woocommerce", name="", url=fake_wc.base_url,
                         upay_sandbox=True, settings=StoreSettings(),
                         secrets={"consumer_key": ck, "consumer_secret": cs})
    store = WooCommerceStore(record)
    order = fake_wc.create_order([{"name": "Tea", "price": "1.000", "quantity": 1}], billing=BILLING)
    calls = [("check_connection", lambda: store.check_connection()),        # GET
             ("add_note", lambda: store.add_note(str(order["id"]), "hello", customer_note=False)),
             ("write_invoice_meta", lambda: store.write_invoice_meta(str(order["id"]), {"k": "v"}))]
    for name, call in calls:
        fake_wc.faults.add("redirect", location=trap.url, status=status)
        with pytest.raises(StoreResponseError) as caught:
            call()
        exc = caught.value
        assert not exc.transient and exc.status == status and exc.code == "redirect", name
        assert f"redirect (HTTP {status}) to {trap.url}/wp-json/wc/v3/" in str(exc), name
        assert "?" not in str(exc) and ck not in str(exc), name
    assert trap.requests == [] and trap.seen(ck, cs) == []
    assert fake_wc.notes(order["id"]) == []


def test_woocommerce_relative_redirect_is_reported_as_an_absolute_address(
        fake_wc: FakeWooCommerce) -> None:
    ck, cs = fake_wc.add_api_key("read_write")
    record = StoreRecord(id="redirect-relative", kind="woocommerce", name="", url=fake_wc.base_url,
                         upay_sandbox=True, settings=StoreSettings(),
                         secrets={"consumer_key": ck, "consumer_secret": cs})
    fake_wc.faults.add("status", status=302, body="",
                       headers={"Location": "/shop/wp-json/wc/v3/orders?page=1#top"})
    with pytest.raises(StoreResponseError) as caught:
        WooCommerceStore(record).check_connection()
    assert f"to {fake_wc.base_url}/shop/wp-json/wc/v3/orders;" in str(caught.value)


# -- Saleor ------------------------------------------------------------------------------------


def _place(saleor: FakeSaleor) -> dict[str, Any]:
    order = saleor.create_order([{"name": "Arabic Coffee", "variant": "250g", "sku": "COF",
                                  "quantity": 2, "unit_price": "4.125"}], shipping="1.500")
    saleor.deliver_queued()
    return order


def test_saleor_write_back_redirect_is_not_followed_and_parks_the_order(
        installed: StoreRecord, bridge: Bridge, saleor: FakeSaleor, trap: Trap,
        fake_upay: Any) -> None:
    token = installed.secrets["app_token"]
    saleor.faults.add("graphql", "redirect", location=f"{trap.url}/graphql/", status=302)
    order = _place(saleor)
    row = bridge.wait_state(order["id"], "parked", "done")

    assert trap.requests == [] and trap.seen(token) == []
    assert row.state == "parked" and row.retries == 0, row
    assert f"redirect (HTTP 302) to {trap.url}/graphql/" in row.reason
    assert "update the store URL" in row.reason and token not in row.reason
    assert row.invoice_url and saleor.transactions(order["id"]) == []

    bridge.runtime.pipeline.retry(row.id)
    bridge.wait_state(order["id"], "done")
    assert len(saleor.transactions(order["id"])) == 1
    assert len(fake_upay.charges()) == 1
    assert trap.requests == []


def test_saleor_jwks_redirect_is_not_followed(installed: StoreRecord, saleor: FakeSaleor,
                                              trap: Trap) -> None:
    # A signature by a key the bridge has not cached makes it fetch the store's JWKS again.
    saleor.rotate_key()
    body = b'{"order": {}}'
    saleor.faults.add("jwks", "redirect", location=f"{trap.url}/.well-known/jwks.json")
    store = SaleorStore(installed)
    with pytest.raises(StoreError) as caught:
        store.verify_webhook({"Saleor-Signature": saleor.sign(body)}, body)
    assert f"redirect (HTTP 301) to {trap.url}/.well-known/jwks.json" in str(caught.value)
    assert trap.requests == []


def test_saleor_install_does_not_follow_redirects(bridge: Bridge, saleor: FakeSaleor,
                                                  trap: Trap) -> None:
    # The token check (GraphQL with the new app token), then the JWKS fetch, each redirected.
    for endpoint in ("graphql", "jwks"):
        saleor.faults.add(endpoint, "redirect", location=f"{trap.url}/{endpoint}", status=307)
        result = saleor.install(f"{bridge.url}/saleor/manifest")
        assert not result.ok, endpoint
        assert bridge.runtime.registry.list() == [], endpoint
    assert trap.requests == []


def test_dashboard_token_key_refetch_does_not_follow_redirects(
        installed: StoreRecord, bridge: Bridge, saleor: FakeSaleor, trap: Trap) -> None:
    saleor.rotate_key()  # the Dashboard's token is signed by a key the bridge has not seen
    saleor.faults.add("jwks", "redirect", location=f"{trap.url}/.well-known/jwks.json")
    resp = requests.post(f"{bridge.url}/saleor/app/session", timeout=5, json={
        "token": saleor.dashboard_token(installed.secrets["app_id"]), "saleorApiUrl": saleor.api_url})
    assert resp.status_code == 401, resp.text
    wait_for(lambda: not saleor.faults.pending())
    assert trap.requests == []
