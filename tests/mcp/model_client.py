"""A run planned and reviewed by a real local model (SmolLM2-135M-Instruct behind
tests/model/server.mjs), driven through the Python MCP SDK: a goal in words only, so the
conductor must ask the model for its subtasks and the critic for its advisory review. The
model's prose is not judged: the run must come to an end, and every artifact must fit its
schema.

Run as: python tests/mcp/model_client.py URL STARTER_ADMIN OTHER_ADMIN VERDICT_SCHEMA
"""
import asyncio
import json
import sys

import jsonschema

from medium_client import until
from python_client import call, check, failures
from small_client import session

ENDED = {"succeeded", "blocked", "rejected", "timed_out", "failed", "cancelled"}
SHARED = {}


async def artifact(s, key):
    err, out, _ = await call(s, "artifacts_get", {"key": key})
    return out["content"] if not err and out.get("found") else None


async def starter(s):
    tools = {t.name for t in (await s.list_tools()).tools}
    SHARED["tools"] = tools
    err, out, text = await call(s, "workflow_start", {"goal": "list the keys of the workspace"})
    check(not err, f"a goal in words starts ({text})")
    run = out["run_id"] if not err else ""
    SHARED["run"] = run
    got = await until(s, run, ENDED | {"waiting"}, seconds=900)
    status = got["run"]["status"]
    check(status in ENDED | {"waiting"}, f"the planned run reaches a decision or an end ({status})")
    if status == "waiting":
        err, out, _ = await call(s, "approvals_list", {})
        pending = [a for a in out["approvals"] if a["run_id"] == run] if not err else []
        SHARED["hash"] = pending[0]["plan_sha256"] if pending else ""


async def approver(s):
    if "hash" not in SHARED:
        return
    err, out, text = await call(s, "approval_decide", {"run_id": SHARED["run"], "decision": "approve",
                                                        "plan_sha256": SHARED["hash"], "reason": "a model planned it"})
    check(not err, f"another admin approves the model's plan ({text})")


async def results(s):
    run = SHARED["run"]
    got = await until(s, run, ENDED, seconds=900)
    check(got["run"]["status"] in ENDED, f"the run ends ({got['run']['status']}: {got['run'].get('error')})")
    plan_md = await artifact(s, f"runs/{run}/plan.md")
    check(plan_md is not None and plan_md.strip() != "", "the model's plan is written (plan.md)")
    raw = await artifact(s, f"runs/{run}/subtasks.json")
    subtasks = json.loads(raw) if raw else []
    check(isinstance(subtasks, list) and len(subtasks) >= 1, f"subtasks.json is a list of subtasks ({raw})")
    for t in subtasks:
        check({"id", "tool", "lane", "arguments"} <= set(t), f"a subtask names its id, tool, lane and arguments ({t})")
        check(t.get("tool") in SHARED["tools"], f"the model chose a tool the workspace has ({t.get('tool')})")
    verdict = await artifact(s, f"runs/{run}/verdict.json")
    check(verdict is not None, "the critic wrote verdict.json")
    if verdict is not None:
        try:
            jsonschema.validate(json.loads(verdict), SHARED["schema"])
        except jsonschema.ValidationError as e:
            check(False, f"verdict.json fits its schema: {e.message}")
    retro = await artifact(s, f"runs/{run}/retrospective.md")
    check(retro is not None, "the sweeper wrote the retrospective")
    err, out, _ = await call(s, "timeline_query", {})
    mine = [r for r in out["records"] if r["task_id"] == run] if not err else []
    calls = sum(int(r.get("metrics", {}).get("model_calls", 0)) for r in mine)
    check(calls >= 2, f"the timeline counts the model's calls (plan and review: {calls})")


async def main(url, starter_token, other_admin, schema_path):
    with open(schema_path) as f:
        SHARED["schema"] = json.load(f)
    await session(url, starter_token, starter)
    await session(url, other_admin, approver)
    await session(url, starter_token, results)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
    print(f"python mcp client (local model): {len(failures)} failed check(s)")
    sys.exit(1 if failures else 0)
