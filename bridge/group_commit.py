"""Group commit: what concurrent requests hand in is written together, in one transaction.

A webhook must be on disk before it is answered, and a transaction costs far more than the rows
it writes: BEGIN, one round of statements and COMMIT, plus, on SQLite, waiting for the single
writer. Under a burst, the requests that arrive while one batch is being written wait for the
next batch instead of for one transaction each. There is no writer thread and no timer: the
first request to find the writer free writes everything pending, its own row included
("leader/follower"), so a lone request is written at once and a burst is written in as few
transactions as the database's speed allows.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Slot(Generic[Item, Result]):
    __slots__ = ("item", "done", "result", "error")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = False
        self.result: Result | None = None
        self.error: BaseException | None = None


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
        self._pending_lock = threading.Lock()
        self._writer = threading.Lock()

    def submit(self, item: Item) -> Result:
        slot: _Slot[Item, Result] = _Slot(item)
        with self._pending_lock:
            self._pending.append(slot)
        while not slot.done:
            with self._writer:
                if slot.done:  # a leader wrote it while this request waited for the writer
                    break
                with self._pending_lock:
                    batch = self._pending[:self._max_batch]
                    del self._pending[:self._max_batch]
                # A batch cut at max_batch may leave this slot for the next round.
                self._run(batch)
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def paused(self) -> threading.Lock:
        """Hold it (``with``) to keep batches from being written, e.g. while closing."""
        return self._writer

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
