"use client";

/**
 * The ChatAI client: log in, open a dialog, send a message, upload a document. Each
 * button is one action span whose fetch carries traceparent to the backend.
 */

import { useEffect, useRef, useState } from "react";

import { Api, ApiError } from "@/lib/api";
import { loadRuntimeConfig } from "@/lib/config";
import { flushTelemetry, startTelemetry } from "@/lib/telemetry";

declare global {
  interface Window {
    /** For tests and the demo: flush the batched telemetry now. */
    chataiTelemetry?: { flush: () => Promise<void> };
  }
}

export default function Home() {
  const api = useRef<Api | null>(null);
  const [ready, setReady] = useState(false);
  const [status, setStatus] = useState("starting");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [dialogId, setDialogId] = useState<number | null>(null);
  const [message, setMessage] = useState("Hello!");
  const [reply, setReply] = useState("");
  const [file, setFile] = useState<File | null>(null);

  useEffect(() => {
    let live = true;
    void loadRuntimeConfig().then((config) => {
      if (!live) return;
      startTelemetry(config);
      window.chataiTelemetry = { flush: flushTelemetry };
      api.current = new Api(config.backendUrl);
      setReady(true);
      setStatus("ready");
    });
    return () => {
      live = false;
    };
  }, []);

  async function act(label: string, action: (client: Api) => Promise<string>) {
    if (!api.current) return;
    setStatus(`${label}...`);
    try {
      setStatus(await action(api.current));
    } catch (thrown) {
      const id = thrown instanceof ApiError && thrown.requestId ? ` (request ${thrown.requestId})` : "";
      setStatus(`${label} failed: ${thrown instanceof Error ? thrown.message : String(thrown)}${id}`);
    }
  }

  const logIn = () =>
    act("log in", async (client) => {
      try {
        await client.register(email, password);
      } catch (thrown) {
        if (!(thrown instanceof ApiError && thrown.status === 409)) throw thrown; // known user
      }
      const answer = await client.login(email, password);
      return `logged in (request ${answer.requestId})`;
    });

  const openDialog = () =>
    act("open dialog", async (client) => {
      const answer = await client.openDialog("From the browser");
      setDialogId(answer.body.dialog_id);
      return `dialog ${answer.body.dialog_id} open (request ${answer.requestId})`;
    });

  const send = () =>
    act("send", async (client) => {
      if (dialogId === null) throw new Error("open a dialog first");
      const answer = await client.sendMessage(dialogId, message);
      setReply(answer.body.reply);
      return `sent (request ${answer.requestId})`;
    });

  const upload = () =>
    act("upload", async (client) => {
      if (!file) throw new Error("choose a file first");
      const answer = await client.uploadDocument(file);
      return `document ${answer.body.document_id} queued as job ${answer.body.job_id} (request ${answer.requestId})`;
    });

  return (
    <main>
      <h1>ChatAI</h1>
      <section>
        <h2>Account</h2>
        <input id="email" type="email" placeholder="email" value={email}
          onChange={(e) => setEmail(e.target.value)} />
        <input id="password" type="password" placeholder="password" value={password}
          onChange={(e) => setPassword(e.target.value)} />
        <button id="login" disabled={!ready} onClick={logIn}>Log in</button>
      </section>
      <section>
        <h2>Dialog</h2>
        <button id="open-dialog" disabled={!ready} onClick={openDialog}>Open a dialog</button>
        <div>
          <input id="message" value={message} onChange={(e) => setMessage(e.target.value)} />
          <button id="send" disabled={!ready || dialogId === null} onClick={send}>Send</button>
        </div>
        <p id="reply">{reply}</p>
      </section>
      <section>
        <h2>Documents</h2>
        <input id="file" type="file" onChange={(e) => setFile(e.target.files?.[0] ?? null)} />
        <button id="upload" disabled={!ready || file === null} onClick={upload}>Upload</button>
      </section>
      <p id="status" className="status">{status}</p>
    </main>
  );
}
