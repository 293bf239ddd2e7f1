"""The fakes of the drain and memory benchmarks, in a child process of their own.

Served from a separate process so that their work does not share the bridge's interpreter lock.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

UPAY_KEY = "upay-key-bench-9f2c81d7e4"
WEBHOOK_SECRET = "whsec-bench-4b1d7e29c0aa57f3"


class _KeptAlive:
    """A fake's WSGI app on waitress, which keeps connections open between requests as a real
    store and UPay do (the fakes' own server, werkzeug's, closes after every answer)."""

    def __init__(self, app: Any, threads: int) -> None:
        import threading

        from waitress.server import create_server

        # One thread per concurrent caller: the fakes sleep their latency inside the request.
        self._server = create_server(app, host="127.0.0.1", port=0, threads=threads,
                                     connection_limit=4 * threads, channel_timeout=120)
        self.url = f"http://127.0.0.1:{self._server.effective_port}"
        threading.Thread(target=self._server.run, daemon=True, name="fake-waitress").start()

    def shutdown(self) -> None:
        self._server.close()


def fakes_main(pipe: Connection, upay_latency: float = 0.0, store_latency: float = 0.0,
               keep_alive: int = 0) -> None:
    """Child process: serve fake UPay and fake WooCommerce; create and deliver orders on request.
    ``keep_alive``: serve them on waitress with that many threads each (0: the fakes' own
    server, one connection per request)."""
    import logging

    from bridge.fakes.upay import FakeUPay
    from bridge.fakes.woocommerce import FakeWooCommerce

    upay = FakeUPay(valid_keys=(UPAY_KEY,), latency=upay_latency)
    wc = FakeWooCommerce(decimals=3, currency="KWD")
    wc.delivery_timeout = 60
    upay_served: Any
    wc_served: Any
    if keep_alive:
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        upay_served, wc_served = _KeptAlive(upay.app, keep_alive), _KeptAlive(wc.app, keep_alive)
        upay.url = upay_served.url
        wc.set_base_url(wc_served.url)
    else:
        upay_served, wc_served = upay.serve(), wc.serve()
    wc.add_product(11, "Arabic coffee beans 500 g", "4.750", sku="COF-500")
    wc.add_product(12, "Dallah coffee pot", "12.500", sku="DAL-1")
    ck, cs = wc.add_api_key("read_write")
    pipe.send({"upay_url": upay_served.url, "wc_url": wc.base_url, "ck": ck, "cs": cs})

    webhook_id = 0
    while True:
        cmd, arg = pipe.recv()
        if cmd == "webhook":
            webhook_id = int(wc.add_webhook("order.created", arg, WEBHOOK_SECRET)["id"])
            wc.latency = store_latency  # after setup: only the bridge's REST calls are slowed
            pipe.send(webhook_id)
        elif cmd == "deliver":
            ids = [int(wc.create_order([{"product_id": 11, "quantity": 2},
                                        {"product_id": 12, "quantity": 1}])["id"])
                   for _ in range(int(arg))]
            wc._queue.clear()   # deliveries are sent below, not by a (stopped) scheduler
            t0 = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                records = [r for batch in pool.map(lambda oid: wc.deliver(webhook_id, oid), ids)
                           for r in batch]
            ok = sum(1 for r in records if r.success)
            pipe.send({"delivered": ok, "failed": len(records) - ok,
                       "seconds": time.monotonic() - t0})
        elif cmd == "stop":
            upay_served.shutdown()
            wc_served.shutdown()
            pipe.send("stopped")
            return


def start_bridge(info: dict, data_dir: Any, workers: int, pipe: Connection,
                 **layout: str) -> tuple[Any, Any]:
    """The bridge in this process (waitress, 8 threads), its store registered and the fake
    store's webhook pointed at it; returns (runtime, waitress server). ``layout`` may set
    ``database_url``, ``queue_url`` and ``queue_name`` (the default: SQLite files)."""
    import threading

    from waitress.server import create_server

    from bridge.app import create_app
    from bridge.config import load_settings
    from bridge.crypto import generate_key
    from bridge.fakes.lazy import AppSlot
    from bridge.logging_setup import hold_back_repeats
    from bridge.registry import StoreSettings
    from bridge.runtime import bootstrap

    hold_back_repeats("waitress.queue")  # as ``upay-bridge serve`` does
    slot = AppSlot()
    server = create_server(slot, host="127.0.0.1", port=0, threads=8)
    threading.Thread(target=server.run, daemon=True, name="waitress").start()
    public_url = f"http://127.0.0.1:{server.effective_port}"
    settings = load_settings({}, data_dir=data_dir).with_overrides(
        database_url=layout.get("database_url", f"sqlite:///{data_dir / 'bridge.db'}"),
        queue_url=layout.get("queue_url", f"sqlite:///{data_dir / 'queue.db'}"),
        queue_name=layout.get("queue_name", "upay-bridge"),
        public_url=public_url, secret_keys=(generate_key(),), workers=workers,
        upay_sandbox_url=f"{info['upay_url']}/api/v1/",
        upay_production_url=f"{info['upay_url']}/api/v1/")
    rt = bootstrap(settings)
    slot.app = create_app(rt)
    record = rt.registry.add(
        "woocommerce", info["wc_url"],
        {"consumer_key": info["ck"], "consumer_secret": info["cs"],
         "webhook_secret": WEBHOOK_SECRET, "upay_api_key": UPAY_KEY},
        name="Bench shop", upay_sandbox=True, settings=StoreSettings())
    pipe.send(("webhook", f"{public_url}/webhooks/woocommerce/{record.id}"))
    pipe.recv()
    return rt, server


def log_as_serve(path: Any) -> None:
    """This process logs as ``upay-bridge serve`` and ``worker`` do (a JSON line per order and
    invoice, at INFO), into the file ``path`` rather than over the benchmark's results."""
    from bridge.logging_setup import configure

    configure("INFO", "json", stream=open(path, "w"))


def worker_main(settings: Any, workers: int) -> None:
    """A worker process of the scale-out layout: ``upay-bridge worker`` on these settings,
    logging as it does, into a file in the data folder."""
    import os
    from pathlib import Path

    from bridge.runtime import bootstrap

    log_as_serve(Path(settings.data_dir) / f"worker-{os.getpid()}.log")
    runtime = bootstrap(settings, migrate=False)
    runtime.jobs.consumer(workers, periodic=False).run()  # SIGINT ends it
