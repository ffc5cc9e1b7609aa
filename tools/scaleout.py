"""The scale-out tier as processes on loopback: gateways and agents of ``otelcol-chatai`` with
the bundled ``collector/gateway.yaml`` and ``collector/agent-scaleout.yaml``, for the tests and
``./dev bench gateway``.

The agents find the gateways the way the bundled config does, with the loadbalancing
exporter's ``dns`` resolver: :func:`hosts_entries` gives a hostname several loopback
addresses in /etc/hosts (root only), as a headless service's DNS would, and
:func:`remove_hosts_entry` takes one away again, as that DNS does when a gateway dies.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tools import binaries

HOSTS = Path("/etc/hosts")
COLLECTOR = binaries.ROOT / "collector"
GATEWAY_ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
MARK = "chatai-otel scale-out"


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, never the same twice in this process: the kernel may hand
    a just-closed ephemeral port out again, and one collector's health, telemetry and zpages
    ports are picked back to back (two equal ones: "bind: address already in use")."""
    while True:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_free_on(port: int, addresses: Sequence[str]) -> bool:
    for address in addresses:
        with socket.socket() as sock:
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def gateway_port(addresses: Sequence[str]) -> int:
    """One port free on every gateway address (the dns resolver uses one port for all)."""
    while True:
        port = free_port()
        if port_free_on(port, addresses):
            return port


@contextlib.contextmanager
def hosts_entries(name: str, addresses: Sequence[str]) -> Iterator[None]:
    """``name`` resolving to ``addresses`` through /etc/hosts, removed again on the way out."""
    if not os.access(HOSTS, os.W_OK):
        raise PermissionError("the scale-out tier edits /etc/hosts: run it as root")
    original = HOSTS.read_text()
    lines = "".join(f"{address} {name}  # {MARK} {name}\n" for address in addresses)
    HOSTS.write_text(original + ("" if original.endswith("\n") else "\n") + lines)
    try:
        yield
    finally:
        kept = [line for line in HOSTS.read_text().splitlines(True) if f"{MARK} {name}" not in line]
        HOSTS.write_text("".join(kept))


def remove_hosts_entry(name: str, address: str) -> None:
    """Take one address of ``name`` away (a gateway that left the service)."""
    kept = [
        line
        for line in HOSTS.read_text().splitlines(True)
        if not (line.startswith(f"{address} {name} ") and MARK in line)
    ]
    HOSTS.write_text("".join(kept))


@dataclass
class Collector:
    """One otelcol-chatai process with its health and telemetry ports and its log."""

    name: str
    process: subprocess.Popen[bytes]
    health_port: int
    telemetry_port: int
    log: Path

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/", timeout=1):
                return True
        except OSError:
            return False

    def telemetry(self) -> dict[str, float]:
        """The collector's own metrics (otelcol_*), summed over their labels."""
        url = f"http://127.0.0.1:{self.telemetry_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
        sums: dict[str, float] = collections.defaultdict(float)
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.split("{")[0].split(" ")[0], line.rsplit(" ", 1)[1]
                sums[name] += float(value)
        return sums

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_collector(
    name: str,
    config: str,
    env: dict[str, str],
    folder: Path,
    prefix: Sequence[str] = (),
) -> Collector:
    """``otelcol-chatai --config collector/<config>``; metrics and logs exports go to a closed
    port (the tier is about traces), retries off, ``env`` sets the addresses."""
    health, telemetry = free_port(), free_port()
    log = folder / f"{name}.log"
    closed = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [*prefix, str(binaries.build_otelcol()), "--config", str(COLLECTOR / config)],
        env={
            **os.environ,
            "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{health}",
            "OTELCOL_ZPAGES_ENDPOINT": f"127.0.0.1:{free_port()}",
            "OTELCOL_TELEMETRY_PORT": str(telemetry),
            "OTELCOL_HOST_ROOT": "/",
            "REMOTE_WRITE_URL": f"http://{closed}/api/v1/push",
            "LOKI_OTLP_ENDPOINT": f"http://{closed}/otlp",
            "OTELCOL_RETRY_ENABLED": "false",
            "HOSTNAME": name,
            **env,
        },
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return Collector(name, process, health, telemetry, log)


def start_gateway(name: str, address: str, port: int, jaeger: str, folder: Path,
                  prefix: Sequence[str] = ()) -> Collector:  # fmt: skip
    """A gateway listening on ``address:port``, exporting kept traces to ``jaeger``."""
    return start_collector(
        name,
        "gateway.yaml",
        {"OTELCOL_OTLP_GRPC_ENDPOINT": f"{address}:{port}", "JAEGER_COLLECTOR_ENDPOINT": jaeger},
        folder,
        prefix,
    )


def start_agent(name: str, grpc_port: int, gateways: str, port: int, folder: Path,
                prefix: Sequence[str] = ()) -> Collector:  # fmt: skip
    """An agent receiving on 127.0.0.1:``grpc_port`` and balancing to the gateways that the
    hostname ``gateways`` resolves to, re-resolved every second."""
    return start_collector(
        name,
        "agent-scaleout.yaml",
        {
            "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}",
            "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{free_port()}",
            "OTEL_GATEWAY_DNS_NAME": gateways,
            "OTEL_GATEWAY_PORT": str(port),
            "OTEL_GATEWAY_RESOLVE_INTERVAL": "1s",
        },
        folder,
        prefix,
    )
