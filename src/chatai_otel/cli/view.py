"""The terminal view of telemetry: a waterfall per trace and a table of the metrics that matter.

Used by ``chatai-otel demo`` on what its embedded receiver got, and by
``chatai-otel view FILE...`` on OTLP/JSON files (:mod:`chatai_otel.export.otlp_json`).
Spans and log records are decoded by :class:`chatai_otel.testing.receiver.OTLPReceiver`;
metric points are folded here, honouring their temporality: the latest point
of each cumulative series, the sum of delta points, summed over the processes
that reported them.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from google.protobuf.message import Message

from chatai_otel.testing.receiver import OTLPReceiver, ReceivedLog, ReceivedSpan, attributes_of

__all__ = ["Collected", "MetricSeries", "pick_traces", "render_metrics", "render_trace"]

STATUS_ERROR = 2
_CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


# --- metrics ------------------------------------------------------------------------------------


@dataclass
class _Point:
    attributes: dict[str, Any]
    time_ns: int
    value: float = 0.0  # sum / gauge
    count: int = 0  # histogram
    total: float = 0.0  # histogram sum


@dataclass
class MetricSeries:
    """The current value of every series, from a stream of export requests."""

    _series: dict[tuple[Any, ...], _Point] = field(default_factory=dict)
    _kinds: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request: Message) -> None:
        """Fold one ``ExportMetricsServiceRequest`` in."""
        with self._lock:
            for resource_metrics in request.resource_metrics:
                resource = attributes_of(resource_metrics.resource.attributes)
                origin = resource.get("service.instance.id") or tuple(sorted(resource.items()))
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        self._add_metric(origin, scope_metrics.scope.name, metric)

    def _add_metric(self, origin: Any, scope: str, metric: Any) -> None:
        kind = metric.WhichOneof("data") or ""
        if kind not in ("sum", "gauge", "histogram"):
            return
        data = getattr(metric, kind)
        self._kinds[metric.name] = kind
        cumulative = kind == "gauge" or data.aggregation_temporality == _CUMULATIVE
        for point in data.data_points:
            attributes = attributes_of(point.attributes)
            key = (origin, scope, metric.name, tuple(sorted(attributes.items(), key=str)))
            if kind == "histogram":
                new = _Point(attributes, point.time_unix_nano, count=point.count, total=point.sum)
            else:
                which = point.WhichOneof("value")
                value = float(getattr(point, which)) if which else 0.0
                new = _Point(attributes, point.time_unix_nano, value=value)
            old = self._series.get(key)
            if old is None:
                self._series[key] = new
            elif cumulative:
                if new.time_ns >= old.time_ns:
                    self._series[key] = new
            else:
                old.value += new.value
                old.count += new.count
                old.total += new.total
                old.time_ns = max(old.time_ns, new.time_ns)

    def names(self) -> set[str]:
        with self._lock:
            return set(self._kinds)

    def totals(self, name: str, by: Sequence[str]) -> dict[tuple[Any, ...], tuple[float, int]]:
        """``{(values of by...): (sum or value, count)}`` over every series of ``name``."""
        result: dict[tuple[Any, ...], tuple[float, int]] = {}
        with self._lock:
            points = [p for key, p in self._series.items() if key[2] == name]
            kind = self._kinds.get(name)
        for point in points:
            group = tuple(point.attributes.get(key) for key in by)
            value, count = result.get(group, (0.0, 0))
            if kind == "histogram":
                result[group] = (value + point.total, count + point.count)
            else:
                result[group] = (value + point.value, count + 1)
        return result


class Collected:
    """Everything received: spans and logs (decoded by OTLPReceiver) and metric series.

    :meth:`add` has the signature of ``OTLPReceiver(on_request=...)``.
    """

    def __init__(self) -> None:
        self._decoder = OTLPReceiver()  # never started: only its decoding and storage are used
        self.metrics = MetricSeries()

    def add(self, signal: str, request: Message) -> None:
        if signal == "metrics":
            self.metrics.add(request)
        elif signal in ("traces", "logs"):
            self._decoder.ingest(signal, request)

    def extend(self, requests: Iterable[tuple[str, Message]]) -> Collected:
        for signal, request in requests:
            self.add(signal, request)
        return self

    def spans(self) -> list[ReceivedSpan]:
        return self._decoder.spans()

    def logs(self) -> list[ReceivedLog]:
        return self._decoder.logs()


# --- styling ------------------------------------------------------------------------------------


class Style:
    """ANSI colours on a terminal that wants them; Unicode blocks where the encoding has them."""

    def __init__(self, stream: TextIO) -> None:
        tty = hasattr(stream, "isatty") and stream.isatty()
        self.color = tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        encoding = (getattr(stream, "encoding", None) or "").lower()
        self.unicode = "utf" in encoding
        self.block = "█" if self.unicode else "#"
        self.thin = "▏" if self.unicode else "|"
        self.cross = "✗" if self.unicode else "x"

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def bold(self, text: str) -> str:
        return self.paint(text, "1")

    def dim(self, text: str) -> str:
        return self.paint(text, "2")

    def red(self, text: str) -> str:
        return self.paint(text, "31")


def _width(stream: TextIO) -> int:
    if hasattr(stream, "isatty") and stream.isatty():
        return max(80, min(shutil.get_terminal_size((120, 24)).columns, 160))
    return 120


def _ms(nanos: float) -> str:
    millis = nanos / 1e6
    if millis >= 1000:
        return f"{millis / 1000:.2f} s"
    return f"{millis:.1f} ms"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# --- traces -------------------------------------------------------------------------------------


@dataclass
class Trace:
    trace_id: str
    spans: list[ReceivedSpan]

    @property
    def root(self) -> ReceivedSpan:
        ids = {s.span_id for s in self.spans}
        roots = [s for s in self.spans if not s.parent_span_id or s.parent_span_id not in ids]
        return min(roots or self.spans, key=lambda s: s.start_ns)

    @property
    def start(self) -> int:
        return min(s.start_ns for s in self.spans)

    @property
    def end(self) -> int:
        return max(s.end_ns for s in self.spans)

    @property
    def services(self) -> list[str]:
        seen: dict[str, None] = {}
        for span in sorted(self.spans, key=lambda s: s.start_ns):
            seen[str(span.resource.get("service.name", "?"))] = None
        return list(seen)

    @property
    def failed(self) -> bool:
        return any(s.status_code == STATUS_ERROR for s in self.spans)

    @property
    def has_ai(self) -> bool:
        return any("gen_ai.operation.name" in s.attributes for s in self.spans)


def group_traces(spans: Iterable[ReceivedSpan]) -> list[Trace]:
    by_trace: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    return [Trace(trace_id, items) for trace_id, items in by_trace.items()]


def pick_traces(spans: Iterable[ReceivedSpan], limit: int = 4) -> list[Trace]:
    """The traces worth a look, at most one per root name: the slowest with an AI call, the
    longest crossing services, failed ones, then the slowest of the rest."""
    traces = group_traces(spans)
    chosen: list[Trace] = []
    names: set[str] = set()

    def take(candidates: Iterable[Trace], count: int = 1) -> None:
        for trace in sorted(candidates, key=lambda t: t.end - t.start, reverse=True):
            if count == 0 or len(chosen) >= limit:
                return
            if trace in chosen or trace.root.name in names:
                continue
            chosen.append(trace)
            names.add(trace.root.name)
            count -= 1

    take([t for t in traces if len(t.services) > 2])  # e.g. browser -> backend -> worker
    take([t for t in traces if t.has_ai])
    take([t for t in traces if len(t.services) > 1], 2)
    take([t for t in traces if t.failed and t.root.status_code == STATUS_ERROR])
    take(traces, limit)
    return chosen


def _ordered(trace: Trace) -> list[tuple[int, ReceivedSpan]]:
    """Depth-first, children by start time: (depth, span)."""
    children: dict[str, list[ReceivedSpan]] = defaultdict(list)
    ids = {s.span_id for s in trace.spans}
    roots = []
    for span in trace.spans:
        if span.parent_span_id and span.parent_span_id in ids:
            children[span.parent_span_id].append(span)
        else:
            roots.append(span)
    result: list[tuple[int, ReceivedSpan]] = []

    def walk(span: ReceivedSpan, depth: int) -> None:
        result.append((depth, span))
        for child in sorted(children[span.span_id], key=lambda s: s.start_ns):
            walk(child, depth + 1)

    for root in sorted(roots, key=lambda s: s.start_ns):
        walk(root, 0)
    return result


def render_trace(trace: Trace, stream: TextIO = sys.stdout, *, max_spans: int = 40) -> None:
    """One trace as a waterfall: indented span names, service, a bar on the time axis, duration."""
    style = Style(stream)
    width = _width(stream)
    total = max(trace.end - trace.start, 1)
    rows = _ordered(trace)
    name_width = min(44, max(len(s.name) + 2 * d for d, s in rows) + 2)
    service_width = min(16, max(len(str(s.resource.get("service.name", "?"))) for _, s in rows))
    bar_width = max(20, width - name_width - service_width - 16)
    root = trace.root
    header = (
        f"{root.name}  trace {trace.trace_id}  {len(trace.spans)} spans  "
        f"{' -> '.join(trace.services)}  {_ms(total)}"
    )
    print(style.bold(header), file=stream)
    for depth, span in rows[:max_spans]:
        offset = int((span.start_ns - trace.start) / total * bar_width)
        length = int((span.end_ns - span.start_ns) / total * bar_width)
        offset = min(offset, bar_width - 1)
        bar = style.block * max(length, 0) if length >= 1 else style.thin
        bar = bar[: bar_width - offset]
        failed = span.status_code == STATUS_ERROR
        label = _cut("  " * depth + span.name, name_width - 2)
        label = (label + (" " + style.cross if failed else "")).ljust(name_width)
        service = _cut(str(span.resource.get("service.name", "?")), service_width)
        line = (
            f"{label}{service.ljust(service_width)} "
            f"{' ' * offset}{bar}{' ' * (bar_width - offset - len(bar))} "
            f"{_ms(span.end_ns - span.start_ns).rjust(9)}"
        )
        print(style.red(line) if failed else line, file=stream)
        for event in span.events:
            if event["name"] == "exception":
                detail = (
                    f"{event['attributes'].get('exception.type', '')}: "
                    f"{event['attributes'].get('exception.message', '')}"
                )
                print(style.dim(_cut("  " * (depth + 2) + detail, width)), file=stream)
    if len(rows) > max_spans:
        print(style.dim(f"  ... {len(rows) - max_spans} more spans"), file=stream)


# --- the metrics table --------------------------------------------------------------------------


def _table(
    title: str, headers: Sequence[str], rows: list[Sequence[Any]], stream: TextIO, style: Style
) -> None:
    if not rows:
        return
    cells = [[str(c) for c in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(style.bold(title), file=stream)

    def line(row: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(row):
            parts.append(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]))
        return "  " + "  ".join(parts)

    print(style.dim(line(cells[0])), file=stream)
    for row in cells[1:]:
        print(line(row), file=stream)
    print(file=stream)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value and abs(value) < 0.01:
            return f"{value:.6f}"
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


def render_metrics(
    metrics: MetricSeries, logs: Sequence[ReceivedLog] = (), stream: TextIO = sys.stdout
) -> None:
    """Requests, errors by category, events by type, tokens and cost by model, alerts, logs."""
    style = Style(stream)
    requests = metrics.totals(
        "http.server.request.duration",
        ("http.request.method", "http.route", "http.response.status_code"),
    )
    _table(
        "Requests (http.server.request.duration)",
        ("route", "status", "count", "avg ms"),
        [
            (f"{method} {route}", status, count, total / count * 1000 if count else 0.0)
            for (method, route, status), (total, count) in sorted(
                requests.items(), key=lambda item: (str(item[0][1]), str(item[0][2]))
            )
        ],
        stream,
        style,
    )
    errors = metrics.totals("chatai.errors", ("error.category", "error.severity", "error.type"))
    _table(
        "Errors by category (chatai.errors)",
        ("category", "severity", "type", "count"),
        [
            (category, severity, _cut(str(kind), 48), int(value))
            for (category, severity, kind), (value, _n) in sorted(errors.items(), key=str)
        ],
        stream,
        style,
    )
    business = metrics.totals("chatai.business.events", ("event.type",))
    _table(
        "Business events by type (chatai.business.events)",
        ("event type", "count"),
        [(kind, int(value)) for (kind,), (value, _n) in sorted(business.items(), key=str)],
        stream,
        style,
    )
    tokens = metrics.totals(
        "gen_ai.client.token.usage", ("gen_ai.request.model", "gen_ai.token.type")
    )
    cost = metrics.totals("chatai.ai.cost", ("gen_ai.request.model",))
    calls = metrics.totals(
        "gen_ai.client.operation.duration", ("gen_ai.request.model", "gen_ai.operation.name")
    )
    models = sorted({key[0] for key in tokens} | {key[0] for key in cost}, key=str)
    _table(
        "AI usage by model (gen_ai.client.token.usage, gen_ai.client.operation.duration, chatai.ai.cost)",
        ("model", "operation", "calls", "input tokens", "output tokens", "avg s", "cost USD"),
        [
            (
                model,
                ", ".join(sorted(str(op) for (m, op) in calls if m == model)) or "-",
                sum(n for (m, _op), (_t, n) in calls.items() if m == model),
                int(tokens.get((model, "input"), (0.0, 0))[0]),
                int(tokens.get((model, "output"), (0.0, 0))[0]),
                _average(calls, model),
                cost.get((model,), (0.0, 0))[0],
            )
            for model in models
        ],
        stream,
        style,
    )
    alerts = metrics.totals("chatai.alert.notifications", ("chatai.alert.outcome",))
    _table(
        "Critical-error alerts (chatai.alert.notifications)",
        ("outcome", "count"),
        [(outcome, int(value)) for (outcome,), (value, _n) in sorted(alerts.items(), key=str)],
        stream,
        style,
    )
    if logs:
        by_level: dict[str, int] = defaultdict(int)
        for record in logs:
            by_level[(record.severity_text or "UNSET").upper()] += 1
        correlated = sum(1 for record in logs if record.trace_id.strip("0"))
        _table(
            "Log records (OTLP logs)",
            ("severity", "records"),
            [*sorted(by_level.items()), ("with a trace id", correlated)],
            stream,
            style,
        )


def _average(calls: dict[tuple[Any, ...], tuple[float, int]], model: Any) -> float | None:
    total = sum(t for (m, _op), (t, _n) in calls.items() if m == model)
    count = sum(n for (m, _op), (_t, n) in calls.items() if m == model)
    return total / count if count else None
