#!/bin/sh
# Where the page finds the backend and the telemetry tunnel (src/lib/config.ts), from the
# container's environment, written before nginx starts (nginx's docker-entrypoint.d).
set -eu
backend=${BACKEND_URL:-http://localhost:8000}
telemetry=${TELEMETRY_URL:-$backend/otlp}
printf '{"backendUrl": "%s", "telemetryUrl": "%s"}\n' "$backend" "$telemetry" \
  > /usr/share/nginx/html/runtime-config.json
