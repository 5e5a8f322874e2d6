// Walk step: open the conflict the import made, compare, take the incoming side.
export default async function (page, cfg, check) {
  await page.getByRole("navigation").getByRole("link", { name: "Conflicts" }).click();
  await page.getByTestId("conflicts").locator("tbody a").first().click();
  await page.getByRole("heading", { name: "Differences" }).waitFor();
  const diff = await page.getByTestId("diff").innerText();
  check(diff.includes("code.text"), "the conflict shows what differs: " + diff);
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Take the incoming version" }).click()]);
  check((await page.locator("p.ok").innerText()).includes("is resolved"), "the resolved version is shown");
  check((await page.locator("#readable").innerText()).includes("Asthma, mild intermittent"), "the incoming text is now current");
  // The patient sees the provenance of their own resource: the import that
  // wrote it (linked to its batch) and the resolution.
  const prov = await page.locator("#provenance").innerText();
  check(prov.includes("import #") && !prov.includes("No Provenance resources"), "the Provenance of the import shows to the patient: " + prov);
}
