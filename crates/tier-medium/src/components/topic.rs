//! An SNS topic as a resource: where the workspace's alarms go, with an email subscription.
//!
//! The topic is not encrypted: CloudWatch alarms cannot publish to a topic encrypted with
//! SNS's AWS-managed key (its key policy does not admit CloudWatch), and a customer key costs
//! a dollar a month for messages that carry only alarm states. An email subscription stays
//! "pending confirmation" until its owner follows the link SNS sends; a pending subscription
//! cannot be removed through the API (it lapses after three days).

use async_trait::async_trait;
use aws_sdk_sns::operation::delete_topic::DeleteTopicError;
use aws_sdk_sns::operation::get_topic_attributes::GetTopicAttributesError;
use aws_sdk_sns::types::Tag;
use serde_json::{Value, json};
use tier_xs::aws::AwsClients;
use tier_xs::engine::permissions::Permissions;
use tier_xs::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, TagApi, found, gone, pair,
    unmodeled,
};
use tier_xs::tag_api;
use tier_xs::workspace::Workspace;

use super::codes;
use crate::aws::MediumAws;

fn sns_tag(k: &str, v: &str) -> Result<Tag, EngineError> {
    Tag::builder()
        .key(k)
        .value(v)
        .build()
        .map_err(|e| EngineError::Invalid(e.to_string()))
}

tag_api! {
    /// SNS's tags, by the topic's `arn` output.
    pub struct SnsTags;
    read(aws, meta, o): "ListTagsForResource" => aws.sns().list_tags_for_resource().resource_arn(o.out("arn")),
        |out| out.tags().iter().map(|t| pair(t.key(), t.value())).collect();
    tag(aws, meta, o, tags): "TagResource" => aws.sns().tag_resource().resource_arn(o.out("arn"))
        .set_tags(Some(tags.iter().map(|(k, v)| sns_tag(k, v)).collect::<Result<_, _>>()?));
    untag(aws, meta, o, keys): "UntagResource" => aws.sns().untag_resource().resource_arn(o.out("arn"))
        .set_tag_keys(Some(keys.to_vec()));
}

/// The subscription ARN SNS reports until the address owner confirms.
const PENDING: &str = "PendingConfirmation";

pub struct Topic {
    pub meta: Meta,
    /// Its ARN (deterministic: partition, region, account and name).
    pub arn: String,
    /// Who is told by email (the `--alert-email` of the budget); none: nobody yet.
    pub email: Option<String>,
}

impl Topic {
    /// Email subscriptions of the topic: (address, subscription ARN or "PendingConfirmation").
    async fn emails(
        &self,
        aws: &AwsClients,
        arn: &str,
    ) -> Result<Vec<(String, String)>, EngineError> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = aws
                .sns()
                .list_subscriptions_by_topic()
                .topic_arn(arn)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| self.meta.fail("ListSubscriptionsByTopic", e))?;
            for s in page.subscriptions() {
                if s.protocol() == Some("email") {
                    out.push((
                        s.endpoint().unwrap_or_default().to_string(),
                        s.subscription_arn().unwrap_or_default().to_string(),
                    ));
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort();
        Ok(out)
    }

    async fn subscribe(&self, aws: &AwsClients, arn: &str) -> Result<(), EngineError> {
        if let Some(email) = &self.email {
            aws.sns()
                .subscribe()
                .topic_arn(arn)
                .protocol("email")
                .endpoint(email)
                .return_subscription_arn(true)
                .send()
                .await
                .map_err(|e| self.meta.fail("Subscribe", e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Resource for Topic {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "sns topic"
    }
    fn permissions(&self, _ws: &Workspace) -> Permissions {
        let topic = [self.arn.clone()];
        Permissions::new()
            .read(
                &[
                    "sns:GetTopicAttributes",
                    "sns:ListSubscriptionsByTopic",
                    "sns:ListTagsForResource",
                ],
                &topic,
            )
            .write(
                &[
                    "sns:CreateTopic",
                    "sns:Subscribe",
                    "sns:DeleteTopic",
                    "sns:TagResource",
                    "sns:UntagResource",
                ],
                &topic,
            )
            // Unsubscribe names the subscription, whose ARN starts with the topic's.
            .write(&["sns:Unsubscribe"], &[format!("{}:*", self.arn)])
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&SnsTags)
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new().set(
            "email_subscriptions",
            json!(self.email.iter().collect::<Vec<_>>()),
        )
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let found = found(
            aws.sns()
                .get_topic_attributes()
                .topic_arn(&self.arn)
                .send()
                .await,
            |e: &GetTopicAttributesError| {
                e.is_not_found_exception()
                    || unmodeled::<GetTopicAttributesError>(codes::SNS_NOT_FOUND)(e)
            },
            &self.meta,
            "GetTopicAttributes",
        )?;
        if found.is_none() {
            return Ok(None);
        }
        Ok(Some(
            Observed::default()
                .output("arn", self.arn.clone())
                .output("name", self.meta.name.clone()),
        ))
    }
    /// The topic's e-mail subscriptions, listed while the engine reads its tags.
    async fn observe_more(
        &self,
        aws: &AwsClients,
        _found: &Observed,
    ) -> Result<Observed, EngineError> {
        // A pending subscription of another address cannot be removed and lapses by itself:
        // it is not counted as a difference.
        let emails: Vec<Value> = self
            .emails(aws, &self.arn)
            .await?
            .into_iter()
            .filter(|(address, sub)| sub != PENDING || Some(address) == self.email.as_ref())
            .map(|(address, _)| Value::String(address))
            .collect();
        Ok(Observed::default().field("email_subscriptions", Value::Array(emails)))
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        let out = aws
            .sns()
            .create_topic()
            .name(&m.name)
            .set_tags(Some(
                m.tags
                    .iter()
                    .map(|(k, v)| sns_tag(k, v))
                    .collect::<Result<_, _>>()?,
            ))
            .send()
            .await
            .map_err(|e| m.fail("CreateTopic", e))?;
        let arn = out.topic_arn().unwrap_or(&self.arn).to_string();
        self.subscribe(aws, &arn).await
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        if !c.fields.iter().any(|f| f == "email_subscriptions") {
            return Ok(());
        }
        let arn = c.current.out("arn").to_string();
        let current = self.emails(aws, &arn).await?;
        // A changed address: the old confirmed subscription goes (a pending one cannot).
        for (address, sub) in &current {
            if Some(address) != self.email.as_ref() && sub != PENDING && sub.starts_with("arn:") {
                aws.sns()
                    .unsubscribe()
                    .subscription_arn(sub)
                    .send()
                    .await
                    .map_err(|e| self.meta.fail("Unsubscribe", e))?;
            }
        }
        if !current.iter().any(|(a, _)| Some(a) == self.email.as_ref()) {
            self.subscribe(aws, &arn).await?;
        }
        Ok(())
    }
    async fn delete(&self, aws: &AwsClients, current: &Observed) -> Result<(), EngineError> {
        gone(
            aws.sns()
                .delete_topic()
                .topic_arn(current.out("arn"))
                .send()
                .await,
            |e: &DeleteTopicError| {
                e.is_not_found_exception() || unmodeled::<DeleteTopicError>(codes::SNS_NOT_FOUND)(e)
            },
            &self.meta,
            "DeleteTopic",
        )
    }
    fn notes(&self) -> Vec<String> {
        match &self.email {
            Some(e) => vec![format!(
                "alarms email {e}: the address must confirm SNS's subscription message once"
            )],
            None => vec!["no --alert-email: alarms change state but tell nobody".into()],
        }
    }
}
