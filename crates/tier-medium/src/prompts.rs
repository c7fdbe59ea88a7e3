//! The agents' instructions as MCP prompts, so a client with a model of its own can plan and
//! review as the conductor and the critic do: `conductor` (a goal, with the tools the session
//! has) and `critic` (a plan and, optionally, the policy's checks of it). The texts are the
//! agents' own ([`agents::roles`]).

use std::sync::Arc;

use agents::roles::{CRITIC_INSTRUCTIONS, conductor_instructions, critic_request};
use agents::tools::ToolInfo;
use rmcp::model::{Prompt, PromptArgument, PromptMessage, Role};
use serde_json::{Map, Value};
use tier_xs::server::mcp::PromptSpec;

fn text<'a>(args: &'a Map<String, Value>, name: &str) -> &'a str {
    args.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// The medium tier's prompts.
pub fn prompts() -> Vec<PromptSpec> {
    vec![
        PromptSpec {
            prompt: Prompt::new(
                "conductor",
                Some("Plan a goal as the workspace's conductor: the fewest tool calls, among the tools this session has."),
                Some(vec![
                    PromptArgument::new("goal")
                        .with_description("What the plan should achieve")
                        .with_required(true),
                ]),
            )
            .with_title("Conductor: plan a goal"),
            render: Arc::new(|tools, args| {
                let listed: Vec<ToolInfo> = tools.iter().map(ToolInfo::of).collect();
                Ok(vec![PromptMessage::new_text(
                    Role::User,
                    format!(
                        "{}\n\nThe goal: {}",
                        conductor_instructions(&listed),
                        text(args, "goal")
                    ),
                )])
            }),
        },
        PromptSpec {
            prompt: Prompt::new(
                "critic",
                Some("Review a plan as the workspace's critic: safety, cost and quality."),
                Some(vec![
                    PromptArgument::new("plan")
                        .with_description("The plan to review (markdown)")
                        .with_required(true),
                    PromptArgument::new("checks")
                        .with_description("The policy's checks of it (JSON), if you have them")
                        .with_required(false),
                ]),
            )
            .with_title("Critic: review a plan"),
            render: Arc::new(|_tools, args| {
                let checks = match text(args, "checks") {
                    "" => "none given",
                    c => c,
                };
                Ok(vec![PromptMessage::new_text(
                    Role::User,
                    format!(
                        "{CRITIC_INSTRUCTIONS}\n\n{}",
                        critic_request(text(args, "plan"), checks)
                    ),
                )])
            }),
        },
    ]
}
