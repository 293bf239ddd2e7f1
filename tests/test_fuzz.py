"""Malformed, oversized, wrongly signed and unicode-laden requests to every public endpoint.

The app is built once per module and driven through Flask's test client. Invariants: never a 5xx;
JSON endpoints answer 4xx with a JSON error body; an unauthenticated request stores nothing (UPay
notifications and return/cancel visits are recorded by ``Payments._record_signal``, and one that
matches no invoice of the store is recorded with state ``unmatched`` only).
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings, strategies as st

from bridge import db
from bridge.stores.woocommerce import webhook_signature
from bridge.app import create_app
from bridge.config import load_settings
from bridge.crypto import generate_key
from bridge.registry import StoreSettings
from bridge.runtime import bootstrap

SALEOR_API = "http://127.0.0.1:9/graphql/"  # nothing listens: probes fail fast
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = tmp_path_factory.mktemp("fuzz")
    cfg = load_settings({}, data_dir=data).with_overrides(
        database_url=f"sqlite:///{data / 'bridge.db'}", queue_url="memory://",
        secret_keys=(generate_key(),), public_url="http://127.0.0.1:8000",
        max_body_bytes=16 * 1024, saleor_allowed_api_urls=r"http://127\.0\.0\.1:9/graphql/")
    rt = bootstrap(cfg)
    wc = rt.registry.add("woocommerce", "http://127.0.0.1:9", {
        "consumer_key": "ck_fuzz", "consumer_secret": "cs_fuzz", "webhook_secret": "whsec-fuzz",
        "upay_api_key": "upay-fuzz"}, name="fuzz shop", upay_sandbox=True,
        settings=StoreSettings())
    saleor = rt.registry.add("saleor", SALEOR_API, {
        "app_token": "tok-fuzz", "app_id": "QXBwOjE=", "jwks": json.dumps({"keys": []})},
        name="saleor", upay_sandbox=True, require_upay_key=False)
    client = create_app(rt).test_client()
    yield rt, client, wc, saleor
    rt.close()


def count(rt, table) -> int:
    with rt.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def assert_nothing_stored(rt) -> None:
    for table in (db.orders, db.deliveries, db.payments, db.attempts):
        assert count(rt, table) == 0, table.name
    assert count(rt, db.stores) == 2
    with rt.engine.connect() as conn:
        states = {r.state for r in conn.execute(sa.select(db.notifications.c.state))}
        assert states <= {"unmatched"}, states
        assert conn.execute(sa.select(db.installs.c.store_id).where(
            db.installs.c.store_id.is_not(None))).first() is None


def check(resp, *, json_api: bool = True) -> None:
    assert resp.status_code < 500, (resp.status_code, resp.get_data()[:300])
    if json_api and 400 <= resp.status_code < 500:
        assert resp.mimetype == "application/json", (resp.status_code, resp.get_data()[:200])
        body = resp.get_json()
        assert isinstance(body, dict) and "error" in body, body
    assert resp.headers.get("X-Request-ID")


# -- strategies ---------------------------------------------------------------------------------

segment = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255,
                                    blacklist_characters="\x7f"), max_size=200)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner,
                                                                 max_size=5),
    max_leaves=20)
json_body = json_value.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8"))
order_like = st.fixed_dictionaries({
    "id": st.integers() | st.text(max_size=10), "status": st.sampled_from(["pending", "", "x"]),
    "currency": st.text(max_size=5), "total": st.text(max_size=10) | st.integers(),
    "line_items": st.lists(st.dictionaries(st.text(max_size=10), json_value, max_size=4),
                           max_size=3),
    "billing": st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=4),
}).map(lambda v: json.dumps(v).encode())
body = st.one_of(st.binary(max_size=600), json_body, order_like,
                 st.text(max_size=300).map(lambda t: t.encode("utf-8")))
headers = st.dictionaries(
    st.sampled_from(["X-WC-Webhook-Signature", "X-WC-Webhook-Topic", "X-WC-Webhook-Source",
                     "X-WC-Webhook-Delivery-ID", "Saleor-Signature", "Saleor-Event",
                     "Saleor-Api-Url", "X-Request-ID", "Content-Type", "Accept-Language"]),
    header_text, max_size=6)
content_type = st.sampled_from([None, "application/json", "application/x-www-form-urlencoded",
                                "text/plain", "multipart/form-data; boundary=x",
                                "application/json; charset=latin-1"])
query = st.dictionaries(st.text(max_size=20), st.text(max_size=60), max_size=5)


def q(text: str) -> str:
    return quote(text, safe="")


# -- webhooks -----------------------------------------------------------------------------------

@FUZZ
@given(data=body, hdrs=headers, ctype=content_type, store=st.one_of(segment, st.just("")),
       kind=st.sampled_from(["woocommerce", "saleor", "shopify"]))
def test_woocommerce_webhook(env, data, hdrs, ctype, store, kind):
    rt, client, wc, _ = env
    store_id = store or wc.id
    if ctype:
        hdrs = {**hdrs, "Content-Type": ctype}
    check(client.post(f"/webhooks/{q(kind)}/{q(store_id)}", data=data, headers=hdrs))
    assert_nothing_stored(rt)


@FUZZ
@given(data=body, hdrs=headers, api=st.sampled_from([SALEOR_API, "", "http://x/"]) | header_text,
       event=st.sampled_from(["order_created", "ORDER_CREATED", "", "x"]) | header_text)
def test_saleor_webhook(env, data, hdrs, api, event):
    rt, client, _, _ = env
    hdrs = {**hdrs, "Saleor-Api-Url": api, "Saleor-Event": event}
    check(client.post("/webhooks/saleor", data=data, headers=hdrs))
    assert_nothing_stored(rt)


def test_oversized_bodies_are_a_json_413(env):
    rt, client, wc, _ = env
    for path in (f"/webhooks/woocommerce/{wc.id}", "/webhooks/saleor", f"/upay/notify/{wc.id}",
                 "/saleor/register", "/app/connect/callback/abc"):
        resp = client.post(path, data=b"{" + b" " * (17 * 1024) + b"}",
                           headers={"Content-Type": "application/json",
                                    "Saleor-Api-Url": SALEOR_API})
        assert resp.status_code == 413, (path, resp.status_code)
        check(resp)
    assert_nothing_stored(rt)


def test_deeply_nested_json_is_a_clear_4xx(env):
    rt, client, wc, _ = env
    deep = b"[" * 6000 + b"]" * 6000  # under the body limit, past the parser's recursion limit
    signed = {"X-WC-Webhook-Topic": "order.created",
              "X-WC-Webhook-Signature": webhook_signature(deep, "whsec-fuzz")}
    resp = client.post(f"/webhooks/woocommerce/{wc.id}", data=deep,
                       headers={"Content-Type": "application/json", **signed})
    assert resp.status_code == 400 and "nested too deeply" in resp.get_json()["error"]["message"]
    for path in (f"/upay/notify/{wc.id}", "/saleor/register", "/saleor/app/session",
                 "/app/connect/callback/abc"):
        resp = client.post(path, data=deep, headers={"Content-Type": "application/json",
                                                      "Saleor-Api-Url": SALEOR_API})
        assert resp.status_code < 500, (path, resp.status_code)
        check(resp)
    assert_nothing_stored(rt)


def test_json_deeper_than_the_limit_is_refused(env):
    rt, client, wc, _ = env
    from bridge.json_depth import MAX_DEPTH

    def nested(levels: int) -> bytes:
        return b'{"a":' * (levels - 1) + b"{}" + b"}" * (levels - 1)

    for levels, refused in ((MAX_DEPTH, False), (MAX_DEPTH + 1, True)):
        body = nested(levels)
        signed = {"X-WC-Webhook-Topic": "order.created",
                  "X-WC-Webhook-Signature": webhook_signature(body, "whsec-fuzz")}
        resp = client.post(f"/webhooks/woocommerce/{wc.id}", data=body,
                           headers={"Content-Type": "application/json", **signed})
        message = resp.get_json()["error"]["message"]
        # At the limit the body parses (and is then refused as no order); past it, it does not.
        assert resp.status_code in (400, 422)
        assert ("nested too deeply" in message) is refused, (levels, message)
        resp = client.post("/saleor/app/session", data=body,
                           headers={"Content-Type": "application/json"})
        assert resp.status_code < 500
        check(resp)
    assert_nothing_stored(rt)


# -- UPay callbacks -----------------------------------------------------------------------------

@FUZZ
@given(data=body, ctype=content_type, args=query, fields=st.dictionaries(
    st.sampled_from(["requested_order_id", "result", "track_id", "payment_id", "ref", "trn_udf",
                     "order_id"]), st.text(max_size=80) | st.integers() | st.none(), max_size=6),
    store=st.one_of(segment, st.just("")), as_json=st.booleans())
def test_upay_notify(env, data, ctype, args, fields, store, as_json):
    rt, client, wc, saleor = env
    store_id = store or wc.id
    if as_json:
        resp = client.post(f"/upay/notify/{q(store_id)}", json=fields, query_string=args)
    else:
        resp = client.post(f"/upay/notify/{q(store_id)}", data=data, query_string=args,
                           headers={"Content-Type": ctype} if ctype else {})
    check(resp)
    assert_nothing_stored(rt)


@FUZZ
@given(kind=st.sampled_from(["return", "cancel", "status"]), store=st.one_of(segment, st.just("")),
       token=segment, raw_query=st.text(max_size=200), lang=header_text)
def test_upay_return_cancel_status(env, kind, store, token, raw_query, lang):
    rt, client, wc, saleor = env
    store_id = store or (wc.id if len(token) % 2 else saleor.id)
    resp = client.get(f"/upay/{kind}/{q(store_id)}/{q(token)}?{quote(raw_query, safe='=&?')}",
                      headers={"Accept-Language": lang})
    check(resp, json_api=kind == "status" or resp.mimetype == "application/json")
    assert_nothing_stored(rt)


# -- Saleor app and WooCommerce's connect callback ----------------------------------------------

@FUZZ
@given(data=body, payload=json_value, api=st.sampled_from([SALEOR_API, "", "http://evil/"]) |
       header_text, path=st.sampled_from(["/saleor/register", "/saleor/app/session"]),
       as_json=st.booleans())
def test_saleor_register_and_session(env, data, payload, api, path, as_json):
    rt, client, _, _ = env
    if path.endswith("session") and isinstance(payload, dict) and as_json:
        payload = {**payload, "saleorApiUrl": api}
    hdrs = {"Saleor-Api-Url": api}
    resp = (client.post(path, json=payload, headers=hdrs) if as_json
            else client.post(path, data=data, headers=hdrs))
    check(resp)
    assert_nothing_stored(rt)


@FUZZ
@given(token=segment, payload=json_value | st.fixed_dictionaries({
    "user_id": st.text(max_size=30), "consumer_key": st.text(max_size=30),
    "consumer_secret": st.text(max_size=30),
    "key_permissions": st.sampled_from(["read_write", "read", ""])}), data=body,
    as_json=st.booleans())
def test_connect_callback(env, token, payload, data, as_json):
    rt, client, _, _ = env
    path = f"/app/connect/callback/{q(token)}"
    resp = client.post(path, json=payload) if as_json else client.post(path, data=data)
    check(resp)
    assert resp.status_code != 200
    assert_nothing_stored(rt)


@FUZZ
@given(form=st.dictionaries(st.sampled_from(["email", "password", "csrf_token", "next"]),
                            st.text(max_size=100), max_size=4), data=body,
       as_form=st.booleans(), method=st.sampled_from(["GET", "POST"]), args=query)
def test_login(env, form, data, as_form, method, args):
    rt, client, _, _ = env
    if method == "GET":
        resp = client.get("/app/login", query_string=args)
    elif as_form:
        resp = client.post("/app/login", data=form, query_string=args)
    else:
        resp = client.post("/app/login", data=data, query_string=args)
    check(resp, json_api=False)
    # nobody signs in: a failed CSRF check sends the browser back to the sign-in page
    assert resp.status_code != 303 or resp.headers["Location"].endswith("/app/login")
    assert_nothing_stored(rt)
