"""An append-only local journal: what the store accepted survives a crash until the database has it.

The store (``store.py``) appends each record here before it queues it for the
database, and deletes journal segments only after the database commit that
covers them. On start-up whatever is left is read again; the inserts are
idempotent, so reading a record twice never stores it twice.

Layout: the journal directory holds numbered *slots* (``slot-0``, ``slot-1``,
...); each process locks one with ``flock`` so that gunicorn workers sharing a
directory never write into each other's files, and a restarted process takes
over the slot its crashed predecessor left behind. A slot holds *segments*,
``<seq>-<nonce>.journal``, written front to back, and at most two *spares*,
``<seq>-<nonce>.spare``: files made ready for a future segment, their sequence
number and nonce reserved and their name fsynced in advance, so that moving on
to the next segment costs the commit thread no fsync of the directory.

Frames: ``<u32 length><u32 crc32>payload``. The CRC is seeded with the
segment's random nonce, so stale bytes of a recycled file (or a torn tail)
never pass for records: reading stops at the first frame that does not check.

Why segments are preallocated and recycled: on this kind of disk an
``fdatasync`` that grows a file must also commit the file-system journal
(~3 ms); one that overwrites blocks already allocated flushes only data
(~0.2 ms). A spare is a retired segment (recycled: its blocks stay allocated)
or, when none is left, a zero-filled file, made ready off the latency path by
the store's writer thread.

Group commit: producers only append to a pending list; one commit thread
writes everything pending with one ``pwrite`` and one ``fdatasync`` and then
resolves all the waiters' futures (one ``call_soon_threadsafe`` per event
loop), so one fsync covers however many records arrived meanwhile.

This module imports nothing of ours.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import os
import re
import secrets
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Journal", "JournalClosedError", "open_journals"]

_log = logging.getLogger("chatai_otel.journal")

HEADER = struct.Struct("<II")  # payload length, crc32 of the payload seeded with the segment nonce
_SEGMENT_NAME = re.compile(r"^(\d{20})-([0-9a-f]{16})\.journal$")
_SPARE_NAME = re.compile(r"^(\d{20})-([0-9a-f]{16})\.spare$")
_ZEROS = bytes(1 << 20)
_READ_CHUNK = 1 << 20
_HANDOFF_BYTES = 32 << 20  # records kept in memory for the reader, beyond that read from disk


class JournalClosedError(RuntimeError):
    """The journal is closed (shutdown has begun) and accepts nothing more."""


@dataclass(eq=False)
class _Segment:
    seq: int
    nonce: int
    path: Path
    fresh: bool  # written by this process: its durable end is known exactly
    end: int = 0  # fresh: bytes fsynced so far; leftover: where reading stopped
    sealed: bool = False  # no more appends (always true for leftovers)
    exhausted: bool = False  # leftover: read to its first invalid frame
    size: int = 0  # bytes on disk
    seed: int = field(init=False)

    def __post_init__(self) -> None:
        self.seed = zlib.crc32(self.nonce.to_bytes(8, "little"))

    @property
    def name(self) -> str:
        return f"{self.seq:020d}-{self.nonce:016x}.journal"


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Records just fsynced at ``[start, end)`` of a segment, for the reader."""

    segment: _Segment
    start: int
    end: int
    payloads: list[bytes]


def _holds_a_record(segment: _Segment) -> bool:
    """True when the file starts with a frame that checks under the segment's nonce."""
    try:
        with open(segment.path, "rb") as file:
            header = file.read(HEADER.size)
            if len(header) < HEADER.size:
                return False
            length, crc = HEADER.unpack(header)
            payload = file.read(length) if 0 < length <= segment.size else b""
    except OSError:
        return False
    return bool(len(payload) == length > 0 and zlib.crc32(payload, segment.seed) == crc)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class Journal:
    """One slot directory: appends with group commit, one sequential reader, segment retirement.

    Threads: producers call :meth:`append` from anywhere; the commit thread
    (``start()``) writes and fsyncs; exactly one consumer (the store's writer
    thread) calls :meth:`read`, :meth:`commit`, :meth:`prepare_spare`.
    A journal opened with ``writable=False`` (an orphaned slot adopted from a
    dead process) only drains its leftovers.
    """

    def __init__(
        self,
        slot: Path,
        lock_fd: int,
        *,
        segment_bytes: int,
        spares: int = 2,
        writable: bool = True,
        on_durable: Callable[[], None] | None = None,
    ) -> None:
        self.slot = slot
        self.writable = writable
        self.segment_bytes = segment_bytes
        self._want_spares = spares
        self._lock_fd: int | None = lock_fd
        self._on_durable = on_durable
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: list[tuple[bytes, asyncio.Future[None] | None]] = []
        self._pending_bytes = 0
        self._closing = False
        self._thread: threading.Thread | None = None
        self._segments: list[_Segment] = []
        self._spares: list[_Segment] = []  # named for their future use: seq and nonce reserved
        self._active: _Segment | None = None
        self._active_fd: int | None = None
        self._broken = False  # the active segment saw a write/fsync error: roll before reuse
        self._written = 0  # records of the current batch fsynced so far (commit thread)
        self.disk_bytes = 0
        # record counts of this process's appends, for flush() and the queue-depth metric
        self.appended = 0
        self.durable = 0
        self.committed = 0
        self.failed = 0
        # fsynced records handed to the reader in memory, so it does not read back what was
        # just written; bounded: past the bound the reader reads those records from disk
        self._handoff: collections.deque[_Chunk] = collections.deque()
        self._handoff_bytes = 0
        # reader state (writer thread only)
        self._rseg: _Segment | None = None
        self._roff = 0
        self._rfd: int | None = None
        self._read_fresh = 0
        self._recover()

    # --- opening ------------------------------------------------------------------------

    def _recover(self) -> None:
        """Find leftover segments and spares; drop half-made temporary files."""
        max_seq = 0
        for entry in sorted(self.slot.iterdir()):
            if entry.name.endswith(".tmp"):
                entry.unlink(missing_ok=True)
                continue
            match = _SEGMENT_NAME.match(entry.name) or _SPARE_NAME.match(entry.name)
            if not match:
                continue
            size = entry.stat().st_size
            segment = _Segment(
                seq=int(match[1]), nonce=int(match[2], 16), path=entry, fresh=False, size=size
            )
            segment.sealed = True
            self.disk_bytes += size
            max_seq = max(max_seq, segment.seq)
            if entry.suffix == ".spare" and not _holds_a_record(segment):
                segment.fresh = True
                segment.sealed = False
                self._spares.append(segment)
            else:
                # A spare holding records was in use when the process died (its rename to
                # .journal is cosmetic and need not have reached the disk).
                self._segments.append(segment)
        self._segments.sort(key=lambda s: s.seq)
        self._spares.sort(key=lambda s: s.seq)
        self._next_seq = max_seq + 1
        if self._segments:
            self._rseg = self._segments[0]

    @property
    def leftover(self) -> bool:
        """True while segments of an earlier process remain unread."""
        with self._lock:
            return any(not s.fresh and not s.exhausted for s in self._segments)

    def start(self) -> Journal:
        """Start the commit thread (writable journals only)."""
        if self.writable and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="chatai-otel-journal", daemon=True
            )
            self._thread.start()
        return self

    # --- producers ----------------------------------------------------------------------

    def append(self, payload: bytes, waiter: asyncio.Future[None] | None = None) -> None:
        """Queue one record; ``waiter`` (if any) is resolved once it is fsynced, or fails."""
        with self._cond:
            if self._closing or not self.writable:
                raise JournalClosedError("the journal is closed")
            self._pending.append((payload, waiter))
            self._pending_bytes += len(payload) + HEADER.size
            self.appended += 1
            if len(self._pending) == 1:
                self._cond.notify()

    def reusable_bytes(self) -> int:
        """Bytes on disk that new records can take: spares and the active segment's free end.

        Read without the lock (every put() asks): a momentarily stale answer only moves
        the budget check by one group commit.
        """
        free = len(self._spares) * self.segment_bytes - self._pending_bytes
        active = self._active
        if active is not None:
            free += max(0, active.size - active.end)
        return free

    @property
    def pending(self) -> int:
        """Records appended but not yet written."""
        return len(self._pending)

    # --- the commit thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._ensure_active()
        except OSError:
            _log.exception("chatai-otel: could not open a journal segment in %s", self.slot)
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    break
                batch, self._pending = self._pending, []
                # _pending_bytes still counts this batch until it is written (the budget sees it).
                batch_bytes = sum(len(payload) for payload, _ in batch) + HEADER.size * len(batch)
            error: BaseException | None = None
            self._written = 0
            try:
                self._write([payload for payload, _ in batch])
            except OSError as exc:
                error = exc
                _log.error("chatai-otel: journal write failed in %s: %s", self.slot, exc)
            written = self._written  # the leading records that are durable, even after an error
            with self._lock:
                self.durable += written
                self.failed += len(batch) - written
                self._pending_bytes -= batch_bytes
            self._resolve(batch, written, error)
            if written and self._on_durable is not None:
                self._on_durable()
        self._close_active()

    def _write(self, payloads: list[bytes]) -> None:
        """Write and fsync, rolling segments as they fill; ``_written`` counts what is durable."""
        chunk: list[bytes] = []
        first = 0
        segment = self._ensure_active()
        offset = segment.end
        for index, payload in enumerate(payloads):
            frame_size = HEADER.size + len(payload)
            if offset + frame_size > self.segment_bytes and offset > 0:
                self._flush_chunk(segment, chunk, offset, payloads[first:index])
                chunk, first = [], index
                segment = self._roll()
                offset = segment.end
            chunk.append(HEADER.pack(len(payload), zlib.crc32(payload, segment.seed)))
            chunk.append(payload)
            offset += frame_size
        self._flush_chunk(segment, chunk, offset, payloads[first:])

    def _flush_chunk(
        self, segment: _Segment, chunk: list[bytes], new_end: int, payloads: list[bytes]
    ) -> None:
        if not chunk:
            return
        assert self._active_fd is not None
        start = segment.end
        try:
            _write_all(self._active_fd, b"".join(chunk), start)
            os.fdatasync(self._active_fd)
        except OSError:
            self._broken = True  # after a failed fsync the page cache cannot be trusted
            raise
        with self._lock:
            if new_end > segment.size:
                self.disk_bytes += new_end - segment.size
                segment.size = new_end
            segment.end = new_end
            size = new_end - start
            if self._handoff_bytes + size <= _HANDOFF_BYTES:
                self._handoff.append(_Chunk(segment, start, new_end, payloads))
                self._handoff_bytes += size
        self._written += len(chunk) // 2  # a header and a payload per record

    def _resolve(
        self,
        batch: list[tuple[bytes, asyncio.Future[None] | None]],
        written: int,
        error: BaseException | None,
    ) -> None:
        """Wake the waiters: one call per event loop, however many futures it has."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], bool]]] = {}
        for index, (_, waiter) in enumerate(batch):
            if waiter is not None:
                by_loop.setdefault(waiter.get_loop(), []).append((waiter, index < written))
        failure = error or OSError("journal write failed")
        for loop, waiters in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, waiters, failure)
            except RuntimeError:
                pass  # that loop is closed: nobody is waiting any more

    def _ensure_active(self) -> _Segment:
        if self._active is None or self._broken:
            return self._roll()
        return self._active

    def _roll(self) -> _Segment:
        """Seal the active segment and go on in the next one: a spare, if one is ready.

        A spare's name (sequence number and nonce) was made durable when it was
        prepared, so rolling onto it costs no fsync on this, the latency path.
        """
        with self._lock:
            if self._active is not None:
                self._active.sealed = True
            spare = self._spares.pop(0) if self._spares else None
        self._close_active()
        self._broken = False
        if spare is not None:
            segment = spare
            journal_path = segment.path.with_suffix(".journal")
            os.rename(segment.path, journal_path)  # cosmetic: recovery reads .spare files too
            segment.path = journal_path
        else:
            # No spare ready (start-up, or the writer fell behind): a zero-filled file now.
            segment = self._new_segment(self._take_seq(), ".journal")
            with self._lock:
                self.disk_bytes += segment.size
        self._active_fd = os.open(segment.path, os.O_WRONLY)
        with self._lock:
            self._active = segment
            self._segments.append(segment)
            if self._rseg is None:
                self._rseg = segment
                self._roff = 0
        return segment

    def _take_seq(self) -> int:
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            return seq

    def _new_segment(self, seq: int, suffix: str) -> _Segment:
        """A zero-filled file under its durable name (written a MiB at a time, so the disk
        queue never holds a whole segment in front of the commit thread's fsync)."""
        segment = _Segment(seq=seq, nonce=secrets.randbits(64), path=self.slot, fresh=True)
        final = self.slot / (segment.name.removesuffix(".journal") + suffix)
        tmp = final.with_name(final.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            left = self.segment_bytes
            while left > 0:
                left -= os.write(fd, _ZEROS[: min(left, len(_ZEROS))])
                os.fdatasync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        _fsync_dir(self.slot)
        segment.path = final
        segment.size = self.segment_bytes
        return segment

    def _close_active(self) -> None:
        if self._active_fd is not None:
            try:
                os.close(self._active_fd)
            except OSError:
                pass
            self._active_fd = None

    # --- the reader (the store's writer thread) -------------------------------------------

    def read(self, max_records: int) -> list[bytes]:
        """The next records in append order, up to what is durable; advances the read cursor."""
        out: list[bytes] = []
        while len(out) < max_records:
            with self._lock:
                segment = self._rseg
                if segment is None:
                    break
                sealed = segment.sealed  # once sealed, ``end`` is final
                limit = segment.end if segment.fresh else segment.size
                index = self._segments.index(segment)
                following = self._segments[index + 1] if index + 1 < len(self._segments) else None
            wanted, before = max_records - len(out), len(out)
            if not segment.exhausted and self._roff < limit:
                if not (segment.fresh and self._take_handoff(segment, wanted, out)):
                    self._read_segment(segment, limit, wanted, out)
                if len(out) > before and not segment.exhausted:
                    continue  # more of this segment may be there (the next chunk, say)
            done = segment.exhausted or (segment.fresh and sealed and self._roff >= limit)
            if not segment.fresh and self._roff >= limit:
                segment.exhausted = done = True
            if not done or following is None:
                break
            self._close_reader()
            with self._lock:
                self._rseg = following
                self._roff = 0
        return out

    def _take_handoff(self, segment: _Segment, wanted: int, out: list[bytes]) -> bool:
        """Take the records at the cursor from memory; False when they must come from disk."""
        with self._lock:
            handoff = self._handoff
            while handoff and (
                handoff[0].segment.seq < segment.seq
                or (handoff[0].segment is segment and handoff[0].end <= self._roff)
            ):  # the reader got these from disk already
                self._handoff_bytes -= handoff[0].end - handoff[0].start
                handoff.popleft()
            if not handoff or handoff[0].segment is not segment or handoff[0].start != self._roff:
                return False
            head = handoff[0]
            taken = head.payloads[:wanted]
            size = sum(len(p) for p in taken) + HEADER.size * len(taken)
            if len(taken) == len(head.payloads):
                handoff.popleft()
            else:
                handoff[0] = _Chunk(segment, head.start + size, head.end, head.payloads[wanted:])
            self._handoff_bytes -= size
        out.extend(taken)
        self._roff += size
        self._read_fresh += len(taken)
        return True

    def _read_segment(self, segment: _Segment, limit: int, wanted: int, out: list[bytes]) -> None:
        """Append up to ``wanted`` frames of one segment to ``out``, advancing the cursor."""
        if self._rfd is None:
            self._rfd = os.open(segment.path, os.O_RDONLY)
        count = 0
        while count < wanted and self._roff < limit:
            data = os.pread(self._rfd, min(limit - self._roff, _READ_CHUNK), self._roff)
            pos = 0
            parsed = 0
            while count + parsed < wanted and pos + HEADER.size <= len(data):
                length, crc = HEADER.unpack_from(data, pos)
                stop = pos + HEADER.size + length
                if length == 0 or self._roff + stop > limit:
                    self._invalid_frame(segment)
                    break
                if stop > len(data):
                    if pos == 0:  # a frame larger than one chunk: read it whole
                        data = os.pread(self._rfd, stop, self._roff)
                        if len(data) < stop:
                            self._invalid_frame(segment)
                            break
                        continue
                    break  # the rest of this frame comes with the next chunk
                payload = data[pos + HEADER.size : stop]
                if zlib.crc32(payload, segment.seed) != crc:
                    self._invalid_frame(segment)
                    break
                out.append(payload)
                parsed += 1
                pos = stop
            self._roff += pos
            count += parsed
            if segment.fresh:
                self._read_fresh += parsed
            if segment.exhausted or pos == 0:
                break

    def _invalid_frame(self, segment: _Segment) -> None:
        """A leftover segment ends at its first invalid frame (a torn tail, or stale bytes)."""
        segment.exhausted = True
        if segment.fresh:
            # Only a damaged disk does this to our own frames: skip the rest, start a new segment.
            _log.error("chatai-otel: corrupt journal frame in %s at %d", segment.path, self._roff)
            self._broken = True

    def _close_reader(self) -> None:
        if self._rfd is not None:
            os.close(self._rfd)
            self._rfd = None

    def commit(self) -> None:
        """Everything read so far is in the database: retire the segments behind the cursor."""
        with self._lock:
            self.committed += self._read_fresh
            self._read_fresh = 0
            current = self._rseg
            retired = []
            while current is not None and self._segments and self._segments[0] is not current:
                retired.append(self._segments.pop(0))
            if (
                current is not None
                and current.sealed
                and current is not self._active
                and (current.exhausted or (current.fresh and self._roff >= current.end))
            ):
                # Fully read and sealed, with nothing after it yet: retire it too.
                self._segments.remove(current)
                retired.append(current)
                self._rseg = self._segments[0] if self._segments else None
                self._roff = 0
                self._close_reader()
        for segment in retired:
            self._retire(segment)

    def _retire(self, segment: _Segment) -> None:
        """A committed segment becomes a spare (its blocks stay allocated), or goes."""
        keep = self.writable and len(self._spares) < self._want_spares
        try:
            if keep:
                spare = _Segment(
                    seq=self._take_seq(),
                    nonce=secrets.randbits(64),  # its old frames no longer check
                    path=self.slot,
                    fresh=True,
                    size=segment.size,
                )
                spare.path = self.slot / spare.name.replace(".journal", ".spare")
                os.rename(segment.path, spare.path)
                _fsync_dir(self.slot)  # durable before the commit thread writes a record in it
                with self._lock:
                    self._spares.append(spare)
            else:
                segment.path.unlink(missing_ok=True)
                with self._lock:
                    self.disk_bytes -= segment.size
        except OSError:
            _log.exception("chatai-otel: could not retire journal segment %s", segment.path)

    def prepare_spare(self, budget: int) -> None:
        """Off the latency path: a zero-filled spare when none is ready, within ``budget``."""
        if not self.writable:
            return
        with self._lock:
            if self._spares or self.disk_bytes + self.segment_bytes > budget:
                return
        spare = self._new_segment(self._take_seq(), ".spare")
        with self._lock:
            self._spares.append(spare)
            self.disk_bytes += spare.size

    @property
    def drained(self) -> bool:
        """True when every durable record has been read and committed."""
        with self._lock:
            if self._pending:
                return False
            if self.committed < self.durable:
                return False
            return not any(not s.fresh and not s.exhausted for s in self._segments)

    # --- closing ------------------------------------------------------------------------

    def close(self, timeout: float) -> bool:
        """Write what is pending and stop the commit thread; False if it did not finish in time."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def retire_all(self) -> None:
        """After a clean close with everything committed: nothing is left to replay at start."""
        with self._lock:
            if self._pending or self.committed < self.durable or self._thread_alive():
                return
            segments, self._segments = self._segments, []
            self._active = None
            self._rseg = None
            self._roff = 0
        self._close_reader()
        for segment in segments:
            self._retire(segment)

    def _thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def release(self) -> None:
        """Close files and give up the slot's lock (whatever is left is read at the next start)."""
        self._close_reader()
        if self._thread is None or not self._thread.is_alive():
            self._close_active()
        if self._lock_fd is not None:
            try:
                os.close(self._lock_fd)  # closing releases the flock
            except OSError:
                pass
            self._lock_fd = None

    def remove_spares(self) -> None:
        """Delete the spares (a drained orphan slot keeps nothing)."""
        with self._lock:
            spares, self._spares = self._spares, []
        for spare in spares:
            try:
                spare.path.unlink()
                with self._lock:
                    self.disk_bytes -= spare.size
            except OSError:
                pass

    def abandon_after_fork(self) -> None:
        """In a forked child: forget inherited descriptors without touching the parent's lock."""
        for fd in (self._rfd, self._active_fd, self._lock_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._rfd = self._active_fd = self._lock_fd = None


def _settle(waiters: list[tuple[asyncio.Future[None], bool]], failure: BaseException) -> None:
    for waiter, ok in waiters:
        if waiter.done():
            continue
        if ok:
            waiter.set_result(None)
        else:
            waiter.set_exception(failure)


def _try_lock(slot: Path) -> int | None:
    fd = os.open(slot / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def open_journals(
    directory: Path,
    *,
    segment_bytes: int,
    on_durable: Callable[[], None] | None = None,
) -> tuple[Journal, list[Journal]]:
    """Claim a slot of ``directory`` (the first free one) and adopt orphaned slots with leftovers.

    Returns this process's journal (not yet started) and the orphans: slots of
    dead processes that still hold segments, to be drained and then released.
    """
    directory.mkdir(parents=True, exist_ok=True)
    own: Journal | None = None
    orphans: list[Journal] = []
    slots = sorted(
        (p for p in directory.iterdir() if p.is_dir() and p.name.startswith("slot-")),
        key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else 1 << 30,
    )
    for slot in slots:
        has_segments = any(_SEGMENT_NAME.match(p.name) for p in slot.iterdir())
        if own is not None and not has_segments:
            continue
        fd = _try_lock(slot)
        if fd is None:
            continue
        if own is None:
            own = Journal(slot, fd, segment_bytes=segment_bytes, on_durable=on_durable)
        else:
            orphans.append(Journal(slot, fd, segment_bytes=segment_bytes, spares=0, writable=False))
    number = len(slots)
    while own is None:
        slot = directory / f"slot-{number}"
        slot.mkdir(exist_ok=True)
        fd = _try_lock(slot)
        if fd is not None:
            own = Journal(slot, fd, segment_bytes=segment_bytes, on_durable=on_durable)
        number += 1
    return own, orphans
