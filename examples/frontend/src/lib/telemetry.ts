/**
 * The browser's OpenTelemetry: traces (page loads, every fetch, one span per user action)
 * and logs (uncaught errors and unhandled rejections), both over OTLP/HTTP protobuf to the
 * backend's telemetry tunnel (protobuf, not JSON: the backend decodes it in about 1 µs a
 * span, JSON in over 100; benchmarks/bench_tunnel.py). Started once per page, before the
 * first interaction.
 *
 * Every fetch to the backend carries traceparent (propagateTraceHeaderCorsUrls), so the
 * backend's server span is the child of the browser's fetch span, which is the child of
 * the action span (send, upload...): one trace from the click to the worker.
 */

import { context, trace, SpanStatusCode, type Span } from "@opentelemetry/api";
import { logs, SeverityNumber, type Logger } from "@opentelemetry/api-logs";
import { OTLPLogExporter } from "@opentelemetry/exporter-logs-otlp-proto";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { registerInstrumentations } from "@opentelemetry/instrumentation";
import { DocumentLoadInstrumentation } from "@opentelemetry/instrumentation-document-load";
import { FetchInstrumentation } from "@opentelemetry/instrumentation-fetch";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchLogRecordProcessor, LoggerProvider } from "@opentelemetry/sdk-logs";
import { BatchSpanProcessor, WebTracerProvider } from "@opentelemetry/sdk-trace-web";

import type { RuntimeConfig } from "./config";
import { describeThrown, errorAttributes } from "./errors";

const SCOPE = "chatai-frontend";
let started: { tracerProvider: WebTracerProvider; loggerProvider: LoggerProvider } | null = null;
let errorLogger: Logger | null = null;

/** One id per browser tab, kept across reloads (sessionStorage). */
export function sessionId(): string {
  const key = "chatai.session.id";
  try {
    const known = window.sessionStorage.getItem(key);
    if (known) return known;
    const fresh = crypto.randomUUID();
    window.sessionStorage.setItem(key, fresh);
    return fresh;
  } catch {
    return "no-session-storage";
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export function startTelemetry(config: RuntimeConfig): void {
  if (started) return;
  const resource = resourceFromAttributes({
    "service.name": config.serviceName,
    "session.id": sessionId(),
    "browser.language": navigator.language,
  });
  const tracerProvider = new WebTracerProvider({
    resource,
    spanProcessors: [
      new BatchSpanProcessor(new OTLPTraceExporter({ url: `${config.telemetryUrl}/v1/traces` }), {
        scheduledDelayMillis: 500,
      }),
    ],
  });
  tracerProvider.register(); // global provider, W3C trace context, stack context manager
  const loggerProvider = new LoggerProvider({
    resource,
    processors: [
      new BatchLogRecordProcessor({
        exporter: new OTLPLogExporter({ url: `${config.telemetryUrl}/v1/logs` }),
        scheduledDelayMillis: 500,
      }),
    ],
  });
  logs.setGlobalLoggerProvider(loggerProvider);
  errorLogger = loggerProvider.getLogger(SCOPE);
  registerInstrumentations({
    instrumentations: [
      new DocumentLoadInstrumentation(),
      new FetchInstrumentation({
        propagateTraceHeaderCorsUrls: [new RegExp(`^${escapeRegExp(config.backendUrl)}/`)],
        ignoreUrls: [new RegExp(`^${escapeRegExp(config.telemetryUrl)}/`), /\/runtime-config\.json$/],
      }),
    ],
  });
  window.addEventListener("error", (event) =>
    reportError(event.error ?? event.message, "error"),
  );
  window.addEventListener("unhandledrejection", (event) =>
    reportError(event.reason, "unhandledrejection"),
  );
  // A tab that goes away sends what it holds (fetch keepalive lets it finish).
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") void flushTelemetry();
  });
  started = { tracerProvider, loggerProvider };
}

/** Send what is batched now (the tests call it through window.chataiTelemetry). */
export async function flushTelemetry(): Promise<void> {
  if (!started) return;
  await Promise.all([started.tracerProvider.forceFlush(), started.loggerProvider.forceFlush()]);
}

/**
 * One uncaught error as one ERROR log record, inside a short `browser.error` span so the
 * record carries a trace id that Jaeger shows (with the exception on the span).
 */
export function reportError(thrown: unknown, kind: "error" | "unhandledrejection"): void {
  try {
    const error = describeThrown(thrown);
    const attributes = errorAttributes(error, kind, window.location.href, sessionId());
    const span = trace.getTracer(SCOPE).startSpan("browser.error", { attributes });
    span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
    span.recordException({ name: error.type, message: error.message, stack: error.stack });
    context.with(trace.setSpan(context.active(), span), () => {
      errorLogger?.emit({
        severityNumber: SeverityNumber.ERROR,
        severityText: "ERROR",
        body: `${error.type}: ${error.message}`,
        attributes,
      });
    });
    span.end();
  } catch {
    // reporting an error never raises another one
  }
}

/**
 * Run one user action in its own span. `call` must start its fetch synchronously (the
 * stack context manager does not follow awaits), e.g. `() => fetch(...)`.
 */
export async function inAction<T>(
  name: string,
  attributes: Record<string, string | number>,
  call: () => Promise<T>,
): Promise<T> {
  const span: Span = trace.getTracer(SCOPE).startSpan(name, { attributes });
  try {
    return await context.with(trace.setSpan(context.active(), span), call);
  } catch (thrown) {
    const error = describeThrown(thrown);
    span.recordException({ name: error.type, message: error.message, stack: error.stack });
    span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
    throw thrown;
  } finally {
    span.end();
  }
}
