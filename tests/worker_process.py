"""A worker in a process of its own, for the tests of the scale-out layout.

Started with the ``spawn`` method from the test process, on the same settings (PostgreSQL and a
Redis queue), so that the web side (in the test process) and the worker share nothing but the
database and the queue, as on separate machines.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from typing import Any


def _main(settings: Any, workers: int) -> None:
    import logging
    import sys

    from bridge.runtime import bootstrap

    # Warnings and errors to stderr, where pytest shows them with a failing test.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="worker process: %(levelname)s %(name)s: %(message)s")
    runtime = bootstrap(settings, migrate=False)
    # No periodic tasks, as in the test process's own workers: the tests call sweeps directly.
    consumer = runtime.jobs.consumer(workers, periodic=False)
    consumer.run()  # SIGINT: finish the running jobs, then exit
    runtime.close()


class WorkerProcess:
    def __init__(self, settings: Any, workers: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.process = ctx.Process(target=_main, args=(settings, workers), daemon=True,
                                   name="bridge-worker")
        self.process.start()

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.is_alive() and self.process.pid is not None:
            os.kill(self.process.pid, signal.SIGINT)
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
