"""Cheap recording spans for chatai-otel's own hot paths: the server span and SQL statements.

Why: measured here, one SDK span costs ~20-35 µs on the request path (the
span validates every attribute through ``BoundedAttributes``, builds bounded
lists for events and links, takes a lock per mutation, and on ``end`` copies
itself into a ``ReadableSpan`` for the processors) and a web request makes two
of them. :class:`FastSpan` is a real OpenTelemetry API span — it is the
current span inside a request, so the SDK spans of httpx, Redis, events and
@track parent to it, and app code can set attributes, add events and record
exceptions on it — but it keeps its data in a plain dict and list, validates
only what app code adds, and when it ends hands one tuple to
:class:`chatai_otel.export.spans.SpanExportProcessor`.

:class:`FastTracer` hands out fast spans only while that processor is the
*only* span processor of the tracer provider and the provider is an enabled
SDK provider: add any other processor (an in-memory exporter in a test, a
vendor processor) and it returns the SDK's own spans, so every processor sees
every span. The provider's sampler, id generator, resource and span limits
apply either way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from random import getrandbits
from types import MappingProxyType, TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    INVALID_SPAN_ID,
    INVALID_TRACE_ID,
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from chatai_otel._sdk_compat import (
    RANDOM_TRACE_ID_FLAG,
    clean_attribute_value,
    is_disabled,
    parent_based_delegates,
    span_limits,
    span_processors,
    trace_ids_are_random,
)
from chatai_otel.export.spans import (
    FLAG_HAS_IS_REMOTE,
    FLAG_IS_REMOTE,
    PROTO_KIND,
    SpanExportProcessor,
    processor_of,
)

__all__ = ["FastSpan", "FastTracer"]

# trace flags by (sampled, random trace id)
_FLAGS = {
    (sampled, random): TraceFlags(
        (TraceFlags.SAMPLED if sampled else 0) | (RANDOM_TRACE_ID_FLAG if random else 0)
    )
    for sampled in (False, True)
    for random in (False, True)
}
_KINDS = {proto: kind for kind, proto in PROTO_KIND.items()}
_ALWAYS, _PARENT_OR_ALWAYS, _ASK = 0, 1, 2


class FastSpan(trace.Span):
    """A recording span whose data is a dict and a few fields until it ends (see module doc)."""

    __slots__ = (
        "_attributes",
        "_context",
        "_dropped_attributes",
        "_dropped_events",
        "_dropped_links",
        "_end",
        "_events",
        "_kind",
        "_limits",
        "_links",
        "_name",
        "_parent",
        "_processor",
        "_scope",
        "_start",
        "_status",
        "_status_message",
    )

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: int,
        attributes: dict[str, Any],
        start: int,
        scope: InstrumentationScope,
        processor: SpanExportProcessor,
        limits: Any,
        links: list[tuple[int, int, Any, Mapping[str, Any] | None, int, int]] | None = None,
    ) -> None:
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes = attributes  # owned by the span from here on
        self._start = start
        self._scope = scope
        self._processor = processor
        self._limits = limits
        self._links = links
        self._end: int | None = None
        self._events: list[tuple[str, int, Mapping[str, Any] | None, int]] | None = None
        self._status = 0
        self._status_message: str | None = None
        self._dropped_attributes = 0
        self._dropped_events = 0
        self._dropped_links = 0

    # --- the API ---------------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end is None

    def set_attribute(self, key: str, value: Any) -> None:
        """Validated as the SDK does: non-empty string keys, values cleaned (sequences become
        tuples, unknown types their ``str``), the oldest attribute dropped when full."""
        if self._end is not None:
            return
        if not key or type(key) is not str:
            self._dropped_attributes += 1
            return
        value = clean_attribute_value(value, self._limits.max_attribute_length)
        attributes = self._attributes
        if key in attributes:
            del attributes[key]
        elif len(attributes) >= self._max_attributes():
            del attributes[next(iter(attributes))]
            self._dropped_attributes += 1
        attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_trusted_attributes(self, attributes: Mapping[str, Any]) -> None:
        """For our own instrumentation only: values already of valid types, no validation."""
        if self._end is None:
            self._attributes.update(attributes)

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        self._add_event(name, attributes, timestamp, trusted=False)

    def add_trusted_event(self, name: str, attributes: dict[str, Any], timestamp: int) -> None:
        """For our own instrumentation only: attribute values already of valid types.

        Skips the per-value validation of :meth:`add_event`, not the span limits.
        """
        limits = self._limits
        trusted = limits.max_attribute_length is None and (
            limits.max_event_attributes is None or len(attributes) <= limits.max_event_attributes
        )
        self._add_event(name, attributes, timestamp, trusted)

    def _add_event(
        self,
        name: str,
        attributes: Mapping[str, Any] | None,
        timestamp: int | None,
        trusted: bool,
    ) -> None:
        if self._end is not None:
            return
        events = self._events
        if events is None:
            events = self._events = []
        limit = self._limits.max_events
        if limit is not None and len(events) >= limit:
            self._dropped_events += 1
            return
        if trusted:
            cleaned, dropped = attributes, 0
        else:
            cleaned, dropped = self._clean(attributes, self._limits.max_event_attributes)
        events.append((name, timestamp or time.time_ns(), cleaned, dropped))

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        if self._end is not None or not context.is_valid:
            return
        links = self._links
        if links is None:
            links = self._links = []
        limit = self._limits.max_links
        if limit is not None and len(links) >= limit:
            self._dropped_links += 1
            return
        cleaned, dropped = self._clean(attributes, self._limits.max_link_attributes)
        links.append(_link_record(context, cleaned, dropped))

    def update_name(self, name: str) -> None:
        if self._end is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end is not None or self._status == 1:  # OK is final
            return
        if isinstance(status, Status):
            code, description = status.status_code, status.description
        else:
            code = status
        if code is StatusCode.UNSET:
            return
        self._status = code.value
        if code is StatusCode.ERROR and description:
            from chatai_otel.redaction import scrub_text

            # trace.use_span() writes "Type: message" of an escaping exception here
            self._status_message = scrub_text(str(description))
        else:
            self._status_message = None

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """The ``exception`` event, message and stack trace scrubbed (secrets never leave)."""
        from chatai_otel.spans import exception_attributes

        event = exception_attributes(exception)
        event["exception.escaped"] = str(escaped)
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            return
        end = self._end = end_time or time.time_ns()
        context = self._context
        if not context.trace_flags.sampled:
            return  # recorded but not sampled: nothing is exported
        parent = self._parent
        flags = int(context.trace_flags) | FLAG_HAS_IS_REMOTE
        if parent is not None and parent.is_remote:
            flags |= FLAG_IS_REMOTE
        self._processor.submit(
            (
                context.trace_id,
                context.span_id,
                parent.span_id if parent is not None else 0,
                flags,
                context.trace_state,
                self._name,
                self._kind,
                self._start,
                end,
                self._attributes,
                self._events,
                self._links,
                self._status,
                self._status_message,
                self._scope,
                self._dropped_counts(),
            )
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_val is not None and self._end is None:
            self.record_exception(exc_val, escaped=True)
            self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()

    # --- read access, like the SDK's ReadableSpan ---------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> SpanKind:
        return _KINDS.get(self._kind, SpanKind.INTERNAL)

    @property
    def parent(self) -> SpanContext | None:
        return self._parent

    @property
    def attributes(self) -> Mapping[str, Any]:
        return MappingProxyType(self._attributes)

    @property
    def start_time(self) -> int:
        return self._start

    @property
    def end_time(self) -> int | None:
        return self._end

    @property
    def status(self) -> Status:
        return Status(StatusCode(self._status), self._status_message)

    def __repr__(self) -> str:
        return f'FastSpan(name="{self._name}", context={self._context})'

    # --- helpers ---------------------------------------------------------------------

    def _max_attributes(self) -> int:
        limit = self._limits.max_span_attributes
        return 1 << 30 if limit is None else int(limit)

    def _clean(
        self, attributes: Mapping[str, Any] | None, limit: int | None
    ) -> tuple[dict[str, Any] | None, int]:
        if not attributes:
            return None, 0
        cleaned: dict[str, Any] = {}
        dropped = 0
        max_length = self._limits.max_attribute_length
        for key, value in attributes.items():
            if (limit is not None and len(cleaned) >= limit) or not key or type(key) is not str:
                dropped += 1
                continue
            cleaned[key] = clean_attribute_value(value, max_length)
        return cleaned, dropped

    def _dropped_counts(self) -> tuple[int, int, int] | None:
        if not (self._dropped_attributes or self._dropped_events or self._dropped_links):
            return None
        return (self._dropped_attributes, self._dropped_events, self._dropped_links)


def _link_record(
    context: SpanContext, attributes: Mapping[str, Any] | None, dropped: int
) -> tuple[int, int, Any, Mapping[str, Any] | None, int, int]:
    flags = int(context.trace_flags) | FLAG_HAS_IS_REMOTE
    if context.is_remote:
        flags |= FLAG_IS_REMOTE
    return (context.trace_id, context.span_id, context.trace_state, attributes, flags, dropped)


class _Setup:
    """What a FastTracer needs from a provider, read once per change of its processors."""

    __slots__ = (
        "ids",
        "limits",
        "mode",
        "processor",
        "processors",
        "random_ids",
        "sampler",
        "scope",
    )

    def __init__(
        self, provider: TracerProvider, processors: object, scope: InstrumentationScope
    ) -> None:
        self.processors = processors
        self.processor: SpanExportProcessor | None = None
        self.scope = scope
        self.limits = span_limits(provider)
        self.sampler = provider.sampler
        generator = provider.id_generator
        self.ids = None if type(generator) is RandomIdGenerator else generator
        self.random_ids = trace_ids_are_random(generator)
        self.mode = _sampling_mode(self.sampler)
        ours = processor_of(provider)
        if (
            ours is not None
            and not is_disabled(provider)
            and isinstance(processors, tuple)
            and len(processors) == 1
            and processors[0] is ours
        ):
            self.processor = ours


def _sampling_mode(sampler: Any) -> int:
    """Decisions we can take without calling the sampler (always_on, parentbased_always_on)."""
    if sampler is ALWAYS_ON:
        return _ALWAYS
    if parent_based_delegates(sampler) == (ALWAYS_ON, ALWAYS_ON, ALWAYS_ON, ALWAYS_OFF, ALWAYS_OFF):
        return _PARENT_OR_ALWAYS
    return _ASK


class FastTracer(trace.Tracer):
    """A tracer for our own instrumentation: :class:`FastSpan` when it can, SDK spans otherwise."""

    def __init__(self, name: str, version: str | None = None, tracer_provider: Any = None) -> None:
        self._name = name
        self._version = version
        self._explicit = tracer_provider
        self._scope = InstrumentationScope(name, version)
        self._setup: _Setup | None = None
        self._provider: Any = None
        self._sdk_tracer: trace.Tracer | None = None

    def _current_setup(self) -> _Setup | None:
        provider = self._explicit if self._explicit is not None else trace.get_tracer_provider()
        if type(provider) is not TracerProvider and not isinstance(provider, TracerProvider):
            return None
        processors = span_processors(provider)
        if processors is None:
            return None
        setup = self._setup
        if setup is None or processors is not setup.processors or provider is not self._provider:
            setup = self._setup = _Setup(provider, processors, self._scope)
            self._provider = provider
            self._sdk_tracer = None
        return setup if setup.processor is not None else None

    def _fallback(self) -> trace.Tracer:
        tracer = self._sdk_tracer
        provider = self._explicit if self._explicit is not None else trace.get_tracer_provider()
        if tracer is None or provider is not self._provider:
            tracer = trace.get_tracer(self._name, self._version, provider)
            if isinstance(provider, TracerProvider):
                self._sdk_tracer = tracer  # a proxy tracer must be asked again later
                self._provider = provider
        return tracer

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        """A span as the SDK tracer would start it. ``attributes`` are taken as they are (our
        call sites pass valid values); what app code adds later is validated."""
        setup = self._current_setup()
        if setup is None:
            return self._fallback().start_span(
                name, context, kind, attributes, links, start_time,
                record_exception, set_status_on_exception,
            )  # fmt: skip
        parent = trace.get_current_span(context).get_span_context()
        ids = setup.ids
        if parent.is_valid:
            trace_id = parent.trace_id
            parent_context: SpanContext | None = parent
            random_trace_id = bool(parent.trace_flags & RANDOM_TRACE_ID_FLAG)
        else:
            trace_id = ids.generate_trace_id() if ids is not None else getrandbits(128)
            parent_context = None
            random_trace_id = setup.random_ids
        mode = setup.mode
        trace_state = parent.trace_state if parent_context is not None else None
        owned: dict[str, Any] = dict(attributes) if attributes else {}
        if mode == _ALWAYS:
            sampled = recording = True
        elif mode == _PARENT_OR_ALWAYS:
            sampled = recording = parent_context is None or parent.trace_flags.sampled
        else:
            result = setup.sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            recording = sampled or result.decision is Decision.RECORD_ONLY
            trace_state = result.trace_state
            if result.attributes:
                owned.update(result.attributes)
        span_id = ids.generate_span_id() if ids is not None else getrandbits(64)
        while span_id == INVALID_SPAN_ID or trace_id == INVALID_TRACE_ID:  # 2**-64 odds
            span_id, trace_id = getrandbits(64), trace_id or getrandbits(128)
        span_context = SpanContext(
            trace_id,
            span_id,
            False,
            _FLAGS[sampled, random_trace_id],
            trace_state,
        )
        if not recording:
            return NonRecordingSpan(span_context)
        processor = setup.processor
        assert processor is not None
        link_records = None
        if links:
            link_records = [
                _link_record(link.context, link.attributes, 0)
                for link in links
                if link.context.is_valid
            ] or None
        return FastSpan(
            name,
            span_context,
            parent_context,
            PROTO_KIND.get(kind, 1),
            owned,
            start_time or time.time_ns(),
            setup.scope,
            processor,
            setup.limits,
            link_records,
        )

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current
