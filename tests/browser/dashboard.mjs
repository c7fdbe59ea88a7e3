// Drives the agentbus dashboard in Debian's headless Chromium:
//   node dashboard.mjs BASE_URL TOKEN SCREENSHOT_PATH [TIER] [STARTER_TOKEN]
// checks that the page loads, refuses a bad token, signs in with a good one, and shows an
// event sent through the MCP endpoint without a reload; with TIER `small`, also the
// artifacts and timeline panels with what MCP calls put there, the recorded-events panel
// with that event, and the webhooks panel with a subscription whose deliveries fail; with TIER `medium`, a workflow run started through MCP by another
// admin (STARTER_TOKEN) is approved in the dashboard and runs to success; with TIER `large`,
// documents put through MCP are found by meaning in the memory panel.
// Exits non-zero on any failure.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { writeFileSync, unlinkSync } from "node:fs";
import { fileURLToPath } from "node:url";

const [base, token, shot, tier = "xs", starter] = process.argv.slice(2);
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

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  const stamp = "browser-" + Date.now();
  // A fresh data directory: the tenant's KV holds exactly what the test puts there.
  for (const k of ["one", "two", "three"]) await mcpCall("kv_set", { key: "browser/" + k, value: stamp });
  if (tier === "small") {
    await mcpCall("artifacts_put", { key: "reports/" + stamp + ".md", content: "# report" });
    await mcpCall("timeline_append", { agent: "sweeper", task_id: "t-1", action: "retrospective", summary: stamp + " <b>not markup</b>" });
    await mcpCall("rules_put", { name: "browser-checks", pattern: { "detail-type": ["Browser Check"] } });
    // Nothing listens on port 9 of this machine: every delivery fails.
    var sub = await mcpCall("subscriptions_create", { rule: "browser-checks", url: "http://127.0.0.1:9/" + stamp });
  }
  if (tier === "large") {
    await mcpCall("memory_put", { collection: "notes", documents: [
      { id: "db", text: "The Aurora writer failed over to the reader in zone b" },
      { id: "cat", text: "The office cat sleeps on the warm server rack" },
    ] });
  }
  if (tier === "medium") {
    var run = await mcpCall("workflow_start", {
      goal: "greet from the browser " + stamp,
      subtasks: [{ tool: "kv_set", arguments: { key: "browser-greeting", value: stamp } }],
    }, starter);
  }
  const page = await browser.newPage();
  await page.goto(base);
  if (!(await page.isVisible("#login"))) fail("the page asks for a token first");
  if ((await page.textContent("#tier")) !== tier) fail("the page shows the tier");

  await page.fill("#token", "ab_000000000000_not-a-token");
  await page.click("#login button");
  await page.waitForFunction(() => document.getElementById("login-error").textContent.includes("not accepted"), null, { timeout: 10000 })
    .catch(() => fail("a bad token is refused"));
  if (await page.isVisible("#panels")) fail("no panels with a bad token");

  await page.fill("#token", token);
  await page.click("#login button");
  await page.waitForSelector("#panels:not(.hidden)", { timeout: 10000 }).catch(() => fail("a good token opens the dashboard"));
  await page.waitForFunction(() => document.getElementById("h-kv").textContent === "ok", null, { timeout: 10000 })
    .catch(() => fail("the KV store shows as healthy"));
  await page.waitForFunction(() => document.getElementById("live").textContent === "(live)", null, { timeout: 10000 })
    .catch(() => fail("the event stream connects"));
  await page.waitForFunction(() => document.getElementById("kv-count").textContent === "3", null, { timeout: 10000 })
    .catch(async () => fail("the KV entry count is exact: " + (await page.textContent("#kv-count"))));

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
  }

  const marker = "marker-" + Date.now();
  await mcpEvent(marker);
  await page.waitForFunction((m) => document.getElementById("events").textContent.includes(m), marker, { timeout: 10000 })
    .catch(() => fail("the event sent through MCP appears without a reload"));
  if (tier === "xs") {
    // The network goes (a restart, a Spot replacement): the page says so and shows nothing
    // as healthy; when it is back, the live feed reconnects by itself.
    await page.context().setOffline(true);
    await page.waitForSelector("#offline:not(.hidden)", { timeout: 20000 })
      .catch(() => fail("the page says the server is unreachable"));
    if ((await page.textContent("#h-kv")) !== "unreachable") fail("health is not shown as ok while unreachable");
    await page.waitForFunction(() => document.getElementById("live").textContent.includes("reconnecting"), null, { timeout: 20000 })
      .catch(async () => fail("the live feed says it is reconnecting: " + (await page.textContent("#live"))));
    await page.context().setOffline(false);
    await page.waitForFunction(() => document.getElementById("live").textContent === "(live)", null, { timeout: 40000 })
      .catch(() => fail("the live feed reconnects"));
    if (await page.isVisible("#offline")) fail("the unreachable banner goes once the server answers");
    const again = "again-" + Date.now();
    await mcpEvent(again);
    await page.waitForFunction((m) => document.getElementById("events").textContent.includes(m), again, { timeout: 10000 })
      .catch(() => fail("an event sent after the reconnect appears without a reload"));
  }
  if (tier === "small") {
    await page.waitForFunction((k) => document.getElementById("artifacts").textContent.includes(k), "reports/" + stamp + ".md", { timeout: 10000 })
      .catch(() => fail("the artifacts panel lists the artifact put through MCP"));
    await page.waitForFunction((m) => document.getElementById("timeline").textContent.includes(m), stamp, { timeout: 10000 })
      .catch(() => fail("the timeline panel shows the record appended through MCP"));
    // Text from records is shown as text, never as markup.
    if (await page.$("#timeline b")) fail("a record's summary was rendered as HTML");
    // The monitor records the event (the panels refresh every 10 s) and the failed webhook
    // deliveries show, with the reason, in the webhooks panel.
    await page.waitForFunction(() => document.getElementById("monitor-events").textContent.includes("Browser Check"), null, { timeout: 30000 })
      .catch(() => fail("the recorded-events panel shows the event sent through MCP"));
    if (!/\d+ events: info \d+/.test(await page.textContent("#monitor-counts"))) fail("the event counts are shown");
    const id = sub.subscription.subscription_id;
    await page.waitForFunction((id) => {
      const row = document.querySelector(`#webhooks tr[data-subscription="${id}"]`);
      return row && row.textContent.includes("failing in a row") && row.textContent.includes("after 5 attempts");
    }, id, { timeout: 45000 }).catch(() => fail("the webhooks panel shows the failing deliveries"));
  } else if (tier === "medium") {
    if (!(await page.$("#artifacts"))) fail("medium has the small tier's panels too");
    const row = `#approvals tr[data-run="${run.run_id}"]`;
    await page.waitForSelector(row, { timeout: 30000 }).catch(() => fail("the run waits for approval in the dashboard"));
    await page.fill(row + " input.reason", "checked in the browser");
    await page.click(row + " button.approve");
    await page.waitForSelector(`#workflows tr[data-run="${run.run_id}"][data-status="succeeded"]`, { timeout: 30000 })
      .catch(() => fail("the approved run shows as succeeded"));
    if (await page.$(row)) fail("a decided run no longer waits");
    const got = await mcpCall("kv_get", { key: "browser-greeting" });
    if (got.value !== stamp) fail("the approved subtask ran: " + JSON.stringify(got));
  } else if (tier === "large") {
    await page.waitForFunction(() => document.getElementById("memory-collection").textContent.includes("notes (2)"), null, { timeout: 10000 })
      .catch(() => fail("the memory panel lists the collection with its count"));
    if (await page.isVisible("#memory-empty")) fail("no empty-state text once a collection exists");
    await page.fill("#memory-query", "database failover");
    await page.click("#memory-form button");
    await page.waitForFunction(() => document.querySelector("#memory-hits tr td:nth-child(2)")?.textContent === "db", null, { timeout: 10000 })
      .catch(async () => fail("the memory search finds by meaning: " + (await page.textContent("#memory-hits"))));
    const rows = await page.$$("#memory-hits tr");
    if (rows.length !== 2) fail("both documents are ranked: " + rows.length);
    // The server's own metrics, as the tenant's calls made them: one memory_put, its
    // embedding by the local model.
    const metric = ([name, of]) => [...document.querySelectorAll("#metrics-rows tr")]
      .map((tr) => [...tr.children].map((td) => td.textContent))
      .find((c) => c[0] === name && c[1] === of);
    await page.waitForFunction(metric, ["ToolCalls", "memory_put"], { timeout: 15000 })
      .catch(async () => fail("the metrics panel shows the tool calls: " + (await page.textContent("#metrics-rows"))));
    const calls = await page.evaluate(metric, ["ToolCalls", "memory_put"]);
    if (calls[2] !== "1") fail("one memory_put counted: " + calls);
    const embedding = await page.evaluate(metric, ["EmbeddingLatency", "local"]);
    if (!embedding || !(Number(embedding[4]) > 0)) fail("the embedding's latency shows, by provider: " + embedding);
    if (await page.isVisible("#metrics-empty")) fail("no empty-state text once there are metrics");
  } else if (await page.$("#artifacts")) {
    fail("extra-small has no artifacts panel");
  }
  if (shot) await page.screenshot({ path: shot, fullPage: true });
  console.log("dashboard: all checks passed");
} finally {
  await browser.close();
}
