"""The interpreter's thread switch interval for the processes that serve webhooks.

CPython makes a thread that wants the GIL wait up to ``sys.getswitchinterval()`` (5 ms by
default) before the thread holding it is asked to let go. Intake writes a burst in batches
(``bridge/group_commit.py``): one thread, the batch's leader, runs the database statements while
the others wait for it, and it gives up the GIL on every statement; with more deliveries than
the server has threads there is always another thread with Python to run, so the leader can
wait up to an interval to get it back, a dozen times a batch.

This was first taken for the cause of a collapse under such a burst (32 clients on the default
8 threads: about 700-790 deliveries a second in three runs of four, where 16 clients got
1,600), and 1 ms made it rare at 32 clients but not at 64 on 16 threads. The cause was
waitress's main loop spinning while a request thread wrote its answer
(``bridge/web_server.py``), which competes for the GIL the same way; with that fixed, neither
5 ms nor 1 ms collapsed at 32 or 64 clients, and 1 ms was level with or a little above 5 ms
(``bench/webhook_accept.py --switch-ms 5`` against the default; numbers in the README). It
stays: a shorter wait for the leader is never worse here, and a serving process has no
CPU-bound thread that more switches would slow.
"""

from __future__ import annotations

import sys

#: Seconds, for sys.setswitchinterval in a serving process.
SWITCH_INTERVAL = 0.001


def tune_for_serving(interval: float = SWITCH_INTERVAL) -> None:
    """Set the switch interval of this process (it is per process, not per thread)."""
    sys.setswitchinterval(interval)
