// Drives the live status page in headless Chromium (Debian's, via
// playwright-core): loads it, checks it shows the PoP's real state (prefixes,
// BGP peer, backends, DNS zone), saves a screenshot, then types the admin
// token and clicks either "Drain PoP" (ACTION "pop") or the Drain button in
// one prefix's row (ACTION "prefix:ADDR/LEN"), and waits until the page
// shows the result.
//   node .ci/status_page.js URL SCREENSHOT TOKEN ACTION
const { chromium } = require("playwright-core");

(async () => {
  const [url, shot, token, action] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(url);
    await page.waitForSelector("#prefixes td:has-text('192.0.2.10/32')", { timeout: 10000 });
    await page.waitForSelector("#prefixes .pill.announced", { timeout: 10000 });
    await page.waitForSelector("#backends td:has-text('k8s-node')", { timeout: 10000 });
    await page.waitForSelector("#peers .pill.established", { timeout: 10000 });
    await page.waitForSelector("#peers .pill.up", { timeout: 10000 }); // BFD
    await page.waitForSelector("#zones td:has-text('lab.example')", { timeout: 10000 });
    await page.screenshot({ path: shot, fullPage: true });
    await page.fill("#token", token);
    if (action === "pop") {
      await page.click("#pop-drain");
      await page.waitForSelector("#prefixes .pill.withdrawn, #prefixes .pill.draining", { timeout: 10000 });
      await page.waitForSelector("#pop-drain-state:visible", { timeout: 10000 });
    } else if (action && action.startsWith("prefix:")) {
      const prefix = action.slice("prefix:".length);
      const row = page.locator("#prefixes tr", { hasText: prefix });
      await row.locator("button:has-text('Drain')").click();
      await row.locator("button:has-text('Undrain')").waitFor({ timeout: 10000 });
      await row.locator(".pill.withdrawn, .pill.draining").waitFor({ timeout: 10000 });
    } else {
      throw new Error("ACTION must be pop or prefix:ADDR/LEN, got " + action);
    }
    await page.screenshot({ path: shot.replace(/\.png$/, "-" + action.replace(/[^a-z0-9]+/gi, "_") + ".png"), fullPage: true });
    const err = await page.textContent("#err");
    if (err) throw new Error("page shows an error: " + err);
    console.log("ok");
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
