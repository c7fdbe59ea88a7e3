//! An SQS queue as a resource: server-side encryption, retention, long polling, an optional
//! dead-letter queue (redrive) and an optional access policy, with the workspace's tags.
//!
//! The event monitor uses two: the queue the bus rule delivers every event into, and its
//! dead-letter queue, where a message lands after [`MAX_RECEIVES`] failed attempts.

use crate::aws::SmallAws;
use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::operation::create_queue::CreateQueueError;
use aws_sdk_sqs::operation::delete_queue::DeleteQueueError;
use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Value, json};
use tier_xs::aws::AwsClients;
use tier_xs::components::normalize_json;
use tier_xs::cost::{CostContext, CostError, CostLine};
use tier_xs::engine::permissions::Permissions;
use tier_xs::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, TagApi, codes, found, gone,
    output_or_unknown, require_output, settle, unmodeled,
};
use tier_xs::tag_api;
use tier_xs::workspace::Workspace;

/// A message that failed this many receives goes to the dead-letter queue.
pub const MAX_RECEIVES: u32 = 5;

/// Who may send messages into the queue: an EventBridge rule, by its ARN.
#[derive(Clone, Debug)]
pub struct SendFromRule {
    pub rule_arn: String,
}

/// How long a create waits out SQS's 60-second hold on a deleted queue's name.
const QUEUE_REUSE_WAIT: std::time::Duration = std::time::Duration::from_secs(75);

pub struct Queue {
    pub meta: Meta,
    /// The queue's ARN (deterministic: region, account and name), for its own policy.
    pub arn: String,
    pub retention_seconds: u32,
    pub visibility_timeout_seconds: u32,
    /// Long polling: a receive waits up to this long for a message.
    pub receive_wait_seconds: u32,
    /// Logical id of the dead-letter queue (its `arn` output).
    pub dead_letter_id: Option<&'static str>,
    pub policy: Option<SendFromRule>,
    /// A dead-letter queue holds the events that could not be processed: data.
    pub holds_data: bool,
    /// Receive requests a month with no traffic (one long-polling consumer: 3 a minute).
    pub polls_per_month: f64,
    /// Requests per event on the bus (send, receive, delete).
    pub requests_per_event: f64,
    /// Whether the settings call for it (an existing unwanted queue is removed).
    pub wanted: bool,
}

tag_api! {
    /// SQS's tags, by the queue's `url` output.
    pub struct QueueTags;
    read(aws, meta, o): "ListQueueTags" => aws.sqs().list_queue_tags().queue_url(o.out("url")),
        |out| out.tags.unwrap_or_default().into_iter().collect();
    tag(aws, meta, o, tags): "TagQueue" => aws.sqs().tag_queue().queue_url(o.out("url"))
        .set_tags(Some(tags.iter().cloned().collect()));
    untag(aws, meta, o, keys): "UntagQueue" => aws.sqs().untag_queue().queue_url(o.out("url"))
        .set_tag_keys(Some(keys.to_vec()));
}

fn attr_names() -> [QueueAttributeName; 7] {
    [
        QueueAttributeName::QueueArn,
        QueueAttributeName::MessageRetentionPeriod,
        QueueAttributeName::VisibilityTimeout,
        QueueAttributeName::ReceiveMessageWaitTimeSeconds,
        QueueAttributeName::SqsManagedSseEnabled,
        QueueAttributeName::RedrivePolicy,
        QueueAttributeName::Policy,
    ]
}

impl Queue {
    fn policy_doc(&self) -> Option<Value> {
        self.policy.as_ref().map(|p| {
            json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "deliver-from-rule",
                    "Effect": "Allow",
                    "Principal": {"Service": "events.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": self.arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": p.rule_arn}}
                }]
            })
        })
    }

    fn redrive(&self, outputs: &Outputs) -> Value {
        match self.dead_letter_id {
            None => Value::Null,
            Some(id) => json!({
                "deadLetterTargetArn": output_or_unknown(outputs, id, "arn"),
                "maxReceiveCount": MAX_RECEIVES,
            }),
        }
    }

    /// The attributes to set, as SQS wants them (strings).
    fn attributes(
        &self,
        outputs: &Outputs,
        changed: Option<&[String]>,
    ) -> Result<HashMap<QueueAttributeName, String>, EngineError> {
        let wants = |f: &str| changed.is_none_or(|c| c.iter().any(|x| x == f));
        let mut a = HashMap::new();
        if wants("retention_seconds") {
            a.insert(
                QueueAttributeName::MessageRetentionPeriod,
                self.retention_seconds.to_string(),
            );
        }
        if wants("visibility_timeout_seconds") {
            a.insert(
                QueueAttributeName::VisibilityTimeout,
                self.visibility_timeout_seconds.to_string(),
            );
        }
        if wants("receive_wait_seconds") {
            a.insert(
                QueueAttributeName::ReceiveMessageWaitTimeSeconds,
                self.receive_wait_seconds.to_string(),
            );
        }
        if wants("encrypted") {
            a.insert(QueueAttributeName::SqsManagedSseEnabled, "true".into());
        }
        if wants("redrive")
            && let Some(id) = self.dead_letter_id
        {
            let dlq = require_output(outputs, &self.meta.name, id, "arn")?;
            a.insert(
                QueueAttributeName::RedrivePolicy,
                json!({"deadLetterTargetArn": dlq, "maxReceiveCount": MAX_RECEIVES}).to_string(),
            );
        }
        if wants("policy") {
            match self.policy_doc() {
                Some(p) => {
                    a.insert(QueueAttributeName::Policy, p.to_string());
                }
                // An empty policy removes one that should not be there; a new queue has none,
                // and CreateQueue is not sent an empty one.
                None if changed.is_some() => {
                    a.insert(QueueAttributeName::Policy, String::new());
                }
                None => {}
            }
        }
        Ok(a)
    }

    async fn url(&self, aws: &AwsClients) -> Result<Option<String>, EngineError> {
        let out = found(
            aws.sqs()
                .get_queue_url()
                .queue_name(&self.meta.name)
                .send()
                .await,
            |e: &GetQueueUrlError| {
                e.is_queue_does_not_exist()
                    || unmodeled::<GetQueueUrlError>(codes::QUEUE_NOT_FOUND)(e)
            },
            &self.meta,
            "GetQueueUrl",
        )?;
        Ok(out.and_then(|o| o.queue_url))
    }
}

fn num(attrs: &HashMap<QueueAttributeName, String>, k: QueueAttributeName) -> Value {
    attrs
        .get(&k)
        .and_then(|v| v.parse::<u64>().ok())
        .map(Value::from)
        .unwrap_or(Value::Null)
}

#[async_trait]
impl Resource for Queue {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "sqs queue"
    }
    fn permissions(&self, _ws: &Workspace) -> Permissions {
        let queue = [self.arn.clone()];
        Permissions::new()
            .read(
                &[
                    "sqs:GetQueueUrl",
                    "sqs:GetQueueAttributes",
                    "sqs:ListQueueTags",
                ],
                &queue,
            )
            .write(
                &[
                    "sqs:CreateQueue",
                    "sqs:SetQueueAttributes",
                    "sqs:DeleteQueue",
                    "sqs:TagQueue",
                    "sqs:UntagQueue",
                ],
                &queue,
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&QueueTags)
    }
    fn depends_on(&self) -> Vec<&'static str> {
        self.dead_letter_id.into_iter().collect()
    }
    fn data_bearing(&self) -> bool {
        self.holds_data
    }
    fn wanted(&self) -> bool {
        self.wanted
    }
    fn desired(&self, outputs: &Outputs) -> Desired {
        Desired::new()
            .set("retention_seconds", self.retention_seconds)
            .set(
                "visibility_timeout_seconds",
                self.visibility_timeout_seconds,
            )
            .set("receive_wait_seconds", self.receive_wait_seconds)
            .set("encrypted", true)
            .set("redrive", self.redrive(outputs))
            .set("policy", self.policy_doc().unwrap_or(Value::Null))
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let Some(url) = self.url(aws).await? else {
            return Ok(None);
        };
        Ok(Some(Observed::default().output("url", url)))
    }
    /// The queue's attributes (its ARN among them), read while the engine reads its tags.
    async fn observe_more(
        &self,
        aws: &AwsClients,
        found: &Observed,
    ) -> Result<Observed, EngineError> {
        let out = aws
            .sqs()
            .get_queue_attributes()
            .queue_url(found.out("url"))
            .set_attribute_names(Some(attr_names().to_vec()))
            .send()
            .await
            .map_err(|e| self.meta.fail("GetQueueAttributes", e))?;
        let attrs = out.attributes.unwrap_or_default();
        let json_attr = |k: QueueAttributeName| {
            attrs
                .get(&k)
                .filter(|v| !v.is_empty())
                .map(|v| normalize_json(v))
                .unwrap_or(Value::Null)
        };
        let arn = attrs
            .get(&QueueAttributeName::QueueArn)
            .cloned()
            .unwrap_or_else(|| self.arn.clone());
        Ok(Observed::default()
            .field(
                "retention_seconds",
                num(&attrs, QueueAttributeName::MessageRetentionPeriod),
            )
            .field(
                "visibility_timeout_seconds",
                num(&attrs, QueueAttributeName::VisibilityTimeout),
            )
            .field(
                "receive_wait_seconds",
                num(&attrs, QueueAttributeName::ReceiveMessageWaitTimeSeconds),
            )
            .field(
                "encrypted",
                attrs
                    .get(&QueueAttributeName::SqsManagedSseEnabled)
                    .is_some_and(|v| v == "true"),
            )
            .field("redrive", json_attr(QueueAttributeName::RedrivePolicy))
            .field("policy", json_attr(QueueAttributeName::Policy))
            .output("arn", arn))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        let req = aws
            .sqs()
            .create_queue()
            .queue_name(&m.name)
            .set_attributes(Some(self.attributes(outputs, None)?))
            .set_tags(Some(m.tags.iter().cloned().collect()));
        // SQS refuses a name for 60 seconds after its queue was deleted (a quick downgrade and
        // upgrade).
        settle(
            QUEUE_REUSE_WAIT,
            |e: &SdkError<CreateQueueError, _>| {
                e.as_service_error()
                    .is_some_and(CreateQueueError::is_queue_deleted_recently)
            },
            || req.clone().send(),
        )
        .await
        .map_err(|e| m.fail("CreateQueue", e))?;
        Ok(())
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let (outputs, current, changed) = (c.outputs, c.current, c.fields);
        let url = current.out("url").to_string();
        let attrs = self.attributes(outputs, Some(changed))?;
        if !attrs.is_empty() {
            aws.sqs()
                .set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attrs))
                .send()
                .await
                .map_err(|e| self.meta.fail("SetQueueAttributes", e))?;
        }
        Ok(())
    }
    async fn delete(&self, aws: &AwsClients, current: &Observed) -> Result<(), EngineError> {
        let url = current.out("url").to_string();
        gone(
            aws.sqs().delete_queue().queue_url(&url).send().await,
            |e: &DeleteQueueError| {
                e.is_queue_does_not_exist()
                    || unmodeled::<DeleteQueueError>(codes::QUEUE_NOT_FOUND)(e)
            },
            &self.meta,
            "DeleteQueue",
        )
    }
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let c = crate::cost::small_cost(ctx)?;
        let requests = self.polls_per_month + self.requests_per_event * c.xs_usage.events;
        if requests <= 0.0 {
            return Ok(Vec::new());
        }
        Ok(vec![CostLine::new(
            self.meta.id,
            "requests",
            requests / 1e6,
            "M requests",
            c.prices.sqs_requests_million,
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tier_xs::workspace::Tier;

    #[test]
    fn a_queue_without_a_policy_is_created_without_one_and_an_update_removes_a_stray_one() {
        let q = Queue {
            arn: "arn:aws:sqs:us-east-1:123456789012:agentbus-dev-events-feed-dlq".into(),
            meta: Meta::new(
                "dlq",
                Tier::Small,
                "agentbus-dev-events-feed-dlq",
                Vec::new(),
            ),
            retention_seconds: 14 * 86_400,
            visibility_timeout_seconds: 30,
            receive_wait_seconds: 0,
            dead_letter_id: None,
            policy: None,
            holds_data: true,
            polls_per_month: 0.0,
            requests_per_event: 0.0,
            wanted: true,
        };
        let created = q.attributes(&Outputs::new(), None).unwrap();
        assert!(
            !created.contains_key(&QueueAttributeName::Policy),
            "{created:?}"
        );
        let updated = q
            .attributes(&Outputs::new(), Some(&["policy".to_string()]))
            .unwrap();
        assert_eq!(
            updated.get(&QueueAttributeName::Policy).map(String::as_str),
            Some("")
        );
    }
}
