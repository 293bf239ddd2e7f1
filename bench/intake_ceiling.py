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
  * ``decode+inbox+ingest``: ``decode+inbox``, then the delivery handed (in memory) to a
    background thread in the same process that writes its orders, deliveries, events and jobs
    with ``Pipeline.accept_batch`` (up to 500 deliveries a transaction, gathered for 20 ms) and
    then deletes the batch's inbox rows: an inbox-first intake whose deferred work is paid
    inside the measured window. The inbox is its own file, so taking deliveries in never waits
    for the rows' writer, and the delete is a second transaction: a bound that flatters the
    design;

* ``bridge``: the bridge itself (what ``webhook_accept.py`` measures).

All the chosen apps run side by side for the whole benchmark, and the load goes to each in
turn for ``--duration`` seconds, in ``--rounds`` rounds (as ``webhook_accept.py`` alternates
its two apps): each round gives every app a ratio to ``bare`` and to ``bridge`` measured
minutes apart at most, and the medians of the rounds are reported. The apps other than
``bridge`` are bounds, not designs: none but the two ``ingest`` ones checks for duplicates or
queues a job, and none tells the store what became of the order.

Run: ``.venv/bin/python bench/intake_ceiling.py`` (about 5 minutes; ``--rounds 1 --duration 3``
quick; ``--only verify,decode`` for some of them).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sqlite3
import statistics
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
            "inbox", "decode+inbox", "decode+inbox+ingest", "bridge")

_FRAME = struct.Struct("<II")  # length, CRC-32


def _inbox_writer(path: Path, handed: Callable[[list[int], list[Any]], None] | None = None
                  ) -> Any:
    """The bridge's group commit over one INSERT of raw bodies per batch; ``handed(ids,
    items)`` is given each committed batch's rows (ids) and the items they came from."""
    from bridge.group_commit import GroupCommit

    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE inbox (id INTEGER PRIMARY KEY, store_id TEXT, delivery_id TEXT,"
                 " body TEXT, received_at REAL)")

    def write(batch: Sequence[tuple[str, str, bytes, Any]]) -> list[None]:
        values = ", ".join(["(?, ?, ?, ?)"] * len(batch))
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            ids = [row[0] for row in conn.execute(
                f"INSERT INTO inbox (store_id, delivery_id, body, received_at) "
                f"VALUES {values} RETURNING id",
                [v for store_id, delivery_id, body, _ in batch
                 for v in (store_id, delivery_id, body.decode("utf-8"), now)]).fetchall()]
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if handed is not None:
            handed(ids, [item for *_, item in batch])
        return [None] * len(batch)

    return GroupCommit(write)


class _InboxIngest:
    """The background half of an inbox-first intake: the committed deliveries, handed over in
    memory, written as the bridge writes them; then their inbox rows deleted."""

    def __init__(self, rt: Any, inbox: Path) -> None:
        self._rt = rt
        self._conn = sqlite3.connect(inbox, isolation_level=None, check_same_thread=False)
        self._pending: list[tuple[int, Any]] = []
        self._ready = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def hand(self, ids: list[int], items: list[Any]) -> None:
        with self._ready:
            self._pending.extend(zip(ids, items))
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._pending:
                    self._ready.wait()
            time.sleep(0.02)  # gather a batch
            with self._ready:
                taken, self._pending = self._pending[:500], self._pending[500:]
            self._rt.pipeline.accept_batch([item for _, item in taken])
            ids = [pk for pk, _ in taken]
            self._conn.execute(f"DELETE FROM inbox WHERE id IN ({', '.join('?' * len(ids))})",
                               ids)


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
    ingest = _InboxIngest(rt, data_dir / "inbox.db") if {"inbox", "ingest"} <= steps else None
    group = _inbox_writer(data_dir / "inbox.db", ingest and ingest.hand) \
        if "inbox" in steps else None
    journal_path = data_dir / "intake.journal"
    journal = os.open(journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    wake = threading.Event()
    if {"append", "ingest"} <= steps:
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
            item = rt.pipeline.intake_item(found, event, body) if ingest else None
            group.submit((found.id, headers.get("X-WC-Webhook-Delivery-ID", ""), body, item))
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
    parser.add_argument("--duration", type=float, default=4.0,
                        help="seconds per app and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over all the apps")
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
          f"{args.concurrency} clients x {args.duration:.0f}s per app and round, "
          f"{args.rounds} rounds")
    behind: dict[str, int] = {}
    skipped: dict[str, int] = {}

    def kept_up(kind: str, result: wa.Result) -> None:
        # Whether an ingest thread keeps up: the orders not yet written when its load stopped
        # (the most in any round; work left then is done outside the measured window).
        if kind.endswith("+ingest"):
            # Reading the id counter takes an id no request will use.
            sent = next(loads[kind].ids) - 1000 - skipped.get(kind, 0)
            skipped[kind] = skipped.get(kind, 0) + 1
            left = sent - wa.count_orders(wa.data_dir_for(tmp, kind))
            behind[kind] = max(behind.get(kind, 0), left)

    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmpname:
        tmp = Path(tmpname)
        children = wa.start_children(chosen, args.threads, tmp, __file__)
        try:
            loads = {kind: wa.Load(template, first_id=1000) for kind in chosen}
            for kind, child in children.items():
                wa.closed_loop(child, loads[kind], args.concurrency, args.warmup)
            runs = wa.alternate(children, loads, args.concurrency, args.duration, args.rounds,
                                after_run=kept_up)
        finally:
            for child in children.values():
                child.stop()
    rates = {kind: [r.ok / r.elapsed for r in runs[kind]] for kind in chosen}
    for round_no in range(args.rounds):
        print(f"round {round_no + 1}: " + ", ".join(
            f"{kind} {rates[kind][round_no]:.0f}" for kind in chosen))
    for kind in chosen:
        errors = sum(r.errors for r in runs[kind])
        to_bare = statistics.median(a / b for a, b in zip(rates[kind], rates["bare"]))
        to_bridge = (f", to bridge {statistics.median(a / b for a, b in zip(rates[kind], rates['bridge'])):.2f}"
                     if "bridge" in rates else "")
        lag = (f"; at most {behind[kind]} orders not yet written when a round's load stopped"
               if kind in behind else "")
        print(f"{kind:>21}: {statistics.median(rates[kind]):8.1f} req/s  ratio to bare "
              f"{to_bare:.2f}{to_bridge} (medians of {args.rounds} rounds; errors {errors}){lag}")


if __name__ == "__main__":
    main()
