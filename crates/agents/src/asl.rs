//! The [`Workflow`] in Amazon States Language (JSONPath, Standard workflow).
//!
//! Agents are dispatched with `.waitForTaskToken` and answer with `SendTaskSuccess`,
//! `SendTaskFailure` or `SendTaskHeartbeat`, so the workflow sees the agent's answer, not an
//! ECS task description. On AWS they run as ECS tasks (one task definition per agent; the
//! step's lane picks the task role, which is what the lane may do, so AWS enforces the lane);
//! in the emulator, which cannot run ECS tasks, they read the
//! same [`crate::workflow::AgentTask`] from an SQS queue. Human approvals wait on a task token
//! too: the message goes to the approvals queue, and `approval_decide` answers it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::lane::Lane;
use crate::workflow::{AGENT_FAILED, AgentStep, Outcome, REJECTED, Role, Workflow};

/// Where agent tasks go.
#[derive(Clone, Debug, PartialEq)]
pub enum Dispatch {
    /// ECS tasks on the workspace's cluster (AWS).
    Ecs {
        cluster: String,
        /// The task definition (family) of each agent.
        task_definitions: BTreeMap<Role, String>,
        /// The task role (ARN) of each lane: a step runs with its lane's role, whatever the
        /// agent.
        lane_roles: BTreeMap<Lane, String>,
        /// The agent container's name in those task definitions.
        container: String,
        subnets: Vec<String>,
        security_groups: Vec<String>,
        /// Public subnets without a NAT need a public address to reach ECR and the APIs.
        assign_public_ip: bool,
        /// Fargate Spot (else on-demand Fargate: prod).
        spot: bool,
    },
    /// An SQS queue the agents read (the emulator; any pool of workers).
    Sqs { queue_url: String },
}

/// What the compiled definition needs to know about its surroundings.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub dispatch: Dispatch,
    /// The queue the server reads approval requests from.
    pub approvals_queue_url: String,
}

/// State names of the pipeline's fixed parts.
mod state {
    pub const GATE: &str = "ApprovalGate";
    pub const AWAIT: &str = "AwaitApproval";
    pub const AUTO: &str = "AutoApproved";
    pub const EXECUTE: &str = "Execute";
    pub const FINISH: &str = "Finish";
    pub const DONE: &str = "Done";
    pub const SWEEP_FAILED: &str = "SweepFailed";
}

/// The Pass state that records an outcome before the sweep.
fn outcome_state(o: Outcome) -> String {
    let mut name = String::from("Outcome");
    for part in o.as_str().split('_') {
        let mut c = part.chars();
        if let Some(first) = c.next() {
            name.push(first.to_ascii_uppercase());
            name.extend(c);
        }
    }
    name
}

/// The Fail state a run that ended with `o` stops in.
fn end_state(o: Outcome) -> String {
    format!("End{}", &outcome_state(o)["Outcome".len()..])
}

/// The definition, as JSON.
pub fn compile(w: &Workflow, t: &Target) -> Value {
    let failed = outcome_state(Outcome::Failed);
    let mut states = serde_json::Map::new();
    states.insert(
        w.plan.state.into(),
        agent_task(&w.plan, t, w.record.state, &failed),
    );
    states.insert(
        w.record.state.into(),
        agent_task(&w.record, t, w.review.state, &failed),
    );
    states.insert(
        w.review.state.into(),
        agent_task(&w.review, t, state::GATE, &failed),
    );
    states.insert(
        state::GATE.into(),
        json!({
            "Type": "Choice",
            "Comment": "The critic's verdict, mapped into the run: blocked, waiting for a human, or approved by policy",
            "Choices": [
                {"Variable": "$.review.approved", "BooleanEquals": false, "Next": outcome_state(Outcome::Blocked)},
                {"Variable": "$.review.needs_human", "BooleanEquals": true, "Next": state::AWAIT}
            ],
            "Default": state::AUTO
        }),
    );
    states.insert(
        state::AWAIT.into(),
        json!({
            "Type": "Task",
            "Comment": "A human decides through approval_decide, which answers this task token",
            "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
            "Parameters": {
                "QueueUrl": t.approvals_queue_url,
                "MessageBody": {
                    "kind": "approval",
                    "task_token.$": "$$.Task.Token",
                    "run_id.$": "$.run_id",
                    "tenant.$": "$.tenant",
                    "started_by.$": "$.started_by",
                    "plan_sha256.$": "$.review.plan_sha256",
                    "verdict_ref.$": "$.review.verdict_ref",
                    "lane": Lane::Execute.as_str()
                }
            },
            "TimeoutSeconds": w.approval_timeout_seconds,
            "ResultPath": "$.approval",
            "Catch": [
                {"ErrorEquals": [REJECTED], "ResultPath": "$.error", "Next": outcome_state(Outcome::Rejected)},
                {"ErrorEquals": ["States.Timeout", "States.HeartbeatTimeout"], "ResultPath": "$.error", "Next": outcome_state(Outcome::TimedOut)},
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": failed}
            ],
            "Next": state::EXECUTE
        }),
    );
    states.insert(
        state::AUTO.into(),
        json!({
            "Type": "Pass",
            "Comment": "The workspace's policy allows this plan to run without a human",
            "Parameters": {"choice": "approve", "automatic": true, "plan_sha256.$": "$.review.plan_sha256"},
            "ResultPath": "$.approval",
            "Next": state::EXECUTE
        }),
    );
    let mut inner = serde_json::Map::new();
    let mut exec = agent_task(&w.execute, t, "", &failed);
    if let Some(o) = exec.as_object_mut() {
        // Inside the map: the agent's answer is the item's result; failures end the map.
        o.remove("Next");
        o.remove("Catch");
        o.remove("ResultPath");
        o.insert("End".into(), json!(true));
    }
    inner.insert(w.execute.state.into(), exec);
    states.insert(
        state::EXECUTE.into(),
        json!({
            "Type": "Map",
            "Comment": "Exactly the approved subtasks, a few at a time",
            "ItemsPath": "$.plan.subtasks",
            "MaxConcurrency": w.execute_concurrency,
            "ItemSelector": {
                "run_id.$": "$.run_id",
                "tenant.$": "$.tenant",
                "plan.$": "$.plan",
                "approval.$": "$.approval",
                "subtask.$": "$$.Map.Item.Value"
            },
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": w.execute.state,
                "States": Value::Object(inner)
            },
            // Each subtask's result is an artifact; the state keeps none of them, so what the
            // sweeper receives stays small (an agent on ECS gets it in 8 KiB of overrides).
            "ResultPath": null,
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": failed}],
            "Next": outcome_state(Outcome::Succeeded)
        }),
    );
    for o in Outcome::ALL {
        states.insert(
            outcome_state(o),
            json!({
                "Type": "Pass",
                "Result": {"status": o.as_str()},
                "ResultPath": "$.outcome",
                "Next": w.sweep.state
            }),
        );
    }
    let mut sweep = agent_task(&w.sweep, t, state::FINISH, state::SWEEP_FAILED);
    if let Some(o) = sweep.as_object_mut() {
        o.insert("Comment".into(), json!("Every run ends here, whatever its outcome: the timeline record and the retrospective"));
    }
    states.insert(w.sweep.state.into(), sweep);
    let mut choices = Vec::new();
    for o in Outcome::ALL {
        let next = match o {
            Outcome::Succeeded => state::DONE.to_string(),
            other => end_state(other),
        };
        choices.push(
            json!({"Variable": "$.outcome.status", "StringEquals": o.as_str(), "Next": next}),
        );
    }
    states.insert(
        state::FINISH.into(),
        json!({"Type": "Choice", "Choices": choices, "Default": end_state(Outcome::Failed)}),
    );
    states.insert(state::DONE.into(), json!({"Type": "Succeed"}));
    for o in Outcome::ALL {
        if let Some(error) = o.error() {
            states.insert(
                end_state(o),
                json!({
                    "Type": "Fail",
                    "Error": error,
                    "Cause": format!("the run ended {}; the sweeper recorded why on the timeline", o.as_str().replace('_', " "))
                }),
            );
        }
    }
    states.insert(
        state::SWEEP_FAILED.into(),
        json!({"Type": "Fail", "Error": "agentbus.SweepFailed", "Cause": "the sweeper could not record the run"}),
    );
    json!({
        "Comment": "agentbus lanes: plan (read_only) -> record -> review (dry_run) -> approval -> execute (execute) -> sweep",
        "QueryLanguage": "JSONPath",
        "StartAt": w.plan.state,
        "TimeoutSeconds": w.steps().iter().map(|s| s.timeout_seconds * (s.retry.max_attempts + 1)).sum::<u32>() + w.approval_timeout_seconds,
        "States": Value::Object(states)
    })
}

/// One agent step as a task-token task, with its timeouts, retries (exponential backoff,
/// full jitter) and a catch that sends the run to `on_error`.
fn agent_task(s: &AgentStep, t: &Target, next: &str, on_error: &str) -> Value {
    let (resource, parameters) = match &t.dispatch {
        Dispatch::Sqs { queue_url } => (
            "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
            json!({
                "QueueUrl": queue_url,
                "MessageBody": {
                    "task_token.$": "$$.Task.Token",
                    "run_id.$": "$.run_id",
                    "role": s.role.as_str(),
                    "phase": s.phase.as_str(),
                    "lane": s.lane.as_str(),
                    "input.$": "$"
                }
            }),
        ),
        Dispatch::Ecs {
            cluster,
            task_definitions,
            lane_roles,
            container,
            subnets,
            security_groups,
            assign_public_ip,
            spot,
        } => (
            "arn:aws:states:::ecs:runTask.waitForTaskToken",
            json!({
                "Cluster": cluster,
                "TaskDefinition": task_definitions.get(&s.role).cloned().unwrap_or_default(),
                "CapacityProviderStrategy": [{
                    "CapacityProvider": if *spot { "FARGATE_SPOT" } else { "FARGATE" },
                    "Weight": 1
                }],
                "NetworkConfiguration": {"AwsvpcConfiguration": {
                    "Subnets": subnets,
                    "SecurityGroups": security_groups,
                    "AssignPublicIp": if *assign_public_ip { "ENABLED" } else { "DISABLED" }
                }},
                "Overrides": {
                    "TaskRoleArn": lane_roles.get(&s.lane).cloned().unwrap_or_default(),
                    "ContainerOverrides": [{
                    "Name": container,
                    "Environment": [
                        {"Name": "AGENTBUS_TASK_TOKEN", "Value.$": "$$.Task.Token"},
                        {"Name": "AGENTBUS_RUN_ID", "Value.$": "$.run_id"},
                        {"Name": "AGENTBUS_ROLE", "Value": s.role.as_str()},
                        {"Name": "AGENTBUS_PHASE", "Value": s.phase.as_str()},
                        {"Name": "AGENTBUS_LANE", "Value": s.lane.as_str()},
                        {"Name": "AGENTBUS_INPUT", "Value.$": "States.JsonToString($)"}
                    ]
                }]}
            }),
        ),
    };
    json!({
        "Type": "Task",
        "Comment": format!("{} {} in lane {}", s.role.as_str(), s.phase.as_str(), s.lane.as_str()),
        "Resource": resource,
        "Parameters": parameters,
        "TimeoutSeconds": s.timeout_seconds,
        "HeartbeatSeconds": s.heartbeat_seconds,
        "ResultPath": s.result,
        "Retry": [{
            "ErrorEquals": [AGENT_FAILED, "States.Timeout", "States.HeartbeatTimeout"],
            "IntervalSeconds": s.retry.interval_seconds,
            "MaxAttempts": s.retry.max_attempts,
            "BackoffRate": s.retry.backoff_rate,
            "MaxDelaySeconds": s.retry.max_delay_seconds,
            "JitterStrategy": "FULL"
        }],
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": on_error}],
        "Next": next
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn sqs() -> Target {
        Target {
            dispatch: Dispatch::Sqs {
                queue_url: "http://127.0.0.1:5000/123456789012/agentbus-dev-agents".into(),
            },
            approvals_queue_url: "http://127.0.0.1:5000/123456789012/agentbus-dev-approvals".into(),
        }
    }

    pub(crate) fn ecs() -> Target {
        Target {
            dispatch: Dispatch::Ecs {
                cluster: "agentbus-dev".into(),
                task_definitions: Role::ALL
                    .iter()
                    .map(|r| (*r, format!("agentbus-dev-{}", r.as_str())))
                    .collect(),
                lane_roles: [Lane::ReadOnly, Lane::DryRun, Lane::Execute]
                    .iter()
                    .map(|l| {
                        (
                            *l,
                            format!("arn:aws:iam::123456789012:role/agentbus-dev-{}", l.as_str()),
                        )
                    })
                    .collect(),
                container: "agent".into(),
                subnets: vec!["subnet-1".into(), "subnet-2".into()],
                security_groups: vec!["sg-agents".into()],
                assign_public_ip: true,
                spot: true,
            },
            approvals_queue_url:
                "https://sqs.us-east-1.amazonaws.com/123456789012/agentbus-dev-approvals".into(),
        }
    }

    /// Every `Next`, `Default` and `StartAt` in a states object and its nested machines.
    fn check_graph(machine: &Value) -> BTreeSet<String> {
        let states = machine["States"].as_object().expect("States");
        let names: BTreeSet<String> = states.keys().cloned().collect();
        let mut reached = BTreeSet::new();
        let mut todo = vec![machine["StartAt"].as_str().expect("StartAt").to_string()];
        while let Some(n) = todo.pop() {
            assert!(names.contains(&n), "{n} is named but not defined");
            if !reached.insert(n.clone()) {
                continue;
            }
            let s = &states[&n];
            let mut next: Vec<&Value> = vec![&s["Next"], &s["Default"]];
            for c in s["Choices"].as_array().into_iter().flatten() {
                next.push(&c["Next"]);
            }
            for c in s["Catch"].as_array().into_iter().flatten() {
                next.push(&c["Next"]);
            }
            for v in next.into_iter().filter_map(Value::as_str) {
                todo.push(v.to_string());
            }
            let terminal = s["End"] == json!(true)
                || s["Type"] == "Succeed"
                || s["Type"] == "Fail"
                || s["Type"] == "Choice";
            assert!(terminal || s["Next"].is_string(), "{n} goes nowhere");
            if let Some(p) = s.get("ItemProcessor") {
                check_graph(p);
            }
        }
        assert_eq!(reached, names, "unreachable states");
        reached
    }

    #[test]
    fn every_state_is_reachable_and_every_transition_lands_on_a_state() {
        for t in [sqs(), ecs()] {
            let asl = compile(&Workflow::lanes(), &t);
            let states = check_graph(&asl);
            assert!(states.contains("AwaitApproval") && states.contains("Sweep"));
        }
    }

    #[test]
    fn the_verdict_decides_the_gate_and_every_ending_passes_through_the_sweeper() {
        let asl = compile(&Workflow::lanes(), &sqs());
        let gate = &asl["States"]["ApprovalGate"];
        assert_eq!(gate["Choices"][0]["Variable"], "$.review.approved");
        assert_eq!(gate["Choices"][0]["Next"], "OutcomeBlocked");
        assert_eq!(gate["Choices"][1]["Next"], "AwaitApproval");
        assert_eq!(gate["Default"], "AutoApproved");
        for o in Outcome::ALL {
            assert_eq!(asl["States"][outcome_state(o)]["Next"], "Sweep", "{o:?}");
        }
        for (name, s) in asl["States"].as_object().unwrap() {
            if s["Type"] == "Fail" && name != "SweepFailed" {
                // Only Finish leads to the ends; Finish follows the sweep.
                assert!(name.starts_with("End"), "{name}");
            }
        }
        let await_ = &asl["States"]["AwaitApproval"];
        assert_eq!(await_["Catch"][0]["ErrorEquals"], json!([REJECTED]));
        assert_eq!(
            await_["Parameters"]["MessageBody"]["plan_sha256.$"],
            "$.review.plan_sha256"
        );
    }

    #[test]
    fn agents_get_the_same_message_through_sqs_and_ecs_in_their_lane() {
        let w = Workflow::lanes();
        let q = compile(&w, &sqs());
        let body = &q["States"]["Review"]["Parameters"]["MessageBody"];
        assert_eq!(body["role"], "critic");
        assert_eq!(body["phase"], "review");
        assert_eq!(body["lane"], "dry_run");
        assert_eq!(body["task_token.$"], "$$.Task.Token");
        let e = compile(&w, &ecs());
        let review = &e["States"]["Review"];
        assert_eq!(
            review["Resource"],
            "arn:aws:states:::ecs:runTask.waitForTaskToken"
        );
        assert_eq!(
            review["Parameters"]["TaskDefinition"],
            "agentbus-dev-critic"
        );
        assert_eq!(
            review["Parameters"]["Overrides"]["TaskRoleArn"],
            "arn:aws:iam::123456789012:role/agentbus-dev-dry_run",
            "the critic reviews in the dry-run lane's role"
        );
        let env = review["Parameters"]["Overrides"]["ContainerOverrides"][0]["Environment"]
            .as_array()
            .unwrap();
        let lane = env.iter().find(|v| v["Name"] == "AGENTBUS_LANE").unwrap();
        assert_eq!(lane["Value"], "dry_run");
        let exec = &e["States"]["Execute"]["ItemProcessor"]["States"]["ExecuteSubtask"];
        assert_eq!(
            exec["Parameters"]["TaskDefinition"],
            "agentbus-dev-conductor"
        );
        assert_eq!(
            exec["Parameters"]["Overrides"]["TaskRoleArn"],
            "arn:aws:iam::123456789012:role/agentbus-dev-execute"
        );
        let plan = &e["States"]["Plan"];
        assert_eq!(
            plan["Parameters"]["TaskDefinition"],
            "agentbus-dev-conductor"
        );
        assert_eq!(
            plan["Parameters"]["Overrides"]["TaskRoleArn"],
            "arn:aws:iam::123456789012:role/agentbus-dev-read_only",
            "the conductor plans in the read-only lane's role"
        );
        assert_eq!(exec["End"], true);
    }

    #[test]
    fn every_agent_step_has_a_timeout_a_heartbeat_and_retries_with_jitter() {
        let asl = compile(&Workflow::lanes(), &ecs());
        let mut tasks = 0;
        let mut visit = |s: &Value| {
            if s["Type"] == "Task"
                && s["Resource"]
                    .as_str()
                    .is_some_and(|r| r.contains("ecs:runTask"))
            {
                tasks += 1;
                assert!(
                    s["TimeoutSeconds"].as_u64().unwrap() > s["HeartbeatSeconds"].as_u64().unwrap()
                );
                assert_eq!(s["Retry"][0]["JitterStrategy"], "FULL");
                assert!(
                    s["Retry"][0]["ErrorEquals"]
                        .as_array()
                        .unwrap()
                        .contains(&json!(AGENT_FAILED))
                );
            }
        };
        for s in asl["States"].as_object().unwrap().values() {
            visit(s);
            if let Some(inner) = s["ItemProcessor"]["States"].as_object() {
                inner.values().for_each(&mut visit);
            }
        }
        assert_eq!(tasks, 5);
    }

    /// npm's `asl-validator` (installed by scripts/test.sh), a checker nobody here wrote.
    fn asl_validator(definition: &Value) -> (bool, String) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/workflow");
        let bin = format!("{dir}/node_modules/.bin/asl-validator");
        assert!(
            std::path::Path::new(&bin).exists(),
            "{bin} is missing: run scripts/test.sh, which installs it"
        );
        let file = std::env::temp_dir().join(format!("agentbus-asl-{}.json", std::process::id()));
        std::fs::write(
            &file,
            serde_json::to_vec_pretty(definition).unwrap_or_default(),
        )
        .expect("write the definition");
        let out = std::process::Command::new(&bin)
            .arg("--json-path")
            .arg(&file)
            .output()
            .expect("run asl-validator");
        let _ = std::fs::remove_file(&file);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    #[test]
    fn asl_validator_accepts_both_definitions_and_rejects_a_broken_one() {
        for t in [sqs(), ecs()] {
            let asl = compile(&Workflow::lanes(), &t);
            let (ok, text) = asl_validator(&asl);
            assert!(ok, "asl-validator refused the definition: {text}");
        }
        // The validator is not a rubber stamp: a dangling transition fails it.
        let mut broken = compile(&Workflow::lanes(), &sqs());
        broken["States"]["Plan"]["Next"] = json!("NoSuchState");
        let (ok, text) = asl_validator(&broken);
        assert!(!ok, "a dangling Next passed: {text}");
    }

    #[test]
    fn the_definition_people_review_is_pinned() {
        let text =
            serde_json::to_string_pretty(&compile(&Workflow::lanes(), &ecs())).unwrap_or_default();
        insta::assert_snapshot!(text);
    }

    /// ECS refuses a RunTask whose container overrides exceed 8,192 characters, and every
    /// agent step gets the run's state in them. The largest state the tools allow — 50
    /// subtasks, a 64-character tenant, a model's usage, the longest reason and failure cause,
    /// a 1,024-character task token (Step Functions' maximum) — still fits, at the sweep, which
    /// receives the most.
    #[test]
    fn the_largest_run_state_fits_in_an_ecs_tasks_overrides() {
        use crate::approval::MAX_REASON_CHARS;
        use crate::workflow::MAX_CAUSE_CHARS;
        let run = "run-0123456789ab0123456789abcdef";
        let usage = json!({"input_tokens": 123456789, "output_tokens": 123456789, "calls": 99, "cost_usd": 123.456});
        let subtasks: Vec<Value> = (1..=50)
            .map(|i| json!({"id": format!("s{i}"), "tool": "subscriptions_create_long"}))
            .collect();
        let sha = "a".repeat(64);
        let state = json!({
            "run_id": run,
            "tenant": "t".repeat(64),
            "goal_ref": format!("runs/{run}/goal.json"),
            "started_by": "0123456789ab",
            "plan": {
                "plan_ref": format!("runs/{run}/plan.md"),
                "subtasks_ref": format!("runs/{run}/subtasks.json"),
                "evidence_ref": format!("runs/{run}/evidence.json"),
                "plan_sha256": sha,
                "subtasks": subtasks,
                "cost_delta_monthly": 1234567.89,
                "model_usage": usage,
            },
            "recorded": {"record_ref": format!("runs/{run}/timeline-plan.json")},
            "review": {
                "approved": true, "needs_human": true, "lane": "execute",
                "verdict_ref": format!("runs/{run}/verdict.json"),
                "plan_sha256": sha, "model_usage": usage,
            },
            "approval": {
                "run_id": run, "choice": "approve", "plan_sha256": sha, "lane": "execute",
                "decided_by": "0123456789ab", "reason": "r".repeat(MAX_REASON_CHARS),
                "decided_at": 1_900_000_000u64, "expires_at": 1_900_086_400u64,
            },
            "outcome": {"status": "failed"},
            "error": {"Error": "agentbus.AgentFailed", "Cause": "c".repeat(MAX_CAUSE_CHARS)},
        });
        let asl = compile(&Workflow::lanes(), &ecs());
        let sweep = &asl["States"]["Sweep"]["Parameters"]["Overrides"];
        assert!(sweep.is_object(), "the sweep is an ECS task: {asl}");
        let env: Vec<Value> = sweep["ContainerOverrides"][0]["Environment"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let name = e["Name"].as_str().unwrap();
                let value = match name {
                    "AGENTBUS_TASK_TOKEN" => "T".repeat(1024),
                    "AGENTBUS_RUN_ID" => run.to_string(),
                    "AGENTBUS_INPUT" => state.to_string(),
                    _ => e["Value"].as_str().unwrap().to_string(),
                };
                json!({"name": name, "value": value})
            })
            .collect();
        let overrides = json!([{"name": "agent", "environment": env}]).to_string();
        assert!(
            overrides.len() < 8192,
            "the sweep's container overrides are {} characters",
            overrides.len()
        );
    }
}
