//! The workspace secret (`agentbus/{env}/server`): the server's credentials, generated at
//! deploy. Its value is never printed, never part of a plan, and never diffed: the plan
//! manages the secret's metadata, and whether it holds a workspace certificate (for a server
//! that speaks TLS itself) — the certificate is generated here and never shown; its
//! fingerprint is public (`agentbus status`).

use async_trait::async_trait;
use aws_sdk_secretsmanager::operation::create_secret::CreateSecretError;
use aws_sdk_secretsmanager::operation::delete_secret::DeleteSecretError;
use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretError;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, Tag};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde_json::json;

use crate::aws::AwsClients;
use crate::cost::base::base_cost;
use crate::cost::{CostContext, CostError, CostLine};
use crate::engine::pair;
use crate::engine::permissions::{Permissions, any};
use crate::engine::{
    self, Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, SETTLE_LIMIT, TagApi,
    found, gone, made, own_tags, settle,
};
use crate::server::tls::WorkspaceCertificate;
use crate::tag_api;
use crate::workspace::Workspace;

pub struct WorkspaceSecret {
    pub meta: Meta,
    /// Name prefix of the tenants' secrets (`agentbus/{env}/tenants/`): they go with it.
    pub tenant_prefix: String,
    pub description: String,
    /// `prod`: deleting schedules deletion with a 30-day recovery window.
    pub recovery_window_days: Option<i64>,
    /// The workspace id a certificate is generated for, when the server speaks TLS itself
    /// (`server::tls`). A certificate, once there, stays: a tier above may put a front before
    /// the server, and a move back down finds the same fingerprint.
    pub certificate: Option<String>,
}

/// The `certificate` field when the secret holds one.
const HAS_CERTIFICATE: &str = "workspace certificate (self-signed, pinned by fingerprint)";

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// CreateSecret while a secret of that name is still being deleted.
pub(crate) fn deletion_in_progress<R>(e: &SdkError<CreateSecretError, R>) -> bool {
    e.as_service_error().is_some_and(|e| {
        e.is_invalid_request_exception()
            && e.message()
                .is_some_and(|m| m.contains("scheduled for deletion"))
    })
}

/// Fresh server credentials: a random session key, an empty token list (tokens are added, as
/// hashes, by `agentbus token create`) and, for a server that speaks TLS itself, a workspace
/// certificate for `certificate` (the workspace id).
pub fn initial_secret_value(certificate: Option<&str>) -> Result<String, EngineError> {
    let mut key = [0u8; 32];
    // No OS randomness: refuse to make a guessable key rather than a weak one.
    getrandom::fill(&mut key).map_err(|_| {
        EngineError::Invalid(
            "no operating-system randomness available to generate the server secret".into(),
        )
    })?;
    let mut doc = json!({ "version": 1, "session_key": hex::encode(key), "tokens": [] });
    if let Some(id) = certificate {
        doc["tls"] = certificate_value(id)?;
    }
    Ok(doc.to_string())
}

fn certificate_value(id: &str) -> Result<serde_json::Value, EngineError> {
    let cert = WorkspaceCertificate::generate(id, now_unix())
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
    serde_json::to_value(cert).map_err(|e| EngineError::Invalid(e.to_string()))
}

impl WorkspaceSecret {
    /// The secret's JSON document (the tokens' hashes, the session key, the certificate).
    async fn document(&self, aws: &AwsClients) -> Result<serde_json::Value, EngineError> {
        let out = aws
            .secrets()
            .get_secret_value()
            .secret_id(&self.meta.name)
            .send()
            .await
            .map_err(|e| self.meta.fail("GetSecretValue", e))?;
        // A value this program did not write is not overwritten.
        serde_json::from_str(out.secret_string().unwrap_or_default()).map_err(|_| {
            EngineError::Invalid(format!(
                "the secret {} does not hold the JSON document agentbus writes; it is left as it is",
                self.meta.name
            ))
        })
    }

    /// The names of the tenants' secrets (ListSecrets' name filter matches a prefix).
    async fn tenant_secrets(&self, aws: &AwsClients) -> Result<Vec<String>, EngineError> {
        let filter = Filter::builder()
            .key(FilterNameStringType::Name)
            .values(&self.tenant_prefix)
            .build();
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let out = aws
                .secrets()
                .list_secrets()
                .filters(filter.clone())
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| self.meta.fail("ListSecrets", e))?;
            names.extend(
                out.secret_list()
                    .iter()
                    .filter_map(|s| s.name())
                    .filter(|n| n.starts_with(&self.tenant_prefix))
                    .map(str::to_string),
            );
            token = out.next_token;
            if token.is_none() {
                return Ok(names);
            }
        }
    }

    /// Deletes one secret: at once, or with prod's recovery window.
    async fn delete_one(&self, aws: &AwsClients, name: &str) -> Result<(), EngineError> {
        let mut req = aws.secrets().delete_secret().secret_id(name);
        req = match self.recovery_window_days {
            Some(days) => req.recovery_window_in_days(days),
            None => req.force_delete_without_recovery(true),
        };
        gone(
            req.send().await,
            DeleteSecretError::is_resource_not_found_exception,
            &self.meta,
            "DeleteSecret",
        )
    }
}

/// A Secrets Manager tag.
pub(crate) fn secret_tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

/// A secret's description, tags, ARN and name, as DescribeSecret reports them; `None` when it
/// does not exist or is scheduled for deletion (creating it again restores it).
pub(crate) async fn observe_secret(
    aws: &AwsClients,
    m: &Meta,
) -> Result<Option<Observed>, EngineError> {
    let Some(out) = found(
        aws.secrets()
            .describe_secret()
            .secret_id(&m.name)
            .send()
            .await,
        DescribeSecretError::is_resource_not_found_exception,
        m,
        "DescribeSecret",
    )?
    else {
        return Ok(None);
    };
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
            .output("name", m.name.clone()),
    ))
}

tag_api! {
    /// Secrets Manager's tags, by secret name.
    pub struct SecretTags;
    read(aws, meta, _o): "DescribeSecret" => aws.secrets().describe_secret().secret_id(&meta.name),
        |out| out.tags().iter().map(|t| pair(t.key(), t.value())).collect();
    tag(aws, meta, _o, tags): "TagResource" => aws.secrets().tag_resource().secret_id(&meta.name)
        .set_tags(Some(tags.iter().map(|(k, v)| secret_tag(k, v)).collect()));
    untag(aws, meta, _o, keys): "UntagResource" => aws.secrets().untag_resource().secret_id(&meta.name)
        .set_tag_keys(Some(keys.to_vec()));
}

#[async_trait]
impl Resource for WorkspaceSecret {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "secret"
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        // Secret ARNs end in six random characters.
        let secret = ws.arn(
            "secretsmanager",
            &format!("secret:{}-??????", self.meta.name),
        );
        let tenants = ws.arn("secretsmanager", &format!("secret:{}*", self.tenant_prefix));
        let mut p = Permissions::new().read(&["secretsmanager:DescribeSecret"], &[&secret]);
        if self.certificate.is_some() {
            // Whether it holds the certificate; adding one to a secret made without.
            p = p
                .read(&["secretsmanager:GetSecretValue"], &[&secret])
                .write(
                    &[
                        "secretsmanager:GetSecretValue",
                        "secretsmanager:PutSecretValue",
                    ],
                    &[&secret],
                );
        }
        p.write(
            &[
                "secretsmanager:CreateSecret",
                "secretsmanager:UpdateSecret",
                "secretsmanager:RestoreSecret",
                "secretsmanager:DeleteSecret",
                "secretsmanager:TagResource",
                "secretsmanager:UntagResource",
            ],
            &[secret],
        )
        // `--destroy-data` deletes the tenants' secrets too.
        .write(&["secretsmanager:ListSecrets"], &any())
        .write(&["secretsmanager:DeleteSecret"], &[tenants])
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&SecretTags)
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        let d = Desired::new().set("description", self.description.clone());
        match self.certificate {
            Some(_) => d.set("certificate", HAS_CERTIFICATE),
            None => d,
        }
    }
    async fn observe_more(
        &self,
        aws: &AwsClients,
        _found: &Observed,
    ) -> Result<Observed, EngineError> {
        if self.certificate.is_none() {
            return Ok(Observed::default());
        }
        let doc = self.document(aws).await?;
        let held = WorkspaceCertificate::from_secret_document(&doc).is_some();
        Ok(Observed::default().field("certificate", if held { HAS_CERTIFICATE } else { "none" }))
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        observe_secret(aws, &self.meta).await
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        // Restore a secret that an earlier destroy scheduled for deletion (prod keeps
        // them recoverable for 30 days) instead of failing on the name.
        if let Ok(d) = aws
            .secrets()
            .describe_secret()
            .secret_id(&m.name)
            .send()
            .await
            && d.deleted_date.is_some()
        {
            match aws
                .secrets()
                .restore_secret()
                .secret_id(&m.name)
                .send()
                .await
            {
                Ok(_) => {
                    let current = engine::observe(self, aws).await?.unwrap_or_default();
                    let mut fields = vec!["description".to_string(), "tags".to_string()];
                    if self.certificate.is_some() {
                        fields.push("certificate".into());
                    }
                    engine::update(self, aws, outputs, &current, &fields).await?;
                    return Ok(());
                }
                // Deleted without recovery, and not gone yet: created below once it is.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_invalid_request_exception()) => {}
                Err(e) => return Err(m.fail("RestoreSecret", e)),
            }
        }
        let value = initial_secret_value(self.certificate.as_deref())?;
        let mut req = aws
            .secrets()
            .create_secret()
            .name(&m.name)
            .description(&self.description)
            .secret_string(value);
        for (k, v) in &m.tags {
            req = req.tags(secret_tag(k, v));
        }
        // A secret deleted without recovery (destroy --destroy-data) is removed
        // asynchronously; until it is, its name is refused as "scheduled for deletion".
        made(
            settle(SETTLE_LIMIT, deletion_in_progress, || req.clone().send()).await,
            CreateSecretError::is_resource_exists_exception,
            m,
            "CreateSecret",
        )
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let changed = c.fields;
        if changed.iter().any(|c| c == "description") {
            aws.secrets()
                .update_secret()
                .secret_id(&self.meta.name)
                .description(&self.description)
                .send()
                .await
                .map_err(|e| self.meta.fail("UpdateSecret", e))?;
        }
        if let Some(id) = &self.certificate
            && changed.iter().any(|c| c == "certificate")
        {
            let mut doc = self.document(aws).await?;
            if WorkspaceCertificate::from_secret_document(&doc).is_none() {
                doc["tls"] = certificate_value(id)?;
                aws.secrets()
                    .put_secret_value()
                    .secret_id(&self.meta.name)
                    .secret_string(doc.to_string())
                    .send()
                    .await
                    .map_err(|e| self.meta.fail("PutSecretValue", e))?;
            }
        }
        Ok(())
    }
    /// Tokens and tenants' secrets are data: kept unless `--destroy-data`.
    fn data_bearing(&self) -> bool {
        true
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        // The tenants' secrets first, then the server's own.
        for name in self.tenant_secrets(aws).await? {
            self.delete_one(aws, &name).await?;
        }
        self.delete_one(aws, &self.meta.name).await
    }
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let (p, u) = base_cost(ctx)?;
        Ok(vec![
            CostLine::new(self.meta.id, "secret", 1.0, "secret-month", p.secret_month),
            CostLine::new(
                self.meta.id,
                "API calls",
                u.secret_api_calls / 10_000.0,
                "10k calls",
                p.secret_api_10k,
            ),
        ])
    }
    fn notes(&self) -> Vec<String> {
        let mut n = vec![
            "value generated at deploy; never shown; holds the tokens, and with the tenants' secrets is kept unless --destroy-data".to_string(),
        ];
        if self.certificate.is_some() {
            n.push("holds the workspace certificate the server speaks TLS with; `agentbus status` prints its fingerprint".into());
        }
        if let Some(d) = self.recovery_window_days {
            n.push(format!("on delete: recoverable for {d} days"));
        }
        n
    }
}
