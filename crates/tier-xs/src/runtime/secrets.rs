//! Tenant secrets: put (write-only to callers), list names and metadata, delete. Values are
//! read only by the server itself ([`SecretStore::read`]); no tool or API returns them.

use async_trait::async_trait;
use aws_sdk_secretsmanager::operation::create_secret::CreateSecretError;
use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretError;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, Tag};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde::Serialize;
use sqlx::{Row, SqlitePool};

use super::{RuntimeError, Tenant, check_name, now_secs};

/// Secrets Manager stores at most 65,536 bytes per value.
pub const MAX_SECRET_BYTES: usize = 65_536;
pub const MAX_NAME: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretMeta {
    pub name: String,
    pub created_at: u64,
    pub updated_at: u64,
}

pub fn check_secret_name(name: &str) -> Result<(), RuntimeError> {
    check_name("secret name", name, MAX_NAME, |c| {
        c.is_ascii_alphanumeric() || "-_.".contains(c)
    })
}

pub fn check_secret_value(value: &str) -> Result<(), RuntimeError> {
    if value.is_empty() {
        return Err(RuntimeError::invalid("secret value", "must not be empty"));
    }
    if value.len() > MAX_SECRET_BYTES {
        return Err(RuntimeError::TooLarge {
            size: value.len(),
            max: MAX_SECRET_BYTES,
        });
    }
    Ok(())
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    async fn put(
        &self,
        tenant: &Tenant,
        name: &str,
        value: &str,
    ) -> Result<SecretMeta, RuntimeError>;
    async fn list(&self, tenant: &Tenant) -> Result<Vec<SecretMeta>, RuntimeError>;
    /// True when a secret was deleted.
    async fn delete(&self, tenant: &Tenant, name: &str) -> Result<bool, RuntimeError>;
    /// For the server's own use; never exposed through a tool or the API.
    async fn read(&self, tenant: &Tenant, name: &str) -> Result<Option<String>, RuntimeError>;
}

// ---------------------------------------------------------------------------------------------

/// Secrets Manager: `{root}{tenant}/{name}`, e.g. `agentbus/dev/tenants/acme/api-key`.
pub struct AwsSecrets {
    client: aws_sdk_secretsmanager::Client,
    root: String,
    workspace: String,
    /// `prod`: deleted secrets stay recoverable for this many days.
    recovery_days: Option<i64>,
}

fn secs(d: Option<&aws_sdk_secretsmanager::primitives::DateTime>) -> u64 {
    d.map(|d| d.secs().max(0) as u64).unwrap_or(0)
}

impl AwsSecrets {
    pub fn new(client: aws_sdk_secretsmanager::Client, ws: &crate::workspace::Workspace) -> Self {
        AwsSecrets {
            client,
            root: ws.secret_name("tenants/"),
            workspace: ws.id(),
            recovery_days: ws.env.is_prod().then_some(7),
        }
    }

    fn prefix(&self, tenant: &Tenant) -> String {
        format!("{}{tenant}/", self.root)
    }

    fn full(&self, tenant: &Tenant, name: &str) -> String {
        format!("{}{name}", self.prefix(tenant))
    }
}

/// How long a put waits for the deletion of a secret of the same name to finish.
const RECREATE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

#[async_trait]
impl SecretStore for AwsSecrets {
    async fn put(
        &self,
        tenant: &Tenant,
        name: &str,
        value: &str,
    ) -> Result<SecretMeta, RuntimeError> {
        check_secret_name(name)?;
        check_secret_value(value)?;
        let id = self.full(tenant, name);
        match self.client.describe_secret().secret_id(&id).send().await {
            Ok(d) => {
                if d.deleted_date.is_some() {
                    self.client
                        .restore_secret()
                        .secret_id(&id)
                        .send()
                        .await
                        .map_err(|e| RuntimeError::backend("RestoreSecret", e))?;
                }
                self.client
                    .put_secret_value()
                    .secret_id(&id)
                    .secret_string(value)
                    .send()
                    .await
                    .map_err(|e| RuntimeError::backend("PutSecretValue", e))?;
                Ok(SecretMeta {
                    name: name.into(),
                    created_at: secs(d.created_date.as_ref()),
                    updated_at: now_secs(),
                })
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(DescribeSecretError::is_resource_not_found_exception) =>
            {
                let create = self
                    .client
                    .create_secret()
                    .name(&id)
                    .secret_string(value)
                    .description(format!("agentbus secret {name} of tenant {tenant}"))
                    .tags(
                        Tag::builder()
                            .key(crate::workspace::TAG_WORKSPACE)
                            .value(&self.workspace)
                            .build(),
                    )
                    .tags(
                        Tag::builder()
                            .key("agentbus:tenant")
                            .value(tenant.as_str())
                            .build(),
                    );
                // A secret deleted without recovery moments ago is still being deleted: its
                // name is refused ("scheduled for deletion") until Secrets Manager is done.
                crate::engine::settle(
                    RECREATE_LIMIT,
                    |e: &SdkError<CreateSecretError, _>| {
                        e.as_service_error().is_some_and(|e| {
                            e.is_invalid_request_exception()
                                && e.message()
                                    .is_some_and(|m| m.contains("scheduled for deletion"))
                        })
                    },
                    || create.clone().send(),
                )
                .await
                .map_err(|e| RuntimeError::backend("CreateSecret", e))?;
                let now = now_secs();
                Ok(SecretMeta {
                    name: name.into(),
                    created_at: now,
                    updated_at: now,
                })
            }
            Err(e) => Err(RuntimeError::backend("DescribeSecret", e)),
        }
    }

    async fn list(&self, tenant: &Tenant) -> Result<Vec<SecretMeta>, RuntimeError> {
        let prefix = self.prefix(tenant);
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_secrets()
                .filters(
                    Filter::builder()
                        .key(FilterNameStringType::Name)
                        .values(&prefix)
                        .build(),
                )
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| RuntimeError::backend("ListSecrets", e))?;
            for s in page.secret_list() {
                // The name filter is a prefix match on AWS; check exactly anyway.
                let Some(name) = s.name.as_deref().and_then(|n| n.strip_prefix(&prefix)) else {
                    continue;
                };
                if s.deleted_date.is_some() || name.contains('/') {
                    continue;
                }
                out.push(SecretMeta {
                    name: name.to_string(),
                    created_at: secs(s.created_date.as_ref()),
                    updated_at: secs(s.last_changed_date.as_ref().or(s.created_date.as_ref())),
                });
            }
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn delete(&self, tenant: &Tenant, name: &str) -> Result<bool, RuntimeError> {
        check_secret_name(name)?;
        let id = self.full(tenant, name);
        match self.client.describe_secret().secret_id(&id).send().await {
            Ok(d) if d.deleted_date.is_some() => return Ok(false),
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(DescribeSecretError::is_resource_not_found_exception) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(RuntimeError::backend("DescribeSecret", e)),
        }
        let mut req = self.client.delete_secret().secret_id(&id);
        req = match self.recovery_days {
            Some(d) => req.recovery_window_in_days(d),
            None => req.force_delete_without_recovery(true),
        };
        req.send()
            .await
            .map_err(|e| RuntimeError::backend("DeleteSecret", e))?;
        Ok(true)
    }

    async fn read(&self, tenant: &Tenant, name: &str) -> Result<Option<String>, RuntimeError> {
        check_secret_name(name)?;
        match self
            .client
            .get_secret_value()
            .secret_id(self.full(tenant, name))
            .send()
            .await
        {
            Ok(v) => Ok(v.secret_string),
            // Missing, or scheduled for deletion (InvalidRequest): not there for the caller.
            Err(e)
                if e.as_service_error().is_some_and(|e| {
                    e.is_resource_not_found_exception() || e.is_invalid_request_exception()
                }) =>
            {
                Ok(None)
            }
            Err(e) => Err(RuntimeError::backend("GetSecretValue", e)),
        }
    }
}

// ---------------------------------------------------------------------------------------------

pub struct SqliteSecrets {
    pool: SqlitePool,
}

impl SqliteSecrets {
    pub fn new(pool: SqlitePool) -> Self {
        SqliteSecrets { pool }
    }
}

#[async_trait]
impl SecretStore for SqliteSecrets {
    async fn put(
        &self,
        tenant: &Tenant,
        name: &str,
        value: &str,
    ) -> Result<SecretMeta, RuntimeError> {
        check_secret_name(name)?;
        check_secret_value(value)?;
        let now = now_secs() as i64;
        let row = sqlx::query(
            "INSERT INTO secrets (tenant, name, value, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
             RETURNING created_at, updated_at",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(value)
        .bind(now)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| RuntimeError::backend("upsert secret", e))?;
        Ok(SecretMeta {
            name: name.into(),
            created_at: row.get::<i64, _>("created_at") as u64,
            updated_at: row.get::<i64, _>("updated_at") as u64,
        })
    }

    async fn list(&self, tenant: &Tenant) -> Result<Vec<SecretMeta>, RuntimeError> {
        let rows = sqlx::query(
            "SELECT name, created_at, updated_at FROM secrets WHERE tenant = ? ORDER BY name",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| RuntimeError::backend("list secrets", e))?;
        Ok(rows
            .iter()
            .map(|r| SecretMeta {
                name: r.get("name"),
                created_at: r.get::<i64, _>("created_at") as u64,
                updated_at: r.get::<i64, _>("updated_at") as u64,
            })
            .collect())
    }

    async fn delete(&self, tenant: &Tenant, name: &str) -> Result<bool, RuntimeError> {
        check_secret_name(name)?;
        let res = sqlx::query("DELETE FROM secrets WHERE tenant = ? AND name = ?")
            .bind(tenant.as_str())
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(|e| RuntimeError::backend("delete secret", e))?;
        Ok(res.rows_affected() > 0)
    }

    async fn read(&self, tenant: &Tenant, name: &str) -> Result<Option<String>, RuntimeError> {
        check_secret_name(name)?;
        let row = sqlx::query("SELECT value FROM secrets WHERE tenant = ? AND name = ?")
            .bind(tenant.as_str())
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| RuntimeError::backend("read secret", e))?;
        Ok(row.map(|r| r.get("value")))
    }
}
