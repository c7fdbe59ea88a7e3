//! The small tier's resources, on top of the extra-small tier's.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_s3::types::TransitionStorageClass;
use tier_xs::components::iam::statement;
use tier_xs::components::table::{DynamoTable, TableSpec, TableUsage};
use tier_xs::engine::{Meta, Resource};
use tier_xs::ladder::{DashboardSpec, Front, Problem};
use tier_xs::workspace::{Tier, Workspace};
use tier_xs::xs::{ExtraSmall, XsSettings};

use tier_xs::components::network::{Ingress, SecurityGroup};
use tier_xs::config::DASHBOARD_PORT;

use crate::components::alb::{Listener, ListenerMode, LoadBalancer, TargetGroup};
use crate::components::bucket::{Bucket, BucketUsage, Lifecycle, Tiering};
use crate::components::queue::{Queue, SendFromRule};
use crate::config::SmallConfig;
use crate::monitoring;
use tier_xs::components::bus::EventRule;

/// Logical ids of the small tier's resources (unique across tiers).
pub mod ids {
    pub const ARTIFACTS_BUCKET: &str = "artifacts-bucket";
    pub const TIMELINE_BUCKET: &str = "timeline-bucket";
    pub const EVENTS_TABLE: &str = "events-table";
    pub const SUBSCRIPTIONS_TABLE: &str = "subscriptions-table";
    pub const RULES_TABLE: &str = "event-rules-table";
    pub const ALB_SECURITY_GROUP: &str = "alb-security-group";
    pub const LOAD_BALANCER: &str = "load-balancer";
    pub const TARGET_GROUP: &str = "target-group";
    pub const HTTP_LISTENER: &str = "http-listener";
    pub const HTTPS_LISTENER: &str = "https-listener";
    pub const EVENTS_QUEUE: &str = "events-queue";
    pub const EVENTS_DEAD_LETTER_QUEUE: &str = "events-dead-letter-queue";
    pub const MONITOR_RULE: &str = "monitor-rule";
}

/// Lifecycle of the artifacts bucket: old versions kept 90 days, unfinished uploads 7.
pub const ARTIFACTS_LIFECYCLE: Lifecycle = Lifecycle {
    noncurrent_expire_days: 90,
    abort_multipart_days: 7,
    transitions: Vec::new(),
};

/// Lifecycle of the timeline: records are read mostly while fresh, so after 30 days they
/// move to Standard-IA and after 180 to Glacier Instant Retrieval (still readable at once).
/// S3 transitions only objects of 128 KB or more by default (since September 2024): most
/// records are smaller and stay in Standard, where they are cheaper (IA and Glacier IR bill
/// an object as at least 128 KB); the cost report prices them there.
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
    /// ACM (or IAM) certificate for HTTPS on 443; port 80 then redirects to it.
    pub certificate_arn: Option<String>,
}

/// Zones the load balancer spans: two, the fewest AWS accepts. Each zone costs a public
/// IPv4 address ($3.65 a month), and the default VPC has a subnet in every zone of the
/// region (six in us-east-1).
pub const ALB_ZONES: usize = 2;

/// The load balancer's subnets: one in each of the first [`ALB_ZONES`] zones (in zone order,
/// the first subnet of each in sorted order, so the choice is stable). CreateLoadBalancer
/// wants subnets in different zones; a subnet whose zone is unknown (a plan without AWS)
/// counts as its own zone.
pub fn alb_subnets(subnets: &[String], zones: &BTreeMap<String, String>) -> Vec<String> {
    let mut s = subnets.to_vec();
    s.sort();
    s.dedup();
    let mut by_zone: BTreeMap<String, String> = BTreeMap::new();
    for subnet in s {
        let zone = zones
            .get(&subnet)
            .cloned()
            .unwrap_or_else(|| subnet.clone());
        by_zone.entry(zone).or_insert(subnet);
    }
    by_zone.into_values().take(ALB_ZONES).collect()
}

/// A certificate ARN of ACM or IAM.
pub fn valid_certificate_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && ((parts[2] == "acm" && parts[5].starts_with("certificate/"))
            || (parts[2] == "iam" && parts[5].starts_with("server-certificate/")))
}

/// The small tier's own resources (without the extra-small ones).
pub struct SmallOwn {
    pub config: SmallConfig,
    pub artifacts: Arc<Bucket>,
    pub timeline: Arc<Bucket>,
    pub events: Arc<DynamoTable>,
    pub subscriptions: Arc<DynamoTable>,
    pub rules: Arc<DynamoTable>,
    pub alb_security_group: Arc<SecurityGroup>,
    pub load_balancer: Arc<LoadBalancer>,
    pub target_group: Arc<TargetGroup>,
    pub http_listener: Arc<Listener>,
    pub https_listener: Arc<Listener>,
    pub events_queue: Arc<Queue>,
    pub dead_letter_queue: Arc<Queue>,
    pub monitor_rule: Arc<EventRule>,
    pub problems: Vec<Problem>,
}

/// The monitor's queue: a receive is hidden from other receivers for this long, which must
/// cover recording an event and its webhook deliveries (5 attempts of at most 5 s, with
/// backoff between them).
pub const QUEUE_VISIBILITY_SECONDS: u32 = 120;
/// Three receives a minute (20-second long polls), all month.
pub const QUEUE_POLLS_PER_MONTH: f64 = 3.0 * 60.0 * 730.0;

impl SmallOwn {
    pub fn new(ws: &Workspace, xs: &XsSettings, settings: &SmallSettings) -> Self {
        let t = Tier::Small;
        let config = SmallConfig::for_workspace(ws);
        let prod = ws.env.is_prod();
        let bucket = |id, name: &str, lifecycle, usage, component| Bucket {
            meta: Meta::new(id, t, name.to_string(), ws.tags(t, component)),
            region: ws.region.clone(),
            lifecycle,
            tls_only: !settings.plain_http,
            retain: prod,
            usage,
        };
        let table = |id, name: &str, hash, range, gsis, ttl, usage, component| {
            DynamoTable(TableSpec {
                meta: Meta::new(id, t, name.to_string(), ws.tags(t, component)),
                hash_key: hash,
                range_key: range,
                gsis,
                ttl_attribute: ttl,
                deletion_protection: prod,
                usage,
            })
        };
        let mut problems = Vec::new();
        let lb_subnets = alb_subnets(&xs.network.subnet_ids, &xs.network.zones);
        if lb_subnets.len() < ALB_ZONES {
            let zones: std::collections::BTreeSet<&str> = xs
                .network
                .subnet_ids
                .iter()
                .map(|s| xs.network.zones.get(s).map_or(s.as_str(), String::as_str))
                .collect();
            problems.push(Problem::new(format!(
                "the load balancer needs subnets in at least two availability zones; the workspace's {} subnet(s) are in {} ({}): pass --subnet for another zone",
                xs.network.subnet_ids.len(),
                if zones.len() == 1 { "one zone" } else { "no zone" },
                zones.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        if let Some(c) = &settings.certificate_arn
            && !valid_certificate_arn(c)
        {
            problems.push(Problem::new(format!(
                "--certificate-arn {c:?} is not an ACM or IAM certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/ID)"
            )));
        }
        let https = settings.certificate_arn.is_some();
        if prod && !https {
            problems.push(Problem::new(
                "prod needs HTTPS: pass --certificate-arn (an ACM certificate for the dashboard's name); without it the load balancer serves plain HTTP and every bearer token crosses the internet in clear text",
            ));
        }
        let alb_ports: Vec<u16> = if https { vec![80, 443] } else { vec![80] };
        // ALB and target-group names are limited to 32 characters: `agentbus-{env}-dash`.
        let alb_name = ws.name("dash");
        let http_mode = if https {
            ListenerMode::HttpRedirect
        } else {
            ListenerMode::HttpForward
        };
        let bus = tier_xs::config::ServerConfig::for_workspace(ws, t).event_bus;
        let rule_name = ws.name(monitoring::RULE_COMPONENT);
        let rule_arn = ws.arn("events", &format!("rule/{bus}/{rule_name}"));
        let queue =
            |id, name: String, retention, dead_letter_id, policy, holds_data, polls, per_event| {
                Arc::new(Queue {
                    arn: ws.arn("sqs", &name),
                    meta: Meta::new(id, t, name, ws.tags(t, "event-monitoring")),
                    retention_seconds: retention,
                    visibility_timeout_seconds: QUEUE_VISIBILITY_SECONDS,
                    receive_wait_seconds: 20,
                    dead_letter_id,
                    policy,
                    holds_data,
                    polls_per_month: polls,
                    requests_per_event: per_event,
                    wanted: true,
                })
            };
        SmallOwn {
            // Four days to catch up after an outage; what fails five receives is kept 14 days.
            events_queue: queue(
                ids::EVENTS_QUEUE,
                config.events_queue.clone(),
                4 * 86_400,
                Some(ids::EVENTS_DEAD_LETTER_QUEUE),
                Some(SendFromRule {
                    rule_arn: rule_arn.clone(),
                }),
                false,
                QUEUE_POLLS_PER_MONTH,
                3.0,
            ),
            dead_letter_queue: queue(
                ids::EVENTS_DEAD_LETTER_QUEUE,
                ws.name(monitoring::DEAD_LETTER_COMPONENT),
                14 * 86_400,
                None,
                None,
                true,
                0.0,
                0.0,
            ),
            monitor_rule: Arc::new(EventRule {
                meta: Meta::new(
                    ids::MONITOR_RULE,
                    t,
                    rule_name,
                    ws.tags(t, "event-monitoring"),
                ),
                bus_id: tier_xs::xs::ids::EVENT_BUS,
                bus_name: bus,
                description: "every event on the bus, into the event monitor's queue".into(),
                pattern: monitoring::all_events_pattern(),
                target_id: ids::EVENTS_QUEUE,
            }),
            alb_security_group: Arc::new(SecurityGroup {
                meta: Meta::new(
                    ids::ALB_SECURITY_GROUP,
                    t,
                    ws.name("alb"),
                    ws.tags(t, "load-balancer"),
                ),
                description: format!(
                    "agentbus {} load balancer: HTTP(S) from allowed CIDRs",
                    ws.env
                ),
                vpc_id: xs.network.vpc_id.clone(),
                rules: Ingress::from_cidrs(&alb_ports, &xs.allow_cidrs),
                outbound_only: None,
                holds_data: false,
            }),
            load_balancer: Arc::new(LoadBalancer {
                meta: Meta::new(
                    ids::LOAD_BALANCER,
                    t,
                    alb_name.clone(),
                    ws.tags(t, "load-balancer"),
                ),
                subnets: lb_subnets,
                security_group_id: ids::ALB_SECURITY_GROUP,
                https,
            }),
            target_group: Arc::new(TargetGroup {
                meta: Meta::new(
                    ids::TARGET_GROUP,
                    t,
                    alb_name.clone(),
                    ws.tags(t, "load-balancer"),
                ),
                vpc_id: xs.network.vpc_id.clone(),
                port: DASHBOARD_PORT,
            }),
            http_listener: Arc::new(Listener {
                meta: Meta::new(ids::HTTP_LISTENER, t, format!("{alb_name}:80"), Vec::new()),
                load_balancer_name: alb_name.clone(),
                load_balancer_id: ids::LOAD_BALANCER,
                target_group_id: ids::TARGET_GROUP,
                port: 80,
                mode: Some(http_mode),
            }),
            https_listener: Arc::new(Listener {
                meta: Meta::new(
                    ids::HTTPS_LISTENER,
                    t,
                    format!("{alb_name}:443"),
                    Vec::new(),
                ),
                load_balancer_name: alb_name,
                load_balancer_id: ids::LOAD_BALANCER,
                target_group_id: ids::TARGET_GROUP,
                port: 443,
                mode: settings
                    .certificate_arn
                    .clone()
                    .map(|certificate_arn| ListenerMode::Https { certificate_arn }),
            }),
            problems,
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
                TableUsage::Priced(crate::cost::events_table_cost),
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
            self.alb_security_group.clone(),
            self.load_balancer.clone(),
            self.target_group.clone(),
            self.http_listener.clone(),
            self.https_listener.clone(),
            self.dead_letter_queue.clone(),
            self.events_queue.clone(),
            self.monitor_rule.clone(),
        ]
    }

    /// What the dashboard task needs to use these: their names and the rights to them; and
    /// it sits behind the load balancer, which alone it admits.
    pub fn shape_dashboard(&self, ws: &Workspace, spec: &mut DashboardSpec) {
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
        // The dashboard admits only its load balancer; the CIDRs go to the balancer.
        spec.put_behind(Front {
            security_group_id: ids::ALB_SECURITY_GROUP,
            target_group_id: ids::TARGET_GROUP,
            // With a certificate, only the HTTPS listener forwards (HTTP redirects).
            attached_by_id: if self.load_balancer.https {
                ids::HTTPS_LISTENER
            } else {
                ids::HTTP_LISTENER
            },
            subnets: self.load_balancer.subnets.clone(),
        });
        spec.env.extend(self.config.to_env());
        spec.task_statements.extend([
            statement(
                &["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                &buckets.iter().map(|b| format!("{b}/*")).collect::<Vec<_>>(),
            ),
            statement(&["s3:ListBucket"], &buckets),
            statement(
                &[
                    "dynamodb:GetItem",
                    "dynamodb:BatchGetItem",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem",
                    "dynamodb:Query",
                    "dynamodb:BatchWriteItem",
                    "dynamodb:DescribeTable",
                ],
                &table_arns,
            ),
            statement(
                &[
                    "sqs:GetQueueUrl",
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                ],
                std::slice::from_ref(&self.events_queue.arn),
            ),
            // Its depth, for the console's admins.
            statement(
                &["sqs:GetQueueUrl", "sqs:GetQueueAttributes"],
                std::slice::from_ref(&self.dead_letter_queue.arn),
            ),
        ]);
    }
}

/// The small tier: the extra-small tier (its dashboard configured for small) and its own.
pub struct Small {
    pub xs: ExtraSmall,
    pub own: SmallOwn,
}

impl Small {
    /// The small tier with its dashboard shaped by this tier alone.
    pub fn new(ws: &Workspace, xs: &XsSettings, settings: &SmallSettings) -> Self {
        let own = SmallOwn::new(ws, xs, settings);
        let mut spec = DashboardSpec::new(Tier::Small);
        own.shape_dashboard(ws, &mut spec);
        Small {
            xs: ExtraSmall::new(ws, xs, &spec),
            own,
        }
    }

    /// Every resource of the tier: the extra-small ones first.
    pub fn resources(&self) -> Vec<Arc<dyn Resource>> {
        let mut r = self.xs.resources();
        r.extend(self.own.resources());
        r
    }

    pub fn problems(&self) -> Vec<Problem> {
        let mut p = self.xs.problems.clone();
        p.extend(self.own.problems.iter().cloned());
        p
    }
}

#[cfg(test)]
mod tests;
