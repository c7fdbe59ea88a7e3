"""Drives the workspace tools of a server that governs a deployed workspace (`agentbus up
medium --workspace-env ENV`, the workspace on moto) with the official Python MCP SDK: a plan
is previewed and changes nothing; a forged hash, flags that could delete data, a user token
and another tenant are refused; a workflow run plans the change with its deploy plan, cost
delta and rollback plan as evidence, names the plan's hash in its subtask, and only after
another admin approves does its execute phase apply exactly that plan. The plan's SHA-256 is
checked with hashlib.

  workspace_client.py URL STARTER_ADMIN OTHER_ADMIN USER_SAME_TENANT OTHER_TENANT ENV IMAGE

Exits 0 when every check passed; prints each failed check.
"""
import asyncio
import hashlib
import json
import sys

from medium_client import until
from python_client import call, check, described, failures
from small_client import session

SHARED = {}


def change():
    return {"tier": "xs", "flags": ["--image", SHARED["image"]]}


async def starter(s):
    tools = {t.name: t for t in (await s.list_tools()).tools}
    plan_tool, apply_tool = tools.get("workspace_plan"), tools.get("workspace_apply")
    check(plan_tool is not None and apply_tool is not None, f"the workspace tools are listed ({sorted(tools)})")
    if plan_tool is None or apply_tool is None:
        return
    for t in (plan_tool, apply_tool):
        described(t, "workspace")
        check(t.output_schema is not None, f"{t.name} has an output schema")
        check(t.annotations.open_world_hint is True, f"{t.name} says it reaches outside the server (AWS)")
    check(plan_tool.annotations.read_only_hint is True, "workspace_plan changes nothing")
    check(apply_tool.annotations.read_only_hint is False and apply_tool.annotations.destructive_hint is True,
          "workspace_apply says it changes and may replace things")

    err, p, text = await call(s, "workspace_plan", change())
    check(not err, f"workspace_plan ({text})")
    if err:
        return
    ws = f"agentbus-{SHARED['env']}"
    check(p["workspace"].startswith(ws), f"the plan is for {ws} ({p['workspace']})")
    check(p["deployed_tier"] is None, f"nothing was deployed yet ({p['deployed_tier']})")
    check(p["changes"] >= 10 and p["problems"] == [], f"a first deploy creates the tier ({p['changes']}, {p['problems']})")
    check(f"{ws}-kv" in p["plan"] and "monthly cost:" in p["plan"], f"the plan names the KV table and the cost:\n{p['plan']}")
    check(p["cost_delta_monthly"] is not None and p["cost_delta_monthly"] > 0, f"the tier costs money ({p['cost_delta_monthly']})")
    check(p["plan_sha256"] == hashlib.sha256(p["plan"].encode()).hexdigest(), "plan_sha256 is the SHA-256 of the plan text")
    SHARED["sha"] = p["plan_sha256"]

    # Flags that are not plan flags, or that would delete data, are refused by name.
    for flags, word in ((["--destroy-data"], "--destroy-data"), (["--no-such-flag"], "--no-such-flag")):
        err, _, text = await call(s, "workspace_plan", {"tier": "xs", "flags": flags})
        check(err and text.kind == "tool_error" and word in text, f"flags {flags} are refused by name ({text})")
    err, _, text = await call(s, "workspace_plan", {"tier": "huge"})
    check(err and "huge" in text, f"an unknown tier is refused ({text})")

    # An admin's direct apply of a plan nobody made: refused, and nothing changed.
    forged = hashlib.sha256(b"another plan").hexdigest()
    err, _, text = await call(s, "workspace_apply", {**change(), "plan_sha256": forged})
    check(err and "no longer the approved one" in text, f"a forged plan hash is refused ({text})")
    err, again, _ = await call(s, "workspace_plan", change())
    check(not err and again["plan_sha256"] == SHARED["sha"], "the refused apply changed nothing")

    # A run: the conductor previews the change; the approval names the plan through subtasks.json.
    err, out, text = await call(s, "workflow_start", {
        "goal": "deploy the extra-small tier",
        "subtasks": [{"tool": "workspace_apply", "arguments": change(), "why": "the team needs the bus"}],
    })
    check(not err, f"workflow_start ({text})")
    if err:
        return
    run_id = out["run_id"]
    SHARED["run"] = run_id
    got = await until(s, run_id, {"waiting", "failed", "blocked"}, seconds=120)
    check(got["run"]["status"] == "waiting", f"the run waits for a human ({got['run']})")
    err, out, _ = await call(s, "approvals_list", {})
    pending = [a for a in out["approvals"] if a["run_id"] == run_id] if not err else []
    check(len(pending) == 1, f"the approval is pending ({out})")
    p = pending[0] if pending else {}
    art = {}
    for name in ("subtasks.json", "workspace-plan-s1.txt", "rollback.md", "plan.md", "verdict.json"):
        err, a, _ = await call(s, "artifacts_get", {"key": f"runs/{run_id}/{name}"})
        check(not err and a["found"], f"the run wrote {name}")
        art[name] = a["content"] if not err and a["found"] else ""
    check(p.get("plan_sha256") == hashlib.sha256(art["subtasks.json"].encode()).hexdigest(),
          "the approval waits on the SHA-256 of subtasks.json")
    SHARED["approval_sha"] = p.get("plan_sha256")
    subtasks = json.loads(art["subtasks.json"] or "[]")
    named = subtasks[0]["arguments"].get("plan_sha256") if subtasks else None
    check(named == hashlib.sha256(art["workspace-plan-s1.txt"].encode()).hexdigest(),
          f"the subtask names the SHA-256 of the deploy plan it previewed ({named})")
    check(named == SHARED["sha"], "the run's deploy plan is the one workspace_plan showed")
    check("## Workspace changes" in art["plan.md"] and "workspace-plan-s1.txt" in art["plan.md"], f"plan.md:\n{art['plan.md']}")
    check("Nothing was deployed before this run" in art["rollback.md"], f"rollback.md:\n{art['rollback.md']}")
    verdict = json.loads(art["verdict.json"] or "{}")
    checks = {f["check"]: f["passed"] for f in verdict.get("findings", [])}
    check(verdict.get("approved") is True and verdict.get("needs_human") is True, f"the critic passes it to a human ({verdict})")
    check(checks.get("cost") is True and checks.get("blast_radius") is True, f"cost and blast radius checked ({checks})")
    err, ws_after, _ = await call(s, "workspace_plan", change())
    check(not err and ws_after["plan_sha256"] == SHARED["sha"], "planning and review deployed nothing")


async def user_same_tenant(s):
    err, _, text = await call(s, "workspace_apply", {**change(), "plan_sha256": SHARED["sha"]})
    check(err and "admin token" in text, f"a user token cannot apply ({text})")
    err, p, text = await call(s, "workspace_plan", change())
    check(not err and p["plan_sha256"] == SHARED["sha"], f"a user of the governing tenant may preview ({text})")


async def other_tenant(s):
    for tool, args in (("workspace_plan", change()), ("workspace_apply", {**change(), "plan_sha256": SHARED["sha"]})):
        err, _, text = await call(s, tool, args)
        check(err and "governed by tenant default" in text, f"another tenant's {tool} is refused ({text})")


async def other_admin(s):
    run_id = SHARED.get("run")
    if not run_id:
        return
    err, out, text = await call(s, "approval_decide", {
        "run_id": run_id, "decision": "approve", "plan_sha256": SHARED["approval_sha"], "reason": "read the deploy plan"})
    check(not err and out["decision"] == "approve", f"another admin approves ({text})")
    got = await until(s, run_id, {"succeeded", "failed"}, seconds=300)
    check(got["run"]["status"] == "succeeded", f"the run succeeded ({got['run']})")
    err, r, _ = await call(s, "artifacts_get", {"key": f"runs/{run_id}/results/s1.json"})
    result = json.loads(r["content"]) if not err and r["found"] else {}
    check(result.get("succeeded") is True and result.get("plan_sha256") == SHARED["sha"], f"the apply ran the approved plan ({result})")
    done = [c for c in result.get("changes", []) if c["outcome"] == "done"]
    check(len(done) >= 10, f"the apply created the tier ({len(done)} done)")
    err, p, _ = await call(s, "workspace_plan", change())
    check(not err and p["changes"] == 0 and p["deployed_tier"] == "xs", f"the workspace now matches ({p and p['plan']})")
    err, out, _ = await call(s, "timeline_query", {})
    mine = [r for r in out["records"] if r["task_id"] == run_id] if not err else []
    plan_rec = next((r for r in mine if r["action"] == "plan"), {})
    check(plan_rec.get("metrics", {}).get("cost_delta_monthly", 0) > 0, f"the timeline records the cost delta ({plan_rec})")


async def main(url, starter_token, other_admin_token, user_token, other_tenant_token, env, image):
    SHARED["env"], SHARED["image"] = env, image
    await session(url, starter_token, starter)
    await session(url, user_token, user_same_tenant)
    await session(url, other_tenant_token, other_tenant)
    await session(url, other_admin_token, other_admin)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:8]))
    print(f"python mcp client (workspace tools): {len(failures)} failed check(s)")
    sys.exit(1 if failures else 0)
