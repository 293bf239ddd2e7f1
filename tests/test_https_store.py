"""A WooCommerce store over https: the woocommerce package switches to Basic auth, which
WooCommerce accepts only over TLS (woocommerce.md §4.1). The fake store serves real TLS with a
certificate made here, trusted through REQUESTS_CA_BUNDLE, as a deployment would trust its CA."""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bridge.fakes.server import serve_wsgi
from bridge.fakes.woocommerce import FakeWooCommerce

from .conftest import UPAY_KEY, WEBHOOK_SECRET


def self_signed(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "store.pem", tmp_path / "store.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_https_store_is_called_with_basic_auth(bridge, tmp_path, monkeypatch, fake_upay):
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)
    store = FakeWooCommerce(https=True)
    served = serve_wsgi(store.app, ssl_context=(cert, key))
    store.set_base_url(served.url)
    try:
        ck, cs = store.add_api_key("read_write")
        record = bridge.runtime.registry.add(
            "woocommerce", served.url, {"consumer_key": ck, "consumer_secret": cs,
                                        "webhook_secret": WEBHOOK_SECRET, "upay_api_key": UPAY_KEY},
            upay_sandbox=True)
        assert record.url.startswith("https://")
        store.add_webhook("order.created", bridge.webhook_url(record), WEBHOOK_SECRET)
        order = store.create_order([{"name": "Coffee", "price": "4.500", "quantity": 1}],
                                   billing={"first_name": "A", "email": "a@example.com"})
        store.deliver_queued()
        bridge.wait_state(order["id"], "done")
        assert len(store.notes(order["id"])) == 1
        kinds = {r["auth"] for r in store.requests if r.get("path", "").startswith("/wp-json/")}
        assert kinds == {"basic_auth"}, kinds
    finally:
        served.shutdown()
