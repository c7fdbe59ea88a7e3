//! IAM roles for ECS tasks, each with one inline policy that names the workspace's own
//! resource ARNs; the policy documents a deployer needs.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::aws::AwsClients;
use crate::engine::own_tags;
use crate::engine::permissions::{Grant, Permissions};
use crate::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, TagApi, found, gone, made,
};
use crate::iam::{entity_already_exists, no_such_entity};
use crate::tag_api;
use crate::workspace::Workspace;

use super::normalize_json;

/// One IAM policy statement.
pub fn statement(actions: &[&str], resources: &[String]) -> Value {
    json!({ "Effect": "Allow", "Action": actions, "Resource": resources })
}

/// One IAM policy statement that applies only when `condition` holds (an IAM `Condition`
/// block, e.g. `{"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}`).
pub fn statement_when(actions: &[&str], resources: &[String], condition: Value) -> Value {
    json!({ "Effect": "Allow", "Action": actions, "Resource": resources, "Condition": condition })
}

pub fn policy(statements: Vec<Value>) -> Value {
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// IAM's limit on a managed policy document, in characters other than white space.
pub const MANAGED_POLICY_LIMIT: usize = 6_144;

/// The managed policy documents that allow `grants`: actions on the same resources under the
/// same condition share a statement, statements with the same actions share one, and the
/// statements are split into as few documents as keep each under [`MANAGED_POLICY_LIMIT`].
pub fn documents<'g>(grants: impl IntoIterator<Item = &'g Grant>) -> Vec<Value> {
    // Conditions are compared by their JSON text (`Value` has no order).
    type Condition = Option<String>;
    // By resources and condition: the actions.
    let mut by_target: BTreeMap<(Vec<String>, Condition), BTreeSet<String>> = BTreeMap::new();
    for g in grants {
        let resources: BTreeSet<String> = g.resources.iter().cloned().collect();
        let condition = g.condition.as_ref().map(Value::to_string);
        by_target
            .entry((resources.into_iter().collect(), condition))
            .or_default()
            .extend(g.actions.iter().cloned());
    }
    // By actions and condition: the resources.
    let mut by_actions: BTreeMap<(Vec<String>, Condition), BTreeSet<String>> = BTreeMap::new();
    for ((resources, condition), actions) in by_target {
        by_actions
            .entry((actions.into_iter().collect(), condition))
            .or_default()
            .extend(resources);
    }
    let statements = by_actions
        .into_iter()
        .map(|((actions, condition), resources)| {
            let resources: Vec<String> = if resources.contains("*") {
                vec!["*".into()]
            } else {
                resources.into_iter().collect()
            };
            let mut s = statement(
                &actions.iter().map(String::as_str).collect::<Vec<_>>(),
                &resources,
            );
            if let Some(c) = condition.and_then(|c| serde_json::from_str::<Value>(&c).ok()) {
                s["Condition"] = c;
            }
            s
        });
    let size = |v: &Value| v.to_string().chars().filter(|c| !c.is_whitespace()).count();
    let mut docs: Vec<Vec<Value>> = vec![Vec::new()];
    for s in statements {
        let current = docs.last_mut().expect("one document at least");
        current.push(s);
        if current.len() > 1 && size(&policy(current.clone())) > MANAGED_POLICY_LIMIT {
            let s = current.pop().expect("just pushed");
            docs.push(vec![s]);
        }
    }
    docs.into_iter().map(policy).collect()
}

tag_api! {
    /// IAM's role tags, by role name.
    pub struct IamRoleTags;
    read(aws, meta, _o): "ListRoleTags" => future aws.iam().list_role_tags(&meta.name), |tags| tags;
    tag(aws, meta, _o, tags): "TagRole" => future aws.iam().tag_role(&meta.name, tags);
    untag(aws, meta, _o, keys): "UntagRole" => future aws.iam().untag_role(&meta.name, keys);
}

pub struct Role {
    pub meta: Meta,
    /// Service principal allowed to assume the role (`ecs-tasks.amazonaws.com`).
    pub service: &'static str,
    /// Source account condition, against the confused-deputy problem.
    pub account: String,
    pub policy_name: String,
    pub policy: Value,
    pub arn: String,
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

    async fn put_policy(&self, aws: &AwsClients) -> Result<(), EngineError> {
        aws.iam()
            .put_role_policy(&self.meta.name, &self.policy_name, &self.policy.to_string())
            .await
            .map_err(|e| self.meta.fail("PutRolePolicy", e))
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
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "iam role"
    }
    fn permissions(&self, _ws: &Workspace) -> Permissions {
        let role = [self.arn.clone()];
        Permissions::new()
            .read(
                &[
                    "iam:GetRole",
                    "iam:GetRolePolicy",
                    "iam:ListRolePolicies",
                    "iam:ListAttachedRolePolicies",
                    "iam:ListRoleTags",
                ],
                &role,
            )
            .write(
                &[
                    "iam:CreateRole",
                    "iam:UpdateAssumeRolePolicy",
                    "iam:PutRolePolicy",
                    "iam:DeleteRolePolicy",
                    "iam:DetachRolePolicy",
                    "iam:DeleteRole",
                    "iam:TagRole",
                    "iam:UntagRole",
                ],
                &role,
            )
            // Task definitions and state machines name the role: the deployer passes it.
            .write(&["iam:PassRole"], &role)
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&IamRoleTags)
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new()
            .set("trust_policy", self.trust())
            .set("inline_policies", json!({ &self.policy_name: self.policy }))
            .set("managed_policies", json!([]))
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let m = &self.meta;
        let Some(role) = found(
            aws.iam().get_role(&m.name).await,
            no_such_entity,
            m,
            "GetRole",
        )?
        else {
            return Ok(None);
        };
        // GetRole returns the role's tags (IAM API reference, Role): no ListRoleTags needed.
        Ok(Some(
            Observed::default()
                .field(
                    "trust_policy",
                    decode_policy(&role.assume_role_policy_document),
                )
                .field("tags", own_tags(role.tags))
                .output("arn", role.arn)
                .output("name", m.name.clone()),
        ))
    }

    /// The inline policies (listed, then all read at once) and, meanwhile, the attached ones.
    async fn observe_more(
        &self,
        aws: &AwsClients,
        _found: &Observed,
    ) -> Result<Observed, EngineError> {
        let m = &self.meta;
        let iam = aws.iam();
        // Our own policy is read while the list is; others (left by hand) after it.
        let read = |name: String| {
            let iam = iam.clone();
            async move {
                let doc = found(
                    iam.get_role_policy(&m.name, &name).await,
                    no_such_entity,
                    m,
                    "GetRolePolicy",
                )?;
                Ok::<_, EngineError>((name, doc.map(|d| decode_policy(&d))))
            }
        };
        let inline = async {
            let (names, own) = tokio::try_join!(
                async {
                    iam.list_role_policies(&m.name)
                        .await
                        .map_err(|e| m.fail("ListRolePolicies", e))
                },
                read(self.policy_name.clone())
            )?;
            let others = futures::future::try_join_all(
                names
                    .iter()
                    .filter(|p| **p != self.policy_name)
                    .map(|p| read(p.clone())),
            )
            .await?;
            let listed = |name: &str| names.iter().any(|p| p == name);
            Ok::<_, EngineError>(
                std::iter::once(own)
                    .chain(others)
                    // Gone between the list and the read, or never there.
                    .filter_map(|(name, doc)| Some((name, doc?)))
                    .filter(|(name, _)| listed(name))
                    .collect::<serde_json::Map<_, _>>(),
            )
        };
        let attached = async {
            iam.list_attached_role_policies(&m.name)
                .await
                .map_err(|e| m.fail("ListAttachedRolePolicies", e))
        };
        let (inline, mut managed) = tokio::try_join!(inline, attached)?;
        managed.sort();
        Ok(Observed::default()
            .field("inline_policies", Value::Object(inline))
            .field("managed_policies", json!(managed)))
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        let created = aws
            .iam()
            .create_role(
                &m.name,
                &self.trust().to_string(),
                &format!("agentbus {}", m.id),
                &m.tags,
            )
            .await;
        made(created, entity_already_exists, m, "CreateRole")?;
        self.put_policy(aws).await
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let (current, changed) = (c.current, c.fields);
        for f in changed {
            match f.as_str() {
                "trust_policy" => {
                    aws.iam()
                        .update_assume_role_policy(&self.meta.name, &self.trust().to_string())
                        .await
                        .map_err(|e| self.meta.fail("UpdateAssumeRolePolicy", e))?;
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
                            .delete_role_policy(&self.meta.name, &p)
                            .await
                            .map_err(|e| self.meta.fail("DeleteRolePolicy", e))?;
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
                            .detach_role_policy(&self.meta.name, arn)
                            .await
                            .map_err(|e| self.meta.fail("DetachRolePolicy", e))?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
    async fn delete(&self, aws: &AwsClients, current: &Observed) -> Result<(), EngineError> {
        let _ = current;
        let iam = aws.iam();
        let name = &self.meta.name;
        let Some(names) = found(
            iam.list_role_policies(name).await,
            no_such_entity,
            &self.meta,
            "ListRolePolicies",
        )?
        else {
            return Ok(());
        };
        // Each step is done when its target is gone already: a retried call whose first
        // answer was lost, or another destroy.
        for p in names {
            gone(
                iam.delete_role_policy(name, &p).await,
                no_such_entity,
                &self.meta,
                "DeleteRolePolicy",
            )?;
        }
        let attached = iam
            .list_attached_role_policies(name)
            .await
            .map_err(|e| self.meta.fail("ListAttachedRolePolicies", e))?;
        for arn in attached {
            gone(
                iam.detach_role_policy(name, &arn).await,
                no_such_entity,
                &self.meta,
                "DetachRolePolicy",
            )?;
        }
        gone(
            iam.delete_role(name).await,
            no_such_entity,
            &self.meta,
            "DeleteRole",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::Tier;

    fn grant(actions: &[&str], resource: &str, condition: Option<Value>) -> Grant {
        Grant {
            actions: actions.iter().map(|a| a.to_string()).collect(),
            resources: vec![resource.to_string()],
            condition,
        }
    }

    fn size(doc: &Value) -> usize {
        doc.to_string()
            .chars()
            .filter(|c| !c.is_whitespace())
            .count()
    }

    #[test]
    fn a_condition_is_part_of_its_statement_and_keeps_it_apart() {
        let pass = json!({"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}});
        assert_eq!(
            statement_when(&["iam:PassRole"], &["arn:r".into()], pass.clone()),
            json!({"Effect": "Allow", "Action": ["iam:PassRole"], "Resource": ["arn:r"], "Condition": pass})
        );
        let docs = documents(&[
            grant(&["iam:PassRole"], "arn:r", Some(pass.clone())),
            grant(&["iam:GetRole"], "arn:r", None),
        ]);
        assert_eq!(
            docs,
            [policy(vec![
                statement(&["iam:GetRole"], &["arn:r".into()]),
                statement_when(&["iam:PassRole"], &["arn:r".into()], pass),
            ])]
        );
    }

    /// Two statements whose document is `target` characters long.
    fn two_statements(target: usize) -> Vec<Grant> {
        let with = |pad: usize| {
            vec![
                grant(&["s3:GetObject"], "arn:aws:s3:::a", None),
                grant(
                    &["s3:PutObject"],
                    &format!("arn:aws:s3:::{}", "b".repeat(pad)),
                    None,
                ),
            ]
        };
        let base = size(&policy(
            with(0)
                .iter()
                .map(|g| statement(&[g.actions[0].as_str()], &g.resources))
                .collect(),
        ));
        with(target - base)
    }

    #[test]
    fn documents_are_split_only_past_iam_s_limit_and_never_leave_one_empty() {
        let exactly = documents(&two_statements(MANAGED_POLICY_LIMIT));
        assert_eq!(exactly.len(), 1);
        assert_eq!(size(&exactly[0]), MANAGED_POLICY_LIMIT);
        let over = documents(&two_statements(MANAGED_POLICY_LIMIT + 1));
        assert_eq!(over.len(), 2);
        // One statement larger than the limit cannot be split: one document, not an empty
        // one before it.
        let huge = documents(&[grant(
            &["s3:GetObject"],
            &format!("arn:aws:s3:::{}", "x".repeat(MANAGED_POLICY_LIMIT)),
            None,
        )]);
        assert_eq!(huge.len(), 1);
        assert_eq!(huge[0]["Statement"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn a_role_trusts_its_service_for_this_account_only_and_reads_iam_s_encoded_documents() {
        let role = Role {
            meta: Meta::new("role", Tier::ExtraSmall, "agentbus-dev-task", Vec::new()),
            service: "ecs-tasks.amazonaws.com",
            account: "123456789012".into(),
            policy_name: "task".into(),
            policy: policy(Vec::new()),
            arn: "arn:aws:iam::123456789012:role/agentbus-dev-task".into(),
        };
        assert_eq!(
            role.trust(),
            json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"aws:SourceAccount": "123456789012"}}
                }]
            })
        );
        let doc = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::a/*"}]}"#;
        let want: Value = serde_json::from_str(doc).unwrap();
        assert_eq!(
            decode_policy(&urlencoding::encode(doc)),
            normalize_json(&want.to_string())
        );
        assert_eq!(decode_policy(doc), decode_policy(&urlencoding::encode(doc)));
        assert_eq!(
            decode_policy(doc)["Statement"][0]["Action"],
            json!("s3:GetObject")
        );
    }
}
