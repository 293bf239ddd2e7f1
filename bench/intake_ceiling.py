#!/usr/bin/env python3
"""How close any webhook intake can get to the bare endpoint here: the same load as
``webhook_accept.py`` against six apps, each served the same way, in one run.

* ``bare``: reads the body, answers 200 (the issue's baseline);
* ``verify``: the bridge's store lookup and WooCommerce signature check, then 200; nothing is
  recorded, so a delivery would be lost with the process;
* ``append``: ``verify``, then the cheapest write that outlives the process: one ``write()`` of
  the body, framed with its length and CRC-32, to an append-only file (in the page cache, as
  SQLite's WAL with ``synchronous=NORMAL``: it survives a killed process, not a power cut);
* ``decode+append``: ``append`` after decoding the order as the bridge does, so that a signed
  body that is not an order still gets its 400/422;
* ``inbox``: ``verify``, then the raw body, one row per delivery in a table without indexes,
  written by the bridge's group commit as one INSERT per batch and one COMMIT (SQLite, WAL,
  ``synchronous=NORMAL``, as the bridge's database); no job is queued and nothing is decoded;
* ``bridge``: the bridge itself (what ``webhook_accept.py`` measures).

Each is reported as requests/s and as a ratio to ``bare``. The apps other than ``bridge`` are
bounds, not designs: none checks for duplicates, queues a job or tells the store what became of
the order, and in ``append`` and ``decode+append`` the work the bridge does in the request
(the database rows, the job) is left undone for something else to do later, with the same CPU.

Run: ``.venv/bin/python bench/intake_ceiling.py`` (about 2 minutes; ``--duration 3`` quick).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import webhook_accept as wa  # noqa: E402

VARIANTS = ("bare", "verify", "append", "decode+append", "inbox", "bridge")


def _checking_app(data_dir: Path, kind: str) -> tuple[Any, str]:
    """A Flask app with the bridge's lookup and signature check, then what ``kind`` adds."""
    import flask

    from bridge.group_commit import GroupCommit
    from bridge.stores import adapter_for

    rt, record = wa.bench_runtime(data_dir)

    conn = sqlite3.connect(data_dir / "inbox.db", isolation_level=None, check_same_thread=False)
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

    group: GroupCommit[tuple[str, str, bytes], None] = GroupCommit(write)
    journal = os.open(data_dir / "intake.journal", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    app = flask.Flask("checking")

    @app.post("/webhooks/woocommerce/<store_id>")
    def receive(store_id: str) -> Any:
        found = rt.registry.find(store_id[:32])
        if found is None:
            return flask.jsonify({"error": "unknown_store"}), 404
        body = flask.request.get_data()
        store = adapter_for(found)
        store.verify_webhook(flask.request.headers, body)
        if kind == "decode+append":
            store.parse_webhook(flask.request.headers, body)
        if kind in ("append", "decode+append"):
            # One write() on an O_APPEND descriptor: the kernel places it whole at the end.
            os.write(journal, struct.pack("<II", len(body), zlib.crc32(body)) + body)
        elif kind == "inbox":
            group.submit((found.id, flask.request.headers.get("X-WC-Webhook-Delivery-ID", ""),
                          body))
        return flask.jsonify({"ok": True}), 200

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
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.threads, args.data_dir)
        return

    template = wa.body_template()
    print(f"body: {len(template)} bytes; waitress threads={args.threads}; "
          f"{args.concurrency} clients x {args.duration:.0f}s per app")
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmpname:
        tmp = Path(tmpname)
        for kind in VARIANTS:
            data_dir = tmp / kind.replace("+", "-")
            data_dir.mkdir()
            child = wa.start_child(kind, args.threads, data_dir, data_dir / "server.log", __file__)
            try:
                load = wa.Load(template, first_id=1000)
                wa.closed_loop(child, load, args.concurrency, args.warmup)
                result = wa.closed_loop(child, load, args.concurrency, args.duration)
            finally:
                child.stop()
            rates[kind] = result.ok / result.elapsed
            print(f"{kind:>13}: {rates[kind]:8.1f} req/s  ratio to bare "
                  f"{rates[kind] / rates['bare']:.2f}  (errors {result.errors})", flush=True)


if __name__ == "__main__":
    main()
