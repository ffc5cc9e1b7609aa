/**
 * What an uncaught error or an unhandled rejection in the page says in its OTLP log
 * record: the exception semantic conventions, the page (path only: a query may hold a
 * token, and the tunnel scrubs what is left) and the session.
 */

export type Attributes = Record<string, string | number | boolean>;

export interface PageError {
  type: string;
  message: string;
  stack?: string;
}

/** An ErrorEvent's error, a rejection's reason, or anything else thrown. */
export function describeThrown(thrown: unknown, fallbackMessage = "unknown error"): PageError {
  if (thrown instanceof Error) {
    return { type: thrown.name || "Error", message: thrown.message, stack: thrown.stack };
  }
  if (typeof thrown === "string") {
    return { type: "string", message: thrown };
  }
  let message = fallbackMessage;
  try {
    message = JSON.stringify(thrown) ?? fallbackMessage;
  } catch {
    // a cyclic object: keep the fallback
  }
  return { type: typeof thrown, message };
}

/** The page's URL without its query and fragment. */
export function pagePath(href: string): string {
  try {
    const url = new URL(href);
    return `${url.origin}${url.pathname}`;
  } catch {
    return href.split(/[?#]/)[0] ?? "";
  }
}

export function errorAttributes(
  error: PageError,
  kind: "error" | "unhandledrejection",
  href: string,
  sessionId: string,
): Attributes {
  const attributes: Attributes = {
    "exception.type": error.type,
    "exception.message": error.message,
    "browser.error.kind": kind,
    "url.full": pagePath(href),
    "session.id": sessionId,
  };
  if (error.stack) attributes["exception.stacktrace"] = error.stack.slice(0, 8000);
  return attributes;
}
