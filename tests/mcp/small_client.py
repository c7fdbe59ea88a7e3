"""Drives the small tier's MCP tools (artifacts, timeline) with the official Python MCP SDK
over Streamable HTTP: round trips, pagination, tenant isolation, a viewer, bad input.

  small_client.py URL TOKEN_TENANT_A TOKEN_TENANT_B VIEWER_TOKEN_A embedded|aws

Exits 0 when every check passed; prints each failed check.
"""
import asyncio
import base64
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from python_client import TOOLS, call, check, failures

BACKEND = sys.argv[5] if len(sys.argv) > 5 else "embedded"

SMALL_TOOLS = {
    "artifacts_put", "artifacts_get", "artifacts_list", "artifacts_delete", "artifacts_url",
    "timeline_append", "timeline_query",
}


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

    err, out, text = await call(s, "artifacts_put", {"key": "plans/plan.md", "content": "# plan\n"})
    check(not err and out["size"] == 7 and out["content_type"].startswith("text/plain"), f"artifacts_put text ({out} {text})")
    blob = bytes(range(256))
    err, out, _ = await call(s, "artifacts_put", {"key": "bin/blob", "content": base64.b64encode(blob).decode(), "encoding": "base64"})
    check(not err and out["size"] == 256, f"artifacts_put base64 ({out})")
    err, out, _ = await call(s, "artifacts_get", {"key": "plans/plan.md"})
    check(not err and out["found"] and out["content"] == "# plan\n" and out["encoding"] == "utf8", f"artifacts_get text ({out})")
    err, out, _ = await call(s, "artifacts_get", {"key": "bin/blob"})
    check(not err and out["encoding"] == "base64" and base64.b64decode(out["content"]) == blob, "artifacts_get binary")
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
    await session(url, token_b, tenant_b)
    await session(url, viewer, viewer_a)

    async def still_there(s):
        err, out, _ = await call(s, "artifacts_get", {"key": "plans/plan.md"})
        check(not err and out["found"], "a's artifact survived b and the viewer")
    await session(url, token_a, still_there)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
    print(f"python mcp client (small tier): {len(failures)} failed check(s)")
    sys.exit(1 if failures else 0)
