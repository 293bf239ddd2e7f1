"""Saleor end to end: install the App, ORDER_CREATED, invoice, note and transaction on the order,
payment, CHARGE_SUCCESS; against the fake Saleor and the fake UPay over real HTTP."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
import requests
from bridge.app import create_app
from bridge.fakes.saleor import FakeSaleor
from bridge.manifest import manifest

from .conftest import UPAY_KEY, wait_for


def place(saleor, **kwargs):
    order = saleor.create_order([{"name": "Arabic Coffee", "variant": "250g", "sku": "COF",
                                  "quantity": 2, "unit_price": "4.125"}], shipping="1.500", **kwargs)
    saleor.deliver_queued()
    return order


def test_manifest_points_at_the_apps_routes(bridge):
    data = manifest(bridge.url)
    assert data["permissions"] == ["MANAGE_ORDERS", "HANDLE_PAYMENTS"]
    [hook] = data["webhooks"]
    assert hook["asyncEvents"] == ["ORDER_CREATED"] and hook["query"].startswith("subscription")
    urls = create_app(bridge.runtime).url_map.bind("bridge.example")  # the server's own routes
    for key, method in (("tokenTargetUrl", "POST"), ("appUrl", "GET")):
        path = data[key].removeprefix(bridge.url)
        endpoint, _ = urls.match(path, method=method)
        assert endpoint
    # the webhook endpoint (served in front of Flask) takes it: an unsigned POST from an
    # unknown Saleor is its JSON 404, not Flask's
    answer = requests.post(hook["targetUrl"], data=b"{}", timeout=5)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "unknown_store"
    # every order field the mapping reads is asked for by the subscription
    for field in ("number", "chargeStatus", "userEmail", "total { gross { amount currency } }",
                  "shippingPrice", "lines { id productName variantName productSku quantity",
                  "billingAddress { firstName lastName phone country { code } }"):
        assert field in hook["query"]
    assert requests.get(f"{bridge.url}/saleor/manifest", timeout=5).json() == data


def test_order_to_invoice_note_transaction_and_charge(installed, bridge, saleor, fake_upay):
    order = place(saleor)
    row = bridge.wait_state(order["id"], "done")
    [charge] = fake_upay.charges()
    body = charge.json
    assert body["plugin"] == {"src": "saleor"}
    assert Decimal(str(body["order"]["amount"])) == Decimal("9.750")
    assert len(body["order"]["id"]) <= 40  # Saleor's 56-character order id is hashed
    assert any(row.invoice_url in note for note in saleor.notes(order["id"]))
    [tx] = saleor.transactions(order["id"])
    assert tx["externalUrl"] == row.invoice_url and tx["pspReference"] == row.invoice_id

    fake_upay.faults.add("notification", "duplicate", times=3)
    fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    wait_for(lambda: [e for e in saleor.transactions(order["id"])[0]["events"]
                      if e["type"] == "CHARGE_SUCCESS"])
    wait_for(lambda: bridge.runtime.jobs.depth() == 0)
    events = [e for e in saleor.transactions(order["id"])[0]["events"] if e["type"] == "CHARGE_SUCCESS"]
    assert len(events) == 1
    assert events[0]["pspReference"] == fake_upay.invoices[row.invoice_id].payment_id
    assert saleor.order(order["id"])["chargeStatus"] == "FULL"


def test_the_same_order_twice_is_one_invoice(installed, bridge, saleor, fake_upay):
    order = place(saleor)
    saleor.deliver(order["id"], times=3, concurrently=True)
    bridge.wait_state(order["id"], "done")
    wait_for(lambda: bridge.runtime.jobs.depth() == 0)
    assert len(fake_upay.charges()) == 1
    assert len(saleor.transactions(order["id"])) == 1


def test_rotated_signing_key_is_fetched_once(installed, bridge, saleor):
    saleor.rotate_key()
    order = place(saleor)
    bridge.wait_state(order["id"], "done")
    stored = json.loads(bridge.runtime.registry.get(installed.id).secrets["jwks"])
    assert stored == saleor.jwks()


def _post(bridge, saleor, body: bytes, signature: str, api_url: str | None = None):
    return requests.post(f"{bridge.url}/webhooks/saleor", data=body, timeout=5, headers={
        "Content-Type": "application/json", "Saleor-Event": "order_created",
        "Saleor-Domain": "shop", "Saleor-Api-Url": api_url or saleor.api_url,
        "Saleor-Signature": signature})


def _sign_with_a_stranger_key(body: bytes) -> str:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.api_jws.encode(body, key=key, algorithm="RS256", is_payload_detached=True,
                              headers={"kid": "not-a-key-of-this-store", "crit": ["b64"], "b64": False})


ORDER_BODY = json.dumps({"issuedAt": "2026-11-23T10:15:30+00:00", "version": "3.21.0", "order": {
    "id": "T3JkZXI6ZmFrZS1vcmRlcg==", "number": "77", "chargeStatus": "NONE", "status": "UNFULFILLED",
    "userEmail": "jane@example.com", "channel": {"slug": "default-channel", "currencyCode": "KWD"},
    "total": {"gross": {"amount": 2.0, "currency": "KWD"}},
    "shippingPrice": {"gross": {"amount": 0.0, "currency": "KWD"}},
    "lines": [{"id": "TDox", "productName": "Tea", "variantName": "", "productSku": "T", "quantity": 1,
               "totalPrice": {"gross": {"amount": 2.0, "currency": "KWD"}}}],
    "billingAddress": None, "user": None}}).encode()


def test_bad_saleor_webhooks_change_nothing(installed, bridge, saleor, fake_upay):
    from bridge import db
    body = ORDER_BODY
    good = saleor.sign(body)
    cases = [
        (_post(bridge, saleor, body + b" ", good), 401),                       # body changed
        (_post(bridge, saleor, body, good[:-10] + "A" * 10), 401),              # signature changed
        (_post(bridge, saleor, body, _sign_with_a_stranger_key(body)), 401),    # unknown key id
        (_post(bridge, saleor, body, good, api_url="https://other.example/graphql/"), 404),
        (_post(bridge, saleor, b"{not json", saleor.sign(b"{not json")), 400),
        (_post(bridge, saleor, b'{"order": {"id": 1}}', saleor.sign(b'{"order": {"id": 1}}')), 422),
    ]
    # A key id the bridge has not seen, while Saleor's key set cannot be fetched: a 503 to
    # deliver again later, not a crash.
    saleor.faults.add("jwks", "status", count=3, status=502)
    cases.append((_post(bridge, saleor, body, _sign_with_a_stranger_key(body)), 503))
    for resp, status in cases:
        assert resp.status_code == status, resp.text
        assert resp.json()["error"]["message"]
    assert bridge.count(db.orders) == 0 and fake_upay.charges() == []


def test_install_refusals_are_explained(bridge, saleor):
    resp = requests.post(f"{bridge.url}/saleor/register", json={"auth_token": "x"}, timeout=5)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "MISSING_SALEOR_API_URL"
    resp = requests.post(f"{bridge.url}/saleor/register", json={"auth_token": "not-a-token"},
                         headers={"Saleor-Api-Url": saleor.api_url}, timeout=5)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "UNKNOWN_APP_ID"
    # What the server at Saleor-Api-Url answered is not echoed: the caller may not be Saleor.
    assert resp.json()["error"]["message"] == "Could not confirm the app token with Saleor."
    assert bridge.runtime.registry.list() == []


def test_install_from_a_private_address_is_refused_before_any_request(bridge_factory, saleor):
    # Anyone can post to /saleor/register: it must not make the bridge call into its network.
    bridge = bridge_factory(worker=False, allow_private_store_urls=False)
    seen = len(saleor.requests)
    for api_url in (saleor.api_url, "http://169.254.169.254/latest/meta-data/",
                    "http://[::1"):
        resp = requests.post(f"{bridge.url}/saleor/register", json={"auth_token": "a-token"},
                             headers={"Saleor-Api-Url": api_url}, timeout=5)
        assert resp.status_code == 403, resp.text
        assert resp.json()["error"]["code"] == "SALEOR_URL_PROHIBITED"
    assert len(saleor.requests) == seen  # the fake Saleor was never called
    assert bridge.runtime.registry.list() == []


def test_configuration_page_opens_with_the_dashboard_token(installed, bridge, saleor):
    app_id = installed.secrets["app_id"]
    page = requests.get(f"{bridge.url}/saleor/app?saleorApiUrl={saleor.api_url}", timeout=5)
    assert page.status_code == 200 and "handshake" in page.text
    assert "frame-ancestors https:" in page.headers["Content-Security-Policy"]  # the Dashboard iframe
    assert "X-Frame-Options" not in page.headers

    resp = requests.post(f"{bridge.url}/saleor/app/session", timeout=5,
                         json={"token": saleor.dashboard_token(app_id), "saleorApiUrl": saleor.api_url})
    assert resp.status_code == 200, resp.text
    # The Dashboard's iframe is cross-site: only a partitioned SameSite=None cookie survives there
    # (test_browser.py shows it in Chromium).
    attributes = {a.strip().split("=")[0].lower() for a in resp.headers["Set-Cookie"].split(";")}
    assert {"samesite", "secure", "partitioned", "httponly"} <= attributes
    assert "SameSite=None" in resp.headers["Set-Cookie"]
    # A browser sends a Secure cookie to loopback over http; requests' jar does not, so by hand.
    s = requests.Session()
    s.headers["Cookie"] = resp.headers["Set-Cookie"].split(";")[0]
    settings = s.get(bridge.url + resp.json()["redirect"], timeout=5)
    assert settings.status_code == 200 and saleor.api_url in settings.text
    assert s.get(f"{bridge.url}/app/", timeout=5).status_code == 200  # lists this store only
    # Signing out deletes that same cookie: the deletion names the partition too.
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', settings.text).group(1)
    out = s.post(f"{bridge.url}/app/logout", data={"csrf_token": csrf}, allow_redirects=False,
                 timeout=5)
    assert out.status_code == 303
    assert "Partitioned" in out.headers["Set-Cookie"] and "1970" in out.headers["Set-Cookie"]


def test_configuration_page_refuses_other_tokens(installed, bridge, saleor):
    import time as _time

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({"app": installed.secrets["app_id"], "type": "thirdparty",
                         "exp": int(_time.time()) + 60}, stranger, algorithm="RS256",
                        headers={"kid": saleor.kid})
    other_app, _ = saleor.create_app("Another app", ["MANAGE_ORDERS"])
    for token, status in [(forged, 401), ("garbage", 401),
                          (saleor.dashboard_token(other_app), 403),
                          (saleor.dashboard_token(installed.secrets["app_id"], ttl=-10), 401)]:
        s = requests.Session()
        resp = s.post(f"{bridge.url}/saleor/app/session", timeout=5,
                      json={"token": token, "saleorApiUrl": saleor.api_url})
        assert resp.status_code == status, resp.text
        assert s.get(f"{bridge.url}/app/stores/{installed.id}", allow_redirects=False,
                     timeout=5).status_code == 302  # still not signed in


def test_graphql_permission_errors_are_mapped_not_ignored(bridge_factory, saleor, fake_upay):
    bridge = bridge_factory(max_retries=1)
    result = saleor.install(f"{bridge.url}/saleor/manifest", permissions=["MANAGE_ORDERS"])
    assert result.ok, result.message
    record = bridge.runtime.registry.find_by_url("saleor", saleor.api_url)
    bridge.runtime.registry.update(record.id, secrets={"upay_api_key": UPAY_KEY})
    order = place(saleor)
    row = bridge.wait_state(order["id"], "parked")
    assert "HANDLE_PAYMENTS" in row.reason or "refused" in row.reason
    assert saleor.transactions(order["id"]) == []


def test_the_app_token_never_reaches_the_logs(bridge, saleor, fake_upay, caplog):
    import logging
    caplog.set_level(logging.DEBUG)
    result = saleor.install(f"{bridge.url}/saleor/manifest")
    record = bridge.runtime.registry.find_by_url("saleor", saleor.api_url)
    bridge.runtime.registry.update(record.id, secrets={"upay_api_key": UPAY_KEY})
    order = place(saleor)
    bridge.wait_state(order["id"], "done")
    assert result.token not in caplog.text and UPAY_KEY not in caplog.text


@pytest.mark.parametrize("version", ["3.14", "3.24"])
def test_notes_use_the_mutation_the_saleor_version_has(bridge, version, fake_upay):
    saleor = FakeSaleor(version=version, currency="KWD")
    served = saleor.serve()
    try:
        assert saleor.install(f"{bridge.url}/saleor/manifest").ok
        record = bridge.runtime.registry.find_by_url("saleor", saleor.api_url)
        bridge.runtime.registry.update(record.id, secrets={"upay_api_key": UPAY_KEY})
        order = place(saleor)
        row = bridge.wait_state(order["id"], "done")
        assert any(row.invoice_url in note for note in saleor.notes(order["id"]))
    finally:
        served.shutdown()
