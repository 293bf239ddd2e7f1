"""The merchant's pages in a real headless Chromium (Debian's chromium, driven by Playwright):
sign in, connect a store through WooCommerce's app authorization, save settings, press both test
buttons, find an order and retry it, switch to Arabic.

Set UPAY_BRIDGE_SCREENSHOTS=docs to refresh the screenshots the README shows.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .conftest import wait_for

PASSWORD = "correct horse battery"


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(20000)
    yield page
    context.close()


def shot(page, name: str) -> None:
    folder = os.environ.get("UPAY_BRIDGE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def sign_in(page, bridge, email: str) -> None:
    page.goto(f"{bridge.url}/app/login")
    shot(page, "sign-in")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(f"{bridge.url}/app/")


def test_merchant_connects_a_store_and_manages_it(bridge_factory, page, fake_wc, fake_upay):
    bridge = bridge_factory(allow_private_store_urls=True)
    fake_wc.allow_http_callback = True  # the bridge runs on http://127.0.0.1 in tests
    bridge.runtime.accounts.create("merchant@example.com", PASSWORD)
    sign_in(page, bridge, "merchant@example.com")
    assert page.locator("#unsafe-url").is_visible()  # 127.0.0.1 cannot receive WooCommerce webhooks

    # connect through WooCommerce's own authorization page
    page.fill("#store_url", fake_wc.base_url)
    page.click("#connect")
    page.wait_for_url(f"{fake_wc.base_url}/wc-auth/**")
    shot(page, "woocommerce-approve")
    page.click("#approve button")
    page.wait_for_url(f"{bridge.url}/app/stores/**")
    assert "Store connected" in page.content()
    webhooks = wait_for(lambda: [w for w in _webhooks(fake_wc) if "/webhooks/woocommerce/" in w["delivery_url"]])
    assert len(webhooks) == 1 and webhooks[0]["status"] == "active"
    # WooCommerce pinged the bridge during the registration call, and got exactly 200
    wait_for(lambda: fake_wc.pings and fake_wc.pings[-1].status_code == 200)

    # settings: the UPay key is write-only
    page.fill("#upay_api_key", "jtest123")
    page.check("#upay_sandbox")
    page.select_option("#notification_type", "email")
    page.click("#save")
    page.wait_for_selector(".flash.ok")
    assert "jtest123" not in page.content()
    assert page.get_attribute("#upay_api_key", "placeholder") == "••••••••"  # 8 characters, all hidden
    shot(page, "settings")
    page.click("#test-upay")
    page.wait_for_selector(".flash")
    assert "Test UPay key: OK" in page.inner_text(".flash")
    page.click("#test-store")
    page.wait_for_selector(".flash")
    assert "Test store connection: OK" in page.inner_text(".flash")

    # an order arrives through the webhook the bridge registered, and gets its link
    fake_wc.add_product(1, "Arabic Coffee", "4.500")
    order = fake_wc.create_order([{"product_id": 1, "quantity": 2}],
                                 billing={"first_name": "Fatima", "email": "fatima@example.com"})
    fake_wc.deliver_queued()
    bridge.wait_state(order["id"], "done")

    page.click("#activity-link")
    page.fill("#q", str(order["number"]))
    page.click("#find")
    row = page.locator(f"tr.order[data-number='{order['number']}']")
    assert row.count() == 1 and "done" in row.inner_text()
    shot(page, "activity")
    row.locator("button.retry").click()
    page.wait_for_selector(".flash.ok")

    # Arabic, right to left
    page.click("#switch-language")
    page.wait_for_load_state()
    assert page.get_attribute("html", "dir") == "rtl"
    assert "النشاط" in page.content()
    shot(page, "activity-ar")


def test_failed_sign_in_is_refused_and_throttled(bridge_factory, page):
    bridge = bridge_factory(worker=False)
    bridge.runtime.accounts.create("m2@example.com", PASSWORD)
    for _ in range(5):
        page.goto(f"{bridge.url}/app/login")
        page.fill("#email", "m2@example.com")
        page.fill("#password", "wrong password!")
        page.click("#sign-in")
        assert "Wrong e-mail or password" in page.content()
    page.goto(f"{bridge.url}/app/login")
    page.fill("#email", "m2@example.com")
    page.fill("#password", PASSWORD)  # even the right password waits now
    page.click("#sign-in")
    assert "Too many attempts" in page.content()


def test_saleor_dashboard_opens_the_settings_in_its_iframe(bridge, saleor, page):
    # The Dashboard is another site than the app (localhost vs 127.0.0.1 here), as in real life:
    # a cookie the app sets inside the iframe is a third-party cookie there. It runs at its
    # Saleor's origin, the only one whose handshake the app page accepts, so that Saleor is
    # installed under the name localhost too.
    saleor.set_url(saleor.url.replace("127.0.0.1", "localhost"))
    assert "127.0.0.1" in bridge.url and "localhost" in saleor.api_url
    result = saleor.install(f"{bridge.url}/saleor/manifest")
    assert result.ok, result.message
    installed = bridge.runtime.registry.find_by_url("saleor", saleor.api_url)
    dashboard = saleor.api_url.replace("/graphql/",
                                       f"/dashboard/apps/{installed.secrets['app_id']}/app/")
    page.goto(dashboard)
    frame = page.frame_locator("#app")
    frame.locator("#notification_type").wait_for()  # the handshake signed it in
    app_frame = page.frames[1]
    assert app_frame.url == f"{bridge.url}/app/stores/{installed.id}"
    assert saleor.api_url in frame.locator("body").inner_text()
    cookie = next(c for c in page.context.cookies() if c["name"] == "upay_bridge_session")
    assert cookie["sameSite"] == "None" and cookie["secure"] and cookie["partitionKey"]
    # a form in the iframe: the session cookie comes back with it, and its CSRF token is checked
    frame.locator("#notification_type").select_option("email")
    frame.locator("#save").click()
    frame.locator(".flash.ok").wait_for()
    assert bridge.runtime.registry.get(installed.id).settings.notification_type.value == "email"
    shot(page, "saleor-dashboard")


def _webhooks(fake_wc):
    hooks = fake_wc.webhooks
    values = hooks.values() if isinstance(hooks, dict) else hooks
    return [h if isinstance(h, dict) else vars(h) for h in values]


def test_chromium_is_debians():
    assert shutil.which("chromium") or not os.environ.get("CI")
