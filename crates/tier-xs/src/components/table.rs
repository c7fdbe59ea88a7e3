//! A DynamoDB table as a resource: on-demand, encrypted, point-in-time recovery, optional TTL
//! and secondary indexes. Every table holds data, so deleting one needs the explicit flag, and
//! in `prod` deletion protection stays on.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::delete_table::DeleteTableError;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction,
    DeleteGlobalSecondaryIndexAction, GlobalSecondaryIndex, GlobalSecondaryIndexUpdate,
    KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType, SseSpecification,
    TableStatus, Tag, TimeToLiveSpecification,
};
use serde_json::{Value, json};
use std::time::Duration;

use crate::aws::AwsClients;
use crate::cost::base::{BasePrices, base_cost};
use crate::cost::{CostContext, CostError, CostLine};
use crate::engine::pair;
use crate::engine::permissions::Permissions;
use crate::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, TagApi, found, made, wait_until,
};
use crate::tag_api;
use crate::workspace::Workspace;

/// A global secondary index: name, hash key and optional range key (all strings), and the
/// attributes it copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gsi {
    pub name: &'static str,
    pub hash: &'static str,
    pub range: Option<&'static str>,
    pub projection: GsiProjection,
}

/// What an index copies of each item. Every write of an item also writes each index's copy,
/// billed by the copy's size: an index that copies whole items multiplies the cost of large
/// items by the number of indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsiProjection {
    /// Whole items.
    All,
    /// The table's and the index's keys.
    KeysOnly,
    /// The keys and these attributes.
    Include(&'static [&'static str]),
}

impl GsiProjection {
    fn text(self) -> String {
        match self {
            GsiProjection::All => "all attributes".into(),
            GsiProjection::KeysOnly => "keys only".into(),
            GsiProjection::Include(attrs) => {
                let mut a = attrs.to_vec();
                a.sort_unstable();
                format!("keys + {}", a.join(", "))
            }
        }
    }

    fn sdk(self) -> Projection {
        let b = Projection::builder();
        match self {
            GsiProjection::All => b.projection_type(ProjectionType::All),
            GsiProjection::KeysOnly => b.projection_type(ProjectionType::KeysOnly),
            GsiProjection::Include(attrs) => b
                .projection_type(ProjectionType::Include)
                .set_non_key_attributes(Some(attrs.iter().map(|a| a.to_string()).collect())),
        }
        .build()
    }

    /// The text of a projection DynamoDB describes.
    fn observed_text(p: Option<&Projection>) -> String {
        let attrs = p.map(|p| p.non_key_attributes()).unwrap_or_default();
        match p.and_then(|p| p.projection_type.as_ref()) {
            Some(ProjectionType::All) | None => "all attributes".into(),
            Some(ProjectionType::KeysOnly) => "keys only".into(),
            Some(_) => {
                let mut a = attrs.to_vec();
                a.sort_unstable();
                format!("keys + {}", a.join(", "))
            }
        }
    }
}

/// How a table's requests and storage are priced for a usage profile.
#[derive(Clone, Copy, Debug)]
pub enum TableUsage {
    /// The KV store.
    Kv,
    /// Bookkeeping with negligible traffic.
    Negligible,
    /// Priced by the tier that owns the table (its own usage fields): the table's logical id
    /// and DynamoDB's prices are handed to the function.
    Priced(fn(&'static str, &BasePrices, &CostContext<'_>) -> Result<Vec<CostLine>, CostError>),
}

#[derive(Clone, Debug)]
pub struct TableSpec {
    pub meta: Meta,
    pub hash_key: &'static str,
    pub range_key: Option<&'static str>,
    pub gsis: Vec<Gsi>,
    pub ttl_attribute: Option<&'static str>,
    /// On in `prod`: DynamoDB itself then refuses to delete the table.
    pub deletion_protection: bool,
    pub usage: TableUsage,
}

pub struct DynamoTable(pub TableSpec);

/// How long an index may take to be built from a table's items (AWS: minutes for most
/// tables, longer for large ones).
const INDEX_BUILD_LIMIT: Duration = Duration::from_secs(3600);

/// The index changes that bring the indexes `have` (as [`gsi_text`]s) to `want`, in order:
/// indexes of new names first, then the removals, then the indexes made again under their
/// name (their keys or projection changed).
fn index_changes<'a>(have: &'a [String], want: &'a [Gsi]) -> Vec<IndexChange<'a>> {
    let text = |g: &Gsi| gsi_text(g.name, g.hash, g.range, &g.projection.text());
    let named = |name: &str| have.iter().any(|h| gsi_name(h) == name);
    let fresh = want
        .iter()
        .filter(|g| !named(g.name))
        .map(IndexChange::Create);
    let stale = have
        .iter()
        .filter(|h| !want.iter().any(|g| text(g) == **h))
        .map(|h| IndexChange::Delete(gsi_name(h)));
    let remade = want
        .iter()
        .filter(|g| named(g.name) && !have.contains(&text(g)))
        .map(IndexChange::Create);
    fresh.chain(stale).chain(remade).collect()
}

/// One change of a table's indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IndexChange<'a> {
    Create(&'a Gsi),
    Delete(&'a str),
}

fn key_schema_text(hash: &str, range: Option<&str>) -> String {
    match range {
        Some(r) => format!("{hash} (S, hash) + {r} (S, range)"),
        None => format!("{hash} (S, hash)"),
    }
}

/// One index as plans show it and as observation reads it back: `name: keys; projection`.
fn gsi_text(name: &str, hash: &str, range: Option<&str>, projection: &str) -> String {
    format!("{name}: {}; {projection}", key_schema_text(hash, range))
}

fn gsis_value(gsis: &[Gsi]) -> Value {
    let mut v: Vec<String> = gsis
        .iter()
        .map(|g| gsi_text(g.name, g.hash, g.range, &g.projection.text()))
        .collect();
    v.sort();
    json!(v)
}

/// The index name of a [`gsi_text`].
fn gsi_name(text: &str) -> &str {
    text.split_once(':').map_or(text, |(n, _)| n)
}

fn map_build<T, E: std::fmt::Display>(r: Result<T, E>, id: &str) -> Result<T, EngineError> {
    r.map_err(|e| EngineError::Invalid(format!("{id}: {e}")))
}

tag_api! {
    /// DynamoDB's tags, by the table's `arn` output.
    pub struct DynamoTags;
    read(aws, meta, o): "ListTagsOfResource" => aws.dynamodb().list_tags_of_resource().resource_arn(o.out("arn")),
        |out| out.tags().iter().map(|t| pair(t.key(), t.value())).collect();
    tag(aws, meta, o, tags): "TagResource" => aws.dynamodb().tag_resource().resource_arn(o.out("arn"))
        .set_tags(Some(tags.iter().map(|(k, v)| map_build(Tag::builder().key(k).value(v).build(), meta.id))
            .collect::<Result<_, _>>()?));
    untag(aws, meta, o, keys): "UntagResource" => aws.dynamodb().untag_resource().resource_arn(o.out("arn"))
        .set_tag_keys(Some(keys.to_vec()));
}

impl DynamoTable {
    fn key_schema(
        &self,
        hash: &str,
        range: Option<&str>,
    ) -> Result<Vec<KeySchemaElement>, EngineError> {
        let id = self.0.meta.id;
        let mut v = vec![map_build(
            KeySchemaElement::builder()
                .attribute_name(hash)
                .key_type(KeyType::Hash)
                .build(),
            id,
        )?];
        if let Some(r) = range {
            v.push(map_build(
                KeySchemaElement::builder()
                    .attribute_name(r)
                    .key_type(KeyType::Range)
                    .build(),
                id,
            )?);
        }
        Ok(v)
    }

    /// The key attributes of the table and of every index of the spec (all strings).
    fn attribute_definitions(&self) -> Result<Vec<AttributeDefinition>, EngineError> {
        let s = &self.0;
        let mut attrs = vec![s.hash_key];
        attrs.extend(s.range_key);
        for g in &s.gsis {
            attrs.push(g.hash);
            attrs.extend(g.range);
        }
        attrs.sort_unstable();
        attrs.dedup();
        attrs
            .into_iter()
            .map(|a| {
                map_build(
                    AttributeDefinition::builder()
                        .attribute_name(a)
                        .attribute_type(ScalarAttributeType::S)
                        .build(),
                    s.meta.id,
                )
            })
            .collect()
    }

    fn index(&self, g: &Gsi) -> Result<GlobalSecondaryIndex, EngineError> {
        map_build(
            GlobalSecondaryIndex::builder()
                .index_name(g.name)
                .set_key_schema(Some(self.key_schema(g.hash, g.range)?))
                .projection(g.projection.sdk())
                .build(),
            self.0.meta.id,
        )
    }

    /// Brings the indexes to the spec on a table that stays in use: DynamoDB changes one index
    /// per UpdateTable, so each waits until the table and its indexes are ACTIVE again (a new
    /// index is filled from the table first). Indexes of new names are made first, then the
    /// unwanted ones go, then those whose keys or projection changed are made again under their
    /// name: queries of the running server find most of them throughout.
    async fn update_indexes(
        &self,
        aws: &AwsClients,
        current: &Observed,
    ) -> Result<(), EngineError> {
        let s = &self.0;
        let have: Vec<String> = current
            .fields
            .get("global_indexes")
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for change in index_changes(&have, &s.gsis) {
            self.change_index(aws, change).await?;
        }
        Ok(())
    }

    /// One index change, once the table is ACTIVE, then waits until it is ACTIVE again. A
    /// change already made (a retried call whose answer was lost, an interrupted apply) is
    /// taken as done.
    async fn change_index(
        &self,
        aws: &AwsClients,
        change: IndexChange<'_>,
    ) -> Result<(), EngineError> {
        let m = &self.0.meta;
        self.wait_active(aws).await?;
        let update = match change {
            IndexChange::Create(g) => GlobalSecondaryIndexUpdate::builder()
                .create(map_build(
                    CreateGlobalSecondaryIndexAction::builder()
                        .index_name(g.name)
                        .set_key_schema(Some(self.key_schema(g.hash, g.range)?))
                        .projection(g.projection.sdk())
                        .build(),
                    m.id,
                )?)
                .build(),
            IndexChange::Delete(name) => GlobalSecondaryIndexUpdate::builder()
                .delete(map_build(
                    DeleteGlobalSecondaryIndexAction::builder()
                        .index_name(name)
                        .build(),
                    m.id,
                )?)
                .build(),
        };
        let res = aws
            .dynamodb()
            .update_table()
            .table_name(&m.name)
            .set_attribute_definitions(Some(self.attribute_definitions()?))
            .global_secondary_index_updates(update)
            .send()
            .await;
        if let Err(e) = res {
            let names: Vec<String> = aws
                .dynamodb()
                .describe_table()
                .table_name(&m.name)
                .send()
                .await
                .map_err(|e| m.fail("DescribeTable", e))?
                .table
                .map(|t| {
                    t.global_secondary_indexes()
                        .iter()
                        .filter(|i| {
                            i.index_status
                                .as_ref()
                                .is_none_or(|s| s.as_str() != "DELETING")
                        })
                        .filter_map(|i| i.index_name.clone())
                        .collect()
                })
                .unwrap_or_default();
            let done = match change {
                IndexChange::Create(g) => names.iter().any(|n| n == g.name),
                IndexChange::Delete(name) => !names.iter().any(|n| n == name),
            };
            if !done {
                return Err(m.fail("UpdateTable", e));
            }
        }
        // A new index is filled from the whole table before it is ACTIVE.
        self.wait_active_within(aws, INDEX_BUILD_LIMIT).await
    }

    async fn wait_active(&self, aws: &AwsClients) -> Result<(), EngineError> {
        self.wait_active_within(aws, Duration::from_secs(300)).await
    }

    async fn wait_active_within(
        &self,
        aws: &AwsClients,
        limit: Duration,
    ) -> Result<(), EngineError> {
        let m = &self.0.meta;
        wait_until(&m.name, limit, Duration::from_millis(500), || {
            let ddb = aws.dynamodb();
            async move {
                let out = ddb
                    .describe_table()
                    .table_name(&m.name)
                    .send()
                    .await
                    .map_err(|e| m.fail("DescribeTable", e))?;
                let t = out.table;
                let table_ok =
                    t.as_ref().and_then(|t| t.table_status.clone()) == Some(TableStatus::Active);
                let gsis_ok = t
                    .as_ref()
                    .and_then(|t| t.global_secondary_indexes.as_ref())
                    .map(|g| {
                        g.iter().all(|i| {
                            i.index_status
                                .as_ref()
                                .map(|s| s.as_str() == "ACTIVE")
                                .unwrap_or(true)
                        })
                    })
                    .unwrap_or(true);
                Ok(if table_ok && gsis_ok {
                    Ok(())
                } else {
                    Err("table or index not ACTIVE yet".to_string())
                })
            }
        })
        .await
    }

    async fn set_ttl(&self, aws: &AwsClients, current: Option<&str>) -> Result<(), EngineError> {
        // DynamoDB allows one TTL attribute; switching means disabling the old one first.
        if let Some(old) = current
            && Some(old) != self.0.ttl_attribute
        {
            aws.dynamodb()
                .update_time_to_live()
                .table_name(&self.0.meta.name)
                .time_to_live_specification(map_build(
                    TimeToLiveSpecification::builder()
                        .attribute_name(old)
                        .enabled(false)
                        .build(),
                    self.0.meta.id,
                )?)
                .send()
                .await
                .map_err(|e| self.0.meta.fail("UpdateTimeToLive", e))?;
        }
        if let Some(attr) = self.0.ttl_attribute
            && current != Some(attr)
        {
            aws.dynamodb()
                .update_time_to_live()
                .table_name(&self.0.meta.name)
                .time_to_live_specification(map_build(
                    TimeToLiveSpecification::builder()
                        .attribute_name(attr)
                        .enabled(true)
                        .build(),
                    self.0.meta.id,
                )?)
                .send()
                .await
                .map_err(|e| self.0.meta.fail("UpdateTimeToLive", e))?;
        }
        Ok(())
    }

    /// Point-in-time recovery (waiting out DynamoDB's refusal right after ACTIVE).
    async fn set_pitr(&self, aws: &AwsClients) -> Result<(), EngineError> {
        crate::engine::lock::enable_pitr(&aws.dynamodb(), &self.0.meta.name)
            .await
            .map_err(|e| self.0.meta.fail("UpdateContinuousBackups", e))?;
        Ok(())
    }
}

#[async_trait]
impl Resource for DynamoTable {
    fn meta(&self) -> &Meta {
        &self.0.meta
    }
    fn kind(&self) -> &'static str {
        "dynamodb table"
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let table = ws.arn("dynamodb", &format!("table/{}", self.0.meta.name));
        Permissions::new()
            .read(
                &[
                    "dynamodb:DescribeTable",
                    "dynamodb:DescribeTimeToLive",
                    "dynamodb:DescribeContinuousBackups",
                    "dynamodb:ListTagsOfResource",
                ],
                &[&table],
            )
            .write(
                &[
                    "dynamodb:CreateTable",
                    "dynamodb:UpdateTable",
                    "dynamodb:UpdateTimeToLive",
                    "dynamodb:UpdateContinuousBackups",
                    "dynamodb:DeleteTable",
                    "dynamodb:TagResource",
                    "dynamodb:UntagResource",
                ],
                &[table],
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&DynamoTags)
    }
    fn data_bearing(&self) -> bool {
        true
    }

    fn desired(&self, _outputs: &Outputs) -> Desired {
        let s = &self.0;
        Desired::new()
            .set_replace("key_schema", key_schema_text(s.hash_key, s.range_key))
            .set("billing_mode", "PAY_PER_REQUEST")
            .set("global_indexes", gsis_value(&s.gsis))
            .set(
                "ttl_attribute",
                s.ttl_attribute.map(Value::from).unwrap_or(Value::Null),
            )
            .set("point_in_time_recovery", true)
            .set("encryption", "KMS (AWS managed key)")
            .set("deletion_protection", s.deletion_protection)
    }

    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let m = &self.0.meta;
        let Some(out) = found(
            aws.dynamodb()
                .describe_table()
                .table_name(&m.name)
                .send()
                .await,
            DescribeTableError::is_resource_not_found_exception,
            m,
            "DescribeTable",
        )?
        else {
            return Ok(None);
        };
        let Some(t) = out.table else { return Ok(None) };
        if t.table_status == Some(TableStatus::Deleting) {
            return Ok(None);
        }
        let arn = t.table_arn.clone().unwrap_or_default();
        let mut hash = String::new();
        let mut range = None;
        for k in t.key_schema() {
            match k.key_type {
                KeyType::Hash => hash = k.attribute_name.clone(),
                _ => range = Some(k.attribute_name.clone()),
            }
        }
        let billing = t
            .billing_mode_summary
            .as_ref()
            .and_then(|b| b.billing_mode.as_ref())
            .map(|b| b.as_str().to_string())
            .unwrap_or_else(|| "PROVISIONED".into());
        let gsis: Vec<String> = {
            let mut v: Vec<String> = t
                .global_secondary_indexes()
                .iter()
                .map(|g| {
                    let mut h = String::new();
                    let mut r = None;
                    for k in g.key_schema() {
                        match k.key_type {
                            KeyType::Hash => h = k.attribute_name.clone(),
                            _ => r = Some(k.attribute_name.clone()),
                        }
                    }
                    gsi_text(
                        g.index_name().unwrap_or_default(),
                        &h,
                        r.as_deref(),
                        &GsiProjection::observed_text(g.projection()),
                    )
                })
                .collect();
            v.sort();
            v
        };
        let sse = match t.sse_description.as_ref().and_then(|d| d.status.as_ref()) {
            Some(s) if s.as_str() == "ENABLED" => "KMS (AWS managed key)",
            _ => "AWS owned key",
        };
        Ok(Some(
            Observed::default()
                .field("key_schema", key_schema_text(&hash, range.as_deref()))
                .field("billing_mode", billing)
                .field("global_indexes", json!(gsis))
                .field("encryption", sse)
                .field(
                    "deletion_protection",
                    t.deletion_protection_enabled.unwrap_or(false),
                )
                .output("arn", arn)
                .output("name", m.name.clone()),
        ))
    }

    /// Time to live and point-in-time recovery: two more reads, at once.
    async fn observe_more(
        &self,
        aws: &AwsClients,
        _found: &Observed,
    ) -> Result<Observed, EngineError> {
        let m = &self.0.meta;
        let ddb = aws.dynamodb();
        let (ttl, backups) = tokio::join!(
            ddb.describe_time_to_live().table_name(&m.name).send(),
            ddb.describe_continuous_backups().table_name(&m.name).send()
        );
        let ttl = ttl.map_err(|e| m.fail("DescribeTimeToLive", e))?;
        let backups = backups.map_err(|e| m.fail("DescribeContinuousBackups", e))?;
        let ttl_attr = ttl
            .time_to_live_description
            .filter(|d| {
                d.time_to_live_status
                    .as_ref()
                    .map(|s| matches!(s.as_str(), "ENABLED" | "ENABLING"))
                    .unwrap_or(false)
            })
            .and_then(|d| d.attribute_name);
        let pitr = backups
            .continuous_backups_description
            .and_then(|d| d.point_in_time_recovery_description)
            .and_then(|p| p.point_in_time_recovery_status)
            .map(|s| s.as_str() == "ENABLED")
            .unwrap_or(false);
        Ok(Observed::default()
            .field(
                "ttl_attribute",
                ttl_attr.map(Value::from).unwrap_or(Value::Null),
            )
            .field("point_in_time_recovery", pitr))
    }

    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<(), EngineError> {
        let s = &self.0;
        let m = &s.meta;
        let mut req = aws
            .dynamodb()
            .create_table()
            .table_name(&m.name)
            .billing_mode(BillingMode::PayPerRequest)
            .set_key_schema(Some(self.key_schema(s.hash_key, s.range_key)?))
            .sse_specification(SseSpecification::builder().enabled(true).build())
            .set_attribute_definitions(Some(self.attribute_definitions()?))
            .deletion_protection_enabled(s.deletion_protection);
        for g in &s.gsis {
            req = req.global_secondary_indexes(self.index(g)?);
        }
        for (k, v) in &m.tags {
            req = req.tags(map_build(Tag::builder().key(k).value(v).build(), m.id)?);
        }
        // Created by an earlier, interrupted apply: converge on it.
        made(
            req.send().await,
            CreateTableError::is_resource_in_use_exception,
            m,
            "CreateTable",
        )?;
        self.wait_active(aws).await?;
        self.set_ttl(aws, None).await?;
        self.set_pitr(aws).await
    }

    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let (current, changed) = (c.current, c.fields);
        let s = &self.0;
        for field in changed {
            match field.as_str() {
                "billing_mode" | "encryption" | "deletion_protection" => {
                    let mut req = aws.dynamodb().update_table().table_name(&s.meta.name);
                    req = match field.as_str() {
                        "billing_mode" => req.billing_mode(BillingMode::PayPerRequest),
                        "encryption" => {
                            req.sse_specification(SseSpecification::builder().enabled(true).build())
                        }
                        _ => req.deletion_protection_enabled(s.deletion_protection),
                    };
                    req.send()
                        .await
                        .map_err(|e| s.meta.fail("UpdateTable", e))?;
                    self.wait_active(aws).await?;
                }
                "ttl_attribute" => {
                    let cur = current.fields.get("ttl_attribute").and_then(|v| v.as_str());
                    self.set_ttl(aws, cur).await?;
                }
                "point_in_time_recovery" => self.set_pitr(aws).await?,
                "global_indexes" => self.update_indexes(aws, current).await?,
                other => {
                    return Err(EngineError::Invalid(format!(
                        "{}: field {other} cannot be updated in place",
                        s.meta.name
                    )));
                }
            }
        }
        Ok(())
    }

    async fn delete(&self, aws: &AwsClients, current: &Observed) -> Result<(), EngineError> {
        let m = &self.0.meta;
        let protected = current.fields.get("deletion_protection") == Some(&Value::Bool(true));
        if protected {
            if self.0.deletion_protection {
                return Err(EngineError::Invalid(format!(
                    "{}: deletion protection is on (prod); it stays on. Turn it off yourself \
                     (aws dynamodb update-table --no-deletion-protection-enabled) if you really mean to delete it",
                    m.name
                )));
            }
            aws.dynamodb()
                .update_table()
                .table_name(&m.name)
                .deletion_protection_enabled(false)
                .send()
                .await
                .map_err(|e| m.fail("UpdateTable", e))?;
        }
        // Already gone: nothing to wait for.
        if found(
            aws.dynamodb()
                .delete_table()
                .table_name(&m.name)
                .send()
                .await,
            DeleteTableError::is_resource_not_found_exception,
            m,
            "DeleteTable",
        )?
        .is_none()
        {
            return Ok(());
        }
        wait_until(
            &m.name,
            Duration::from_secs(300),
            Duration::from_millis(500),
            || {
                let ddb = aws.dynamodb();
                async move {
                    match found(
                        ddb.describe_table().table_name(&m.name).send().await,
                        DescribeTableError::is_resource_not_found_exception,
                        m,
                        "DescribeTable",
                    )? {
                        None => Ok(Ok(())),
                        Some(_) => Ok(Err("still deleting".to_string())),
                    }
                }
            },
        )
        .await
    }

    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let (p, u) = base_cost(ctx)?;
        let id = self.0.meta.id;
        Ok(match self.0.usage {
            TableUsage::Kv => vec![
                CostLine::new(
                    id,
                    "on-demand writes",
                    u.kv_writes / 1e6,
                    "M WRU",
                    p.dynamodb_write_million,
                ),
                CostLine::new(
                    id,
                    "on-demand reads",
                    u.kv_reads / 1e6,
                    "M RRU",
                    p.dynamodb_read_million,
                ),
                CostLine::new(
                    id,
                    "storage",
                    u.kv_storage_gb,
                    "GB-month",
                    p.dynamodb_storage_gb_month,
                ),
                CostLine::new(
                    id,
                    "point-in-time recovery",
                    u.kv_storage_gb,
                    "GB-month",
                    p.dynamodb_pitr_gb_month,
                ),
            ],
            TableUsage::Priced(price) => price(id, p, ctx)?,
            TableUsage::Negligible => Vec::new(),
        })
    }

    fn protected(&self) -> Option<String> {
        self.0.deletion_protection.then(|| {
            "deletion protection is on (prod) and stays on: kept. To delete it, turn deletion \
             protection off yourself first"
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &["a", "b"];

    fn gsi(name: &'static str, projection: GsiProjection) -> Gsi {
        Gsi {
            name,
            hash: "h",
            range: Some("r"),
            projection,
        }
    }

    fn texts(gsis: &[Gsi]) -> Vec<String> {
        gsis.iter()
            .map(|g| gsi_text(g.name, g.hash, g.range, &g.projection.text()))
            .collect()
    }

    #[test]
    fn an_index_reads_back_as_the_text_it_was_made_from() {
        for p in [
            GsiProjection::All,
            GsiProjection::KeysOnly,
            GsiProjection::Include(&["b", "a"]),
        ] {
            assert_eq!(GsiProjection::observed_text(Some(&p.sdk())), p.text());
        }
        assert_eq!(GsiProjection::Include(KEYS).text(), "keys + a, b");
        assert_eq!(gsi_name(&texts(&[gsi("x", GsiProjection::All)])[0]), "x");
    }

    #[test]
    fn new_indexes_come_first_then_removals_then_indexes_made_again_under_their_name() {
        let have = texts(&[
            gsi("kept", GsiProjection::KeysOnly),
            gsi("narrowed", GsiProjection::All),
            gsi("gone", GsiProjection::All),
        ]);
        let want = [
            gsi("narrowed", GsiProjection::Include(KEYS)),
            gsi("kept", GsiProjection::KeysOnly),
            gsi("new", GsiProjection::All),
        ];
        assert_eq!(
            index_changes(&have, &want),
            [
                IndexChange::Create(&want[2]),
                IndexChange::Delete("narrowed"),
                IndexChange::Delete("gone"),
                IndexChange::Create(&want[0]),
            ]
        );
        assert!(index_changes(&texts(&want), &want).is_empty());
    }
}
