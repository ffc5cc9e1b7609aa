"""A local HTTP server standing in for OpenAI and Telegram in the health tests.

Third-party APIs cannot run here, so this process answers like them on loopback:

* ``GET /v1/models``: 200 with the expected ``Authorization: Bearer <key>``, else 401 (OpenAI);
* ``GET /bot<token>/getMe``: 200 for the expected token, else 401 (Telegram);
* ``GET /status/<code>``: answers with that status;
* ``GET /hang``: accepts the request and never answers (a dependency that hangs).

Usage: ``python standin_api.py PORT`` with ``STANDIN_OPENAI_KEY`` and
``STANDIN_TELEGRAM_TOKEN`` set; it prints ``STANDIN-READY`` once listening.
"""

from __future__ import annotations

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OPENAI_KEY = os.environ.get("STANDIN_OPENAI_KEY", "")
TELEGRAM_TOKEN = os.environ.get("STANDIN_TELEGRAM_TOKEN", "")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # the access log of this stand-in would hold the tokens; keep it quiet

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/hang":
            time.sleep(600)
            return
        if path == "/v1/models":
            ok = self.headers.get("Authorization") == f"Bearer {OPENAI_KEY}"
            self._reply(200 if ok else 401, {"object": "list", "data": []} if ok else {})
            return
        if path.startswith("/bot") and path.endswith("/getMe"):
            token = path[len("/bot") : -len("/getMe")]
            ok = token == TELEGRAM_TOKEN
            self._reply(200 if ok else 401, {"ok": ok})
            return
        if path.startswith("/status/"):
            self._reply(int(path.rsplit("/", 1)[1]), {})
            return
        self._reply(404, {})

    def _reply(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print("STANDIN-READY", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
