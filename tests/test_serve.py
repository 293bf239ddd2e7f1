"""The real commands in real processes: `upay-bridge serve` (web and workers in one process, the
embedded default) and `serve --no-worker` plus `upay-bridge worker` (the scale-out layout)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from bridge.crypto import generate_key

from .conftest import UPAY_KEY, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command(*args: str) -> list[str]:
    # the installed console script when there is one (as the README runs it), else the module
    script = Path(sys.executable).parent / "upay-bridge"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "bridge.cli", *args]


@pytest.fixture
def env(tmp_path: Path, fake_upay) -> dict[str, str]:
    port = free_port()
    return {
        **os.environ,
        "UPAY_BRIDGE_DATA_DIR": str(tmp_path / "data"),
        "UPAY_BRIDGE_SECRET_KEY": generate_key(),
        "UPAY_BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "UPAY_BRIDGE_UPAY_SANDBOX_URL": f"{fake_upay.url}/api/v1/",
        "UPAY_BRIDGE_UPAY_PRODUCTION_URL": "http://127.0.0.1:9/never-used/",
        "UPAY_BRIDGE_PORT_FOR_TEST": str(port),
    }


def start(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(command(*args), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def add_store(env: dict[str, str], fake_wc) -> dict:
    ck, cs = fake_wc.add_api_key("read_write")
    out = subprocess.run(command("store", "add", "woocommerce", "--allow-private",
                                 "--url", fake_wc.base_url, "--consumer-key", ck,
                                 "--consumer-secret", cs,
                                 "--webhook-secret", "serve-test-secret",
                                 "--upay-api-key", UPAY_KEY, "--upay-sandbox", "--json"),
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def place_order_and_wait_for_note(fake_wc, store: dict) -> dict:
    fake_wc.add_webhook("order.created", store["webhook_url"], "serve-test-secret")
    assert fake_wc.pings[-1].status_code == 200
    order = fake_wc.create_order([{"name": "Saffron", "price": "3.125", "quantity": 4}],
                                 billing={"first_name": "Noura", "email": "noura@example.com"})
    [delivery] = fake_wc.deliver_queued()
    assert delivery.status_code == 200
    wait_for(lambda: fake_wc.notes(order["id"]), timeout=30)
    return order


def test_serve_runs_web_and_worker_in_one_process(env, fake_wc, fake_upay):
    store = add_store(env, fake_wc)
    port = env["UPAY_BRIDGE_PORT_FOR_TEST"]
    proc = start(env, "serve", "--port", port)
    try:
        wait_for(lambda: _healthy(port), timeout=30)
        order = place_order_and_wait_for_note(fake_wc, store)
        [note] = fake_wc.notes(order["id"])
        assert "12.500 KWD" in note["note"] and "/invoice/" in note["note"]
        assert len(fake_upay.charges()) == 1
    finally:
        out = stop(proc)
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert UPAY_KEY not in out and "serve-test-secret" not in out


def test_separate_web_and_worker_processes(env, fake_wc, fake_upay):
    store = add_store(env, fake_wc)
    port = env["UPAY_BRIDGE_PORT_FOR_TEST"]
    web = start(env, "serve", "--port", port, "--no-worker")
    worker = start(env, "worker", "--workers", "2")
    try:
        wait_for(lambda: _healthy(port), timeout=30)
        order = place_order_and_wait_for_note(fake_wc, store)
        assert len(fake_wc.notes(order["id"])) == 1
    finally:
        stop(web)
        stop(worker)


def _healthy(port: str) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False
