"""The log handler ``configure`` installs: lines written in batches, none lost, in order."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bridge.batched_log import BatchedStreamHandler
from bridge.logging_setup import JSONFormatter, keep_request_id, request_id_var

from .conftest import wait_for

NEVER = 3600.0  # an interval the writer thread never reaches during a test


class Stream:
    """A text stream that records each write call."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def lines(self) -> list[str]:
        with self.lock:
            return "".join(self.writes).splitlines()


@pytest.fixture
def make_logger():
    made: list[tuple[logging.Logger, BatchedStreamHandler]] = []

    def make(interval: float = NEVER, **kwargs) -> tuple[logging.Logger, Stream,
                                                         BatchedStreamHandler]:
        stream = Stream()
        handler = BatchedStreamHandler(stream, interval=interval, **kwargs)  # type: ignore[arg-type]
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger = logging.getLogger(f"test.batched.{len(made)}.{id(handler)}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        made.append((logger, handler))
        return logger, stream, handler

    yield make
    for logger, handler in made:
        logger.removeHandler(handler)
        handler.close()


def test_a_burst_of_lines_is_one_write(make_logger) -> None:
    logger, stream, handler = make_logger()
    for n in range(200):
        logger.info("order %d recorded", n)
    assert stream.writes == []  # kept, not written by the logging thread
    handler.flush()
    assert len(stream.writes) == 1
    assert stream.lines() == [f"INFO order {n} recorded" for n in range(200)]


def test_the_writer_thread_writes_kept_lines_without_a_flush(make_logger) -> None:
    logger, stream, _ = make_logger(interval=0.01)
    logger.info("first")
    wait_for(lambda: stream.lines() == ["INFO first"], timeout=10)
    logger.warning("second")  # the writer sleeps between batches and wakes again
    wait_for(lambda: stream.lines() == ["INFO first", "WARNING second"], timeout=10)


def test_an_error_is_written_at_once_after_the_lines_kept_before_it(make_logger) -> None:
    logger, stream, _ = make_logger()
    logger.info("one")
    logger.warning("two")
    logger.error("three")
    assert stream.lines() == ["INFO one", "WARNING two", "ERROR three"]
    logger.info("four")
    assert stream.lines() == ["INFO one", "WARNING two", "ERROR three"]


def test_past_max_pending_the_logging_thread_writes_itself(make_logger) -> None:
    """A stream that stopped taking lines makes the logger wait, as a plain handler does,
    instead of the kept lines growing without bound."""
    logger, stream, _ = make_logger(max_pending=10)
    for n in range(10):
        logger.info("line %d", n)
    assert stream.writes == []
    logger.info("line 10")
    assert stream.lines() == [f"INFO line {n}" for n in range(11)]


def test_each_line_carries_the_request_id_of_the_thread_that_logged_it() -> None:
    """The writer formats the records, in its own thread: the request id is the one of the
    thread that logged, not the writer's (it has none) or the last one set."""
    stream = Stream()
    handler = BatchedStreamHandler(stream, interval=NEVER)  # type: ignore[arg-type]
    handler.setFormatter(JSONFormatter())
    handler.addFilter(keep_request_id)  # as configure() sets it up
    logger = logging.getLogger("test.batched.request_ids")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)

    def request(rid: str) -> None:
        request_id_var.set(rid)
        logger.info("order recorded")

    try:
        threads = [threading.Thread(target=request, args=(f"req{n}",)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        handler.flush()
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert sorted(json.loads(line)["request_id"] for line in stream.lines()) == \
        sorted(f"req{n}" for n in range(8))


def test_closing_writes_what_is_kept_and_later_lines_go_straight_out(make_logger) -> None:
    logger, stream, handler = make_logger()
    logger.info("kept")
    handler.close()
    assert stream.lines() == ["INFO kept"]
    logger.info("after close")
    assert stream.lines() == ["INFO kept", "INFO after close"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_does_not_write_its_parents_kept_lines(tmp_path: Path) -> None:
    """gunicorn --preload forks web processes from one that has logged: each line once."""
    path = tmp_path / "log.txt"
    with path.open("a", buffering=1) as stream:
        handler = BatchedStreamHandler(stream, interval=NEVER)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = logging.getLogger("test.batched.fork")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        try:
            logger.info("parent before fork")
            pid = os.fork()
            if pid == 0:  # the child: log, write, leave without running the parent's cleanup
                try:
                    logger.info("child")
                    handler.flush()
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            logger.info("parent after fork")
            handler.flush()
        finally:
            logger.removeHandler(handler)
            handler.close()
    assert sorted(path.read_text().splitlines()) == \
        ["child", "parent after fork", "parent before fork"]


@pytest.mark.parametrize("ending", ["return", "sys.exit(3)", "raise SystemExit(0)"])
def test_a_process_that_exits_writes_every_line(ending: str) -> None:
    """logging.shutdown (at exit) flushes the handler ``configure`` installed."""
    code = f"""
import logging, sys
from bridge.logging_setup import configure
configure("INFO", "json")
def main():
    for n in range(500):
        logging.getLogger("bridge.pipeline").info("order %d recorded", n)
    {ending}
main()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    messages = [json.loads(line)["message"] for line in done.stderr.splitlines()]
    assert messages == [f"order {n} recorded" for n in range(500)]


def test_a_message_is_made_when_logged_not_when_written(make_logger) -> None:
    """Its arguments may change before the writer formats the record."""
    logger, stream, handler = make_logger()
    items = ["first"]
    logger.info("items: %s", items)
    items.append("second")
    handler.flush()
    assert stream.lines() == ["INFO items: ['first']"]


def test_a_record_that_cannot_be_formatted_is_reported_and_the_rest_written(make_logger,
                                                                             capsys) -> None:
    logger, stream, handler = make_logger()
    logger.info("fine %d", 1)
    logger.info("broken %d", "not a number")
    logger.info("fine %d", 2)
    handler.flush()
    assert stream.lines() == ["INFO fine 1", "INFO fine 2"]
    assert "not a number" in capsys.readouterr().err  # logging's own report (raiseExceptions)


def test_configure_writes_each_line_with_its_threads_request_id() -> None:
    code = """
import logging, threading
from bridge.logging_setup import configure, request_id_var
configure("INFO", "json")
def request(n):
    request_id_var.set(f"req-{n}")
    logging.getLogger("bridge.pipeline").info("order %d recorded", n)
threads = [threading.Thread(target=request, args=(n,)) for n in range(20)]
for t in threads: t.start()
for t in threads: t.join()
logging.getLogger("bridge.pipeline").info("no request")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert sorted((line["message"], line.get("request_id")) for line in lines[:-1]) == \
        sorted((f"order {n} recorded", f"req-{n}") for n in range(20))
    assert lines[-1]["message"] == "no request" and "request_id" not in lines[-1]


def test_an_error_logged_while_a_batch_is_written_does_not_hang(make_logger) -> None:
    """A stream (or formatter) that logs an error itself, from inside the write."""
    logger, stream, handler = make_logger()
    written: list[str] = []

    class LoggingStream(Stream):
        def write(self, text: str) -> int:
            if not written:
                written.append(text)
                logger.error("the stream noticed something")  # flushes from inside the write
            return super().write(text)

    handler.stream = LoggingStream()
    logger.info("one")
    done = threading.Event()
    threading.Thread(target=lambda: (handler.flush(), done.set()), daemon=True).start()
    assert done.wait(10), "flush hung"
    assert handler.stream.lines() == ["ERROR the stream noticed something", "INFO one"]
