//! The three backends against llm-katan (PyPI; its echo backend speaks the OpenAI, Anthropic
//! and Bedrock Converse wire formats, tool calls included) on 127.0.0.1.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

/// An llm-katan server, stopped when dropped.
pub(crate) struct Katan {
    child: Child,
    pub(crate) port: u16,
}

impl Drop for Katan {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn katan(extra: &[&str]) -> Katan {
    let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/llm-katan");
    assert!(
        std::path::Path::new(bin).exists(),
        "{bin} is missing: run scripts/test.sh, which installs it"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stats = std::env::temp_dir().join(format!("katan-{port}.json"));
    let child = Command::new(bin)
        .args([
            "--model",
            "test-model",
            "--backend",
            "echo",
            "--providers",
            "openai,anthropic,bedrock",
            "--host",
            "127.0.0.1",
        ])
        .args([
            "--port",
            &port.to_string(),
            "--disable-dashboard",
            "--stats-file",
            stats.to_str().unwrap(),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start llm-katan");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "llm-katan did not start on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Katan { child, port }
}

fn providers(port: u16) -> Vec<Box<dyn Provider>> {
    let base = format!("http://127.0.0.1:{port}");
    let bedrock_cfg = aws_sdk_bedrockruntime::config::Builder::new()
        .behavior_version(aws_sdk_bedrockruntime::config::BehaviorVersion::latest())
        .region(aws_sdk_bedrockruntime::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_bedrockruntime::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(&base)
        .build();
    vec![
        Box::new(
            openai::OpenAi::new(format!("{base}/v1"), "test-model", Some("sk-test".into()))
                .unwrap(),
        ),
        Box::new(
            anthropic::Anthropic::new(base.clone(), "test-model", "sk-ant-test".into()).unwrap(),
        ),
        Box::new(bedrock::Bedrock::new(
            "test-model",
            aws_sdk_bedrockruntime::Client::from_conf(bedrock_cfg),
        )),
    ]
}

/// A question without tools.
fn ask(system: &str, prompt: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        system: system.into(),
        prompt: prompt.into(),
        tools: Vec::new(),
        force_tool: None,
        max_tokens,
    }
}

fn model(p: Box<dyn Provider>, timeout: Duration, retries: u32) -> Model {
    Model::new(p, timeout, retries, Some((3.0, 15.0)))
}

#[tokio::test]
async fn every_backend_answers_in_its_wire_format_and_counts_tokens() {
    let k = katan(&[]);
    for p in providers(k.port) {
        let m = model(p, Duration::from_secs(20), 0);
        let req = ask("be brief", "hello from agentbus", 64);
        let reply = m
            .chat(&req)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", m.describe()));
        assert!(
            reply.text.contains("hello from agentbus"),
            "{}: {reply:?}",
            m.describe()
        );
        assert!(reply.tool_calls.is_empty());
        let u = m.usage();
        assert_eq!(u.calls, 1, "{}", m.describe());
        assert!(
            u.input_tokens + u.output_tokens > 0,
            "{}: {u:?}",
            m.describe()
        );
        let cost = u.cost_usd.unwrap();
        let expected = (u.input_tokens as f64 * 3.0 + u.output_tokens as f64 * 15.0) / 1e6;
        assert!(
            (cost - expected).abs() < 1e-12,
            "{}: {cost} vs {expected}",
            m.describe()
        );
    }
}

#[tokio::test]
async fn every_backend_gives_a_structured_answer_as_a_forced_tool_call() {
    let k = katan(&[]);
    let schema = json!({
        "type": "object",
        "properties": {"refuse": {"type": "boolean"}, "conditions": {"type": "array", "items": {"type": "string"}}, "notes": {"type": "string"}},
        "required": ["refuse", "conditions", "notes"]
    });
    for p in providers(k.port) {
        let m = model(p, Duration::from_secs(20), 0);
        let (args, usage) = m
            .structured(
                "review",
                "the plan",
                "review_plan",
                "Your review",
                schema.clone(),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", m.describe()));
        assert!(args["refuse"].is_boolean(), "{}: {args}", m.describe());
        assert!(args["conditions"].is_array(), "{}: {args}", m.describe());
        assert!(args["notes"].is_string(), "{}: {args}", m.describe());
        assert_eq!(usage.calls, 1);
    }
}

#[tokio::test]
async fn throttling_is_retried_then_reported_and_a_silent_endpoint_times_out() {
    // After one answer, llm-katan throttles every request (429).
    let k = katan(&["--rate-limit-after", "1"]);
    for p in providers(k.port) {
        let name = p.describe();
        let m = model(p, Duration::from_secs(20), 1);
        let req = ask("", "x", 16);
        // The server counts requests across providers: the first one may get through.
        let mut last = m.chat(&req).await;
        if last.is_ok() {
            last = m.chat(&req).await;
        }
        match last {
            Err(e @ ModelError::Http { status: 429, .. }) => assert!(e.retryable()),
            other => panic!("{name}: expected a 429 after the retry, got {other:?}"),
        }
    }
    let slow = katan(&["--latency-ms", "3000"]);
    for p in providers(slow.port) {
        let m = model(p, Duration::from_millis(500), 0);
        let req = ask("", "x", 16);
        let started = Instant::now();
        assert!(
            matches!(m.chat(&req).await, Err(ModelError::Timeout(_))),
            "{}",
            m.describe()
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{}",
            m.describe()
        );
    }
}

#[tokio::test]
async fn the_configuration_names_what_is_missing() {
    let cfg = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    assert!(
        Model::configured(cfg(&[])).await.unwrap().is_none(),
        "no model configured: none"
    );
    for (pairs, says) in [
        (&[("AGENTBUS_MODEL", "gpt-4o")][..], "use bedrock:MODEL_ID"),
        (
            &[("AGENTBUS_MODEL", "openai:gpt-4o")][..],
            "AGENTBUS_MODEL_URL",
        ),
        (
            &[("AGENTBUS_MODEL", "anthropic:claude")][..],
            "ANTHROPIC_API_KEY",
        ),
        (
            &[("AGENTBUS_MODEL", "mystery:m")][..],
            "provider \"mystery\"",
        ),
        (
            &[
                ("AGENTBUS_MODEL", "openai:m"),
                ("AGENTBUS_MODEL_URL", "http://127.0.0.1:1/v1"),
                ("AGENTBUS_MODEL_PRICE", "cheap"),
            ][..],
            "INPUT,OUTPUT",
        ),
    ] {
        let pairs: &'static [(&str, &str)] = pairs;
        match Model::configured(cfg(pairs)).await {
            Err(e) => assert!(e.to_string().contains(says), "{pairs:?}: {e}"),
            Ok(_) => panic!("{pairs:?} was accepted"),
        }
    }
    let m = Model::configured(cfg(&[
        ("AGENTBUS_MODEL", "openai:m"),
        ("AGENTBUS_MODEL_URL", "http://127.0.0.1:1/v1"),
    ]))
    .await
    .unwrap()
    .unwrap();
    assert_eq!(m.describe(), "openai:m");
}
