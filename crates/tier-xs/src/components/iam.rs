//! IAM roles for ECS tasks, each with one inline policy that names the workspace's own
//! resource ARNs.

use async_trait::async_trait;
use aws_sdk_iam::types::Tag;
use serde_json::{Value, json};

use crate::aws::AwsClients;
use crate::engine::{
    Desired, EngineError, Observed, Outputs, Resource, error_code, own_tags, tags_value,
};
use crate::workspace::Tier;

use super::{normalize_json, tag_changes};

/// One IAM policy statement.
pub fn statement(actions: &[&str], resources: &[String]) -> Value {
    json!({ "Effect": "Allow", "Action": actions, "Resource": resources })
}

pub fn policy(statements: Vec<Value>) -> Value {
    json!({ "Version": "2012-10-17", "Statement": statements })
}

pub struct Role {
    pub id: &'static str,
    pub tier: Tier,
    pub name: String,
    /// Service principal allowed to assume the role (`ecs-tasks.amazonaws.com`).
    pub service: &'static str,
    /// Source account condition, against the confused-deputy problem.
    pub account: String,
    pub policy_name: String,
    pub policy: Value,
    pub arn: String,
    pub tags: Vec<(String, String)>,
}

impl Role {
    fn trust(&self) -> Value {
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": self.service},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": self.account}}
            }]
        })
    }

    fn err(&self, op: &str, e: impl std::error::Error) -> EngineError {
        EngineError::aws(&self.name, op, e)
    }

    async fn put_policy(&self, aws: &AwsClients) -> Result<(), EngineError> {
        aws.iam()
            .put_role_policy()
            .role_name(&self.name)
            .policy_name(&self.policy_name)
            .policy_document(self.policy.to_string())
            .send()
            .await
            .map_err(|e| self.err("PutRolePolicy", e))?;
        Ok(())
    }
}

/// IAM returns policy documents URL-encoded.
fn decode_policy(doc: &str) -> Value {
    let decoded = urlencoding::decode(doc)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| doc.to_string());
    normalize_json(&decoded)
}

#[async_trait]
impl Resource for Role {
    fn id(&self) -> &'static str {
        self.id
    }
    fn kind(&self) -> &'static str {
        "iam role"
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn tier(&self) -> Tier {
        self.tier
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new()
            .set("trust_policy", self.trust())
            .set("inline_policies", json!({ &self.policy_name: self.policy }))
            .set("managed_policies", json!([]))
            .set("tags", tags_value(&self.tags))
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let role = match aws.iam().get_role().role_name(&self.name).send().await {
            Ok(o) => o.role,
            Err(e) if error_code(&e) == Some("NoSuchEntity") => return Ok(None),
            Err(e) => return Err(self.err("GetRole", e)),
        };
        let Some(role) = role else { return Ok(None) };
        let names = aws
            .iam()
            .list_role_policies()
            .role_name(&self.name)
            .send()
            .await
            .map_err(|e| self.err("ListRolePolicies", e))?;
        let mut inline = serde_json::Map::new();
        for p in names.policy_names() {
            let doc = aws
                .iam()
                .get_role_policy()
                .role_name(&self.name)
                .policy_name(p)
                .send()
                .await
                .map_err(|e| self.err("GetRolePolicy", e))?;
            inline.insert(p.clone(), decode_policy(&doc.policy_document));
        }
        let attached = aws
            .iam()
            .list_attached_role_policies()
            .role_name(&self.name)
            .send()
            .await
            .map_err(|e| self.err("ListAttachedRolePolicies", e))?;
        let mut managed: Vec<String> = attached
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn.clone())
            .collect();
        managed.sort();
        let tags = aws
            .iam()
            .list_role_tags()
            .role_name(&self.name)
            .send()
            .await
            .map_err(|e| self.err("ListRoleTags", e))?;
        Ok(Some(
            Observed::default()
                .field(
                    "trust_policy",
                    decode_policy(role.assume_role_policy_document.as_deref().unwrap_or("{}")),
                )
                .field("inline_policies", Value::Object(inline))
                .field("managed_policies", json!(managed))
                .field(
                    "tags",
                    own_tags(tags.tags().iter().map(|t| (t.key.clone(), t.value.clone()))),
                )
                .output("arn", role.arn)
                .output("name", self.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<Observed, EngineError> {
        let mut req = aws
            .iam()
            .create_role()
            .role_name(&self.name)
            .assume_role_policy_document(self.trust().to_string())
            .description(format!("agentbus {}", self.id));
        for (k, v) in &self.tags {
            req = req.tags(
                Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .map_err(|e| EngineError::Invalid(e.to_string()))?,
            );
        }
        match req.send().await {
            Ok(_) => {}
            Err(e) if error_code(&e) == Some("EntityAlreadyExists") => {}
            Err(e) => return Err(self.err("CreateRole", e)),
        }
        self.put_policy(aws).await?;
        Ok(Observed::default()
            .output("arn", self.arn.clone())
            .output("name", self.name.clone()))
    }
    async fn update(
        &self,
        aws: &AwsClients,
        outputs: &Outputs,
        current: &Observed,
        changed: &[String],
    ) -> Result<Observed, EngineError> {
        for f in changed {
            match f.as_str() {
                "trust_policy" => {
                    aws.iam()
                        .update_assume_role_policy()
                        .role_name(&self.name)
                        .policy_document(self.trust().to_string())
                        .send()
                        .await
                        .map_err(|e| self.err("UpdateAssumeRolePolicy", e))?;
                }
                "inline_policies" => {
                    let stale: Vec<String> = current
                        .fields
                        .get("inline_policies")
                        .and_then(|v| v.as_object())
                        .map(|m| {
                            m.keys()
                                .filter(|k| **k != self.policy_name)
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default();
                    for p in stale {
                        aws.iam()
                            .delete_role_policy()
                            .role_name(&self.name)
                            .policy_name(&p)
                            .send()
                            .await
                            .map_err(|e| self.err("DeleteRolePolicy", e))?;
                    }
                    self.put_policy(aws).await?;
                }
                "managed_policies" => {
                    for arn in current
                        .fields
                        .get("managed_policies")
                        .and_then(|v| v.as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str())
                    {
                        aws.iam()
                            .detach_role_policy()
                            .role_name(&self.name)
                            .policy_arn(arn)
                            .send()
                            .await
                            .map_err(|e| self.err("DetachRolePolicy", e))?;
                    }
                }
                "tags" => {
                    let (set, remove) = tag_changes(
                        current.fields.get("tags"),
                        self.desired(outputs).get("tags"),
                    );
                    if !remove.is_empty() {
                        aws.iam()
                            .untag_role()
                            .role_name(&self.name)
                            .set_tag_keys(Some(remove))
                            .send()
                            .await
                            .map_err(|e| self.err("UntagRole", e))?;
                    }
                    if !set.is_empty() {
                        let mut req = aws.iam().tag_role().role_name(&self.name);
                        for (k, v) in set {
                            req = req.tags(
                                Tag::builder()
                                    .key(k)
                                    .value(v)
                                    .build()
                                    .map_err(|e| EngineError::Invalid(e.to_string()))?,
                            );
                        }
                        req.send().await.map_err(|e| self.err("TagRole", e))?;
                    }
                }
                _ => {}
            }
        }
        Ok(current.clone())
    }
    async fn delete(&self, aws: &AwsClients, current: &Observed) -> Result<(), EngineError> {
        let _ = current;
        let names = match aws
            .iam()
            .list_role_policies()
            .role_name(&self.name)
            .send()
            .await
        {
            Ok(n) => n.policy_names,
            Err(e) if error_code(&e) == Some("NoSuchEntity") => return Ok(()),
            Err(e) => return Err(self.err("ListRolePolicies", e)),
        };
        for p in names {
            aws.iam()
                .delete_role_policy()
                .role_name(&self.name)
                .policy_name(&p)
                .send()
                .await
                .map_err(|e| self.err("DeleteRolePolicy", e))?;
        }
        let attached = aws
            .iam()
            .list_attached_role_policies()
            .role_name(&self.name)
            .send()
            .await
            .map_err(|e| self.err("ListAttachedRolePolicies", e))?;
        for p in attached.attached_policies() {
            if let Some(arn) = &p.policy_arn {
                aws.iam()
                    .detach_role_policy()
                    .role_name(&self.name)
                    .policy_arn(arn)
                    .send()
                    .await
                    .map_err(|e| self.err("DetachRolePolicy", e))?;
            }
        }
        match aws.iam().delete_role().role_name(&self.name).send().await {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("NoSuchEntity") => Ok(()),
            Err(e) => Err(self.err("DeleteRole", e)),
        }
    }
}
