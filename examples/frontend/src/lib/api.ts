/** The example backend's API, as the page uses it; each call is one fetch in one action span. */

import { inAction } from "./telemetry";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly requestId: string | null,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

export interface Answer<T> {
  body: T;
  requestId: string | null;
}

export class Api {
  token: string | null = null;

  constructor(readonly baseUrl: string) {}

  private request<T>(
    action: string,
    method: string,
    path: string,
    body?: BodyInit,
    json = true,
  ): Promise<Answer<T>> {
    const headers: Record<string, string> = {};
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (json && body !== undefined) headers["content-type"] = "application/json";
    return inAction(action, { "http.request.method": method, "url.path": path }, () =>
      fetch(`${this.baseUrl}${path}`, { method, headers, body }).then(async (answer) => {
        const requestId = answer.headers.get("x-request-id");
        const payload = await answer.json().catch(() => ({}));
        if (!answer.ok) {
          const detail = typeof payload?.detail === "string" ? payload.detail : answer.statusText;
          throw new ApiError(answer.status, `${method} ${path}: ${answer.status} ${detail}`, requestId);
        }
        return { body: payload as T, requestId };
      }),
    );
  }

  register(email: string, password: string) {
    return this.request<{ user_id: number }>("register", "POST", "/auth/register",
      JSON.stringify({ email, password }));
  }

  async login(email: string, password: string) {
    const answer = await this.request<{ access_token: string }>("log in", "POST", "/auth/login",
      JSON.stringify({ email, password }));
    this.token = answer.body.access_token;
    return answer;
  }

  openDialog(title: string) {
    return this.request<{ dialog_id: number }>("open dialog", "POST", "/dialogs",
      JSON.stringify({ title }));
  }

  sendMessage(dialogId: number, content: string) {
    return this.request<{ reply: string }>("send message", "POST", `/dialogs/${dialogId}/messages`,
      JSON.stringify({ text: content }));
  }

  uploadDocument(file: File) {
    const form = new FormData();
    form.append("file", file);
    return this.request<{ document_id: number; job_id: string }>("upload document", "POST",
      "/documents", form, false);
  }
}
