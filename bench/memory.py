#!/usr/bin/env python3
"""Memory benchmark: resident memory (VmRSS from /proc/self/status) of the bridge's web+worker
process before and after it has handled N orders.

This process is the bridge as ``upay-bridge serve`` runs it in the embedded default: waitress
(8 threads) and the huey consumer (``--workers``, default 8 as UPAY_BRIDGE_WORKERS) in one
process, SQLite database and queue. The fakes (UPay, WooCommerce; no added latency) run in a
child process so their own growing state is not counted. Orders are delivered in batches of
``--batch`` while the worker runs; "before" is read after a warm-up of 20 orders (imports and
pools loaded), "after" once all N orders are ``done``. VmHWM (peak) is printed as well, with
glibc's own figures (``mallinfo2``: bytes allocated and bytes freed but kept). ``--trim`` then
calls ``malloc_trim(0)`` and reads VmRSS again: what it gives back was freed memory glibc kept,
not memory in use.

Run: ``/tmp/v/bin/python bench/memory.py`` (2,000 orders); ``--orders 10000`` for the issue's
figure. No goal is attached; nothing is asserted.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import multiprocessing as mp
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fakes_process import fakes_main, log_as_serve, start_bridge  # noqa: E402

# ------------------------------------------------------------------------------ bridge (here)

def proc_status(field: str) -> int:
    """A ``kB`` line of /proc/self/status (VmRSS, VmHWM), in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def malloc_figures() -> tuple[float, float] | None:
    """glibc's (in use, freed but kept) heap bytes in MiB, or None off glibc (< 2.33)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    info = libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20


def count_done(db_path: Path) -> int:
    with sqlite3.connect(db_path) as conn:
        return int(conn.execute("select count(*) from orders where state = 'done'").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=500, help="orders delivered per batch")
    parser.add_argument("--timeout", type=float, default=170.0,
                        help="stop waiting for the orders after this many seconds in all")
    parser.add_argument("--trim", action="store_true",
                        help="after the run, malloc_trim(0) and read VmRSS again")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also print where Python's own allocations grew (slower)")
    args = parser.parse_args()



    started = time.monotonic()
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    fakes = ctx.Process(target=fakes_main, args=(theirs,), daemon=True)
    fakes.start()
    info: dict[str, Any] = ours.recv()

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmpname:
        data_dir = Path(tmpname)
        log_as_serve(data_dir / "bridge.log")  # kept log records are part of what is measured
        rss_start = proc_status("VmRSS")
        rt, server = start_bridge(info, data_dir, args.workers, ours)
        consumer = rt.jobs.consumer(args.workers)
        consumer.start()
        db_path = data_dir / "bridge.db"
        deadline = started + args.timeout

        def deliver_and_wait(n: int, target: int) -> None:
            ours.send(("deliver", n))
            ours.recv()
            while count_done(db_path) < target and time.monotonic() < deadline:
                time.sleep(0.1)

        deliver_and_wait(20, 20)   # warm-up
        gc.collect()
        if args.tracemalloc:
            tracemalloc.start(8)
        rss_before = proc_status("VmRSS")
        malloc_before = malloc_figures()
        t0 = time.monotonic()
        total = 20
        while total < 20 + args.orders and time.monotonic() < deadline:
            n = min(args.batch, 20 + args.orders - total)
            total += n
            deliver_and_wait(n, total)
        elapsed = time.monotonic() - t0
        done = count_done(db_path) - 20
        gc.collect()
        rss_after = proc_status("VmRSS")
        malloc_after = malloc_figures()
        rss_trimmed = None
        if args.trim:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            rss_trimmed = proc_status("VmRSS")
        if args.tracemalloc:
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)])
            grown = snapshot.statistics("traceback")[:8]
            traced = sum(stat.size for stat in snapshot.statistics("filename"))
        hwm = proc_status("VmHWM")
        consumer.stop(graceful=True)
        ours.send(("stop", None))
        ours.recv()
        fakes.join(timeout=10)
        server.close()
        rt.close()

    print(f"orders done: {done}/{args.orders} in {elapsed:.1f} s ({done / elapsed:.1f} orders/s, "
          f"{args.workers} workers)")
    print(f"VmRSS: process start {rss_start / 1024:.1f} MiB; before (after 20 warm-up orders) "
          f"{rss_before / 1024:.1f} MiB; after {rss_after / 1024:.1f} MiB; "
          f"growth {(rss_after - rss_before) / 1024:.1f} MiB "
          f"({(rss_after - rss_before) / max(done, 1):.2f} kB/order); peak VmHWM {hwm / 1024:.1f} MiB")
    if malloc_before and malloc_after:
        print(f"glibc heap: in use {malloc_before[0]:.1f} -> {malloc_after[0]:.1f} MiB, freed but "
              f"kept {malloc_before[1]:.1f} -> {malloc_after[1]:.1f} MiB")
    if rss_trimmed is not None:
        print(f"after malloc_trim(0): VmRSS {rss_trimmed / 1024:.1f} MiB "
              f"({(rss_trimmed - rss_after) / 1024:+.1f} MiB), growth "
              f"{(rss_trimmed - rss_before) / 1024:.1f} MiB over the run")
    if args.tracemalloc:
        print(f"Python allocations still held, made after the warm-up: {traced / 2**20:.1f} MiB; "
              "the largest sites:")
        for stat in grown:
            print(f"  {stat.size / 1024:9.1f} KiB in {stat.count} blocks")
            for line in stat.traceback.format()[-6:]:
                print(f"      {line}")


if __name__ == "__main__":
    main()
