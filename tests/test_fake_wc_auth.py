"""The fakes' store-onboarding endpoints, over real HTTP on loopback.

* FakeWooCommerce's app authorization flow ``/wc-auth/v1/`` (woocommerce.md §4.4, checked
  against ``includes/class-wc-auth.php``): validation messages, the grant screen, the JSON key
  post to callback_url (exactly 200 or the key is deleted), the redirects back.
* FakeUPay's ``check-merchant-api-key`` and ``check-payment-button-status`` (upay-api.md §10).

Servers are module-scoped and state is read from the newest records, to keep this fast.
"""

from __future__ import annotations

import logging
import re
import socket
from typing import Any, Iterator
from urllib.parse import urlencode

import flask
import pytest
import requests
import woocommerce

from bridge.fakes.server import ServedApp, serve_wsgi
from bridge.fakes.upay import FakeUPay
from bridge.fakes.woocommerce import (WC_AUTH_SEND_FAILED, FakeWooCommerce, WCAuthError,
                                      _wc_api_hash)

logging.getLogger("werkzeug").setLevel(logging.ERROR)


# ------------------------------------------------------------------------------ fixtures


class CallbackReceiver:
    """The app's callback_url: records each POST and answers ``status`` (200 by default)."""

    def __init__(self) -> None:
        self.status = 200
        self.received: list[dict[str, Any]] = []
        app = flask.Flask("wc-auth-callback")

        @app.post("/keys")
        def keys() -> tuple[str, int]:
            self.received.append({"headers": dict(flask.request.headers),
                                  "body": flask.request.get_data(),
                                  "json": flask.request.get_json(silent=True)})
            return "", self.status

        @app.post("/moved")
        def moved() -> flask.Response:
            # Like Flask's own strict-slashes answer: 308 keeps the POST and its body.
            return flask.redirect("/keys", 308)

        self.served: ServedApp = serve_wsgi(app)
        self.url = self.served.url + "/keys"


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackReceiver]:
    r = CallbackReceiver()
    yield r
    r.served.shutdown()


@pytest.fixture(scope="module")
def store() -> Iterator[FakeWooCommerce]:
    fake = FakeWooCommerce()
    fake.serve()
    yield fake
    fake.close()


@pytest.fixture
def fake(store: FakeWooCommerce, receiver: CallbackReceiver) -> FakeWooCommerce:
    store.allow_http_callback = True
    receiver.status = 200
    return store


def authorize_url(fake: FakeWooCommerce, receiver: CallbackReceiver, route: str = "authorize",
                  **overrides: Any) -> str:
    params: dict[str, Any] = {
        "app_name": "Paylink Bridge", "scope": "read_write", "user_id": "store-42",
        "return_url": "https://bridge.example.com/wc/installed",
        "callback_url": receiver.url,
    }
    params.update(overrides)
    query = urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
    return f"{fake.base_url}/wc-auth/v1/{route}?{query}"


def die_message(resp: requests.Response) -> str:
    match = re.search(r'<div class="wp-die-message"><p>(.*?)</p>', resp.text)
    assert match, resp.text
    return match.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(("overrides", "message"), [
    ({"app_name": None}, "Error: Missing parameter app_name."),
    ({"user_id": ""}, "Error: Missing parameter user_id."),
    # PHP empty("0") is true, so a user_id of "0" is "missing".
    ({"user_id": "0"}, "Error: Missing parameter user_id."),
    ({"return_url": None}, "Error: Missing parameter return_url."),
    ({"callback_url": None}, "Error: Missing parameter callback_url."),
    ({"scope": None}, "Error: Missing parameter scope."),
    ({"scope": "admin"}, "Error: Invalid scope admin."),
    ({"scope": "READ"}, "Error: Invalid scope READ."),
    ({"return_url": "https://bad host.example/x"},
     "Error: The https://bad host.example/x is not a valid URL."),
    ({"callback_url": "https://under_score.example/keys"},
     "Error: The https://under_score.example/keys is not a valid URL."),
    ({"callback_url": "https://-dash.example/keys"},
     "Error: The https://-dash.example/keys is not a valid URL."),
    ({"callback_url": "ftp://files.example/keys"}, "Error: The callback_url needs to be over SSL."),
])
def test_validation_errors_are_401_access_denied_pages(fake: FakeWooCommerce, receiver: CallbackReceiver,
                                                       overrides: dict[str, Any], message: str) -> None:
    keys_before = dict(fake.api_keys)
    resp = requests.get(authorize_url(fake, receiver, **overrides), allow_redirects=False, timeout=5)
    assert resp.status_code == 401
    assert resp.headers["Content-Type"].startswith("text/html")
    assert "<title>Access denied</title>" in resp.text
    assert die_message(resp) == message
    assert fake.api_keys == keys_before


def test_array_parameter_is_invalid(fake: FakeWooCommerce, receiver: CallbackReceiver) -> None:
    url = authorize_url(fake, receiver, user_id=None) + "&user_id%5B%5D=1"
    resp = requests.get(url, timeout=5)
    assert (resp.status_code, die_message(resp)) == (401, "Error: Invalid parameter user_id.")


def test_first_failing_parameter_wins_in_core_order(fake: FakeWooCommerce) -> None:
    resp = requests.get(f"{fake.base_url}/wc-auth/v1/authorize?scope=nope", timeout=5)
    assert die_message(resp) == "Error: Missing parameter app_name."


def test_http_callback_refused_unless_allowed(fake: FakeWooCommerce, receiver: CallbackReceiver) -> None:
    url = authorize_url(fake, receiver)   # receiver.url is http://127.0.0.1:...
    fake.allow_http_callback = False
    resp = requests.get(url, timeout=5)
    assert (resp.status_code, die_message(resp)) == (401, "Error: The callback_url needs to be over SSL.")
    fake.allow_http_callback = True
    assert requests.get(url, timeout=5).status_code == 200


def test_https_check_is_case_insensitive_and_scheme_defaults_to_https(
        fake: FakeWooCommerce, receiver: CallbackReceiver) -> None:
    fake.allow_http_callback = False
    # stripos(): "HTTPS://" passes; a URL with no "://" gets https:// prepended and passes.
    for callback in ("HTTPS://bridge.example.com/keys", "bridge.example.com/keys"):
        resp = requests.get(authorize_url(fake, receiver, callback_url=callback), timeout=5)
        assert resp.status_code == 200


def test_urls_are_urldecoded_again(fake: FakeWooCommerce, receiver: CallbackReceiver) -> None:
    # A doubly encoded return_url still validates: get_formatted_url() urldecodes once more.
    twice = "https%3A%2F%2Fbridge.example.com%2Fwc%2Finstalled"
    resp = requests.get(authorize_url(fake, receiver, return_url=twice), timeout=5)
    assert resp.status_code == 200
    assert 'href="https://bridge.example.com/wc/installed?success=0&#038;user_id=store-42"' in resp.text


# ------------------------------------------------------------------------------ routes and page


def test_grant_page_lists_app_and_permissions(fake: FakeWooCommerce, receiver: CallbackReceiver) -> None:
    resp = requests.get(authorize_url(fake, receiver, scope="read"), timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/html")
    page = resp.text
    assert "<title>Application authentication request</title>" in page
    assert "Paylink Bridge would like to connect to your store" in page
    assert '"<strong>Paylink Bridge</strong>" <strong>Read</strong> access' in page
    assert re.findall(r"<li>(.*?)</li>", page) == [
        "View coupons", "View customers", "View orders and sales reports", "View products"]
    assert re.search(r'<form id="approve"[^>]*method="post"[^>]*action="[^"]*/wc-auth/v1/access_granted/'
                     r'\?[^"]*wc_auth_nonce=[0-9a-f]{10}"', page)
    assert '<a id="deny" ' in page


def test_query_var_form_and_unknown_routes(fake: FakeWooCommerce, receiver: CallbackReceiver) -> None:
    query = authorize_url(fake, receiver).split("?", 1)[1]
    plain = requests.get(f"{fake.base_url}/?wc-auth-version=1&wc-auth-route=authorize&{query}", timeout=5)
    assert plain.status_code == 200 and 'id="approve"' in plain.text
    # Only v1 matches the rewrite rule; other versions fall through to the site's 404.
    assert requests.get(f"{fake.base_url}/wc-auth/v2/authorize?{query}", timeout=5).status_code == 404
    bogus = requests.get(f"{fake.base_url}/wc-auth/v1/bogus?{query}", timeout=5)
    assert (bogus.status_code, die_message(bogus)) == (
        401, "Error: You do not have permission to access this page.")


def test_login_redirects_a_logged_in_admin_to_authorize(fake: FakeWooCommerce,
                                                        receiver: CallbackReceiver) -> None:
    resp = requests.get(authorize_url(fake, receiver, route="login"), allow_redirects=False, timeout=5)
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith(f"{fake.base_url}/wc-auth/v1/authorize/?app_name=")
    assert requests.get(resp.headers["Location"], timeout=5).status_code == 200


# ------------------------------------------------------------------------------ approve


def test_approve_posts_keys_and_redirects_back(fake: FakeWooCommerce, receiver: CallbackReceiver) -> None:
    seen = len(receiver.received)
    location = fake.approve_app(authorize_url(fake, receiver, user_id="42"))
    assert location == "https://bridge.example.com/wc/installed?success=1&user_id=42"

    assert len(receiver.received) == seen + 1
    got = receiver.received[-1]
    assert got["headers"]["Content-Type"] == "application/json;charset=UTF-8"
    body = got["json"]
    assert list(body) == ["key_id", "user_id", "consumer_key", "consumer_secret", "key_permissions"]
    assert isinstance(body["key_id"], int)
    assert body["user_id"] == "42"            # a string, even when it looks like a number
    assert re.fullmatch(r"ck_[0-9a-f]{40}", body["consumer_key"])
    assert re.fullmatch(r"cs_[0-9a-f]{40}", body["consumer_secret"])
    assert body["key_permissions"] == "read_write"

    row = fake.api_keys[_wc_api_hash(body["consumer_key"])]
    assert row["key_id"] == body["key_id"] and row["permissions"] == "read_write"
    assert row["user_id"] == fake.user_id     # the logged-in admin, not the app's user_id
    assert re.fullmatch(r"Paylink Bridge - API \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)", row["description"])
    callback = fake.auth_callbacks[-1]
    assert (callback.url, callback.status, callback.error, callback.success) == (
        receiver.url, 200, None, True)
    assert callback.payload == body

    api = woocommerce.API(url=fake.base_url, consumer_key=body["consumer_key"],
                          consumer_secret=body["consumer_secret"], version="wc/v3", timeout=10)
    assert api.get("orders").status_code == 200


def test_key_from_the_flow_can_manage_and_delete_webhooks(fake: FakeWooCommerce,
                                                          receiver: CallbackReceiver) -> None:
    fake.approve_app(authorize_url(fake, receiver))
    body = receiver.received[-1]["json"]
    api = woocommerce.API(url=fake.base_url, consumer_key=body["consumer_key"],
                          consumer_secret=body["consumer_secret"], version="wc/v3", timeout=10)
    created = api.post("webhooks", {"topic": "order.created", "delivery_url": receiver.url,
                                    "secret": "s3cret"})
    assert created.status_code == 201
    hook_id = created.json()["id"]
    # §3.3: no trash for webhooks; force=true deletes and answers the deleted webhook.
    no_force = api.delete(f"webhooks/{hook_id}")
    assert (no_force.status_code, no_force.json()["code"]) == (501, "woocommerce_rest_trash_not_supported")
    gone = api.delete(f"webhooks/{hook_id}", params={"force": True})
    assert gone.status_code == 200 and gone.json()["id"] == hook_id and hook_id not in fake.webhooks
    again = api.delete(f"webhooks/{hook_id}", params={"force": True})
    assert (again.status_code, again.json()["code"]) == (404, "woocommerce_rest_shop_webhook_invalid_id")


def test_read_scope_key_cannot_write(fake: FakeWooCommerce, receiver: CallbackReceiver) -> None:
    fake.approve_app(authorize_url(fake, receiver, scope="read"))
    body = receiver.received[-1]["json"]
    assert body["key_permissions"] == "read"
    api = woocommerce.API(url=fake.base_url, consumer_key=body["consumer_key"],
                          consumer_secret=body["consumer_secret"], version="wc/v3", timeout=10)
    assert api.get("orders").status_code == 200
    assert api.post("webhooks", {"topic": "order.created", "delivery_url": receiver.url}).json()["message"] \
        == "The API key provided does not have write permissions."


def test_return_url_query_and_long_app_name(fake: FakeWooCommerce, receiver: CallbackReceiver) -> None:
    long_name = "A" * 200
    location = fake.approve_app(authorize_url(
        fake, receiver, app_name=long_name, user_id="store 7",
        return_url="https://bridge.example.com/wc/installed?store=7#done"))
    assert location == "https://bridge.example.com/wc/installed?store=7&success=1&user_id=store%207#done"
    row = fake.api_keys[_wc_api_hash(receiver.received[-1]["json"]["consumer_key"])]
    # wc_trim_string($name, 170): 167 characters and "...".
    assert row["description"].startswith("A" * 167 + "... - API (")
    assert receiver.received[-1]["json"]["user_id"] == "store 7"


def test_callback_redirect_is_followed(fake: FakeWooCommerce, receiver: CallbackReceiver) -> None:
    moved = receiver.url.replace("/keys", "/moved")
    location = fake.approve_app(authorize_url(fake, receiver, callback_url=moved))
    assert "success=1" in location
    assert [hop.status for hop in fake.auth_callbacks[-1].hops] == [308, 200]


def test_approve_app_without_serve_uses_the_test_client(receiver: CallbackReceiver) -> None:
    # The demo and unit tests may keep the store in-process; the callback still goes over HTTP.
    offline = FakeWooCommerce(allow_http_callback=True)
    try:
        location = offline.approve_app(authorize_url(offline, receiver, user_id="offline-1"))
        assert location.endswith("?success=1&user_id=offline-1")
        assert receiver.received[-1]["json"]["user_id"] == "offline-1"
        assert len(offline.api_keys) == 1
    finally:
        offline.close()


# ------------------------------------------------------------------------------ failures


@pytest.mark.parametrize("status", [201, 204, 500])
def test_callback_not_exactly_200_deletes_the_key(fake: FakeWooCommerce, receiver: CallbackReceiver,
                                                  status: int) -> None:
    receiver.status = status
    with pytest.raises(WCAuthError) as caught:
        fake.approve_app(authorize_url(fake, receiver))
    assert caught.value.status == 401
    assert caught.value.message == f"Error: {WC_AUTH_SEND_FAILED}."
    body = receiver.received[-1]["json"]
    assert _wc_api_hash(body["consumer_key"]) not in fake.api_keys
    assert fake.deleted_api_keys[-1]["key_id"] == body["key_id"]
    assert (fake.auth_callbacks[-1].status, fake.auth_callbacks[-1].success) == (status, False)
    api = woocommerce.API(url=fake.base_url, consumer_key=body["consumer_key"],
                          consumer_secret=body["consumer_secret"], version="wc/v3", timeout=10)
    assert api.get("orders").status_code == 401


def test_callback_not_listening_deletes_the_key(fake: FakeWooCommerce, receiver: CallbackReceiver) -> None:
    port = free_port()
    keys_before = set(fake.api_keys)
    with pytest.raises(WCAuthError) as caught:
        fake.approve_app(authorize_url(fake, receiver, callback_url=f"http://127.0.0.1:{port}/keys"))
    # Core shows the WP_Error's own message for transport failures (post_consumer_data()).
    assert caught.value.status == 401
    assert caught.value.message == (f"Error: cURL error 7: Failed to connect to 127.0.0.1 port {port}: "
                                    "Connection refused.")
    callback = fake.auth_callbacks[-1]
    assert callback.status is None and callback.error and not callback.success
    assert set(fake.api_keys) == keys_before
    assert fake.deleted_api_keys[-1]["key_id"] == callback.key_id


def test_nonce_is_single_use(fake: FakeWooCommerce, receiver: CallbackReceiver) -> None:
    page = requests.get(authorize_url(fake, receiver), timeout=5).text
    action = re.search(r'<form id="approve"[^>]*action="([^"]*)"', page).group(1).replace("&#038;", "&")
    first = requests.post(action, allow_redirects=False, timeout=10)
    assert first.status_code == 302
    count = len(fake.api_keys)
    replay = requests.post(action, allow_redirects=False, timeout=10)
    assert (replay.status_code, die_message(replay)) == (401, "Error: Invalid nonce verification.")
    missing = requests.post(action.split("&wc_auth_nonce=")[0], allow_redirects=False, timeout=10)
    assert die_message(missing) == "Error: Invalid nonce verification."
    assert len(fake.api_keys) == count


def test_deny_goes_back_with_success_0(fake: FakeWooCommerce, receiver: CallbackReceiver) -> None:
    seen, keys = len(receiver.received), len(fake.api_keys)
    target = fake.deny_app(authorize_url(fake, receiver))
    assert target == "https://bridge.example.com/wc/installed?success=0&user_id=store-42"
    assert len(receiver.received) == seen and len(fake.api_keys) == keys


def test_approve_app_raises_on_validation_error(fake: FakeWooCommerce, receiver: CallbackReceiver) -> None:
    with pytest.raises(WCAuthError) as caught:
        fake.approve_app(authorize_url(fake, receiver, scope="everything"))
    assert (caught.value.status, caught.value.message) == (401, "Error: Invalid scope everything.")


# ------------------------------------------------------------------------------ UPay utilities


@pytest.fixture(scope="module")
def upay_server() -> Iterator[tuple[FakeUPay, ServedApp]]:
    fake = FakeUPay()
    served = fake.serve()
    yield fake, served
    served.shutdown()


@pytest.fixture
def upay(upay_server: tuple[FakeUPay, ServedApp]) -> tuple[FakeUPay, str]:
    fake, served = upay_server
    fake.reset()
    return fake, served.url + "/api/v1"


def test_key_check_with_and_without_bearer(upay: tuple[FakeUPay, str]) -> None:
    fake, base = upay
    plain = requests.post(f"{base}/check-merchant-api-key", json={"apiKey": "jtest123"}, timeout=5)
    assert plain.status_code == 201
    assert plain.json() == {"status": True, "message": "Valid API key", "data": {"isWhiteLabel": False}}
    bearer = requests.post(f"{base}/check-merchant-api-key", json={"apiKey": "jtest123"},
                           headers={"Authorization": "Bearer jtest123"}, timeout=5)
    assert bearer.status_code == 201
    assert [r.path for r in fake.requests] == ["/api/v1/check-merchant-api-key"] * 2
    assert fake.requests[0].json == {"apiKey": "jtest123"}


@pytest.mark.parametrize("body", [{"apiKey": "nope"}, {}, {"apiKey": 123}, None])
def test_key_check_unknown_key_is_403(upay: tuple[FakeUPay, str], body: Any) -> None:
    _fake, base = upay
    resp = requests.post(f"{base}/check-merchant-api-key", json=body,
                         headers={"Authorization": "Bearer jtest123"}, timeout=5)
    assert (resp.status_code, resp.json()) == (403, {"message": "Not a valid API request"})


def test_key_check_faults(upay: tuple[FakeUPay, str]) -> None:
    fake, base = upay
    url = f"{base}/check-merchant-api-key"
    fake.faults.add("key_check", "non_json")
    fake.faults.add("key_check", "status", status=500)
    fake.faults.add("key_check", "timeout", seconds=0.05)
    waf = requests.post(url, json={"apiKey": "jtest123"}, timeout=5)
    assert waf.status_code == 200 and waf.headers["Content-Type"].startswith("text/html")
    assert "Access denied" in waf.text
    assert requests.post(url, json={"apiKey": "jtest123"}, timeout=5).status_code == 500
    assert requests.post(url, json={"apiKey": "jtest123"}, timeout=5).status_code == 504
    assert requests.post(url, json={"apiKey": "jtest123"}, timeout=5).status_code == 201
    assert len(fake.requests) == 4
    with pytest.raises(ValueError):
        fake.faults.add("key_check", "drop")


def test_key_check_wrong_method_is_405(upay: tuple[FakeUPay, str]) -> None:
    _fake, base = upay
    resp = requests.get(f"{base}/check-merchant-api-key", timeout=5)
    assert resp.status_code == 405 and resp.headers["Allow"] == "POST"


def test_payment_button_status(upay: tuple[FakeUPay, str]) -> None:
    fake, base = upay
    resp = requests.get(f"{base}/check-payment-button-status",
                        headers={"Authorization": "Bearer jtest123"}, timeout=5)
    assert resp.status_code == 201
    assert resp.json() == {"status": True, "message": "Data received successfully", "data": {
        "payButtons": {"knet": True, "credit_card": True, "samsung_pay": False, "apple_pay": False,
                       "google_pay": False, "amex": False},
        "isWhiteLabel": False}}
    denied = requests.get(f"{base}/check-payment-button-status", timeout=5)
    assert (denied.status_code, denied.json()) == (403, {"message": "Not a valid API request"})
    fake.faults.add("buttons", "non_json")
    assert requests.get(f"{base}/check-payment-button-status",
                        headers={"Authorization": "Bearer jtest123"}, timeout=5).text.startswith("<html>")
