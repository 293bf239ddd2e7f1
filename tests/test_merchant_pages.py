"""The settings pages' security over real HTTP: sign-in, CSRF, tenant isolation, the install
callback, SSRF, secrets never shown."""

from __future__ import annotations

import re
import threading
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from bridge.netguard import check_store_url, webhook_delivery_problem
from bridge.errors import ConfigError

from .conftest import LAYOUTS

PASSWORD = "correct horse battery"


def session_for(bridge, email: str) -> tuple[requests.Session, str]:
    s = requests.Session()
    page = s.get(f"{bridge.url}/app/login", timeout=5).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = s.post(f"{bridge.url}/app/login", data={"email": email, "password": PASSWORD,
                                                   "csrf_token": token}, timeout=5)
    assert resp.status_code == 200 and "Your stores" in resp.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', resp.text).group(1)
    return s, token


@pytest.fixture
def two_merchants(bridge, connect_store):
    a = bridge.runtime.accounts.create("a@example.com", PASSWORD)
    b = bridge.runtime.accounts.create("b@example.com", PASSWORD)
    store_a = connect_store(bridge)
    return a, b, bridge.runtime.registry.update(store_a.id, merchant_id=a.id)


def test_pages_need_a_signed_in_merchant(bridge):
    resp = requests.get(f"{bridge.url}/app/", allow_redirects=False, timeout=5)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/app/login")


def test_session_cookie_and_security_headers(bridge):
    bridge.runtime.accounts.create("a@example.com", PASSWORD)
    s = requests.Session()
    page = s.get(f"{bridge.url}/app/login", timeout=5)
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    cookie = page.headers.get("Set-Cookie", "")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Partitioned" not in cookie


def test_a_merchant_sees_only_their_own_stores(bridge, two_merchants):
    _, _, store = two_merchants
    owner, _ = session_for(bridge, "a@example.com")
    other, _ = session_for(bridge, "b@example.com")
    assert owner.get(f"{bridge.url}/app/stores/{store.id}", timeout=5).status_code == 200
    for path in ("", "/activity"):
        assert other.get(f"{bridge.url}/app/stores/{store.id}{path}", timeout=5).status_code == 404
    assert store.url not in other.get(f"{bridge.url}/app/", timeout=5).text


def test_posts_without_the_csrf_token_change_nothing(bridge, two_merchants):
    _, _, store = two_merchants
    owner, token = session_for(bridge, "a@example.com")
    form = {"upay_api_key": "stolen-key-123456", "notification_type": "sms", "language": "en",
            "statuses": "pending", "paid_status": "processing", "paid_after_cancel": "reopen",
            "reconcile_expiry_hours": "72"}
    owner.post(f"{bridge.url}/app/stores/{store.id}", data=form, timeout=5)
    owner.post(f"{bridge.url}/app/stores/{store.id}", data=dict(form, csrf_token="forged"), timeout=5)
    unchanged = bridge.runtime.registry.get(store.id)
    assert unchanged.secrets["upay_api_key"] == store.secrets["upay_api_key"]
    assert unchanged.settings.notification_type.value == "link"
    owner.post(f"{bridge.url}/app/stores/{store.id}", data=dict(form, csrf_token=token), timeout=5)
    changed = bridge.runtime.registry.get(store.id)
    assert changed.secrets["upay_api_key"] == "stolen-key-123456"  # the owner's own change
    page = owner.get(f"{bridge.url}/app/stores/{store.id}", timeout=5).text
    assert "stolen-key-123456" not in page and "3456" in page  # write-only, a hint at most


def test_install_callback_needs_the_one_time_token(bridge):
    for token, body in [("nope", {"user_id": "nope", "consumer_key": "ck", "consumer_secret": "cs",
                                  "key_permissions": "read_write"}),
                        ("nope", "not json")]:
        resp = requests.post(f"{bridge.url}/app/connect/callback/{token}", json=body, timeout=5)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_install"
    assert bridge.runtime.registry.list() == []


def test_store_urls_on_private_networks_are_refused():
    for url in ("http://127.0.0.1:8080", "http://10.1.2.3", "http://169.254.169.254",
                "http://[::1]/", "http://localhost", "http://[::ffff:127.0.0.1]/",
                # Shared address space: a cloud's metadata service lives at 100.100.100.200.
                "http://100.100.100.200/", "http://100.64.0.1"):
        with pytest.raises(ConfigError):
            check_store_url(url, allow_private=False)
    check_store_url("http://127.0.0.1:8080", allow_private=True)
    assert webhook_delivery_problem("http://127.0.0.1:8000")
    assert webhook_delivery_problem("http://8.8.8.8:8000")  # a port WordPress will not call
    assert not webhook_delivery_problem("https://8.8.8.8")


def test_connect_form_refuses_a_private_store_url(bridge_factory):
    bridge = bridge_factory(worker=False, allow_private_store_urls=False)
    bridge.runtime.accounts.create("a@example.com", PASSWORD)
    s, token = session_for(bridge, "a@example.com")
    resp = s.post(f"{bridge.url}/app/connect", data={"store_url": "http://127.0.0.1:9",
                                                     "csrf_token": token}, timeout=5)
    assert "loopback, private or link-local" in resp.text
    # Not even a URL: explained on the page, not a 500.
    resp = s.post(f"{bridge.url}/app/connect", data={"store_url": "http://[::1",
                                                     "csrf_token": token}, timeout=5)
    assert resp.status_code == 200 and "not a valid URL" in resp.text


def test_send_the_link_again_and_disconnect(bridge, two_merchants, fake_wc):
    _, _, store = two_merchants
    owner, token = session_for(bridge, "a@example.com")
    fake_wc.add_product(1, "Coffee", "2.000")
    order = fake_wc.create_order([{"product_id": 1, "quantity": 1}],
                                 billing={"first_name": "A", "email": "a@example.com"})
    fake_wc.deliver_queued()
    row = bridge.wait_state(order["id"], "done")
    resp = owner.post(f"{bridge.url}/app/stores/{store.id}/orders/{row.id}/resend",
                      data={"csrf_token": token}, timeout=5)
    assert resp.status_code == 200
    from .conftest import wait_for
    wait_for(lambda: len(fake_wc.notes(order["id"])) == 2)
    assert all(n["customer_note"] and row.invoice_url in n["note"] for n in fake_wc.notes(order["id"]))
    assert len(fake_wc.emails) == 2  # the customer got the link again
    # An order a worker holds right now is left alone, and the page says why (not a 500).
    import time as _time

    from bridge import db as _db
    with bridge.runtime.engine.begin() as conn:
        conn.execute(_db.orders.update().where(_db.orders.c.id == row.id).values(
            state="parked", lease_owner="another-worker", lease_expires=_time.time() + 300))
    resp = owner.post(f"{bridge.url}/app/stores/{store.id}/orders/{row.id}/retry",
                      data={"csrf_token": token}, timeout=5)
    assert resp.status_code == 200 and "being worked on right now" in resp.text
    assert bridge.order(order["id"]).lease_owner == "another-worker"
    for action in ("resend", "retry"):  # past a 64-bit row id: not found, not an overflow
        resp = owner.post(f"{bridge.url}/app/stores/{store.id}/orders/{2 ** 64}/{action}",
                          data={"csrf_token": token}, timeout=5)
        assert resp.status_code == 404
    hooks = lambda: [w for w in (fake_wc.webhooks.values() if isinstance(fake_wc.webhooks, dict)
                                 else fake_wc.webhooks)]
    assert len(hooks()) == 1
    bridge.stop_worker()  # the request does not delete the history; a worker does, later
    resp = owner.post(f"{bridge.url}/app/stores/{store.id}/disconnect", data={"csrf_token": token},
                      timeout=5)
    assert "webhooks were removed" in resp.text
    assert hooks() == [] or all((h.get("status") if isinstance(h, dict) else h.status) == "deleted"
                                for h in hooks())
    assert bridge.runtime.registry.find(store.id) is None  # hidden when the page answers
    # The history is deleted by a worker, not in the request (a big store takes seconds).
    import sqlalchemy as sa

    from bridge import db

    def left() -> list[int]:
        with bridge.runtime.engine.connect() as conn:
            return [conn.execute(sa.select(sa.func.count()).where(where)).scalar()
                    for where in (db.stores.c.id == store.id, db.orders.c.store_id == store.id)]
    assert left() == [1, 1]
    bridge.start_worker()
    wait_for(lambda: left() == [0, 0])


def test_parallel_sign_in_guesses_are_held_to_the_limit(bridge):
    """Five failed sign-ins per 15 minutes: a burst of guesses sent at once gets no more
    passwords checked than that, and a successful sign-in does not use up the allowance."""
    import threading

    bridge.runtime.accounts.create("a@example.com", PASSWORD)
    session_for(bridge, "a@example.com")  # a success first: it must not count
    forms = []
    for _ in range(20):
        s = requests.Session()
        page = s.get(f"{bridge.url}/app/login", timeout=5).text
        forms.append((s, re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)))
    start, codes = threading.Barrier(len(forms)), []

    def guess(s: requests.Session, token: str) -> None:
        start.wait()
        codes.append(s.post(f"{bridge.url}/app/login", data={
            "email": "a@example.com", "password": "a wrong guess", "csrf_token": token},
            timeout=30, allow_redirects=False).status_code)

    threads = [threading.Thread(target=guess, args=form) for form in forms]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(codes) == [401] * 5 + [429] * 15


def start_install(bridge, fake_wc, s: requests.Session, csrf: str) -> str:
    """The connect form, as far as WooCommerce's authorize page: the install's one-time token."""
    resp = s.post(f"{bridge.url}/app/connect", data={"store_url": fake_wc.base_url,
                                                     "csrf_token": csrf},
                  allow_redirects=False, timeout=5)
    assert resp.status_code == 303, resp.text
    return parse_qs(urlsplit(resp.headers["Location"]).query)["user_id"][0]


def callback_body(fake_wc, token: str) -> dict:
    ck, cs = fake_wc.add_api_key("read_write")
    return {"key_id": 1, "user_id": token, "consumer_key": ck, "consumer_secret": cs,
            "key_permissions": "read_write"}


@pytest.mark.parametrize("layout", LAYOUTS)  # on PostgreSQL the race is real
def test_install_callback_replayed_at_once_connects_one_store(bridge_factory, fake_wc):
    """The same callback posted many times in parallel (a replay racing the real one): one is
    accepted, the others are refused, and the merchant has exactly one store."""
    bridge = bridge_factory(worker=False)
    merchant = bridge.runtime.accounts.create("a@example.com", PASSWORD)
    s, csrf = session_for(bridge, "a@example.com")
    token = start_install(bridge, fake_wc, s, csrf)
    body = callback_body(fake_wc, token)
    copies = 10
    start, answers = threading.Barrier(copies), []

    def post() -> None:
        start.wait()
        resp = requests.post(f"{bridge.url}/app/connect/callback/{token}", json=body, timeout=30)
        answers.append((resp.status_code, resp.json()))

    threads = [threading.Thread(target=post) for _ in range(copies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(code for code, _ in answers) == [200] + [400] * (copies - 1)
    assert all(b["error"]["code"] == "invalid_install" for code, b in answers if code == 400)
    stores = bridge.runtime.registry.list(merchant_id=merchant.id)
    assert len(stores) == 1
    back = s.get(f"{bridge.url}/app/connect/return/{token}?success=1", allow_redirects=False,
                 timeout=5)
    assert back.headers["Location"].endswith(f"/app/stores/{stores[0].id}")


def test_install_callback_that_failed_can_be_sent_again(bridge_factory, fake_wc, monkeypatch):
    """A failure while the store is being saved gives the install back: nothing is half
    connected in the meantime, and WooCommerce's next attempt connects the store."""
    bridge = bridge_factory(worker=False)
    merchant = bridge.runtime.accounts.create("a@example.com", PASSWORD)
    s, csrf = session_for(bridge, "a@example.com")
    token = start_install(bridge, fake_wc, s, csrf)
    body = callback_body(fake_wc, token)
    registry = bridge.runtime.registry
    real_add = registry.add

    def failing_add(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(registry, "add", failing_add)
    failed = requests.post(f"{bridge.url}/app/connect/callback/{token}", json=body, timeout=5)
    assert failed.status_code == 500 and registry.list(merchant_id=merchant.id) == []
    back = s.get(f"{bridge.url}/app/connect/return/{token}?success=1", allow_redirects=False,
                 timeout=5)
    assert back.headers["Location"].endswith("/app/")  # not connected, not a store page
    monkeypatch.setattr(registry, "add", real_add)
    again = requests.post(f"{bridge.url}/app/connect/callback/{token}", json=body, timeout=5)
    assert again.status_code == 200, again.text
    assert len(registry.list(merchant_id=merchant.id)) == 1


def test_sign_out_ends_every_session_of_the_merchant(bridge):
    """Signing out is "sign out everywhere": the session cookie is stateless, so a copy of it
    replayed after sign-out, and a second session of the same merchant still open in another
    browser, are both sent to the login page. A sign-out without the CSRF token ends nothing."""
    bridge.runtime.accounts.create("a@example.com", PASSWORD)
    s, csrf = session_for(bridge, "a@example.com")
    elsewhere, _ = session_for(bridge, "a@example.com")
    saved = s.cookies.get("upay_bridge_session")
    home = f"{bridge.url}/app/"

    forged = elsewhere.post(f"{bridge.url}/app/logout", data={"csrf_token": "forged"},
                            allow_redirects=False, timeout=5)
    assert forged.status_code == 303 and not forged.headers["Location"].endswith("/app/login")
    assert s.get(home, allow_redirects=False, timeout=5).status_code == 200

    out = s.post(f"{bridge.url}/app/logout", data={"csrf_token": csrf}, allow_redirects=False,
                 timeout=5)
    assert out.status_code == 303 and out.headers["Location"].endswith("/app/login")
    replayed = requests.get(home, headers={"Cookie": f"upay_bridge_session={saved}"},
                            allow_redirects=False, timeout=5)
    assert replayed.status_code == 302 and replayed.headers["Location"].endswith("/app/login")
    ended = elsewhere.get(home, allow_redirects=False, timeout=5)
    assert ended.status_code == 302 and ended.headers["Location"].endswith("/app/login")
    session_for(bridge, "a@example.com")  # signing in again works


HOSTILE_NEXT = [
    # Browsers drop tab, CR and LF and read "\\" as "/": the first six become //evil.example.
    "/\t/evil.example/", "/\n/evil.example/", "/\r/evil.example/", "/\\evil.example/",
    "/\\/evil.example/", "\t//evil.example/",
    # The plain ways off the site, and no page at all.
    "//evil.example/",
    "https://evil.example/", "javascript:alert(1)", "evil.example", "",
]


def language_switch(bridge, next_url: str) -> requests.Response:
    s = requests.Session()
    page = s.get(f"{bridge.url}/app/login", timeout=5).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return s.post(f"{bridge.url}/app/language", timeout=5, allow_redirects=False,
                  data={"language": "ar", "next": next_url, "csrf_token": csrf})


@pytest.mark.parametrize("next_url", HOSTILE_NEXT)
def test_language_switch_never_leaves_the_site(bridge_factory, next_url):
    resp = language_switch(bridge_factory(worker=False), next_url)
    assert resp.status_code == 303 and resp.headers["Location"] == "/app/"


@pytest.mark.parametrize("next_url", ["/app/login", "/app/stores/abc123/activity?q=1001"])
def test_language_switch_goes_back_to_the_page(bridge_factory, next_url):
    resp = language_switch(bridge_factory(worker=False), next_url)
    assert resp.status_code == 303 and resp.headers["Location"] == next_url
