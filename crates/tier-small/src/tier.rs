//! The small tier's resources, on top of the extra-small tier's.

use std::sync::Arc;

use aws_sdk_s3::types::TransitionStorageClass;
use tier_xs::components::iam::statement;
use tier_xs::components::table::{DynamoTable, TableSpec, TableUsage};
use tier_xs::engine::Resource;
use tier_xs::tier::{Extension, ExtraSmall, XsSettings};
use tier_xs::workspace::{Tier, Workspace};

use crate::components::bucket::{Bucket, BucketUsage, Lifecycle, Tiering};
use crate::config::SmallConfig;
use crate::monitoring;

/// Logical ids of the small tier's resources (unique across tiers).
pub mod ids {
    pub const ARTIFACTS_BUCKET: &str = "artifacts-bucket";
    pub const TIMELINE_BUCKET: &str = "timeline-bucket";
    pub const EVENTS_TABLE: &str = "events-table";
    pub const SUBSCRIPTIONS_TABLE: &str = "subscriptions-table";
    pub const RULES_TABLE: &str = "event-rules-table";
}

/// Lifecycle of the artifacts bucket: old versions kept 90 days, unfinished uploads 7.
pub const ARTIFACTS_LIFECYCLE: Lifecycle = Lifecycle {
    noncurrent_expire_days: 90,
    abort_multipart_days: 7,
    transitions: Vec::new(),
};

/// Lifecycle of the timeline: records are read mostly while fresh, so after 30 days they
/// move to Standard-IA and after 180 to Glacier Instant Retrieval (still readable at once).
pub fn timeline_lifecycle() -> Lifecycle {
    Lifecycle {
        noncurrent_expire_days: 30,
        abort_multipart_days: 7,
        transitions: vec![
            Tiering {
                days: 30,
                class: TransitionStorageClass::StandardIa,
            },
            Tiering {
                days: 180,
                class: TransitionStorageClass::GlacierIr,
            },
        ],
    }
}

/// Settings of the small tier beyond the extra-small ones.
#[derive(Clone, Debug, Default)]
pub struct SmallSettings {
    /// The AWS endpoint is plain HTTP (an emulator): no TLS-only bucket policy.
    pub plain_http: bool,
}

/// The small tier's own resources (without the extra-small ones).
pub struct SmallOwn {
    pub config: SmallConfig,
    pub artifacts: Arc<Bucket>,
    pub timeline: Arc<Bucket>,
    pub events: Arc<DynamoTable>,
    pub subscriptions: Arc<DynamoTable>,
    pub rules: Arc<DynamoTable>,
}

impl SmallOwn {
    pub fn new(ws: &Workspace, settings: &SmallSettings) -> Self {
        let t = Tier::Small;
        let config = SmallConfig::for_workspace(ws);
        let prod = ws.env.is_prod();
        let bucket = |id, name: &str, lifecycle, usage, component| Bucket {
            id,
            tier: t,
            name: name.to_string(),
            region: ws.region.clone(),
            lifecycle,
            tls_only: !settings.plain_http,
            retain: prod,
            usage,
            tags: ws.tags(t, component),
        };
        let table = |id, name: &str, hash, range, gsis, ttl, usage, component| {
            DynamoTable(TableSpec {
                id,
                tier: t,
                name: name.to_string(),
                hash_key: hash,
                range_key: range,
                gsis,
                ttl_attribute: ttl,
                deletion_protection: prod,
                usage,
                tags: ws.tags(t, component),
            })
        };
        SmallOwn {
            artifacts: Arc::new(bucket(
                ids::ARTIFACTS_BUCKET,
                &config.artifacts_bucket,
                ARTIFACTS_LIFECYCLE,
                BucketUsage::Artifacts,
                "artifacts",
            )),
            timeline: Arc::new(bucket(
                ids::TIMELINE_BUCKET,
                &config.timeline_bucket,
                timeline_lifecycle(),
                BucketUsage::Timeline,
                "timeline",
            )),
            events: Arc::new(table(
                ids::EVENTS_TABLE,
                &config.events_table,
                monitoring::events::EVENT_ID,
                None,
                monitoring::events::INDEXES.to_vec(),
                Some(monitoring::events::EXPIRES_AT),
                TableUsage::Events {
                    indexes: monitoring::events::INDEXES.len() as u32,
                },
                "event-monitoring",
            )),
            subscriptions: Arc::new(table(
                ids::SUBSCRIPTIONS_TABLE,
                &config.subscriptions_table,
                monitoring::subscriptions::TENANT,
                Some(monitoring::subscriptions::SUBSCRIPTION_ID),
                Vec::new(),
                None,
                TableUsage::Negligible,
                "event-monitoring",
            )),
            rules: Arc::new(table(
                ids::RULES_TABLE,
                &config.rules_table,
                monitoring::rules::TENANT,
                Some(monitoring::rules::RULE_ID),
                Vec::new(),
                None,
                TableUsage::Negligible,
                "event-monitoring",
            )),
            config,
        }
    }

    pub fn resources(&self) -> Vec<Arc<dyn Resource>> {
        vec![
            self.artifacts.clone(),
            self.timeline.clone(),
            self.events.clone(),
            self.subscriptions.clone(),
            self.rules.clone(),
        ]
    }

    /// What the dashboard task needs to use these: their names and the rights to them.
    pub fn extension(&self, ws: &Workspace) -> Extension {
        let table_arns: Vec<String> = [
            &self.config.events_table,
            &self.config.subscriptions_table,
            &self.config.rules_table,
        ]
        .iter()
        .flat_map(|t| {
            let arn = ws.arn("dynamodb", &format!("table/{t}"));
            [format!("{arn}/index/*"), arn]
        })
        .collect();
        let buckets = [self.artifacts.arn(), self.timeline.arn()];
        Extension {
            tier: Some(Tier::Small),
            env: self.config.to_env(),
            task_statements: vec![
                statement(
                    &["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                    &buckets.iter().map(|b| format!("{b}/*")).collect::<Vec<_>>(),
                ),
                statement(&["s3:ListBucket"], &buckets),
                statement(
                    &[
                        "dynamodb:GetItem",
                        "dynamodb:PutItem",
                        "dynamodb:UpdateItem",
                        "dynamodb:DeleteItem",
                        "dynamodb:Query",
                        "dynamodb:BatchWriteItem",
                        "dynamodb:DescribeTable",
                    ],
                    &table_arns,
                ),
            ],
        }
    }
}

/// The small tier: the extra-small tier (its dashboard configured for small) and its own.
pub struct Small {
    pub xs: ExtraSmall,
    pub own: SmallOwn,
}

impl Small {
    pub fn new(ws: &Workspace, xs: &XsSettings, settings: &SmallSettings) -> Self {
        let own = SmallOwn::new(ws, settings);
        let mut xs = xs.clone();
        xs.extension = own.extension(ws);
        Small {
            xs: ExtraSmall::new(ws, &xs),
            own,
        }
    }

    /// Every resource of the tier: the extra-small ones first.
    pub fn resources(&self) -> Vec<Arc<dyn Resource>> {
        let mut r = self.xs.resources();
        r.extend(self.own.resources());
        r
    }

    pub fn problems(&self) -> Vec<String> {
        self.xs.problems.clone()
    }
}

#[cfg(test)]
mod tests;
