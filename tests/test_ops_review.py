"""Operations: the command line on ordinary bad input, settings the bridge cannot work with, and
the encryption key's life (set after an embedded start, rotated, wrong).

Every command runs as a real process, as an operator runs it: a clear one-line error and exit
status 1, never a traceback, and never a password from a URL in the output."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bridge.config import load_settings
from bridge.crypto import generate_key
from bridge.errors import ConfigError

from .test_serve import command

SECRETS = ["--consumer-key", "ck_0123456789abcdef", "--consumer-secret", "cs_fedcba9876543210",
           "--webhook-secret", "whsec-ops-review", "--upay-api-key", "upay-live-key-123456"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("UPAY_BRIDGE_")}
    return {**base, "UPAY_BRIDGE_DATA_DIR": str(tmp_path / "data"),
            "UPAY_BRIDGE_SECRET_KEY": generate_key(), "UPAY_BRIDGE_LOG_LEVEL": "WARNING",
            "UPAY_BRIDGE_PUBLIC_URL": "https://bridge.example.com"}


def run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def assert_clear_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    assert "error: " in result.stderr, output
    for text in expected:
        assert text in result.stderr, output


def add_store(env: dict[str, str]) -> str:
    result = run(env, "store", "add", "woocommerce", "--url", "https://shop.example.com",
                 *SECRETS, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)["id"]


@pytest.mark.parametrize("name,value,expected", [
    ("SECRET_KEY", "not-a-fernet-key", "not a valid Fernet key"),
    ("WORKERS", "eight", "UPAY_BRIDGE_WORKERS"),
    ("UPAY_CONNECT_TIMEOUT", "0", "UPAY_BRIDGE_UPAY_CONNECT_TIMEOUT"),
    ("STORE_READ_TIMEOUT", "-5", "UPAY_BRIDGE_STORE_READ_TIMEOUT"),
    ("LEASE_SECONDS", "0", "UPAY_BRIDGE_LEASE_SECONDS"),
    ("MAX_BODY_BYTES", "-1", "UPAY_BRIDGE_MAX_BODY_BYTES"),
    ("PUBLIC_URL", "https://pay.example.com/?src=upay", "UPAY_BRIDGE_PUBLIC_URL"),
    ("PUBLIC_URL", "pay.example.com", "UPAY_BRIDGE_PUBLIC_URL"),
    ("QUEUE_URL", "rediss+sentinel://:queue-pass-77@redis:26379/0", "UPAY_BRIDGE_QUEUE_URL"),
    ("DATABASE_URL", "mysql://bridge:db-pass-77@db/bridge", "UPAY_BRIDGE_DATABASE_URL"),
    ("DATABASE_URL", "postgresql://postgres:db-pass-77@127.0.0.1:1/nothing", "does not answer"),
])
def test_a_bad_setting_is_one_clear_error_not_a_traceback(env, name, value, expected):
    env["UPAY_BRIDGE_" + name] = value
    result = run(env, "store", "list")
    assert_clear_error(result, expected)
    assert "pass-77" not in result.stdout + result.stderr  # no password from a URL


def test_workers_zero_is_refused_instead_of_a_worker_that_runs_nothing(env):
    # Before: `worker` started a consumer with no worker thread, which ran forever and never
    # processed a job (and `--workers 0` silently meant the default).
    env["UPAY_BRIDGE_WORKERS"] = "0"
    assert_clear_error(run(env, "worker", timeout=30), "UPAY_BRIDGE_WORKERS")
    del env["UPAY_BRIDGE_WORKERS"]
    result = run(env, "worker", "--workers", "0", timeout=30)
    assert result.returncode == 2 and "--workers" in result.stderr


def test_a_wrong_key_is_a_clear_error_and_rotation_changes_nothing(env):
    right = env["UPAY_BRIDGE_SECRET_KEY"]
    store_id = add_store(env)
    env["UPAY_BRIDGE_SECRET_KEY"] = generate_key()
    assert_clear_error(run(env, "store", "list"), "cannot be decrypted")
    assert_clear_error(run(env, "store", "show", store_id), "cannot be decrypted")
    assert_clear_error(run(env, "rotate-secrets"), "cannot be decrypted", "nothing was changed")
    env["UPAY_BRIDGE_SECRET_KEY"] = right
    shown = run(env, "store", "show", store_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["secrets"]["upay_api_key"].endswith("3456")


def test_setting_the_key_after_an_embedded_start_keeps_the_stores(env, tmp_path):
    # The embedded default generates a key into the data directory and warns to set
    # UPAY_BRIDGE_SECRET_KEY in production; setting it (to a new key, as README's rotation says:
    # the old one is not in the variable) must not lose the secrets stored so far.
    del env["UPAY_BRIDGE_SECRET_KEY"]
    store_id = add_store(env)
    key_file = tmp_path / "data" / "secret.key"
    assert key_file.exists()
    env["UPAY_BRIDGE_SECRET_KEY"] = generate_key()
    shown = run(env, "store", "show", store_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["secrets"]["upay_api_key"].endswith("3456")
    rotated = run(env, "rotate-secrets")
    assert rotated.returncode == 0 and "1 store" in rotated.stdout, rotated.stderr
    key_file.unlink()  # the generated key is gone: the configured one alone reads everything
    shown = run(env, "store", "show", store_id, "--json")
    assert shown.returncode == 0, shown.stderr


def test_public_url_keeps_a_path_prefix_and_refuses_what_breaks_callback_urls(tmp_path):
    settings = load_settings({"UPAY_BRIDGE_PUBLIC_URL": "HTTPS://Pay.Example.com/bridge/"},
                             data_dir=tmp_path)
    assert settings.public_url == "https://pay.example.com/bridge"
    for bad in ("https://pay.example.com#x", "https://user:pw@pay.example.com", "ftp://x",
                "https://pay.example.com:99999", "https://"):
        with pytest.raises(ConfigError, match="PUBLIC_URL"):
            load_settings({"UPAY_BRIDGE_PUBLIC_URL": bad}, data_dir=tmp_path)
