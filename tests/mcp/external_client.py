"""Registers an external MCP server with a workspace through the Python MCP SDK, and checks
that its tools are listed, called through the workspace with their annotations as the gate,
used by a workflow run (read-only ones in any lane, a writing one only as an approved
subtask), and forgotten with their token.

Run as: python tests/mcp/external_client.py AGENTBUS_MCP_URL EXTERNAL_URL EXTERNAL_TOKEN
        STARTER_ADMIN OTHER_ADMIN USER VIEWER
Exits 0 when every check passed; prints each failed check.
"""
import asyncio
import json
import sys

from medium_client import until
from python_client import call, check, described, failures
from small_client import session

SHARED = {}
EXTERNAL = {"tools_register", "tools_list", "tools_call", "tools_unregister"}


async def admin(s):
    tools = (await s.list_tools()).tools
    for t in tools:
        if t.name in EXTERNAL:
            described(t, "medium")
            check(t.output_schema is not None, f"{t.name} has an output schema")
    check(EXTERNAL <= {t.name for t in tools}, "the external tools' tools are listed")
    url, token = SHARED["url"], SHARED["token"]
    err, out, text = await call(s, "tools_register", {"name": "weather", "url": url, "token": "wrong"})
    check(err and "401" in text, f"a server that refuses the token is not registered ({text})")
    err, out, text = await call(s, "tools_register", {"name": "Weather!", "url": url})
    check(err and "a-z" in text, f"a bad name is refused ({text})")
    err, out, text = await call(s, "tools_register", {"name": "weather", "url": url, "token": token})
    check(not err, f"an admin registers the server ({text})")
    tools = {t["name"]: t for t in out.get("tools", [])} if not err else {}
    check(set(tools) == {"forecast", "report", "reports"}, f"its tool list is fetched ({sorted(tools)})")
    check(tools.get("forecast", {}).get("read_only") is True and tools.get("report", {}).get("read_only") is False,
          f"with their annotations ({tools})")
    check(token not in text, "the token is not shown back")

    # A run whose subtasks use the external tools: the read-only one as planned, the writing one
    # only once approved.
    err, out, text = await call(s, "workflow_start", {"goal": "file the weather", "subtasks": [
        {"tool": "weather__forecast", "arguments": {"city": "Oslo"}, "why": "read it"},
        {"tool": "weather__report", "arguments": {"text": "sunny"}, "why": "file it"},
    ]})
    check(not err, f"a run with external tools starts ({text})")
    SHARED["run"] = out["run_id"] if not err else ""
    got = await until(s, SHARED["run"], {"waiting", "failed", "succeeded"})
    check(got["run"]["status"] == "waiting", f"the writing external tool waits for an approval ({got['run']})")
    err, out, _ = await call(s, "tools_call", {"server": "weather", "tool": "reports"})
    check(not err and out["text"] == "0", f"nothing was reported before the approval ({out})")
    err, out, _ = await call(s, "approvals_list", {})
    pending = [a for a in out["approvals"] if a["run_id"] == SHARED["run"]] if not err else []
    SHARED["hash"] = pending[0]["plan_sha256"] if pending else ""


async def other_admin(s):
    err, out, text = await call(s, "approval_decide", {"run_id": SHARED["run"], "decision": "approve",
                                                        "plan_sha256": SHARED["hash"], "reason": "fine"})
    check(not err, f"another admin approves ({text})")
    got = await until(s, SHARED["run"], {"succeeded", "failed"})
    check(got["run"]["status"] == "succeeded", f"the run with external tools succeeded ({got['run']})")
    err, out, _ = await call(s, "tools_call", {"server": "weather", "tool": "reports"})
    check(not err and out["text"] == "1", f"execute called the approved external tool once ({out})")


async def user(s):
    err, out, text = await call(s, "tools_register", {"name": "mine", "url": SHARED["url"], "token": SHARED["token"]})
    check(err and "admin" in text, f"a user cannot register a server ({text})")
    err, out, text = await call(s, "kv_set", {"key": "agentbus/tools/weather", "value": json.dumps({"url": "http://127.0.0.1:9/"})})
    check(err and "admin" in text, f"a user cannot rewrite a registration in KV ({text})")
    err, out, text = await call(s, "tools_call", {"server": "weather", "tool": "report", "arguments": {"text": "rain"}})
    check(not err and "recorded" in out["text"], f"a user calls a writing external tool ({text})")


async def viewer(s):
    err, out, text = await call(s, "tools_list", {})
    servers = out.get("servers", []) if not err else []
    check([x["name"] for x in servers] == ["weather"] and servers[0]["has_token"] is True, f"a viewer sees the registration ({out})")
    check(SHARED["token"] not in text, "tools_list never shows the token")
    err, out, text = await call(s, "tools_call", {"server": "weather", "tool": "forecast", "arguments": {"city": "Oslo"}})
    check(not err and out["text"] == "sunny in Oslo", f"a viewer calls a read-only external tool ({text})")
    err, out, text = await call(s, "tools_call", {"server": "weather", "tool": "report", "arguments": {"text": "x"}})
    check(err and "only reads" in text, f"a viewer cannot call a writing external tool ({text})")
    err, out, text = await call(s, "tools_call", {"server": "weather", "tool": "nope"})
    check(err and "forecast" in text, f"an unknown external tool names the known ones ({text})")


async def forget(s):
    err, out, text = await call(s, "tools_unregister", {"name": "weather"})
    check(not err and out["removed"] is True, f"an admin forgets the server ({text})")
    err, out, _ = await call(s, "tools_list", {})
    check(not err and out["servers"] == [], f"nothing is registered any more ({out})")
    err, out, _ = await call(s, "secrets_list", {})
    check(not err and all(x["name"] != "tools-weather" for x in out["secrets"]), f"its token is gone ({out})")
    err, out, text = await call(s, "tools_call", {"server": "weather", "tool": "forecast", "arguments": {"city": "Oslo"}})
    check(err and "no tool server" in text, f"its tools are gone ({text})")


async def main(url, external_url, external_token, starter, other, user_token, viewer_token):
    SHARED["url"], SHARED["token"] = external_url, external_token
    await session(url, starter, admin)
    await session(url, other, other_admin)
    await session(url, user_token, user)
    await session(url, viewer_token, viewer)
    await session(url, starter, forget)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:8]))
    print(f"python mcp client (external tools): {len(failures)} failed check(s)")
    sys.exit(1 if failures else 0)
