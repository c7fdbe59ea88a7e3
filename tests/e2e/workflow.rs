//! The workflow scenarios on Step Functions: the lanes pipeline compiled to ASL
//! (`agents::asl`) and executed by moto's interpreter, agents dispatched by task token through
//! SQS (as they will be through ECS on AWS: the same message), answering with
//! `SendTaskSuccess` / `SendTaskFailure`; approvals read from the approvals queue and decided
//! with the same rules as the embedded engine (`agents::approval::decide`).
//!
//! Emulator set-up: moto runs state machines only when told to (`POST /moto-api/config`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use agents::approval::{Choice, Pending};
use agents::asl::{Dispatch, Target, compile};
use agents::lane::Lane;
use agents::policy::Policy;
use agents::workflow::{AgentTask, REJECTED, Workflow};
use async_trait::async_trait;
use serde_json::{Value, json};
use tier_medium::runtime::scenarios::{Engine, Script, Seen, Session, admin_request};
use tier_medium::runtime::store::RunStatus;
use tokio_util::sync::CancellationToken;

use crate::harness::{clients, moto, unique_env};

pub struct StepFunctions;

/// moto executes state machines only with its interpreter switched on.
pub(crate) fn interpreter_on() {
    static ON: OnceLock<()> = OnceLock::new();
    ON.get_or_init(|| {
        use std::io::{Read, Write};
        let body = r#"{"stepfunctions": {"execute_state_machine": true}}"#;
        let host = moto().url.trim_start_matches("http://").to_string();
        let mut s = std::net::TcpStream::connect(&host).expect("moto");
        write!(
            s,
            "POST /moto-api/config HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 2") || answer.starts_with("HTTP/1.0 2"), "switching moto's interpreter on: {answer}");
    });
}

struct Sfn {
    sfn: aws_sdk_sfn::Client,
    machine: String,
    executions: Mutex<HashMap<String, String>>,
    /// Approval requests received, by run: the task token and what it waits on.
    pending: Arc<Mutex<HashMap<String, (String, Pending)>>>,
    approval_seconds: u32,
    stop: CancellationToken,
}

async fn queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string()
}

#[async_trait]
impl Engine for StepFunctions {
    async fn open(&self, script: Arc<Script>, workflow: Workflow) -> Box<dyn Session> {
        interpreter_on();
        let aws = clients().await;
        let cfg = aws.sdk_config().clone();
        let sqs = aws_sdk_sqs::Client::new(&cfg);
        let sfn = aws_sdk_sfn::Client::new(&cfg);
        let name = unique_env("wf");
        let agents_url = queue(&sqs, &format!("{name}-agents")).await;
        let approvals_url = queue(&sqs, &format!("{name}-approvals")).await;
        let asl = compile(
            &workflow,
            &Target {
                dispatch: Dispatch::Sqs {
                    queue_url: agents_url.clone(),
                },
                approvals_queue_url: approvals_url.clone(),
            },
        );
        let machine = sfn
            .create_state_machine()
            .name(format!("{name}-lanes"))
            .definition(asl.to_string())
            .role_arn(format!("arn:aws:iam::123456789012:role/{name}-lanes"))
            .r#type(aws_sdk_sfn::types::StateMachineType::Standard)
            .send()
            .await
            .unwrap()
            .state_machine_arn()
            .to_string();
        let stop = CancellationToken::new();
        let pending: Arc<Mutex<HashMap<String, (String, Pending)>>> = Arc::default();
        tokio::spawn(agents_loop(
            sqs.clone(),
            sfn.clone(),
            agents_url,
            script,
            stop.clone(),
        ));
        tokio::spawn(approvals_loop(
            sqs,
            approvals_url,
            pending.clone(),
            workflow.approval_timeout_seconds,
            stop.clone(),
        ));
        Box::new(Sfn {
            sfn,
            machine,
            executions: Mutex::default(),
            pending,
            approval_seconds: workflow.approval_timeout_seconds,
            stop,
        })
    }
}

/// The messages a queue has now (waiting up to a second), each removed as it is taken.
async fn take(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let Ok(got) = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
    else {
        return Vec::new();
    };
    let messages = got.messages.unwrap_or_default();
    for m in &messages {
        if let Some(h) = m.receipt_handle() {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(h)
                .send()
                .await
                .expect("delete the message taken");
        }
    }
    messages
}

/// The scripted agents: each message is an `AgentTask`, answered with its task token.
async fn agents_loop(
    sqs: aws_sdk_sqs::Client,
    sfn: aws_sdk_sfn::Client,
    url: String,
    script: Arc<Script>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        for m in take(&sqs, &url).await {
            let task: AgentTask = serde_json::from_str(m.body().unwrap_or_default())
                .unwrap_or_else(|e| {
                    panic!("the agents' message is an AgentTask: {e}: {:?}", m.body())
                });
            let (script, sfn) = (script.clone(), sfn.clone());
            tokio::spawn(async move {
                match script.answer(&task).await {
                    Ok(v) => {
                        sfn.send_task_success()
                            .task_token(&task.task_token)
                            .output(v.to_string())
                            .send()
                            .await
                            .unwrap();
                    }
                    Err(f) => {
                        sfn.send_task_failure()
                            .task_token(&task.task_token)
                            .error(f.error)
                            .cause(f.cause)
                            .send()
                            .await
                            .unwrap();
                    }
                }
            });
        }
    }
}

/// Approval requests, as the server would keep them.
async fn approvals_loop(
    sqs: aws_sdk_sqs::Client,
    url: String,
    pending: Arc<Mutex<HashMap<String, (String, Pending)>>>,
    approval_seconds: u32,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        for m in take(&sqs, &url).await {
            let v: Value = serde_json::from_str(m.body().unwrap_or_default()).unwrap();
            assert_eq!(v["kind"], "approval", "{v}");
            let now = tier_xs::runtime::now_millis() / 1000;
            let p = Pending {
                run_id: v["run_id"].as_str().unwrap().to_string(),
                plan_sha256: v["plan_sha256"].as_str().unwrap().to_string(),
                lane: Lane::Execute,
                started_by: v["started_by"].as_str().unwrap().to_string(),
                requested_at: now,
                expires_at: now + u64::from(approval_seconds),
            };
            let token = v["task_token"].as_str().unwrap().to_string();
            pending.lock().unwrap().insert(p.run_id.clone(), (token, p));
        }
    }
}

#[async_trait]
impl Session for Sfn {
    async fn start(&self) -> String {
        let run_id = unique_env("run");
        let input = json!({"run_id": run_id, "tenant": "acme", "goal_ref": format!("runs/{run_id}/goal.json"), "started_by": "tok-starter"});
        let arn = self
            .sfn
            .start_execution()
            .state_machine_arn(&self.machine)
            .name(&run_id)
            .input(input.to_string())
            .send()
            .await
            .unwrap()
            .execution_arn()
            .to_string();
        self.executions.lock().unwrap().insert(run_id.clone(), arn);
        run_id
    }

    async fn seen(&self, run_id: &str) -> Seen {
        use aws_sdk_sfn::types::ExecutionStatus as S;
        let arn = self.executions.lock().unwrap()[run_id].clone();
        let d = self
            .sfn
            .describe_execution()
            .execution_arn(&arn)
            .send()
            .await
            .unwrap();
        let output = d.output().and_then(|o| serde_json::from_str(o).ok());
        let status = match d.status() {
            S::Running if self.pending.lock().unwrap().contains_key(run_id) => RunStatus::Waiting,
            S::Running => RunStatus::Running,
            S::Succeeded => RunStatus::Succeeded,
            S::Aborted => RunStatus::Cancelled,
            S::Failed => match self.failure(&arn, d.error()).await.as_str() {
                "agentbus.Blocked" => RunStatus::Blocked,
                e if e == REJECTED => RunStatus::Rejected,
                "agentbus.ApprovalTimeout" => RunStatus::TimedOut,
                _ => RunStatus::Failed,
            },
            _ => RunStatus::Failed,
        };
        Seen {
            status,
            state: output,
        }
    }

    async fn decide(
        &self,
        run_id: &str,
        token: &str,
        choice: Choice,
        hash: &str,
    ) -> Result<(), String> {
        let Some((task_token, p)) = self.pending.lock().unwrap().get(run_id).cloned() else {
            return Err(format!("run {run_id} is not waiting for a decision"));
        };
        let request = admin_request(token, choice, hash);
        let now = tier_xs::runtime::now_millis() / 1000;
        let approval = agents::approval::decide(&p, &request, &Policy::default(), now)
            .map_err(|e| e.to_string())?;
        self.pending.lock().unwrap().remove(run_id);
        match choice {
            Choice::Approve => self
                .sfn
                .send_task_success()
                .task_token(task_token)
                .output(serde_json::to_string(&approval).unwrap())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("{e:?}")),
            Choice::Reject => self
                .sfn
                .send_task_failure()
                .task_token(task_token)
                .error(REJECTED)
                .cause(approval.reason)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("{e:?}")),
        }
    }

    async fn cancel(&self, run_id: &str) {
        let arn = self.executions.lock().unwrap()[run_id].clone();
        self.sfn
            .stop_execution()
            .execution_arn(arn)
            .send()
            .await
            .unwrap();
        self.pending.lock().unwrap().remove(run_id);
    }

    async fn close(&self) {
        self.stop.cancel();
        let _ = self.approval_seconds;
    }
}

impl Sfn {
    /// The error a failed execution ended with: DescribeExecution's, else its history's.
    async fn failure(&self, arn: &str, described: Option<&str>) -> String {
        if let Some(e) = described {
            return e.to_string();
        }
        let h = self
            .sfn
            .get_execution_history()
            .execution_arn(arn)
            .reverse_order(true)
            .send()
            .await
            .unwrap();
        h.events()
            .iter()
            .find_map(|e| {
                e.execution_failed_event_details()
                    .and_then(|d| d.error())
                    .map(str::to_string)
            })
            .unwrap_or_default()
    }
}

tier_medium::workflow_scenarios!(StepFunctions);

/// The real agents (`agentbus agent --queue`, the code of the agents' image) run the compiled
/// workflow on moto's Step Functions: each step a task-token message, done through the MCP
/// endpoint of an `agentbus up medium` server, answered with `SendTaskSuccess`; a human
/// approval answers the approval request's token. The run's effects are read back through MCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agents_run_the_compiled_workflow_on_step_functions_against_the_server() {
    use agents::run::{Goal, ProposedCall};
    use agents::tools::Tools;

    interpreter_on();
    let dir = std::env::temp_dir().join(format!("agentbus-e2e-agents-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = crate::server::up_with(&dir, crate::server::free_port(), &["medium"]);
    let mcp_url = format!("http://127.0.0.1:{}/mcp", server.port);
    let agent_token = crate::server::token(&dir, "default", "user");
    let approver = crate::server::token(&dir, "default", "admin");

    let aws = clients().await;
    let cfg = aws.sdk_config().clone();
    let (sqs, sfn) = (
        aws_sdk_sqs::Client::new(&cfg),
        aws_sdk_sfn::Client::new(&cfg),
    );
    let name = unique_env("real");
    let agents_url = queue(&sqs, &format!("{name}-agents")).await;
    let approvals_url = queue(&sqs, &format!("{name}-approvals")).await;
    let asl = compile(
        &agents::workflow::Workflow::lanes().with_timeouts(60, 30, 120),
        &Target {
            dispatch: Dispatch::Sqs {
                queue_url: agents_url.clone(),
            },
            approvals_queue_url: approvals_url.clone(),
        },
    );
    let machine = sfn
        .create_state_machine()
        .name(format!("{name}-lanes"))
        .definition(asl.to_string())
        .role_arn(format!("arn:aws:iam::123456789012:role/{name}-lanes"))
        .send()
        .await
        .unwrap()
        .state_machine_arn()
        .to_string();

    // The agents, as their image runs them, against moto (AWS) and the server (MCP).
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_agentbus"))
        .args([
            "agent",
            "--queue",
            &agents_url,
            "--mcp-url",
            &mcp_url,
            "--heartbeat",
            "5",
        ])
        .env("AGENTBUS_MCP_TOKEN", &agent_token)
        .env("AWS_ENDPOINT_URL", &moto().url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AGENTBUS_MODEL")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start the agents");

    // workflow_start on AWS writes the goal artifact, then starts the execution named by the run.
    let run_id = unique_env("run");
    let tools = agents::worker::connect(&mcp_url, &agent_token)
        .await
        .unwrap();
    let goal = Goal {
        goal: "greet from step functions".into(),
        subtasks: vec![ProposedCall {
            tool: "kv_set".into(),
            arguments: serde_json::from_value(json!({"key": "sfn-greeting", "value": "hello"}))
                .unwrap(),
            why: "asked".into(),
        }],
    };
    let goal_ref = format!("runs/{run_id}/goal.json");
    tools
        .call(
            "artifacts_put",
            json!({"key": goal_ref, "content": serde_json::to_string(&goal).unwrap()}),
        )
        .await
        .unwrap();
    let execution = sfn
        .start_execution()
        .state_machine_arn(&machine)
        .name(&run_id)
        .input(json!({"run_id": run_id, "tenant": "default", "goal_ref": goal_ref, "started_by": "tok-starter"}).to_string())
        .send()
        .await
        .unwrap()
        .execution_arn()
        .to_string();

    // The approval request arrives after plan, record and review; an admin approves it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let request = loop {
        let got = sqs
            .receive_message()
            .queue_url(&approvals_url)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if let Some(m) = got.messages().first() {
            break serde_json::from_str::<Value>(m.body().unwrap()).unwrap();
        }
        let d = sfn
            .describe_execution()
            .execution_arn(&execution)
            .send()
            .await
            .unwrap();
        assert!(
            std::time::Instant::now() < deadline
                && d.status() == &aws_sdk_sfn::types::ExecutionStatus::Running,
            "no approval request; the execution is {:?} ({:?} {:?})",
            d.status(),
            d.error(),
            d.cause()
        );
    };
    let subtasks = tools
        .call(
            "artifacts_get",
            json!({"key": format!("runs/{run_id}/subtasks.json")}),
        )
        .await
        .unwrap();
    let hash = agents::approval::plan_sha256(subtasks["content"].as_str().unwrap().as_bytes());
    assert_eq!(
        request["plan_sha256"], hash,
        "the request names the plan the critic reviewed"
    );
    let verdict = tools
        .call(
            "artifacts_get",
            json!({"key": format!("runs/{run_id}/verdict.json")}),
        )
        .await
        .unwrap();
    agents::verdict::Verdict::parse(verdict["content"].as_str().unwrap()).unwrap();
    let now = tier_xs::runtime::now_millis() / 1000;
    let pending = Pending {
        run_id: run_id.clone(),
        plan_sha256: hash.clone(),
        lane: Lane::Execute,
        started_by: "tok-starter".into(),
        requested_at: now,
        expires_at: now + 120,
    };
    let approval = agents::approval::decide(
        &pending,
        &admin_request(&approver[..12], Choice::Approve, &hash),
        &Policy::default(),
        now,
    )
    .unwrap();
    sfn.send_task_success()
        .task_token(request["task_token"].as_str().unwrap())
        .output(serde_json::to_string(&approval).unwrap())
        .send()
        .await
        .unwrap();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let d = sfn
            .describe_execution()
            .execution_arn(&execution)
            .send()
            .await
            .unwrap();
        match d.status() {
            aws_sdk_sfn::types::ExecutionStatus::Succeeded => break,
            aws_sdk_sfn::types::ExecutionStatus::Running
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            other => panic!(
                "the execution is {other:?}: {:?} {:?}",
                d.error(),
                d.cause()
            ),
        }
    }
    // What the agents did is in the workspace: the approved write, the records, the retrospective.
    let kv = tools
        .call("kv_get", json!({"key": "sfn-greeting"}))
        .await
        .unwrap();
    assert_eq!(kv["value"], "hello", "{kv}");
    let timeline = tools
        .call("timeline_query", json!({"agent": "sweeper"}))
        .await
        .unwrap();
    assert!(
        timeline["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["task_id"] == run_id.as_str() && r["action"] == "succeeded"),
        "{timeline}"
    );
    let retro = tools
        .call(
            "artifacts_get",
            json!({"key": format!("runs/{run_id}/retrospective.md")}),
        )
        .await
        .unwrap();
    assert!(
        retro["content"].as_str().unwrap().contains("succeeded"),
        "{retro}"
    );
    let _ = worker.kill();
    let _ = worker.wait();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An agent whose step timed out stops: Step Functions no longer knows its task token, so the
/// agent (one step from its environment, as an ECS task runs it) drops the work and exits
/// instead of working on for nobody — which is what stops its ECS task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_step_timed_out_stops() {
    interpreter_on();
    let aws = clients().await;
    let cfg = aws.sdk_config().clone();
    let (sqs, sfn) = (
        aws_sdk_sqs::Client::new(&cfg),
        aws_sdk_sfn::Client::new(&cfg),
    );
    let name = unique_env("gone");
    let url = queue(&sqs, &format!("{name}-steps")).await;
    // One step that times out after two seconds.
    let definition = json!({
        "StartAt": "Step",
        "States": {"Step": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
            "Parameters": {"QueueUrl": url, "MessageBody": {"task_token.$": "$$.Task.Token"}},
            "TimeoutSeconds": 2,
            "End": true
        }}
    });
    let machine = sfn
        .create_state_machine()
        .name(format!("{name}-one-step"))
        .definition(definition.to_string())
        .role_arn(format!("arn:aws:iam::123456789012:role/{name}"))
        .send()
        .await
        .unwrap()
        .state_machine_arn()
        .to_string();
    let execution = sfn
        .start_execution()
        .state_machine_arn(&machine)
        .input("{}")
        .send()
        .await
        .unwrap()
        .execution_arn()
        .to_string();
    let token = loop {
        if let Some(m) = take(&sqs, &url).await.first() {
            let v: Value = serde_json::from_str(m.body().unwrap()).unwrap();
            break v["task_token"].as_str().unwrap().to_string();
        }
    };
    // An MCP endpoint that takes the connection and never answers: the work hangs.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mcp_url = format!("http://{}/mcp", silent.local_addr().unwrap());
    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_agentbus"))
        .args(["agent", "--mcp-url", &mcp_url, "--heartbeat", "1"])
        .env("AGENTBUS_TASK_TOKEN", &token)
        .env("AGENTBUS_RUN_ID", "run-gone")
        .env("AGENTBUS_ROLE", "conductor")
        .env("AGENTBUS_PHASE", "plan")
        .env("AGENTBUS_LANE", "read_only")
        .env("AGENTBUS_INPUT", "{}")
        .env("AGENTBUS_MCP_TOKEN", "ab_000000000000_unused")
        .envs(crate::harness::aws_env())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = agent.kill();
            panic!("the agent kept working on a step that had timed out");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut agent.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("the step was abandoned"), "{stderr}");
    // The run itself ends by its state's timeout.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let d = sfn
            .describe_execution()
            .execution_arn(&execution)
            .send()
            .await
            .unwrap();
        match d.status() {
            aws_sdk_sfn::types::ExecutionStatus::Running
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            s => {
                assert_eq!(s, &aws_sdk_sfn::types::ExecutionStatus::Failed);
                break;
            }
        }
    }
    drop(silent);
}
