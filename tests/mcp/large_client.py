"""Drives the large tier's vector memory tools with the official Python MCP SDK over
Streamable HTTP: documents put and found by meaning with a real embedding model, metadata
filters, a viewer, another tenant, strict arguments, workflow runs whose sweeper remembers
their retrospective and whose conductor finds the earlier run, and (second run) persistence.

  large_client.py URL ADMIN_TOKEN VIEWER_TOKEN OTHER_TENANT_TOKEN first|after-restart

Exits 0 when every check passed; prints each failed check.
"""
import asyncio
import json
import sys
import time

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from python_client import call, check, described, failures, kind

MEMORY_TOOLS = {"memory_put", "memory_search", "memory_get", "memory_delete", "memory_collections"}
MODEL = "all-MiniLM-L6-v2"
DOCS = [
    {"id": "db", "text": "The Aurora writer failed over to the reader in zone b", "metadata": {"kind": "incident", "sev": 2}},
    {"id": "cost", "text": "Monthly spend went over the budget because of NAT gateway traffic", "metadata": {"kind": "cost"}},
    {"id": "cat", "text": "The office cat sleeps on the warm server rack", "metadata": {"kind": "trivia"}},
]


async def session(url, token, body):
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as client:
        async with streamable_http_client(url, http_client=client) as (r, w, *_):
            async with ClientSession(r, w) as s:
                await s.initialize()
                return await body(s)


async def admin_first(s):
    tools = {t.name: t for t in (await s.list_tools()).tools}
    check(MEMORY_TOOLS <= set(tools), f"memory tools listed ({sorted(tools)})")
    for name in MEMORY_TOOLS & set(tools):
        described(tools[name], "large")
    ro = {n: tools[n].annotations.read_only_hint for n in MEMORY_TOOLS & set(tools)}
    check(ro == {"memory_put": False, "memory_search": True, "memory_get": True, "memory_delete": False, "memory_collections": True},
          f"read-only hints ({ro})")
    check(tools["memory_delete"].annotations.destructive_hint is True, "memory_delete is destructive")

    err, out, text = await call(s, "memory_put", {"collection": "notes", "documents": DOCS})
    check(not err and out == {"stored": 3, "model": MODEL}, f"memory_put ({out} {text})")
    err, out, text = await call(s, "memory_search", {"collection": "notes", "query": "database failover", "k": 2})
    hits = (out or {}).get("hits", [])
    check(not err and [h["id"] for h in hits][:1] == ["db"] and len(hits) == 2, f"memory_search finds by meaning ({out} {text})")
    check(not err and hits[0]["score"] > hits[1]["score"] and hits[0]["metadata"] == DOCS[0]["metadata"], f"hits ranked, with metadata ({hits})")
    err, out, text = await call(s, "memory_search", {"collection": "notes", "query": "why is the bill so high", "k": 1})
    check(not err and [h["id"] for h in out["hits"]] == ["cost"], f"memory_search: the bill ({out} {text})")
    err, out, text = await call(s, "memory_search", {"collection": "notes", "query": "database failover", "k": 3, "filter": {"kind": "trivia"}})
    check(not err and [h["id"] for h in out["hits"]] == ["cat"], f"memory_search with a filter ({out} {text})")
    err, out, text = await call(s, "memory_search", {"collection": "notes", "query": "x", "filter": {"sev": 2.0}})
    check(not err and [h["id"] for h in out["hits"]] == ["db"], f"a numeric filter compares by value ({out} {text})")
    err, out, text = await call(s, "memory_get", {"collection": "notes", "id": "cost"})
    doc = (out or {}).get("document") or {}
    check(not err and out["found"] and doc.get("text") == DOCS[1]["text"] and doc.get("model") == MODEL and doc.get("dimensions") == 384 and doc.get("version") == 1,
          f"memory_get ({out} {text})")
    err, out, text = await call(s, "memory_collections", {})
    check(not err and out == {"collections": [{"name": "notes", "documents": 3, "models": [MODEL]}], "model": MODEL}, f"memory_collections ({out} {text})")

    # Strict arguments: a misspelled field is refused by name, as an isError result.
    err, out, text = await call(s, "memory_search", {"collection": "notes", "query": "x", "limit": 3})
    check(err and kind(text) == "tool_error" and "limit" in text, f"an unknown argument is refused by name ({text})")
    err, out, text = await call(s, "memory_search", {"collection": "notes", "query": "x", "k": 0})
    check(err and kind(text) == "tool_error" and "k" in text, f"k 0 is refused ({text})")
    err, out, text = await call(s, "memory_put", {"collection": "Bad/Name", "documents": DOCS[:1]})
    check(err and kind(text) == "tool_error" and "collection" in text, f"a bad collection name is refused ({text})")
    err, out, text = await call(s, "memory_search", {"collection": "notes", "query": "x", "filter": {"kind": {"$ne": "cost"}}})
    check(err and kind(text) == "tool_error" and "filter" in text, f"an operator in a filter is refused ({text})")

    # Replace and delete.
    err, out, text = await call(s, "memory_put", {"collection": "notes", "documents": [{"id": "cat", "text": "The cat moved to the kitchen"}]})
    check(not err and out["stored"] == 1, f"memory_put replaces ({out} {text})")
    err, out, text = await call(s, "memory_get", {"collection": "notes", "id": "cat"})
    check(not err and out["document"]["version"] == 2 and out["document"]["metadata"] == {}, f"replaced at version 2 ({out})")
    err, out, text = await call(s, "memory_put", {"collection": "scratch", "documents": [{"id": "tmp", "text": "temporary"}]})
    err, out, text = await call(s, "memory_delete", {"collection": "scratch", "id": "tmp"})
    check(not err and out == {"deleted": True}, f"memory_delete ({out} {text})")
    err, out, text = await call(s, "memory_delete", {"collection": "scratch", "id": "tmp"})
    check(not err and out == {"deleted": False}, f"memory_delete again ({out} {text})")


async def until_done(s, run_id, seconds=90):
    """Polls workflow_get until the run ended (a condition, not a sleep)."""
    deadline = time.monotonic() + seconds
    while True:
        err, out, text = await call(s, "workflow_get", {"run_id": run_id})
        if not err and out["run"]["status"] in ("succeeded", "failed", "blocked", "cancelled"):
            return out
        if time.monotonic() > deadline:
            check(False, f"run {run_id} never ended: {text}")
            return out
        await asyncio.sleep(0.1)


async def workflows(s):
    # Read-only runs approve themselves under this policy.
    policy = {"auto_approve": {"enabled": True, "max_cost_delta_monthly": 0}}
    err, _, text = await call(s, "kv_set", {"key": "agentbus/policy", "value": json.dumps(policy)})
    check(not err, f"the policy is set ({text})")
    runs = []
    for goal in ["count the entries of the key-value store", "count the key-value entries once more"]:
        err, out, text = await call(s, "workflow_start", {"goal": goal, "subtasks": [{"tool": "kv_list", "arguments": {}, "why": "to count them"}]})
        check(not err, f"workflow_start ({text})")
        if err:
            return
        got = await until_done(s, out["run_id"])
        check(got["run"]["status"] == "succeeded", f"the run succeeded ({got['run']})")
        runs.append(out["run_id"])
    first, second = runs
    # The sweeper put the first run's retrospective in memory, under the run's id.
    err, out, text = await call(s, "memory_get", {"collection": "runs", "id": first})
    doc = (out or {}).get("document") or {}
    check(not err and out["found"] and doc["text"].startswith(f"Run {first} ") and doc["metadata"] == {"outcome": "succeeded"},
          f"the retrospective is in memory ({out} {text})")
    # The second run's conductor found it while planning.
    err, plan, text = await call(s, "artifacts_get", {"key": f"runs/{second}/plan.md"})
    content = (plan or {}).get("content") or ""
    related = content.split("## Related past runs", 1)[1] if "## Related past runs" in content else ""
    check(f"- {first} (similarity" in related, f"the second plan names the first run as related ({content})")
    err, out, text = await call(s, "memory_collections", {})
    names = {c["name"]: c["documents"] for c in (out or {}).get("collections", [])}
    check(names.get("runs") == 2, f"both runs are remembered ({out})")


async def viewer(s):
    err, out, text = await call(s, "memory_search", {"collection": "notes", "query": "database failover", "k": 1})
    check(not err and [h["id"] for h in out["hits"]] == ["db"], f"a viewer searches ({out} {text})")
    err, out, text = await call(s, "memory_put", {"collection": "notes", "documents": DOCS[:1]})
    check(err and kind(text) == "tool_error" and "viewer" in text, f"a viewer cannot put ({text})")
    err, out, text = await call(s, "memory_delete", {"collection": "notes", "id": "db"})
    check(err and kind(text) == "tool_error", f"a viewer cannot delete ({text})")


async def other_tenant(s):
    err, out, text = await call(s, "memory_search", {"collection": "notes", "query": "database failover", "k": 5})
    check(not err and out["hits"] == [], f"another tenant finds nothing ({out} {text})")
    err, out, text = await call(s, "memory_get", {"collection": "notes", "id": "db"})
    check(not err and out == {"found": False, "document": None}, f"another tenant cannot read ({out} {text})")
    err, out, text = await call(s, "memory_collections", {})
    check(not err and out["collections"] == [], f"another tenant has no collections ({out} {text})")
    err, out, text = await call(s, "memory_delete", {"collection": "notes", "id": "db"})
    check(not err and out == {"deleted": False}, f"another tenant cannot delete ({out} {text})")


async def after_restart(s):
    err, out, text = await call(s, "memory_search", {"collection": "notes", "query": "database failover", "k": 1})
    check(not err and [h["id"] for h in out["hits"]] == ["db"], f"memory survives a restart ({out} {text})")
    err, out, text = await call(s, "memory_collections", {})
    check(not err and [(c["name"], c["documents"]) for c in out["collections"]] == [("notes", 3), ("runs", 2)], f"collections after a restart ({out})")


def main():
    url, admin, view, other, mode = sys.argv[1:6]
    if mode == "first":
        asyncio.run(session(url, admin, admin_first))
        asyncio.run(session(url, admin, workflows))
        asyncio.run(session(url, view, viewer))
        asyncio.run(session(url, other, other_tenant))
    else:
        asyncio.run(session(url, admin, after_restart))
    print(f"python mcp client (large, {mode}): {len(failures)} failed check(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
