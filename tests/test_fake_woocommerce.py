"""The fake WooCommerce store behaves like WooCommerce 7.9 where the bridge can tell.

Everything goes through real HTTP on loopback: the PyPI ``woocommerce`` 3.0.0 client (OAuth
over plain http), ``requests`` for Basic auth and raw cases, and a small raw receiver that
records webhook requests exactly as they arrive (header order included).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import logging
import threading
import time
from decimal import Decimal
from typing import Any, Iterator
from urllib.parse import urlencode

import pytest
import requests
import woocommerce
from woocommerce.oauth import OAuth

from bridge.fakes.woocommerce import FakeWooCommerce, webhook_signature, wp_json_encode

logging.getLogger("werkzeug").setLevel(logging.ERROR)


# ------------------------------------------------------------------------------ helpers


class Receiver:
    """A raw HTTP listener that records requests as received and answers scripted statuses."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.default_status = 200
        self.delay = 0.0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({
                    "path": self.path, "version": self.request_version,
                    "headers": list(self.headers.items()), "body": body, "at": time.monotonic(),
                })
                status = receiver.statuses.pop(0) if receiver.statuses else receiver.default_status
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                if status in (301, 302, 303):
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def pings(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["body"].startswith(b"webhook_id=")]

    def deliveries(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if not r["body"].startswith(b"webhook_id=")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeWooCommerce]:
    store = FakeWooCommerce()
    store.serve()
    store.add_product(10, "Arabic Coffee 250g", "4.500", sku="COF-250")
    store.add_product(11, "Dallah Pot", "3.000", sku="DAL-G")
    store.add_product(12, "E-book", "2.000", sku="EBOOK", virtual=True)
    yield store
    store.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def api_for(store: FakeWooCommerce, permissions: str = "read_write") -> woocommerce.API:
    ck, cs = store.add_api_key(permissions)
    return woocommerce.API(url=store.base_url, consumer_key=ck, consumer_secret=cs,
                           version="wc/v3", timeout=10)


def rest(store: FakeWooCommerce, route: str) -> str:
    return f"{store.base_url}/wp-json/wc/v3/{route}"


def oauth_url(store: FakeWooCommerce, ck: str, cs: str, route: str, method: str = "GET",
              timestamp: int | None = None) -> str:
    """Sign like the woocommerce package does, with a chosen timestamp."""
    return OAuth(url=rest(store, route), consumer_key=ck, consumer_secret=cs, version="wc/v3",
                 method=method, oauth_timestamp=timestamp or int(time.time())).get_oauth_url()


def php_oauth_url(url: str, method: str, ck: str, cs: str, algo: str = "HMAC-SHA1",
                  extra: dict[str, str] | None = None) -> str:
    """An independent signer following RFC 5849 the way WooCommerce's PHP verifies it."""
    from urllib.parse import quote

    def enc(s: str) -> str:
        return quote(s, safe="")

    params = dict(extra or {})
    params.update(oauth_consumer_key=ck, oauth_timestamp=str(int(time.time())),
                  oauth_nonce=hashlib.sha1(str(time.time_ns()).encode()).hexdigest(),
                  oauth_signature_method=algo)
    pairs = "%26".join(enc(f"{enc(k)}={enc(v)}") for k, v in sorted(params.items()))
    base = f"{method}&{enc(url)}&{pairs}"
    digest = hashlib.sha1 if algo == "HMAC-SHA1" else hashlib.sha256
    params["oauth_signature"] = base64.b64encode(
        hmac.new((cs + "&").encode(), base.encode(), digest).digest()).decode()
    return f"{url}?{urlencode(params)}"


def error(resp: requests.Response) -> tuple[int, str, str]:
    body = resp.json()
    return resp.status_code, body["code"], body["message"]


# ------------------------------------------------------------- the woocommerce package, OAuth


def test_package_over_plain_http_reads_and_updates_orders_with_oauth(fake: FakeWooCommerce) -> None:
    api = api_for(fake)
    order = fake.create_order([{"product_id": 10, "quantity": 2}])

    got = api.get(f"orders/{order['id']}")
    listed = api.get("orders", params={"per_page": 5, "status": "pending"})
    put = api.put(f"orders/{order['id']}", {"transaction_id": "INV-1",
                                            "meta_data": [{"key": "upay_invoice_id", "value": "INV-1"}]})

    assert got.status_code == 200 and got.json() == order
    assert listed.status_code == 200 and [o["id"] for o in listed.json()] == [order["id"]]
    # The package sends the query params twice; PHP keeps the last copy and still verifies.
    assert listed.url.count("per_page=5") == 2
    assert put.status_code == 200
    assert put.json()["transaction_id"] == "INV-1"
    assert {"key": "upay_invoice_id", "value": "INV-1"}.items() <= put.json()["meta_data"][-1].items()
    assert [r["auth"] for r in fake.requests] == ["oauth1"] * 3
    assert put.headers["Content-Type"] == "application/json; charset=UTF-8"


def test_package_posts_and_lists_notes_and_customer_notes_are_emailed(fake: FakeWooCommerce) -> None:
    api = api_for(fake)
    order = fake.create_order([{"product_id": 10, "quantity": 1}],
                              billing={"first_name": "فاطمة", "email": "fatima@example.com"})

    private = api.post(f"orders/{order['id']}/notes", {"note": "Invoice INV-7 created"})
    public = api.post(f"orders/{order['id']}/notes",
                      {"note": "Pay 4.500 KWD here: https://pay.example/i/INV-7", "customer_note": True})
    listed = api.get(f"orders/{order['id']}/notes")
    customer_only = api.get(f"orders/{order['id']}/notes", params={"type": "customer"})

    assert private.status_code == public.status_code == 201
    note = public.json()
    assert list(note) == ["id", "author", "date_created", "date_created_gmt", "note", "customer_note",
                          "_links"]
    assert note["author"] == "WooCommerce" and note["customer_note"] is True  # captured 7.9 author
    assert public.headers["Location"] == rest(fake, f"orders/{order['id']}/notes/{note['id']}")
    assert [n["id"] for n in listed.json()] == [note["id"], private.json()["id"]]  # newest first
    assert [n["id"] for n in customer_only.json()] == [note["id"]]
    [mail] = fake.emails
    assert mail["to"] == "fatima@example.com"
    assert '<a href="https://pay.example/i/INV-7" rel="nofollow">' in mail["body"]
    assert not fake.queued()  # a note is not an order save: no order.updated


def test_package_manages_webhooks_and_creation_pings_before_answering(
        fake: FakeWooCommerce, receiver: Receiver) -> None:
    api = api_for(fake)
    receiver.delay = 0.3

    start = time.monotonic()
    created = api.post("webhooks", {"name": "bridge", "topic": "order.created",
                                    "delivery_url": receiver.url, "secret": "s" * 32, "status": "paused"})
    answered = time.monotonic()
    hook = created.json()

    assert created.status_code == 201
    assert list(hook) == ["id", "name", "status", "topic", "resource", "event", "hooks", "delivery_url",
                          "date_created", "date_created_gmt", "date_modified", "date_modified_gmt", "_links"]
    assert hook["status"] == "active"           # a posted status is ignored
    assert hook["hooks"] == ["woocommerce_new_order"] and hook["date_modified"] is None
    assert "secret" not in hook
    [ping] = receiver.requests
    assert ping["at"] < answered and answered - start >= 0.3   # synchronous, before the 201
    assert fake.webhooks[hook["id"]]["pending_delivery"] is False

    paused = api.put(f"webhooks/{hook['id']}", {"status": "paused"})
    assert paused.json()["status"] == "paused" and paused.json()["date_modified"] is not None
    assert [h["id"] for h in api.get("webhooks", params={"status": "paused"}).json()] == [hook["id"]]
    assert api.get("webhooks", params={"status": "active"}).json() == []
    no_force = api.delete(f"webhooks/{hook['id']}")
    assert error(no_force) == (501, "woocommerce_rest_trash_not_supported",
                               "Webhooks do not support trashing.")
    assert api.delete(f"webhooks/{hook['id']}", params={"force": True}).status_code == 200
    assert error(api.get(f"webhooks/{hook['id']}")) == (400, "woocommerce_rest_shop_webhook_invalid_id",
                                                        "ID is invalid.")


def test_webhook_create_validation(fake: FakeWooCommerce) -> None:
    api = api_for(fake)
    bad_topic = api.post("webhooks", {"topic": "order.paid", "delivery_url": "https://x.example/h"})
    bad_url = api.post("webhooks", {"topic": "order.created", "delivery_url": "ftp://x.example/h"})
    missing = api.post("webhooks", {"name": "x"})

    assert error(bad_topic)[:2] == (400, "woocommerce_rest_shop_webhook_invalid_topic")
    assert error(bad_url)[:2] == (400, "woocommerce_rest_shop_webhook_invalid_delivery_url")
    assert error(missing)[:2] == (400, "rest_missing_callback_param")
    assert missing.json()["data"]["params"] == ["topic", "delivery_url"]


# ------------------------------------------------------------------------- OAuth failures


def test_oauth_failures_give_woocommerces_exact_errors(fake: FakeWooCommerce) -> None:
    ck, cs = fake.add_api_key()
    good = oauth_url(fake, ck, cs, "orders")
    tampered = good.replace("oauth_signature=", "oauth_signature=AA")
    stale = oauth_url(fake, ck, cs, "orders", timestamp=int(time.time()) - 16 * 60)
    unknown = oauth_url(fake, "ck_" + "0" * 40, cs, "orders")
    missing = good.split("&oauth_signature=")[0]

    assert requests.get(good).status_code == 200
    assert error(requests.get(good)) == (401, "woocommerce_rest_authentication_error",
                                         "Invalid nonce - nonce has already been used.")
    assert error(requests.get(tampered)) == (401, "woocommerce_rest_authentication_error",
                                             "Invalid signature - provided signature does not match.")
    assert error(requests.get(stale)) == (401, "woocommerce_rest_authentication_error", "Invalid timestamp.")
    assert error(requests.get(unknown)) == (401, "woocommerce_rest_authentication_error",
                                            "Consumer key is invalid.")
    assert error(requests.get(missing)) == (401, "woocommerce_rest_authentication_missing_parameter",
                                            "Missing OAuth parameter oauth_signature")


def test_oauth_signature_covers_the_store_url_method_and_params_like_php(fake: FakeWooCommerce) -> None:
    ck, cs = fake.add_api_key()
    url = rest(fake, "orders")

    sha1 = requests.get(php_oauth_url(url, "GET", ck, cs, "HMAC-SHA1", {"status": "any"}))
    sha256 = requests.get(php_oauth_url(url, "GET", ck, cs, "HMAC-SHA256"))
    wrong_method = requests.post(php_oauth_url(url, "GET", ck, cs), json={})
    other_host = requests.get(php_oauth_url(url.replace("127.0.0.1", "localhost"), "GET", ck, cs)
                              .replace("localhost", "127.0.0.1"))

    assert sha1.status_code == sha256.status_code == 200
    assert error(wrong_method)[2] == "Invalid signature - provided signature does not match."
    assert error(other_host)[2] == "Invalid signature - provided signature does not match."
    # The package keeps "/" unencoded where PHP's rawurlencode encodes it (§5.2): a value
    # with a slash fails against a real store, and against this fake.
    api = woocommerce.API(url=fake.base_url, consumer_key=ck, consumer_secret=cs, version="wc/v3")
    assert error(api.get("orders", params={"search": "a/b"}))[2] == \
        "Invalid signature - provided signature does not match."


# ----------------------------------------------------------------- Basic auth and https


def test_basic_auth_only_counts_over_https(fake: FakeWooCommerce) -> None:
    ck, cs = fake.add_api_key()
    plain = requests.get(rest(fake, "orders"), auth=(ck, cs))
    forwarded = requests.get(rest(fake, "orders"), auth=(ck, cs), headers={"X-Forwarded-Proto": "https"})

    assert error(plain) == (401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
    assert forwarded.status_code == 200 and forwarded.json() == []

    create = requests.post(rest(fake, "orders"), auth=(ck, cs), json={"line_items": []})
    assert error(create) == (401, "woocommerce_rest_cannot_create",
                             "Sorry, you are not allowed to create resources.")


def test_https_store_basic_and_query_string_auth_and_key_errors() -> None:
    store = FakeWooCommerce(https=True)
    store.serve()
    try:
        ck, cs = store.add_api_key()
        order = store.create_order([{"name": "Gift card", "price": "5", "quantity": 1}])
        url = rest(store, f"orders/{order['id']}")

        basic = requests.get(url, auth=(ck, cs))
        query = requests.get(url, params={"consumer_key": ck, "consumer_secret": cs})
        wrong_secret = requests.get(url, auth=(ck, "cs_wrong"))
        unknown_key = requests.get(url, auth=("ck_unknown", cs))

        assert basic.status_code == query.status_code == 200
        assert basic.json()["_links"]["self"][0]["href"].startswith("https://")
        assert basic.json()["payment_url"].startswith("https://")
        assert [r["auth"] for r in store.requests[:2]] == ["basic_auth", "query_string"]
        assert error(wrong_secret) == (401, "woocommerce_rest_authentication_error",
                                       "Consumer secret is invalid.")
        assert wrong_secret.headers["WWW-Authenticate"].startswith('Basic realm="WooCommerce API.')
        # An unknown key is not an auth error: the request runs unauthenticated.
        assert error(unknown_key) == (401, "woocommerce_rest_cannot_view",
                                      "Sorry, you cannot view this resource.")
    finally:
        store.close()


def test_read_only_key_cannot_write(fake: FakeWooCommerce) -> None:
    reader = api_for(fake, "read")
    order = fake.create_order([{"product_id": 10, "quantity": 1}])

    assert reader.get(f"orders/{order['id']}").status_code == 200
    for resp in (reader.put(f"orders/{order['id']}", {"status": "processing"}),
                 reader.post(f"orders/{order['id']}/notes", {"note": "x"})):
        assert error(resp) == (401, "woocommerce_rest_authentication_error",
                               "The API key provided does not have write permissions.")
    assert fake.orders[order["id"]]["status"] == "pending"


# --------------------------------------------------------------------- errors and routes


def test_unknown_orders_404_on_read_but_400_on_update(fake: FakeWooCommerce) -> None:
    api = api_for(fake)

    assert error(api.get("orders/999")) == (404, "woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
    assert error(api.put("orders/999", {"status": "processing"})) == (
        400, "woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
    assert error(api.post("orders/999/notes", {"note": "x"})) == (
        404, "woocommerce_rest_order_invalid_id", "Invalid order ID.")
    assert error(api.get("orders/999/notes")) == (
        404, "woocommerce_rest_shop_order_invalid_id", "Invalid order ID.")
    assert error(api.get("nothing/here")) == (
        404, "rest_no_route", "No route was found matching the URL and request method.")
    # A leading slash in the endpoint makes the package request ".../v3//orders/1" (§5.2).
    assert error(api.get("/orders/1"))[1] == "rest_no_route"


def test_note_validation_and_deletion(fake: FakeWooCommerce) -> None:
    api = api_for(fake)
    order = fake.create_order([{"product_id": 10, "quantity": 1}])

    missing = api.post(f"orders/{order['id']}/notes", {"customer_note": True})
    not_bool = api.post(f"orders/{order['id']}/notes", {"note": "x", "customer_note": "yes"})
    note = api.post(f"orders/{order['id']}/notes", {"note": "x"}).json()
    no_force = api.delete(f"orders/{order['id']}/notes/{note['id']}")
    forced = api.delete(f"orders/{order['id']}/notes/{note['id']}", params={"force": True})

    assert missing.json() == {"code": "rest_missing_callback_param", "message": "Missing parameter(s): note",
                              "data": {"status": 400, "params": ["note"]}}
    assert error(not_bool)[:3] == (400, "rest_invalid_param", "Invalid parameter(s): customer_note")
    assert not_bool.json()["data"]["params"] == {"customer_note": "customer_note is not of type boolean."}
    assert error(no_force)[:2] == (501, "woocommerce_rest_trash_not_supported")
    assert forced.status_code == 200 and forced.json()["id"] == note["id"]
    gone = api.get(f"orders/{order['id']}/notes/{note['id']}")
    assert error(gone)[:2] == (404, "woocommerce_rest_invalid_id")


def test_invalid_json_and_invalid_status(fake: FakeWooCommerce) -> None:
    api = api_for(fake)
    order = fake.create_order([{"product_id": 10, "quantity": 1}])
    ck, cs = fake.add_api_key()
    signed = oauth_url(fake, ck, cs, f"orders/{order['id']}", method="PUT")

    bad_json = requests.put(signed, data=b"{not json", headers={"Content-Type": "application/json"})
    bad_status = api.put(f"orders/{order['id']}", {"status": "paid"})

    assert error(bad_json) == (400, "rest_invalid_json", "Invalid JSON body passed.")
    assert error(bad_status) == (400, "rest_invalid_param", "Invalid parameter(s): status")
    assert bad_status.json()["data"]["params"]["status"] == (
        "status is not one of pending, processing, on-hold, completed, cancelled, refunded, failed, "
        "and checkout-draft.")
    assert fake.orders[order["id"]]["status"] == "pending"


def test_unauthenticated_access_to_existing_and_missing_orders(fake: FakeWooCommerce) -> None:
    order = fake.create_order([{"product_id": 10, "quantity": 1}])

    assert error(requests.get(rest(fake, f"orders/{order['id']}"))) == (
        401, "woocommerce_rest_cannot_view", "Sorry, you cannot view this resource.")
    assert error(requests.put(rest(fake, f"orders/{order['id']}"), json={})) == (
        401, "woocommerce_rest_cannot_edit", "Sorry, you are not allowed to edit this resource.")
    # WC_REST_CRUD_Controller only checks permissions on an existing object.
    assert error(requests.get(rest(fake, "orders/999")))[:2] == (
        404, "woocommerce_rest_shop_order_invalid_id")


def test_order_delete_trashes_then_deletes(fake: FakeWooCommerce, receiver: Receiver) -> None:
    api = api_for(fake)
    hook = fake.add_webhook("order.deleted", receiver.url, "k")
    order = fake.create_order([{"product_id": 10, "quantity": 1}])

    trashed = api.delete(f"orders/{order['id']}")
    again = api.delete(f"orders/{order['id']}")
    listed = api.get("orders").json()
    forced = api.delete(f"orders/{order['id']}", params={"force": True})

    assert trashed.status_code == 200 and trashed.json()["status"] == "pending"   # as it was
    assert fake.queued() == [(hook["id"], order["id"])]
    assert error(again)[:2] == (410, "woocommerce_rest_already_trashed")
    assert listed == []                                   # status "any" leaves out the trash
    assert forced.status_code == 200 and order["id"] not in fake.orders
    assert error(api.get(f"orders/{order['id']}"))[:2] == (404, "woocommerce_rest_shop_order_invalid_id")
    [delivery] = fake.deliver_queued()
    assert delivery.payload == {"id": order["id"]}       # "deleted" events carry only the id


# ------------------------------------------------------------------- payment transitions


def test_set_paid_on_pending_completes_payment(fake: FakeWooCommerce) -> None:
    api = api_for(fake)
    order = fake.create_order([{"product_id": 10, "quantity": 2}])

    paid = api.put(f"orders/{order['id']}", {"set_paid": True, "transaction_id": "INV-88213"}).json()

    assert paid["status"] == "processing"
    assert paid["transaction_id"] == "INV-88213"
    assert paid["date_paid"] is not None and paid["date_paid_gmt"] is not None
    assert paid["needs_payment"] is False
    [note] = fake.notes(order["id"])
    assert note["note"] == "Order status changed from Pending payment to Processing."
    assert note["customer_note"] is False and note["author"] == "WooCommerce"


def test_set_paid_on_hold_is_ignored_but_status_processing_works(fake: FakeWooCommerce) -> None:
    api = api_for(fake)
    order = fake.create_order([{"product_id": 10, "quantity": 1}], status="on-hold", payment_method="bacs")

    ignored = api.put(f"orders/{order['id']}", {"set_paid": True, "transaction_id": "T1"}).json()
    moved = api.put(f"orders/{order['id']}", {"status": "processing"}).json()

    assert ignored["status"] == "on-hold" and ignored["date_paid"] is None
    assert ignored["transaction_id"] == "T1"   # the prop itself is still written
    assert moved["status"] == "processing" and moved["date_paid"] is not None  # maybe_set_date_paid()
    assert [n["note"] for n in fake.notes(order["id"])] == [
        "Order status changed from On hold to Processing."]


def test_set_paid_with_only_virtual_downloadable_items_completes(fake: FakeWooCommerce) -> None:
    api = api_for(fake)
    order = fake.create_order([{"product_id": 12, "quantity": 1}])

    paid = api.put(f"orders/{order['id']}", {"set_paid": True}).json()

    assert order["needs_processing"] is False
    assert paid["status"] == "completed" and paid["date_completed"] is not None


def test_rest_created_order_fires_order_created_and_set_paid(fake: FakeWooCommerce,
                                                             receiver: Receiver) -> None:
    api = api_for(fake)
    created_hook = fake.add_webhook("order.created", receiver.url, "secret-1")
    updated_hook = fake.add_webhook("order.updated", receiver.url, "secret-2")

    resp = api.post("orders", {"payment_method": "upay", "billing": {"email": "a@example.com"},
                               "line_items": [{"sku": "COF-250", "quantity": 2}], "set_paid": True})
    draft = api.post("orders", {"status": "checkout-draft", "line_items": [{"product_id": 11}]})

    body = resp.json()
    assert resp.status_code == 201 and resp.headers["Location"] == rest(fake, f"orders/{body['id']}")
    assert body["created_via"] == "rest-api" and body["status"] == "processing" and body["total"] == "9.000"
    assert draft.status_code == 201
    assert fake.queued() == [(created_hook["id"], body["id"]), (updated_hook["id"], body["id"])]


# -------------------------------------------------------------------------- money, shape


def test_kwd_totals_with_coupon_fee_and_shipping_add_up_exactly(fake: FakeWooCommerce) -> None:
    order = fake.create_order(
        [{"product_id": 10, "quantity": 2}, {"product_id": 11, "quantity": 1},
         {"name": "Cardamom", "price": "0.333", "quantity": 3}],
        coupon_lines=[{"code": "welcome1", "discount": "1.000"}],
        shipping_lines=[{"method_title": "Flat rate", "method_id": "flat_rate", "total": "1.500"}],
        fee_lines=[{"name": "Gift wrap", "total": "0.250"}, {"name": "Loyalty", "total": "-0.125"}])

    lines = order["line_items"]
    assert [li["subtotal"] for li in lines] == ["9.000", "3.000", "0.999"]
    shares = [Decimal(li["subtotal"]) - Decimal(li["total"]) for li in lines]
    assert sum(shares) == Decimal("1.000") == Decimal(order["discount_total"])
    # 1.000 x 9/12.999 and x 3/12.999 rounded to fils; the last line takes the remainder.
    assert [str(s) for s in shares] == ["0.692", "0.231", "0.077"]
    expected = (sum(Decimal(li["total"]) for li in lines) + sum(Decimal(li["total_tax"]) for li in lines)
                + Decimal(order["shipping_total"]) + sum(Decimal(f["total"]) for f in order["fee_lines"]))
    assert order["total"] == "13.624" == str(expected)
    assert all(len(order[k].split(".")[1]) == 3 for k in ("total", "shipping_total", "cart_tax"))
    # price = total / quantity as PHP computes it: a float unless it divides into an int.
    assert [li["price"] for li in lines] == [4.154, 2.769, 0.922 / 3]
    whole = fake.create_order([{"product_id": 11, "quantity": 2}])["line_items"][0]
    assert whole["price"] == 3 and isinstance(whole["price"], int)


def test_order_representation_matches_woocommerce(fake: FakeWooCommerce) -> None:
    order = fake.create_order([{"product_id": 10, "quantity": 1, "total_tax": "0.225"}], customer_id=17,
                              number="INV-1001")

    assert list(order) == [
        "id", "parent_id", "status", "currency", "version", "prices_include_tax", "date_created",
        "date_modified", "discount_total", "discount_tax", "shipping_total", "shipping_tax", "cart_tax",
        "total", "total_tax", "customer_id", "order_key", "billing", "shipping", "payment_method",
        "payment_method_title", "transaction_id", "customer_ip_address", "customer_user_agent",
        "created_via", "customer_note", "date_completed", "date_paid", "cart_hash", "number", "meta_data",
        "line_items", "tax_lines", "shipping_lines", "fee_lines", "coupon_lines", "refunds", "payment_url",
        "is_editable", "needs_payment", "needs_processing", "date_created_gmt", "date_modified_gmt",
        "date_completed_gmt", "date_paid_gmt", "currency_symbol", "_links"]
    assert order["number"] == "INV-1001" and order["currency_symbol"] == "د.ك"
    assert order["order_key"].startswith("wc_order_") and len(order["order_key"]) == 22
    assert order["total"] == "4.725" and order["cart_tax"] == "0.225"
    assert order["tax_lines"][0]["tax_total"] == "0.225"
    assert order["line_items"][0]["taxes"] == [{"id": 1, "total": "0.225", "subtotal": "0.225"}]
    assert order["payment_url"] == (f"{fake.base_url}/checkout/order-pay/{order['id']}/?pay_for_order=true"
                                    f"&key={order['order_key']}")
    assert order["_links"]["customer"] == [{"href": rest(fake, "customers/17")}]
    assert len(order["date_created"]) == 19 and "+" not in order["date_created"]
    assert order["date_created"] != order["date_created_gmt"]   # Kuwait time vs UTC
    assert all(isinstance(m["id"], int) for m in order["meta_data"])
    assert order["needs_payment"] is True and order["is_editable"] is True


def test_orders_list_filters_pages_and_validates(fake: FakeWooCommerce) -> None:
    api = api_for(fake)
    ids = [fake.create_order([{"product_id": 10, "quantity": 1}])["id"] for _ in range(3)]
    fake.create_order([{"product_id": 10, "quantity": 1}], status="on-hold")

    page = api.get("orders", params={"status": "pending,on-hold", "per_page": 2, "orderby": "id",
                                     "order": "asc"})
    too_many = api.get("orders", params={"per_page": 101})

    assert [o["id"] for o in page.json()] == ids[:2]
    assert page.headers["X-WP-Total"] == "4" and page.headers["X-WP-TotalPages"] == "2"
    assert 'rel="next"' in page.headers["Link"]
    assert error(too_many)[:3] == (400, "rest_invalid_param", "Invalid parameter(s): per_page")


# ------------------------------------------------------------------------ webhook sender


def test_delivery_headers_body_and_signature(fake: FakeWooCommerce, receiver: Receiver) -> None:
    secret = "s3cr3t-for-tests"
    hook = fake.add_webhook("order.created", receiver.url, secret, name="bridge")
    order = fake.create_order([{"product_id": 10, "quantity": 2}],
                              billing={"first_name": "فاطمة", "email": "fatima@example.com"})
    fake.set_order_status(order["id"], "on-hold")   # changes after creation show in the payload

    [record] = fake.deliver_queued()
    request = receiver.deliveries()[0]
    names = [k for k, _ in request["headers"]]
    body = request["body"]

    assert request["version"] == "HTTP/1.0" and request["path"] == "/hook"
    ordered = ["User-Agent", "Content-Type", "X-WC-Webhook-Source", "X-WC-Webhook-Topic",
               "X-WC-Webhook-Resource", "X-WC-Webhook-Event", "X-WC-Webhook-Signature", "X-WC-Webhook-ID",
               "X-WC-Webhook-Delivery-ID"]
    assert [n for n in names if n in ordered] == ordered
    headers = dict(request["headers"])
    assert headers["User-Agent"] == "WooCommerce/7.9.0 Hookshot (WordPress/6.1.9)"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-WC-Webhook-Source"] == fake.base_url + "/"
    assert [headers[f"X-WC-Webhook-{k}"] for k in ("Topic", "Resource", "Event")] == [
        "order.created", "order", "created"]
    assert headers["X-WC-Webhook-ID"] == str(hook["id"])
    assert len(headers["X-WC-Webhook-Delivery-ID"]) == 32
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    assert headers["X-WC-Webhook-Signature"] == expected == record.signature
    assert b"\\/" in body and b"\\u0641\\u0627\\u0637\\u0645\\u0629" in body   # PHP escaping
    assert b'": ' not in body and b'", "' not in body and max(body) < 128
    payload = json.loads(body)
    assert payload == fake.order(order["id"]) and payload["status"] == "on-hold"
    assert body == wp_json_encode(payload).encode()
    assert record.success and record.status == 200 and fake.webhooks[hook["id"]]["failure_count"] == 0


def test_signature_reproduces_the_reference_test_vector() -> None:
    body = ('{"id":1234,"number":"1234","status":"pending","currency":"KWD","total":"12.500",'
            '"billing":{"first_name":"\\u0641\\u0627\\u0637\\u0645\\u0629","email":"fatima@example.com"},'
            '"_links":{"self":[{"href":"https:\\/\\/shop.example\\/wp-json\\/wc\\/v3\\/orders\\/1234"}]}}')
    payload = {"id": 1234, "number": "1234", "status": "pending", "currency": "KWD", "total": "12.500",
               "billing": {"first_name": "فاطمة", "email": "fatima@example.com"},
               "_links": {"self": [{"href": "https://shop.example/wp-json/wc/v3/orders/1234"}]}}

    assert wp_json_encode(payload) == body
    assert webhook_signature(body.encode(), "s3cr3t-for-tests") == \
        "8Vo9ljz9KTXpWKTXCr1WCtBLoJga5Le/j8JYCo1m23o="
    # The secret passes through wp_specialchars_decode() first.
    assert webhook_signature(b"x", "a&amp;b") == webhook_signature(b"x", "a&b")


def test_delivery_id_is_shared_within_a_second(fake: FakeWooCommerce, receiver: Receiver) -> None:
    hook = fake.add_webhook("order.created", receiver.url, "k")
    order = fake.create_order([{"product_id": 10, "quantity": 1}])
    now = [1_900_000_000.2]
    fake.clock = lambda: now[0]

    same = fake.deliver(hook["id"], order["id"], times=2, concurrently=True)
    now[0] += 1
    later = fake.deliver(hook["id"], order["id"])

    assert len(same) == 2 and same[0].delivery_id == same[1].delivery_id
    assert later[0].delivery_id != same[0].delivery_id
    assert len(receiver.deliveries()) == 3


def test_ping_requires_exactly_200_and_repeats_after_deliveries(fake: FakeWooCommerce,
                                                                receiver: Receiver) -> None:
    receiver.statuses = [201]
    hook = fake.add_webhook("order.created", receiver.url, "k")
    order = fake.create_order([{"product_id": 10, "quantity": 1}])

    assert fake.webhooks[hook["id"]]["pending_delivery"] is True
    [ping] = receiver.pings()
    assert ping["body"] == f"webhook_id={hook['id']}".encode()
    assert [k for k, _ in ping["headers"] if k.lower().startswith("x-wc")] == []
    assert dict(ping["headers"])["Content-Type"] == "application/x-www-form-urlencoded"
    assert dict(ping["headers"])["User-Agent"] == "WooCommerce/7.9.0 Hookshot (WordPress/6.1.9)"

    fake.deliver_queued()   # the delivery's save pings again; this time the receiver says 200
    fake.deliver(hook["id"], order["id"])

    assert [len(receiver.pings()), len(receiver.deliveries())] == [2, 2]
    assert fake.webhooks[hook["id"]]["pending_delivery"] is False
    assert [p.status for p in fake.pings] == [201, 200] and not fake.pings[0].success


def test_seventh_consecutive_failure_disables_and_nothing_is_retried(
        fake: FakeWooCommerce, receiver: Receiver) -> None:
    hook = fake.add_webhook("order.created", receiver.url, "k")
    order = fake.create_order([{"product_id": 10, "quantity": 1}])
    fake.deliver_queued()
    receiver.default_status = 500

    counts = []
    for _ in range(7):
        fake.deliver(hook["id"], order["id"])
        counts.append((fake.webhooks[hook["id"]]["failure_count"], fake.webhooks[hook["id"]]["status"]))

    assert counts[:6] == [(n, "active") for n in range(1, 7)]
    assert counts[6] == (6, "disabled")
    assert len(receiver.deliveries()) == 8            # exactly one request per attempt
    fake.create_order([{"product_id": 10, "quantity": 1}])
    assert fake.queued() == []                        # disabled webhooks get nothing


def test_success_range_resets_failures_and_transport_errors_count(fake: FakeWooCommerce,
                                                                   receiver: Receiver) -> None:
    hook = fake.add_webhook("order.created", receiver.url, "k")
    order = fake.create_order([{"product_id": 10, "quantity": 1}])
    receiver.statuses = [500, 302, 303]

    failed, redirected, see_other = (fake.deliver(hook["id"], order["id"])[0] for _ in range(3))
    assert (failed.success, redirected.success, see_other.success) == (False, True, False)
    assert len(receiver.deliveries()) == 3                       # the 302 was not followed
    assert fake.webhooks[hook["id"]]["failure_count"] == 1

    dead = FakeWooCommerce()
    dead.delivery_timeout = 0.5
    dead_hook = dead.add_webhook("order.created", "http://127.0.0.1:9/hook", "k")  # nothing listens
    [refused] = dead.deliver(dead_hook["id"], 1)
    assert refused.status is None and "Connection refused" in (refused.error or "")
    assert dead.webhooks[dead_hook["id"]]["failure_count"] == 1


def test_error_payload_and_duplicates(fake: FakeWooCommerce, receiver: Receiver) -> None:
    hook = fake.add_webhook("order.created", receiver.url, "k")
    order = fake.create_order([{"product_id": 10, "quantity": 1}])

    [err] = fake.deliver(hook["id"], order["id"], error_payload=True)
    dupes = fake.deliver(hook["id"], order["id"], times=3, concurrently=True)

    assert err.payload == {"code": "woocommerce_rest_cannot_view",
                           "message": "Sorry, you cannot view this resource.", "data": {"status": 401}}
    assert err.header("X-WC-Webhook-Signature") == webhook_signature(err.request_body, "k")
    assert err.header("X-WC-Webhook-Topic") == "order.created"
    assert len(dupes) == 3 and {d.payload["id"] for d in dupes} == {order["id"]}


def test_updates_coalesce_in_the_queue_and_auto_deliver_runs_after_the_answer(receiver: Receiver) -> None:
    store = FakeWooCommerce(auto_deliver=True)
    store.serve()
    try:
        store.add_product(10, "Coffee", "4.500")
        api = api_for(store)
        hook = store.add_webhook("order.updated", receiver.url, "k")
        order = store.create_order([{"product_id": 10, "quantity": 1}])

        api.put(f"orders/{order['id']}", {"set_paid": True})   # two saves, one delivery
        assert store.wait_idle(5)

        [delivery] = store.deliveries
        assert delivery.webhook_id == hook["id"] and delivery.payload["status"] == "processing"
    finally:
        store.close()


# ------------------------------------------------------------------------------ faults


def test_faults_and_maintenance_mode(fake: FakeWooCommerce) -> None:
    ck, cs = fake.add_api_key()
    api = woocommerce.API(url=fake.base_url, consumer_key=ck, consumer_secret=cs, version="wc/v3",
                          timeout=0.5)
    order = fake.create_order([{"product_id": 10, "quantity": 1}])

    fake.faults.add("status", path_contains="/notes")
    unavailable = api.post(f"orders/{order['id']}/notes", {"note": "a"})
    assert unavailable.status_code == 503 and unavailable.headers["Content-Type"].startswith("text/html")
    assert "Briefly unavailable" in unavailable.text and fake.notes(order["id"]) == []

    fake.faults.add("timeout", method="POST", seconds=1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.post(f"orders/{order['id']}/notes", {"note": "b"})
    assert [n["note"] for n in fake.notes(order["id"])] == ["b"]     # the write happened

    fake.faults.add("timeout_before", seconds=0.1)
    gateway = api.post(f"orders/{order['id']}/notes", {"note": "c"})
    assert gateway.status_code == 504 and len(fake.notes(order["id"])) == 1

    fake.faults.add("non_json", count=2)
    cached = [api.get(f"orders/{order['id']}") for _ in range(2)]
    assert [c.status_code for c in cached] == [200, 200]
    with pytest.raises(ValueError):
        cached[0].json()
    assert api.get(f"orders/{order['id']}").json()["id"] == order["id"]   # count used up

    fake.set_down(True)
    down = api.get(f"orders/{order['id']}")
    assert down.status_code == 503 and down.headers["Retry-After"] == "600"
    fake.set_down(False)
    assert api.get(f"orders/{order['id']}").status_code == 200
    assert [r["fault"] for r in fake.requests if r["fault"]] == ["status", "timeout", "timeout_before",
                                                                  "non_json", "non_json"]
