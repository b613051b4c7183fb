// Drives the live status page in headless Chromium (Debian's, via
// playwright-core): loads it, checks it shows the PoP's real state, saves a
// screenshot, then types the admin token and clicks "Drain PoP" and waits
// until the page shows the prefixes draining or withdrawn.
//   node .ci/status_page.js URL SCREENSHOT TOKEN
const { chromium } = require("playwright-core");

(async () => {
  const [url, shot, token] = process.argv.slice(2);
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
    await page.screenshot({ path: shot, fullPage: true });
    await page.fill("#token", token);
    await page.click("#pop-drain");
    await page.waitForSelector("#prefixes .pill.withdrawn, #prefixes .pill.draining", { timeout: 10000 });
    await page.screenshot({ path: shot.replace(/\.png$/, "-drained.png"), fullPage: true });
    const err = await page.textContent("#err");
    if (err) throw new Error("page shows an error: " + err);
    console.log("ok");
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
