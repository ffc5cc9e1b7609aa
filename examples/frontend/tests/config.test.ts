import { describe, expect, it } from "vitest";

import { parseRuntimeConfig } from "../src/lib/config";

describe("parseRuntimeConfig", () => {
  it("puts the tunnel under the backend when no telemetry URL is given", () => {
    expect(parseRuntimeConfig({ backendUrl: "http://127.0.0.1:9000/" })).toEqual({
      backendUrl: "http://127.0.0.1:9000",
      telemetryUrl: "http://127.0.0.1:9000/otlp",
      serviceName: "chatai-frontend",
    });
  });

  it("falls back to the defaults for bad values", () => {
    expect(parseRuntimeConfig({ backendUrl: 42, telemetryUrl: " " })).toEqual({
      backendUrl: "http://127.0.0.1:8000",
      telemetryUrl: "http://127.0.0.1:8000/otlp",
      serviceName: "chatai-frontend",
    });
    expect(parseRuntimeConfig(null).backendUrl).toBe("http://127.0.0.1:8000");
  });

  it("takes a collector with CORS as the telemetry URL", () => {
    const config = parseRuntimeConfig({
      backendUrl: "http://api.local",
      telemetryUrl: "http://collector.local:4318",
    });
    expect(config.telemetryUrl).toBe("http://collector.local:4318");
  });
});
