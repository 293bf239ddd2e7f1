"""What a failed answer from a store means: try again later, or stop until someone acts.

WordPress's REST server answers every error as JSON (woocommerce.md §3.4) and Saleor answers
200 or 400 with JSON (saleor.md §2.4, §4.4); an HTML page comes from something in front of them:
a WAF or security plugin (401/403), a rule hiding ``/wp-json/`` or a moved site (404), a
maintenance page or a proxy (5xx), a rate limiter (429). The page is classified by its status
as the API's own answers are:

* 5xx, 408, 425 and 429 are transient (429 a ``StoreRateLimitError``), JSON or not, and keep the
  answer's ``Retry-After`` on the error (``retry_after``, seconds);
* 401/403 is a ``StoreAuthError``, as WooCommerce's own JSON 401/403;
* 404 and the other 4xx are permanent: the order is parked at once, its invoice kept.

The adapters are tested directly against the fakes, then through the pipeline on both layouts.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Callable

import pytest
import requests
import woocommerce

from bridge.errors import (OrderNotFoundError, StoreAuthError, StoreError, StoreRateLimitError,
                           StoreResponseError, StoreServerError)
from bridge.fakes.saleor import FakeSaleor
from bridge.fakes.woocommerce import FakeWooCommerce
from bridge.pipeline import order_events
from bridge.registry import StoreRecord, StoreSettings
from bridge.stores.saleor import SaleorStore
from bridge.stores.woocommerce import WooCommerceStore
from bridge.transport import retry_after_seconds

from .conftest import Bridge, wait_for

# The pipeline tests run on the embedded default and on PostgreSQL + Redis with a worker process.
BOTH_LAYOUTS = True

BILLING = {"first_name": "Fatima", "email": "fatima@example.com"}

# A security plugin's block page (Wordfence-like), as a WAF answers a request it refuses.
BLOCK_PAGE = ("<!DOCTYPE html><html><head><title>403 Forbidden</title></head><body>"
              "<h1>Your access to this site has been limited by the site owner</h1></body></html>")
# A rate limiter answering in JSON, in WordPress's WP_Error shape.
RATE_LIMITED = json.dumps({"code": "rate_limit_exceeded", "message": "Too many requests.",
                           "data": {"status": 429}})


def _wc_store(fake_wc: FakeWooCommerce) -> WooCommerceStore:
    ck, cs = fake_wc.add_api_key("read_write")
    return WooCommerceStore(StoreRecord(
        id="errors", kind="woocommerce", name="", url=fake_wc.base_url, upay_sandbox=True,
        settings=StoreSettings(), secrets={"consumer_key": ck, "consumer_secret": cs}))


def _wc_calls(store: WooCommerceStore, order_id: str) -> list[tuple[str, Callable[[], Any]]]:
    return [("check_connection", store.check_connection),                       # GET
            ("add_note", lambda: store.add_note(order_id, "hello", customer_note=False)),  # POST
            ("write_invoice_meta", lambda: store.write_invoice_meta(order_id, {"k": "v"}))]  # PUT


def _raised(call: Callable[[], Any]) -> StoreError:
    with pytest.raises(StoreError) as caught:
        call()
    return caught.value


# -- WooCommerce, the adapter alone ------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_woocommerce_html_401_403_is_a_refusal_not_a_passing_failure(
        status: int, fake_wc: FakeWooCommerce) -> None:
    store = _wc_store(fake_wc)
    order = fake_wc.create_order([{"name": "Tea", "price": "1.000", "quantity": 1}], billing=BILLING)
    for name, call in _wc_calls(store, str(order["id"])):
        fake_wc.faults.add("status", status=status, body=BLOCK_PAGE)
        exc = _raised(call)
        # The same class as the REST API's own JSON 401/403 (woocommerce_rest_cannot_view, ...).
        assert isinstance(exc, StoreAuthError) and not exc.transient, (name, exc)
        assert exc.status == status and exc.code == "not_json", name
        assert f"HTTP {status} with a page that is not JSON" in str(exc), name
        assert "firewall" in str(exc), name
    assert fake_wc.notes(order["id"]) == []


@pytest.mark.parametrize("status", [400, 404, 405, 406, 409, 410, 413])
def test_woocommerce_html_404_and_other_4xx_are_permanent(status: int,
                                                          fake_wc: FakeWooCommerce) -> None:
    store = _wc_store(fake_wc)
    order = fake_wc.create_order([{"name": "Tea", "price": "1.000", "quantity": 1}], billing=BILLING)
    for name, call in _wc_calls(store, str(order["id"])):
        fake_wc.faults.add("status", status=status)
        exc = _raised(call)
        assert type(exc) is StoreResponseError and not exc.transient, (name, exc)
        # An HTML 404 is not WooCommerce saying the order is gone (that is JSON): no verdict on
        # the order, which OrderNotFoundError would mark failed.
        assert not isinstance(exc, OrderNotFoundError)
        assert exc.status == status and f"HTTP {status} with a page that is not JSON" in str(exc)
    fake_wc.faults.add("status", status=404)
    assert "check the store URL" in str(_raised(store.check_connection))


@pytest.mark.parametrize("status,json_body", [
    (429, True), (429, False), (408, True), (408, False), (425, False),
    (500, False), (502, False), (503, False), (503, True), (504, False)])
def test_woocommerce_try_later_answers_are_transient_with_retry_after(
        status: int, json_body: bool, fake_wc: FakeWooCommerce) -> None:
    store = _wc_store(fake_wc)
    order = fake_wc.create_order([{"name": "Tea", "price": "1.000", "quantity": 1}], billing=BILLING)
    extra: dict[str, Any] = {"headers": {"Retry-After": "7"}}
    if json_body:
        extra.update(content_type="application/json", body=json.dumps(
            {"code": "busy", "message": "Try later.", "data": {"status": status}}))
    for name, call in _wc_calls(store, str(order["id"])):
        fake_wc.faults.add("status", status=status, **extra)
        exc = _raised(call)
        assert exc.transient and exc.status == status, (name, exc)
        assert isinstance(exc, StoreRateLimitError if status == 429 else StoreServerError), name
        assert exc.retry_after == 7.0, name


def test_woocommerce_json_429_is_a_rate_limit_not_a_rejection(fake_wc: FakeWooCommerce) -> None:
    store = _wc_store(fake_wc)
    fake_wc.faults.add("status", status=429, content_type="application/json", body=RATE_LIMITED,
                       headers={"Retry-After": "30"})
    exc = _raised(store.check_connection)
    assert isinstance(exc, StoreRateLimitError) and exc.transient and not exc.outcome_unknown
    assert exc.code == "rate_limit_exceeded" and exc.retry_after == 30.0
    assert "rate limiting" in str(exc) and "Too many requests." in str(exc)


def test_woocommerce_maintenance_page_keeps_its_retry_after(fake_wc: FakeWooCommerce) -> None:
    # wp_maintenance(): 503 with Retry-After: 600 while WordPress updates itself.
    store = _wc_store(fake_wc)
    fake_wc.set_down(True)
    exc = _raised(store.check_connection)
    assert isinstance(exc, StoreServerError) and exc.transient and exc.retry_after == 600.0
    assert str(exc).startswith("the store answered HTTP 503 with a page that is not JSON")


def test_woocommerce_json_auth_and_not_found_are_unchanged(fake_wc: FakeWooCommerce) -> None:
    ck, _ = fake_wc.add_api_key("read_write")
    revoked = WooCommerceStore(StoreRecord(
        id="revoked", kind="woocommerce", name="", url=fake_wc.base_url, upay_sandbox=True,
        settings=StoreSettings(), secrets={"consumer_key": ck, "consumer_secret": "cs_wrong"}))
    exc = _raised(revoked.check_connection)
    assert type(exc) is StoreAuthError and exc.status == 401 and exc.code.startswith("woocommerce_rest")
    exc = _raised(lambda: _wc_store(fake_wc).add_note("999999", "x", customer_note=False))
    assert isinstance(exc, OrderNotFoundError) and not exc.transient


# -- Retry-After and the errors themselves -----------------------------------------------------


def _answer(**headers: str) -> requests.Response:
    resp = requests.Response()
    resp.status_code = 429
    resp.headers.update(headers)
    return resp


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds(_answer(**{"Retry-After": "120"})) == 120.0
    assert retry_after_seconds(_answer(**{"Retry-After": " 0 "})) == 0.0
    # An HTTP-date is measured against the answer's own Date, whatever the local clock says.
    assert retry_after_seconds(_answer(**{"Retry-After": "Wed, 21 Oct 2026 07:30:00 GMT",
                                          "Date": "Wed, 21 Oct 2026 07:28:00 GMT"})) == 120.0
    assert retry_after_seconds(_answer(**{"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    for unreadable in ("", "soon", "-5", "1e3", "inf", "nan", "1.5", "Wed, 99 Foo 2026"):
        assert retry_after_seconds(_answer(**{"Retry-After": unreadable})) is None, unreadable
    assert retry_after_seconds(_answer()) is None


def test_store_errors_keep_retry_after_across_the_queue() -> None:
    # Errors travel pickled between the worker process and the queue.
    for exc in (StoreRateLimitError("slow down", 429, "rate_limit_exceeded", 30.0),
                StoreServerError("down", 503, "not_json", 600.0), StoreAuthError("no", 403)):
        copy = pickle.loads(pickle.dumps(exc))
        assert (type(copy), str(copy), copy.status, copy.code, copy.retry_after) == (
            type(exc), str(exc), exc.status, exc.code, exc.retry_after)
        assert copy.transient == exc.transient


# -- Saleor, the adapter alone -----------------------------------------------------------------


def _saleor_store(saleor: FakeSaleor, permissions: tuple[str, ...] = (
        "MANAGE_ORDERS", "HANDLE_PAYMENTS")) -> SaleorStore:
    _, token = saleor.create_app(permissions=permissions)
    return SaleorStore(StoreRecord(
        id="saleor-errors", kind="saleor", name="", url=saleor.api_url, upay_sandbox=True,
        settings=StoreSettings(), secrets={"app_token": token}))


def _saleor_order(saleor: FakeSaleor) -> dict[str, Any]:
    return saleor.create_order([{"name": "Arabic Coffee", "variant": "250g", "sku": "COF",
                                 "quantity": 1, "unit_price": "4.125"}])


@pytest.mark.parametrize("status,kind", [(401, StoreAuthError), (403, StoreAuthError),
                                         (404, StoreResponseError), (400, StoreResponseError)])
def test_saleor_html_4xx_is_permanent(status: int, kind: type, saleor: FakeSaleor) -> None:
    store = _saleor_store(saleor)
    order = _saleor_order(saleor)
    for name, call in [("check_connection", store.check_connection),
                       ("add_note", lambda: store.add_note(order["id"], "hi", customer_note=False))]:
        saleor.faults.add("graphql", "status", status=status, body=BLOCK_PAGE)
        exc = _raised(call)
        assert type(exc) is kind and not exc.transient, (name, exc)
        assert exc.code == "not_json" and f"Saleor answered HTTP {status} with a page" in str(exc)
    assert saleor.notes(order["id"]) == []


@pytest.mark.parametrize("status,content_type", [
    (429, "application/json"), (429, "text/html"), (503, "text/html"), (502, "application/json"),
    (408, "text/html")])
def test_saleor_try_later_answers_are_transient_with_retry_after(
        status: int, content_type: str, saleor: FakeSaleor) -> None:
    store = _saleor_store(saleor)
    body = (json.dumps({"errors": [{"message": "Too many requests"}]})
            if content_type == "application/json" else "<html><body>busy</body></html>")
    saleor.faults.add("graphql", "status", status=status, body=body, content_type=content_type,
                      headers={"Retry-After": "12"})
    exc = _raised(store.check_connection)
    assert exc.transient and exc.status == status and exc.retry_after == 12.0, exc
    assert isinstance(exc, StoreRateLimitError if status == 429 else StoreServerError)


def test_saleor_json_401_is_an_auth_error(saleor: FakeSaleor) -> None:
    # Saleor answers a bad token with a 200 and PermissionDenied; a gateway in front of it
    # answers 401/403 itself: the same meaning.
    store = _saleor_store(saleor)
    saleor.faults.add("graphql", "status", status=401, content_type="application/json",
                      body=json.dumps({"errors": [{"message": "Unauthorized"}]}))
    exc = _raised(store.check_connection)
    assert type(exc) is StoreAuthError and exc.status == 401 and not exc.transient


def test_saleor_permission_denied_is_still_an_auth_error(saleor: FakeSaleor) -> None:
    store = _saleor_store(saleor, permissions=("MANAGE_ORDERS",))  # no HANDLE_PAYMENTS
    order = _saleor_order(saleor)
    exc = _raised(lambda: store.write_invoice_meta(order["id"], {}))
    assert type(exc) is StoreAuthError and exc.code == "PermissionDenied"


# -- The fake WooCommerce: date_paid on a paid status ------------------------------------------


def test_fake_sets_date_paid_as_maybe_set_date_paid_does(fake_wc: FakeWooCommerce) -> None:
    """WC_Order::set_status() calls maybe_set_date_paid(): date_paid is set once, when the order
    reaches the payment-complete status, "processing" if needs_processing() else "completed"
    (or passes it to "completed"). needs_processing() skips items whose product is gone or was
    never there (ad hoc lines) and virtual+downloadable products, so an order of only those
    moved on-hold -> processing keeps date_paid null in real WooCommerce too."""
    fake_wc.add_product(101, "Arabic Coffee 250g", "4.500")
    fake_wc.add_product(102, "E-book", "2.000", virtual=True)
    ck, cs = fake_wc.add_api_key("read_write")
    api = woocommerce.API(url=fake_wc.base_url, consumer_key=ck, consumer_secret=cs,
                          version="wc/v3")

    def moved(items: list[dict[str, Any]], status: str, to: str) -> dict[str, Any]:
        order = fake_wc.create_order(items, status=status, billing=BILLING)
        assert order["date_paid"] is None
        return api.put(f"orders/{order['id']}", {"status": to, "transaction_id": "T1"}).json()

    coffee = [{"product_id": 101, "quantity": 1}]
    for start in ("on-hold", "pending", "cancelled", "failed"):
        for to in ("processing", "completed"):
            paid = moved(coffee, start, to)
            assert paid["status"] == to and paid["date_paid"] and paid["date_paid_gmt"], (start, to)
    for items in ([{"name": "Ad hoc", "price": "1.000", "quantity": 1}],
                  [{"product_id": 102, "quantity": 1}]):
        paid = moved(items, "on-hold", "processing")
        assert paid["date_paid"] is None and paid["date_paid_gmt"] is None, items
        assert moved(items, "on-hold", "completed")["date_paid"], items
    # Set once: a later move to completed leaves the first date.
    paid = moved(coffee, "on-hold", "processing")
    again = api.put(f"orders/{paid['id']}", {"status": "completed"}).json()
    assert again["date_paid"] == paid["date_paid"] and again["date_completed"]


# -- Through the pipeline ----------------------------------------------------------------------


def _place(fake_wc: FakeWooCommerce) -> dict[str, Any]:
    order = fake_wc.create_order([{"name": "Coffee", "price": "4.500", "quantity": 1}],
                                 billing=BILLING)
    fake_wc.deliver_queued()
    return order


def test_html_404_on_the_write_back_parks_the_order_at_once(
        bridge: Bridge, connect_store: Callable[..., StoreRecord], fake_wc: FakeWooCommerce,
        fake_upay: Any) -> None:
    connect_store(bridge)
    # The meta PUT meets a 404 page: the REST API is not where the bridge calls it.
    fake_wc.faults.add("status", status=404, method="PUT", path_contains="/orders/")
    order = _place(fake_wc)
    row = bridge.wait_state(order["id"], "parked", "done")
    assert row.state == "parked" and row.retries == 0, row  # not ~6 retries first
    assert "HTTP 404 with a page that is not JSON" in row.reason and "gave up" not in row.reason
    assert row.invoice_url and fake_wc.notes(order["id"]) == []

    bridge.runtime.pipeline.retry(row.id)  # once the merchant has fixed it, nothing is lost
    bridge.wait_state(order["id"], "done")
    assert len(fake_wc.notes(order["id"])) == 1 and len(fake_upay.charges()) == 1


def test_html_403_on_the_write_back_is_a_refusal(
        bridge_factory: Callable[..., Bridge], connect_store: Callable[..., StoreRecord],
        fake_wc: FakeWooCommerce) -> None:
    bridge = bridge_factory(max_retries=1)
    connect_store(bridge)
    fake_wc.faults.add("status", count=20, status=403, body=BLOCK_PAGE, method="POST",
                       path_contains="/notes")
    order = _place(fake_wc)
    row = bridge.wait_state(order["id"], "parked")
    assert "HTTP 403 with a page that is not JSON" in row.reason
    assert "firewall, security plugin or password protection" in row.reason
    assert row.invoice_url and fake_wc.notes(order["id"]) == []


@pytest.mark.parametrize("refusal", ["json_401_keys_revoked", "html_403_waf"])
def test_auth_refusals_are_retried_then_parked(refusal: str, bridge: Bridge,
                                               connect_store: Callable[..., StoreRecord],
                                               fake_wc: FakeWooCommerce) -> None:
    # By design a refusal is retried before the order is parked: a merchant who reconnects the
    # store (new keys) or lets the bridge through the firewall meanwhile needs to do nothing
    # more. An HTML 403 from a firewall is the same refusal as WooCommerce's JSON 401.
    record = connect_store(bridge)
    if refusal == "json_401_keys_revoked":
        bridge.runtime.registry.update(record.id, secrets={"consumer_secret": "cs_revoked"})
    else:
        fake_wc.faults.add("status", count=50, status=403, body=BLOCK_PAGE, method="PUT")
        fake_wc.faults.add("status", count=50, status=403, body=BLOCK_PAGE, method="POST")
    order = _place(fake_wc)
    row = bridge.wait_state(order["id"], "parked")
    assert row.retries >= 1 and row.reason.startswith("gave up after"), row.reason
    if refusal == "html_403_waf":
        assert "firewall" in row.reason, row.reason


def test_json_429_on_the_note_is_retried_not_parked(
        bridge: Bridge, connect_store: Callable[..., StoreRecord], fake_wc: FakeWooCommerce) -> None:
    connect_store(bridge)
    fake_wc.faults.add("status", count=2, status=429, method="POST", path_contains="/notes",
                       content_type="application/json", body=RATE_LIMITED,
                       headers={"Retry-After": "1"})
    order = _place(fake_wc)
    row = bridge.wait_state(order["id"], "done", "parked")
    assert row.state == "done", row.reason
    assert len(fake_wc.notes(order["id"])) == 1  # a 429 did nothing: one note, not three
    retries = [e["message"] for e in order_events(bridge.runtime.engine, row.id)
               if e["kind"] == "retry_scheduled"]
    assert len(retries) == 2 and all("rate limiting the bridge (HTTP 429" in m for m in retries)


def test_saleor_json_429_is_retried_and_html_404_parks(
        installed: StoreRecord, bridge: Bridge, saleor: FakeSaleor) -> None:
    saleor.faults.add("graphql", "status", status=429, content_type="application/json",
                      body=json.dumps({"errors": [{"message": "Too many requests"}]}),
                      headers={"Retry-After": "1"})
    first = saleor.create_order([{"name": "Arabic Coffee", "variant": "250g", "sku": "COF",
                                  "quantity": 1, "unit_price": "4.125"}])
    saleor.deliver_queued()
    row = bridge.wait_state(first["id"], "done", "parked")
    assert row.state == "done", row.reason
    assert len(saleor.transactions(first["id"])) == 1

    saleor.faults.add("graphql", "status", status=404, body=BLOCK_PAGE)
    second = saleor.create_order([{"name": "Tea", "variant": "1kg", "sku": "TEA",
                                   "quantity": 1, "unit_price": "2.000"}])
    saleor.deliver_queued()
    row = bridge.wait_state(second["id"], "parked", "done")
    assert row.state == "parked" and row.retries == 0, row
    assert "Saleor answered HTTP 404 with a page that is not JSON" in row.reason
    wait_for(lambda: saleor.transactions(second["id"]) == [])


def test_a_stores_retry_after_sets_the_next_try(
        bridge_factory: Callable[..., Bridge], connect_store: Callable[..., StoreRecord],
        fake_wc: FakeWooCommerce) -> None:
    # A 429 asking for two minutes: the order is not tried again sooner, however short the
    # backoff for its first retry (the tests' backoff is capped far below; this bridge's cap,
    # which also caps a Retry-After, is ten minutes).
    bridge = bridge_factory(retry_max_seconds=600.0)
    connect_store(bridge)
    fake_wc.faults.add("status", count=1, status=429, method="POST", path_contains="/notes",
                       content_type="application/json", body=RATE_LIMITED,
                       headers={"Retry-After": "120"})
    order = _place(fake_wc)
    row = bridge.wait_state(order["id"], "invoiced", "retrying")
    wait_for(lambda: (r := bridge.order(order["id"])).retries == 1 and r.lease_owner is None)
    row = bridge.order(order["id"])
    assert row.next_attempt_at - row.updated_at >= 119, (row.next_attempt_at, row.updated_at)
