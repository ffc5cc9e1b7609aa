"""The process's stdout, written in batches on the event loop: one system call for many lines.

Why: a write to stdout releases the GIL for the system call; when the export thread
is waiting for the GIL it takes it there, and the logging thread waits until that
thread lets go. Measured in ``benchmarks/bench_events.py``, that cost a third of a
business event on a request. So the lines logged on a thread that runs an asyncio
event loop (the request path of FastAPI, the bot, async workers) gather in a buffer
and leave together, written by that same thread:

* once ``FLUSH_SIZE`` characters have gathered, or by a callback each loop that added
  lines runs ``interval`` seconds later. Because the loop's own thread writes them,
  they never land in the middle of a ``print()`` of that thread (with
  ``PYTHONUNBUFFERED``, ``print`` writes its pieces one by one, and a write from
  another thread between them would break the printed line);
* at once for an *urgent* line (the log pipeline marks ERROR and above), after every
  line before it, so the lines before a crash are out when the crash is;
* at once, with every line before it, for a line logged on a thread with no running
  loop (a sync worker, a thread pool): there is no loop to come back later;
* at shutdown (``sdk.Telemetry.shutdown``, which the SIGTERM handler runs) and at exit
  (a multiprocessing child's too); a forked child starts with an empty buffer (the
  parent writes what it had);
* and, should a loop stop before its callback ran (``asyncio.run`` returned), by a
  daemon thread after ``STRANDED_AFTER`` seconds.

Lines leave in the order they were written (``print()`` output, which Python buffers
on its own, may come out before log lines still waiting here). Bytes go to the file
descriptor with ``os.write`` until all are written: a pipe gets whole lines in pieces
of at most ``PIPE_BUF`` bytes (a longer line on its own), which a signal cannot cut
(Python's own stdout loses the rest of a large write that a signal interrupts on a full
pipe). A process killed by
SIGKILL loses at most the last ``interval`` seconds of its loops' non-urgent lines.
``CHATAI_OTEL_LOG_STDOUT_INTERVAL=0`` writes every line on its own. This module imports
nothing of ours.
"""

from __future__ import annotations

import asyncio
import os
import select
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from chatai_otel import process_hooks

__all__ = [
    "FLUSH_SIZE",
    "STRANDED_AFTER",
    "LineWriter",
    "flush_all",
    "stdout_writer",
]

FLUSH_SIZE = 64 * 1024  # characters gathered before they are written at once
STRANDED_AFTER = 1.0  # seconds before the thread writes lines whose loop has stopped
# A pipe write this small is never cut: 4096 bytes on Linux. (``os`` has no PIPE_BUF; reading
# it there gave POSIX's minimum, 512, and a system call for every access line on a pipe.)
ATOMIC_WRITE = getattr(select, "PIPE_BUF", 512)
STREAM_KIND_FOR = 1.0  # seconds a descriptor's kind (regular file or not) is taken as known

_running_loop = asyncio._get_running_loop  # the C accessor asyncio itself uses; ~50 ns


class LineWriter:
    """Whole lines to one stream, batched on the event loop (see the module docstring)."""

    def __init__(self, stream: Callable[[], TextIO | None], interval: float) -> None:
        self._stream = stream
        self.interval = interval
        self._new_state()

    def _new_state(self) -> None:
        # One lock for the buffer and the stream: lines leave in order, and there is no
        # second lock to take in another order. Re-entrant: a signal handler (SIGTERM ->
        # shutdown -> flush) may interrupt the thread that holds it.
        self._lock = threading.RLock()
        self._lines: list[str] = []
        self._size = 0
        self._first_at = 0.0  # when the oldest waiting line came
        self._armed: set[asyncio.AbstractEventLoop] = set()  # loops with a flush to come
        self._stranded = threading.Event()  # set: lines wait, the watcher keeps an eye on them
        self._watcher: threading.Thread | None = None
        self._kind: tuple[int, bool, float] = (-1, False, 0.0)  # (fd, regular file?, checked at)

    def write(self, line: str, urgent: bool = False) -> None:
        """Queue ``line`` when a loop runs here and will come back; else write it all now."""
        loop = _running_loop()
        if urgent or loop is None or self.interval <= 0:
            self.flush(line)
            return
        with self._lock:
            self._lines.append(line)
            self._size += len(line)
            if len(self._lines) == 1:
                self._first_at = time.monotonic()
                self._watch()
            if loop not in self._armed:
                self._armed.add(loop)
                # call_soon only appends to the loop's queue (safe even from a signal
                # handler that logs); the timer is set from the loop's own context
                loop.call_soon(self._arm, loop)
            if self._size >= FLUSH_SIZE:
                self._write_out(self._take())

    def flush(self, last: str | None = None) -> None:
        """Write everything queued (then ``last``), on the calling thread."""
        with self._lock:
            lines = self._take()
            if last is not None:
                lines.append(last)
            self._write_out(lines)

    # --- internals ----------------------------------------------------------------------

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_later(self.interval, self.flush)

    def _take(self) -> list[str]:  # under self._lock
        lines, self._lines, self._size = self._lines, [], 0
        self._armed.clear()
        return lines

    def _write_out(self, lines: list[str]) -> None:  # under self._lock
        if not lines:
            return
        try:
            stream = self._stream()
            if stream is None:  # no stdout at all (pythonw, a closed descriptor)
                return
            try:
                fd = stream.fileno()
            except (AttributeError, OSError, ValueError):
                stream.write("".join(lines))  # not a file descriptor: the stream's own way
                stream.flush()
                return
            encoding = stream.encoding or "utf-8"
            if self._regular_file(fd):
                _write_all(fd, "".join(lines).encode(encoding, "backslashreplace"))
                return
            for piece in _pieces(lines, encoding):
                _write_all(fd, piece)
        except Exception:
            pass  # a closed or broken stdout never breaks anything

    def _regular_file(self, fd: int) -> bool:  # under self._lock
        """Whether ``fd`` is a regular file, asked of the OS at most once every
        :data:`STREAM_KIND_FOR` seconds: an ``fstat`` per line on a thread with no loop was
        a second system call (and a second chance for another thread to take the GIL) for
        every line."""
        now = time.monotonic()
        known_fd, regular, checked_at = self._kind
        if known_fd != fd or now - checked_at >= STREAM_KIND_FOR:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
            self._kind = (fd, regular, now)
        return regular

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


def _pieces(lines: list[str], encoding: str) -> list[bytes]:
    """The lines encoded, joined into pieces of whole lines of at most ATOMIC_WRITE bytes."""
    pieces: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        data = line.encode(encoding, "backslashreplace")
        if current and size + len(data) > ATOMIC_WRITE:
            pieces.append(b"".join(current))
            current, size = [], 0
        current.append(data)
        size += len(data)
    if current:
        pieces.append(b"".join(current))
    return pieces


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_stdout: LineWriter | None = None
_stdout_lock = threading.Lock()


def stdout_writer(interval: float) -> LineWriter:
    """The process's one writer for ``sys.__stdout__`` (its interval set to ``interval``)."""
    global _stdout
    with _stdout_lock:
        if _stdout is None:
            _stdout = LineWriter(lambda: sys.__stdout__, interval)
        else:
            _stdout.interval = interval
        return _stdout


def flush_all() -> None:
    """Write the queued lines now (shutdown, exit)."""
    writer = _stdout
    if writer is not None:
        writer.flush()


def _after_fork_in_child() -> None:
    global _stdout_lock
    _stdout_lock = threading.Lock()
    writer = _stdout
    if writer is not None:
        writer._after_fork_in_child()


process_hooks.at_exit(flush_all)
process_hooks.at_thread_shutdown(flush_all)  # a multiprocessing child never reaches atexit
process_hooks.on_fork(after_in_child=_after_fork_in_child)
