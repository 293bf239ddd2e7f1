"""``upay-bridge store add`` runs the connect form's address check (bridge/netguard.py): a store
URL on a loopback, private, link-local or shared address is refused with one ``error:`` line and
exit status 1, unless UPAY_BRIDGE_ALLOW_PRIVATE_STORE_URLS is on or the operator says
``--allow-private`` for this one store. Real processes, as an operator runs them."""

from __future__ import annotations

import json

import pytest

from . import test_ops_review
from .test_ops_review import SECRETS, assert_clear_error, run

# The operations tests' environment: none of the caller's UPAY_BRIDGE_ settings leak in (the
# private-URL setting in particular).
env = test_ops_review.env

PRIVATE_URLS = [
    "http://127.0.0.1:8080",  # loopback
    "http://localhost",  # a name that resolves to loopback
    "http://[::1]:8080",  # IPv6 loopback
    "https://10.0.0.5",  # private
    "http://169.254.169.254",  # link-local: a cloud's instance metadata service
    "http://100.100.100.200",  # shared address space: another cloud's metadata service
]


def stores(env: dict[str, str]) -> list[dict]:
    result = run(env, "store", "list", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_store_add_refuses_a_private_address(env, url):
    result = run(env, "store", "add", "woocommerce", "--url", url, *SECRETS)
    assert_clear_error(result, "loopback, private or link-local", "--allow-private")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for secret in SECRETS[1::2]:  # the refusal shows none of the store's secrets
        assert secret not in result.stdout + result.stderr
    assert stores(env) == []


def test_store_add_takes_a_private_address_with_the_setting_on(env):
    env = {**env, "UPAY_BRIDGE_ALLOW_PRIVATE_STORE_URLS": "1"}
    result = run(env, "store", "add", "woocommerce", "--url", "http://127.0.0.1:8080", *SECRETS,
                 "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [s["url"] for s in stores(env)] == ["http://127.0.0.1:8080"]


def test_store_add_takes_a_private_address_with_allow_private(env):
    # An operator's store on the bridge's own network: allowed for this store only, without
    # turning the setting on (which would let every merchant's connect form in too).
    result = run(env, "store", "add", "woocommerce", "--url", "http://10.0.0.5:8080", *SECRETS,
                 "--allow-private", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [s["url"] for s in stores(env)] == ["http://10.0.0.5:8080"]


def test_store_add_takes_a_public_address(env):
    result = run(env, "store", "add", "woocommerce", "--url", "https://93.184.215.14", *SECRETS,
                 "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [s["url"] for s in stores(env)] == ["https://93.184.215.14"]


def test_store_add_checks_the_url_before_its_address(env):
    # A URL that is no http(s) URL keeps its own message, not an address verdict.
    result = run(env, "store", "add", "woocommerce", "--url", "ftp://127.0.0.1", *SECRETS)
    assert_clear_error(result, "http(s)")
    assert stores(env) == []
