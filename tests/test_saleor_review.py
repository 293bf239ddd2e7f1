"""Review of the Saleor App path and store health: each test reproduces a bug found in review."""

from __future__ import annotations

import json
import time

import pytest

from bridge import db
from bridge.errors import SignatureError, StoreConnectionError
from bridge.stores.saleor_signature import JwksRefetchLimiter
from bridge.stores import saleor as saleor_store
from bridge.web import webhooks

from .conftest import WEBHOOK_SECRET
from .test_saleor import ORDER_BODY, _post, _sign_with_a_stranger_key
from .test_webhooks import order_payload
from .test_webhooks import post as post_wc

# Every test here runs on SQLite and on PostgreSQL: the NUL refusal differs between them.
BOTH_LAYOUTS = True
ORDER_ID = "T3JkZXI6ZmFrZS1vcmRlcg=="


def _jwks_fetches(saleor) -> int:
    return sum(1 for r in list(saleor.requests) if r.path == "/.well-known/jwks.json")


# -- JWKS refetch abuse ---------------------------------------------------------------------------

def test_forged_signatures_do_not_make_the_bridge_fetch_the_jwks_each_time(
        installed, bridge, saleor, fake_upay):
    before = _jwks_fetches(saleor)
    good = saleor.sign(ORDER_BODY)
    for _ in range(10):
        # a made-up key id, and the store's real key id over another body
        assert _post(bridge, saleor, ORDER_BODY, _sign_with_a_stranger_key(ORDER_BODY)) \
            .status_code in (401, 503)
        assert _post(bridge, saleor, ORDER_BODY + b" ", good).status_code == 401
    assert _jwks_fetches(saleor) - before <= 1
    assert bridge.count(db.orders) == 0 and fake_upay.charges() == []
    # the genuine delivery still goes through
    resp = _post(bridge, saleor, ORDER_BODY, good)
    assert resp.status_code == 200, resp.text


def test_key_rotated_just_after_a_forged_request_is_retried_not_refused(
        installed, bridge, saleor, monkeypatch):
    monkeypatch.setattr(saleor_store.JWKS_REFETCHES, "interval", 1.0)
    assert _post(bridge, saleor, ORDER_BODY, _sign_with_a_stranger_key(ORDER_BODY)) \
        .status_code == 401  # fetched the JWKS: still the old key
    saleor.rotate_key()
    # Within the interval: "try again later" (Saleor retries a 5xx, never a 4xx) ...
    resp = _post(bridge, saleor, ORDER_BODY, saleor.sign(ORDER_BODY))
    assert resp.status_code == 503, resp.text
    time.sleep(1.1)
    # ... and its retry fetches the new key and is accepted, the new JWKS kept.
    resp = _post(bridge, saleor, ORDER_BODY, saleor.sign(ORDER_BODY))
    assert resp.status_code == 200, resp.text
    stored = json.loads(bridge.runtime.registry.get(installed.id).secrets["jwks"])
    assert stored == saleor.jwks()


def test_a_rotated_key_fetched_for_one_request_serves_the_next(installed, bridge, saleor):
    saleor.rotate_key()
    assert _post(bridge, saleor, ORDER_BODY, _sign_with_a_stranger_key(ORDER_BODY)) \
        .status_code == 401  # this fetch already brings the new key
    before = _jwks_fetches(saleor)
    resp = _post(bridge, saleor, ORDER_BODY, saleor.sign(ORDER_BODY))
    assert resp.status_code == 200, resp.text
    assert _jwks_fetches(saleor) == before


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _stranger_jwks() -> tuple[str, dict]:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt import api_jws
    from jwt.algorithms import RSAAlgorithm

    from bridge.stores.saleor_signature import thumbprint
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    kid = thumbprint(jwk)
    jwk.update({"use": "sig", "kid": kid, "alg": "RS256"})
    sig = api_jws.encode(b"{}", key=key, algorithm="RS256", is_payload_detached=True,
                         headers={"kid": kid, "crit": ["b64"]})
    return sig, {"keys": [jwk]}


def test_refetch_limiter_unit():
    clock = _Clock()
    limiter = JwksRefetchLimiter(10.0, clock=clock)
    sig, jwks = _stranger_jwks()
    calls = []

    def fetch():
        calls.append(1)
        return jwks

    # A key cached under its own thumbprint: a fetch cannot help, none is made.
    with pytest.raises(SignatureError):
        limiter.fetcher("s", sig, jwks, fetch)()
    assert calls == []
    # Unknown to the cache: one fetch, then the result is reused within the interval.
    assert limiter.fetcher("s", sig, None, fetch)() == jwks
    assert limiter.fetcher("s", sig, None, fetch)() == jwks
    assert len(calls) == 1
    other_sig, _ = _stranger_jwks()
    with pytest.raises(StoreConnectionError):
        limiter.fetcher("s", other_sig, None, fetch)()
    assert len(calls) == 1
    assert limiter.fetcher("t", other_sig, None, fetch)() == jwks  # another store: its own
    assert len(calls) == 2
    clock.now += 10.0
    assert limiter.fetcher("s", other_sig, None, fetch)() == jwks
    assert len(calls) == 3

    # A failed fetch counts too: a down JWKS endpoint is not hammered.
    def down():
        calls.append(1)
        raise StoreConnectionError("down")
    clock.now += 10.0
    for _ in range(3):
        with pytest.raises(StoreConnectionError):
            limiter.fetcher("s", other_sig, None, down)()
    assert len(calls) == 4


# -- characters no database column holds --------------------------------------------------------

def _saleor_body(**order: object) -> bytes:
    data = json.loads(ORDER_BODY)
    data["order"].update(order)
    # json.dumps escapes the backslash of "\\u0000": undo it, so the body carries the escape.
    return json.dumps(data).encode().replace(b"\\\\u", b"\\u")


@pytest.mark.parametrize("field,value", [
    ("id", "T3JkZXI6\\u0000x"), ("id", "T3JkZXI6\\ud800x"), ("number", "7\\u00007"),
    ("number", "7\\udc007"),
])
def test_saleor_id_or_number_that_no_column_holds_is_422_not_500(
        installed, bridge, saleor, fake_upay, field, value):
    body = _saleor_body(**{field: value})
    resp = _post(bridge, saleor, body, saleor.sign(body))
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["message"]
    assert bridge.count(db.orders) == 0 and bridge.count(db.deliveries) == 0


def test_saleor_text_fields_lose_nul_and_lone_surrogates(installed, bridge, saleor):
    body = _saleor_body(userEmail="jane\\ud800@example.com\\u0000", chargeStatus="NEW\\u0000",
                        lines=[{"id": "TDox", "productName": "Tea \\ud83d\\ude00\\u0000",
                                "variantName": "\\udfff", "productSku": "T\\u0000", "quantity": 1,
                                "totalPrice": {"gross": {"amount": 2.0, "currency": "KWD"}}}])
    store = webhooks.adapter_for(installed)
    order = store.parse_order(body)
    assert order.customer.email == "jane@example.com"
    assert order.status == "new"
    assert order.lines[0].name == "Tea \U0001f600" and order.lines[0].sku == "T"
    resp = _post(bridge, saleor, body, saleor.sign(body))
    assert resp.status_code == 200, resp.text  # recorded (skipped: status "new"), not a 500
    assert bridge.order(ORDER_ID).state == "skipped"


@pytest.mark.parametrize("override", [
    {"number": "12\\u000034"}, {"status": "pending\\u0000"}, {"status": "pending\\ud800"},
])
def test_woocommerce_number_or_status_that_no_column_holds_is_422_not_500(
        bridge_factory, connect_store, override):
    bridge = bridge_factory(worker=False)
    record = connect_store(bridge)
    body = json.dumps(order_payload(**override)).encode().replace(b"\\\\u", b"\\u")
    resp = post_wc(bridge, record, body, secret=WEBHOOK_SECRET)
    assert resp.status_code == 422, resp.text
    assert bridge.count(db.orders) == 0


def test_woocommerce_email_with_a_lone_surrogate_is_cleaned(bridge_factory, connect_store):
    bridge = bridge_factory(worker=False)
    record = connect_store(bridge)
    payload = order_payload(billing={"first_name": "A", "last_name": "B", "country": "KW",
                                     "email": "fatima\\ud800@example.com", "phone": "\\u0000"})
    body = json.dumps(payload).encode().replace(b"\\\\u", b"\\u")
    order = webhooks.adapter_for(record).parse_order(body)
    assert order.customer.email == "fatima@example.com" and order.customer.phone == ""
    assert post_wc(bridge, record, body, secret=WEBHOOK_SECRET).status_code == 200


def test_dashboard_tokens_with_unknown_key_ids_do_not_make_the_bridge_fetch_the_jwks_each_time(
        installed, bridge, saleor):
    """POST /saleor/app/session needs no credentials: twenty tokens under made-up key ids make
    at most one JWKS fetch (the webhooks' per-store limit), each answered 401, never a 500."""
    import jwt
    import requests
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    before = _jwks_fetches(saleor)
    for i in range(20):
        token = jwt.encode({"app": installed.secrets["app_id"], "exp": time.time() + 60}, key,
                           algorithm="RS256", headers={"kid": f"made-up-{i}"})
        resp = requests.post(f"{bridge.url}/saleor/app/session", timeout=10,
                             json={"token": token, "saleorApiUrl": installed.url})
        assert resp.status_code == 401, resp.text
    assert _jwks_fetches(saleor) - before <= 1
