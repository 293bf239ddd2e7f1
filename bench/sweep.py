#!/usr/bin/env python3
"""What the minute's sweep costs as finished orders pile up: the sweep's query with the same
few open orders, first with no history, then with ``--history`` finished orders (each with a
finished store action), as a ratio. The single-``OR`` query the sweep used before its index
lookups is timed the same way, in the same run, for comparison.

The goal is a sweep whose cost follows the open orders, not the history: a ratio near 1.

Run: ``.venv/bin/python bench/sweep.py`` (SQLite, 200,000 finished orders, about 30 s);
``--layout scaled`` for PostgreSQL (a database is made, analysed and dropped).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import burst_drain  # noqa: E402
import webhook_accept as wa  # noqa: E402


def median_ms(run: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _orders(store_id: str, names: range, prefix: str, **values: Any) -> list[dict[str, Any]]:
    now = time.time()
    return [dict(store_id=store_id, external_id=f"{prefix}{i}", payload="{}", state="done",
                 note_state="written", next_attempt_at=now - 3600, created_at=now,
                 updated_at=now) | values for i in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=200_000, help="finished orders")
    parser.add_argument("--repeat", type=int, default=21, help="sweeps timed, median reported")
    parser.add_argument("--layout", choices=("embedded", "scaled"), default="embedded")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    import sqlalchemy as sa

    from bridge import db
    from bridge.pipeline import _needs_work

    o = db.orders.c
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp, \
            burst_drain.layout_for(args) as overrides:
        rt, record = wa.bench_runtime(Path(tmp), **overrides)
        engine = rt.pipeline.engine
        rt.pipeline.schedule = lambda pk, delay: None  # the query is what is measured
        now = time.time()
        # The sweep's query before it became three index lookups (kept here to compare).
        single_or = (sa.select(o.id).where(_needs_work(), o.next_attempt_at <= now - 60, sa.or_(
            o.lease_expires.is_(None), o.lease_expires < now)).order_by(o.next_attempt_at)
            .limit(1000))

        def old_sweep() -> int:
            with db.reading(engine) as conn:
                return len(conn.execute(single_or).scalars().all())

        with engine.begin() as conn:
            conn.execute(db.orders.insert(), _orders(record.id, range(5), "open-",
                                                     state="received", note_state="none"))
            pks = conn.execute(db.orders.insert().returning(o.id),
                               _orders(record.id, range(5), "paid-")).scalars().all()
            conn.execute(db.store_actions.insert(), [
                dict(order_id=pk, kind="mark_paid", state="pending", dedupe_key=f"p{pk}",
                     created_at=now, updated_at=now) for pk in pks])

        def measure() -> tuple[float, float, int]:
            found = rt.pipeline.sweep()
            assert found == old_sweep() == 10, found
            return (median_ms(rt.pipeline.sweep, args.repeat),
                    median_ms(old_sweep, max(3, args.repeat // 4)), found)

        empty_new, empty_old, found = measure()
        started = time.perf_counter()
        for first in range(0, args.history, 10_000):
            with engine.begin() as conn:
                pks = conn.execute(db.orders.insert().returning(o.id), _orders(
                    record.id, range(first, min(first + 10_000, args.history)), "done-")
                ).scalars().all()
                conn.execute(db.store_actions.insert(), [
                    dict(order_id=pk, kind="note", state="done", dedupe_key=f"n{pk}",
                         created_at=now, updated_at=now) for pk in pks])
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")  # what autovacuum does on a live database
        print(f"{engine.dialect.name}: {found} orders need work; {args.history:,} finished "
              f"orders written in {time.perf_counter() - started:.1f} s")
        full_new, full_old, _ = measure()
        rt.close()
    print(f"sweep (index lookups): {empty_new:8.2f} ms with no history, {full_new:8.2f} ms with "
          f"{args.history:,}: ratio {full_new / empty_new:.1f}")
    print(f"sweep (single OR):     {empty_old:8.2f} ms with no history, {full_old:8.2f} ms with "
          f"{args.history:,}: ratio {full_old / empty_old:.1f}")
    print(f"with the history, the index lookups take {full_new / full_old:.3f} of the single OR's "
          f"time")


if __name__ == "__main__":
    main()
