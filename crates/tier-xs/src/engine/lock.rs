//! The workspace's deploy table (`agentbus-{env}-deploy`): a lease lock so that one writer at a
//! time changes a workspace, the record of every apply, and the workspace's deploy settings.
//!
//! The lock is a conditional write with an expiry, renewed by a heartbeat. A holder that
//! dies stops renewing, and its lease can be taken over once it has expired.
//!
//! The lock's item outlives its leases: a release removes the lease but keeps the item's
//! `generation`, which every acquisition increments. A deploy that reads the lock before it
//! plans and finds, once it holds the lock, that its acquisition was the very next one knows
//! that no other deploy held the lock in between, so its plan is still the cloud's state as
//! far as agentbus is concerned (see [`LockSeen::unchanged_by`]).

use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::delete_table::DeleteTableError;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::operation::get_item::GetItemError;
use aws_sdk_dynamodb::operation::query::QueryError;
use aws_sdk_dynamodb::operation::update_continuous_backups::UpdateContinuousBackupsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, ReturnValue, ScalarAttributeType, SseSpecification,
    TableStatus, Tag,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{EngineError, SETTLE_LIMIT, error_text, settle, wait_until};
use crate::aws::AwsClients;
use crate::workspace::{Tier, Workspace};

const PK: &str = "pk";
const SK: &str = "sk";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "workspace {workspace} is locked by {} since {} (last heartbeat {}s ago); another deploy is running. \
         Wait for it to finish; if its process is gone, the lock expires {}s after its last heartbeat",
        .info.holder, .info.acquired_at_text(), .info.heartbeat_age_secs(), .info.ttl_secs
    )]
    Held { workspace: String, info: LockInfo },
    #[error(
        "refusing to unlock {workspace}: its holder {} is alive (heartbeat {}s ago, lease valid for {}s more)",
        .info.holder, .info.heartbeat_age_secs(), .info.remaining_secs()
    )]
    HolderAlive { workspace: String, info: LockInfo },
    #[error(
        "the deploy lock of {0} was lost (it could not be renewed in time, or another process took it over after it expired)"
    )]
    Lost(String),
    #[error("deploy table: {0}")]
    Table(String),
    #[error("deploy table {0} does not exist")]
    NoTable(String),
}

impl From<EngineError> for LockError {
    fn from(e: EngineError) -> Self {
        LockError::Table(e.to_string())
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

pub fn iso(epoch_secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(epoch_secs as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| epoch_secs.to_string())
}

/// What a command saw of the lock before it planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockSeen {
    /// How many times the lock had been taken (0: never, or the table did not exist).
    pub generation: u64,
    /// A lease was on the lock, alive or expired: its holder may be changing the workspace.
    pub leased: bool,
    /// The lock counts its acquisitions: there was no table yet, or its lock has a
    /// generation. A table whose lock was never counted (deployed only by versions before
    /// the count) says nothing about who held it.
    pub counted: bool,
}

impl Default for LockSeen {
    /// A workspace without a deploy table: nobody has held its lock.
    fn default() -> Self {
        LockSeen {
            generation: 0,
            leased: false,
            counted: true,
        }
    }
}

impl LockSeen {
    /// Whether `lease` was the next acquisition after this was seen, with no lease on the
    /// lock then: nobody else held the lock in between, so no other deploy changed the
    /// workspace (every agentbus change is made under the lock).
    pub fn unchanged_by(&self, lease: &Lease) -> bool {
        self.counted && !self.leased && lease.generation == self.generation + 1
    }
}

/// The deploy table as a command finds it: the stored settings and the lock.
#[derive(Clone, Debug, Default)]
pub struct TableSnapshot {
    pub exists: bool,
    pub settings: StoredSettings,
    pub lock: LockSeen,
}

/// Who holds the lock and since when.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LockInfo {
    pub holder: String,
    pub lease_id: String,
    pub acquired_at: u64,
    pub heartbeat_at: u64,
    pub expires_at: u64,
    pub ttl_secs: u64,
}

impl LockInfo {
    pub fn acquired_at_text(&self) -> String {
        iso(self.acquired_at)
    }
    pub fn heartbeat_age_secs(&self) -> u64 {
        now_secs().saturating_sub(self.heartbeat_at)
    }
    pub fn remaining_secs(&self) -> u64 {
        self.expires_at.saturating_sub(now_secs())
    }
    pub fn is_alive(&self) -> bool {
        self.expires_at > now_secs()
    }
}

/// One resource's part in an apply record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct RecordedChange {
    pub id: String,
    pub name: String,
    pub action: String,
    pub outcome: String,
}

/// What an apply did, by whom, when.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ApplyRecord {
    pub at: String,
    pub at_ms: u64,
    /// `None` for a destroy.
    pub tier: Option<Tier>,
    pub tool_version: String,
    pub caller: String,
    pub succeeded: bool,
    pub cancelled: bool,
    pub changes: Vec<RecordedChange>,
}

/// Inputs of the last deploy, reused by the next one unless overridden.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StoredSettings {
    #[serde(default)]
    pub values: HashMap<String, serde_json::Value>,
}

impl StoredSettings {
    /// A string setting; an empty string counts as unset.
    pub fn text(&self, key: &str) -> Option<String> {
        self.values
            .get(key)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// A list of strings (none: empty).
    pub fn list(&self, key: &str) -> Vec<String> {
        self.values
            .get(key)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    pub fn number(&self, key: &str) -> Option<f64> {
        self.values.get(key).and_then(|v| v.as_f64())
    }

    /// A yes-or-no setting.
    pub fn flag(&self, key: &str) -> Option<bool> {
        self.values.get(key).and_then(|v| v.as_bool())
    }
}

/// The name of a workspace's deploy table.
pub fn deploy_table_name(ws: &Workspace) -> String {
    ws.name("deploy")
}

/// The workspace's deploy table.
#[derive(Clone, Debug)]
pub struct DeployTable {
    aws: AwsClients,
    pub table: String,
    workspace: String,
    tags: Vec<(String, String)>,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key(pk: &str, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])
}

fn get_s(item: &HashMap<String, AttributeValue>, k: &str) -> String {
    item.get(k)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

fn get_n(item: &HashMap<String, AttributeValue>, k: &str) -> u64 {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The lease on a lock item, if any (a released lock keeps its item, without a lease).
fn lease_of(item: &HashMap<String, AttributeValue>) -> Option<LockInfo> {
    item.contains_key("lease_id").then(|| LockInfo {
        holder: get_s(item, "holder"),
        lease_id: get_s(item, "lease_id"),
        acquired_at: get_n(item, "acquired_at"),
        heartbeat_at: get_n(item, "heartbeat_at"),
        expires_at: get_n(item, "expires_at"),
        ttl_secs: get_n(item, "ttl_secs"),
    })
}

fn settings_of(item: &HashMap<String, AttributeValue>) -> StoredSettings {
    serde_json::from_str(&get_s(item, "settings")).unwrap_or_default()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // getrandom only fails when the OS has no entropy source at all; fall back to the clock.
    if getrandom::fill(&mut buf).is_err() {
        let t = now_millis().to_le_bytes();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = t[i % t.len()] ^ (i as u8);
        }
    }
    hex::encode(buf)
}

impl DeployTable {
    pub fn new(aws: &AwsClients, ws: &Workspace) -> Self {
        DeployTable {
            aws: aws.clone(),
            table: deploy_table_name(ws),
            workspace: ws.id(),
            tags: ws.tags(Tier::ExtraSmall, "deploy"),
        }
    }

    pub async fn exists(&self) -> Result<bool, LockError> {
        match self
            .aws
            .dynamodb()
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(DescribeTableError::is_resource_not_found_exception) =>
            {
                Ok(false)
            }
            Err(e) => Err(LockError::Table(error_text(&e))),
        }
    }

    /// Creates the table on the first deploy of a workspace (one made by another deploy at
    /// the same moment will do) and waits until it is usable, with point-in-time recovery on.
    pub async fn create(&self) -> Result<(), LockError> {
        let key_attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key_el = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
        };
        let mut req = self
            .aws
            .dynamodb()
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .sse_specification(SseSpecification::builder().enabled(true).build());
        for a in [key_attr(PK), key_attr(SK)] {
            req = req.attribute_definitions(a.map_err(|e| LockError::Table(e.to_string()))?);
        }
        for k in [key_el(PK, KeyType::Hash), key_el(SK, KeyType::Range)] {
            req = req.key_schema(k.map_err(|e| LockError::Table(e.to_string()))?);
        }
        for (k, v) in &self.tags {
            req = req.tags(
                Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .map_err(|e| LockError::Table(e.to_string()))?,
            );
        }
        match req.send().await {
            Ok(_) => {}
            // Someone else created it at the same moment: fine.
            Err(e)
                if e.as_service_error()
                    .is_some_and(CreateTableError::is_resource_in_use_exception) => {}
            Err(e) => return Err(LockError::Table(error_text(&e))),
        }
        let ddb = self.aws.dynamodb();
        let table = self.table.clone();
        wait_until(
            &self.table,
            Duration::from_secs(120),
            Duration::from_millis(500),
            || {
                let ddb = ddb.clone();
                let table = table.clone();
                async move {
                    let out = ddb
                        .describe_table()
                        .table_name(&table)
                        .send()
                        .await
                        .map_err(|e| EngineError::aws(&table, "DescribeTable", e))?;
                    let status = out.table.and_then(|t| t.table_status);
                    Ok(if status == Some(TableStatus::Active) {
                        Ok(())
                    } else {
                        Err(format!("table status {status:?}"))
                    })
                }
            },
        )
        .await?;
        // Point-in-time recovery keeps the deploy history recoverable.
        enable_pitr(&self.aws.dynamodb(), &self.table)
            .await
            .map_err(|e| LockError::Table(error_text(&e)))?;
        Ok(())
    }

    /// One item of the table, read consistently: `Ok(None)` when the table does not exist
    /// yet, `Ok(Some(None))` when the item does not.
    async fn item(
        &self,
        pk: &str,
        sk: &str,
    ) -> Result<Option<Option<HashMap<String, AttributeValue>>>, LockError> {
        let res = self
            .aws
            .dynamodb()
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await;
        match res {
            Ok(out) => Ok(Some(out.item)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(GetItemError::is_resource_not_found_exception) =>
            {
                Ok(None)
            }
            Err(e) => Err(LockError::Table(error_text(&e))),
        }
    }

    /// The stored settings and the lock, read at once (one round trip).
    pub async fn snapshot(&self) -> Result<TableSnapshot, LockError> {
        let (settings, lock) =
            tokio::try_join!(self.item("settings", "current"), self.item("lock", "lock"))?;
        let exists = settings.is_some();
        let lock = lock.flatten();
        Ok(TableSnapshot {
            exists,
            settings: settings
                .flatten()
                .map(|i| settings_of(&i))
                .unwrap_or_default(),
            lock: LockSeen {
                generation: lock.as_ref().map_or(0, |i| get_n(i, "generation")),
                leased: lock.as_ref().and_then(lease_of).is_some(),
                counted: !exists || lock.as_ref().is_some_and(|i| i.contains_key("generation")),
            },
        })
    }

    pub async fn read_lock(&self) -> Result<Option<LockInfo>, LockError> {
        Ok(self
            .item("lock", "lock")
            .await?
            .flatten()
            .as_ref()
            .and_then(lease_of))
    }

    /// Takes the lock, or says who has it. The lease is renewed every third of `ttl`
    /// until [`Lease::release`]; `lost` on the lease fires when another process took it over,
    /// or when renewals kept failing until less than a third of `ttl` was left.
    /// [`LockError::NoTable`] when the table does not exist (see [`DeployTable::create`]).
    pub async fn acquire(&self, holder: &str, ttl: Duration) -> Result<Lease, LockError> {
        let now = now_secs();
        let ttl_secs = ttl.as_secs().max(3);
        let lease_id = random_hex(16);
        let res = self
            .aws
            .dynamodb()
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key("lock", "lock")))
            .update_expression(
                "SET holder = :holder, lease_id = :id, acquired_at = :now, heartbeat_at = :now, \
                 expires_at = :exp, ttl_secs = :ttl ADD generation :one",
            )
            .condition_expression("attribute_not_exists(lease_id) OR expires_at < :now")
            .expression_attribute_values(":holder", s(holder))
            .expression_attribute_values(":id", s(&lease_id))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":exp", n(now + ttl_secs))
            .expression_attribute_values(":ttl", n(ttl_secs))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        let generation = match res {
            Ok(out) => out
                .attributes
                .as_ref()
                .map_or(0, |a| get_n(a, "generation")),
            Err(e)
                if e.as_service_error()
                    .is_some_and(UpdateItemError::is_resource_not_found_exception) =>
            {
                return Err(LockError::NoTable(self.table.clone()));
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(UpdateItemError::is_conditional_check_failed_exception) =>
            {
                let item = self.item("lock", "lock").await?.flatten();
                match item.as_ref().and_then(lease_of) {
                    // The SDK retried a call whose answer was lost after DynamoDB had
                    // carried it out: the lease is this one.
                    Some(info) if info.lease_id == lease_id => {
                        item.as_ref().map_or(0, |i| get_n(i, "generation"))
                    }
                    Some(info) => {
                        return Err(LockError::Held {
                            workspace: self.workspace.clone(),
                            info,
                        });
                    }
                    None => {
                        return Err(LockError::Table(
                            "lock changed while acquiring it; try again".into(),
                        ));
                    }
                }
            }
            Err(e) => return Err(LockError::Table(error_text(&e))),
        };
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let hb = {
            let ddb = self.aws.dynamodb();
            let table = self.table.clone();
            let lease_id = lease_id.clone();
            let lost = lost.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let every = Duration::from_secs((ttl_secs / 3).max(1));
                let ttl = Duration::from_secs(ttl_secs);
                // When the lease was last known to run until `ttl` from then (local clock).
                let mut renewed = tokio::time::Instant::now();
                let mut failing = false;
                loop {
                    // After a failed renewal, try again soon: the lease is running out.
                    let wait = if failing {
                        every.min(Duration::from_secs(1))
                    } else {
                        every
                    };
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    let now = now_secs();
                    let res = ddb
                        .update_item()
                        .table_name(&table)
                        .set_key(Some(key("lock", "lock")))
                        .update_expression("SET heartbeat_at = :now, expires_at = :exp")
                        .condition_expression("lease_id = :id")
                        .expression_attribute_values(":now", n(now))
                        .expression_attribute_values(":exp", n(now + ttl_secs))
                        .expression_attribute_values(":id", s(&lease_id))
                        .send()
                        .await;
                    match res {
                        Ok(_) => {
                            renewed = tokio::time::Instant::now();
                            failing = false;
                        }
                        Err(e)
                            if e.as_service_error().is_some_and(
                                UpdateItemError::is_conditional_check_failed_exception,
                            ) =>
                        {
                            tracing::error!("deploy lock lost: another process took it over");
                            lost.cancel();
                            return;
                        }
                        // Not renewed, and less than a beat left: stop the apply while the
                        // lease still holds, before another deploy may take the lock over.
                        Err(e) if renewed.elapsed() + every >= ttl => {
                            tracing::error!(
                                "deploy lock could not be renewed for {}s ({}): stopping before it expires",
                                renewed.elapsed().as_secs(),
                                error_text(&e)
                            );
                            lost.cancel();
                            return;
                        }
                        // A transient error: try again soon; the lease still has time.
                        Err(e) => {
                            failing = true;
                            tracing::warn!("lock heartbeat failed: {}", error_text(&e));
                        }
                    }
                }
            })
        };
        Ok(Lease {
            table: self.clone(),
            generation,
            lease_id,
            lost,
            stop,
            heartbeat: Some(hb),
        })
    }

    /// Removes a lock whose holder stopped renewing it; refuses while the holder is alive.
    pub async fn unlock(&self) -> Result<Option<LockInfo>, LockError> {
        let Some(info) = self.read_lock().await? else {
            return Ok(None);
        };
        if info.is_alive() {
            return Err(LockError::HolderAlive {
                workspace: self.workspace.clone(),
                info,
            });
        }
        self.remove_stale(&info).await?;
        Ok(Some(info))
    }

    /// Removes the lease `info` describes, only if it is still that lease and still expired
    /// when the table decides: a holder that renewed it after `info` was read keeps it.
    pub async fn remove_stale(&self, info: &LockInfo) -> Result<(), LockError> {
        let res = self
            .aws
            .dynamodb()
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key("lock", "lock")))
            .condition_expression("lease_id = :id AND expires_at < :now")
            .expression_attribute_values(":id", s(&info.lease_id))
            .expression_attribute_values(":now", n(now_secs()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(DeleteItemError::is_conditional_check_failed_exception) =>
            {
                // Gone already (a retried call whose first answer was lost, or another
                // unlock): what was asked is done. Still there: it was renewed.
                match self.read_lock().await? {
                    Some(now) if now.lease_id == info.lease_id => Err(LockError::Table(
                        "the lock was renewed while unlocking; run status to see its holder".into(),
                    )),
                    _ => Ok(()),
                }
            }
            Err(e) => Err(LockError::Table(error_text(&e))),
        }
    }

    pub async fn record_apply(&self, rec: &ApplyRecord) -> Result<(), LockError> {
        let body = serde_json::to_string(rec).map_err(|e| LockError::Table(e.to_string()))?;
        let mut item = key("apply", &format!("{:016}", rec.at_ms));
        item.insert("record".into(), s(body));
        self.aws
            .dynamodb()
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| LockError::Table(error_text(&e)))?;
        Ok(())
    }

    /// The newest `limit` apply records, newest first.
    pub async fn history(&self, limit: i32) -> Result<Vec<ApplyRecord>, LockError> {
        let res = self
            .aws
            .dynamodb()
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s("apply"))
            .scan_index_forward(false)
            .limit(limit)
            .send()
            .await;
        let out = match res {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(QueryError::is_resource_not_found_exception) =>
            {
                return Ok(Vec::new());
            }
            Err(e) => return Err(LockError::Table(error_text(&e))),
        };
        Ok(out
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|i| serde_json::from_str(&get_s(i, "record")).ok())
            .collect())
    }

    pub async fn load_settings(&self) -> Result<StoredSettings, LockError> {
        Ok(self
            .item("settings", "current")
            .await?
            .flatten()
            .map(|i| settings_of(&i))
            .unwrap_or_default())
    }

    pub async fn save_settings(&self, settings: &StoredSettings) -> Result<(), LockError> {
        let body = serde_json::to_string(settings).map_err(|e| LockError::Table(e.to_string()))?;
        let mut item = key("settings", "current");
        item.insert("settings".into(), s(body));
        self.aws
            .dynamodb()
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| LockError::Table(error_text(&e)))?;
        Ok(())
    }

    /// Deletes the table and with it the workspace's deploy history.
    pub async fn delete(&self) -> Result<(), LockError> {
        match self
            .aws
            .dynamodb()
            .delete_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(DeleteTableError::is_resource_not_found_exception) =>
            {
                Ok(())
            }
            Err(e) => Err(LockError::Table(error_text(&e))),
        }
    }
}

/// A held lock. Dropping it without [`Lease::release`] stops the heartbeat; the lease then
/// expires on its own.
pub struct Lease {
    table: DeployTable,
    /// The lock's generation this acquisition made.
    pub generation: u64,
    lease_id: String,
    /// Fires when the heartbeat finds that the lease was taken over, or could not renew it
    /// before it ran out.
    pub lost: CancellationToken,
    stop: CancellationToken,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Lease {
    pub async fn release(mut self) -> Result<(), LockError> {
        self.stop.cancel();
        if let Some(h) = self.heartbeat.take() {
            let _ = h.await;
        }
        // The item stays, with its generation: the next acquisition counts on from it.
        let res = self
            .table
            .aws
            .dynamodb()
            .update_item()
            .table_name(&self.table.table)
            .set_key(Some(key("lock", "lock")))
            .update_expression(
                "REMOVE holder, lease_id, acquired_at, heartbeat_at, expires_at, ttl_secs",
            )
            .condition_expression("lease_id = :id")
            .expression_attribute_values(":id", s(&self.lease_id))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(UpdateItemError::is_conditional_check_failed_exception) =>
            {
                // Released by an earlier attempt whose answer was lost, if the lock has no
                // lease and nobody took it since (every acquisition counts a generation).
                let item = self.table.item("lock", "lock").await?.flatten();
                let released = item.as_ref().is_some_and(|i| {
                    lease_of(i).is_none() && get_n(i, "generation") == self.generation
                });
                if released {
                    Ok(())
                } else {
                    Err(LockError::Lost(self.table.workspace.clone()))
                }
            }
            Err(e) => Err(LockError::Table(error_text(&e))),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
/// Turns on point-in-time recovery of a table. DynamoDB refuses it for a while after the table
/// became ACTIVE (`ContinuousBackupsUnavailableException`), so the call waits that out.
pub async fn enable_pitr(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), SdkError<UpdateContinuousBackupsError, HttpResponse>> {
    let spec = PointInTimeRecoverySpecification::builder()
        .point_in_time_recovery_enabled(true)
        .build()
        .map_err(SdkError::construction_failure)?;
    settle(
        SETTLE_LIMIT,
        |e: &SdkError<UpdateContinuousBackupsError, HttpResponse>| {
            e.as_service_error().is_some_and(
                UpdateContinuousBackupsError::is_continuous_backups_unavailable_exception,
            )
        },
        || {
            ddb.update_continuous_backups()
                .table_name(table)
                .point_in_time_recovery_specification(spec.clone())
                .send()
        },
    )
    .await
    .map(|_| ())
}
