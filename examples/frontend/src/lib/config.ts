/**
 * Where the page finds the backend and the telemetry tunnel. A static export is built
 * once and served anywhere, so these are read at run time from /runtime-config.json
 * (written by whoever serves the files), not baked in at build time.
 */

export interface RuntimeConfig {
  /** The example backend, e.g. http://127.0.0.1:8000 (no trailing slash). */
  backendUrl: string;
  /** Where the OTLP exporters post: the backend's tunnel, or a collector with CORS. */
  telemetryUrl: string;
  /** service.name the spans say (the tunnel forces its own configured name anyway). */
  serviceName: string;
}

export const DEFAULT_BACKEND = "http://127.0.0.1:8000";

function trimSlash(url: string): string {
  return url.replace(/\/+$/, "");
}

/** A complete config from whatever the JSON held; bad or missing fields get defaults. */
export function parseRuntimeConfig(raw: unknown): RuntimeConfig {
  const source = (raw && typeof raw === "object" ? raw : {}) as Record<string, unknown>;
  const text = (key: string): string | undefined => {
    const value = source[key];
    return typeof value === "string" && value.trim() !== "" ? value.trim() : undefined;
  };
  const backendUrl = trimSlash(text("backendUrl") ?? DEFAULT_BACKEND);
  return {
    backendUrl,
    telemetryUrl: trimSlash(text("telemetryUrl") ?? `${backendUrl}/otlp`),
    serviceName: text("serviceName") ?? "chatai-frontend",
  };
}

/** The served /runtime-config.json, or the defaults when there is none. */
export async function loadRuntimeConfig(): Promise<RuntimeConfig> {
  try {
    const answer = await fetch("/runtime-config.json", { cache: "no-store" });
    return parseRuntimeConfig(answer.ok ? await answer.json() : {});
  } catch {
    return parseRuntimeConfig({});
  }
}
