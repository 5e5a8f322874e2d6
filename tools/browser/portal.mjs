// Browser walk of the patient portal: headless Chromium (the distribution's
// build) driven by playwright-core. Started by internal/portal's Go test,
// which serves the portal on 127.0.0.1 and passes a JSON config on stdin:
//   {base, chromium, shots, userDataDir, patient: {email, password, id, name},
//    other: {id, name, resource}, steps: ["import", "conflict", "share"]}
// It prints a JSON report {ok, steps: [{name, shot, ms}]} on stdout and exits
// non-zero at the first failed check.
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";
import path from "node:path";

const cfg = JSON.parse(readFileSync(0, "utf8"));
const report = { ok: false, steps: [] };
let page;

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function step(name, fn) {
  const t0 = Date.now();
  await fn();
  const shot = path.join(cfg.shots, String(report.steps.length + 1).padStart(2, "0") + "-" + name + ".png");
  await page.screenshot({ path: shot, fullPage: true });
  report.steps.push({ name, shot, ms: Date.now() - t0 });
}

async function status(url) {
  const resp = await page.goto(cfg.base + url);
  return resp.status();
}

const ctx = await chromium.launchPersistentContext(cfg.userDataDir, {
  executablePath: cfg.chromium,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1200, height: 900 },
});
// Every request must stay on the server under test: no fonts, no CDNs.
const foreign = [];
ctx.on("request", (r) => {
  if (!r.url().startsWith(cfg.base) && !r.url().startsWith("data:") && !r.url().startsWith("about:")) foreign.push(r.url());
});
try {
  page = ctx.pages()[0] || (await ctx.newPage());
  const me = cfg.patient;

  await step("sign-in", async () => {
    await page.goto(cfg.base + "/p/" + me.id + "/");
    check(new URL(page.url()).pathname === "/login", "an anonymous visit should land on /login, not " + page.url());
    await page.locator('input[name="email"], input[type="email"]').first().fill(me.email);
    await page.locator('input[type="password"]').first().fill(me.password);
  });

  await step("summary", async () => {
    await Promise.all([page.waitForNavigation(), page.locator('form button[type="submit"], form input[type="submit"]').first().click()]);
    check(new URL(page.url()).pathname === "/p/" + me.id + "/", "after sign-in the summary should show, not " + page.url());
    await page.getByRole("heading", { name: "Overview" }).waitFor();
    check((await page.getByTestId("patient-name").innerText()).includes(me.name), "the summary names the patient");
    for (const h of ["Active problems", "Current medications", "Allergies", "Immunizations", "Recent encounters"]) {
      await page.getByRole("heading", { name: h }).waitFor();
    }
    check((await page.locator(".error").count()) === 0, "the summary shows an error: " + (await page.locator(".error").allInnerTexts()).join("; "));
  });

  await step("results", async () => {
    await page.getByRole("navigation").getByRole("link", { name: "Results" }).click();
    await page.getByRole("heading", { name: "Results", exact: true }).waitFor();
    check((await page.locator("svg.chart").count()) > 0, "the results page has charts");
  });

  await step("lab-chart", async () => {
    await page.locator(".chartcard h2 a", { hasText: cfg.chart || "Total cholesterol" }).first().click();
    await page.locator("svg.chart polyline").first().waitFor();
    const rows = await page.locator("table.values tbody tr").count();
    check(rows > 0, "the chart has a table of values");
    check((await page.locator("svg.chart circle").count()) > 0 || rows > 200, "the chart has points");
  });

  await step("detail", async () => {
    await page.locator("table.values tbody tr a").first().click();
    await page.getByRole("heading", { name: "Version history" }).waitFor();
    await page.getByRole("heading", { name: "Raw JSON" }).waitFor();
    check((await page.locator("pre.json").innerText()).includes('"resourceType": "Observation"'), "raw JSON shows the Observation");
  });

  await step("timeline", async () => {
    await page.getByRole("navigation").getByRole("link", { name: "Timeline" }).click();
    await page.getByRole("heading", { name: "Timeline" }).waitFor();
    check((await page.locator("section.day").count()) > 0, "the timeline has days");
    await page.getByLabel("Condition").check();
    await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Show" }).click()]);
    const types = await page.locator("li[data-type]").evaluateAll((els) => [...new Set(els.map((e) => e.dataset.type))]);
    check(types.length === 1 && types[0] === "Condition", "the type filter keeps only Conditions: " + types);
  });

  for (const extra of cfg.steps || []) {
    const mod = await import("./portal-" + extra + ".mjs");
    await step(extra, () => mod.default(page, cfg, check));
  }

  await step("phone", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(cfg.base + "/p/" + me.id + "/");
    for (const path of ["timeline", "results?code=85354-9", "import", "share", ""]) {
      await page.goto(cfg.base + "/p/" + me.id + "/" + path);
      const over = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      check(over <= 1, "/" + path + " scrolls sideways on a phone by " + over + "px");
    }
    // Keyboard: the first Tab reaches the skip link, Enter moves to the content.
    await page.keyboard.press("Tab");
    check((await page.evaluate(() => document.activeElement.className)) === "skip", "the first Tab focuses the skip link");
    await page.keyboard.press("Enter");
  });

  await step("other-patient", async () => {
    await page.setViewportSize({ width: 1200, height: 900 });
    const o = cfg.other;
    const s1 = await status("/p/" + o.id + "/");
    check(s1 === 403 || s1 === 404, "another patient's summary answers " + s1);
    check(!(await page.content()).includes(o.name), "another patient's name is not shown");
    const s2 = await status("/p/" + me.id + "/r/" + o.resource);
    check(s2 === 403 || s2 === 404, "another patient's resource answers " + s2);
    const s3 = await status("/p/" + o.id + "/r/" + o.resource);
    check(s3 === 403 || s3 === 404, "another patient's resource page answers " + s3);
  });

  await step("sign-out", async () => {
    await page.goto(cfg.base + "/p/" + me.id + "/");
    await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Sign out" }).click()]);
    check(new URL(page.url()).pathname === "/login", "sign-out lands on /login, not " + page.url());
    await page.goto(cfg.base + "/p/" + me.id + "/");
    check(new URL(page.url()).pathname === "/login", "after sign-out the record needs a new sign-in");
  });
  check(foreign.length === 0, "requests left the server: " + foreign.join(", "));
  report.ok = true;
} catch (err) {
  report.error = String(err && err.stack ? err.stack : err);
  try {
    const shot = path.join(cfg.shots, "failed.png");
    await page.screenshot({ path: shot, fullPage: true });
    report.failedShot = shot;
    report.url = page.url();
  } catch {}
} finally {
  await ctx.close();
}
process.stdout.write(JSON.stringify(report) + "\n");
process.exit(report.ok ? 0 : 1);
