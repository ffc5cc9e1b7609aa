"""The process's stdout, written in batches on the event loop: one system call for many lines.

Why: a write to stdout releases the GIL for the system call; when the export thread
is waiting for the GIL it takes it there, and the logging thread waits until that
thread lets go. Measured in ``benchmarks/bench_events.py``, that cost a third of a
business event on a request. So the lines logged on a thread that runs an asyncio
event loop (the request path of FastAPI, the bot, async workers) gather in a buffer
and leave together, written by that same thread:

* once ``FLUSH_SIZE`` characters have gathered, or by a callback the loop runs
  ``interval`` seconds after the first of them. Because the loop's own thread writes
  them, they never land in the middle of a ``print()`` of that thread (with
  ``PYTHONUNBUFFERED``, ``print`` writes its pieces one by one, and a write from
  another thread between them would break the printed line);
* at once for an *urgent* line (the log pipeline marks ERROR and above), after every
  line before it, so the lines before a crash are out when the crash is;
* at once, with every line before it, for a line logged on a thread with no running
  loop (a sync worker, a thread pool): there is no loop to come back later;
* at shutdown (``sdk.Telemetry.shutdown``, which the SIGTERM handler runs), at exit
  (a multiprocessing child's too), and before ``fork`` (the child starts empty: the
  parent writes what it had);
* and, should the loop stop before its callback ran (``asyncio.run`` returned), by a
  daemon thread after ``STRANDED_AFTER`` seconds.

Lines leave in the order they were written. A process killed by SIGKILL loses at most
the last ``interval`` seconds of its loop's non-urgent lines.
``CHATAI_OTEL_LOG_STDOUT_INTERVAL=0`` writes every line on its own. This module imports
nothing of ours.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TextIO

__all__ = ["DEFAULT_INTERVAL", "FLUSH_SIZE", "STRANDED_AFTER", "LineWriter", "flush_all"]

DEFAULT_INTERVAL = 0.05  # seconds a line may wait for company
FLUSH_SIZE = 64 * 1024  # characters gathered before they are written at once
STRANDED_AFTER = 1.0  # seconds before the thread writes lines whose loop has stopped

_running_loop = asyncio._get_running_loop  # the C accessor asyncio itself uses; ~50 ns
_writers: weakref.WeakSet[LineWriter] = weakref.WeakSet()


class LineWriter:
    """Whole lines to one stream, batched on the event loop (see the module docstring)."""

    def __init__(self, stream: Callable[[], TextIO | None], interval: float = DEFAULT_INTERVAL):
        self._stream = stream
        self._interval = interval
        self._new_state()
        _writers.add(self)

    def _new_state(self) -> None:
        # Re-entrant: a signal handler (SIGTERM -> shutdown -> flush) may interrupt a
        # thread holding either lock.
        self._lock = threading.RLock()  # guards the buffer; held for appends only
        self._write_lock = threading.RLock()  # one writer of the stream at a time, in order
        self._lines: list[str] = []
        self._size = 0
        self._first_at = 0.0  # when the oldest waiting line came
        self._stranded = threading.Event()  # set: lines wait, the watcher keeps an eye on them
        self._watcher: threading.Thread | None = None

    def write(self, line: str, urgent: bool = False) -> None:
        """Queue ``line`` when a loop runs here and will come back; else write it all now."""
        loop = _running_loop()
        if urgent or loop is None or self._interval <= 0:
            self.flush(line)
            return
        with self._lock:
            lines = self._lines
            lines.append(line)
            self._size += len(line)
            if len(lines) == 1:
                self._first_at = time.monotonic()
                loop.call_later(self._interval, self.flush)
                self._watch()
                return
            due = self._size >= FLUSH_SIZE
        if due:
            self.flush()

    def flush(self, last: str | None = None) -> None:
        """Write everything queued (then ``last``), on the calling thread."""
        with self._write_lock:
            with self._lock:
                lines, self._lines, self._size = self._lines, [], 0
            if last is not None:
                lines.append(last)
            if not lines:
                return
            try:
                stream = self._stream()
                if stream is None:  # no stdout at all (pythonw, a closed descriptor)
                    return
                stream.write("".join(lines))
                stream.flush()
            except Exception:
                pass  # a closed or broken stdout never breaks anything

    def close(self) -> None:
        """Write what is queued."""
        self.flush()

    # --- lines whose loop stopped before it came back -----------------------------------

    def _watch(self) -> None:  # under self._lock
        if self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch_forever, name="chatai-otel-stdout", daemon=True
            )
            self._watcher.start()
        self._stranded.set()

    def _watch_forever(self) -> None:
        while True:
            self._stranded.wait()
            with self._lock:
                if not self._lines:
                    self._stranded.clear()
                    continue
                left = self._first_at + STRANDED_AFTER - time.monotonic()
            if left > 0:
                time.sleep(left)
                continue
            self.flush()

    def _after_fork_in_child(self) -> None:
        # The parent writes what it had queued; the child starts empty, with no thread.
        self._new_state()


def flush_all() -> None:
    """Write every writer's queued lines now (shutdown, exit, before fork)."""
    for writer in list(_writers):
        writer.flush()


def _after_fork_in_child() -> None:
    for writer in list(_writers):
        writer._after_fork_in_child()


atexit.register(flush_all)
# Also when threads are joined at shutdown: a multiprocessing child ends with
# threading._shutdown() and os._exit(), never reaching atexit.
_register_threading_atexit = getattr(threading, "_register_atexit", None)
if _register_threading_atexit is not None:
    _register_threading_atexit(flush_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=flush_all, after_in_child=_after_fork_in_child)
