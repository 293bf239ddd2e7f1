"""A log handler that writes its lines in batches, from one writer thread.

Every order the webhook records is logged (one INFO line), and a plain ``StreamHandler``
formats and writes each line in the request thread, with its own ``write`` system call. That
call gives up the interpreter lock, and in a burst another request thread takes it: a thread
switch per line. Measured with ``bench/webhook_accept.py`` (numbers in the README), the one line
per order cost the intake about a sixth of its throughput, where making the line is 8 µs of CPU.

Here the thread that logs only keeps the record: its message is made at once (its arguments
may change later) and what it needs from the thread's context is read by the handler's filters,
which run in that thread (``logging_setup`` adds one that takes the request id). A writer thread
wakes when the first record of a batch arrives, waits ``interval`` for more, then formats them
all and writes them with one call: in a burst, one write per ``interval`` instead of one per
order, and formatting done in one tight loop; when idle, a line is written ``interval`` after it
was logged, and the writer sleeps.

What is kept is never dropped:

- an ERROR or worse is written at once, with everything kept before it (in order), by the
  thread that logs it: the line before a crash is the one an operator needs;
- ``flush()`` writes what is kept; ``logging.shutdown`` calls it when the process exits
  normally (also on SIGTERM for ``upay-bridge serve``, which turns it into a normal exit);
- past ``max_pending`` kept records (a stream that stopped taking lines: a full pipe nobody
  reads), the logging thread writes them itself and so waits for the stream, as it would with
  ``StreamHandler``, instead of the process's memory growing.

Only a process killed outright (SIGKILL, OOM) loses the last ``interval`` of INFO and WARNING
lines, which a plain handler would have written.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import TextIO


class BatchedStreamHandler(logging.Handler):
    def __init__(self, stream: TextIO, interval: float = 0.02, max_pending: int = 10_000,
                 urgent_level: int = logging.ERROR) -> None:
        super().__init__()
        self.stream = stream
        self.interval = interval
        self.max_pending = max_pending
        self.urgent_level = urgent_level
        self._records: list[logging.LogRecord] = []
        self._records_lock = threading.Lock()  # guards _records only; never held while writing
        # Held while a batch is taken and written, so batches reach the stream in order.
        # Lock order: the handler's own lock (held by logging.shutdown around flush and close;
        # not around emit, see handle), then this, then _records_lock.
        # Reentrant: a formatter or stream that logs an error while a batch is written flushes
        # from inside the write, in the same thread.
        self._write_lock = threading.RLock()
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        self._closed = False
        _after_fork.add(self)

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        # As Handler.handle, without taking the handler's lock around emit: emit guards what it
        # shares with its own locks, and every order of a burst is logged through here.
        rv = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # Python 3.12: a filter may return a new record
            record = rv
        if rv:
            self.emit(record)
        return bool(rv)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # As logging.handlers.QueueHandler does: the message now, while its arguments are
            # what they were when logged; the record is formatted later, in the writer.
            record.message = record.getMessage()
            record.msg, record.args = record.message, None
        except Exception:  # noqa: BLE001 - as StreamHandler: report and carry on
            self.handleError(record)
            return
        with self._records_lock:
            self._records.append(record)
            pending = len(self._records)
            if pending == 1:
                self._wake.set()
        if record.levelno >= self.urgent_level or pending > self.max_pending or self._closed:
            self.flush()
        elif self._writer is None:
            self._start_writer()

    def flush(self) -> None:
        """Write every kept line now, in this thread."""
        with self._write_lock:
            self._write_batch()

    def close(self) -> None:
        self._closed = True
        self.flush()
        self._wake.set()  # the writer finds nothing and ends
        super().close()

    # -- the writer ------------------------------------------------------------------------

    def _start_writer(self) -> None:
        with self._write_lock:
            if self._writer is None and not self._closed:
                # A daemon: it never holds up the process's exit; logging.shutdown flushes.
                self._writer = threading.Thread(target=self._run, name="log-writer",
                                                daemon=True)
                self._writer.start()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            # The first line of a batch woke us: let the batch fill before writing it.
            time.sleep(self.interval)
            with self._write_lock:
                self._write_batch()

    def _write_batch(self) -> None:
        # The caller holds _write_lock.
        with self._records_lock:
            records, self._records = self._records, []
            self._wake.clear()
        lines = []
        for record in records:
            try:
                lines.append(self.format(record))
            except Exception:  # noqa: BLE001 - as StreamHandler: report it, write the others
                self.handleError(record)
        if not lines:
            return
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stream: the lines cannot go anywhere
            pass

    def _forked(self) -> None:
        # The child has no writer thread, and the records kept at the fork are the parent's to
        # write. Its locks may have been held by another thread of the parent: new ones.
        self._records = []
        self._records_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._wake = threading.Event()
        self._writer = None


_after_fork: weakref.WeakSet[BatchedStreamHandler] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for handler in list(_after_fork):
        handler._forked()


os.register_at_fork(after_in_child=_reset_after_fork)
