"""Drives the agentbus MCP server with the official Python MCP SDK (a client nobody on the
team wrote), over Streamable HTTP with bearer tokens, or over stdio.

  python_client.py http URL TOKEN_TENANT_A TOKEN_TENANT_B VIEWER_TOKEN_A
  python_client.py stdio AGENTBUS_BINARY DATA_DIR
  python_client.py bridge AGENTBUS_BINARY SERVER_URL TOKEN [CONNECT_ARG ...]
      (through `agentbus connect --url SERVER_URL`, or `agentbus connect CONNECT_ARG ...` with
      this process's AWS_* variables; SERVER_URL is then only the other, direct client's)

Exits 0 when every check passed; prints each failed check.
"""
import asyncio
import json
import sys

from mcp import ClientSession
from mcp.shared.exceptions import MCPError as McpError
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

TOOLS = {"kv_get", "kv_set", "kv_delete", "kv_list", "events_send", "secrets_put", "secrets_list", "secrets_delete", "status"}
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAILED:", what, file=sys.stderr)


async def call(session, tool, args):
    """Returns (is_error, structured, text) of a tool call, keeping the MCP contract's two
    refusals apart (`kind(text)`): a tool's failure, arguments that do not fit its schema
    included, is an `isError` result (`tool_error`); a protocol error (an unknown tool) is a
    JSON-RPC error (`rpc_error`). Anything else (a crash, a lost connection) fails the run
    instead of passing for "the server refused"."""
    try:
        r = await session.call_tool(tool, args)
    except McpError as e:
        return True, None, Refusal("rpc_error", f"{e.error.code}: {e.error.message}")
    except Exception as e:
        check(False, f"{tool}: the call failed outside the MCP contract: {e!r}")
        return True, None, Refusal("crash", repr(e))
    text = " ".join(getattr(c, "text", "") for c in r.content)
    if r.is_error:
        return True, r.structured_content, Refusal("tool_error", text)
    return False, r.structured_content, text


class Refusal(str):
    """A refusal's text, which also says how the server refused: `tool_error` (an isError
    result) or `rpc_error` (a JSON-RPC error)."""

    def __new__(cls, kind, text):
        obj = super().__new__(cls, text)
        obj.kind = kind
        return obj


def kind(text):
    return getattr(text, "kind", "ok")


def described(tool, label):
    """Every parameter of a tool says what it is and has a type."""
    for name, prop in tool.input_schema.get("properties", {}).items():
        check(bool(prop.get("description")), f"{label}: {tool.name}.{name} is described")
        typed = prop.get("type") or prop.get("anyOf") or prop.get("$ref") or prop.get("oneOf")
        check(bool(typed), f"{label}: {tool.name}.{name} has a type")


async def basic(session, label):
    tools = (await session.list_tools()).tools
    names = {t.name for t in tools}
    check(names == TOOLS, f"{label}: tools are {sorted(names)}")
    for t in tools:
        check(t.input_schema.get("type") == "object", f"{label}: {t.name} has an input schema")
        check(t.output_schema is not None, f"{label}: {t.name} has an output schema")
        check(t.annotations is not None and t.annotations.read_only_hint is not None, f"{label}: {t.name} has annotations")
        described(t, label)
    ro = {t.name for t in tools if t.annotations and t.annotations.read_only_hint}
    check(ro == {"kv_get", "kv_list", "secrets_list", "status"}, f"{label}: read-only tools are {sorted(ro)}")

    err, out, _ = await call(session, "kv_set", {"key": "greeting", "value": "hello"})
    check(not err and out["version"] >= 1, f"{label}: kv_set works ({out})")
    err, out, _ = await call(session, "kv_get", {"key": "greeting"})
    check(not err and out == {**out, "found": True, "value": "hello"}, f"{label}: kv_get reads it back ({out})")
    version = out["version"]
    err, out, text = await call(session, "kv_set", {"key": "greeting", "value": "x", "expected_version": version + 7})
    check(err and "version conflict" in text and kind(text) == "tool_error", f"{label}: a stale compare-and-set is refused as a tool error ({text})")
    err, out, _ = await call(session, "kv_set", {"key": "greeting", "value": "hello 2", "expected_version": version})
    check(not err and out["version"] == version + 1, f"{label}: compare-and-set at the right version works")

    # Bad input: a clear error of the kind the MCP contract names, and nothing changes.
    for args, why, how in [
        ({"key": "greeting"}, "missing value", "tool_error"),
        ({"key": "greeting", "value": 12}, "wrong type", "tool_error"),
        ({"key": "greeting", "value": "v", "ttl": 60}, "an unknown argument", "tool_error"),
        ({"key": "bad\u0007key", "value": "v"}, "control character", "tool_error"),
        ({"key": "greeting", "value": "v" * (350 * 1024 + 1)}, "oversize value", "tool_error"),
        ({"key": "greeting", "value": "v", "ttl_seconds": 0}, "zero TTL", "tool_error"),
        ({"key": "greeting", "value": "v", "ttl_seconds": 60, "no_expiry": True}, "a TTL and no expiry", "tool_error"),
    ]:
        err, _, text = await call(session, "kv_set", args)
        check(err and text and kind(text) == how, f"{label}: kv_set with {why} is a {how} ({kind(text)}: {text[:120]})")
    # A tool that does not exist is a protocol error, not a tool's failure.
    err, _, text = await call(session, "kv_frobnicate", {"key": "greeting"})
    check(err and kind(text) == "rpc_error", f"{label}: an unknown tool is a JSON-RPC error ({kind(text)}: {text[:120]})")
    # An unknown argument is named, not silently ignored (ttl is not ttl_seconds).
    err, _, text = await call(session, "kv_set", {"key": "greeting", "value": "v", "ttl": 60})
    check(err and "ttl" in text, f"{label}: the unknown argument is named ({text[:160]})")
    err, out, _ = await call(session, "kv_get", {"key": "greeting"})
    check(out and out.get("value") == "hello 2", f"{label}: bad input changed nothing ({out})")

    for i in range(12):
        await call(session, "kv_set", {"key": f"list/{i:02}", "value": str(i)})
    keys, cursor = [], None
    for _ in range(10):
        args = {"prefix": "list/", "limit": 5}
        if cursor:
            args["cursor"] = cursor
        err, out, _ = await call(session, "kv_list", args)
        keys += [e["key"] for e in out["entries"]]
        cursor = out.get("next_cursor")
        if not cursor:
            break
    check(keys == [f"list/{i:02}" for i in range(12)], f"{label}: kv_list pages through every key once ({keys})")

    err, out, _ = await call(session, "events_send", {"detail_type": "Agent Task Completed", "detail": {"task": label}})
    check(not err and out["source"] == "agentbus", f"{label}: events_send ({out})")
    err, _, text = await call(session, "events_send", {"detail_type": "x", "detail": "not an object"})
    check(err, f"{label}: an event detail must be an object ({text[:100]})")

    err, out, text = await call(session, "secrets_put", {"name": "api-key", "value": "TOPSECRET-123"})
    check(not err and "TOPSECRET" not in text and "TOPSECRET" not in json.dumps(out), f"{label}: secrets_put never echoes the value")
    err, out, text = await call(session, "secrets_list", {})
    check(not err and [s["name"] for s in out["secrets"]] == ["api-key"], f"{label}: secrets_list ({out})")
    check("TOPSECRET" not in text and "TOPSECRET" not in json.dumps(out), f"{label}: secrets_list shows no value")
    err, _, text = await call(session, "secrets_put", {"name": "a/b", "value": "v"})
    check(err, f"{label}: a bad secret name is an error ({text[:100]})")

    err, out, _ = await call(session, "status", {})
    check(not err and out["tier"] == "xs" and out["health"]["kv"] == "ok", f"{label}: status ({out})")

    # Concurrent calls are answered.
    results = await asyncio.gather(*[call(session, "kv_get", {"key": f"list/{i:02}"}) for i in range(12)])
    check(all(not e and o["value"] == str(i) for i, (e, o, _) in enumerate(results)), f"{label}: concurrent calls")
    return out


async def http_main(url, token_a, token_b, viewer_a):
    async def session_for(token):
        client = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        return client

    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token_a}"}) as ca:
        async with streamable_http_client(url, http_client=ca) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                status = await basic(s, "http tenant a")
                check(status["tenant"] == "tenant-a", f"tenant comes from the token ({status})")

    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token_b}"}) as cb:
        async with streamable_http_client(url, http_client=cb) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                err, out, _ = await call(s, "kv_get", {"key": "greeting"})
                check(not err and out["found"] is False, f"tenant b cannot read a's key ({out})")
                err, out, _ = await call(s, "kv_list", {})
                check(not err and out["entries"] == [], f"tenant b lists nothing of a ({out})")
                err, out, _ = await call(s, "kv_delete", {"key": "greeting"})
                check(not err and out["deleted"] is False, "tenant b cannot delete a's key")
                err, out, text = await call(s, "kv_set", {"key": "greeting", "value": "b", "expected_version": 2})
                check(err, "tenant b cannot compare-and-set a's key")
                err, out, _ = await call(s, "secrets_list", {})
                check(not err and out["secrets"] == [], f"tenant b sees none of a's secrets ({out})")
                err, out, _ = await call(s, "secrets_delete", {"name": "api-key"})
                check(not err and out["deleted"] is False, "tenant b cannot delete a's secret")

    async with create_mcp_http_client(headers={"Authorization": f"Bearer {viewer_a}"}) as cv:
        async with streamable_http_client(url, http_client=cv) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                err, out, _ = await call(s, "kv_get", {"key": "greeting"})
                check(not err and out["value"] == "hello 2", f"a viewer of tenant a reads a's data ({out})")
                err, _, text = await call(s, "kv_set", {"key": "greeting", "value": "viewer"})
                check(err and "read-only" in text, f"a viewer cannot write ({text})")

    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token_a}"}) as ca:
        async with streamable_http_client(url, http_client=ca) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                err, out, _ = await call(s, "kv_get", {"key": "greeting"})
                check(out["value"] == "hello 2", "a's key is untouched by b and the viewer")


async def stdio_main(binary, data_dir):
    params = StdioServerParameters(command=binary, args=["serve", "--stdio", "--data-dir", data_dir, "--tenant", "stdio-tenant"])
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            status = await basic(s, "stdio")
            check(status["tenant"] == "stdio-tenant", f"stdio runs as its tenant ({status})")


async def bridge_main(binary, url, token, *connect_args):
    """`agentbus connect`: a client that starts its server as a process reaches the HTTP
    server through it, an older session and a 2026-07-28 client alike."""
    import os
    from mcp import Client, types

    args = ["connect", *connect_args] if connect_args else ["connect", "--url", url]
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")} if connect_args else {}

    def bridged(tok):
        return StdioServerParameters(command=binary, args=args,
                                     env={**env, "AGENTBUS_TOKEN": tok, "PATH": os.environ.get("PATH", "")})

    updates = asyncio.Queue()

    async def on_message(m):
        if isinstance(m, types.ResourceUpdatedNotification):
            await updates.put(str(m.params.uri))

    async with stdio_client(bridged(token)) as (r, w):
        async with ClientSession(r, w, message_handler=on_message) as s:
            init = await s.initialize()
            check(init.protocol_version != "2026-07-28", f"an older session ({init.protocol_version})")
            status = await basic(s, "bridge")
            check(status["tenant"] == "bridge-tenant", f"the bridge acts as its token's tenant ({status})")
            # What the server sends outside an answer (the session's own stream) reaches the
            # client: a watched entry written by another client is told.
            await s.subscribe_resource("agentbus://kv/greeting")
            async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as c:
                async with streamable_http_client(url + "mcp", http_client=c) as (r2, w2):
                    async with ClientSession(r2, w2) as other:
                        await other.initialize()
                        err, _, text = await call(other, "kv_set", {"key": "greeting", "value": "from elsewhere"})
                        check(not err, f"another client writes the entry ({text})")
            try:
                got = await asyncio.wait_for(updates.get(), 20)
            except asyncio.TimeoutError:
                got = None
            check(got == "agentbus://kv/greeting", f"the change is told through the bridge ({got})")

    async with Client(stdio_client(bridged(token))) as c:
        check(c.protocol_version == "2026-07-28", f"a 2026-07-28 client ({c.protocol_version})")
        r = await c.call_tool("kv_get", {"key": "greeting"})
        check(not r.is_error and r.structured_content["value"] == "from elsewhere", f"its calls go through ({r.structured_content})")
        r = await c.read_resource("agentbus://kv/greeting")
        check("from elsewhere" in str(r), f"resources/read, named in Mcp-Name, goes through ({r})")

    # A refused token: an answer that says what to do, never a hang.
    try:
        async with stdio_client(bridged("ab_000000000000_not-a-token")) as (r, w):
            async with ClientSession(r, w) as s:
                await asyncio.wait_for(s.initialize(), 20)
        check(False, "a refused token fails the initialize")
    except McpError as e:
        check("AGENTBUS_TOKEN" in e.error.message and "not-a-token" not in e.error.message,
              f"the refusal says what to do, without the token ({e.error.message})")
    except BaseException as e:  # an exception group from the task group around the session
        text = repr(e)
        check("AGENTBUS_TOKEN" in text and "not-a-token" not in text, f"the refusal says what to do ({text[:300]})")


def main():
    mode = sys.argv[1]
    if mode == "http":
        asyncio.run(http_main(*sys.argv[2:6]))
    elif mode == "bridge":
        asyncio.run(bridge_main(*sys.argv[2:]))
    else:
        asyncio.run(stdio_main(*sys.argv[2:4]))
    print(f"python mcp client ({mode}): {len(failures)} failed check(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
