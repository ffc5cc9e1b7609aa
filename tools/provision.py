"""What ``./dev test`` and ``./dev bench`` need on the machine: found, installed, started.

``./dev`` runs this before anything else (``python3 tools/provision.py test``), with the
system Python and nothing but the standard library, so a fresh machine gets one answer
before a virtualenv is built or a single test runs:

* everything is there: exit 0 at once (a second run costs a few port probes);
* something is missing and this process may install it (root, ``apt-get``): one
  ``apt-get install`` of every missing Debian package, then the services are started
  (PostgreSQL with trust auth on 127.0.0.1 and the database ``test``; Redis without
  persistence), exit 0;
* otherwise: one list of what is missing and the command that installs it, exit 3.

Services already answering on their port are used as they are.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

EXIT_MISSING = 3
NOT_ON_PATH, NOT_INSTALLED = "not on PATH", "not installed"
ABSENT = (NOT_ON_PATH, NOT_INSTALLED)
HOST = "127.0.0.1"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chatai-otel"
PG_HBA_LINES = (
    "host    all    all    127.0.0.1/32    trust  # chatai-otel ./dev test",
    "host    all    all    ::1/128         trust  # chatai-otel ./dev test",
)


def say(message: str) -> None:
    print(f"dev: {message}", file=sys.stderr, flush=True)


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(port: int, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_open(port):
            return True
        time.sleep(0.2)
    return False


def run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True)
class Command:
    """A program the suite runs, from a Debian package."""

    name: str
    package: str
    why: str

    def present(self) -> bool:
        return shutil.which(self.name) is not None

    def describe(self) -> str:
        if not self.package:
            return f"{self.name} ({self.why})"
        return f"{self.name} ({self.why}; Debian package {self.package})"


@dataclass(frozen=True)
class Service:
    """A server on loopback; ``start`` brings up an installed but stopped one."""

    name: str
    port: int
    package: str
    installed: Callable[[], bool]
    start: Callable[[Service], str | None]  # None when started, else why not
    ready: Callable[[Service], str | None]  # None when usable as it is, else what is wrong

    def present(self) -> bool:
        return port_open(self.port)

    def describe(self) -> str:
        return f"{self.name} on {HOST}:{self.port} (Debian package {self.package})"


# --- PostgreSQL ---------------------------------------------------------------------------


def _pg_clusters() -> list[Path]:
    root = Path("/etc/postgresql")
    return sorted(root.glob("*/main")) if root.is_dir() else []


def _pg_installed() -> bool:
    return shutil.which("pg_ctlcluster") is not None and (
        bool(_pg_clusters()) or shutil.which("pg_createcluster") is not None
    )


def _pg_trust_loopback(cluster: Path) -> bool:
    """Trust auth for TCP on loopback (test use), first in pg_hba.conf; True when changed."""
    hba = cluster / "pg_hba.conf"
    text = hba.read_text()
    if all(line in text for line in PG_HBA_LINES):
        return False
    hba.write_text("\n".join(PG_HBA_LINES) + "\n" + text)
    return True


def _pg_start(service: Service) -> str | None:
    if not _pg_clusters():
        versions = sorted(Path("/usr/lib/postgresql").glob("*"))
        if not versions:
            return "no PostgreSQL server version under /usr/lib/postgresql"
        created = run(["pg_createcluster", versions[-1].name, "main"])
        if created.returncode != 0:
            return f"pg_createcluster failed: {created.stderr.strip()}"
    cluster = _pg_clusters()[-1]
    version = cluster.parent.name
    try:
        _pg_trust_loopback(cluster)
    except OSError as exc:
        return f"cannot set trust auth in {cluster / 'pg_hba.conf'}: {exc}"
    started = run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"])
    if started.returncode != 0 and not port_open(service.port):
        return f"pg_ctlcluster {version} main start failed: {started.stderr.strip()}"
    if not wait_for_port(service.port):
        return f"PostgreSQL {version} started but does not listen on {HOST}:{service.port}"
    return None


def _psql(*sql_args: str) -> subprocess.CompletedProcess[str]:
    return run(["psql", "-h", HOST, "-U", "postgres", "-d", "postgres", "-tAc", *sql_args])


def _pg_ready(service: Service) -> str | None:
    """The database ``test`` is there (created when missing) and ``postgres`` gets in."""
    if shutil.which("psql") is None:
        return None  # nothing to check with; the tests will say it if it is wrong
    found = _psql("SELECT 1 FROM pg_database WHERE datname = 'test'")
    if found.returncode != 0 and "authentication" in found.stderr:
        cluster = next(iter(_pg_clusters()[::-1]), None)
        if cluster is not None and os.access(cluster / "pg_hba.conf", os.W_OK):
            _pg_trust_loopback(cluster)
            run(
                [
                    "pg_ctlcluster",
                    "--skip-systemctl-redirect",
                    cluster.parent.name,
                    "main",
                    "reload",
                ]
            )
            time.sleep(0.5)
            found = _psql("SELECT 1 FROM pg_database WHERE datname = 'test'")
    if found.returncode != 0:
        return (
            f"user postgres cannot connect over TCP without a password: {found.stderr.strip()} "
            "(set 'trust' for 127.0.0.1/32 in pg_hba.conf)"
        )
    if found.stdout.strip() != "1":
        created = _psql("CREATE DATABASE test")
        if created.returncode != 0:
            return f"cannot create the database test: {created.stderr.strip()}"
        say("created the PostgreSQL database 'test'")
    return None


# --- Redis --------------------------------------------------------------------------------


def _redis_start(service: Service) -> str | None:
    workdir = CACHE / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    started = run(
        [
            "redis-server",
            "--daemonize", "yes",
            "--bind", HOST, "-::1",
            "--port", str(service.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--logfile", str(workdir / "redis.log"),
        ]
    )  # fmt: skip
    if started.returncode != 0:
        return f"redis-server failed: {started.stderr.strip() or started.stdout.strip()}"
    if not wait_for_port(service.port, 10):
        return f"redis-server started but does not listen on {HOST}:{service.port}"
    return None


def _always_ready(service: Service) -> str | None:
    return None


# --- what each command needs --------------------------------------------------------------


def postgres(port: int = 5432) -> Service:
    return Service("PostgreSQL", port, "postgresql", _pg_installed, _pg_start, _pg_ready)


def redis(port: int = 6379) -> Service:
    return Service(
        "Redis",
        port,
        "redis-server",
        lambda: shutil.which("redis-server") is not None,
        _redis_start,
        _always_ready,
    )


PROMTOOL = Command("promtool", "prometheus", "checks the Prometheus config and alert rules")
AMTOOL = Command("amtool", "prometheus-alertmanager", "checks the Alertmanager config")
WRK = Command("wrk", "wrk", "the load generator of the web benchmarks")
PROMETHEUS = Command("prometheus", "prometheus", "the stack's Prometheus server")
ALERTMANAGER = Command(
    "prometheus-alertmanager", "prometheus-alertmanager", "the stack's Alertmanager"
)
# Not from Debian (its golang-go is too old for the collector's modules): the machine's own.
GO = Command("go", "", "builds otelcol-chatai and Jaeger; Go 1.26 or newer from go.dev")
CHROMIUM = Command("chromium", "chromium", "the real browser of the frontend tests")
# Debian's nodejs is older than Next.js 15 accepts: Node.js 20 or newer from nodejs.org.
NODE = Command("node", "", "builds and drives the Next.js frontend; Node.js 20 or newer")
NPM = Command("npm", "", "installs the frontend's packages from its lock file; comes with Node.js")


def needs(target: str, pg_port: int, redis_port: int) -> list[Command | Service]:
    """What ``./dev <target>`` needs. The demo needs none of it."""
    services: list[Command | Service] = [postgres(pg_port), redis(redis_port)]
    stack: list[Command | Service] = [PROMETHEUS, ALERTMANAGER, GO]
    if target == "test":
        return [*services, PROMTOOL, AMTOOL, WRK, *stack, CHROMIUM, NODE, NPM]
    if target == "bench":
        return [*services, WRK, *stack]
    if target == "stack":
        return stack
    return []


# --- the run ------------------------------------------------------------------------------


def can_install() -> str | None:
    """None when this process may install Debian packages, else why not."""
    if shutil.which("apt-get") is None:
        return "no apt-get on PATH"
    if os.geteuid() != 0:
        return "not root"
    return None


def apt_install(packages: list[str]) -> str | None:
    say(f"installing {' '.join(packages)} (apt-get; once per machine, about a minute)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    update = run(["apt-get", "update", "-qq"], env=env)
    if update.returncode != 0:
        return f"apt-get update failed: {update.stderr.strip()[-500:]}"
    install = run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env
    )
    if install.returncode != 0:
        return f"apt-get install failed: {install.stderr.strip()[-500:]}"
    return None


def report(missing: list[tuple[Command | Service, str]], target: str, why_not: str) -> None:
    packages = sorted(
        {need.package for need, problem in missing if problem in ABSENT and need.package}
    )
    lines = [f"dev: ./dev {target} cannot start; missing here:"]
    lines += [f"  - {need.describe()}: {problem}" for need, problem in missing]
    if packages:
        prefix = "" if os.geteuid() == 0 else "sudo "
        lines.append(f"install with: {prefix}apt-get install {' '.join(packages)}  ({why_not})")
    lines.append("then run the same command again; it starts the services itself.")
    print("\n".join(lines), file=sys.stderr, flush=True)


def provision(target: str, pg_port: int, redis_port: int, install: bool = True) -> int:
    required = needs(target, pg_port, redis_port)
    absent = [need for need in required if not need.present()]
    to_install = [
        need
        for need in absent
        if need.package and (isinstance(need, Command) or not need.installed())
    ]  # a stopped service is started, not installed
    why_not = can_install() if install else "checking only"
    if to_install and why_not is None:
        failure = apt_install(sorted({need.package for need in to_install}))
        if failure:
            say(failure)
    missing: list[tuple[Command | Service, str]] = []
    for need in absent:
        if isinstance(need, Command):
            if not need.present():
                missing.append((need, NOT_ON_PATH))
            continue
        if not need.installed():
            missing.append((need, NOT_INSTALLED))
            continue
        problem = need.start(need) if install else "installed, not running"
        if problem is None:
            say(f"started {need.name} on {HOST}:{need.port}")
        else:
            missing.append((need, problem))
    for need in required:
        if install and isinstance(need, Service) and not any(need is m for m, _ in missing):
            problem = need.ready(need)
            if problem is not None:
                missing.append((need, problem))
    if missing:
        report(missing, target, why_not or "the installation above failed")
        return EXIT_MISSING
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=["test", "bench", "demo", "stack"])
    parser.add_argument("--check", action="store_true", help="report only, install nothing")
    parser.add_argument("--postgres-port", type=int, default=5432)
    parser.add_argument("--redis-port", type=int, default=6379)
    args = parser.parse_args(argv)
    return provision(args.target, args.postgres_port, args.redis_port, install=not args.check)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
