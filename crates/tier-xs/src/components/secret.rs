//! The workspace secret (`agentbus/{env}/server`): the server's credentials, generated at
//! deploy. Its value is never printed, never part of a plan, and never diffed: the plan only
//! manages the secret's metadata.

use async_trait::async_trait;
use aws_sdk_secretsmanager::types::Tag;
use serde_json::json;

use crate::aws::AwsClients;
use crate::cost::base::base_cost;
use crate::cost::{CostContext, CostError, CostLine};
use crate::engine::{
    Desired, EngineError, Observed, Outputs, Resource, error_code, own_tags, tags_value,
};
use crate::workspace::Tier;

use super::tag_changes;

pub struct WorkspaceSecret {
    pub id: &'static str,
    pub tier: Tier,
    pub name: String,
    pub description: String,
    /// `prod`: deleting schedules deletion with a 30-day recovery window.
    pub recovery_window_days: Option<i64>,
    pub tags: Vec<(String, String)>,
}

/// Fresh server credentials: a random session key and an empty token list (tokens are
/// added, as hashes, by `agentbus token create`).
pub fn initial_secret_value() -> String {
    let mut key = [0u8; 32];
    if getrandom::fill(&mut key).is_err() {
        // No OS randomness: refuse to make a guessable key rather than a weak one.
        return String::new();
    }
    json!({ "version": 1, "session_key": hex::encode(key), "tokens": [] }).to_string()
}

impl WorkspaceSecret {
    fn err(&self, op: &str, e: impl std::error::Error) -> EngineError {
        EngineError::aws(&self.name, op, e)
    }

    fn tag(&self, k: &str, v: &str) -> Tag {
        Tag::builder().key(k).value(v).build()
    }
}

#[async_trait]
impl Resource for WorkspaceSecret {
    fn id(&self) -> &'static str {
        self.id
    }
    fn kind(&self) -> &'static str {
        "secret"
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn tier(&self) -> Tier {
        self.tier
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new()
            .set("description", self.description.clone())
            .set("tags", tags_value(&self.tags))
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let out = match aws
            .secrets()
            .describe_secret()
            .secret_id(&self.name)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => return Ok(None),
            Err(e) => return Err(self.err("DescribeSecret", e)),
        };
        // A secret scheduled for deletion is gone as far as the plan is concerned; creating
        // it again restores it.
        if out.deleted_date.is_some() {
            return Ok(None);
        }
        Ok(Some(
            Observed::default()
                .field("description", out.description.unwrap_or_default())
                .field(
                    "tags",
                    own_tags(
                        out.tags
                            .unwrap_or_default()
                            .into_iter()
                            .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default())),
                    ),
                )
                .output("arn", out.arn.unwrap_or_default())
                .output("name", self.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<Observed, EngineError> {
        // Restore a secret that an earlier destroy scheduled for deletion (prod keeps
        // them recoverable for 30 days) instead of failing on the name.
        if let Ok(d) = aws
            .secrets()
            .describe_secret()
            .secret_id(&self.name)
            .send()
            .await
            && d.deleted_date.is_some()
        {
            aws.secrets()
                .restore_secret()
                .secret_id(&self.name)
                .send()
                .await
                .map_err(|e| self.err("RestoreSecret", e))?;
            let current = self.observe(aws).await?.unwrap_or_default();
            return self
                .update(
                    aws,
                    outputs,
                    &current,
                    &["description".into(), "tags".into()],
                )
                .await;
        }
        let value = initial_secret_value();
        if value.is_empty() {
            return Err(EngineError::Invalid(
                "no operating-system randomness available to generate the server secret".into(),
            ));
        }
        let mut req = aws
            .secrets()
            .create_secret()
            .name(&self.name)
            .description(&self.description)
            .secret_string(value);
        for (k, v) in &self.tags {
            req = req.tags(self.tag(k, v));
        }
        match req.send().await {
            Ok(_) => {}
            Err(e) if error_code(&e) == Some("ResourceExistsException") => {}
            Err(e) => return Err(self.err("CreateSecret", e)),
        }
        self.observe(aws)
            .await?
            .ok_or_else(|| EngineError::Invalid(format!("{}: created but not found", self.name)))
    }
    async fn update(
        &self,
        aws: &AwsClients,
        outputs: &Outputs,
        current: &Observed,
        changed: &[String],
    ) -> Result<Observed, EngineError> {
        if changed.iter().any(|c| c == "description") {
            aws.secrets()
                .update_secret()
                .secret_id(&self.name)
                .description(&self.description)
                .send()
                .await
                .map_err(|e| self.err("UpdateSecret", e))?;
        }
        if changed.iter().any(|c| c == "tags") {
            let (set, remove) = tag_changes(
                current.fields.get("tags"),
                self.desired(outputs).get("tags"),
            );
            if !remove.is_empty() {
                aws.secrets()
                    .untag_resource()
                    .secret_id(&self.name)
                    .set_tag_keys(Some(remove))
                    .send()
                    .await
                    .map_err(|e| self.err("UntagResource", e))?;
            }
            if !set.is_empty() {
                let mut req = aws.secrets().tag_resource().secret_id(&self.name);
                for (k, v) in set {
                    req = req.tags(self.tag(&k, &v));
                }
                req.send().await.map_err(|e| self.err("TagResource", e))?;
            }
        }
        self.observe(aws)
            .await?
            .ok_or_else(|| EngineError::Invalid(format!("{}: disappeared", self.name)))
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        let mut req = aws.secrets().delete_secret().secret_id(&self.name);
        req = match self.recovery_window_days {
            Some(days) => req.recovery_window_in_days(days),
            None => req.force_delete_without_recovery(true),
        };
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(self.err("DeleteSecret", e)),
        }
    }
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let (p, u) = base_cost(ctx)?;
        Ok(vec![
            CostLine::new(self.id, "secret", 1.0, "secret-mo", p.secret_month),
            CostLine::new(
                self.id,
                "API calls",
                u.secret_api_calls / 10_000.0,
                "10k calls",
                p.secret_api_10k,
            ),
        ])
    }
    fn notes(&self) -> Vec<String> {
        let mut n = vec!["value generated at deploy; never shown".to_string()];
        if let Some(d) = self.recovery_window_days {
            n.push(format!("on delete: recoverable for {d} days"));
        }
        n
    }
}
