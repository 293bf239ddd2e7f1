"""The upay-bridge command line: registering stores without a browser, seeing orders."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.crypto import generate_key

SECRET_ARGS = ["--consumer-key", "ck_0123456789abcdef", "--consumer-secret", "cs_fedcba9876543210",
               "--webhook-secret", "whsec-cli-test", "--upay-api-key", "upay-live-key-123456"]


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("UPAY_BRIDGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("UPAY_BRIDGE_SECRET_KEY", generate_key())
    monkeypatch.setenv("UPAY_BRIDGE_PUBLIC_URL", "https://bridge.example.com")
    runner = CliRunner()

    def run(*args: str, ok: bool = True):
        result = runner.invoke(main, list(args), catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result
    return run


def test_store_add_prints_id_and_webhook_url(cli):
    out = cli("store", "add", "woocommerce", "--url", "https://shop.example.com", *SECRET_ARGS,
              "--upay-sandbox").output
    assert "store id:" in out
    assert "https://bridge.example.com/webhooks/woocommerce/s" in out


def test_store_add_json_list_show_remove(cli):
    added = json.loads(cli("store", "add", "woocommerce", "--url", "HTTPS://Shop.example.com/",
                           *SECRET_ARGS, "--notification-type", "email", "--language", "ar",
                           "--note", "private", "--payment-method", "upay", "--status", "pending",
                           "--currency", "kwd", "--paid-status", "completed",
                           "--paid-after-cancel", "flag", "--reconcile-expiry-hours", "24",
                           "--json").output)
    store_id = added["id"]
    assert added["webhook_url"] == f"https://bridge.example.com/webhooks/woocommerce/{store_id}"

    second = json.loads(cli("store", "add", "woocommerce", "--url", "https://other.example",
                            *SECRET_ARGS, "--json").output)
    listed = json.loads(cli("store", "list", "--json").output)
    assert [s["id"] for s in listed] == [store_id, second["id"]]

    shown = json.loads(cli("store", "show", store_id, "--json").output)
    assert shown["url"] == "https://Shop.example.com"
    assert shown["settings"] == {"notification_type": "email", "language": "ar",
                                 "customer_note": False, "payment_methods": ["upay"],
                                 "statuses": ["pending"], "currencies": ["KWD"],
                                 "paid_status": "completed", "paid_after_cancel": "flag",
                                 "reconcile_expiry_hours": 24.0}
    text = cli("store", "show", store_id).output + json.dumps(shown) + cli("store", "list").output
    for secret in ("cs_fedcba9876543210", "whsec-cli-test", "upay-live-key-123456"):
        assert secret not in text  # shown masked only
    assert shown["secrets"]["upay_api_key"].endswith("3456")

    cli("store", "remove", store_id, "--yes")
    assert [s["id"] for s in json.loads(cli("store", "list", "--json").output)] == [second["id"]]
    assert cli("store", "show", store_id, ok=False).exit_code == 1


def test_secrets_are_encrypted_at_rest(cli, tmp_path):
    cli("store", "add", "woocommerce", "--url", "https://shop.example.com", *SECRET_ARGS)
    raw = (tmp_path / "data" / "bridge.db").read_bytes()
    for path in (tmp_path / "data").glob("bridge.db*"):
        raw += path.read_bytes()
    for secret in (b"cs_fedcba9876543210", b"whsec-cli-test", b"upay-live-key-123456"):
        assert secret not in raw


def test_webhook_secret_is_generated_when_omitted(cli):
    out = json.loads(cli("store", "add", "woocommerce", "--url", "https://shop.example.com",
                         "--consumer-key", "ck", "--consumer-secret", "cs", "--upay-api-key", "k",
                         "--json").output)
    assert len(out["webhook_secret"]) >= 32


@pytest.mark.parametrize("args,message", [
    (["--url", "ftp://shop.example.com"], "http(s)"),
    (["--url", "https://shop.example.com?x=1"], "query"),
    (["--url", "https://shop.example.com", "--status", "shipped"], "unknown order status"),
])
def test_store_add_rejects_bad_input(cli, args, message):
    result = cli("store", "add", "woocommerce", *args, *SECRET_ARGS, ok=False)
    assert result.exit_code != 0 and message in result.output
    assert json.loads(cli("store", "list", "--json").output) == []


def test_orders_list_and_show_on_an_empty_bridge(cli):
    assert json.loads(cli("orders", "list", "--json").output) == []
    assert cli("orders", "show", "99", ok=False).exit_code == 1


def test_secret_key_prints_a_fernet_key(cli):
    from cryptography.fernet import Fernet
    Fernet(cli("secret-key").output.strip().encode())


def test_merchant_account_and_store_ownership(cli, monkeypatch):
    monkeypatch.setenv("UPAY_BRIDGE_MERCHANT_PASSWORD", "a long enough password")
    assert "created owner@example.com" in cli("merchant", "create", "owner@example.com").output
    assert cli("merchant", "create", "owner@example.com", ok=False).exit_code == 1
    monkeypatch.setenv("UPAY_BRIDGE_MERCHANT_PASSWORD", "short")
    assert "at least" in cli("merchant", "create", "x@example.com", ok=False).output
    cli("store", "add", "woocommerce", "--url", "https://shop.example.com", *SECRET_ARGS,
        "--merchant", "owner@example.com")
    result = cli("store", "add", "woocommerce", "--url", "https://shop.example.com", *SECRET_ARGS,
                 "--merchant", "nobody@example.com", ok=False)
    assert "no merchant account" in result.output


def test_rotating_the_encryption_key(cli, monkeypatch):
    from cryptography.fernet import Fernet
    old = generate_key()
    monkeypatch.setenv("UPAY_BRIDGE_SECRET_KEY", old)
    store_id = json.loads(cli("store", "add", "woocommerce", "--url", "https://shop.example.com",
                              *SECRET_ARGS, "--json").output)["id"]
    new = generate_key()
    monkeypatch.setenv("UPAY_BRIDGE_SECRET_KEY", f"{new},{old}")
    assert "1 store" in cli("rotate-secrets").output
    monkeypatch.setenv("UPAY_BRIDGE_SECRET_KEY", new)  # the old key is gone: secrets still read
    shown = json.loads(cli("store", "show", store_id, "--json").output)
    assert shown["secrets"]["upay_api_key"].endswith("3456")
    assert Fernet(new.encode())
