"""Review of the WooCommerce adapter against woocommerce.md, each test against the fake store."""

from __future__ import annotations

import pytest

from bridge import db
from bridge.fakes.woocommerce import webhook_signature as wc_core_signature
from bridge.registry import StoreSettings
from bridge.stores.woocommerce import webhook_signature

from .conftest import UPAY_KEY

# Secrets as a merchant may paste them (--webhook-secret, or one WooCommerce generated with
# wp_generate_password(50, true, true), which contains "&" and ";"). WooCommerce signs with
# wp_specialchars_decode($secret, ENT_QUOTES) (woocommerce.md §1.3): only &amp; &lt; &gt;
# &quot; &#039; (and their numeric forms) become characters; every other entity, and an entity
# without its ";", is signed as typed.
UNDECODED_SECRETS = ["k&copy;9-secret", "k&ampx-secret", "k&LT3-secret", "k&#65;-secret",
                     "k&nbsp;-secret", "k&apos;-secret", "k&gt"]
DECODED_SECRETS = ["k&amp;x-secret", "k&#039;x", "k&#39;x", "k&#x27;x", "k&quot;x", "k&lt;x&gt;"]


@pytest.mark.parametrize("secret", UNDECODED_SECRETS + DECODED_SECRETS)
def test_signature_decodes_the_secret_exactly_as_wp_specialchars_decode(secret):
    body = b'{"id":1,"status":"pending"}'
    assert webhook_signature(body, secret) == wc_core_signature(body, secret)


@pytest.mark.parametrize("secret", ["k&copy;9-secret", "k&ampx-secret"])
def test_delivery_signed_with_an_entity_like_secret_is_accepted(bridge_factory, fake_wc, secret):
    bridge = bridge_factory(worker=False)
    ck, cs = fake_wc.add_api_key("read_write")
    record = bridge.runtime.registry.add(
        "woocommerce", fake_wc.base_url,
        {"consumer_key": ck, "consumer_secret": cs, "webhook_secret": secret,
         "upay_api_key": UPAY_KEY},
        name="Test shop", upay_sandbox=True, settings=StoreSettings())
    hook = fake_wc.add_webhook("order.created", bridge.webhook_url(record), secret)
    order = fake_wc.create_order([{"name": "Coffee", "price": "6.250", "quantity": 2}])
    [delivery] = fake_wc.deliver(hook["id"], order["id"])
    assert delivery.status == 200, delivery.response_body
    assert bridge.order(order["id"]) is not None
    assert bridge.count(db.orders) == 1
