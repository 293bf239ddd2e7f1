#!/usr/bin/env python3
"""How close any webhook intake can get to the bare endpoint here: the same load as
``webhook_accept.py`` against several apps, each served the same way, in one run.

* ``bare``: a Flask app that reads the body and answers 200 (the issue's baseline);
* the bounds below are plain WSGI apps built the way the bridge's own webhook endpoint is
  (``bridge/web/webhooks.py``: no Flask, werkzeug's body reading, the store lookup and the
  adapter's signature check, a JSON answer), each adding one piece of work:

  * ``verify``: the store lookup and WooCommerce signature check, then 200; nothing is
    recorded, so a delivery would be lost with the process;
  * ``decode``: ``verify``, then the order decoded and checked as the bridge does before it
    answers (so that a signed body that is not an order gets its 400/422); nothing recorded;
  * ``append``: ``verify``, then the cheapest write that outlives the process: one ``write()``
    of the body, framed with its length and CRC-32, to an append-only file (in the page cache,
    as SQLite's WAL with ``synchronous=NORMAL``: it survives a killed process, not a power cut);
  * ``decode+append``: ``append`` after decoding the order;
  * ``decode+append+ingest``: ``decode+append``, with a background thread in the same process
    doing what the request left undone, as a journal-first intake would: it reads the journal
    and writes the orders, deliveries, events and jobs with the bridge's own batch writer
    (``Pipeline.accept_batch``, 200 deliveries a transaction), so the deferred work is paid
    inside the measured window, on the same cores;
  * ``inbox``: ``verify``, then the raw body, one row per delivery in a table without indexes,
    written by the bridge's group commit as one INSERT per batch and one COMMIT (SQLite, WAL,
    ``synchronous=NORMAL``, as the bridge's database); nothing decoded, no job queued;
  * ``decode+inbox``: ``inbox`` after decoding the order;

* ``bridge``: the bridge itself (what ``webhook_accept.py`` measures).

Each is reported as requests/s and as a ratio to ``bare``. The apps other than ``bridge`` are
bounds, not designs: none but ``decode+append+ingest`` checks for duplicates or queues a job,
and none tells the store what became of the order.

Run: ``.venv/bin/python bench/intake_ceiling.py`` (about 3 minutes; ``--duration 3 --warmup 1``
quick; ``--only verify,decode`` for some of them).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sqlite3
import struct
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import webhook_accept as wa  # noqa: E402

VARIANTS = ("bare", "verify", "decode", "append", "decode+append", "decode+append+ingest",
            "inbox", "decode+inbox", "bridge")

_FRAME = struct.Struct("<II")  # length, CRC-32


def _inbox_writer(path: Path) -> Any:
    """The bridge's group commit over one INSERT of raw bodies per batch."""
    from bridge.group_commit import GroupCommit

    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE inbox (id INTEGER PRIMARY KEY, store_id TEXT, delivery_id TEXT,"
                 " body TEXT, received_at REAL)")

    def write(batch: Sequence[tuple[str, str, bytes]]) -> list[None]:
        values = ", ".join(["(?, ?, ?, ?)"] * len(batch))
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"INSERT INTO inbox (store_id, delivery_id, body, received_at) "
                         f"VALUES {values}",
                         [v for store_id, delivery_id, body in batch
                          for v in (store_id, delivery_id, body.decode("utf-8"), now)])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return [None] * len(batch)

    return GroupCommit(write)


def _ingest(rt: Any, path: Path, wake: threading.Event) -> None:
    """The background half of a journal-first intake: journal records into the database."""
    from bridge.pipeline import _Intake

    pending = b""
    with open(path, "rb") as journal:
        while True:
            wake.wait(0.5)
            wake.clear()
            pending += journal.read()
            items = []
            while len(pending) >= _FRAME.size:
                size, crc = _FRAME.unpack_from(pending)
                if len(pending) < _FRAME.size + size:
                    break
                record = pending[_FRAME.size:_FRAME.size + size]
                pending = pending[_FRAME.size + size:]
                assert zlib.crc32(record) == crc
                order, delivery, events, reason = pickle.loads(record)
                items.append(_Intake(order=order, delivery=delivery, events=events,
                                     reason=reason))
            for i in range(0, len(items), 200):
                rt.pipeline.accept_batch(items[i:i + 200])


def _checking_app(data_dir: Path, kind: str) -> tuple[Callable[..., Iterable[bytes]], str]:
    """A WSGI app doing what the bridge's endpoint does up to the signature check, then what
    ``kind`` adds."""
    from werkzeug.datastructures import EnvironHeaders
    from werkzeug.wsgi import get_input_stream

    from bridge.stores import adapter_for
    from bridge.web.webhooks import find_store

    rt, record = wa.bench_runtime(data_dir)
    steps = set(kind.split("+"))
    group = _inbox_writer(data_dir / "inbox.db") if "inbox" in steps else None
    journal_path = data_dir / "intake.journal"
    journal = os.open(journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    wake = threading.Event()
    if "ingest" in steps:
        threading.Thread(target=_ingest, args=(rt, journal_path, wake), daemon=True).start()
    limit = rt.settings.max_body_bytes

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = EnvironHeaders(environ)
        found = find_store(rt, environ["PATH_INFO"], headers)
        assert found is not None
        body = get_input_stream(environ, max_content_length=limit + 1).read()
        store = adapter_for(found)
        store.verify_webhook(headers, body)
        if "decode" in steps:
            event = store.parse_webhook(headers, body)
        if "append" in steps:
            if "ingest" in steps:
                item = rt.pipeline.intake_item(found, event, body)
                data = pickle.dumps((item.order, item.delivery, item.events, item.reason),
                                    protocol=pickle.HIGHEST_PROTOCOL)
            else:
                data = body
            # One write() on an O_APPEND descriptor: the kernel places it whole at the end.
            os.write(journal, _FRAME.pack(len(data), zlib.crc32(data)) + data)
            wake.set()
        if group is not None:
            group.submit((found.id, headers.get("X-WC-Webhook-Delivery-ID", ""), body))
        out = json.dumps({"ok": True}).encode() + b"\n"
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(out)))])
        return [out]

    return app, f"/webhooks/woocommerce/{record.id}"


def serve(kind: str, threads: int, data_dir: Path) -> None:
    if kind == "bare":
        wa.serve_bare(threads)
    elif kind == "bridge":
        wa.serve_bridge(threads, data_dir)
    else:
        app, path = _checking_app(data_dir, kind)
        wa.run_server(app, threads, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8, help="waitress threads (every app)")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per app")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unreported warm-up")
    parser.add_argument("--only", default="", help="comma-separated variants (bare is always run)")
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.threads, args.data_dir)
        return

    chosen = ["bare"] + [v for v in VARIANTS[1:]
                         if not args.only or v in args.only.split(",")]
    template = wa.body_template()
    print(f"body: {len(template)} bytes; waitress threads={args.threads}; "
          f"{args.concurrency} clients x {args.duration:.0f}s per app")
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmpname:
        tmp = Path(tmpname)
        for kind in chosen:
            data_dir = tmp / kind.replace("+", "-")
            data_dir.mkdir()
            child = wa.start_child(kind, args.threads, data_dir, data_dir / "server.log", __file__)
            try:
                load = wa.Load(template, first_id=1000)
                wa.closed_loop(child, load, args.concurrency, args.warmup)
                result = wa.closed_loop(child, load, args.concurrency, args.duration)
                ended = time.monotonic()
                if kind == "decode+append+ingest":
                    # Whether the background half kept up: what it had written when the load
                    # stopped and how long it took to catch up after (a lag would be work done
                    # outside the measured window).
                    sent = next(load.ids) - 1000
                    at_end = wa.count_orders(data_dir)
                    while wa.count_orders(data_dir) < sent and time.monotonic() - ended < 30:
                        time.sleep(0.05)
                    caught_up = f"; ingested {at_end} of {sent} when the load stopped, all " \
                                f"{wa.count_orders(data_dir)} {time.monotonic() - ended:.1f} s later"
                else:
                    caught_up = ""
            finally:
                child.stop()
            rates[kind] = result.ok / result.elapsed
            print(f"{kind:>21}: {rates[kind]:8.1f} req/s  ratio to bare "
                  f"{rates[kind] / rates['bare']:.2f}  (errors {result.errors}){caught_up}",
                  flush=True)


if __name__ == "__main__":
    main()
