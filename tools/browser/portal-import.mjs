// Walk step: import a .phr through the upload form and read the report.
// cfg.files.a is a .phr with one good line and two bad ones; cfg.files.b
// says the same thing differently from another source (a conflict).
export default async function (page, cfg, check) {
  await page.getByRole("navigation").getByRole("link", { name: "Import" }).click();
  await page.getByRole("heading", { name: "Import", exact: true }).waitFor();
  async function upload(file, source) {
    await page.locator("#file").setInputFiles(file);
    await page.locator("#source").fill(source);
    await page.getByRole("button", { name: "Import", exact: true }).click();
    await page.locator("#import-status.ok, #import-status.error").waitFor({ timeout: 60000 });
    const status = await page.locator("#import-status").innerText();
    check(!(await page.locator("#import-status.error").count()), "the import failed: " + status);
    check((await page.locator("#upload-bar").getAttribute("value")) === "100", "the progress bar reaches 100");
  }
  await upload(cfg.files.a, "Lab A");
  const created = await page.locator('#import-summary tr[data-name="created"] td').innerText();
  const rejected = await page.locator('#import-summary tr[data-name="rejected"] td').innerText();
  check(created === "1" && rejected === "2", "the summary counts 1 created and 2 rejected, not " + created + "/" + rejected);
  const lines = await page.locator("#import-lines li").allInnerTexts();
  check(lines.some((l) => l.includes("line 3")), "the report names line 3: " + lines.join(" | "));
  await upload(cfg.files.b, "Lab B");
  const conflicts = await page.locator('#import-summary tr[data-name="conflicts"] td').innerText();
  check(conflicts === "1", "the second source makes one conflict, not " + conflicts);
}
