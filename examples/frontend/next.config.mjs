/**
 * A static export: the pages are plain files that any web server (or the example's
 * tools/frontend.py) serves, and all rendering happens in the browser. So there is no
 * Next.js server whose spans would have to join the trace (no instrumentation.ts).
 * Nothing is fetched at build time: no next/font/google, telemetry off (NEXT_TELEMETRY_DISABLED).
 * @type {import('next').NextConfig}
 */
const nextConfig = {
  output: "export",
  images: { unoptimized: true },
  reactStrictMode: true,
  poweredByHeader: false,
};

export default nextConfig;
