"""The journal on its own: order across segments, torn tails, recycled files, group commit."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from chatai_otel.store import journal as journal_module
from chatai_otel.store.journal import HEADER, Journal, open_journals

SEGMENT = 4096


def open_own(directory: Path, segment: int = SEGMENT) -> Journal:
    journal, orphans = open_journals(directory, segment_bytes=segment)
    assert orphans == []
    return journal


def read_all(journal: Journal) -> list[bytes]:
    out: list[bytes] = []
    while True:
        batch = journal.read(1000)
        if not batch:
            return out
        out.extend(batch)


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("slot-*/[0-9]*-*.journal"))


async def append_durably(journal: Journal, payloads: list[bytes]) -> None:
    loop = asyncio.get_running_loop()
    waiters = []
    for payload in payloads:
        waiter: asyncio.Future[None] = loop.create_future()
        journal.append(payload, waiter)
        waiters.append(waiter)
    await asyncio.gather(*waiters)


async def test_records_come_back_in_order_across_many_segments(tmp_path: Path) -> None:
    journal = open_own(tmp_path).start()
    payloads = [f"record-{i:05d}-".encode() * 10 for i in range(500)]  # ~70 KiB: many segments
    await append_durably(journal, payloads)
    assert len(segment_files(tmp_path)) > 10
    assert read_all(journal) == payloads
    journal.commit()
    assert len(segment_files(tmp_path)) == 1  # only the active one is left; the others retired
    assert journal.committed == journal.durable == 500
    assert journal.close(5)
    journal.retire_all()
    journal.release()
    assert segment_files(tmp_path) == []


async def test_one_fsync_covers_many_concurrent_records(tmp_path: Path) -> None:
    journal = open_own(tmp_path, 1 << 20).start()
    syncs = 0
    real = os.fdatasync

    def counting(fd: int) -> None:
        nonlocal syncs
        syncs += 1
        real(fd)

    os.fdatasync = counting  # type: ignore[assignment]
    try:
        await append_durably(journal, [b"x" * 100] * 2000)
    finally:
        os.fdatasync = real  # type: ignore[assignment]
    assert 1 <= syncs < 200, syncs
    journal.close(5)
    journal.release()


async def test_a_torn_tail_ends_the_leftover_and_earlier_records_survive(tmp_path: Path) -> None:
    journal = open_own(tmp_path, 1 << 20).start()
    payloads = [f"r{i:03d}".encode() * 20 for i in range(50)]  # all frames the same size
    await append_durably(journal, payloads)
    journal.close(5)
    journal.release()  # as after a crash: nothing retired
    (path,) = segment_files(tmp_path)
    frame = HEADER.size + len(payloads[0])
    with open(path, "r+b") as file:  # the last frame half written
        file.seek(49 * frame + frame // 2)
        file.write(b"\xff" * 7)
    again = open_own(tmp_path, 1 << 20)
    assert again.leftover
    assert read_all(again) == payloads[:49]
    again.release()


async def test_stale_frames_of_a_recycled_file_are_never_read(tmp_path: Path) -> None:
    journal = open_own(tmp_path).start()
    old = [f"old-{i:04d}".encode() * 20 for i in range(200)]
    await append_durably(journal, old)
    read_all(journal)
    journal.commit()  # retired segments: two become spares, full of well-formed old frames
    assert len(list(tmp_path.glob("slot-*/*.spare"))) == 2
    (active,) = segment_files(tmp_path)
    new = [f"new-{i:04d}".encode() * 20 for i in range(60)]  # over two segments: uses both spares
    await append_durably(journal, new)
    assert list(tmp_path.glob("slot-*/*.spare")) == []
    journal.close(5)
    journal.release()  # a crash: the next start scans leftovers up to their first invalid frame
    again = open_own(tmp_path)
    replayed = read_all(again)
    # Exactly: the old records still in the segment that was active, then every new one;
    # none of the stale frames of the recycled file.
    assert replayed[-len(new) :] == new
    tail = replayed[: -len(new)]
    assert tail == old[len(old) - len(tail) :]
    assert 0 < len(tail) < SEGMENT // (HEADER.size + len(old[0])) + 1
    assert len(segment_files(tmp_path)) >= 2 and active in segment_files(tmp_path)
    again.release()


async def test_a_frame_larger_than_a_segment_is_kept_whole(tmp_path: Path) -> None:
    journal = open_own(tmp_path).start()
    big = os.urandom(3 * SEGMENT)
    payloads = [b"small-1", big, b"small-2"]
    await append_durably(journal, payloads)
    assert read_all(journal) == payloads
    journal.close(5)
    journal.release()
    again = open_own(tmp_path)
    assert read_all(again) == payloads  # and again from the leftovers after a restart
    again.release()


def test_slots_are_exclusive_and_orphans_with_leftovers_are_adopted(tmp_path: Path) -> None:
    first, _ = open_journals(tmp_path, segment_bytes=SEGMENT)
    second, orphans = open_journals(tmp_path, segment_bytes=SEGMENT)
    assert (first.slot.name, second.slot.name, orphans) == ("slot-0", "slot-1", [])
    (second.slot / f"{1:020d}-{7:016x}.journal").write_bytes(bytes(SEGMENT))
    second.release()
    third, orphans = open_journals(tmp_path, segment_bytes=SEGMENT)
    assert third.slot.name == "slot-1"  # the first free slot: its leftovers are its own
    third.release()
    first.release()
    fourth, orphans = open_journals(tmp_path, segment_bytes=SEGMENT)
    assert fourth.slot.name == "slot-0"
    assert [o.slot.name for o in orphans] == ["slot-1"]
    for journal in (fourth, *orphans):
        journal.release()


async def test_records_past_the_memory_handoff_bound_are_read_from_disk_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "_HANDOFF_BYTES", 2000)
    journal = open_own(tmp_path).start()
    sources = {"memory": 0, "disk": 0}
    take, read_disk = journal._take_handoff, journal._read_segment

    def counting_take(*args: Any) -> bool:
        taken = take(*args)
        sources["memory"] += taken
        return taken

    def counting_disk(*args: Any) -> None:
        sources["disk"] += 1
        read_disk(*args)

    monkeypatch.setattr(journal, "_take_handoff", counting_take)
    monkeypatch.setattr(journal, "_read_segment", counting_disk)
    payloads = [f"rec-{i:05d}".encode() * 8 for i in range(400)]
    got: list[bytes] = []
    for start in range(0, 400, 10):  # separate group commits of 880 bytes: two fit the bound
        await append_durably(journal, payloads[start : start + 10])
        if start % 50 == 40:
            got.extend(journal.read(37))  # the reader frees the bound now and then
    while batch := journal.read(37):
        got.extend(batch)
    assert got == payloads
    assert sources["memory"] > 0 and sources["disk"] > 0, sources
    journal.commit()
    assert journal.committed == 400
    journal.close(5)
    journal.release()


async def test_a_spare_in_use_whose_rename_was_lost_is_still_replayed(tmp_path: Path) -> None:
    journal = open_own(tmp_path).start()
    first = [f"a-{i:04d}".encode() * 20 for i in range(30)]
    await append_durably(journal, first)
    read_all(journal)
    journal.commit()
    journal.prepare_spare(budget=1 << 30)
    (spare,) = tmp_path.glob("slot-*/*.spare")
    more = [f"b-{i:04d}".encode() * 20 for i in range(40)]  # fills the active, rolls onto the spare
    await append_durably(journal, more)
    journal.close(5)
    journal.release()
    in_use = spare.with_suffix(".journal")
    assert in_use.exists()
    in_use.rename(spare)  # the crash took the (unsynced, cosmetic) rename with it
    again = open_own(tmp_path)
    assert read_all(again)[-len(more) :] == more
    again.release()
