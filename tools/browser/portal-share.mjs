// Walk step: create a SMART Health Link with a passcode and see its QR code.
export default async function (page, cfg, check) {
  await page.getByRole("navigation").getByRole("link", { name: "Share" }).click();
  await page.getByRole("heading", { name: "Share", exact: true }).waitFor();
  await page.getByLabel("Label (shown to the recipient").fill("For the pharmacy");
  await page.getByLabel("Passcode (optional").fill("2468");
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Create link" }).click()]);
  const qr = page.getByTestId("qr");
  await qr.waitFor();
  const size = await qr.evaluate((img) => [img.complete, img.naturalWidth, img.naturalHeight]);
  check(size[0] && size[1] > 50 && size[1] === size[2], "the QR code image loads as a square: " + size);
  const link = await page.getByTestId("shlink").inputValue();
  check(link.startsWith("shlink:/"), "the link is a shlink:/ URI: " + link.slice(0, 20));
}
