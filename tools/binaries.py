"""The stack's Go programs, built once from their Go modules and cached outside the work tree.

* ``otelcol-chatai``: our OpenTelemetry Collector distribution, from
  ``collector/builder-config.yaml`` with the OpenTelemetry Collector Builder
  (ocb). Cached under ``~/.cache/chatai-otel/otelcol-chatai/<hash of the manifest>/``, so a
  clean clone (as CI uses) reuses it and a changed manifest builds anew.
* ``jaeger``: Jaeger v2 from ``github.com/jaegertracing/jaeger/cmd/jaeger`` at
  :data:`JAEGER_MODULE_VERSION`, cached under ``~/.cache/chatai-otel/jaeger/<version>/``.

Go's module and build caches (``~/go/pkg/mod``, ``~/.cache/go-build``) are outside the tree
too, so a rebuild after a manifest change only compiles what changed.

ocb's own ``go mod download`` step fetches every module of the graph, windows-only ones
included, and the Go module proxy here does not serve all of them; so ocb only generates the
sources (``--skip-get-modules --skip-compilation``) and the module is resolved with
``go get`` + ``go mod tidy`` and compiled with ``go build``, which fetch only what a Linux
build imports. ``collector/otelcol.Dockerfile`` does the same steps.

    python tools/binaries.py [otelcol|jaeger|all]     build what is missing, print the paths
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "collector" / "builder-config.yaml"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chatai-otel"
# Jaeger's Go module is tagged v1.x beside its v2.x releases: v1.75.0 is Jaeger v2.12.0,
# the newest release the Go module proxy serves here (docker-compose.yml pins the same).
JAEGER_MODULE_VERSION = "v1.75.0"
JAEGER_RELEASE = "v2.12.0"
JAEGER_PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"


class BuildError(RuntimeError):
    """A build step failed; the message says which and ends with its output."""


def say(message: str) -> None:
    print(f"dev: {message}", file=sys.stderr, flush=True)


def _go(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    if shutil.which("go") is None:
        raise BuildError("Go is not installed (Go 1.26 from go.dev, or Debian's golang-go)")
    done = subprocess.run(
        ["go", *args], cwd=cwd, env={**os.environ, **(env or {})},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise BuildError(f"go {' '.join(args[:3])} failed:\n{done.stderr[-4000:]}")


def manifest_version() -> str:
    """The collector release the manifest pins (``dist.version``)."""
    match = re.search(r"^\s+version:\s*([0-9.]+)\s*$", MANIFEST.read_text(), re.MULTILINE)
    if match is None:
        raise BuildError(f"{MANIFEST} has no dist.version")
    return match.group(1)


def manifest_modules() -> list[str]:
    """``module@version`` of every component the manifest lists."""
    return [
        f"{module}@{version}"
        for module, version in re.findall(
            r"^\s*-\s*gomod:\s*(\S+)\s+(\S+)\s*$", MANIFEST.read_text(), re.MULTILINE
        )
    ]


def otelcol_path() -> Path:
    """Keyed by the manifest without its comments: editing a comment builds nothing."""
    lines = MANIFEST.read_text().splitlines()
    content = "\n".join(line.rstrip() for line in lines if line.split("#", 1)[0].strip())
    digest = hashlib.sha256(content.encode()).hexdigest()[:16]
    return CACHE / "otelcol-chatai" / digest / "otelcol-chatai"


def jaeger_path() -> Path:
    return CACHE / "jaeger" / JAEGER_MODULE_VERSION / "jaeger"


def _builder(version: str) -> Path:
    """The OpenTelemetry Collector Builder of the manifest's release (installed once)."""
    binary = CACHE / "tools" / f"builder-v{version}" / "builder"
    if not binary.exists():
        _go(
            ["install", f"go.opentelemetry.io/collector/cmd/builder@v{version}"],
            ROOT,
            {"GOBIN": str(binary.parent)},
        )
    return binary


def build_otelcol() -> Path:
    """otelcol-chatai for the current manifest (built only when it is not cached yet)."""
    target = otelcol_path()
    if target.exists():
        return target
    started = time.monotonic()
    say(f"building otelcol-chatai from {MANIFEST.relative_to(ROOT)} (once, a few minutes)")
    version = manifest_version()
    builder = _builder(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        source = Path(work) / "build"
        config = Path(work) / "builder-config.yaml"
        config.write_text(re.sub(r"output_path:.*", f"output_path: {source}", MANIFEST.read_text()))
        done = subprocess.run(
            [str(builder), "--config", str(config), "--skip-get-modules", "--skip-compilation"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise BuildError(f"ocb failed:\n{done.stderr[-4000:]}")
        _go(["mod", "init", "otelcol-chatai"], source)
        _go(
            ["get", *manifest_modules(), f"go.opentelemetry.io/collector/otelcol@v{version}"],
            source,
        )
        _go(["mod", "tidy"], source)
        partial = target.with_suffix(".partial")
        _go(["build", "-trimpath", "-ldflags=-s -w", "-o", str(partial), "."], source)
        partial.rename(target)
    say(f"built {target} in {time.monotonic() - started:.0f} s")
    return target


def build_jaeger() -> Path:
    """Jaeger v2 at :data:`JAEGER_MODULE_VERSION` (built only when it is not cached yet)."""
    target = jaeger_path()
    if target.exists():
        return target
    started = time.monotonic()
    say(f"building Jaeger {JAEGER_RELEASE} from its Go module (once, a few minutes)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        source = Path(work)
        _go(["mod", "init", "jaeger-build"], source)
        _go(["get", "-tool", f"{JAEGER_PACKAGE}@{JAEGER_MODULE_VERSION}"], source)
        partial = target.with_suffix(".partial")
        version_flag = (
            f"-X github.com/jaegertracing/jaeger/internal/version.latestVersion={JAEGER_RELEASE}"
        )
        _go(
            ["build", "-trimpath", f"-ldflags=-s -w {version_flag}", "-o", str(partial),
             JAEGER_PACKAGE],
            source,
        )  # fmt: skip
        partial.rename(target)
    say(f"built {target} in {time.monotonic() - started:.0f} s")
    return target


def main(argv: list[str]) -> int:
    which = argv[0] if argv else "all"
    if which not in ("otelcol", "jaeger", "all"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if which in ("otelcol", "all"):
            print(build_otelcol())
        if which in ("jaeger", "all"):
            print(build_jaeger())
    except BuildError as error:
        say(str(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
