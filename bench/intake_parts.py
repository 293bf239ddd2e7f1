#!/usr/bin/env python3
"""Where a webhook's intake time goes: each step of the bridge's ``order.created`` handling,
timed alone in one thread, next to a bare Flask request through the same test client.

Steps: the signature check, decoding the order, the database transaction (order, delivery and
event rows; embedded SQLite) alone and, per delivery, in batches of 8 as group commit writes a
burst, queueing a job (SQLite queue: a retry's; a new order needs none on the embedded
layout, ``bridge/new_orders.py``), the whole request, and the bare endpoint's whole
request. Prints microseconds per call (mean of ``--n`` calls).

Last, the bridge's own Python per delivery: the whole request as waitress hands it over (a
WSGI environ, the endpoint called directly, the log line written as ``serve`` writes it) with
the database write left out (the rows are made and handed to a cursor that keeps nothing), the
best of five passes of ``--n`` deliveries. It is what a change to the request's Python shows
in, where the server's throughput moves by a few percent between rounds.

Run: ``.venv/bin/python bench/intake_parts.py`` (a few seconds).
"""

from __future__ import annotations

import argparse
import io
import itertools
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import webhook_accept as wa  # noqa: E402


def per_call_us(step: Callable[[Any], Any], items: Iterable[Any]) -> float:
    items = list(items)
    started = time.perf_counter()
    for item in items:
        step(item)
    return (time.perf_counter() - started) / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()

    import flask

    from bridge.app import create_app
    from bridge.stores import adapter_for

    n = args.n
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        rt, record = wa.bench_runtime(Path(tmp))
        load = wa.Load(wa.body_template(), 1000)
        requests = [load.request() for _ in range(3 * n)]
        store = adapter_for(record)
        events: list[Any] = []
        schedule = rt.pipeline.schedule_many
        rt.pipeline.schedule_many = lambda pks: None  # the queue is timed on its own below
        results = {
            "signature check": per_call_us(lambda r: store.verify_webhook(r[1], r[0]),
                                           requests[:n]),
            "decode the order": per_call_us(
                lambda r: events.append(store.parse_webhook(r[1], r[0])), requests[:n]),
            "database transaction": per_call_us(
                lambda e: rt.pipeline.accept(record, e, b"{}"), events[:n // 2]),
            # What a burst gets from group commit: the same writes, 8 deliveries per transaction.
            "database, batches of 8": per_call_us(rt.pipeline.accept_batch, [
                [rt.pipeline.intake_item(record, e, b"{}") for e in events[i:i + 8]]
                for i in range(n // 2, n, 8)]) / 8,
            # A retry's job; a new order on this (embedded) layout queues none.
            "queue a job": per_call_us(rt.jobs.enqueue, range(n)),
        }
        rt.pipeline.schedule_many = schedule
        client = create_app(rt).test_client()
        path = f"/webhooks/woocommerce/{record.id}"
        results["whole request (bridge)"] = per_call_us(
            lambda r: client.post(path, data=r[0], headers=r[1]), requests[n:2 * n])
        bare = flask.Flask("bare")
        bare.add_url_rule("/bare", "bare", lambda: (flask.request.get_data(), "")[1],
                          methods=["POST"])
        bare_client = bare.test_client()
        results["whole request (bare Flask)"] = per_call_us(
            lambda r: bare_client.post("/bare", data=r[0], headers=r[1]), requests[2 * n:])
        rt.close()
    results["Python per delivery, no database"] = python_per_delivery(n)
    for name, us in results.items():
        print(f"{name:>34}: {us:7.1f} µs")


class _KeepingNothing:
    """Stands in for the intake's cursor: every order is new, no row is kept."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)

    def insert_orders(self, rows: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
        return {(r["store_id"], r["external_id"]): next(self.ids) for r in rows}

    def insert_deliveries(self, rows: list[dict[str, Any]]) -> None:
        pass

    def insert_events(self, rows: list[Any]) -> None:
        pass


def python_per_delivery(n: int) -> float:
    """µs per delivery through the endpoint, database write left out (see the docstring)."""
    from bridge.app import create_app
    from bridge.logging_setup import configure

    handler = configure("INFO", "json", stream=io.StringIO())  # as serve logs, kept in memory
    try:
        with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
            rt, record = wa.bench_runtime(Path(tmp))
            cursor = _KeepingNothing()
            rt.pipeline._intake_writer.write = lambda fn: fn(cursor)
            endpoint = create_app(rt).wsgi_app
            load = wa.Load(wa.body_template(), 1000)
            path = f"/webhooks/woocommerce/{record.id}"

            def answered(status: str, headers: list[tuple[str, str]]) -> None:
                assert status == "200 OK", status

            passes = []
            for _ in range(6):  # the first warms up
                environs = [_environ(path, *load.request()) for _ in range(n)]
                started = time.perf_counter()
                for environ in environs:
                    endpoint(environ, answered)
                passes.append((time.perf_counter() - started) / n * 1e6)
            rt.close()
        return min(passes[1:])
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()


def _environ(path: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """The WSGI environ of this request as waitress hands it over (its body read and ended)."""
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path, method="POST", data=body, headers=headers).get_environ()
    environ["wsgi.input_terminated"] = True
    return environ


if __name__ == "__main__":
    main()
