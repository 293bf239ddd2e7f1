"""Group commit: what concurrent requests hand in is written together, in one transaction.

A webhook must be on disk before it is answered, and a transaction costs far more than the rows
it writes: BEGIN, one round of statements and COMMIT, plus, on SQLite, waiting for the single
writer. Under a burst, the requests that arrive while one batch is being written wait for the
next batch instead of for one transaction each. There is no writer thread and no timer: the
first request to find no batch being written writes everything pending, its own row included
("leader/follower"), so a lone request is written at once and a burst is written in as few
transactions as the database's speed allows.

Each waiting request sleeps on a lock of its own, which the leader releases once its row is
written (or to hand it the lead). Waiting on one shared lock instead, as an earlier version did,
wakes the followers one after another, each needing the interpreter lock before it can let the
next one go: under a burst on a threaded server that chain of hand-overs cost more CPU than the
rows (``bench/webhook_accept.py``; numbers in the README).
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Slot(Generic[Item, Result]):
    __slots__ = ("item", "done", "result", "error", "wake")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = False
        self.result: Result | None = None
        self.error: BaseException | None = None
        # Held until this slot's request may go on: its row is written, or it is to lead.
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit(Generic[Item, Result]):
    """``submit(item)`` returns ``write([... item ...])``'s result for that item, once the
    batch holding it is committed.

    ``write`` takes a batch and returns one result per item, in order, in one transaction. When
    it raises, each item of the batch is written again alone, so one bad row fails only its own
    request and every other row is still written.
    """

    def __init__(self, write: Callable[[Sequence[Item]], Sequence[Result]],
                 max_batch: int = 64) -> None:
        self._write = write
        self._max_batch = max_batch
        self._pending: list[_Slot[Item, Result]] = []
        self._lock = threading.Lock()  # guards _pending and _leading
        self._leading = False  # a request is writing batches (or has been handed the lead)
        self._writer = threading.Lock()  # held while a batch is written

    def submit(self, item: Item) -> Result:
        slot: _Slot[Item, Result] = _Slot(item)
        with self._lock:
            self._pending.append(slot)
            follow = self._leading
            self._leading = True
        if follow:
            slot.wake.acquire()  # a leader wrote the row, or handed this request the lead
        if not slot.done:
            self._lead(slot)
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def paused(self) -> threading.Lock:
        """Hold it (``with``) to keep batches from being written, e.g. while closing."""
        return self._writer

    def _lead(self, own: _Slot[Item, Result]) -> None:
        """Write batches until ``own`` is written (a batch cut at max_batch may leave it for the
        next round), then hand the lead to the oldest request still waiting, or give it up."""
        try:
            while not own.done:
                with self._lock:
                    batch = self._pending[:self._max_batch]
                    del self._pending[:self._max_batch]
                try:
                    with self._writer:
                        self._run(batch)
                finally:
                    for slot in batch:
                        if slot is not own:
                            slot.wake.release()
        finally:
            with self._lock:
                successor = self._pending[0] if self._pending else None
                self._leading = successor is not None
            if successor is not None:
                successor.wake.release()

    def _run(self, batch: list[_Slot[Item, Result]]) -> None:
        try:
            try:
                results = self._write([s.item for s in batch])
            except Exception as exc:  # noqa: BLE001 - the request that handed the item re-raises
                if len(batch) == 1:
                    batch[0].error, batch[0].done = exc, True
                else:
                    for slot in batch:
                        self._run([slot])
                return
            for slot, result in zip(batch, results, strict=True):
                slot.result, slot.done = result, True
        finally:
            # Interrupted (KeyboardInterrupt in the leader): no follower may wait forever.
            for slot in batch:
                if not slot.done:
                    slot.error, slot.done = RuntimeError("the batch was not written"), True
