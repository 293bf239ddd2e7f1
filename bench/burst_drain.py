#!/usr/bin/env python3
"""Burst drain benchmark: how fast the bridge's workers turn a burst of queued orders into
invoices (UPay create-invoice) written back to the store (meta PUT + note POST).

Layout (all on loopback):

* a child process runs the fakes: UPay answering every API call after ``--upay-latency``
  (default 0.25 s, ``FakeUPay.latency``) and a WooCommerce store answering every REST call
  after ``--store-latency`` (default 0.05 s, ``FakeWooCommerce.latency``). It creates the
  orders and delivers their signed ``order.created`` webhooks (8 delivery threads);
* this process runs the bridge as ``upay-bridge serve`` does in the embedded default: waitress
  (8 threads) plus the huey consumer with ``--workers`` threads, SQLite database and queue.

The orders are delivered with the worker stopped (intake only), then the consumer starts and
the clock runs until every order is ``done`` (invoice made, meta and note written). The result
is compared with the ideal time for that concurrency, where each order costs one UPay call, a
meta PUT and a note POST and nothing else:

    ideal = orders * (upay_latency + 2 * store_latency) / workers

Goal from the issue: >= 100 orders/s and >= 0.8 of ideal. Nothing is asserted: the numbers
and whether the goal was met are printed.

Run: ``/tmp/v/bin/python bench/burst_drain.py`` (1,000 orders, 48 workers; ``--orders 200``
for a quick run).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fakes_process import fakes_main, log_as_serve, start_bridge, worker_main  # noqa: E402

# ------------------------------------------------------------------------------ bridge (here)

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_states(engine: Any) -> dict[str, int]:
    import sqlalchemy as sa

    with engine.connect() as conn:
        return {state: n for state, n in conn.execute(
            sa.text("select state, count(*) from orders group by state"))}


@contextlib.contextmanager
def layout_for(args: argparse.Namespace) -> Iterator[dict[str, str]]:
    """The scaled layout's settings: a fresh PostgreSQL database and Redis queue, dropped after."""
    if args.layout == "embedded":
        yield {}
        return
    import uuid

    import redis
    import sqlalchemy as sa

    name = f"upay_bridge_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.pg.replace("postgresql://", "postgresql+psycopg://"),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield {"database_url": args.pg.rsplit("/", 1)[0] + "/" + name,
               "queue_url": args.redis, "queue_name": name}
    finally:
        client = redis.Redis.from_url(args.redis)
        for key in client.scan_iter(f"*{name.replace('_', '')}*"):
            client.delete(key)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=48,
                        help="worker threads (huey consumer); 48 is the concurrency one core of "
                             "Python keeps at 0.8 of ideal on a 2-core machine")
    parser.add_argument("--upay-latency", type=float, default=0.25)
    parser.add_argument("--store-latency", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=150.0,
                        help="stop waiting for the drain after this many seconds")
    parser.add_argument("--layout", choices=("embedded", "scaled"), default="embedded",
                        help="embedded: SQLite, the workers' threads in this process; scaled: "
                             "PostgreSQL + Redis, the workers in --processes processes")
    parser.add_argument("--processes", type=int, default=2,
                        help="worker processes of the scaled layout (the workers are split "
                             "evenly between them)")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="PostgreSQL (the scaled layout makes a database there, then drops it)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--keep-alive", action="store_true",
                        help="serve the fakes on waitress, which keeps connections alive as a "
                             "real store and UPay do (default: their own server, which closes "
                             "each connection after one answer)")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    fakes = ctx.Process(target=fakes_main, args=(theirs, args.upay_latency, args.store_latency,
                                                    2 * args.workers if args.keep_alive else 0),
                        daemon=True)
    fakes.start()
    info: dict[str, Any] = ours.recv()

    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmpname, \
            layout_for(args) as layout:
        data_dir = Path(tmpname)
        log_as_serve(data_dir / "bridge.log")
        rt, server = start_bridge(info, data_dir, args.workers, ours, **layout)
        engine = rt.engine

        # 1. the burst: every order delivered while no worker runs (intake only)
        ours.send(("deliver", args.orders))
        intake = ours.recv()
        print(f"intake: {intake['delivered']} delivered ({intake['failed']} failed) in "
              f"{intake['seconds']:.1f} s; states {count_states(engine)}")

        # 2. the drain: start the workers and wait until every order is done
        procs: list[Any] = []
        consumer = None
        if args.layout == "embedded":
            consumer = rt.jobs.consumer(args.workers, periodic=False)
            bridge_pids = [os.getpid()]
        else:
            per = max(1, args.workers // args.processes)
            procs = [ctx.Process(target=worker_main, args=(rt.settings, per), daemon=True)
                     for _ in range(args.processes)]
            for proc in procs:
                proc.start()
            bridge_pids = [os.getpid()] + [proc.pid for proc in procs]
        cpu0 = sum(map(cpu_seconds, bridge_pids)), cpu_seconds(fakes.pid)
        t0 = time.monotonic()
        if consumer is not None:
            consumer.start()
        deadline = t0 + args.timeout
        states: dict[str, int] = {}
        while time.monotonic() < deadline:
            states = count_states(engine)
            if states.get("done", 0) >= args.orders:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        cpu = sum(map(cpu_seconds, bridge_pids)) - cpu0[0], cpu_seconds(fakes.pid) - cpu0[1]
        if consumer is not None:
            consumer.stop(graceful=True)
        for proc in procs:
            os.kill(proc.pid, signal.SIGINT)
            proc.join(10)
        ours.send(("stop", None))
        ours.recv()
        fakes.join(timeout=10)
        server.close()
        rt.close()

    done = states.get("done", 0)
    per_order = args.upay_latency + 2 * args.store_latency
    ideal = args.orders * per_order / args.workers
    rate = done / elapsed
    of_ideal = ideal / elapsed if done >= args.orders else float("nan")
    print(f"layout: {args.layout}" + (f", {args.processes} worker processes" if args.layout == "scaled" else ""))
    print(f"drain: {done}/{args.orders} orders done in {elapsed:.2f} s with {args.workers} workers "
          f"(final states {states})")
    print(f"CPU per order during the drain: bridge {cpu[0] / max(done, 1) * 1e3:.1f} ms, "
          f"fakes {cpu[1] / max(done, 1) * 1e3:.1f} ms ({os.cpu_count()} CPUs)")
    print(f"throughput: {rate:.1f} orders/s (goal >= 100: {'MET' if rate >= 100 else 'NOT MET'})")
    print(f"ideal: {ideal:.2f} s ({args.orders} x {per_order:.2f} s / {args.workers}); "
          f"ideal/actual = {of_ideal:.2f} (goal >= 0.8: {'MET' if of_ideal >= 0.8 else 'NOT MET'})")


if __name__ == "__main__":
    main()
