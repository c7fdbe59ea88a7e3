"""Drives the medium tier's workflow tools with the official Python MCP SDK: a goal runs
through plan -> review -> a human approval -> execute -> sweep; four-eyes, a forged plan hash,
a user token and another tenant are refused; a goal in words only fails with how to configure
a model; a waiting run can be cancelled. Artifacts are checked with tools nobody here wrote:
hashlib for the plan's SHA-256, jsonschema for verdict.json.

  medium_client.py URL STARTER_ADMIN OTHER_ADMIN USER_SAME_TENANT OTHER_TENANT VERDICT_SCHEMA

Exits 0 when every check passed; prints each failed check.
"""
import asyncio
import hashlib
import json
import sys
import time

import jsonschema

from python_client import call, check, described, failures
from small_client import session

MEDIUM_TOOLS = {"workflow_start", "workflow_get", "workflow_list", "workflow_cancel", "approvals_list", "approval_decide"}
SHARED = {}


async def until(s, run_id, statuses, seconds=60):
    """Polls workflow_get until the run's status is one of `statuses` (a condition, not a sleep)."""
    deadline = time.monotonic() + seconds
    while True:
        err, out, text = await call(s, "workflow_get", {"run_id": run_id})
        if not err and out["run"]["status"] in statuses:
            return out
        if time.monotonic() > deadline:
            check(False, f"run {run_id} never reached {statuses}: {text}")
            return out
        await asyncio.sleep(0.1)


async def starter(s):
    tools = (await s.list_tools()).tools
    names = {t.name for t in tools}
    check(MEDIUM_TOOLS <= names, f"medium tools listed: {sorted(names)}")
    for t in tools:
        if t.name in MEDIUM_TOOLS:
            check(t.output_schema is not None, f"{t.name} has an output schema")
            described(t, "medium")
    ro = {t.name for t in tools if t.name in MEDIUM_TOOLS and t.annotations.read_only_hint}
    check(ro == {"workflow_get", "workflow_list", "approvals_list"}, f"read-only workflow tools: {sorted(ro)}")

    err, out, text = await call(s, "workflow_start", {
        "goal": "greet the team",
        "subtasks": [
            {"tool": "kv_set", "arguments": {"key": "greeting", "value": "hello team"}, "why": "they asked"},
            {"tool": "kv_get", "arguments": {"key": "greeting"}},
        ],
    })
    check(not err and out["run_id"].startswith("run-"), f"workflow_start ({text})")
    run_id = out["run_id"]
    SHARED["run"] = run_id
    got = await until(s, run_id, {"waiting"})
    check(got["run"]["step"] == "AwaitApproval", f"the run waits at the approval ({got['run']['step']})")
    err, kv, _ = await call(s, "kv_get", {"key": "greeting"})
    check(not err and not kv["found"], "nothing executed before the approval")

    err, out, _ = await call(s, "approvals_list", {})
    pending = [a for a in out["approvals"] if a["run_id"] == run_id] if not err else []
    check(len(pending) == 1, f"approvals_list shows the run ({out})")
    p = pending[0] if pending else {}
    err, sub, _ = await call(s, "artifacts_get", {"key": p.get("subtasks_ref", "")})
    check(not err and sub["found"], "subtasks.json is an artifact")
    actual = hashlib.sha256(sub["content"].encode()).hexdigest() if not err else ""
    check(p.get("plan_sha256") == actual, f"the pending approval names the SHA-256 of subtasks.json ({p.get('plan_sha256')} vs {actual})")
    SHARED["hash"] = actual
    err, plan, _ = await call(s, "artifacts_get", {"key": p.get("plan_ref", "")})
    check(not err and "kv_set" in plan["content"] and "(execute)" in plan["content"], f"plan.md lists the subtasks ({plan})")
    err, verdict, _ = await call(s, "artifacts_get", {"key": p.get("verdict_ref", "")})
    v = json.loads(verdict["content"]) if not err and verdict["found"] else {}
    try:
        jsonschema.validate(v, SHARED["schema"])
    except jsonschema.ValidationError as e:
        check(False, f"verdict.json fits its schema: {e.message}")
    check(v.get("approved") is True and v.get("needs_human") is True and v.get("lane") == "execute", f"verdict ({v})")

    # Four-eyes: the token that started the run cannot approve it.
    err, out, text = await call(s, "approval_decide", {"run_id": run_id, "decision": "approve", "plan_sha256": actual, "reason": "mine"})
    check(err and "four-eyes" in text, f"the starter cannot approve ({text})")

    # A words-only goal fails at planning, saying how to configure a model.
    err, out, _ = await call(s, "workflow_start", {"goal": "make everything better"})
    vague = out["run_id"] if not err else ""
    got = await until(s, vague, {"failed"})
    check("AGENTBUS_MODEL" in (got["run"]["error"] or ""), f"a goal in words names the model setting ({got['run']['error']})")

    # A waiting run can be cancelled.
    err, out, _ = await call(s, "workflow_start", {"goal": "set a flag", "subtasks": [{"tool": "kv_set", "arguments": {"key": "flag", "value": "1"}}]})
    other = out["run_id"] if not err else ""
    await until(s, other, {"waiting"})
    err, out, text = await call(s, "workflow_cancel", {"run_id": other})
    check(not err and out["status"] == "cancelled", f"workflow_cancel ({text})")
    err, kv, _ = await call(s, "kv_get", {"key": "flag"})
    check(not err and not kv["found"], "a cancelled run executed nothing")


async def user_same_tenant(s):
    err, out, text = await call(s, "approval_decide", {"run_id": SHARED["run"], "decision": "approve", "plan_sha256": SHARED["hash"], "reason": "user"})
    check(err and "admin" in text, f"a user token cannot decide ({text})")


async def other_tenant(s):
    err, out, text = await call(s, "workflow_get", {"run_id": SHARED["run"]})
    check(err and "no run" in text, f"another tenant cannot see the run ({text})")
    err, out, _ = await call(s, "approvals_list", {})
    check(not err and out["approvals"] == [], f"another tenant sees no approvals ({out})")
    err, out, text = await call(s, "approval_decide", {"run_id": SHARED["run"], "decision": "approve", "plan_sha256": SHARED["hash"], "reason": "x"})
    check(err, f"another tenant cannot decide ({text})")


async def other_admin(s):
    run_id = SHARED["run"]
    forged = hashlib.sha256(b"another plan").hexdigest()
    err, out, text = await call(s, "approval_decide", {"run_id": run_id, "decision": "approve", "plan_sha256": forged, "reason": "looks fine"})
    check(err and "waits on plan" in text, f"a decision on another plan is refused ({text})")
    err, out, text = await call(s, "approval_decide", {"run_id": run_id, "decision": "approve", "plan_sha256": SHARED["hash"], "reason": "reviewed the plan"})
    check(not err and out["decision"] == "approve", f"another admin approves ({text})")
    got = await until(s, run_id, {"succeeded", "failed"})
    check(got["run"]["status"] == "succeeded", f"the run succeeded ({got['run']})")
    err, kv, _ = await call(s, "kv_get", {"key": "greeting"})
    check(not err and kv.get("value") == "hello team", f"execute ran the approved kv_set ({kv})")
    events = [h["event"] for h in got["history"]]
    check("decided" in events and "waiting" in events, f"the history shows the wait and the decision ({events})")
    err, out, _ = await call(s, "timeline_query", {})
    mine = [r for r in out["records"] if r["task_id"] == run_id] if not err else []
    actions = [r["action"] for r in mine]
    check(actions == ["plan", "approved", "succeeded"], f"the timeline records plan, approval and outcome ({actions})")
    err, retro, _ = await call(s, "artifacts_get", {"key": f"runs/{run_id}/retrospective.md"})
    check(not err and retro["found"] and "succeeded" in retro["content"], f"the retrospective ({retro})")
    err, out, _ = await call(s, "workflow_list", {"status": "succeeded"})
    check(not err and [r["run_id"] for r in out["runs"]] == [run_id], f"workflow_list by status ({out})")


async def main(url, starter_token, other_admin_token, user_token, other_tenant_token, schema_path):
    with open(schema_path) as f:
        SHARED["schema"] = json.load(f)
    await session(url, starter_token, starter)
    await session(url, user_token, user_same_tenant)
    await session(url, other_tenant_token, other_tenant)
    await session(url, other_admin_token, other_admin)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
    print(f"python mcp client (medium tier): {len(failures)} failed check(s)")
    sys.exit(1 if failures else 0)
