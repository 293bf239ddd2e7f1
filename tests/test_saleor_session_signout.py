"""Signing out of a session opened from inside the Saleor Dashboard (the app page, by the
Dashboard's token; no merchant account). The session cookie is stateless, so "sign out" there
ends every Dashboard session of that store: each carries the store's Dashboard session version
and sign-out raises it. Reopening the app in the Dashboard opens a new session by a new token,
without a password, so the other staff lose nothing but a reload. A reinstall of the app ends
them too: they were opened under the app that was removed."""

from __future__ import annotations

import re

import pytest
import requests

from bridge.fakes.saleor import FakeSaleor

from .conftest import UPAY_KEY

# The version's upsert is written once for SQLite and PostgreSQL: both run it.
BOTH_LAYOUTS = True


def dashboard_session(bridge, saleor, record) -> tuple[requests.Session, str, str]:
    """A browser inside the Dashboard: the session, its cookie, and its CSRF token."""
    resp = requests.post(f"{bridge.url}/saleor/app/session", timeout=5, json={
        "token": saleor.dashboard_token(record.secrets["app_id"]),
        "saleorApiUrl": saleor.api_url})
    assert resp.status_code == 200, resp.text
    # The cookie is Secure (the Dashboard's iframe is cross-site); requests' jar does not send a
    # Secure cookie over http, so by hand, as tests/test_saleor.py does.
    cookie = resp.headers["Set-Cookie"].split(";")[0]
    s = requests.Session()
    s.headers["Cookie"] = cookie
    page = s.get(bridge.url + resp.json()["redirect"], timeout=5)
    assert page.status_code == 200 and saleor.api_url in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return s, cookie, csrf


def settings_page(bridge, record, cookie: str) -> requests.Response:
    return requests.get(f"{bridge.url}/app/stores/{record.id}", headers={"Cookie": cookie},
                        allow_redirects=False, timeout=5)


def signed_out(resp: requests.Response) -> bool:
    return resp.status_code == 302 and resp.headers["Location"].endswith("/app/login")


@pytest.fixture
def other_saleor():
    fake = FakeSaleor(currency="KWD")
    served = fake.serve()
    yield fake
    served.shutdown()


def test_sign_out_in_the_dashboard_ends_every_dashboard_session_of_that_store(
        installed, bridge, saleor, other_saleor):
    s, cookie, csrf = dashboard_session(bridge, saleor, installed)
    elsewhere, elsewhere_cookie, _ = dashboard_session(bridge, saleor, installed)
    # Another Saleor store on the same bridge, and a merchant account: not this store's sessions.
    result = other_saleor.install(f"{bridge.url}/saleor/manifest")
    assert result.ok, result.message
    other = bridge.runtime.registry.find_by_url("saleor", other_saleor.api_url)
    _, other_cookie, _ = dashboard_session(bridge, other_saleor, other)

    # A sign-out without the CSRF token (a cross-site form) ends nothing.
    forged = elsewhere.post(f"{bridge.url}/app/logout", data={"csrf_token": "forged"},
                            allow_redirects=False, timeout=5)
    assert forged.status_code == 303
    assert settings_page(bridge, installed, cookie).status_code == 200

    out = s.post(f"{bridge.url}/app/logout", data={"csrf_token": csrf}, allow_redirects=False,
                 timeout=5)
    assert out.status_code == 303 and out.headers["Location"].endswith("/app/login")
    # A copy of the cookie replayed after sign-out, and the other Dashboard session of the same
    # store, are both signed out; a form posted from one changes nothing.
    assert signed_out(settings_page(bridge, installed, cookie))
    assert signed_out(settings_page(bridge, installed, elsewhere_cookie))
    changed = requests.post(f"{bridge.url}/app/stores/{installed.id}",
                            headers={"Cookie": cookie}, allow_redirects=False, timeout=5,
                            data={"csrf_token": csrf, "language": "ar"})
    assert changed.status_code in (302, 303)
    assert bridge.runtime.registry.get(installed.id).settings.language == "en"
    # The other store's Dashboard session goes on.
    assert settings_page(bridge, other, other_cookie).status_code == 200
    # Opening the app again in the Dashboard works, without a password.
    _, again, _ = dashboard_session(bridge, saleor, installed)
    assert settings_page(bridge, installed, again).status_code == 200


def test_a_dashboard_sign_out_leaves_merchant_accounts_signed_in(installed, bridge, saleor):
    # The store version is the Dashboard's; a merchant's sessions have their own version.
    from .test_merchant_pages import PASSWORD, session_for

    bridge.runtime.accounts.create("a@example.com", PASSWORD)
    merchant, _ = session_for(bridge, "a@example.com")
    s, _, csrf = dashboard_session(bridge, saleor, installed)
    s.post(f"{bridge.url}/app/logout", data={"csrf_token": csrf}, timeout=5)
    assert merchant.get(f"{bridge.url}/app/", allow_redirects=False, timeout=5).status_code == 200


def test_reinstalling_the_app_ends_the_dashboard_sessions_of_the_old_install(
        installed, bridge, saleor):
    _, cookie, _ = dashboard_session(bridge, saleor, installed)
    saleor.delete_app(installed.secrets["app_id"])
    result = saleor.install(f"{bridge.url}/saleor/manifest")
    assert result.ok, result.message
    assert signed_out(settings_page(bridge, installed, cookie))
    record = bridge.runtime.registry.get(installed.id)  # the same store, a new app id
    assert record.secrets["app_id"] != installed.secrets["app_id"]
    bridge.runtime.registry.update(record.id, secrets={"upay_api_key": UPAY_KEY})
    _, again, _ = dashboard_session(bridge, saleor, bridge.runtime.registry.get(record.id))
    assert settings_page(bridge, installed, again).status_code == 200


def test_disconnecting_the_store_ends_its_dashboard_sessions(installed, bridge, saleor):
    _, cookie, _ = dashboard_session(bridge, saleor, installed)
    bridge.runtime.registry.remove(installed.id)
    home = requests.get(f"{bridge.url}/app/", headers={"Cookie": cookie}, allow_redirects=False,
                        timeout=5)
    assert signed_out(home)
