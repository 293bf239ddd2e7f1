"""Group commit (bridge/group_commit.py): concurrent requests share a transaction, and one bad
row fails only its own request."""

from __future__ import annotations

import threading
from typing import Sequence

import pytest

from bridge.group_commit import GroupCommit


class Recorder:
    """A write function that records its batches; optionally holds the first one until told."""

    def __init__(self, hold_first: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.first_started = threading.Event()
        self.release_first = threading.Event()
        if not hold_first:
            self.release_first.set()

    def __call__(self, items: Sequence[str]) -> list[str]:
        if not self.batches:
            self.first_started.set()
            assert self.release_first.wait(10)
        if any(item.startswith("bad") for item in items):
            raise ValueError(f"cannot write {[i for i in items if i.startswith('bad')]}")
        self.batches.append(list(items))
        return [item.upper() for item in items]


def submit_all(group: GroupCommit, items: list[str]) -> dict[str, object]:
    results: dict[str, object] = {}

    def run(item: str) -> None:
        try:
            results[item] = group.submit(item)
        except ValueError as exc:
            results[item] = exc

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    return results


def behind_a_slow_batch(group: GroupCommit, write: Recorder, items: list[str]) -> dict[str, object]:
    """Submit ``items`` concurrently while a first batch is being written; return their
    results once everything is written."""
    first = threading.Thread(target=group.submit, args=("first",))
    first.start()
    assert write.first_started.wait(10)
    results: dict[str, object] = {}
    waiting = threading.Thread(target=lambda: results.update(submit_all(group, items)))
    waiting.start()
    while len(group._pending) < len(items):  # noqa: SLF001 - wait until all are queued
        threading.Event().wait(0.005)
    write.release_first.set()
    first.join(10)
    waiting.join(10)
    return results


def test_a_lone_request_is_written_at_once() -> None:
    write = Recorder()
    group = GroupCommit(write)
    assert group.submit("a") == "A"
    assert group.submit("b") == "B"
    assert write.batches == [["a"], ["b"]]


def test_requests_arriving_during_a_write_share_the_next_transaction() -> None:
    write = Recorder(hold_first=True)
    group = GroupCommit(write)
    # While the first batch is being written, 20 more requests arrive...
    others = [f"r{i}" for i in range(20)]
    results = behind_a_slow_batch(group, write, others)
    # ...and are written together in the next one, each request getting its own result.
    assert write.batches[0] == ["first"]
    assert sorted(write.batches[1]) == sorted(others)
    assert len(write.batches) == 2
    assert results == {item: item.upper() for item in others}


def test_batches_are_cut_at_max_batch() -> None:
    write = Recorder(hold_first=True)
    group = GroupCommit(write, max_batch=8)
    others = [f"r{i}" for i in range(20)]
    results = behind_a_slow_batch(group, write, others)
    assert [len(b) for b in write.batches] == [1, 8, 8, 4]
    assert results == {item: item.upper() for item in others}


def test_a_bad_row_fails_only_its_own_request() -> None:
    write = Recorder(hold_first=True)
    group = GroupCommit(write)
    results = behind_a_slow_batch(group, write, ["ok1", "bad", "ok2", "ok3"])
    # The shared transaction failed; each row was then written alone.
    assert isinstance(results.pop("bad"), ValueError)
    assert results == {"ok1": "OK1", "ok2": "OK2", "ok3": "OK3"}
    assert sorted(b[0] for b in write.batches[1:]) == ["ok1", "ok2", "ok3"]
    assert all(len(b) == 1 for b in write.batches[1:])


def test_an_error_reaches_the_request_that_caused_it() -> None:
    group = GroupCommit(Recorder())
    with pytest.raises(ValueError, match="bad-1"):
        group.submit("bad-1")
    assert group.submit("fine") == "FINE"  # and the writer is free again


def test_an_interrupted_leader_leaves_no_follower_waiting() -> None:
    started, release = threading.Event(), threading.Event()

    def write(items: Sequence[str]) -> list[str]:
        if "first" in items:
            started.set()
            assert release.wait(10)
            return ["FIRST"]
        raise KeyboardInterrupt  # not an Exception: not retried row by row

    group = GroupCommit(write)
    first = threading.Thread(target=group.submit, args=("first",))
    first.start()
    assert started.wait(10)
    outcome: list[BaseException] = []

    def follower() -> None:
        try:
            group.submit("second")
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    threads = [threading.Thread(target=follower) for _ in range(2)]
    for t in threads:
        t.start()
    while len(group._pending) < 2:  # noqa: SLF001
        threading.Event().wait(0.005)
    release.set()
    for t in [first, *threads]:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert len(outcome) == 2
    assert any(isinstance(e, KeyboardInterrupt) for e in outcome)


def test_a_burst_of_threads_each_gets_its_own_result() -> None:
    # Many requests at once, some with bad rows, over many batches: every request gets its
    # own answer, no row is written twice or lost, and nothing is left waiting.
    written: list[str] = []
    lock = threading.Lock()

    def write(items: Sequence[str]) -> list[str]:
        if any(item.startswith("bad") for item in items):
            raise ValueError("bad row")
        with lock:
            written.extend(items)
        threading.Event().wait(0.0005)  # a commit takes a while; others pile up meanwhile
        return [item.upper() for item in items]

    group = GroupCommit(write, max_batch=5)
    results: dict[str, object] = {}

    def run(t: int) -> None:
        for i in range(100):
            item = f"{'bad' if i % 17 == 0 else 'ok'}-{t}-{i}"
            try:
                results[item] = group.submit(item)
            except ValueError as exc:
                results[item] = exc

    threads = [threading.Thread(target=run, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert len(results) == 1600
    for item, result in results.items():
        if item.startswith("bad"):
            assert isinstance(result, ValueError)
        else:
            assert result == item.upper()
    assert sorted(written) == sorted(i for i in results if i.startswith("ok"))
    assert not group._pending and not group._leading  # noqa: SLF001 - the lead was given up
