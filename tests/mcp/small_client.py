"""Drives the small tier's MCP tools (artifacts, timeline, event monitoring) with the official
Python MCP SDK over Streamable HTTP: round trips, pagination, tenant isolation, a viewer, bad
input, and a webhook subscription delivering to a receiver on 127.0.0.1 (which fails the first
request, so the delivery is retried) with the HMAC signature checked.

  small_client.py URL TOKEN_TENANT_A TOKEN_TENANT_B VIEWER_TOKEN_A embedded|aws

Exits 0 when every check passed; prints each failed check.
"""
import asyncio
from urllib.parse import urlsplit
import base64
import hashlib
import hmac
import http.server
import json
import sys
import threading
import time

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from python_client import TOOLS, call, check, described, failures, kind

BACKEND = sys.argv[5] if len(sys.argv) > 5 else "embedded"

SMALL_TOOLS = {
    "artifacts_put", "artifacts_get", "artifacts_list", "artifacts_delete", "artifacts_url",
    "timeline_append", "timeline_query",
    "events_query", "events_get", "events_counts", "events_health", "rules_put", "rules_list", "rules_delete",
    "subscriptions_create", "subscriptions_list", "subscriptions_delete", "subscriptions_enable",
}
SHARED = {}


class Receiver(http.server.BaseHTTPRequestHandler):
    """Records every POST; answers 503 to the first, 204 to the rest."""
    seen = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Receiver.seen.append((dict((k.lower(), v) for k, v in self.headers.items()), body))
        self.send_response(503 if len(Receiver.seen) == 1 else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def start_receiver():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}/hook"


async def wait_for(s, tool, args, pred, what, timeout=45):
    """Polls a read tool until pred(out) holds (events reach the monitor asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        err, out, text = await call(s, tool, args)
        if not err and pred(out):
            return out
        if time.monotonic() > deadline:
            check(False, f"{what} (last answer: {out} {text})")
            return out
        await asyncio.sleep(0.5)


async def monitor_a(s):
    err, out, text = await call(s, "rules_put", {"name": "failed-builds", "pattern": {"priority": "error"}})
    check(err and "at priority" in text and "must be a list" in text, f"rules_put refuses a bad pattern, saying where ({text})")
    err, out, text = await call(s, "rules_put", {"name": "bad name", "pattern": {"source": ["x"]}})
    check(err, f"rules_put refuses a bad name ({text})")
    pattern = {"detail-type": [{"suffix": ".failed"}], "priority": ["error", "critical"]}
    err, out, text = await call(s, "rules_put", {"name": "failed-builds", "pattern": pattern, "description": "failed builds"})
    check(not err and out["name"] == "failed-builds" and out["pattern"] == pattern and out["enabled"], f"rules_put ({out} {text})")
    url = start_receiver()
    err, out, text = await call(s, "subscriptions_create", {"rule": "nope", "url": url})
    check(err and "no rule" in text, f"subscriptions_create needs an existing rule ({text})")
    err, out, text = await call(s, "subscriptions_create", {"rule": "failed-builds", "url": "ftp://127.0.0.1/x"})
    check(err and "url" in text, f"subscriptions_create refuses a bad URL ({text})")
    err, out, text = await call(s, "subscriptions_create", {"rule": "failed-builds", "url": url})
    check(not err and out["signing_secret"].startswith("whsec_"), f"subscriptions_create ({out} {text})")
    if err:
        return
    secret, sub = out["signing_secret"], out["subscription"]["subscription_id"]
    SHARED["sub"] = sub
    SHARED["url"] = url
    err, out, text = await call(s, "rules_delete", {"name": "failed-builds"})
    check(err and sub in text, f"a rule in use is not deleted ({text})")

    err, hit, _ = await call(s, "events_send", {"detail_type": "build.failed", "detail": {"priority": "error", "build": 7}})
    err2, miss, _ = await call(s, "events_send", {"detail_type": "build.started", "detail": {"build": 8}})
    check(not err and not err2, "events_send")
    SHARED["event"] = hit["id"]
    out = await wait_for(s, "events_query", {"detail_type": "build.failed"},
                         lambda o: any(e["event_id"] == hit["id"] for e in o["events"]),
                         "the event sent through MCP is recorded")
    mine = [e for e in out["events"] if e["event_id"] == hit["id"]]
    check(len(mine) == 1 and mine[0]["priority"] == "error" and mine[0]["source"] == "agentbus"
          and mine[0]["detail"] == {"priority": "error", "build": 7}, f"recorded once, as sent ({mine})")
    await wait_for(s, "events_query", {"priority": "info", "source": "agentbus"},
                   lambda o: any(e["event_id"] == miss["id"] for e in o["events"]),
                   "the second event is recorded too")
    err, out, _ = await call(s, "events_get", {"event_id": hit["id"]})
    check(not err and out["found"] and out["event"]["detail_type"] == "build.failed", f"events_get ({out})")

    # The webhook: a 503, then the retry succeeds; only the matching events are delivered.
    # No sleep proves "nothing else comes": a matching sentinel, sent after the non-matching
    # event was recorded, is delivered after anything that event could have caused.
    deadline = time.monotonic() + 30
    while len(Receiver.seen) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    err, sentinel, _ = await call(s, "events_send", {"detail_type": "sentinel.failed", "detail": {"priority": "critical"}})
    check(not err, "events_send (the sentinel)")
    delivered = lambda: [json.loads(b)["event"]["id"] for _, b in list(Receiver.seen)]
    deadline = time.monotonic() + 30
    while sentinel["id"] not in delivered() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    check(delivered() == [hit["id"], hit["id"], sentinel["id"]],
          f"the event twice (a 503, then the retry), then the sentinel, and nothing else ({delivered()})")
    seen = list(Receiver.seen)
    for n, (h, body) in enumerate(seen[:2]):
        sig = h.get("x-agentbus-signature", "")
        parts = dict(p.split("=", 1) for p in sig.split(",") if "=" in p)
        want = hmac.new(secret.encode(), f"{parts.get('t')}.".encode() + body, hashlib.sha256).hexdigest()
        check(hmac.compare_digest(parts.get("v1", ""), want), f"delivery {n + 1} is signed with the secret")
        check(abs(int(parts.get("t", "0")) - time.time()) < 120, "the signature's time is now")
        check(h.get("x-agentbus-attempt") == str(n + 1), f"attempt header {h.get('x-agentbus-attempt')}")
        v = json.loads(body)
        check(v["event"]["id"] == hit["id"] and v["rule"] == "failed-builds" and v["subscription_id"] == sub
              and v["event"]["detail"]["build"] == 7, f"delivered the matching event ({v})")
    out = await wait_for(s, "subscriptions_list", {}, lambda o: o["subscriptions"] and o["subscriptions"][0]["stats"]["delivered"] >= 2,
                         "both deliveries are counted")
    st = out["subscriptions"][0]["stats"]
    check(st["delivered"] == 2 and st["failed"] == 0 and st["last_outcome"] == "204 after 1 attempt", f"delivery stats ({st})")
    check("whsec_" not in json.dumps(out), "subscriptions_list shows no secret")

    err, out, _ = await call(s, "events_counts", {"granularity": "hour"})
    check(not err and out["total"] >= 2 and out["complete"], f"events_counts ({out})")
    by_type = {}
    for b in (out or {}).get("buckets", []):
        for k, v in b["by_type"].items():
            by_type[k] = by_type.get(k, 0) + v
    check(by_type.get("build.failed", 0) >= 1 and by_type.get("build.started", 0) >= 1, f"counts by type ({by_type})")
    err, out, _ = await call(s, "events_health", {})
    check(not err and out["status"] == "active" and out["events_24h"] >= 2 and out["by_priority"]["error"] >= 1
          and out["subscriptions"] == 1 and out["failing_subscriptions"] == [] and out["latest_event_at"], f"events_health ({out})")
    err, out, text = await call(s, "events_counts", {"granularity": "week"})
    check(err, f"events_counts refuses an unknown granularity ({text})")
    err, out, text = await call(s, "events_query", {"priority": "urgent"})
    check(err and "info, warning" in text, f"events_query refuses an unknown priority ({text})")
    err, out, text = await call(s, "events_query", {"limit": 0})
    check(err and "limit" in text, f"events_query refuses limit 0 ({text})")


async def monitor_b(s):
    err, out, _ = await call(s, "events_query", {})
    # Tenant b sent no event of its own: it must see exactly none (an all() over nothing proves nothing).
    check(not err and out["events"] == [], f"tenant b sees none of a's events ({out})")
    if "event" in SHARED:
        err, out, _ = await call(s, "events_get", {"event_id": SHARED["event"]})
        check(not err and out["found"] is False, f"tenant b cannot read a's event ({out})")
    err, out, _ = await call(s, "rules_list", {})
    check(not err and out["rules"] == [], f"tenant b has none of a's rules ({out})")
    err, out, _ = await call(s, "rules_delete", {"name": "failed-builds"})
    check(not err and out["deleted"] is False, "tenant b cannot delete a's rule")
    err, out, _ = await call(s, "subscriptions_list", {})
    check(not err and out["subscriptions"] == [], f"tenant b has none of a's subscriptions ({out})")
    if "sub" in SHARED:
        err, out, _ = await call(s, "subscriptions_delete", {"subscription_id": SHARED["sub"]})
        check(not err and out["deleted"] is False, "tenant b cannot delete a's subscription")
        err, out, text = await call(s, "subscriptions_enable", {"subscription_id": SHARED["sub"], "enabled": False})
        check(err and text.kind == "tool_error" and "no subscription" in text, f"tenant b cannot turn off a's subscription ({text})")
    err, out, text = await call(s, "subscriptions_create", {"rule": "failed-builds", "url": "http://127.0.0.1:9/x"})
    check(err and "no rule" in text, f"tenant b cannot subscribe to a's rule ({text})")
    err, out, _ = await call(s, "events_counts", {})
    check(not err and out["total"] == 0, f"tenant b counts none of a's events ({out})")
    err, out, _ = await call(s, "events_health", {})
    check(not err and out["status"] == "idle" and out["events_24h"] == 0 and out["subscriptions"] == 0, f"tenant b's health shows none of a's ({out})")


async def monitor_viewer(s):
    err, out, _ = await call(s, "events_query", {"detail_type": "build.failed"})
    check(not err and len(out["events"]) >= 1, "a viewer reads its tenant's events")
    # A webhook URL often carries a credential in its path or query: a viewer sees only where it goes.
    err, out, _ = await call(s, "subscriptions_list", {})
    urls = [x["url"] for x in out["subscriptions"]] if not err else []
    full = urlsplit(SHARED.get("url", "http://x/"))
    check(urls == [f"{full.scheme}://{full.netloc}/…"], f"a viewer sees the webhook's host only ({urls})")
    err, out, _ = await call(s, "rules_list", {})
    check(not err and len(out["rules"]) == 1, "a viewer lists its tenant's rules")
    for tool, args in [("rules_put", {"name": "v", "pattern": {"source": ["x"]}}),
                       ("rules_delete", {"name": "failed-builds"}),
                       ("subscriptions_create", {"rule": "failed-builds", "url": "http://127.0.0.1:9/"}),
                       ("subscriptions_delete", {"subscription_id": SHARED.get("sub", "sub-0")}),
                       ("subscriptions_enable", {"subscription_id": SHARED.get("sub", "sub-0"), "enabled": False})]:
        err, out, text = await call(s, tool, args)
        check(err and "read-only" in text, f"a viewer cannot {tool} ({text})")


async def session(url, token, body):
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as c:
        async with streamable_http_client(url, http_client=c) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                await body(s)


async def tenant_a(s):
    tools = (await s.list_tools()).tools
    names = {t.name for t in tools}
    check(names == TOOLS | SMALL_TOOLS, f"small tier tools: {sorted(names)}")
    for t in tools:
        if t.name in SMALL_TOOLS:
            check(t.input_schema.get("type") == "object", f"{t.name} has an input schema")
            check(t.output_schema is not None, f"{t.name} has an output schema")
            check(t.annotations is not None and t.annotations.read_only_hint is not None, f"{t.name} has annotations")
            described(t, "small")
    rules_put = next(t for t in tools if t.name == "rules_put")
    check(rules_put.input_schema["properties"]["pattern"].get("type") == "object", "rules_put.pattern is an object")

    err, out, text = await call(s, "artifacts_put", {"key": "plans/plan.md", "content": "# plan\n"})
    check(not err and out["size"] == 7 and out["content_type"].startswith("text/plain"), f"artifacts_put text ({out} {text})")
    blob = bytes(range(256))
    err, out, _ = await call(s, "artifacts_put", {"key": "bin/blob", "content": base64.b64encode(blob).decode(), "encoding": "base64"})
    check(not err and out["size"] == 256, f"artifacts_put base64 ({out})")
    err, out, _ = await call(s, "artifacts_get", {"key": "plans/plan.md"})
    check(not err and out["found"] and out["content"] == "# plan\n" and out["encoding"] == "utf8", f"artifacts_get text ({out})")
    err, out, _ = await call(s, "artifacts_get", {"key": "bin/blob"})
    check(not err and out["encoding"] == "base64" and base64.b64decode(out["content"]) == blob, "artifacts_get binary")
    # Bytes stored as base64 come back as base64 even when they happen to be valid UTF-8.
    err, out, _ = await call(s, "artifacts_put", {"key": "bin/small", "content": "AAECAwQ=", "encoding": "base64"})
    check(not err, f"artifacts_put base64 that is valid UTF-8 ({out})")
    err, out, _ = await call(s, "artifacts_get", {"key": "bin/small"})
    check(not err and out["encoding"] == "base64" and out["content"] == "AAECAwQ=", f"artifacts_get round-trips base64 ({out})")
    err, out, _ = await call(s, "artifacts_get", {"key": "nothing/here"})
    check(not err and out["found"] is False, f"artifacts_get of an absent key ({out})")

    for i in range(12):
        await call(s, "artifacts_put", {"key": f"reports/r{i:02}.txt", "content": str(i)})
    keys, cursor, pages = [], None, 0
    while True:
        args = {"prefix": "reports/", "limit": 5}
        if cursor:
            args["cursor"] = cursor
        err, out, _ = await call(s, "artifacts_list", args)
        check(not err, f"artifacts_list ({out})")
        pages += 1
        keys += [a["key"] for a in out["artifacts"]]
        cursor = out.get("next_cursor")
        if not cursor:
            break
    check(pages == 3 and keys == [f"reports/r{i:02}.txt" for i in range(12)], f"artifacts_list pages ({pages}, {keys})")

    err, out, text = await call(s, "artifacts_url", {"key": "bin/blob"})
    if BACKEND == "aws":
        check(not err and out["method"] == "GET" and "tenants/tenant-a/bin/blob" in out["url"], f"artifacts_url ({out} {text})")
    else:
        check(err and "local disk" in text, f"artifacts_url says embedded has no URLs ({text})")
    for bad in [{"key": "../etc/passwd", "content": "x"}, {"key": "a", "content": "!!", "encoding": "base64"}, {"key": "a", "content": "x", "encoding": "rot13"}]:
        err, out, text = await call(s, "artifacts_put", bad)
        check(err, f"artifacts_put refuses {bad} ({text})")
    err, out, _ = await call(s, "artifacts_get", {"key": "a"})
    check(not err and out["found"] is False, "refused writes wrote nothing")
    # The documented inline limit is reachable: a 10 MiB binary artifact through the tool
    # (base64: 14 MB of JSON), and one byte more is refused by the tool, not the transport.
    big = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    err, out, text = await call(s, "artifacts_put", {"key": "bin/10mib", "content": base64.b64encode(big).decode(), "encoding": "base64"})
    check(not err and out["size"] == len(big), f"a 10 MiB artifact is stored ({text[:300]})")
    # (Read back through artifacts_list: the SDK's client refuses server-sent events over
    # 1 MiB, so a result that size cannot reach it whatever the server sends.)
    err, out, text = await call(s, "artifacts_list", {"prefix": "bin/10mib"})
    check(not err and [(a["key"], a["size"]) for a in out["artifacts"]] == [("bin/10mib", len(big))], f"a 10 MiB artifact is listed with its size ({out})")
    err, out, text = await call(s, "artifacts_put", {"key": "bin/too-big", "content": base64.b64encode(big + b"x").decode(), "encoding": "base64"})
    check(err and kind(text) == "tool_error" and "limit" in text, f"one byte more is refused by the tool ({text[:300]})")
    err, out, _ = await call(s, "artifacts_delete", {"key": "bin/10mib"})
    check(not err and out["deleted"], "the 10 MiB artifact is deleted")

    for i in range(4):
        err, out, text = await call(s, "timeline_append", {
            "agent": "critic" if i % 2 else "conductor", "task_id": f"t{i}", "action": "review",
            "summary": f"step {i}", "artifacts": ["plans/plan.md"], "refs": {"prs": ["https://example.com/1"]},
            "metrics": {"cost_delta_monthly": 2.5},
        })
        check(not err and out["ts"].endswith("Z") and out["agent"] in ("critic", "conductor"), f"timeline_append ({out} {text})")
    err, out, _ = await call(s, "timeline_query", {"agent": "critic"})
    check(not err and [r["task_id"] for r in out["records"]] == ["t1", "t3"], f"timeline_query by agent ({out})")
    err, out, _ = await call(s, "timeline_query", {"from": "2000-01-01T00:00:00Z", "limit": 3})
    check(not err and len(out["records"]) == 3 and out["next_cursor"], f"timeline_query paginates ({out})")
    err, out, text = await call(s, "timeline_append", {"agent": "Bad Agent", "task_id": "t", "action": "a", "summary": "s"})
    check(err, f"timeline_append refuses a bad agent ({text})")
    err, out, text = await call(s, "timeline_query", {"from": "last tuesday"})
    check(err and "RFC 3339" in text, f"timeline_query refuses a bad time ({text})")


async def tenant_b(s):
    err, out, _ = await call(s, "artifacts_get", {"key": "plans/plan.md"})
    check(not err and out["found"] is False, f"tenant b cannot read a's artifact ({out})")
    err, out, _ = await call(s, "artifacts_list", {})
    check(not err and out["artifacts"] == [], f"tenant b lists none of a's artifacts ({out})")
    err, out, _ = await call(s, "artifacts_delete", {"key": "plans/plan.md"})
    check(not err and out["deleted"] is False, "tenant b cannot delete a's artifact")
    err, out, _ = await call(s, "timeline_query", {})
    check(not err and out["records"] == [], f"tenant b sees none of a's timeline ({out})")


async def viewer_a(s):
    err, out, _ = await call(s, "artifacts_get", {"key": "plans/plan.md"})
    check(not err and out["found"], "a viewer reads its tenant's artifacts")
    err, out, text = await call(s, "artifacts_put", {"key": "v", "content": "x"})
    check(err and "read-only" in text, f"a viewer cannot write artifacts ({text})")
    err, out, text = await call(s, "timeline_append", {"agent": "x", "task_id": "t", "action": "a", "summary": "s"})
    check(err and "read-only" in text, f"a viewer cannot append to the timeline ({text})")
    err, out, _ = await call(s, "artifacts_delete", {"key": "plans/plan.md"})
    check(err, "a viewer cannot delete")


async def main(url, token_a, token_b, viewer):
    await session(url, token_a, tenant_a)
    await session(url, token_a, monitor_a)
    await session(url, token_b, tenant_b)
    await session(url, token_b, monitor_b)
    await session(url, viewer, viewer_a)
    await session(url, viewer, monitor_viewer)

    async def still_there(s):
        err, out, _ = await call(s, "artifacts_get", {"key": "plans/plan.md"})
        check(not err and out["found"], "a's artifact survived b and the viewer")
        err, out, _ = await call(s, "subscriptions_list", {})
        check(not err and len(out["subscriptions"]) == 1, "a's subscription survived b and the viewer")
        err, out, _ = await call(s, "rules_list", {})
        check(not err and [r["name"] for r in out["rules"]] == ["failed-builds"], "a's rule survived b and the viewer")
    await session(url, token_a, still_there)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
    print(f"python mcp client (small tier): {len(failures)} failed check(s)")
    sys.exit(1 if failures else 0)
