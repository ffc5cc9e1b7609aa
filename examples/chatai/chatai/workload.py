"""A scripted user session against a running ChatAI backend: every feature, and the failures worth seeing.

``chatai-otel demo`` runs it once with a progress bar; docker-compose runs it in
a loop (``python -m chatai.workload --url http://backend:8000 --loop``) so that
Jaeger and Grafana have something to show. Each step checks the status code it
expects: a 422, a 401, a 403 and a 502 are part of the script (a validation
error, a wrong password, a forbidden action, the payment provider down — a
CRITICAL error with its alert), so is one slow answer from the large model.
Plain HTTP with httpx; this client is not instrumented.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

DOCUMENT = (
    "ChatAI onboarding guide.\n\n"
    + "Operators answer dialogs that the assistant hands off. Each handoff carries the reason "
    "the user gave and the dialog so far. " * 30
)


@dataclass
class Outcome:
    step: str
    method: str
    path: str
    status: int
    expected: int
    seconds: float
    request_id: str | None

    @property
    def ok(self) -> bool:
        return self.status == self.expected


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.outcomes)

    @property
    def unexpected(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


class Workload:
    """One run of the script; :attr:`steps` are (title, callable) in order."""

    def __init__(self, base_url: str, *, client: httpx.Client | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.client = client or httpx.Client(timeout=30.0)
        self.run_id = uuid.uuid4().hex[:8]
        self.report = Report()
        self.tokens: dict[str, str] = {}
        self.ids: dict[str, Any] = {}
        self.steps: list[tuple[str, Callable[[], None]]] = [
            ("health check", self.health),
            ("register a user and an operator", self.register),
            ("registration with a bad e-mail (validation error)", self.bad_registration),
            ("log in", self.log_in),
            ("log in with a wrong password", self.wrong_password),
            ("top up the balance", self.top_up),
            ("open a dialog", self.open_dialog),
            ("chat with the small model", self.chat),
            ("ask the large model (slow request)", self.slow_answer),
            ("upload a document (API -> worker)", self.upload),
            ("wait for the worker", self.wait_for_document),
            ("request a handoff", self.handoff),
            ("accept it without being an operator (forbidden)", self.forbidden_accept),
            ("an operator accepts it", self.accept),
            ("top up with the provider down (CRITICAL + alert)", self.provider_down),
        ]

    # --- plumbing -----------------------------------------------------------------------------

    def call(
        self, step: str, method: str, path: str, expected: int, who: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        started = time.perf_counter()
        response = self.client.request(method, self.base + path, headers=headers, **kw)
        outcome = Outcome(
            step,
            method,
            path,
            response.status_code,
            expected,
            time.perf_counter() - started,
            response.headers.get("x-request-id"),
        )
        self.report.outcomes.append(outcome)
        if not outcome.ok:
            self.report.failures.append(
                f"{step}: {method} {path} answered {response.status_code}, expected {expected}: "
                f"{response.text[:300]}"
            )
        return response

    def run(self, on_step: Callable[[int, int, str], None] | None = None) -> Report:
        """Run every step; ``on_step(done, total, title)`` after each. Stops at the first step
        that raises (a later step would only fail for the same reason)."""
        total = len(self.steps)
        for number, (title, step) in enumerate(self.steps, 1):
            try:
                step()
            except Exception as exc:
                self.report.failures.append(f"{title}: {type(exc).__name__}: {exc}")
                if on_step is not None:
                    on_step(number, total, title)
                break
            if on_step is not None:
                on_step(number, total, title)
        return self.report

    # --- the script ---------------------------------------------------------------------------

    def health(self) -> None:
        self.call("health", "GET", "/health/ready", 200)

    def register(self) -> None:
        for who, role in (("alice", "user"), ("bob", "operator")):
            body = {"email": f"{who}.{self.run_id}@example.com", "password": f"{who}-pw-123456"}
            self.call("register", "POST", "/auth/register", 201, json={**body, "role": role})

    def bad_registration(self) -> None:
        body = {"email": "not-an-email", "password": "short"}
        self.call("register", "POST", "/auth/register", 422, json=body)

    def log_in(self) -> None:
        for who in ("alice", "bob"):
            body = {"email": f"{who}.{self.run_id}@example.com", "password": f"{who}-pw-123456"}
            response = self.call("login", "POST", "/auth/login", 200, json=body)
            self.tokens[who] = response.json()["access_token"]

    def wrong_password(self) -> None:
        body = {"email": f"alice.{self.run_id}@example.com", "password": "guess-guess"}
        self.call("login", "POST", "/auth/login", 401, json=body)

    def top_up(self) -> None:
        body = {"amount": "5.00", "payment_token": "tok_visa"}
        self.call("top up", "POST", "/balance/top-up", 200, "alice", json=body)

    def open_dialog(self) -> None:
        response = self.call(
            "dialog", "POST", "/dialogs", 201, "alice", json={"title": "Billing question"}
        )
        self.ids["dialog"] = response.json()["dialog_id"]

    def chat(self) -> None:
        dialog = self.ids["dialog"]
        for text in (
            "Hello! How do I change my plan?",
            "And what happens to my unused credit?",
            "Can I get an invoice for last month?",
        ):
            self.call(
                "message", "POST", f"/dialogs/{dialog}/messages", 200, "alice", json={"text": text}
            )

    def slow_answer(self) -> None:
        body = {"text": "Explain the whole billing model in detail.", "model": "chatai-local-large"}
        self.call(
            "message", "POST", f"/dialogs/{self.ids['dialog']}/messages", 200, "alice", json=body
        )

    def upload(self) -> None:
        files = {"file": ("onboarding.txt", DOCUMENT.encode(), "text/plain")}
        response = self.call("upload", "POST", "/documents", 202, "alice", files=files)
        self.ids["document"] = response.json()["document_id"]

    def wait_for_document(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        path = f"/documents/{self.ids['document']}"
        while True:
            response = self.client.get(
                self.base + path, headers={"Authorization": f"Bearer {self.tokens['alice']}"}
            )
            if response.status_code == 200 and response.json()["status"] != "queued":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker did not process document {path} in {timeout}s")
            time.sleep(0.1)
        if response.json()["status"] != "processed":
            raise RuntimeError(f"the worker could not process the document: {response.json()}")

    def handoff(self) -> None:
        response = self.call(
            "handoff",
            "POST",
            f"/dialogs/{self.ids['dialog']}/handoff",
            201,
            "alice",
            json={"reason": "wants a refund"},
        )
        self.ids["handoff"] = response.json()["handoff_id"]

    def forbidden_accept(self) -> None:
        self.call("accept", "POST", f"/handoffs/{self.ids['handoff']}/accept", 403, "alice")

    def accept(self) -> None:
        self.call("accept", "POST", f"/handoffs/{self.ids['handoff']}/accept", 200, "bob")

    def provider_down(self) -> None:
        body = {"amount": "20.00", "payment_token": "tok_provider_down"}
        self.call("top up", "POST", "/balance/top-up", 502, "alice", json=body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--loop", action="store_true", help="run again and again")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between runs")
    parser.add_argument("--heartbeat", help="a file touched after every run")
    args = parser.parse_args(argv)
    while True:
        try:
            report = Workload(args.url).run()
            print(
                f"workload: {report.requests} requests, {len(report.failures)} unexpected",
                *report.failures,
                sep="\n  ",
                flush=True,
            )
            failed = bool(report.failures)
        except httpx.HTTPError as exc:
            print(f"workload: backend unreachable: {exc}", flush=True)
            failed = True
        if args.heartbeat:
            pathlib.Path(args.heartbeat).touch()
        if not args.loop:
            return 1 if failed else 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
