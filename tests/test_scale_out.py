"""The scale-out layout in real processes: two gunicorn web processes and a worker process on
PostgreSQL and Redis; the same order delivered 20 times at once, spread over both web processes,
makes exactly one invoice and one note."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import requests

from bridge.stores.woocommerce import webhook_signature

from .conftest import UPAY_KEY, wait_for
from .test_serve import command, stop
from .test_webhooks import php_json


def test_duplicate_storm_over_two_web_processes(scaled_env, fake_wc, fake_upay):
    env, port = scaled_env, scaled_env["PORT_FOR_TEST"]
    subprocess.run(command("db", "upgrade"), env=env, check=True, capture_output=True)
    ck, cs = fake_wc.add_api_key("read_write")
    out = subprocess.run(command("store", "add", "woocommerce", "--allow-private",
                                 "--url", fake_wc.base_url, "--consumer-key", ck, "--consumer-secret", cs,
                                 "--webhook-secret", "storm-secret", "--upay-api-key", UPAY_KEY,
                                 "--upay-sandbox", "--json"),
                         env=env, check=True, capture_output=True, text=True).stdout
    store = json.loads(out)
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                            "bridge.wsgi:app"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    worker = subprocess.Popen(command("worker", "--workers", "4"), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: _up(port), timeout=30)
        order = fake_wc.create_order([{"name": "Saffron", "price": "3.125", "quantity": 4}],
                                     billing={"first_name": "N", "email": "n@example.com"})
        body = php_json(fake_wc.order(order["id"]))
        headers = {"Content-Type": "application/json", "X-WC-Webhook-Topic": "order.created",
                   "X-WC-Webhook-Source": fake_wc.base_url + "/",
                   "X-WC-Webhook-Signature": webhook_signature(body, "storm-secret")}
        answers: list[int] = []
        start = threading.Barrier(20)

        def deliver() -> None:
            start.wait()
            answers.append(requests.post(store["webhook_url"], data=body, headers=headers,
                                         timeout=30).status_code)

        threads = [threading.Thread(target=deliver) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == [200] * 20
        wait_for(lambda: fake_wc.notes(order["id"]), timeout=60)
        time.sleep(2)  # give a second invoice, if there were one, the time to appear
        assert len(fake_upay.charges()) == 1
        assert len(fake_wc.notes(order["id"])) == 1
    finally:
        web.send_signal(signal.SIGTERM)
        stop(worker)
        try:
            web.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            web.kill()


def _up(port: str) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False
