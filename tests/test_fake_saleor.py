"""The fake Saleor behaves like /work/shared/reference/saleor.md says Saleor does (§ = section).

Everything goes over real HTTP: a tiny loopback "App" (manifest, register handler, webhook
receiver) plays the bridge's side.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import time
from decimal import Decimal
from typing import Any, Iterator

import flask
import jwt
import pytest
import requests
from jwt.api_jwk import PyJWKSet
from jwt.api_jws import PyJWS

from bridge.fakes.saleor import (
    MSG_CONNECT,
    FakeSaleor,
    app_url_valid,
    from_global_id,
    jwk_thumbprint,
    npm_range_satisfied,
)
from bridge.fakes.server import ServedApp, serve_wsgi

# The subscription the bridge's manifest uses (§1.4, plus status/chargeStatus/shippingPrice/user).
BRIDGE_QUERY = (
    "subscription OrderCreatedForBridge { event { issuedAt version ... on OrderCreated { order {"
    " id number created status chargeStatus userEmail languageCodeEnum channel { slug currencyCode }"
    " total { gross { amount currency } net { amount currency } }"
    " shippingPrice { gross { amount currency } }"
    " lines { id productName variantName productSku quantity unitPrice { gross { amount currency } }"
    " totalPrice { gross { amount currency } } }"
    " billingAddress { firstName lastName phone country { code } } user { id } } } } }"
)
LINES = [{"name": "Apple Juice", "variant": "1l", "sku": "JUICE-1L", "quantity": 3,
          "unit_price": "12.5"},
         {"name": "Dates", "variant": "500g", "sku": "DATES-500", "quantity": 1,
          "unit_price": "2.125"}]


class StubApp:
    """A minimal Saleor App: manifest, register handler (app-sdk behaviour, §2.2), webhooks."""

    def __init__(self) -> None:
        self.manifest_changes: dict[str, Any] = {}
        self.webhook_changes: dict[str, Any] = {}
        self.register_reply: tuple[int, Any] | None = None     # scripted failure
        self.webhook_statuses: list[int] = []                  # consumed per request; then 200
        self.manifest_reply: tuple[int, str, dict[str, str]] | None = None
        self.registrations: list[dict[str, Any]] = []
        self.webhooks: list[dict[str, Any]] = []
        self.other_hits = 0
        app = flask.Flask("stub-saleor-app")

        @app.get("/api/manifest")
        def manifest() -> Any:
            if self.manifest_reply is not None:
                status, body, headers = self.manifest_reply
                return flask.Response(body, status, headers=headers)
            return flask.jsonify(self.manifest())

        @app.post("/api/register")
        def register() -> Any:
            record: dict[str, Any] = {"headers": dict(flask.request.headers),
                                      "body": flask.request.get_data()}
            self.registrations.append(record)
            if self.register_reply is not None:
                status, body = self.register_reply
                if isinstance(body, str):
                    return flask.Response(body, status, content_type="text/plain")
                return flask.jsonify(body), status
            api_url = flask.request.headers["Saleor-Api-Url"]
            token = json.loads(record["body"])["auth_token"]
            # app-sdk: confirm the token with { app { id } } during the request, fetch JWKS.
            who = requests.post(api_url, json={"query": "{ app { id } }"},
                                headers={"Authorization": f"Bearer {token}"}, timeout=5)
            record["app_id"] = who.json()["data"]["app"]["id"]
            origin = api_url.split("/graphql/")[0]
            record["jwks"] = requests.get(origin + "/.well-known/jwks.json", timeout=5).json()
            return flask.jsonify({"success": True})

        @app.post("/api/webhooks/order-created")
        def order_created() -> Any:
            self.webhooks.append({"headers": dict(flask.request.headers),
                                  "body": flask.request.get_data()})
            status = self.webhook_statuses.pop(0) if self.webhook_statuses else 200
            headers = {"Location": self.url + "/elsewhere"} if 300 <= status < 400 else {}
            return flask.Response("{}", status, headers=headers, content_type="application/json")

        @app.route("/elsewhere", methods=["GET", "POST"])
        def elsewhere() -> Any:
            self.other_hits += 1
            return "moved here"

        self.served: ServedApp = serve_wsgi(app)
        self.url = self.served.url

    def manifest(self) -> dict[str, Any]:
        webhook = {"name": "Order created", "asyncEvents": ["ORDER_CREATED"], "query": BRIDGE_QUERY,
                   "targetUrl": f"{self.url}/api/webhooks/order-created", "isActive": True,
                   **self.webhook_changes}
        webhook = {k: v for k, v in webhook.items() if v is not None}
        data = {"id": "com.example.payment-link-bridge", "version": "0.1.0",
                "name": "Payment Link Bridge", "permissions": ["MANAGE_ORDERS", "HANDLE_PAYMENTS"],
                "requiredSaleorVersion": ">=3.15", "appUrl": f"{self.url}/app",
                "tokenTargetUrl": f"{self.url}/api/register", "extensions": [],
                "webhooks": [webhook], **self.manifest_changes}
        return {k: v for k, v in data.items() if v is not None}

    @property
    def manifest_url(self) -> str:
        return f"{self.url}/api/manifest"


@pytest.fixture
def fake() -> Iterator[FakeSaleor]:
    saleor = FakeSaleor()
    served = saleor.serve()
    yield saleor
    served.shutdown()


@pytest.fixture
def stub() -> Iterator[StubApp]:
    app = StubApp()
    yield app
    app.served.shutdown()


@pytest.fixture
def installed(fake: FakeSaleor, stub: StubApp) -> Any:
    result = fake.install(stub.manifest_url)
    assert result.ok, result.message
    return result


def gql(fake: FakeSaleor, token: str | None, query: str, variables: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None) -> requests.Response:
    hdrs = dict(headers or {})
    if token is not None:
        hdrs.setdefault("Authorization", f"Bearer {token}")
    return requests.post(fake.api_url, json={"query": query, "variables": variables or {}},
                         headers=hdrs, timeout=10)


def verify_jws(body: bytes, signature: str, jwks: dict[str, Any]) -> None:
    header = jwt.get_unverified_header(signature)
    key = PyJWKSet.from_dict(jwks)[header["kid"]].key
    PyJWS().decode(signature, key=key, algorithms=["RS256"], detached_payload=body)


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


NOTE = ("mutation AddNote($order: ID!, $message: String!) { orderNoteAdd(order: $order, "
        "input: {message: $message}) { order { id } event { id type message } "
        "errors { field message code } } }")
TX_CREATE = ("mutation CreateTx($id: ID!, $tx: TransactionCreateInput!) { transactionCreate(id: $id,"
             " transaction: $tx) { transaction { id name pspReference externalUrl "
             "chargedAmount { amount currency } createdBy { ... on App { id } } } "
             "errors { field message code } } }")
TX_REPORT = ("mutation Report($id: ID!, $amount: PositiveDecimal, $psp: String!, "
             "$type: TransactionEventTypeEnum!) { transactionEventReport(id: $id, amount: $amount, "
             "pspReference: $psp, type: $type) { alreadyProcessed transaction { id chargedAmount "
             "{ amount currency } } transactionEvent { id type pspReference amount { amount } } "
             "errors { field message code } } }")
ORDER_Q = ("query Order($id: ID!) { order(id: $id) { id number total { gross { amount currency } }"
           " chargeStatus isPaid events { id type message } transactions { id name pspReference "
           "externalUrl chargedAmount { amount currency } events { type pspReference amount "
           "{ amount } } } } }")
MARK_PAID = ("mutation MarkPaid($id: ID!, $ref: String) { orderMarkAsPaid(id: $id, "
             "transactionReference: $ref) { order { id isPaid chargeStatus } "
             "errors { field message code } } }")


# ------------------------------------------------------------------------------ JWKS (§3.2)


def test_jwks_serves_one_rs256_key_whose_kid_is_the_rfc7638_thumbprint(fake: FakeSaleor) -> None:
    jwks = requests.get(fake.url + "/.well-known/jwks.json", timeout=5).json()
    assert len(jwks["keys"]) == 1
    key = jwks["keys"][0]
    assert key["kty"] == "RSA" and key["use"] == "sig" and key["alg"] == "RS256"
    assert key["kid"] == jwk_thumbprint(key) == fake.kid
    assert PyJWKSet.from_dict(jwks)[key["kid"]].key.key_size == 2048


# ------------------------------------------------------------------------------ install (§2.1)


def test_install_fetches_manifest_posts_token_and_creates_app(fake: FakeSaleor,
                                                              stub: StubApp) -> None:
    result = fake.install(stub.manifest_url)
    assert result.ok and result.message == "Success."
    assert re.fullmatch(r"[A-Za-z0-9]{30}", result.token or "")
    manifest_get, token_post = result.exchanges
    assert manifest_get.method == "GET" and manifest_get.status == 200
    assert manifest_get.header("Saleor-Schema-Version") == "3.21"
    assert manifest_get.header("User-Agent") == "Saleor/3.21"

    (reg,) = stub.registrations
    assert reg["body"] == json.dumps({"auth_token": result.token}).encode()
    headers = reg["headers"]
    assert headers["Content-Type"] == "application/json"
    assert headers["Saleor-Domain"] == headers["X-Saleor-Domain"] == fake.domain
    assert headers["Saleor-Api-Url"] == fake.api_url and fake.api_url.endswith("/graphql/")
    assert headers["Saleor-Schema-Version"] == "3.21"
    assert token_post.status == 200
    # The token already works inside the register request (§2.1 timing facts).
    assert reg["app_id"] == result.app_id
    assert reg["jwks"] == fake.jwks()

    app = fake.apps[result.app_id]
    assert from_global_id(app.id)[0] == "App"
    assert app.identifier == "com.example.payment-link-bridge" and app.is_installed
    assert app.permissions == ["MANAGE_ORDERS", "HANDLE_PAYMENTS"]
    (hook,) = app.webhooks
    assert hook.events == ["order_created"] and hook.secret_key is None
    assert fake.app_by_token(result.token or "") is app


def test_register_error_message_is_shown_and_the_app_deleted(fake: FakeSaleor,
                                                             stub: StubApp) -> None:
    stub.register_reply = (403, {"success": False, "error": {"code": "SALEOR_URL_PROHIBITED",
                                                             "message": "This URL is not allowed"}})
    result = fake.install(stub.manifest_url)
    assert not result.ok and result.message == "This URL is not allowed"
    assert fake.apps == {}
    token = json.loads(stub.registrations[0]["body"])["auth_token"]
    answer = gql(fake, token, "{ app { id } }").json()
    assert answer["data"]["app"] is None   # the token died with the app: anonymous now
    assert answer["errors"][0]["extensions"]["exception"]["code"] == "PermissionDenied"


def test_register_failure_without_message_and_unreachable_target(fake: FakeSaleor,
                                                                 stub: StubApp) -> None:
    stub.register_reply = (500, "boom")
    result = fake.install(stub.manifest_url)
    assert result.message == "App internal error (500). Try later or contact with app support."
    assert fake.apps == {}
    stub.register_reply = None
    stub.manifest_changes["tokenTargetUrl"] = f"http://127.0.0.1:{closed_port()}/api/register"
    result = fake.install(stub.manifest_url)
    assert not result.ok and result.message == MSG_CONNECT and fake.apps == {}


def test_manifest_fetch_failures(fake: FakeSaleor, stub: StubApp) -> None:
    stub.manifest_reply = (404, "not here", {})
    assert fake.install(stub.manifest_url).message == (
        "App internal error (404). Try later or contact with app support.")
    # No redirects are followed (§2.1 step 2): the redirect's target is never fetched.
    stub.manifest_reply = (302, "", {"Location": stub.url + "/elsewhere"})
    assert fake.install(stub.manifest_url).message == MSG_CONNECT
    assert stub.other_hits == 0
    stub.manifest_reply = (200, "<html>not json</html>", {})
    assert fake.install(stub.manifest_url).message == MSG_CONNECT
    assert fake.install(f"http://127.0.0.1:{closed_port()}/manifest").message == MSG_CONNECT
    assert fake.apps == {} and stub.registrations == []


@pytest.mark.parametrize("changes,webhook_changes,expected", [
    ({"id": None}, {}, "id: ['Field required.']"),
    ({"id": None, "name": None}, {}, "id: ['Field required.'], name: ['Field required.']"),
    ({"tokenTargetUrl": None}, {}, "tokenTargetUrl: ['Field required.']"),
    ({"tokenTargetUrl": "http://bridge:5000/api/register"}, {},
     "tokenTargetUrl: ['Incorrect format.']"),
    ({"tokenTargetUrl": "/api/register"}, {}, "tokenTargetUrl: ['Incorrect format.']"),
    ({"permissions": ["MANAGE_EVERYTHING"]}, {}, "permissions: [\"Given permissions don't exist.\"]"),
    ({"requiredSaleorVersion": ">=3.22"}, {},
     "requiredSaleorVersion: ['Saleor version 3.21.69 is not supported by the app.']"),
    ({}, {"targetUrl": "http://bridge/api/webhooks/order-created"},
     "webhooks: ['Invalid target url.']"),
    ({}, {"query": None}, "webhooks: ['Missing required fields for webhook: query.']"),
    ({}, {"name": None, "targetUrl": None},
     "webhooks: ['Missing required fields for webhook: name, targetUrl.']"),
    ({}, {"query": "query { shop { name } }"},
     "webhooks: [\"Subscription query is not valid: Subscription operation can't be found.\"]"),
    ({}, {"query": "subscription { event { ... on OrderCreated { order { id } } }"},
     "webhooks: ['Subscription query is not valid: Syntax Error GraphQL (1:62) Expected }, "
     "found EOF']"),
    ({}, {"isActive": "true"}, "webhooks: ['Incorrect value for field: isActive.']"),
    ({}, {"asyncEvents": ["order_created"]}, "webhooks: ['Invalid asynchronous event.']"),
])
def test_invalid_manifests_are_rejected_before_anything_is_created(
        fake: FakeSaleor, stub: StubApp, changes: dict[str, Any], webhook_changes: dict[str, Any],
        expected: str) -> None:
    stub.manifest_changes.update(changes)
    stub.webhook_changes.update(webhook_changes)
    result = fake.install(stub.manifest_url)
    assert not result.ok
    assert result.message == expected
    assert fake.apps == {} and stub.registrations == []


def test_url_rule_needs_a_tld_except_localhost_and_ips() -> None:
    for good in ("https://shop.example.com/api", "http://localhost:5000/x", "http://127.0.0.1:80/",
                 "http://[::1]:8000/x", "https://bridge.internal"):
        assert app_url_valid(good), good
    for bad in ("http://bridge:5000/api", "/api/register", "ftp://shop.example.com/x",
                "http://-bad.example.com/", "http://shop.123/", "https:// spaces.com", 42, None):
        assert not app_url_valid(bad), bad
    assert app_url_valid("awssqs://sqs.eu-west-1.amazonaws.com/q",
                         ("http", "https", "awssqs", "gcpubsub"))


def test_required_saleor_version_ranges() -> None:
    assert npm_range_satisfied(">=3.15", "3.21.69")
    assert npm_range_satisfied("^3.13", "3.21.69") and not npm_range_satisfied("^4.0", "3.21.69")
    assert npm_range_satisfied("~3.21", "3.21.69") and not npm_range_satisfied("~3.20", "3.21.69")
    assert npm_range_satisfied(">=3.15 <3.22 || >=4", "3.21.69")
    assert npm_range_satisfied(">=3.15", "3.24.0-a.0")       # natural prerelease policy
    with pytest.raises(ValueError):
        npm_range_satisfied("banana", "3.21.69")


def test_a_second_install_with_the_same_identifier_fails(installed: Any, fake: FakeSaleor,
                                                         stub: StubApp) -> None:
    result = fake.install(stub.manifest_url)
    assert not result.ok
    assert result.message == ("identifier: ['App with the same identifier is already installed: "
                              "Payment Link Bridge']")
    assert len(fake.apps) == 1 and len(stub.registrations) == 1


def test_token_target_is_optional_from_3_23_and_events_come_from_the_query(stub: StubApp) -> None:
    fake = FakeSaleor(version="3.23")
    served = fake.serve()
    try:
        stub.manifest_changes["tokenTargetUrl"] = None
        stub.webhook_changes["asyncEvents"] = None   # derived from "... on OrderCreated"
        result = fake.install(stub.manifest_url)
        assert result.ok and result.token is None and stub.registrations == []
        assert fake.apps[result.app_id or ""].webhooks[0].events == ["order_created"]
    finally:
        served.shutdown()


# ------------------------------------------------------------------------------ webhooks (§3)


def test_order_created_is_delivered_signed_with_the_subscription_payload(
        installed: Any, fake: FakeSaleor, stub: StubApp) -> None:
    order = fake.create_order(LINES, shipping="1.250", email="fatima@example.com")
    assert stub.webhooks == []                     # queued until delivered
    (delivery,) = fake.deliver_queued()
    assert delivery.success and delivery.status == 200 and len(delivery.attempts) == 1
    (received,) = stub.webhooks
    body, headers = received["body"], received["headers"]

    assert headers["Content-Type"] == "application/json"
    assert headers["Saleor-Event"] == headers["X-Saleor-Event"] == "order_created"
    assert headers["Saleor-Domain"] == headers["X-Saleor-Domain"] == fake.domain
    assert headers["Saleor-Api-Url"] == fake.api_url
    assert headers["User-Agent"] == "Saleor/3.21"
    assert "Saleor-Schema-Version" not in headers
    signature = headers["Saleor-Signature"]
    assert headers["X-Saleor-Signature"] == signature

    # Detached, unencoded JWS (§3.2): empty middle part, b64:false header, verifies with JWKS.
    assert signature.split(".")[1] == ""
    assert jwt.get_unverified_header(signature) == {
        "alg": "RS256", "b64": False, "crit": ["b64"], "kid": fake.kid, "typ": "JWT"}
    jwks = requests.get(fake.url + "/.well-known/jwks.json", timeout=5).json()
    verify_jws(body, signature, jwks)
    with pytest.raises(jwt.InvalidSignatureError):
        verify_jws(body + b" ", signature, jwks)

    # Body: json.dumps defaults of the event content, in the query's field order (§3.3).
    payload = json.loads(body)
    assert body == json.dumps(payload).encode()
    assert list(payload) == ["issuedAt", "version", "order"]
    assert payload["version"] == "3.21.69"
    got = payload["order"]
    assert got["id"] == order["id"] and from_global_id(got["id"])[0] == "Order"
    assert re.fullmatch(r"Order:[0-9a-f-]{36}", "%s:%s" % from_global_id(got["id"]))
    assert isinstance(got["number"], str)
    assert got["status"] == "UNFULFILLED" and got["chargeStatus"] == "NONE"
    assert got["userEmail"] == "fatima@example.com" and got["user"] is None
    assert got["channel"] == {"slug": "default-channel", "currencyCode": "KWD"}
    assert got["lines"][0]["unitPrice"]["gross"] == {"amount": 12.5, "currency": "KWD"}
    assert got["lines"][0]["totalPrice"]["gross"]["amount"] == 37.5
    assert got["shippingPrice"]["gross"]["amount"] == 1.25
    assert got["total"]["gross"] == {"amount": 40.875, "currency": "KWD"}   # 37.5+2.125+1.25
    assert got["billingAddress"] == {"firstName": "Fatima", "lastName": "Al-Sabah",
                                     "phone": "+96555512345", "country": {"code": "KW"}}
    assert '"amount": 12.5' in body.decode()


def test_payload_has_only_the_requested_fields_with_aliases(installed: Any, fake: FakeSaleor,
                                                            stub: StubApp) -> None:
    app = fake.apps[installed.app_id]
    fake.add_webhook(app.id, stub.url + "/api/webhooks/order-created",
                     "subscription { event { ... on OrderCreated { order { ref: number "
                     "total { gross { amount } } } } } }", name="small")
    fake.create_order(LINES[:1], billing={})
    fake.deliver_queued()
    small = json.loads(stub.webhooks[1]["body"])
    assert small == {"order": {"ref": small["order"]["ref"], "total": {"gross": {"amount": 37.5}}}}
    assert json.loads(stub.webhooks[0]["body"])["order"]["billingAddress"] is None


def test_legacy_secret_key_signs_with_lower_case_hmac_hex(installed: Any, fake: FakeSaleor,
                                                          stub: StubApp) -> None:
    fake.set_webhook_secret("s3cret")
    fake.create_order(LINES)
    fake.deliver_queued()
    received = stub.webhooks[0]
    expected = hmac.new(b"s3cret", received["body"], hashlib.sha256).hexdigest()
    assert received["headers"]["Saleor-Signature"] == expected
    assert received["headers"]["X-Saleor-Signature"] == expected


def test_5xx_is_retried_five_times_then_failed(installed: Any, fake: FakeSaleor,
                                               stub: StubApp) -> None:
    stub.webhook_statuses = [500] * 10
    fake.create_order(LINES)
    start = time.monotonic()
    (delivery,) = fake.deliver_queued()
    assert time.monotonic() - start >= 0.31   # 10+20+40+80+160 ms with retry_scale 0.001
    assert delivery.state == "FAILED" and len(delivery.attempts) == 6 and delivery.retries == 5
    assert [a.will_retry for a in delivery.attempts] == [True] * 5 + [False]
    assert len(stub.webhooks) == 6
    assert len({w["body"] for w in stub.webhooks}) == 1


def test_transient_errors_recover_and_transport_errors_are_retried(installed: Any,
                                                                   fake: FakeSaleor,
                                                                   stub: StubApp) -> None:
    stub.webhook_statuses = [503, 502]
    fake.create_order(LINES)
    (delivery,) = fake.deliver_queued()
    assert delivery.success and [a.status for a in delivery.attempts] == [503, 502, 200]

    hook = fake.apps[installed.app_id].webhooks[0]
    hook.target_url = f"http://127.0.0.1:{closed_port()}/hook"
    fake.create_order(LINES)
    (delivery,) = fake.deliver_queued()
    assert delivery.state == "FAILED" and len(delivery.attempts) == 6
    assert all(a.status is None and a.error for a in delivery.attempts)


@pytest.mark.parametrize("status", [301, 302, 400, 401, 404, 429])
def test_3xx_and_4xx_are_never_retried_nor_followed(installed: Any, fake: FakeSaleor,
                                                    stub: StubApp, status: int) -> None:
    stub.webhook_statuses = [status]
    fake.create_order(LINES)
    (delivery,) = fake.deliver_queued()
    assert delivery.state == "FAILED" and len(delivery.attempts) == 1
    assert delivery.status == status and stub.other_hits == 0


def test_only_apps_holding_manage_orders_get_order_created(installed: Any, fake: FakeSaleor,
                                                          stub: StubApp) -> None:
    app_id, _ = fake.create_app("Payments only", ["HANDLE_PAYMENTS"])
    fake.add_webhook(app_id, stub.url + "/api/webhooks/order-created", BRIDGE_QUERY,
                     ["ORDER_CREATED"])
    fake.create_order(LINES)
    deliveries = fake.deliver_queued()
    assert [d.app_id for d in deliveries] == [installed.app_id]


def test_duplicates_on_demand_carry_the_same_bytes(installed: Any, fake: FakeSaleor,
                                                   stub: StubApp) -> None:
    order = fake.create_order(LINES)
    (first,) = fake.deliver_queued()
    again = fake.deliver(order["id"], times=3, concurrently=True)
    assert len(again) == 3 and all(d.success for d in again)
    assert len(stub.webhooks) == 4
    assert {w["body"] for w in stub.webhooks} == {first.body}


def test_rotated_key_signs_new_deliveries_and_old_signatures_stop_verifying(
        installed: Any, fake: FakeSaleor, stub: StubApp) -> None:
    order = fake.create_order(LINES)
    fake.deliver_queued()
    old = stub.webhooks[0]
    old_kid = fake.kid
    new_kid = fake.rotate_key()
    assert new_kid != old_kid
    jwks = requests.get(fake.url + "/.well-known/jwks.json", timeout=5).json()
    assert [k["kid"] for k in jwks["keys"]] == [new_kid]
    with pytest.raises(KeyError):
        verify_jws(old["body"], old["headers"]["Saleor-Signature"], jwks)
    fake.deliver(order["id"])
    new = stub.webhooks[1]
    assert jwt.get_unverified_header(new["headers"]["Saleor-Signature"])["kid"] == new_kid
    verify_jws(new["body"], new["headers"]["Saleor-Signature"], jwks)


def test_webhook_faults(installed: Any, fake: FakeSaleor, stub: StubApp) -> None:
    fake.faults.add("webhook", "no_sign")
    fake.faults.add("webhook", "bad_sign")
    fake.create_order(LINES)
    fake.create_order(LINES)
    fake.deliver_queued()
    assert "Saleor-Signature" not in stub.webhooks[0]["headers"]
    assert "X-Saleor-Signature" not in stub.webhooks[0]["headers"]
    bad = stub.webhooks[1]
    with pytest.raises(jwt.InvalidSignatureError):
        verify_jws(bad["body"], bad["headers"]["Saleor-Signature"], fake.jwks())


# ------------------------------------------------------------------------------ GraphQL (§2.4, §4)


def test_app_query_and_the_three_auth_header_forms(installed: Any, fake: FakeSaleor) -> None:
    token = installed.token
    for headers in ({"Authorization": f"Bearer {token}"}, {"Authorization": f"JWT {token}"},
                    {"Authorization-Bearer": token}):
        resp = gql(fake, None, "{ app { id } }", headers=headers)
        assert resp.status_code == 200 and resp.json() == {"data": {"app": {"id": installed.app_id}}}
    resp = gql(fake, "x" * 30, "{ app { id } }")   # bad token = anonymous
    assert resp.status_code == 200
    assert resp.json() == {"data": {"app": None}, "errors": [{
        "message": "To access this path, you need one of the following permissions: "
                   "AUTHENTICATED_STAFF_USER, AUTHENTICATED_APP",
        "locations": [{"line": 1, "column": 3}], "path": ["app"],
        "extensions": {"exception": {"code": "PermissionDenied"}}}]}
    assert fake.requests[-1].app_id is None and fake.requests[-2].app_id == installed.app_id


def test_order_note_add(installed: Any, fake: FakeSaleor) -> None:
    order = fake.create_order(LINES)
    resp = gql(fake, installed.token, NOTE, {"order": order["id"], "message": "Pay: https://x.io"})
    result = resp.json()["data"]["orderNoteAdd"]
    assert result["errors"] == [] and result["order"] == {"id": order["id"]}
    assert result["event"]["type"] == "NOTE_ADDED" and result["event"]["message"] == "Pay: https://x.io"
    assert fake.notes(order["id"]) == ["Pay: https://x.io"]
    assert ("order_updated", order["id"]) in fake.emitted

    blank = gql(fake, installed.token, NOTE, {"order": order["id"], "message": "  "}).json()
    assert blank["data"]["orderNoteAdd"] == {"order": None, "event": None, "errors": [
        {"field": "message", "message": "Message can't be empty.", "code": "REQUIRED"}]}
    missing = gql(fake, installed.token, NOTE, {"order": "T3JkZXI6bm9wZQ==", "message": "x"})
    assert missing.json()["data"]["orderNoteAdd"]["errors"][0]["code"] == "NOT_FOUND"

    _, weak = fake.create_app("No orders", ["HANDLE_PAYMENTS"])
    denied = gql(fake, weak, NOTE, {"order": order["id"], "message": "x"})
    assert denied.status_code == 200
    body = denied.json()
    assert body["data"] == {"orderNoteAdd": None}
    assert body["errors"][0]["message"] == ("To access this path, you need one of the following "
                                            "permissions: MANAGE_ORDERS")
    assert body["errors"][0]["path"] == ["orderNoteAdd"]
    assert fake.notes(order["id"]) == ["Pay: https://x.io"]


def test_order_add_note_exists_until_3_24(installed: Any, fake: FakeSaleor) -> None:
    order = fake.create_order(LINES)
    old = ("mutation($o: ID!) { orderAddNote(order: $o, input: {message: \"hi\"}) { "
           "event { type message } errors { code } orderErrors { code } } }")
    data = gql(fake, installed.token, old, {"o": order["id"]}).json()["data"]["orderAddNote"]
    assert data == {"event": {"type": "NOTE_ADDED", "message": "hi"}, "errors": [],
                    "orderErrors": []}

    new = FakeSaleor(version="3.24")
    served = new.serve()
    try:
        _, token = new.create_app("app", ["MANAGE_ORDERS"])
        other = new.create_order(LINES)
        resp = gql(new, token, old, {"o": other["id"]})
        assert resp.status_code == 400 and "data" not in resp.json()
        assert resp.json()["errors"][0]["message"] == (
            'Cannot query field "orderAddNote" on type "Mutation". Did you mean "orderNoteAdd"?')
        assert new.notes(other["id"]) == []
        assert gql(new, token, NOTE, {"order": other["id"], "message": "ok"}).status_code == 200
        assert new.notes(other["id"]) == ["ok"]
    finally:
        served.shutdown()


def test_transaction_create(installed: Any, fake: FakeSaleor) -> None:
    order = fake.create_order(LINES)
    tx_input = {"name": "UPay invoice", "pspReference": "INV-1", "message": "Awaiting payment",
                "externalUrl": "https://pay.example.com/inv/1"}
    data = gql(fake, installed.token, TX_CREATE, {"id": order["id"], "tx": tx_input}).json()
    tx = data["data"]["transactionCreate"]
    assert tx["errors"] == []
    assert tx["transaction"]["id"] == "VHJhbnNhY3Rpb25JdGVtOjE="   # TransactionItem:1 (§4.3)
    assert tx["transaction"]["createdBy"] == {"id": installed.app_id}
    assert tx["transaction"]["chargedAmount"] == {"amount": 0.0, "currency": "KWD"}
    assert fake.transactions(order["id"])[0]["externalUrl"] == "https://pay.example.com/inv/1"

    usd = {**tx_input, "amountCharged": {"amount": 1, "currency": "USD"}}
    errors = gql(fake, installed.token, TX_CREATE, {"id": order["id"], "tx": usd}).json()
    assert errors["data"]["transactionCreate"] == {"transaction": None, "errors": [
        {"field": "amountCharged", "message": "Currency needs to be the same as for order: KWD",
         "code": "INCORRECT_CURRENCY"}]}
    unknown = "T3JkZXI6MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAw"
    errors = gql(fake, installed.token, TX_CREATE, {"id": unknown, "tx": tx_input}).json()
    assert errors["data"]["transactionCreate"]["errors"][0]["code"] == "NOT_FOUND"
    errors = gql(fake, installed.token, TX_CREATE, {"id": "garbage!", "tx": tx_input}).json()
    assert errors["data"]["transactionCreate"]["errors"][0]["code"] == "GRAPHQL_ERROR"

    _, orders_only = fake.create_app("Orders only", ["MANAGE_ORDERS"])
    denied = gql(fake, orders_only, TX_CREATE, {"id": order["id"], "tx": tx_input}).json()
    assert denied["data"] == {"transactionCreate": None}
    assert denied["errors"][0]["message"].endswith("permissions: HANDLE_PAYMENTS")
    assert len(fake.transactions(order["id"])) == 1


def test_transaction_event_report(installed: Any, fake: FakeSaleor) -> None:
    order = fake.create_order(LINES)   # total 39.625
    tx = gql(fake, installed.token, TX_CREATE, {"id": order["id"], "tx": {"name": "UPay",
             "pspReference": "INV-1"}}).json()["data"]["transactionCreate"]["transaction"]

    def report(token: str, **variables: Any) -> dict[str, Any]:
        resp = gql(fake, token, TX_REPORT, {"id": tx["id"], **variables})
        assert resp.status_code == 200, resp.text
        return resp.json()

    required = report(installed.token, psp="PAY-1", type="CHARGE_SUCCESS")
    assert required["data"]["transactionEventReport"]["errors"] == [
        {"field": "amount", "message": "The `amount` field is required for charge_success event.",
         "code": "REQUIRED"}]

    partial = report(installed.token, psp="PAY-1", type="CHARGE_SUCCESS", amount=10)
    assert partial["data"]["transactionEventReport"]["alreadyProcessed"] is False
    assert fake.order(order["id"])["chargeStatus"] == "PARTIAL"
    rest = report(installed.token, psp="PAY-2", type="CHARGE_SUCCESS", amount="29.625")
    result = rest["data"]["transactionEventReport"]
    assert result["transaction"]["chargedAmount"] == {"amount": 39.625, "currency": "KWD"}
    assert result["transactionEvent"]["amount"] == {"amount": 29.625}
    view = fake.order(order["id"])
    assert view["chargeStatus"] == "FULL" and view["isPaid"] is True
    assert ("order_fully_paid", order["id"]) in fake.emitted

    repeat = report(installed.token, psp="PAY-2", type="CHARGE_SUCCESS", amount=29.625)
    assert repeat["data"]["transactionEventReport"]["alreadyProcessed"] is True
    assert repeat["data"]["transactionEventReport"]["transactionEvent"]["id"] == \
        result["transactionEvent"]["id"]
    clash = report(installed.token, psp="PAY-2", type="CHARGE_SUCCESS", amount=1)
    assert clash["data"]["transactionEventReport"]["errors"][0]["code"] == "INCORRECT_DETAILS"
    assert fake.order(order["id"])["totalCharged"]["amount"] == 39.625

    _, stranger = fake.create_app("Other payments app", ["HANDLE_PAYMENTS"])
    denied = report(stranger, psp="PAY-3", type="CHARGE_SUCCESS", amount=1)
    assert denied["data"] == {"transactionEventReport": None}
    assert denied["errors"][0]["message"] == ("To access this path, you need one of the following "
                                              "permissions: OWNER, HANDLE_PAYMENTS")
    events = fake.transactions(order["id"])[0]["events"]
    assert [(e["type"], e["pspReference"], e["amount"]["amount"]) for e in events] == [
        ("CHARGE_SUCCESS", "PAY-1", 10.0), ("CHARGE_SUCCESS", "PAY-2", 29.625),
        ("CHARGE_FAILURE", "PAY-2", 1.0)]


def test_order_query_shows_events_and_transactions(installed: Any, fake: FakeSaleor) -> None:
    order = fake.create_order(LINES)
    gql(fake, installed.token, NOTE, {"order": order["id"], "message": "link"})
    gql(fake, installed.token, TX_CREATE, {"id": order["id"], "tx": {
        "name": "UPay", "pspReference": "INV-9", "externalUrl": "https://pay.example.com/9"}})
    data = gql(fake, installed.token, ORDER_Q, {"id": order["id"]}).json()["data"]["order"]
    assert data["number"] == order["number"] and data["chargeStatus"] == "NONE"
    assert data["total"]["gross"] == {"amount": 39.625, "currency": "KWD"}
    assert [(e["type"], e["message"]) for e in data["events"]] == [("PLACED", None),
                                                                   ("NOTE_ADDED", "link")]
    assert data["transactions"][0]["pspReference"] == "INV-9"
    view = fake.order(order["id"])
    assert {k: view[k] for k in ("id", "number", "chargeStatus", "isPaid")} == {
        k: data[k] for k in ("id", "number", "chargeStatus", "isPaid")}


def test_order_mark_as_paid(installed: Any, fake: FakeSaleor) -> None:
    no_billing = fake.create_order(LINES, billing={})
    errs = gql(fake, installed.token, MARK_PAID, {"id": no_billing["id"]}).json()
    assert errs["data"]["orderMarkAsPaid"]["errors"] == [{
        "field": None, "message": "Order billing address is required to mark order as paid.",
        "code": "BILLING_ADDRESS_NOT_SET"}]

    with_tx = fake.create_order(LINES)
    gql(fake, installed.token, TX_CREATE, {"id": with_tx["id"], "tx": {"name": "UPay"}})
    errs = gql(fake, installed.token, MARK_PAID, {"id": with_tx["id"]}).json()
    assert errs["data"]["orderMarkAsPaid"]["errors"][0]["code"] == "TRANSACTION_ERROR"

    plain = fake.create_order(LINES)
    ok = gql(fake, installed.token, MARK_PAID, {"id": plain["id"], "ref": "PAY-7"}).json()
    assert ok["data"]["orderMarkAsPaid"] == {"order": {"id": plain["id"], "isPaid": True,
                                                       "chargeStatus": "FULL"}, "errors": []}
    again = gql(fake, installed.token, MARK_PAID, {"id": plain["id"]}).json()
    assert again["data"]["orderMarkAsPaid"]["errors"][0]["code"] == "PAYMENT_ERROR"


@pytest.mark.parametrize("body,content_type,message", [
    (b'{"query": "{ app { id "}', "application/json",
     "Syntax Error GraphQL (1:12) Expected }, found EOF"),
    (b'{"query": "mutation { orderExplode(id: \\"x\\") { errors { code } } }"}',
     "application/json", 'Cannot query field "orderExplode" on type "Mutation".'),
    (b'{"query": "mutation($o: ID!) { orderNoteAdd(order: $o, input: {message: \\"x\\"}) '
     b'{ errors { code } } }"}', "application/json",
     'Variable "$o" of required type "ID!" was not provided.'),
    (b'{"query": "mutation { orderNoteAdd(order: $o, input: {message: \\"x\\"}) '
     b'{ errors { code } } }"}', "application/json", 'Variable "$o" is not defined.'),
    (b'{"query": "mutation { transactionEventReport(id: \\"x\\", pspReference: \\"p\\", '
     b'type: \\"CHARGE_SUCCESS\\", amount: 1) { errors { code } } }"}', "application/json",
     'Argument "type" has invalid value "CHARGE_SUCCESS".\nExpected type '
     '"TransactionEventTypeEnum", found "CHARGE_SUCCESS".'),
    (b'{"query": "mutation { orderNoteAdd(order: \\"x\\") { errors { code } } }"}',
     "application/json", 'Field "orderNoteAdd" argument "input" of type "OrderNoteInput!" is '
     'required but not provided.'),
    (b"not json", "application/json", "Unable to parse query."),
    (b'{"query": "{ app { id } }"}', "text/plain", "Must provide a query string."),
])
def test_malformed_requests_are_400_without_data(installed: Any, fake: FakeSaleor, body: bytes,
                                                 content_type: str, message: str) -> None:
    resp = requests.post(fake.api_url, data=body, timeout=5,
                         headers={"Content-Type": content_type,
                                  "Authorization": f"Bearer {installed.token}"})
    assert resp.status_code == 400
    assert "data" not in resp.json()
    assert resp.json()["errors"][0]["message"] == message


def test_graphql_url_needs_the_trailing_slash(fake: FakeSaleor) -> None:
    resp = requests.post(fake.url + "/graphql", json={"query": "{ app { id } }"}, timeout=5,
                         allow_redirects=False)
    assert resp.status_code == 301 and resp.headers["Location"] == fake.api_url
    followed = requests.post(fake.url + "/graphql", json={"query": "{ app { id } }"}, timeout=5)
    assert followed.status_code == 200 and followed.headers["Content-Type"].startswith("text/html")


def test_graphql_faults(installed: Any, fake: FakeSaleor) -> None:
    order = fake.create_order(LINES)
    fake.faults.add("graphql", "status", status=502)
    resp = gql(fake, installed.token, NOTE, {"order": order["id"], "message": "a"})
    assert resp.status_code == 502 and "Bad Gateway" in resp.text
    fake.faults.add("graphql", "timeout", seconds=0.2)
    resp = gql(fake, installed.token, NOTE, {"order": order["id"], "message": "b"})
    assert resp.status_code == 504
    assert fake.notes(order["id"]) == []          # not applied
    fake.faults.add("graphql", "timeout_after", seconds=0.5)
    with pytest.raises(requests.Timeout):
        requests.post(fake.api_url, json={"query": NOTE, "variables": {
            "order": order["id"], "message": "c"}},
            headers={"Authorization": f"Bearer {installed.token}"}, timeout=0.2)
    assert fake.notes(order["id"]) == ["c"]      # applied; only the answer was late
    fake.faults.add("jwks", "non_json")
    resp = requests.get(fake.url + "/.well-known/jwks.json", timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        fake.faults.add("graphql", "explode")


def test_money_stays_decimal_inside_and_float_on_the_wire(fake: FakeSaleor) -> None:
    order = fake.create_order([{"name": "x", "quantity": 3, "unit_price": Decimal("0.1")}],
                              currency="USD")
    assert order["total"]["gross"] == {"amount": 0.3, "currency": "USD"}
    assert order["channel"]["slug"] == "channel-usd"
    internal = fake.orders[order["id"]]
    assert internal.total == Decimal("0.30")
