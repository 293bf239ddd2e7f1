"""The embedded web server: waitress, as ``upay-bridge serve`` runs it.

Two changes to waitress's connections (``QuietChannel``). The first stops a collapse under a
burst.
waitress has one main thread polling every connection and a pool of request threads. A request
thread writes its answer itself: it takes the connection's output lock, appends the bytes, adds
them to ``total_outbufs_len``, sends them and only then, once it has the interpreter lock back
after the send, takes them off the count. Until then the main loop sees a connection that has
output and a socket that takes it, so ``select`` returns at once, ``handle_write`` finds the
lock taken and does nothing, and the loop goes round again: each time walking every connection
in Python and competing for the interpreter lock with the very thread it waits for. With more
deliveries at once than threads that thread waits long, so the loop spins longer, and the
state fed itself: 64 clients on 16 threads got 340-610 webhooks a second where 16 clients got
1,400, the main loop going round 14 times and calling ``handle_write`` 34 times per request
(counted in the server of ``bench/webhook_accept.py``). A connection whose output lock a
request thread holds is therefore not offered to ``select`` for writing: the request thread
either sends everything or pulls waitress's trigger for the main loop to send the rest, and
it pulls it again when the request ends, so nothing waits on a connection left out.

The second: waitress sends an answer's headers and its body in two writes, each a socket send
that gives up the interpreter lock and, under a burst, waits to get it back. An answer whose
body comes in one piece of known length (every webhook answer) is sent in one
(``OneSendTask``).
"""

from __future__ import annotations

from typing import Any

from waitress.channel import HTTPChannel
from waitress.task import WSGITask
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server

from .logging_setup import hold_back_queue_warnings


#: Bytes of body sent with the headers in one write, at most: the copy that joins them costs
#: less than a send only for a small body.
ONE_SEND_BYTES = 16384


class OneSendTask(WSGITask):
    """waitress's request task, sending the headers and a small first body piece that
    completes the answer's Content-Length in one write instead of two."""

    def write(self, data: bytes) -> None:
        if self.wrote_header or not data or not self.complete:
            super().write(data)
            return
        header = self.build_response_header()  # decides has_body and chunked_response
        self.wrote_header = True
        if (self.has_body and not self.chunked_response and len(data) <= ONE_SEND_BYTES
                and self.content_length is not None
                and len(data) <= self.content_length - self.content_bytes_written):
            # What waitress's own write would send, as one piece: the headers, then the body
            # within the Content-Length.
            self.content_bytes_written += len(data)
            self.channel.write_soon(header + data)
            return
        self.channel.write_soon(header)
        super().write(data)  # the headers are written: this is waitress's own body write


class QuietChannel(HTTPChannel):
    """waitress's connection, left out of the main loop's write poll while a request thread
    holds its output lock, and answering through ``OneSendTask`` (see the module's
    docstring)."""

    task_class = OneSendTask

    def writable(self) -> bool:
        if (self.requests and self.total_outbufs_len
                and not (self.will_close or self.close_when_flushed)):
            # waitress's own handle_write would try the same lock and, finding it taken, do
            # nothing; will_close and close_when_flushed still go to it (it closes the socket).
            if not self.outbuf_lock.acquire(blocking=False):
                return False
            self.outbuf_lock.release()
        return bool(super().writable())


def make_server(app: Any, *, threads: int = 8, ident: str = "upay-bridge",
                **listen: Any) -> Any:
    """A waitress server for ``app``, not yet running (``.run()``), listening where ``listen``
    says (waitress's ``host`` and ``port``, or ``listen``): its connections are
    ``QuietChannel``s and its "Task queue depth" warning is held back (``logging_setup``)."""
    server = create_server(app, threads=threads, ident=ident, **listen)
    # One listening socket gives one server; several (e.g. IPv4 and IPv6) a MultiSocketServer
    # whose map holds a server per socket next to their connections.
    listeners = ([s for s in server.map.values() if isinstance(s, BaseWSGIServer)]
                 if isinstance(server, MultiSocketServer) else [server])
    for listener in listeners:
        listener.channel_class = QuietChannel
    hold_back_queue_warnings(server)
    return server
