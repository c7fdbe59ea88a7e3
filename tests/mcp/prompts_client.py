"""Drives the medium tier's MCP prompts with the official Python MCP SDK over Streamable HTTP:
the conductor's and the critic's instructions, as the agents use them, with the tools the
session has; required arguments enforced; a prompt's arguments are not completed.

  prompts_client.py URL TOKEN

Exits 0 when every check passed; prints each failed check.
"""
import asyncio
import sys

from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError as McpError

from python_client import check, failures


async def prompts(s):
    init = await s.initialize()
    check(init.capabilities.prompts is not None, f"the server declares prompts ({init.capabilities})")
    listed = {p.name: p for p in (await s.list_prompts()).prompts}
    check(set(listed) == {"conductor", "critic"}, f"the conductor's and the critic's prompts ({sorted(listed)})")
    if "conductor" in listed:
        args = {a.name: a.required for a in listed["conductor"].arguments or []}
        check(args == {"goal": True}, f"the conductor takes a goal ({args})")
    if "critic" in listed:
        args = {a.name: a.required for a in listed["critic"].arguments or []}
        check(args == {"plan": True, "checks": False}, f"the critic takes a plan and maybe checks ({args})")

    got = await s.get_prompt("conductor", {"goal": "Rotate the staging API key"})
    text = got.messages[0].content.text if got.messages else ""
    check(len(got.messages) == 1 and got.messages[0].role == "user", f"one user message ({got.messages})")
    check(text.startswith("You are the conductor of an agentbus workspace."), f"the conductor's own instructions ({text[:80]})")
    check("- kv_get (read-only):" in text and "- workflow_start:" in text, f"with the session's tools, read-only ones marked ({text[:400]})")
    check(text.endswith("The goal: Rotate the staging API key"), f"and the goal ({text[-60:]})")

    got = await s.get_prompt("critic", {"plan": "1. kv_set x"})
    text = got.messages[0].content.text if got.messages else ""
    check(text.startswith("You are the critic of an agentbus workspace.") and "The plan:\n1. kv_set x" in text
          and "The policy's checks:\nnone given" in text, f"the critic's instructions and the plan ({text})")

    for name, args, why in [("conductor", {}, "without its goal"), ("critic", {"plan": "x", "mood": "y"}, "with an argument it does not take"),
                            ("poet", {}, "that does not exist")]:
        try:
            await s.get_prompt(name, args)
            check(False, f"{name} {why} is refused")
        except McpError as e:
            check(e.error.code == -32602, f"{name} {why}: invalid params ({e.error.code} {e.error.message})")

    done = await s.complete(types.PromptReference(type="ref/prompt", name="conductor"), {"name": "goal", "value": "Ro"})
    check(done.completion.values == [], f"a goal is free text: nothing to complete ({done.completion})")


async def main(url, token):
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as c:
        async with streamable_http_client(url, http_client=c) as (r, w):
            async with ClientSession(r, w) as s:
                await prompts(s)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
    print(f"python mcp client (prompts): {len(failures)} failed check(s)")
    sys.exit(1 if failures else 0)
