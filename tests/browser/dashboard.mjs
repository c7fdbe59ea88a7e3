// Drives the agentbus console in Debian's headless Chromium:
//   node dashboard.mjs BASE_URL TOKEN SCREENSHOT_PATH [TIER] [STARTER_TOKEN] [VIEWER_TOKEN]
// checks that the page loads, refuses a bad token, signs in with a good one, and shows an
// event sent through the MCP endpoint without a reload; with TIER `xs`, the page across a
// restart of the server (asked of the harness by a line `RESTART <seconds>`, answered on
// stdin once it is back); with TIER `small`, also every tab of
// the small console, empty and then with what MCP calls put there (screenshots at 1280 and
// 390 px compared with the reviewed ones in screenshots/), a writer deleting a KV entry, a
// viewer who sees no write control, and the content security policy refusing injected script;
// with TIER `medium`, a workflow run started through MCP by another admin (STARTER_TOKEN) is
// approved in the console and runs to success; with TIER `large`, documents put through MCP
// are found by meaning in the memory tab. No console errors on the way.
// AGENTBUS_UPDATE_SCREENSHOTS=1 writes the screenshots as the new references (review them).
// Exits non-zero on any failure.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { writeFileSync, unlinkSync, readFileSync, existsSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import pixelmatch from "pixelmatch";
import { PNG } from "pngjs";

const [base, token, shot, tier = "xs", starter, viewer] = process.argv.slice(2);
const fail = (msg) => { console.error("FAILED: " + msg); process.exit(1); };

// A tool call through MCP (Streamable HTTP, raw JSON-RPC), as any MCP client would send it.
async function mcpCall(name, args, as = token) {
  const headers = {
    Authorization: "Bearer " + as,
    "Content-Type": "application/json",
    Accept: "application/json, text/event-stream",
  };
  const rpc = async (body, session) => {
    const h = { ...headers };
    if (session) { h["mcp-session-id"] = session; h["mcp-protocol-version"] = "2025-06-18"; }
    const r = await fetch(base + "mcp", { method: "POST", headers: h, body: JSON.stringify(body) });
    const text = await r.text();
    const data = text.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).filter(Boolean);
    return { r, msg: data.length ? JSON.parse(data[data.length - 1]) : (text ? JSON.parse(text) : null) };
  };
  const init = await rpc({ jsonrpc: "2.0", id: 1, method: "initialize",
    params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "browser-test", version: "1" } } });
  const session = init.r.headers.get("mcp-session-id");
  await rpc({ jsonrpc: "2.0", method: "notifications/initialized" }, session);
  const call = await rpc({ jsonrpc: "2.0", id: 2, method: "tools/call",
    params: { name, arguments: args } }, session);
  if (!call.msg || call.msg.error || call.msg.result.isError) fail(name + " through MCP: " + JSON.stringify(call.msg));
  return call.msg.result.structuredContent;
}

const mcpEvent = (marker) => mcpCall("events_send", { detail_type: "Browser Check", detail: { marker } });

// Screenshots: compared with the reviewed references in screenshots/ (a pixel may differ by
// pixelmatch's default threshold; at most 0.5 % of them may differ). What changes from run to
// run is masked: times, the uptime, ids, the chart (its bars move with the clock: its DOM is
// checked instead).
const shots = join(dirname(fileURLToPath(import.meta.url)), "screenshots");
const VOLATILE = ["time:visible", "#uptime", "#chart svg", "#webhooks tr[data-subscription] td:first-child", "#history td:last-child", "#events li",
  "#connect pre:visible", "#connect-url", "#workflows tr[data-run] td:first-child", "#run-detail h3", "#run-detail > p.muted",
  "#metrics-rows td:nth-child(n+3)", "#run-steps li[data-event=decided]", "#run-artifacts span.muted"];
const mismatches = [];
async function compare(page, name) {
  const file = join(shots, name + ".png");
  const png = await page.screenshot({ fullPage: true, animations: "disabled", caret: "hide",
    mask: VOLATILE.map((sel) => page.locator(sel)), maskColor: "#ff00ff" });
  if (process.env.AGENTBUS_UPDATE_SCREENSHOTS || !existsSync(file)) {
    mkdirSync(shots, { recursive: true });
    writeFileSync(file, png);
    if (!process.env.AGENTBUS_UPDATE_SCREENSHOTS) mismatches.push(name + ": no reference yet (written; review and commit it)");
    return;
  }
  const want = PNG.sync.read(readFileSync(file)), got = PNG.sync.read(png);
  if (want.width !== got.width || want.height !== got.height) {
    writeFileSync(file.replace(/\.png$/, ".actual.png"), png);
    mismatches.push(`${name}: ${got.width}x${got.height}, the reference is ${want.width}x${want.height}`);
    return;
  }
  const diff = new PNG({ width: want.width, height: want.height });
  const n = pixelmatch(want.data, got.data, diff.data, want.width, want.height, { threshold: 0.1 });
  if (n > 0.005 * want.width * want.height) {
    writeFileSync(file.replace(/\.png$/, ".actual.png"), png);
    writeFileSync(file.replace(/\.png$/, ".diff.png"), PNG.sync.write(diff));
    mismatches.push(`${name}: ${n} pixels differ (see ${name}.actual.png and ${name}.diff.png)`);
  }
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--font-render-hinting=none"],
});
// One time zone and locale, so what the page shows does not depend on the machine.
const newPage = async (width = 1280) => {
  const ctx = await browser.newContext({ viewport: { width, height: 800 }, timezoneId: "UTC", locale: "en-US" });
  const page = await ctx.newPage();
  page.errors = [];
  page.on("console", (m) => { if (m.type() === "error") page.errors.push(m.text()); });
  page.on("pageerror", (e) => page.errors.push(e.message));
  return page;
};
const signIn = async (page, as) => {
  await page.goto(base);
  await page.fill("#token", as);
  await page.click("#login button");
  await page.waitForSelector("#console:not(.hidden)", { timeout: 10000 }).catch(() => fail("a good token opens the console"));
};
// A tab of the console, by its link (as a person clicks it).
const tab = async (page, id) => {
  await page.click(`#tabs a[data-tab="${id}"]`);
  await page.waitForSelector(`section[data-tab="${id}"]:not(.hidden)`, { timeout: 5000 }).catch(() => fail("the " + id + " tab opens"));
};
// Every tab of the page, loaded and still, as a screenshot.
const TABS = {
  small: ["overview", "kv", "events", "artifacts", "timeline", "webhooks", "connect"],
  medium: ["workflows"],
  large: ["memory", "metrics"],
};
async function screenshots(page, label, ready = {}) {
  // The connect tab does not change with data: once, empty.
  for (const t of TABS[tier].filter((t) => t !== "connect" || label.startsWith("empty"))) {
    await tab(page, t);
    if (ready[t]) await page.waitForFunction(ready[t], null, { timeout: 45000 }).catch(() => fail(`the ${t} tab shows its data (${label})`));
    // The live stream keeps a request open: "network idle" never comes. Let layout settle.
    await page.waitForTimeout(300);
    await compare(page, `${tier}-${t}-${label}`);
  }
}
try {
  const stamp = "browser-" + Date.now();
  // The console, empty, as a new workspace shows it: each tab says what would appear. (The
  // extra-small tabs are the small console's first ones; medium and large add theirs.)
  if (TABS[tier]) {
    for (const width of [1280, 390]) {
      const page = await newPage(width);
      await signIn(page, token);
      await page.waitForFunction(() => document.getElementById("live").textContent === "(live)", null, { timeout: 10000 });
      if (tier === "small") {
        await tab(page, "kv");
        await page.waitForSelector("#kv-rows tr.empty");
        if (!(await page.textContent("#kv-rows")).includes("kv_set")) fail("the empty KV browser says how entries come");
      }
      await screenshots(page, "empty-" + width, {
        overview: () => document.querySelectorAll("#resources tr").length === 8 && !!document.querySelector("#history tr"),
        events: () => !!document.querySelector("#monitor-events tr.empty") && !!document.querySelector("#chart svg"),
        artifacts: () => !!document.querySelector("#artifacts tr.empty"),
        timeline: () => !!document.querySelector("#timeline tr.empty"),
        webhooks: () => !!document.querySelector("#webhooks tr.empty") && !!document.querySelector("#rules tr.empty"),
        workflows: () => !!document.querySelector("#workflows tr.empty") && !document.querySelector("#approvals-empty.hidden"),
        memory: () => !!document.querySelector("#memory-empty:not(.hidden)"),
        metrics: () => !!document.querySelector("#metrics-empty:not(.hidden)"),
      });
      if (page.errors.length) fail("console errors on the empty console: " + page.errors.join("; "));
      await page.context().close();
    }
  }
  // Fixed content (the references show it); the stamp only where the checks need it.
  for (const k of ["one", "two", "three"]) await mcpCall("kv_set", { key: "browser/" + k, value: JSON.stringify({ entry: k, tags: ["a", "b"] }) });
  if (tier === "small") {
    await mcpCall("artifacts_put", { key: "reports/weekly.md", content: "# Weekly report\n\nAll agents healthy." });
    // A second later (artifact times are in seconds), one whose key sorts after it.
    await new Promise((r) => setTimeout(r, 1100));
    await mcpCall("artifacts_put", { key: "summaries/latest.md", content: "# Latest" });
    await mcpCall("timeline_append", { agent: "sweeper", task_id: "t-1", action: "retrospective", summary: "nightly sweep <b>not markup</b>" });
    await mcpCall("rules_put", { name: "browser-checks", pattern: { "detail-type": ["Browser Check"] } });
    // Nothing listens on port 9 of this machine: every delivery fails.
    var sub = await mcpCall("subscriptions_create", { rule: "browser-checks", url: "http://127.0.0.1:9/hook" });
    for (const [detail_type, priority] of [["Disk Almost Full", "warning"], ["Build Failed", "error"], ["Deploy Finished", "info"]]) {
      await mcpCall("events_send", { detail_type, detail: { priority, host: "build-1" } });
    }
  }
  if (tier === "large") {
    await mcpCall("memory_put", { collection: "notes", documents: [
      { id: "db", text: "The Aurora writer failed over to the reader in zone b" },
      { id: "cat", text: "The office cat sleeps on the warm server rack" },
    ] });
  }
  if (tier === "medium") {
    var run = await mcpCall("workflow_start", {
      goal: "greet from the browser",
      subtasks: [{ tool: "kv_set", arguments: { key: "browser-greeting", value: stamp } }],
    }, starter);
  }
  const page = await newPage();
  await page.goto(base);
  if (!(await page.isVisible("#login"))) fail("the page asks for a token first");
  if ((await page.textContent("#tier")) !== tier) fail("the page shows the tier");

  await page.fill("#token", "ab_000000000000_not-a-token");
  await page.click("#login button");
  await page.waitForFunction(() => document.getElementById("login-error").textContent.includes("not accepted"), null, { timeout: 10000 })
    .catch(() => fail("a bad token is refused"));
  if (await page.isVisible("#console")) fail("no console with a bad token");
  // The refused token's 401 is the one error expected.
  page.errors.length = 0;

  await page.fill("#token", token);
  await page.click("#login button");
  await page.waitForSelector("#console:not(.hidden)", { timeout: 10000 }).catch(() => fail("a good token opens the console"));
  await page.waitForFunction(() => document.getElementById("h-kv").textContent === "ok", null, { timeout: 10000 })
    .catch(() => fail("the KV store shows as healthy"));
  await page.waitForFunction(() => document.getElementById("live").textContent === "(live)", null, { timeout: 10000 })
    .catch(() => fail("the event stream connects"));
  await page.waitForFunction(() => document.getElementById("kv-count").textContent === "3", null, { timeout: 10000 })
    .catch(async () => fail("the KV entry count is exact: " + (await page.textContent("#kv-count"))));
  // The Workspace panel: the tier's resources with their monthly cost, and the start on this
  // tier in the history of the data directory.
  await page.waitForFunction(() => document.querySelectorAll("#resources tr[data-resource]").length === 8, null, { timeout: 10000 })
    .catch(() => fail("the workspace panel lists the tier's costliest resources"));
  await page.click("#resources-all");
  await page.waitForFunction(() => document.querySelector("#resources tr[data-resource='kv-table']"), null, { timeout: 10000 })
    .catch(() => fail("the workspace panel lists all the tier's resources on request"));
  await page.click("#resources-all");
  if (!/would cost about \$\d+\.\d\d a month/.test(await page.textContent("#cost-total"))) fail("the monthly cost is shown: " + await page.textContent("#cost-total"));
  const moves = await page.$$eval("#history tr", (rows) => rows.map((r) => [...r.children].map((c) => c.textContent)));
  if (moves.length !== 1 || moves[0][1] !== ({ xs: "extra-small" }[tier] || tier) || moves[0][2] !== "ok") fail("the history shows this start on the tier: " + JSON.stringify(moves));

  // The connect panel: what it shows runs. Its TypeScript and Python programs, as shown, are
  // run against this server with the official SDKs; the token itself is never on the page.
  if ((await page.textContent("#connect-url")) !== base + "mcp") fail("the connect panel names the MCP endpoint");
  if ((await page.content()).includes(token)) fail("the token is on the page");
  const cursor = JSON.parse(await page.textContent("#connect-cursor"));
  if (cursor.mcpServers.agentbus.url !== base + "mcp") fail("the Cursor configuration names the endpoint");
  const runProgram = (program, ext, command, argsFor) => {
    const file = fileURLToPath(new URL(`../mcp/.connect-check-${Date.now()}.${ext}`, import.meta.url));
    writeFileSync(file, program);
    try {
      return execFileSync(command, argsFor(file), { env: { ...process.env, AGENTBUS_TOKEN: token }, encoding: "utf8", timeout: 60000 });
    } catch (e) {
      fail(`the ${ext} program of the connect panel runs: ${e.stderr || e.message}`);
    } finally {
      unlinkSync(file);
    }
  };
  const tsOut = runProgram(await page.textContent("#connect-ts"), "mjs", process.execPath, (f) => [f]);
  if (!tsOut.split(" ").includes("kv_get")) fail("the TypeScript program lists the tools: " + tsOut);
  if (process.env.AGENTBUS_TEST_PYTHON) {
    const pyOut = runProgram(await page.textContent("#connect-python"), "py", process.env.AGENTBUS_TEST_PYTHON, (f) => [f]);
    if (!pyOut.split(" ").includes("kv_get")) fail("the Python program lists the tools: " + pyOut);
    // The local bridge's configuration, as shown (the binary this test built for `agentbus`,
    // the token for YOUR_TOKEN), started by the Python SDK's stdio client.
    const bridge = JSON.parse(await page.textContent("#connect-bridge")).mcpServers.agentbus;
    if (bridge.env.AGENTBUS_TOKEN !== "YOUR_TOKEN") fail("the bridge's configuration holds no token");
    const started = runProgram([
      "import asyncio, json, os, sys",
      "from mcp import ClientSession",
      "from mcp.client.stdio import StdioServerParameters, stdio_client",
      "async def main():",
      `    p = StdioServerParameters(command=${JSON.stringify(process.env.AGENTBUS_BIN)}, args=${JSON.stringify(bridge.args)}, env={"AGENTBUS_TOKEN": os.environ["AGENTBUS_TOKEN"], "PATH": os.environ["PATH"]})`,
      "    async with stdio_client(p) as (r, w):",
      "        async with ClientSession(r, w) as s:",
      "            await s.initialize()",
      '            print(" ".join(t.name for t in (await s.list_tools()).tools))',
      "asyncio.run(main())",
    ].join("\n"), "py", process.env.AGENTBUS_TEST_PYTHON, (f) => [f]);
    if (!started.split(" ").includes("kv_get")) fail("the bridge's configuration lists the tools: " + started);
  }

  const marker = "marker-" + Date.now();
  await mcpEvent(marker);
  await page.waitForFunction((m) => document.getElementById("events").textContent.includes(m), marker, { timeout: 10000 })
    .catch(() => fail("the event sent through MCP appears without a reload"));

  // The KV browser: a prefix search, a value shown as pretty JSON, and a writer's delete.
  await tab(page, "kv");
  await page.fill("#kv-prefix", "browser/t");
  await page.click("#kv-form button");
  await page.waitForFunction(() => [...document.querySelectorAll("#kv-rows tr")].map((r) => r.dataset.key).join() === "browser/three,browser/two", null, { timeout: 10000 })
    .catch(async () => fail("the prefix search lists exactly its keys: " + await page.textContent("#kv-rows")));
  await page.click("#kv-rows tr[data-key='browser/two'] button");
  await page.waitForSelector("#kv-value", { timeout: 10000 }).catch(() => fail("a key's value opens"));
  if ((await page.textContent("#kv-value")) !== JSON.stringify({ entry: "two", tags: ["a", "b"] }, null, 2)) fail("a JSON value is pretty-printed: " + await page.textContent("#kv-value"));
  if (!(await page.textContent("#kv-detail")).includes("version1")) fail("the entry's version shows: " + await page.textContent("#kv-detail"));
  await page.click("#kv-detail button.write");
  await page.click("#kv-detail button.write");
  await page.waitForFunction(() => !document.querySelector("#kv-rows tr[data-key='browser/two']"), null, { timeout: 10000 })
    .catch(() => fail("the deleted key leaves the list"));
  const gone = await mcpCall("kv_get", { key: "browser/two" });
  if (gone.found !== false) fail("the delete reached the store: " + JSON.stringify(gone));
  await mcpCall("kv_set", { key: "browser/two", value: JSON.stringify({ entry: "two", tags: ["a", "b"] }) });
  await tab(page, "overview");

  if (tier === "xs") {
    // The server stops (a restart, a Spot replacement) and comes back 3 s later on the same
    // data: the page says it is unreachable and shows nothing as healthy meanwhile, and the
    // live feed reconnects by itself. The test's harness restarts it when asked.
    const input = createInterface({ input: process.stdin });
    const restarted = new Promise((r) => input.once("line", r));
    console.log("RESTART 3");
    await page.waitForSelector("#offline:not(.hidden)", { timeout: 20000 })
      .catch(() => fail("the page says the server is unreachable"));
    if ((await page.textContent("#h-kv")) !== "unreachable") fail("health is not shown as ok while unreachable");
    await page.waitForFunction(() => document.getElementById("live").textContent.includes("reconnecting"), null, { timeout: 20000 })
      .catch(async () => fail("the live feed says it is reconnecting: " + (await page.textContent("#live"))));
    if ((await restarted) !== "restarted") fail("the harness restarted the server");
    input.close();
    await page.waitForFunction(() => document.getElementById("live").textContent === "(live)", null, { timeout: 40000 })
      .catch(() => fail("the live feed reconnects"));
    if (await page.isVisible("#offline")) fail("the unreachable banner goes once the server answers");
    const again = "again-" + Date.now();
    await mcpEvent(again);
    await page.waitForFunction((m) => document.getElementById("events").textContent.includes(m), again, { timeout: 10000 })
      .catch(() => fail("an event sent after the restart appears without a reload"));
    // The refused connections while it was down were the point; nothing else may fail.
    page.errors = page.errors.filter((e) => !/ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE|ERR_INCOMPLETE_CHUNKED_ENCODING/.test(e));
  }
  if (tier === "small") {
    await tab(page, "artifacts");
    await page.waitForFunction(() => document.querySelectorAll("#artifacts tr[data-key]").length === 2, null, { timeout: 10000 })
      .catch(() => fail("the artifacts tab lists the artifacts put through MCP"));
    const keys = await page.$$eval("#artifacts tr", (rows) => rows.map((r) => r.dataset.key).join());
    if (keys !== "summaries/latest.md,reports/weekly.md") fail("the newest artifact comes first: " + keys);
    await page.click("#artifacts tr[data-key='reports/weekly.md'] button");
    await page.waitForSelector("#art-preview", { timeout: 10000 }).catch(() => fail("a text artifact is previewed"));
    if ((await page.textContent("#art-preview")) !== "# Weekly report\n\nAll agents healthy.") fail("the preview shows the text");
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#art-detail button")]);
    if (download.suggestedFilename() !== "weekly.md") fail("the download is named after the key: " + download.suggestedFilename());
    if (readFileSync(await download.path(), "utf8") !== "# Weekly report\n\nAll agents healthy.") fail("the download holds the artifact");

    await tab(page, "timeline");
    await page.waitForFunction(() => document.getElementById("timeline").textContent.includes("nightly sweep <b>not markup</b>"), null, { timeout: 10000 })
      .catch(() => fail("the timeline tab shows the record appended through MCP"));
    // Text from records is shown as text, never as markup.
    if (await page.$("#timeline b")) fail("a record's summary was rendered as HTML");

    // The monitor records the events (the tab refreshes every 10 s): search, chart, detail.
    await tab(page, "events");
    await page.waitForFunction(() => document.getElementById("monitor-events").textContent.includes("Browser Check"), null, { timeout: 30000 })
      .catch(() => fail("the events tab shows the event sent through MCP"));
    await page.waitForFunction(() => /^4 events: info 2 · warning 1 · error 1 · critical 0/.test(document.getElementById("monitor-counts").textContent), null, { timeout: 20000 })
      .catch(async () => fail("the event counts are shown by priority: " + await page.textContent("#monitor-counts")));
    const bars = await page.$$eval("#chart rect", (rs) => rs.map((r) => r.dataset.priority).sort().join());
    if (bars !== "error,info,warning") fail("the chart stacks this hour's events by priority: " + bars);
    await page.selectOption("#ev-priority", "error");
    await page.click("#ev-form button[type=submit]");
    await page.waitForFunction(() => {
      const rows = document.querySelectorAll("#monitor-events tr[data-event]");
      return rows.length === 1 && rows[0].textContent.includes("Build Failed");
    }, null, { timeout: 10000 })
      .catch(async () => fail("the priority search finds the one error: " + await page.textContent("#monitor-events")));
    await page.click("#monitor-events tr button");
    await page.waitForSelector("#ev-json", { timeout: 10000 }).catch(() => fail("an event's detail opens"));
    if (JSON.parse(await page.textContent("#ev-json")).host !== "build-1") fail("the event's detail shows its data");
    await page.click("#ev-reset");

    // The failed webhook deliveries show, with the reason; the admin turns the webhook off.
    await tab(page, "webhooks");
    const id = sub.subscription.subscription_id;
    const row = `#webhooks tr[data-subscription="${id}"]`;
    await page.waitForFunction((row) => {
      const r = document.querySelector(row);
      return r && r.textContent.includes("failing in a row") && r.textContent.includes("after 5 attempts");
    }, row, { timeout: 45000 }).catch(() => fail("the webhooks tab shows the failing deliveries"));
    if (!(await page.textContent(row)).includes("0%")) fail("the success rate shows");
    await page.click(row + " details.recent summary");
    const deliveries = await page.$$eval(row + " details.recent li", (lis) => lis.map((l) => [l.dataset.ok, l.textContent]));
    if (deliveries.length !== 1 || deliveries[0][0] !== "false" || !deliveries[0][1].includes("after 5 attempts"))
      fail("the recent deliveries show the failed one: " + JSON.stringify(deliveries));
    await page.click(row + " button.write");
    await page.waitForSelector(row + "[data-enabled=false]", { timeout: 10000 }).catch(() => fail("the webhook is disabled from the console"));
    const listed = await mcpCall("subscriptions_list", {});
    if (listed.subscriptions.find((x) => x.subscription_id === id).enabled !== false) fail("the store has the webhook disabled");
    await page.click(row + " button.write");
    await page.waitForSelector(row + "[data-enabled=true]", { timeout: 10000 }).catch(() => fail("the webhook is enabled again"));

    // The content security policy: script the page did not bring does not run.
    const injected = await page.evaluate(async () => {
      let violations = 0;
      document.addEventListener("securitypolicyviolation", () => { violations += 1; });
      const s = document.createElement("script");
      s.textContent = "window.__injected = 1";
      document.body.append(s);
      const d = document.createElement("div");
      d.innerHTML = "<img src='data:,' onerror='window.__injected = 2'>";
      document.body.append(d);
      await new Promise((r) => setTimeout(r, 300));
      return { ran: window.__injected ?? null, violations };
    });
    if (injected.ran !== null || injected.violations < 2) fail("injected script is refused by the CSP: " + JSON.stringify(injected));
    page.errors = page.errors.filter((e) => !e.includes("Content Security Policy"));

    // Screenshots with data, at both widths, on a fresh page each.
    for (const width of [1280, 390]) {
      const p = await newPage(width);
      await signIn(p, token);
      await p.waitForFunction(() => document.getElementById("live").textContent === "(live)", null, { timeout: 10000 });
      await screenshots(p, "data-" + width, {
        overview: () => document.querySelectorAll("#events li").length === 4 && !!document.querySelector("#history tr"),
        kv: () => document.querySelectorAll("#kv-rows tr[data-key]").length === 3,
        events: () => document.querySelectorAll("#monitor-events tr[data-event]").length === 4 && !!document.querySelector("#chart rect"),
        artifacts: () => document.querySelectorAll("#artifacts tr[data-key]").length === 2,
        timeline: () => !!document.querySelector("#timeline tr:not(.empty)"),
        webhooks: () => !!document.querySelector("#webhooks tr[data-enabled=true]") && !!document.querySelector("#rules tr:not(.empty)"),
      });
      if (p.errors.length) fail("console errors at " + width + " px: " + p.errors.join("; "));
      await p.context().close();
    }

    // By keyboard alone: Tab to the Events tab and open it, search by type, open the event;
    // what has the focus is outlined.
    const k = await newPage();
    await signIn(k, token);
    const tabTo = async (what, test) => {
      for (let i = 0; i < 60; i++) {
        await k.keyboard.press("Tab");
        if (await k.evaluate(test)) {
          const outline = await k.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
          if (outline === "none") fail("the focus on " + what + " is visible");
          return;
        }
      }
      fail("Tab reaches " + what);
    };
    await tabTo("the Events tab", () => document.activeElement?.dataset?.tab === "events");
    await k.keyboard.press("Enter");
    await k.waitForSelector('section[data-tab="events"]:not(.hidden)', { timeout: 5000 }).catch(() => fail("Enter opens the tab"));
    await tabTo("the type filter", () => document.activeElement?.id === "ev-type");
    await k.keyboard.type("Build Failed");
    await k.keyboard.press("Enter");
    await k.waitForFunction(() => document.querySelectorAll("#monitor-events tr[data-event]").length === 1, null, { timeout: 10000 })
      .catch(() => fail("Enter in the filter searches"));
    await tabTo("the event", () => document.activeElement?.closest?.("#monitor-events") !== null && document.activeElement?.tagName === "BUTTON");
    await k.keyboard.press("Enter");
    await k.waitForSelector("#ev-json", { timeout: 10000 }).catch(() => fail("Enter opens the event"));
    await k.context().close();

    // A viewer reads everything and is offered no write.
    const v = await newPage();
    await signIn(v, viewer);
    await tab(v, "kv");
    await v.waitForSelector("#kv-rows tr[data-key] button", { timeout: 10000 });
    await v.click("#kv-rows tr[data-key] button");
    await v.waitForSelector("#kv-value", { timeout: 10000 }).catch(() => fail("a viewer reads a value"));
    await tab(v, "webhooks");
    await v.waitForSelector("#webhooks tr[data-subscription]", { timeout: 10000 }).catch(() => fail("a viewer sees the webhooks"));
    if (await v.$("button.write")) fail("a viewer is offered a write control");
    if (!(await v.textContent("#who")).includes("viewer")) fail("the page says the role");
    if (v.errors.length) fail("console errors for a viewer: " + v.errors.join("; "));
  } else if (tier === "medium") {
    if (!(await page.$("#artifacts"))) fail("medium has the small tier's panels too");
    await tab(page, "workflows");
    const row = `#approvals tr[data-run="${run.run_id}"]`;
    await page.waitForSelector(row, { timeout: 30000 }).catch(() => fail("the run waits for approval in the console"));
    await page.fill(row + " input.reason", "checked in the browser");
    await page.click(row + " button.approve");
    await page.waitForSelector(`#workflows tr[data-run="${run.run_id}"][data-status="succeeded"]`, { timeout: 30000 })
      .catch(() => fail("the approved run shows as succeeded"));
    if (await page.$(row)) fail("a decided run no longer waits");
    // The run's detail: its steps as a timeline and what it stored, readable in place.
    await page.click(`#workflows tr[data-run="${run.run_id}"] button`);
    await page.waitForSelector("#run-steps li", { timeout: 10000 }).catch(() => fail("the run's steps show"));
    const events = await page.$$eval("#run-steps li", (lis) => lis.map((l) => l.dataset.event));
    const files = await page.$$eval("#run-artifacts li button", (bs) => bs.map((b) => b.textContent));
    if (events[0] !== "started" || events.indexOf("waiting") > events.indexOf("decided") || !events.includes("waiting"))
      fail("the steps run from the start through the wait to the decision: " + events);
    if (!(await page.textContent("#run-detail h3")).endsWith("succeeded")) fail("the run's detail says it succeeded");
    if (!files.includes("verdict.json")) fail("the critic's verdict is among the run's artifacts: " + files);
    await page.click("#run-artifacts li button >> text=verdict.json");
    await page.waitForSelector("#run-artifact:not(.hidden)", { timeout: 10000 });
    if (JSON.parse(await page.textContent("#run-artifact")).approved !== true) fail("the verdict's file reads as JSON: " + await page.textContent("#run-artifact"));
    const verdict = await page.textContent("#run-verdict");
    if (!verdict.startsWith("Critic: approved for the execute lane; a human decides") || !verdict.includes("\u2713 artifacts: 2 artifact(s)"))
      fail("the critic's verdict is summed up with its findings: " + verdict);
    for (const width of [1280, 390]) {
      const p = await newPage(width);
      await signIn(p, token);
      await tab(p, "workflows");
      await p.waitForSelector(`#workflows tr[data-run="${run.run_id}"][data-status="succeeded"] button`, { timeout: 10000 });
      await p.click(`#workflows tr[data-run="${run.run_id}"] button`);
      await p.waitForSelector("#run-verdict", { timeout: 10000 });
      await screenshots(p, "data-" + width, {});
      if (p.errors.length) fail("console errors at " + width + " px: " + p.errors.join("; "));
      await p.context().close();
    }
    const got = await mcpCall("kv_get", { key: "browser-greeting" });
    if (got.value !== stamp) fail("the approved subtask ran: " + JSON.stringify(got));
  } else if (tier === "large") {
    await tab(page, "memory");
    await page.waitForFunction(() => document.getElementById("memory-collection").textContent.includes("notes (2)"), null, { timeout: 10000 })
      .catch(() => fail("the memory tab lists the collection with its count"));
    if (await page.isVisible("#memory-empty")) fail("no empty-state text once a collection exists");
    await page.fill("#memory-query", "database failover");
    await page.click("#memory-form button");
    await page.waitForFunction(() => document.querySelector("#memory-hits tr td:nth-child(2)")?.textContent === "db", null, { timeout: 10000 })
      .catch(async () => fail("the memory search finds by meaning: " + (await page.textContent("#memory-hits"))));
    const rows = await page.$$("#memory-hits tr");
    if (rows.length !== 2) fail("both documents are ranked: " + rows.length);
    // The server's own metrics, as the tenant's calls made them: one memory_put, its
    // embedding by the local model.
    await tab(page, "metrics");
    const metric = ([name, of]) => [...document.querySelectorAll("#metrics-rows tr")]
      .map((tr) => [...tr.children].map((td) => td.textContent))
      .find((c) => c[0] === name && c[1] === of);
    await page.waitForFunction(metric, ["ToolCalls", "memory_put"], { timeout: 15000 })
      .catch(async () => fail("the metrics tab shows the tool calls: " + (await page.textContent("#metrics-rows"))));
    const calls = await page.evaluate(metric, ["ToolCalls", "memory_put"]);
    if (calls[2] !== "1") fail("one memory_put counted: " + calls);
    const embedding = await page.evaluate(metric, ["EmbeddingLatency", "local"]);
    if (!embedding || !(Number(embedding[4]) > 0)) fail("the embedding's latency shows, by provider: " + embedding);
    if (await page.isVisible("#metrics-empty")) fail("no empty-state text once there are metrics");
    for (const width of [1280, 390]) {
      const p = await newPage(width);
      await signIn(p, token);
      await tab(p, "memory");
      await p.waitForFunction(() => document.getElementById("memory-collection").textContent.includes("notes (2)"), null, { timeout: 10000 });
      await p.fill("#memory-query", "database failover");
      await p.click("#memory-form button");
      await p.waitForFunction(() => document.querySelectorAll("#memory-hits tr").length === 2, null, { timeout: 10000 });
      await screenshots(p, "data-" + width, { metrics: () => document.querySelectorAll("#metrics-rows tr").length > 0 });
      if (p.errors.length) fail("console errors at " + width + " px: " + p.errors.join("; "));
      await p.context().close();
    }
  } else if (await page.$("#artifacts")) {
    fail("extra-small has no artifacts panel");
  }
  if (page.errors.length) fail("console errors: " + page.errors.join("; "));
  if (shot) await page.screenshot({ path: shot, fullPage: true });
  if (mismatches.length) fail("screenshots differ from the reviewed ones:\n  " + mismatches.join("\n  "));
  console.log("dashboard: all checks passed");
} finally {
  await browser.close();
}
