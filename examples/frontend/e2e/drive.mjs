// Clicks through the ChatAI page in Debian's Chromium (playwright-core; no downloaded
// browser) and prints one JSON line of what it saw. Used by the tests and by
// `chatai-otel demo --browser`, through tools/frontend.py.
//
//   node e2e/drive.mjs '{"url": "http://127.0.0.1:3000", "chromium": "/usr/bin/chromium",
//                        "steps": [{"action": "login", "email": "...", "password": "..."}, ...]}'
import { chromium } from "playwright-core";

const scenario = JSON.parse(process.argv[2]);
// Without the background-networking flags Chromium keeps trying to reach Google's hosts,
// which a closed network refuses many times a second.
const browser = await chromium.launch({
  executablePath: scenario.chromium ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const seen = { statuses: [], pageErrors: [], console: [], url: null };
try {
  const page = await browser.newPage();
  page.on("pageerror", (error) => seen.pageErrors.push(String(error.message ?? error)));
  page.on("console", (message) => {
    if (message.type() === "error") seen.console.push(message.text());
  });

  async function settled(previous) {
    // The page writes "<action>..." while an action runs, then its outcome.
    await page.waitForFunction(
      (before) => {
        const text = document.querySelector("#status")?.textContent ?? "";
        return text !== before && !text.endsWith("...");
      },
      previous,
      { timeout: 30_000 },
    );
    const text = await page.textContent("#status");
    seen.statuses.push(text);
    return text;
  }

  async function click(selector) {
    const before = await page.textContent("#status");
    await page.click(selector);
    return settled(before);
  }

  for (const step of scenario.steps) {
    switch (step.action) {
      case "goto":
        await page.goto(new URL(step.path ?? "/", scenario.url).href);
        await page.waitForFunction(() => document.querySelector("#status")?.textContent === "ready");
        seen.url = page.url();
        break;
      case "login":
        await page.fill("#email", step.email);
        await page.fill("#password", step.password);
        await click("#login");
        break;
      case "openDialog":
        await click("#open-dialog");
        break;
      case "send":
        await page.fill("#message", step.text ?? "Hello!");
        await click("#send");
        break;
      case "upload":
        await page.setInputFiles("#file", {
          name: step.name ?? "notes.txt",
          mimeType: "text/plain",
          buffer: Buffer.from(step.content ?? "a document from the browser"),
        });
        await click("#upload");
        break;
      case "throw":
        await page.evaluate((message) => setTimeout(() => { throw new Error(message); }), step.message);
        await page.waitForTimeout(200);
        break;
      case "reject":
        await page.evaluate((message) => { void Promise.reject(new Error(message)); }, step.message);
        await page.waitForTimeout(200);
        break;
      case "flush":
        // A fetch span ends once the browser has its resource timing: give it a moment.
        await page.waitForTimeout(500);
        await page.evaluate(() => window.chataiTelemetry?.flush());
        break;
      default:
        throw new Error(`unknown step ${JSON.stringify(step)}`);
    }
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
