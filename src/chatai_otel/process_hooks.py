"""What runs around a fork, at exit and on SIGTERM, registered in one place.

Queues, writers, locks and counters of this package must be fresh in a forked child
(gunicorn ``--preload``, multiprocessing) and flushed at exit. Each registers here rather
than with ``os.register_at_fork``/``atexit`` itself, so the order is written down once:

* **after fork, in the child**: callbacks run in registration order, all of them before
  the OpenTelemetry SDK's own fork hooks (ours are registered with the OS when this module
  is imported, before any SDK processor or reader exists), so e.g. the metric reader's
  export lock is fresh before the SDK restarts its ticker thread;
* **after fork, in the child, after the SDK** (:func:`on_fork_after_sdk`): for what must
  see the SDK's own child state (newer SDKs give their providers a fresh Resource in the
  child; our one ``service.instance.id`` must go on it afterwards): a second dispatcher,
  registered with the OS when the first such hook is added, once the providers exist;
* **before fork** (and **after fork, in the parent**): in registration order;
* **at exit**: in reverse registration order, like ``atexit``; :func:`at_thread_shutdown`
  for what must also run when a multiprocessing child ends with ``os._exit``.

Hooks of an object are held by a weak reference: an object that is gone is skipped and
dropped. A hook that raises never breaks the fork or the exit.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = [
    "at_exit",
    "at_thread_shutdown",
    "on_fork",
    "on_fork_after_sdk",
    "on_fork_of",
    "on_sigterm",
    "run_exit_hooks",
]

_Hook = Callable[[], object]
_lock = threading.Lock()
_before: list[Callable[[], _Hook | None]] = []
_in_parent: list[Callable[[], _Hook | None]] = []
_in_child: list[Callable[[], _Hook | None]] = []
_exit: list[_Hook] = []
_in_child_late: list[Callable[[], _Hook | None]] = []


def _strong(hook: _Hook) -> Callable[[], _Hook | None]:
    return lambda: hook


def _weak(owner: Any, method: str) -> Callable[[], _Hook | None]:
    ref = weakref.ref(owner)

    def resolve() -> _Hook | None:
        target = ref()
        return None if target is None else getattr(target, method)

    return resolve


def on_fork(
    *,
    before: _Hook | None = None,
    after_in_parent: _Hook | None = None,
    after_in_child: _Hook | None = None,
) -> None:
    """Functions to run around every fork (module-level state)."""
    with _lock:
        if before is not None:
            _before.append(_strong(before))
        if after_in_parent is not None:
            _in_parent.append(_strong(after_in_parent))
        if after_in_child is not None:
            _in_child.append(_strong(after_in_child))


def on_fork_of(
    owner: object,
    *,
    before: str | None = None,
    after_in_parent: str | None = None,
    after_in_child: str | None = None,
) -> None:
    """Methods of ``owner`` to run around every fork while ``owner`` is alive."""
    with _lock:
        if before is not None:
            _before.append(_weak(owner, before))
        if after_in_parent is not None:
            _in_parent.append(_weak(owner, after_in_parent))
        if after_in_child is not None:
            _in_child.append(_weak(owner, after_in_child))


def on_fork_after_sdk(after_in_child: _Hook) -> None:
    """A function to run in a forked child after the hooks the SDK registered so far."""
    with _lock:
        first = not _in_child_late
        _in_child_late.append(_strong(after_in_child))
    if first and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=lambda: _run(_in_child_late))


def at_exit(hook: _Hook) -> None:
    """A function to run once at interpreter exit."""
    with _lock:
        _exit.append(hook)


def _run(hooks: list[Callable[[], _Hook | None]]) -> None:
    with _lock:
        snapshot = list(hooks)
    dead: list[Callable[[], _Hook | None]] = []
    for resolve in snapshot:
        hook = resolve()
        if hook is None:
            dead.append(resolve)
            continue
        try:
            hook()
        except Exception:  # a fork hook never breaks the fork
            pass
    if dead:
        with _lock:
            hooks[:] = [resolve for resolve in hooks if resolve not in dead]


def _before_fork() -> None:
    _run(_before)


def _after_fork_in_parent() -> None:
    _run(_in_parent)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    _run(_in_child)


def at_thread_shutdown(hook: _Hook) -> None:
    """A function to run when the interpreter joins its threads at shutdown, before atexit:
    a multiprocessing child ends with ``threading._shutdown()`` and ``os._exit()``."""
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(hook)


_Handler = Callable[[int, FrameType | None], Any] | int | None


def on_sigterm(flush: _Hook) -> None:
    """Run ``flush`` on SIGTERM, then what the signal would have done without us (the
    previous handler, or dying of it): uvicorn and gunicorn re-raise it, atexit never runs.
    Only from the main thread, where signal handlers can be set; atexit still flushes."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        previous: _Handler = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):
        return

    def flush_then_continue(signum: int, frame: FrameType | None) -> None:
        try:
            flush()
        except BaseException:
            pass
        if callable(previous):
            previous(signum, frame)
            return
        if previous == signal.SIG_IGN:
            return
        signal.signal(signum, signal.SIG_DFL)  # die of SIGTERM, as without us
        os.kill(os.getpid(), signum)

    try:
        signal.signal(signal.SIGTERM, flush_then_continue)
    except (ValueError, OSError):
        pass


_exited = False


def run_exit_hooks() -> None:
    """Run the exit hooks once (atexit and the threading shutdown both call this)."""
    global _exited
    if _exited:
        return
    _exited = True
    for hook in reversed(list(_exit)):
        try:
            hook()
        except Exception:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
atexit.register(run_exit_hooks)
