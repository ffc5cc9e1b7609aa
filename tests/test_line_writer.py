"""Log lines for the process's stdout, written by a background thread (chatai_otel.logs.line_writer).

Real processes and real pipes: what arrives on the other end of the pipe, in what order,
and when. No line may be lost at a normal exit, at SIGTERM, or at the end of a
multiprocessing child (which ends with os._exit, past atexit).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from chatai_otel.config import ConfigError, load_settings

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)


def run_child(code: str, **env: str) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHATAI_"))}
    environment.update(
        OTEL_SDK_DISABLED="true", CHATAI_OTEL_LOG_FORMAT="json", PYTHONUNBUFFERED="1", **env
    )
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def messages(stdout: str) -> list[str]:
    return [json.loads(line)["message"] for line in stdout.splitlines() if line.startswith("{")]


def read_line(stream, seconds: float) -> str | None:
    """One line from ``stream`` within ``seconds``, or None."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    return result[0] if result else None


def messages_while_running(code: str, count: int, interval: str) -> list[str]:
    """The messages of the first ``count`` lines a still-running child writes (20 s each)."""
    child = run_child(code, CHATAI_OTEL_LOG_STDOUT_INTERVAL=interval)
    try:
        assert child.stdout is not None
        lines = [read_line(child.stdout, 20) for _ in range(count)]
        return [json.loads(line)["message"] for line in lines if line]
    finally:
        child.kill()
        child.communicate(timeout=30)


def test_every_line_arrives_in_order_at_a_normal_exit():
    child = run_child(
        """
        import asyncio
        import chatai_otel
        chatai_otel.configure()
        log = chatai_otel.get_logger("unit")

        async def main():
            for n in range(5000):
                log.info(f"line-{n}")

        asyncio.run(main())
        """,
        CHATAI_OTEL_LOG_STDOUT_INTERVAL="10",  # nothing would leave before exit but for the flush
    )
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    assert messages(stdout) == [f"line-{n}" for n in range(5000)]


def test_lines_before_sigterm_are_written_by_the_sigterm_flush():
    child = run_child(
        """
        import asyncio, sys
        import chatai_otel
        chatai_otel.configure()
        log = chatai_otel.get_logger("unit")

        async def main():
            for n in range(100):
                log.info(f"line-{n}")
            print("READY", file=sys.stderr, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
        """,
        CHATAI_OTEL_LOG_STDOUT_INTERVAL="10",
    )
    assert child.stderr is not None
    assert read_line(child.stderr, 30) == "READY\n"
    child.send_signal(signal.SIGTERM)
    stdout, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGTERM  # died of the signal, as without us
    assert messages(stdout) == [f"line-{n}" for n in range(100)]


def test_a_multiprocessing_child_writes_its_lines_before_it_ends():
    child = run_child(
        """
        import asyncio, multiprocessing
        import chatai_otel

        async def log_lines():
            log = chatai_otel.get_logger("unit")
            for n in range(50):
                log.info(f"child-{n}")

        def work():
            asyncio.run(log_lines())

        if __name__ == "__main__":
            chatai_otel.configure()
            asyncio.run(asyncio.sleep(0))
            chatai_otel.get_logger("unit").info("parent")
            process = multiprocessing.get_context("fork").Process(target=work)
            process.start()
            process.join()
            assert process.exitcode == 0
        """,
        CHATAI_OTEL_LOG_STDOUT_INTERVAL="10",
    )
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    lines = messages(stdout)
    assert [m for m in lines if m.startswith("child-")] == [f"child-{n}" for n in range(50)]
    assert lines.count("parent") == 1  # written once, by the parent, not again by the child


def test_an_error_line_is_written_at_once_after_every_line_before_it():
    code = """
        import asyncio
        import chatai_otel
        chatai_otel.configure()
        log = chatai_otel.get_logger("unit")

        async def main():
            log.info("first")
            log.info("second")
            log.error("failure")
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    # long before the 10 s interval (and the exit) the error line and those before it are out
    assert messages_while_running(code, 3, interval="10") == ["first", "second", "failure"]


def test_the_loop_writes_a_waiting_line_after_the_interval():
    code = """
        import asyncio
        import chatai_otel
        chatai_otel.configure()

        async def main():
            chatai_otel.get_logger("unit").info("alone")
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    # written by the loop's callback, not at exit
    assert messages_while_running(code, 1, interval="0.2") == ["alone"]


def test_lines_left_when_the_loop_stopped_are_written_by_the_watcher():
    code = """
        import asyncio, time
        import chatai_otel
        chatai_otel.configure()

        async def main():
            chatai_otel.get_logger("unit").info("stranded")

        asyncio.run(main())  # returns before the loop's callback could run
        time.sleep(60)
        """
    assert messages_while_running(code, 1, interval="5") == ["stranded"]


@pytest.mark.parametrize("interval", ["0", "10"])
def test_a_line_from_a_thread_with_no_loop_is_written_at_once(interval):
    code = """
        import time
        import chatai_otel
        chatai_otel.configure()
        chatai_otel.get_logger("unit").info("at once")
        time.sleep(60)
        """
    assert messages_while_running(code, 1, interval=interval) == ["at once"]


def test_log_lines_never_land_inside_a_print_of_the_loop_thread():
    # PYTHONUNBUFFERED: print() writes "TAG", " ", the value and "\n" one by one; a batch
    # of log lines written from another thread between them would break the tagged line.
    child = run_child(
        """
        import asyncio
        import chatai_otel
        chatai_otel.configure()
        log = chatai_otel.get_logger("unit")

        async def main():
            for n in range(20000):
                log.info("work", n=n)
                print("TAG", f"value-{n}", flush=True)
                if n % 100 == 0:
                    await asyncio.sleep(0.002)  # the loop's flush callbacks run here

        asyncio.run(main())
        """,
        CHATAI_OTEL_LOG_STDOUT_INTERVAL="0.001",  # batches due all the time
    )
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 0, stderr
    tagged = [line for line in stdout.splitlines() if not line.startswith("{")]
    assert tagged == [f"TAG value-{n}" for n in range(20000)]
    numbers = [json.loads(line)["n"] for line in stdout.splitlines() if line.startswith("{")]
    assert numbers == list(range(20000))


def test_a_signal_handler_that_flushes_never_deadlocks_with_other_writers():
    # The loop thread appends, a thread with no loop writes at once, and a signal handler on
    # the loop thread (as the SIGTERM hook: shutdown, then flush) flushes, thousands of times.
    child = run_child(
        """
        import asyncio, os, signal, sys, threading
        from chatai_otel.logs.line_writer import flush_all, stdout_writer

        sys.__stdout__ = open(os.devnull, "w")
        writer = stdout_writer(0.05)
        handled = threading.Event()
        stop = False

        def on_signal(signum, frame):
            flush_all()
            handled.set()

        signal.signal(signal.SIGUSR1, on_signal)

        def no_loop_thread():
            while not stop:
                writer.write("sync line\\n")

        def signaller():
            global stop
            for n in range(5000):
                handled.clear()
                os.kill(os.getpid(), signal.SIGUSR1)
                if not handled.wait(10):
                    print(f"DEADLOCK after {n} signals", file=sys.stderr, flush=True)
                    os._exit(3)
            stop = True

        async def main():
            while not stop:
                for _ in range(200):
                    writer.write("loop line\\n")
                await asyncio.sleep(0)

        threading.Thread(target=no_loop_thread, daemon=True).start()
        threading.Thread(target=signaller, daemon=True).start()
        asyncio.run(main())
        """
    )
    _, stderr = child.communicate(timeout=300)
    assert child.returncode == 0, stderr


def test_a_signal_while_a_full_pipe_holds_a_batch_loses_no_line():
    # Python's own stdout drops the rest of a large write that a signal interrupts on a
    # full pipe; the writer sends pieces a signal cannot cut, and all of them.
    child = run_child(
        """
        import asyncio, signal, time
        import chatai_otel
        from chatai_otel.logs.line_writer import flush_all
        chatai_otel.configure()
        log = chatai_otel.get_logger("unit")

        def on_signal(signum, frame):
            log.warning("handler line")
            flush_all()

        signal.signal(signal.SIGUSR1, on_signal)

        async def main():
            n, started = 0, time.monotonic()
            while time.monotonic() - started < 3:
                for _ in range(20):
                    log.info("loop line", n=n, pad="x" * 150)
                    n += 1
                await asyncio.sleep(0.01)
            log.info("last line", total=n)

        asyncio.run(main())
        """,
        CHATAI_OTEL_LOG_STDOUT_INTERVAL="0.05",
    )
    time.sleep(1.0)  # nobody reads: the pipe fills and the child's write blocks
    child.send_signal(signal.SIGUSR1)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    records = [json.loads(line) for line in stdout.splitlines()]  # every line whole JSON
    total = next(r["total"] for r in records if r["message"] == "last line")
    numbers = [r["n"] for r in records if r["message"] == "loop line"]
    assert numbers == list(range(total))
    assert [r["message"] for r in records].count("handler line") == 1


def test_one_writer_and_one_thread_however_often_logging_is_configured():
    child = run_child(
        """
        import asyncio, threading
        import chatai_otel
        from chatai_otel.config import load_settings
        from chatai_otel.logs.configure import configure_logging

        async def main():
            for n in range(20):
                configure_logging(load_settings({"CHATAI_OTEL_LOG_FORMAT": "json"}), None)
                chatai_otel.get_logger("unit").info(f"config-{n}")
            await asyncio.sleep(0.2)

        asyncio.run(main())
        names = [t.name for t in threading.enumerate()]
        print("THREADS", names.count("chatai-otel-stdout"), flush=True)
        """
    )
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    assert "THREADS 1" in stdout
    assert messages(stdout) == [f"config-{n}" for n in range(20)]


@pytest.mark.parametrize("raw", ["-1", "11", "soon", "nan"])
def test_a_bad_stdout_interval_is_a_clear_config_error(raw):
    with pytest.raises(ConfigError) as error:
        load_settings({"CHATAI_OTEL_LOG_STDOUT_INTERVAL": raw})
    assert "CHATAI_OTEL_LOG_STDOUT_INTERVAL" in str(error.value)
    assert "between 0 and 10" in str(error.value)


def test_lines_to_a_pipe_leave_in_writes_of_up_to_pipe_buf_bytes():
    """Nine 400-byte access lines fit in one atomic pipe write (4096 bytes on Linux), not
    nine: one system call for the batch, and still no line cut between two writes."""
    import select

    from chatai_otel.logs.line_writer import ATOMIC_WRITE, _pieces

    assert getattr(select, "PIPE_BUF", 512) == ATOMIC_WRITE
    lines = [f"{n:03d}" + "x" * 396 + "\n" for n in range(25)]
    pieces = _pieces(lines, "utf-8")
    assert b"".join(pieces) == "".join(lines).encode()
    assert all(len(piece) <= ATOMIC_WRITE for piece in pieces)
    assert all(piece.endswith(b"\n") for piece in pieces)
    assert len(pieces) == -(-25 // (ATOMIC_WRITE // 400))


def test_what_kind_of_file_stdout_is_is_asked_once_in_a_while_not_for_every_line(
    tmp_path, monkeypatch
):
    """Lines from a thread with no loop are written one by one: the regular-file check
    (pieces for a pipe, one write for a file) is not a second system call for each."""
    from chatai_otel.logs import line_writer

    asked: list[int] = []
    real_fstat = os.fstat
    monkeypatch.setattr(line_writer.os, "fstat", lambda fd: asked.append(fd) or real_fstat(fd))
    monkeypatch.setattr(line_writer, "STREAM_KIND_FOR", 0.5)
    read_end, write_end = os.pipe()
    with open(tmp_path / "out", "w") as file_stream, os.fdopen(write_end, "w") as pipe_stream:
        current = [file_stream]
        writer = line_writer.LineWriter(lambda: current[0], interval=0.05)
        for n in range(100):
            writer.write(f"line {n}\n")  # no loop on this thread: each written at once
        assert asked == [file_stream.fileno()]
        current[0] = pipe_stream  # stdout now another descriptor: asked again at once
        writer.write("to the pipe\n")
        assert asked == [file_stream.fileno(), write_end]
        assert os.read(read_end, 100) == b"to the pipe\n"
        time.sleep(0.6)  # and again once STREAM_KIND_FOR has passed
        writer.write("later\n")
        assert asked == [file_stream.fileno(), write_end, write_end]
        assert os.read(read_end, 100) == b"later\n"
    os.close(read_end)
    assert (tmp_path / "out").read_text() == "".join(f"line {n}\n" for n in range(100))
