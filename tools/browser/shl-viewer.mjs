// shl-viewer.mjs: opens phr's SMART Health Link viewer in headless Chromium
// (Debian's /usr/bin/chromium, driven by playwright-core), enters the
// passcode when the page asks for it, waits for the decrypted record and
// reports what each page shows. Run by internal/shl's TestViewerInBrowser.
//
// stdin:  {"chromium":"/usr/bin/chromium","pages":[
//            {"url":"http://127.0.0.1:port/shl/view#shlink:/...",
//             "passcode":"...",            (optional: the page must ask for it)
//             "wrongPasscode":"...",       (optional: tried first)
//             "screenshot":"/path/out.png"}]}
// stdout: {"pages":[{"ok":true,"title":"...","status":"...","patient":"...",
//          "sections":{"allergies":[["Substance","Criticality",...],...],...},
//          "requests":["GET http://..."],"console":[...],"wrongPasscodeMessage":"..."}
//          | {"ok":false,"error":"...","status":"..."}]}
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

async function readStdin() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

async function open(context, req) {
  const result = { ok: false, requests: [], console: [] };
  const page = await context.newPage();
  page.on("request", (r) => result.requests.push(r.method() + " " + r.url().replace(/#.*/, "")));
  page.on("console", (m) => result.console.push(m.type() + ": " + m.text()));
  page.on("pageerror", (e) => result.console.push("pageerror: " + e.message));
  try {
    await page.goto(req.url, { waitUntil: "load" });
    if (req.passcode !== undefined) {
      await page.waitForSelector("#passcode-box:not([hidden])", { timeout: 15000 });
      if (req.wrongPasscode) {
        await page.fill("#passcode", req.wrongPasscode);
        await page.click("#open");
        await page.waitForFunction(() => document.getElementById("passcode-error").textContent !== "", null, { timeout: 15000 });
        result.wrongPasscodeMessage = await page.textContent("#passcode-error");
      }
      await page.fill("#passcode", req.passcode);
      await page.click("#open");
    }
    await page.waitForSelector("#allergies", { timeout: 20000 });
    result.title = await page.textContent("#title");
    result.status = await page.textContent("#status");
    result.patient = (await page.textContent("#patient").catch(() => "")) || "";
    result.sections = await page.evaluate(() => {
      const out = {};
      for (const sec of document.querySelectorAll("#content section[id]")) {
        out[sec.id] = [...sec.querySelectorAll("tr")].slice(1).map((tr) => [...tr.children].map((td) => td.textContent));
      }
      return out;
    });
    if (req.screenshot) await page.screenshot({ path: req.screenshot, fullPage: true });
    result.ok = true;
  } catch (e) {
    result.error = e.message;
    try {
      result.status = await page.textContent("#status");
      if (req.screenshot) await page.screenshot({ path: req.screenshot, fullPage: true });
    } catch { /* nothing more to report */ }
  } finally {
    await page.close();
  }
  return result;
}

const req = await readStdin();
const profile = mkdtempSync(join(tmpdir(), "phr-shl-viewer-"));
const out = { pages: [] };
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: req.chromium || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  for (const p of req.pages || []) out.pages.push(await open(context, p));
} catch (e) {
  out.error = e.message;
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(out));
