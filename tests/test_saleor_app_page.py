"""The Saleor app page (the manifest's appUrl) takes the Dashboard's token only from the Dashboard.

The Dashboard frames the page and posts it a token ("handshake", AppBridge). Any page can frame
or open the app page and post to it too; the page must act only on a message from its parent
frame at the origin of the Saleor the bridge registered (the iframe URL's ``saleorApiUrl``).
Real headless Chromium, as in test_browser.py; the legitimate path is
test_browser.py::test_saleor_dashboard_opens_the_settings_in_its_iframe.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlencode, urlsplit

import pytest
import requests

from bridge.fakes.saleor import FakeSaleor
from bridge.fakes.server import ServedApp, serve_wsgi
from bridge.registry import StoreRecord

from .conftest import Bridge

SESSION_PATH = "/saleor/app/session"
# How long a page that did act on a message would need to ask for a session: far less than this.
SETTLE_MS = 1500


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 900}, locale="en-US")
    context.set_default_timeout(20000)
    yield context
    context.close()


def app_url(bridge: Bridge, saleor: FakeSaleor, app_id: str) -> str:
    """The app page as the Dashboard opens it (saleor-dashboard's iframe query)."""
    return f"{bridge.url}/saleor/app?" + urlencode({
        "domain": urlsplit(saleor.api_url).netloc, "id": app_id, "locale": "en",
        "saleorApiUrl": saleor.api_url, "theme": "light"})


def serve_page(html: str) -> ServedApp:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [html.encode()]
    return serve_wsgi(app)


def session_requests(seen: list[str]) -> list[str]:
    return [u for u in seen if urlsplit(u).path == SESSION_PATH]


def signed_in(context: Any, bridge: Bridge, record: StoreRecord) -> bool:
    """Whether the browser's bridge cookies open the store's settings page."""
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in context.cookies()
                        if c["name"] == "upay_bridge_session")
    # By hand: requests' jar would not send a Secure cookie over http, a browser does on loopback.
    resp = requests.get(f"{bridge.url}/app/stores/{record.id}", headers={"Cookie": cookies},
                        allow_redirects=False, timeout=5)
    return resp.status_code == 200


def test_a_handshake_from_a_page_on_another_origin_is_ignored(
        installed: StoreRecord, bridge: Bridge, saleor: FakeSaleor, context: Any) -> None:
    # Another loopback origin frames the app page as the Dashboard would and posts it a real
    # Dashboard token (leaked, or its own): the page must not use it.
    app_id = installed.secrets["app_id"]
    token = saleor.dashboard_token(app_id)
    attacker = serve_page(f"""<!doctype html><html><body><h1>Not the Dashboard</h1>
<iframe id="app" src="{app_url(bridge, saleor, app_id)}"></iframe>
<script>
var frame = document.getElementById("app");
frame.addEventListener("load", function () {{
  frame.contentWindow.postMessage({{type: "handshake", payload: {{token: {json.dumps(token)}, version: 1}}}}, "*");
  document.title = "posted";
}});
</script></body></html>""")
    try:
        assert urlsplit(attacker.url).netloc != urlsplit(saleor.api_url).netloc
        page = context.new_page()
        seen: list[str] = []
        page.on("request", lambda r: seen.append(r.url))
        page.goto(attacker.url)
        page.wait_for_function("document.title === 'posted'")
        page.wait_for_timeout(SETTLE_MS)
        assert session_requests(seen) == [] and not signed_in(context, bridge, installed)
        app = page.frames[1]
        assert urlsplit(app.url).path == "/saleor/app"  # not sent on to the settings page
        assert app.inner_text("#status") == "Connecting to Saleor…"
    finally:
        attacker.shutdown()


def test_a_handshake_from_a_window_that_is_not_the_parent_is_ignored(
        installed: StoreRecord, bridge: Bridge, saleor: FakeSaleor, context: Any) -> None:
    # Even at the Dashboard's own origin, only the parent frame speaks for the Dashboard: here a
    # page there opens the app page in a new window (it is its opener, not its parent) and posts
    # it the token.
    app_id = installed.secrets["app_id"]
    token = saleor.dashboard_token(app_id)
    origin = f"{urlsplit(saleor.api_url).scheme}://{urlsplit(saleor.api_url).netloc}"
    opener_url = f"{origin}/not-the-dashboard"
    page = context.new_page()
    page.route(opener_url, lambda route: route.fulfill(content_type="text/html", body=f"""
<!doctype html><html><body><script>
var w = window.open({json.dumps(app_url(bridge, saleor, app_id))}, "app");
var n = 0;
var timer = setInterval(function () {{
  w.postMessage({{type: "handshake", payload: {{token: {json.dumps(token)}, version: 1}}}}, "*");
  if (++n === 20) {{ clearInterval(timer); document.title = "posted"; }}
}}, 100);
</script></body></html>"""))
    seen: list[str] = []
    context.on("request", lambda r: seen.append(r.url))
    with context.expect_page() as popup_info:
        page.goto(opener_url)
    popup = popup_info.value
    popup.wait_for_load_state()
    page.wait_for_function("document.title === 'posted'")
    page.wait_for_timeout(SETTLE_MS)
    assert session_requests(seen) == [] and not signed_in(context, bridge, installed)
    assert urlsplit(popup.url).path == "/saleor/app"
    assert popup.inner_text("#status") == "Connecting to Saleor…"


def test_the_page_listens_only_for_a_saleor_that_installed_the_app(
        installed: StoreRecord, bridge: Bridge, saleor: FakeSaleor) -> None:
    page = requests.get(app_url(bridge, saleor, installed.secrets["app_id"]), timeout=5)
    assert page.status_code == 200
    # The origin to trust comes from the registered store, written into the page as JSON.
    assert f"var apiUrl = {json.dumps(installed.url)};" in page.text
    assert "trusted.indexOf(event.origin) < 0" in page.text
    unknown = requests.get(f"{bridge.url}/saleor/app", timeout=5, params={
        "saleorApiUrl": "https://attacker.example/graphql/"})
    assert unknown.status_code == 200
    assert "This Saleor has not installed the app." in unknown.text
    assert "<script" not in unknown.text and "attacker.example" not in unknown.text


def test_a_dashboard_served_apart_from_its_api_is_trusted_when_configured(
        installed: StoreRecord, bridge: Bridge, saleor: FakeSaleor, context: Any) -> None:
    """A self-hosted Dashboard on another origin than its API (UPAY_BRIDGE_SALEOR_DASHBOARD_ORIGINS):
    the same framing page that is ignored above signs in once its origin is configured."""
    app_id = installed.secrets["app_id"]
    token = saleor.dashboard_token(app_id)
    dashboard = serve_page(f"""<!doctype html><html><body><h1>Dashboard</h1>
<iframe id="app" src="{app_url(bridge, saleor, app_id)}"></iframe>
<script>
window.addEventListener("message", function (e) {{
  if (e.data && e.data.type === "notifyReady") {{
    e.source.postMessage({{type: "handshake", payload: {{token: {json.dumps(token)}, version: 1}}}}, "*");
  }}
}});
</script></body></html>""")
    try:
        # On "localhost", another site than the bridge's 127.0.0.1, as a real Dashboard is.
        origin = dashboard.url.rstrip("/").replace("127.0.0.1", "localhost")
        rt = bridge.runtime
        rt.settings = rt.settings.with_overrides(saleor_dashboard_origins=(origin,))
        page = context.new_page()
        answers: list[tuple[str, int]] = []
        page.on("response", lambda r: answers.append((urlsplit(r.url).path, r.status)))
        page.goto(origin + "/")
        page.frame_locator("#app").locator("#notification_type").wait_for()
        assert [status for path, status in answers if path == SESSION_PATH] == [200]
    finally:
        dashboard.shutdown()


@pytest.mark.parametrize("raw,expected", [
    ("", ()), ("https://Dash.Example.com/", ("https://dash.example.com",)),
    ("http://127.0.0.1:9000, https://d.example", ("http://127.0.0.1:9000", "https://d.example")),
])
def test_dashboard_origins_setting(raw: str, expected: tuple[str, ...]) -> None:
    from bridge.config import load_settings
    env = {"UPAY_BRIDGE_SALEOR_DASHBOARD_ORIGINS": raw}
    assert load_settings(env).saleor_dashboard_origins == expected


@pytest.mark.parametrize("raw", ["dash.example.com", "https://d.example/dashboard/",
                                 "javascript:alert(1)", "https://u@d.example"])
def test_dashboard_origins_setting_refuses_what_is_not_an_origin(raw: str) -> None:
    from bridge.config import load_settings
    with pytest.raises(ValueError, match="SALEOR_DASHBOARD_ORIGINS"):
        load_settings({"UPAY_BRIDGE_SALEOR_DASHBOARD_ORIGINS": raw})
