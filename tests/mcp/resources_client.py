"""Drives the server's MCP resources, completion and logging with the official Python MCP SDK
over Streamable HTTP (a small-tier server: KV entries and artifacts): listing page after page,
reading text and bytes, the templates, completing keys, a tenant that cannot see another's,
and a warning sent to a session that asked for warnings when one of its tool calls fails.

  resources_client.py URL TOKEN_TENANT_A TOKEN_TENANT_B

Exits 0 when every check passed; prints each failed check.
"""
import asyncio
import base64
import sys

from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError as McpError

from python_client import call, check, failures

PNG = bytes([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, 0xFF, 0xFE])
BULK = 120


async def session(url, token, body, logged=None):
    async def on_log(params):
        if logged is not None:
            logged.append(params)

    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as c:
        async with streamable_http_client(url, http_client=c) as (r, w):
            async with ClientSession(r, w, logging_callback=on_log) as s:
                init = await s.initialize()
                await body(s, init)


async def list_all(s):
    uris, cursor, pages = [], None, 0
    while True:
        page = await s.list_resources(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        pages += 1
        uris += [(str(r.uri), r.name, r.mime_type, r.size) for r in page.resources]
        cursor = page.next_cursor
        if not cursor or pages > 10:
            return uris, pages


async def tenant_b(s, init):
    err, _, text = await call(s, "kv_set", {"key": "theirs", "value": "b's"})
    check(not err, f"b writes ({text})")


async def tenant_a(s, init):
    caps = init.capabilities
    check(caps.resources is not None and caps.logging is not None and caps.completions is not None,
          f"the server declares resources, logging and completions ({caps})")
    for key, value in [("notes/a b", "hello"), ("config", '{"x": 1}')]:
        err, _, text = await call(s, "kv_set", {"key": key, "value": value})
        check(not err, f"kv_set {key} ({text})")
    for i in range(BULK):
        err, _, text = await call(s, "kv_set", {"key": f"bulk/{i:03}", "value": str(i)})
        check(not err, f"kv_set bulk/{i:03} ({text})")
    err, _, text = await call(s, "artifacts_put", {"key": "reports/q3.md", "content": "# Q3\n", "content_type": "text/markdown"})
    check(not err, f"artifacts_put text ({text})")
    err, _, text = await call(s, "artifacts_put", {"key": "img/x.png", "content": base64.b64encode(PNG).decode(), "encoding": "base64", "content_type": "image/png"})
    check(not err, f"artifacts_put bytes ({text})")

    listed, pages = await list_all(s)
    uris = [u for u, _, _, _ in listed]
    check(len(uris) == len(set(uris)), f"no resource listed twice ({len(uris)} listed)")
    check(pages >= 2, f"more than a page of resources comes in pages ({pages})")
    want = {"agentbus://kv/notes%2Fa%20b", "agentbus://kv/config", "agentbus://artifacts/reports%2Fq3.md", "agentbus://artifacts/img%2Fx.png"}
    check(want <= set(uris), f"a's entries and artifacts are listed ({sorted(set(uris))[:6]}...)")
    check(len(uris) == BULK + 4, f"exactly a's resources: {len(uris)} of {BULK + 4}")
    check(not any("theirs" in u for u in uris), "b's entry is not listed to a")
    by_uri = {u: (n, m, z) for u, n, m, z in listed}
    check(by_uri.get("agentbus://artifacts/img%2Fx.png") == ("img/x.png", "image/png", len(PNG)),
          f"an artifact is listed by its key, type and size ({by_uri.get('agentbus://artifacts/img%2Fx.png')})")

    r = await s.read_resource("agentbus://kv/notes%2Fa%20b")
    c = r.contents[0]
    check(getattr(c, "text", None) == "hello" and c.mime_type == "text/plain", f"a KV entry reads as its value ({c})")
    r = await s.read_resource("agentbus://artifacts/reports%2Fq3.md")
    c = r.contents[0]
    check(getattr(c, "text", None) == "# Q3\n" and c.mime_type == "text/markdown", f"a text artifact reads as text ({c})")
    r = await s.read_resource("agentbus://artifacts/img%2Fx.png")
    c = r.contents[0]
    check(base64.b64decode(getattr(c, "blob", "") or "") == PNG and c.mime_type == "image/png", f"bytes read as a blob ({c})")
    for uri in ["agentbus://kv/theirs", "agentbus://kv/nothing-here", "agentbus://nope/x", "file:///etc/passwd"]:
        try:
            await s.read_resource(uri)
            check(False, f"{uri} is not a's to read")
        except McpError as e:
            check(e.error.code == -32002, f"{uri}: resource not found, -32002 ({e.error.code} {e.error.message})")

    t = await s.list_resource_templates()
    templates = {str(x.uri_template) for x in t.resource_templates}
    check(templates == {"agentbus://kv/{key}", "agentbus://artifacts/{key}"}, f"the templates ({templates})")

    done = await s.complete(types.ResourceTemplateReference(type="ref/resource", uri="agentbus://kv/{key}"), {"name": "key", "value": "no"})
    check(done.completion.values == ["notes/a b"], f"a KV key completes from a's keys ({done.completion})")
    done = await s.complete(types.ResourceTemplateReference(type="ref/resource", uri="agentbus://kv/{key}"), {"name": "key", "value": "th"})
    check(done.completion.values == [], f"b's keys are not completed for a ({done.completion})")
    done = await s.complete(types.ResourceTemplateReference(type="ref/resource", uri="agentbus://kv/{key}"), {"name": "key", "value": "bulk/"})
    check(len(done.completion.values) == 100 and done.completion.has_more, f"at most 100 completions, and there are more ({len(done.completion.values)})")
    done = await s.complete(types.ResourceTemplateReference(type="ref/resource", uri="agentbus://artifacts/{key}"), {"name": "key", "value": "rep"})
    check(done.completion.values == ["reports/q3.md"], f"an artifact key completes ({done.completion})")
    try:
        await s.complete(types.ResourceTemplateReference(type="ref/resource", uri="agentbus://kv/{key}"), {"name": "value", "value": "x"})
        check(False, "only key completes")
    except McpError as e:
        check(e.error.code == -32602, f"another argument is invalid params ({e.error.code})")


async def logging_a(s, init, logged):
    err, _, _ = await call(s, "kv_get", {"key": "config", "nope": 1})
    check(err, "a call with an argument kv_get does not take fails")
    await asyncio.sleep(0.5)
    check(logged == [], f"no log messages before logging/setLevel ({logged})")
    await s.set_logging_level("warning")
    err, _, _ = await call(s, "kv_get", {"key": "config", "nope": 1})
    check(err, "the failing call again")
    for _ in range(20):
        if logged:
            break
        await asyncio.sleep(0.1)
    check(len(logged) == 1, f"one log message for the failed call ({logged})")
    if logged:
        m = logged[0]
        check(m.level == "warning" and m.logger == "agentbus", f"a warning from agentbus ({m})")
        check(m.data.get("tool") == "kv_get" and m.data.get("error") == "tool_error" and len(m.data.get("trace_id", "")) == 32,
              f"naming the tool, the error and the trace ({m.data})")
    await s.set_logging_level("error")
    await call(s, "kv_get", {"key": "config", "nope": 1})
    await asyncio.sleep(0.5)
    check(len(logged) == 1, f"no warnings once the session asks for errors only ({len(logged)})")


async def main(url, token_a, token_b):
    await session(url, token_b, tenant_b)
    await session(url, token_a, tenant_a)
    logged = []
    await session(url, token_a, lambda s, init: logging_a(s, init, logged), logged)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
    print(f"python mcp client (resources, completion, logging): {len(failures)} failed check(s)")
    sys.exit(1 if failures else 0)
