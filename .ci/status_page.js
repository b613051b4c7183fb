// Drives the live status page in headless Chromium (Debian's, via
// playwright-core).
//   node .ci/status_page.js URL SCREENSHOT TOKEN ACTION
// Every run checks what any PoP shows: version and uptime, the history
// (charts with data points, a state timeline per prefix and backend) and
// the backend columns as in the status JSON (failed checks, downs,
// downtime, last change). Then, by ACTION:
//  - "pop" or "prefix:ADDR/LEN" (the lab: real prefixes, BGP peer with
//    BFD, backends, DNS zone): types the admin token and clicks "Drain
//    PoP" or the Drain button in that prefix's row, and waits until the
//    page shows the result;
//  - "readonly" (a server without an admin token): every action button is
//    disabled and says why, the token field is gone.
// Environment: EXPECT_RELOAD=ok|failed (the last reload's result, checked
// where the status JSON has "reload"); MIN_POINTS (data points each chart must have, default 3);
// DOWN_BACKEND=SERVICE/NAME (a backend that must show as down, with failed
// checks and downtime); CHANGED_BACKEND=SERVICE/NAME (one whose timeline
// must show it up, then down).
// Screenshots: SCREENSHOT, and with "-ACTION" appended after the action.
const { chromium } = require("playwright-core");

// "42s", "3m12s", "2h05m", "3d04h" back to seconds (the page's format)
function seconds(text) {
  const m = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(text.trim());
  if (!m || !text.trim()) throw new Error("not a duration: " + JSON.stringify(text));
  const [d, h, mi, s] = m.slice(1).map((x) => Number(x || 0));
  return ((d * 24 + h) * 60 + mi) * 60 + s;
}

function check(ok, what) {
  if (!ok) throw new Error(what);
}

async function common(page) {
  const status = await page.evaluate(async () => (await fetch("/api/v1/status")).json());
  // version and uptime in the header
  await page.waitForFunction(() => /^anyedge \d+\.\d+\.\d+/.test(document.getElementById("version").textContent), null, { timeout: 10000 });
  await page.waitForFunction(() => /^up \d+[smhd]/.test(document.getElementById("uptime").textContent), null, { timeout: 10000 });
  check((await page.textContent("#version")) === "anyedge " + status.version, "version shown is not the server's");
  // the last reload and its result, where the server reports them
  if (status.reload) {
    await page.waitForSelector("#reload:visible", { timeout: 10000 });
    const text = (await page.textContent("#reload")).replace(/\s+/g, " ").trim();
    const last = status.reload.last;
    if (!last) {
      check(text === "no reload yet", "reload shown as " + text);
    } else {
      check(text.startsWith("reload " + last.result + " "), "reload shown as " + text);
      // (the page shows its first 100 characters)
      if (last.error) check(text.includes(last.error.replace(/\s+/g, " ").trim().slice(0, 60)), "reload error not shown: " + text);
    }
    const want = process.env.EXPECT_RELOAD;
    check(!want || (last && last.result === want), `last reload ${JSON.stringify(last)}, expected ${want}`);
  }
  // the history: every chart with data points (the sampler takes one a
  // second), a timeline per prefix and backend
  const min = Number(process.env.MIN_POINTS || 3);
  await page.waitForFunction((min) => {
    const charts = [...document.querySelectorAll("#charts svg.spark")];
    return charts.length > 0 && charts.every((c) => Number(c.dataset.points) >= min);
  }, min, { timeout: 30000 });
  const services = status.services.length;
  const charts = await page.locator("#charts svg.spark").count();
  check(charts === 2 * services + (status.dns ? 2 : 0), `${charts} charts for ${services} services`);
  const backends = status.services.reduce((n, s) => n + s.backends.length, 0);
  const prefixes = (status.anycast || []).length;
  await page.waitForFunction((n) => document.querySelectorAll("#timelines svg.timeline rect").length >= n, backends + prefixes, { timeout: 10000 });
  check((await page.locator("#timelines svg.timeline").count()) === backends + prefixes, "one timeline per prefix and backend");
  // the backend columns say what the status JSON says
  for (const s of status.services) {
    for (const b of s.backends) {
      const row = page.locator(`#backends tr[data-backend="${s.name}/${b.name}"]`);
      await row.waitFor({ timeout: 10000 });
      const cells = await row.locator("td").allTextContents();
      check(cells[4] === String(b.weight), `weight of ${b.name}: ${cells[4]}`);
      const origin = b.origin + (b.removed ? " (removed)" : "");
      check((await row.locator("td.origin").textContent()) === origin, `origin of ${b.name}`);
      check((await row.locator("td.downs").textContent()) === String(b.down_transitions), `downs of ${b.name}`);
      seconds((await row.locator("td.last-change").textContent()).replace(/ ago$/, ""));
    }
  }
  const down = process.env.DOWN_BACKEND;
  if (down) {
    const row = page.locator(`#backends tr[data-backend="${down}"]`);
    await row.locator(".pill.down").waitFor({ timeout: 10000 });
    const failed = Number(await row.locator("td.chk-failed").textContent());
    const downtime = seconds(await row.locator("td.downtime").textContent());
    const [svc, name] = down.split("/");
    const now = await page.evaluate(async () => (await fetch("/api/v1/status")).json());
    const b = now.services.find((s) => s.name === svc).backends.find((x) => x.name === name);
    // the page refreshes each second: what it shows is at most a few
    // seconds older than this reading
    check(failed >= 3 && failed <= b.checks_failed && failed >= b.checks_failed - 40,
      `failed checks of ${down}: page ${failed}, status ${b.checks_failed}`);
    check(Math.abs(downtime - b.downtime_seconds) <= 5, `downtime of ${down}: page ${downtime}s, status ${b.downtime_seconds}s`);
    check(downtime >= 1, `downtime of ${down} shown as ${downtime}s`);
  }
  const changed = process.env.CHANGED_BACKEND;
  if (changed) {
    const row = page.locator("#timelines tr", { hasText: `backend ${changed}` });
    await row.locator("rect.st-up").first().waitFor({ state: "attached", timeout: 10000 });
    await row.locator("rect.st-down").last().waitFor({ state: "attached", timeout: 10000 });
    const states = await row.locator("rect").evaluateAll((rs) => rs.map((r) => r.getAttribute("class")));
    check(states.indexOf("st-up") < states.lastIndexOf("st-down") && states[states.length - 1] === "st-down",
      `timeline of ${changed}: ${states}`);
  }
  return status;
}

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
    if (action === "readonly") {
      await common(page);
      await page.waitForSelector("#readonly:visible", { timeout: 10000 });
      check((await page.textContent("#readonly")) === "read-only: no admin token configured", "read-only note");
      check(!(await page.isVisible("#token")), "token field shown on a read-only server");
      const buttons = page.locator("#pop-drain, #pop-undrain, #prefixes button, #backends button");
      const n = await buttons.count();
      check(n >= 3, `only ${n} buttons`);
      for (let i = 0; i < n; i++) {
        const b = buttons.nth(i);
        check(await b.isDisabled(), `button ${await b.textContent()} enabled on a read-only server`);
        check((await b.getAttribute("title")) === "read-only: no admin token configured", "disabled button says why");
      }
      await page.screenshot({ path: shot, fullPage: true });
    } else {
      await page.waitForSelector("#prefixes td:has-text('192.0.2.10/32')", { timeout: 10000 });
      await page.waitForSelector("#prefixes .pill.announced", { timeout: 10000 });
      await page.waitForSelector("#backends td:has-text('k8s-node')", { timeout: 10000 });
      await page.waitForSelector("#peers .pill.established", { timeout: 10000 });
      await page.waitForSelector("#peers .pill.up", { timeout: 10000 }); // BFD
      await page.waitForSelector("#zones td:has-text('lab.example')", { timeout: 10000 });
      await common(page);
      // with a token configured every action button is enabled
      check(await page.isVisible("#token"), "no token field");
      check(!(await page.isVisible("#readonly")), "read-only note on a server with a token");
      const disabled = await page.locator("button:disabled").count();
      check(disabled === 0, `${disabled} disabled buttons on a server with a token`);
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
        // the prefix's timeline shows the change within a few samples
        const tl = page.locator("#timelines tr", { hasText: `prefix ${prefix}` });
        await tl.locator("rect.st-withdrawn, rect.st-draining").first().waitFor({ state: "attached", timeout: 10000 });
        await tl.locator("rect.st-announced").first().waitFor({ state: "attached", timeout: 10000 });
      } else {
        throw new Error("ACTION must be readonly, pop or prefix:ADDR/LEN, got " + action);
      }
      await page.screenshot({ path: shot.replace(/\.png$/, "-" + action.replace(/[^a-z0-9]+/gi, "_") + ".png"), fullPage: true });
    }
    const err = await page.textContent("#err");
    if (err) throw new Error("page shows an error: " + err);
    console.log("ok");
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
