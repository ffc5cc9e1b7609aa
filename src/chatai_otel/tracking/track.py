"""``@track("operation")``: a span and a ``chatai.operation.duration`` point for each call.

Works on plain functions, coroutine functions, generator functions and async
generator functions, and keeps what the caller sees unchanged: the return
value, the exception (the same object, re-raised), the signature and docstring
(``functools.wraps``; ``inspect.signature``, ``iscoroutinefunction`` and
``isasyncgenfunction`` answer as for the original).

The histogram {operation, status} (+ ``error.type`` for errors) has buckets
from 1 ms to 60 s, so sub-second latency alerts mean something. ``status`` is
``ok``, ``error`` or ``cancelled`` (asyncio cancellation is not a failure of the
operation). For a generator the span covers the whole iteration, from the
first item to exhaustion, an error, or the consumer closing it early (``ok``);
each step runs with the span active, without holding it active across a
``yield`` (the consumer's code between items is not part of the operation).

The seed's ``get_metrics_summary(operation)`` is a PromQL query now;
docs/events-and-errors.md lists them.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import Any, ParamSpec, TypeVar, cast, overload

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from chatai_otel import metric_names as names
from chatai_otel.spans import error_type, record_exception

__all__ = ["track"]

P = ParamSpec("P")
R = TypeVar("R")

_tracer = trace.get_tracer("chatai_otel.perf")
_meter = metrics.get_meter("chatai_otel.perf")
_duration = _meter.create_histogram(
    names.OPERATION_DURATION,
    unit=names.OPERATION_DURATION_UNIT,
    description="Duration of operations decorated with @track.",
    explicit_bucket_boundaries_advisory=names.OPERATION_DURATION_BUCKETS,
)


class _Operation:
    """One decorated operation: its span settings and its pre-built metric attributes."""

    __slots__ = ("_cancelled", "_ok", "attributes", "kind", "name")

    def __init__(self, name: str, kind: SpanKind, attributes: Mapping[str, Any] | None) -> None:
        self.name = name
        self.kind = kind
        self.attributes = dict(attributes) if attributes else None
        self._ok = {names.ATTR_OPERATION: name, names.ATTR_STATUS: "ok"}
        self._cancelled = {names.ATTR_OPERATION: name, names.ATTR_STATUS: "cancelled"}

    def start(self) -> Span:
        try:
            return _tracer.start_span(self.name, kind=self.kind, attributes=self.attributes)
        except Exception:
            return trace.INVALID_SPAN

    def enter(self) -> tuple[Span, object]:
        span = self.start()
        try:
            return span, otel_context.attach(trace.set_span_in_context(span))
        except Exception:
            return span, None

    def exit(self, span: Span, token: object, started: float, exc: BaseException | None) -> None:
        if token is not None:
            try:
                otel_context.detach(token)  # type: ignore[arg-type]
            except Exception:
                pass
        self.finish(span, started, exc)

    def finish(self, span: Span, started: float, exc: BaseException | None) -> None:
        """End the span and record the duration; never raises."""
        duration = time.perf_counter() - started
        try:
            attributes: Mapping[str, str] = self._ok
            if exc is not None and not isinstance(exc, GeneratorExit):
                if isinstance(exc, asyncio.CancelledError):
                    attributes = self._cancelled
                    span.set_attribute("chatai.operation.status", "cancelled")
                else:
                    etype = error_type(exc)
                    attributes = {
                        names.ATTR_OPERATION: self.name,
                        names.ATTR_STATUS: "error",
                        names.ATTR_ERROR_TYPE: etype,
                    }
                    record_exception(span, exc)
                    span.set_attribute(names.ATTR_ERROR_TYPE, etype)
                    span.set_status(Status(StatusCode.ERROR, etype))
            span.end()
            _duration.record(duration, attributes)
        except Exception:
            pass


@overload
def track(operation: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def track(
    operation: str | None = None,
    /,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def track(
    operation: str | Callable[P, R] | None = None,
    /,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Trace and time every call: ``@track("ai_message_processing")`` or bare ``@track``.

    ``operation`` names the span and the ``operation`` metric attribute (a
    bounded set: one per decorated function); it defaults to the function's
    qualified name. ``attributes`` go on every span (not on the metric).
    """
    if callable(operation):
        return _decorate(operation, _Operation(operation.__qualname__, kind, attributes))

    def decorator(func: Callable[P, R]) -> Callable[P, R]:
        return _decorate(func, _Operation(operation or func.__qualname__, kind, attributes))

    return decorator


def _decorate(func: Callable[P, R], op: _Operation) -> Callable[P, R]:
    if inspect.isasyncgenfunction(func):
        return cast(Callable[P, R], _async_generator(cast(Any, func), op))
    if inspect.iscoroutinefunction(func):
        return cast(Callable[P, R], _coroutine(cast(Any, func), op))
    if inspect.isgeneratorfunction(func):
        return cast(Callable[P, R], _generator(cast(Any, func), op))
    return _plain(func, op)


def _plain(func: Callable[P, R], op: _Operation) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        span, token = op.enter()
        started = time.perf_counter()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            op.exit(span, token, started, exc)
            raise
        op.exit(span, token, started, None)
        return result

    return wrapper


def _coroutine(func: Callable[..., Any], op: _Operation) -> Callable[..., Any]:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        span, token = op.enter()
        started = time.perf_counter()
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            op.exit(span, token, started, exc)
            raise
        op.exit(span, token, started, None)
        return result

    return wrapper


def _attach(span: Span) -> object:
    try:
        return otel_context.attach(trace.set_span_in_context(span))
    except Exception:
        return None


def _detach(token: object) -> None:
    if token is not None:
        try:
            otel_context.detach(token)  # type: ignore[arg-type]
        except Exception:
            pass


def _generator(func: Callable[..., Generator[Any, Any, Any]], op: _Operation) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        span = op.start()
        started = time.perf_counter()
        error: BaseException | None = None
        inner: Generator[Any, Any, Any] | None = None
        try:
            token = _attach(span)
            try:
                inner = func(*args, **kwargs)
            finally:
                _detach(token)
            throwing = False
            argument: Any = None
            while True:
                token = _attach(span)
                try:
                    value = inner.throw(argument) if throwing else inner.send(argument)
                except StopIteration as stop:
                    return stop.value
                finally:
                    _detach(token)
                try:
                    argument, throwing = (yield value), False
                except GeneratorExit:
                    raise
                except BaseException as thrown:
                    argument, throwing = thrown, True
        except GeneratorExit:
            if inner is not None:
                inner.close()
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            op.finish(span, started, error)

    return wrapper


def _async_generator(
    func: Callable[..., AsyncGenerator[Any, Any]], op: _Operation
) -> Callable[..., Any]:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        span = op.start()
        started = time.perf_counter()
        error: BaseException | None = None
        inner: AsyncGenerator[Any, Any] | None = None
        try:
            inner = func(*args, **kwargs)
            throwing = False
            argument: Any = None
            while True:
                token = _attach(span)
                try:
                    if throwing:
                        value = await inner.athrow(argument)
                    else:
                        value = await inner.asend(argument)
                except StopAsyncIteration:
                    return
                finally:
                    _detach(token)
                try:
                    argument, throwing = (yield value), False
                except GeneratorExit:
                    raise
                except BaseException as thrown:
                    argument, throwing = thrown, True
        except GeneratorExit:
            if inner is not None:
                await inner.aclose()
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            op.finish(span, started, error)

    return wrapper
