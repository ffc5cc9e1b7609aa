"""The export worker's batches (chatai_otel.export.queue): encoded in slices, between which
the worker lets the request threads run."""

from __future__ import annotations

import pytest

from chatai_otel.export import queue


@pytest.mark.parametrize("size", [0, 1, queue.GIL_SLICE, queue.GIL_SLICE + 1, 512])
def test_a_batch_is_handed_to_the_encoder_whole_and_in_order(size, monkeypatch):
    releases = []
    monkeypatch.setattr(queue, "_let_others_run", lambda: releases.append(True))
    batch = list(range(size))
    assert list(queue._yielding_the_gil(batch, lambda: False)) == batch
    # one release between two slices, none before the first or after the last
    assert len(releases) == max(0, -(-size // queue.GIL_SLICE) - 1)


def test_a_queue_about_to_overflow_is_drained_without_pauses(monkeypatch):
    releases = []
    monkeypatch.setattr(queue, "_let_others_run", lambda: releases.append(True))
    assert len(list(queue._yielding_the_gil(list(range(512)), lambda: True))) == 512
    assert releases == []


def test_the_release_gives_up_the_cpu_too_where_the_platform_can():
    import os

    if hasattr(os, "sched_yield"):
        assert queue._let_others_run is os.sched_yield
