"""Drives the server's MCP resources, completion and logging with the official Python MCP SDK
over Streamable HTTP (a small-tier server: KV entries and artifacts): listing page after page,
reading text and bytes, the templates, completing keys, a tenant that cannot see another's,
a warning sent to a session that asked for warnings when one of its tool calls fails, and
resource subscriptions: a session that subscribed (`resources/subscribe`, 2025-11-25) and a
`subscriptions/listen` stream (2026-07-28) are told when a KV entry or an artifact they watch
changes through another session, and not when another tenant's resource of the same key
changes, nor one they stopped watching. Absence is proven by order, never by waiting: each
"not told" is followed by a change that must be the next thing told.

  resources_client.py URL TOKEN_TENANT_A TOKEN_TENANT_B

Exits 0 when every check passed; prints each failed check.
"""
import asyncio
import base64
import json
import sys
from urllib.parse import quote

from mcp import Client, ClientSession, types
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
    err, rec, text = await call(s, "timeline_append", {"agent": "critic", "task_id": "t-1", "action": "review", "summary": "plan approved", "artifacts": ["reports/q3.md"]})
    check(not err, f"timeline_append ({text})")
    # The name percent-encoded, as every resource key is (its time has colons).
    record_uri = "agentbus://timeline/" + quote(f"{rec['ts']}_critic_{rec['id']}", safe="") if rec else None

    listed, pages = await list_all(s)
    uris = [u for u, _, _, _ in listed]
    check(len(uris) == len(set(uris)), f"no resource listed twice ({len(uris)} listed)")
    check(pages >= 2, f"more than a page of resources comes in pages ({pages})")
    want = {"agentbus://kv/notes%2Fa%20b", "agentbus://kv/config", "agentbus://artifacts/reports%2Fq3.md", "agentbus://artifacts/img%2Fx.png"}
    want.add(record_uri)
    check(want <= set(uris), f"a's entries, artifacts and timeline record are listed ({sorted(set(uris))[:6]}...)")
    check(len(uris) == BULK + 5, f"exactly a's resources: {len(uris)} of {BULK + 5}")
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
    r = await s.read_resource(record_uri)
    c = r.contents[0]
    got = json.loads(getattr(c, "text", "null") or "null")
    check(c.mime_type == "application/json" and got and got.get("id") == rec["id"] and got.get("summary") == "plan approved"
          and got.get("artifacts") == ["reports/q3.md"], f"a timeline record reads as its JSON ({c})")
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
    check(templates == {"agentbus://kv/{key}", "agentbus://artifacts/{key}", "agentbus://timeline/{key}"}, f"the templates ({templates})")

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
    """Absence by order: a message that should not be sent would come before the next one
    that should (one session, one stream), so each "not sent" is followed by a call whose
    message must be the next one."""
    async def next_message(n):
        for _ in range(200):
            if len(logged) >= n:
                return logged[n - 1]
            await asyncio.sleep(0.1)
        check(False, f"log message {n} within 20 s ({logged})")
        return None

    err, _, _ = await call(s, "kv_get", {"key": "config", "nope": 1})
    check(err, "a call with an argument kv_get does not take fails")
    await s.set_logging_level("warning")
    err, _, _ = await call(s, "kv_list", {"nope": 1})
    check(err, "a failing kv_list")
    m = await next_message(1)
    if m:
        check(m.level == "warning" and m.logger == "agentbus", f"a warning from agentbus ({m})")
        check(m.data.get("tool") == "kv_list" and m.data.get("error") == "tool_error" and len(m.data.get("trace_id", "")) == 32,
              f"for the call after logging/setLevel, not the one before: the tool, the error and the trace ({m.data})")
    await s.set_logging_level("error")
    await call(s, "kv_get", {"key": "config", "nope": 1})
    await s.set_logging_level("warning")
    await call(s, "kv_set", {"key": "x", "nope": 1})
    m = await next_message(2)
    check(m is not None and m.data.get("tool") == "kv_set",
          f"no warning while the session asked for errors only: the next is kv_set's ({m and m.data})")


ART = "agentbus://artifacts/watched%2Freport.md"
KV = "agentbus://kv/watched"
KV2 = "agentbus://kv/watched-2"
KV3 = "agentbus://kv/watched-3"
WAIT = 20  # seconds: a bound on a hang, not a time anything is expected to take


async def told(queue, what):
    """The next URI the server told of (None, and a failed check, if nothing came)."""
    try:
        return await asyncio.wait_for(queue.get(), WAIT)
    except asyncio.TimeoutError:
        check(False, f"told of {what} within {WAIT} s")
        return None


async def legacy_subscriptions(url, token_a, token_b):
    updates = asyncio.Queue()

    async def on_message(m):
        if isinstance(m, types.ResourceUpdatedNotification):
            await updates.put(str(m.params.uri))

    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token_a}"}) as c, \
            create_mcp_http_client(headers={"Authorization": f"Bearer {token_b}"}) as cb:
        async with streamable_http_client(url, http_client=c) as (r, w), \
                streamable_http_client(url, http_client=c) as (r2, w2), \
                streamable_http_client(url, http_client=cb) as (rb, wb):
            async with ClientSession(r, w, message_handler=on_message) as watcher, \
                    ClientSession(r2, w2) as writer, ClientSession(rb, wb) as other:
                init = await watcher.initialize()
                await writer.initialize()
                await other.initialize()
                check(init.capabilities.resources is not None and init.capabilities.resources.subscribe is True,
                      f"the server declares resource subscriptions ({init.capabilities.resources})")
                await watcher.subscribe_resource(ART)
                await watcher.subscribe_resource(KV)
                for uri in ["file:///etc/passwd", "agentbus://nope/x"]:
                    try:
                        await watcher.subscribe_resource(uri)
                        check(False, f"{uri} cannot be subscribed to")
                    except McpError as e:
                        check(e.error.code == -32002, f"{uri}: resource not found, -32002 ({e.error.code} {e.error.message})")

                err, _, text = await call(writer, "artifacts_put", {"key": "watched/report.md", "content": "v1", "content_type": "text/markdown"})
                check(not err, f"artifacts_put ({text})")
                got = await told(updates, "the artifact written by another session")
                check(got == ART, f"the artifact's update ({got})")

                # b's own `watched` changes first; a's watcher must hear of a's write next.
                err, _, text = await call(other, "kv_set", {"key": "watched", "value": "b's"})
                check(not err, f"b writes its own entry ({text})")
                err, _, text = await call(writer, "kv_set", {"key": "watched", "value": "1"})
                check(not err, f"kv_set ({text})")
                got = await told(updates, "the KV entry")
                check(got == KV, f"a's entry, not b's of the same key ({got})")

                # Unsubscribed from the entry: its next change is not told, the artifact's is.
                await watcher.unsubscribe_resource(KV)
                err, _, _ = await call(writer, "kv_set", {"key": "watched", "value": "2"})
                check(not err, "kv_set again")
                err, _, _ = await call(writer, "kv_set", {"key": "never-watched", "value": "x"})
                check(not err, "kv_set of an entry nobody watches")
                err, _, _ = await call(writer, "artifacts_delete", {"key": "watched/report.md"})
                check(not err, "artifacts_delete")
                got = await told(updates, "the deleted artifact")
                check(got == ART, f"the deletion is told, and nothing unwatched before it ({got})")


async def listen_subscriptions(url, token_a, token_b):
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token_a}"}) as c, \
            create_mcp_http_client(headers={"Authorization": f"Bearer {token_b}"}) as cb:
        async with Client(streamable_http_client(url, http_client=c)) as client, \
                Client(streamable_http_client(url, http_client=cb)) as other:
            check(client.protocol_version == "2026-07-28", f"a 2026-07-28 connection ({client.protocol_version})")
            async with client.listen(resource_subscriptions=[KV2, KV3, "file:///etc/passwd"]) as sub:
                honored = sorted(sub.honored.resource_subscriptions or [])
                check(honored == [KV2, KV3], f"only this server's resources are watched ({honored})")
                events = asyncio.Queue()

                async def pump():
                    async for event in sub:
                        await events.put(str(getattr(event, "uri", event)))

                task = asyncio.create_task(pump())
                try:
                    r = await client.call_tool("kv_set", {"key": "watched-2", "value": "1"})
                    check(not r.is_error, "kv_set through the same client")
                    got = await told(events, "the entry on the listen stream")
                    check(got == KV2, f"the entry's update on the stream ({got})")
                    r = await other.call_tool("kv_set", {"key": "watched-2", "value": "b's"})
                    check(not r.is_error, "b writes its own entry")
                    r = await client.call_tool("kv_set", {"key": "watched-3", "value": "1"})
                    check(not r.is_error, "kv_set of the other watched entry")
                    got = await told(events, "the other entry")
                    check(got == KV3, f"a's other entry, not b's ({got})")
                finally:
                    task.cancel()


async def logging_is_per_session(url, token):
    """A session's logging/setLevel is its own: while one session of a token asked for every
    message, another of the same token that did not ask is sent none for its failing call
    (absence by order: its first message is for the call after its own setLevel), and the
    session that asked is not sent the other's."""
    loud_logged, quiet_logged = [], []

    async def quiet(q, init):
        await call(q, "kv_get", {"key": "config", "nope": 1})
        await q.set_logging_level("warning")
        await call(q, "kv_set", {"key": "x", "nope": 1})
        for _ in range(200):
            if quiet_logged:
                return
            await asyncio.sleep(0.1)

    async def loud(s, init):
        await s.set_logging_level("debug")
        await session(url, token, quiet, quiet_logged)

    await session(url, token, loud, loud_logged)
    check(len(quiet_logged) == 1 and quiet_logged[0].data.get("tool") == "kv_set",
          f"the quiet session's only message is for the call after its own setLevel ({[m.data for m in quiet_logged]})")
    check(not loud_logged, f"the session that asked for every message is not sent the other's ({loud_logged})")


async def logging_per_request(url, token):
    """2026-07-28 has no logging/setLevel: each request carries the level it wants logs at."""
    logged = []

    async def on_log(params):
        logged.append(params)

    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as c:
        async with Client(streamable_http_client(url, http_client=c)) as quiet:
            r = await quiet.call_tool("kv_get", {"key": "config", "nope": 1})
            check(r.is_error, "a failing call without a log level")
        async with Client(streamable_http_client(url, http_client=c), log_level="warning", logging_callback=on_log) as loud:
            r = await loud.call_tool("kv_get", {"key": "config", "nope": 1})
            check(r.is_error, "the failing call asking for warnings")
    # The message travels in the call's own response stream, before its result.
    check(len(logged) == 1 and logged[0].level == "warning" and logged[0].data.get("tool") == "kv_get",
          f"one warning, for the call that asked ({logged})")


async def main(url, token_a, token_b):
    await session(url, token_b, tenant_b)
    await session(url, token_a, tenant_a)
    logged = []
    await session(url, token_a, lambda s, init: logging_a(s, init, logged), logged)
    await legacy_subscriptions(url, token_a, token_b)
    await listen_subscriptions(url, token_a, token_b)
    await logging_per_request(url, token_a)
    await logging_is_per_session(url, token_a)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
    print(f"python mcp client (resources, completion, logging, subscriptions): {len(failures)} failed check(s)")
    sys.exit(1 if failures else 0)
