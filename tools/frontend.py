"""The example frontend (``examples/frontend``): its Node packages, its static build, a server.

* **Packages**: ``npm ci`` from the lock file, once per lock (a stamp in ``node_modules``);
  only the npm registry is reached.
* **Build**: ``next build`` (a static export) into
  ``~/.cache/chatai-otel/frontend/<hash of the sources and the lock>/out``, so a clean clone
  (as CI uses) reuses it and a changed source builds anew.
* **Serve**: :class:`FrontendServer` serves the export and ``/runtime-config.json`` (where the
  page finds the backend and the telemetry tunnel) on loopback.
* **Drive**: :func:`drive` runs ``e2e/drive.mjs``, which clicks through the page in Debian's
  Chromium with playwright-core (never a downloaded browser).

    python tools/frontend.py build                       build what is missing, print the path
    python tools/frontend.py serve --backend URL [--port 3000]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FRONTEND = ROOT / "examples" / "frontend"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chatai-otel"
CHROMIUM = "/usr/bin/chromium"
SOURCES = ("package.json", "package-lock.json", "next.config.mjs", "tsconfig.json", "src")
NODE_ENV = {"NEXT_TELEMETRY_DISABLED": "1", "npm_config_audit": "false", "npm_config_fund": "false"}


class FrontendError(RuntimeError):
    """A step of the frontend's build failed; the message ends with its output."""


def say(message: str) -> None:
    print(f"dev: {message}", file=sys.stderr, flush=True)


def _run(args: list[str], what: str) -> None:
    if shutil.which(args[0]) is None:
        raise FrontendError(f"{args[0]} is not installed (Node.js 20 with npm)")
    done = subprocess.run(
        args, cwd=FRONTEND, env={**os.environ, **NODE_ENV},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise FrontendError(f"{what} failed:\n{(done.stdout + done.stderr)[-4000:]}")


def _digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(FRONTEND)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def source_key() -> str:
    """The hash of what the build reads: the lock, the configs and ``src/``."""
    files: list[Path] = []
    for name in SOURCES:
        path = FRONTEND / name
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return _digest(files)


def ensure_packages() -> Path:
    """``node_modules`` as the lock file says, installed when the lock changed."""
    modules = FRONTEND / "node_modules"
    stamp = modules / ".chatai-otel-lock"
    wanted = _digest([FRONTEND / "package-lock.json"])
    if not (stamp.is_file() and stamp.read_text() == wanted):
        say("installing the frontend's Node packages (npm ci; once per lock file, about 30 s)")
        _run(["npm", "ci", "--no-audit", "--no-fund"], "npm ci")
        stamp.write_text(wanted)
    return modules


def build() -> Path:
    """The static export's folder, built when the sources changed."""
    out = CACHE / "frontend" / source_key() / "out"
    if (out / "index.html").is_file():
        return out
    ensure_packages()
    started = time.monotonic()
    say("building the frontend (next build; once per source change, about a minute)")
    _run(["npx", "--no-install", "next", "build"], "next build")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix="out-"))
    shutil.copytree(FRONTEND / "out", staging, dirs_exist_ok=True)
    staging.rename(out)
    say(f"built the frontend in {time.monotonic() - started:.0f} s: {out}")
    return out


class _Handler(SimpleHTTPRequestHandler):
    runtime_config: bytes = b"{}"

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/runtime-config.json":
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("cache-control", "no-store")
            self.send_header("content-length", str(len(self.runtime_config)))
            self.end_headers()
            self.wfile.write(self.runtime_config)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FrontendServer:
    """The static export and its ``/runtime-config.json`` on ``127.0.0.1:port`` (0: any)."""

    def __init__(self, out: Path, backend_url: str, *, port: int = 0, **config: str) -> None:
        runtime = {"backendUrl": backend_url, **config}
        handler = type("Handler", (_Handler,), {"runtime_config": json.dumps(runtime).encode()})
        self._server = ThreadingHTTPServer(
            ("127.0.0.1", port), functools.partial(handler, directory=str(out))
        )
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FrontendServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FrontendServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def drive(url: str, steps: list[dict[str, Any]], timeout: float = 120.0) -> dict[str, Any]:
    """Run ``steps`` in headless Chromium on the page at ``url``; what ``e2e/drive.mjs`` saw."""
    ensure_packages()
    scenario = json.dumps({"url": url, "chromium": CHROMIUM, "steps": steps})
    done = subprocess.run(
        ["node", str(FRONTEND / "e2e" / "drive.mjs"), scenario],
        cwd=FRONTEND, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise FrontendError(f"drive.mjs failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build")
    serve = commands.add_parser("serve")
    serve.add_argument("--backend", default="http://127.0.0.1:8000")
    serve.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    try:
        out = build()
    except FrontendError as error:
        print(f"dev: {error}", file=sys.stderr)
        return 1
    if args.command == "build":
        print(out)
        return 0
    with FrontendServer(out, args.backend, port=args.port) as server:
        say(f"the frontend on {server.url} (backend {args.backend}); Ctrl-C stops it")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
