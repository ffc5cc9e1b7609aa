import { describe, expect, it } from "vitest";

import { describeThrown, errorAttributes, pagePath } from "../src/lib/errors";

describe("describeThrown", () => {
  it("keeps an Error's name, message and stack", () => {
    const error = new TypeError("x is not a function");
    expect(describeThrown(error)).toMatchObject({ type: "TypeError", message: "x is not a function" });
    expect(describeThrown(error).stack).toContain("TypeError");
  });

  it("describes a thrown string and a thrown object", () => {
    expect(describeThrown("boom")).toEqual({ type: "string", message: "boom" });
    expect(describeThrown({ code: 7 })).toEqual({ type: "object", message: '{"code":7}' });
  });

  it("survives a cyclic rejection reason", () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(describeThrown(cyclic).message).toBe("unknown error");
  });
});

describe("errorAttributes", () => {
  it("drops the page's query and fragment, where tokens travel", () => {
    expect(pagePath("http://127.0.0.1:3000/chat?token=abc#x")).toBe("http://127.0.0.1:3000/chat");
    const attributes = errorAttributes(
      { type: "Error", message: "m", stack: "s" },
      "unhandledrejection",
      "http://127.0.0.1:3000/?access_token=secret",
      "session-1",
    );
    expect(attributes).toEqual({
      "exception.type": "Error",
      "exception.message": "m",
      "exception.stacktrace": "s",
      "browser.error.kind": "unhandledrejection",
      "url.full": "http://127.0.0.1:3000/",
      "session.id": "session-1",
    });
  });
});
