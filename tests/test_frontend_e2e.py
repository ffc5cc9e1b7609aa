"""The Next.js frontend in a real browser: Debian's Chromium, driven by playwright-core, on the
static export, against the example backend and worker (real processes on PostgreSQL and Redis)
whose telemetry, and the browser's through the backend's tunnel, goes to a real OTLP receiver."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tools import frontend

from chatai_otel.testing.receiver import OTLPReceiver, ReceivedSpan
from conftest import AppProcess, free_port, telemetry_env, wait_until
from support.example import example_apps

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

CLIENT, SERVER, CONSUMER = 3, 2, 5
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.dGhlLXNpZ25hdHVyZS1vZi1hLXRva2Vu"


@dataclass
class Apps:
    receiver: OTLPReceiver
    backend: AppProcess
    page: frontend.FrontendServer

    def drive(self, *steps: dict[str, str]) -> dict[str, object]:
        email = f"browser-{uuid.uuid4().hex[:8]}@example.com"
        login = {"action": "login", "email": email, "password": "correct-horse-battery"}
        return frontend.drive(self.page.url, [{"action": "goto"}, login, *steps])

    def trace_of(self, action: str, services: set[str]) -> list[ReceivedSpan]:
        """The newest trace of the frontend's ``action`` span, once ``services`` are all in it
        and every span's parent has arrived too (a whole tree)."""

        def whole() -> list[ReceivedSpan] | None:
            spans = self.receiver.spans()
            roots = [s for s in spans if s.name == action and _service(s) == "chatai-frontend"]
            if not roots:
                return None
            trace = [s for s in spans if s.trace_id == roots[-1].trace_id]
            ids = {s.span_id for s in trace}
            whole_tree = all(not s.parent_span_id or s.parent_span_id in ids for s in trace)
            return trace if whole_tree and services <= {_service(s) for s in trace} else None

        found: list[ReceivedSpan] = wait_until(whole, timeout=30)
        return found


def _service(span: ReceivedSpan) -> str:
    return str(span.resource.get("service.name"))


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    out = frontend.build()
    tmp = tmp_path_factory.mktemp("frontend")
    page_port = free_port()
    with OTLPReceiver() as receiver:
        backend_env = telemetry_env(
            receiver,
            CHATAI_FRONTEND_ORIGINS=f"http://127.0.0.1:{page_port}",
            CHATAI_SIGNUP_CREDIT="5",
        )
        with (
            example_apps(tmp, backend_env, telemetry_env(receiver)) as backend,
            frontend.FrontendServer(out, backend.url, port=page_port) as page,
        ):
            yield Apps(receiver, backend, page)


def test_a_click_on_send_gives_one_trace_browser_fetch_then_backend_server_then_sql(
    apps: Apps,
) -> None:
    seen = apps.drive(
        {"action": "openDialog"}, {"action": "send", "text": "hi"}, {"action": "flush"}
    )
    assert seen["pageErrors"] == [], seen
    assert str(seen["statuses"][-1]).startswith("sent"), seen  # type: ignore[index]
    trace = apps.trace_of("send message", {"chatai-frontend", "chatai-backend"})
    action = next(s for s in trace if s.name == "send message")
    fetch = next(s for s in trace if s.kind == CLIENT and s.parent_span_id == action.span_id)
    assert _service(fetch) == "chatai-frontend" and fetch.name in ("POST", "HTTP POST")
    server = next(s for s in trace if s.kind == SERVER and _service(s) == "chatai-backend")
    assert server.parent_span_id == fetch.span_id  # traceparent crossed the CORS boundary
    assert server.attributes["http.route"] == "/dialogs/{dialog_id}/messages"
    sql = [
        s
        for s in trace
        if _service(s) == "chatai-backend" and s.attributes.get("db.system.name") == "postgresql"
    ]
    assert sql, [s.name for s in trace]
    # every browser span went through the tunnel: its service name is the configured one
    assert {s.resource["session.id"] for s in trace if _service(s) == "chatai-frontend"}


def test_an_upload_from_the_page_is_one_trace_frontend_backend_worker(apps: Apps) -> None:
    seen = apps.drive({"action": "upload", "name": "notes.txt"}, {"action": "flush"})
    assert "queued as job" in str(seen["statuses"][-1]), seen  # type: ignore[index]
    trace = apps.trace_of("upload document", {"chatai-frontend", "chatai-backend", "chatai-worker"})
    consumer = next(s for s in trace if s.kind == CONSUMER and _service(s) == "chatai-worker")
    ids = {s.span_id for s in trace}
    assert consumer.parent_span_id in ids


def test_an_error_and_a_rejection_in_the_page_are_log_records_with_their_trace(
    apps: Apps,
) -> None:
    marker = uuid.uuid4().hex[:8]
    apps.drive(
        {"action": "throw", "message": f"boom-{marker}"},
        {"action": "reject", "message": f"nope-{marker}"},
        {"action": "flush"},
    )
    records = wait_until(
        lambda: (
            (found := [r for r in apps.receiver.logs() if marker in str(r.body)])
            and len(found) >= 2
            and found
        )
    )
    assert len(records) == 2
    by_kind = {r.attributes["browser.error.kind"]: r for r in records}
    assert set(by_kind) == {"error", "unhandledrejection"}
    for record in records:
        assert record.resource["service.name"] == "chatai-frontend"
        assert record.severity_number == 17 and record.trace_id
        assert record.attributes["exception.type"] == "Error"
        assert record.attributes["session.id"]
        spans = wait_until(
            lambda r=record: [s for s in apps.receiver.spans() if s.trace_id == r.trace_id]
        )
        assert [s.name for s in spans] == ["browser.error"]


def test_page_loads_are_spans_and_a_token_in_the_page_url_is_scrubbed_before_export(
    apps: Apps,
) -> None:
    frontend.drive(
        apps.page.url,
        [{"action": "goto", "path": f"/?access_token={JWT}"}, {"action": "flush"}],
    )

    def page_loads() -> list[ReceivedSpan]:
        return [
            s
            for s in apps.receiver.spans()
            if s.name == "documentFetch" and "access_token" in str(s.attributes.get("url.full"))
        ]

    fetched = wait_until(page_loads)
    assert "access_token=[REDACTED]" in fetched[-1].attributes["url.full"]
    loads = [s for s in apps.receiver.spans() if s.name == "documentLoad"]
    assert loads and all(_service(s) == "chatai-frontend" for s in loads)
    leaked = [s for s in apps.receiver.spans() if JWT in repr(s)]
    assert leaked == []
    assert not [r for r in apps.receiver.logs() if JWT in repr(r)]


def test_the_frontends_own_unit_tests_pass() -> None:
    frontend.ensure_packages()
    done = subprocess.run(
        ["npx", "--no-install", "vitest", "run"],
        cwd=frontend.FRONTEND, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout


def test_the_frontend_build_is_cached_by_its_sources(tmp_path: Path) -> None:
    out = frontend.build()
    assert out.parent.name == frontend.source_key()
    assert (out / "index.html").is_file()
    assert frontend.build() == out  # a second call reuses it
