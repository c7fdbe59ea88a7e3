//! The extra-small tier as a type: what it deploys, built from the workspace, the deploy
//! settings and the dashboard as the active layers shape it. Its [`layer::XsLayer`] is the
//! bottom of every ladder.

pub mod layer;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::components::budget::Budget;
use crate::components::bus::{EventBus, EventRule};
use crate::components::domain::DomainCertificate;
use crate::components::ecr::EcrRepository;
use crate::components::ecs::{
    Cluster, ContainerSpec, CpuArchitecture, Service, TargetGroupRegistration, TaskCount,
    TaskDefinition, on_demand_base_then_spot, spot_only, validate_fargate_size,
};
use crate::components::iam::{Role, policy, statement, statement_when};
use crate::components::logs::{LogGroup, LogSource, LogsResourcePolicy};
use crate::components::network::{Ingress, Network, SecurityGroup, Source};
use crate::components::secret::WorkspaceSecret;
use crate::components::table::{DynamoTable, TableSpec, TableUsage};
use crate::config::{DASHBOARD_PORT, DomainConfig, IMAGE_BINARY_PATH, LETS_ENCRYPT, ServerConfig};
use crate::engine::{Meta, Resource};
use crate::ladder::{DashboardSpec, Problem};
use crate::workspace::{PREFIX, Tier, Workspace};

/// What a user decides about a deploy of the extra-small tier.
#[derive(Clone, Debug)]
pub struct XsSettings {
    /// Container image of the dashboard server.
    pub image: Option<String>,
    /// What that image was built for.
    pub architecture: CpuArchitecture,
    /// CIDRs admitted to the dashboard port.
    pub allow_cidrs: Vec<String>,
    pub network: Network,
    /// How long to wait for the dashboard service to become steady.
    pub service_wait: Duration,
    /// Dashboard task size (CPU units, MiB).
    pub cpu: u32,
    pub memory: u32,
    /// Monthly limit of the workspace's AWS Budget (USD).
    pub budget_usd: f64,
    /// Where the budget's alerts go; none: no alert is sent.
    pub alert_email: Option<String>,
    /// The name the server answers to with an ACME certificate (`--domain`), where it speaks
    /// TLS itself.
    pub domain: Option<String>,
    /// The ACME directory that certificate comes from.
    pub acme_directory: String,
}

impl XsSettings {
    pub fn new(network: Network) -> Self {
        XsSettings {
            image: None,
            architecture: CpuArchitecture::default(),
            allow_cidrs: Vec::new(),
            network,
            service_wait: Duration::from_secs(600),
            cpu: 256,
            memory: 512,
            budget_usd: layer::SEED_TARGET.1,
            alert_email: None,
            domain: None,
            acme_directory: LETS_ENCRYPT.to_string(),
        }
    }
}

/// Logical ids of the extra-small resources.
pub mod ids {
    pub const KV_TABLE: &str = "kv-table";
    pub const EVENT_BUS: &str = "event-bus";
    pub const EVENTS_LOG_GROUP: &str = "events-log-group";
    pub const EVENTS_LOG_POLICY: &str = "events-log-policy";
    pub const EVENTS_RULE: &str = "events-rule";
    pub const SERVER_SECRET: &str = "server-secret";
    pub const CLUSTER: &str = "cluster";
    pub const DASHBOARD_LOG_GROUP: &str = "dashboard-log-group";
    pub const DASHBOARD_EXECUTION_ROLE: &str = "dashboard-execution-role";
    pub const DASHBOARD_TASK_ROLE: &str = "dashboard-task-role";
    pub const DASHBOARD_SECURITY_GROUP: &str = "dashboard-security-group";
    pub const DASHBOARD_TASK_DEFINITION: &str = "dashboard-task-definition";
    pub const DASHBOARD_SERVICE: &str = "dashboard-service";
    pub const BUDGET: &str = "budget";
    pub const IMAGE_REPOSITORY: &str = "image-repository";
    pub const DOMAIN_CERTIFICATE: &str = "domain-certificate";
}

/// The workspace's ECR repository (`agentbus image push` and the deploy agree on it).
/// The dashboard server's log group.
pub fn dashboard_log_group(ws: &Workspace) -> String {
    format!("/ecs/{}", ws.name("dashboard"))
}

pub fn image_repository_name(ws: &Workspace) -> String {
    ws.name("images")
}

/// The workspace's image repository, as the extra-small tier declares it; `running` are the
/// images the workspace runs (those of this repository are kept by its lifecycle).
pub fn image_repository(ws: &Workspace, running: &[&str]) -> EcrRepository {
    let name = image_repository_name(ws);
    let running_tags = running
        .iter()
        .filter_map(|image| {
            let (account, region, repo) = crate::components::ecr::ecr_image(image)?;
            if account != ws.account || region != ws.region || repo != name {
                return None;
            }
            // `repo:tag`; an image named by digest only has no tag to keep it by.
            let rest = image.split('@').next()?.rsplit_once('/')?.1;
            let tag = rest.split_once(':')?.1;
            (!tag.is_empty()).then(|| tag.to_string())
        })
        .collect();
    EcrRepository {
        meta: Meta::new(
            ids::IMAGE_REPOSITORY,
            Tier::ExtraSmall,
            name,
            ws.tags(Tier::ExtraSmall, "images"),
        ),
        keep_images: crate::components::ecr::KEEP_IMAGES,
        running_tags,
    }
}

/// The extra-small tier: KV table, event bus (with a delivering rule), the server secret,
/// and the dashboard service.
pub struct ExtraSmall {
    pub workspace: Workspace,
    pub config: ServerConfig,
    pub kv: Arc<DynamoTable>,
    pub bus: Arc<EventBus>,
    pub events_log: Arc<LogGroup>,
    pub events_log_policy: Arc<LogsResourcePolicy>,
    pub events_rule: Arc<EventRule>,
    pub secret: Arc<WorkspaceSecret>,
    pub cluster: Arc<Cluster>,
    pub dashboard_log: Arc<LogGroup>,
    pub execution_role: Arc<Role>,
    pub task_role: Arc<Role>,
    pub security_group: Arc<SecurityGroup>,
    pub task_definition: Arc<TaskDefinition>,
    pub service: Arc<Service>,
    pub budget: Arc<Budget>,
    pub image_repository: Arc<EcrRepository>,
    pub domain_certificate: Arc<DomainCertificate>,
    /// Problems that block a deploy (missing image, unsafe ingress ...).
    pub problems: Vec<Problem>,
}

/// The ARN of the ECR repository an image is in, in any account and region of the
/// workspace's partition (the execution role must be allowed to pull from exactly that one).
pub fn ecr_repository_arn(ws: &Workspace, image: &str) -> Option<String> {
    let (account, region, repo) = crate::components::ecr::ecr_image(image)?;
    Some(format!(
        "arn:{}:ecr:{region}:{account}:repository/{repo}",
        ws.partition
    ))
}

impl ExtraSmall {
    /// The tier's resources, with the dashboard as the active layers shape it.
    pub fn new(ws: &Workspace, settings: &XsSettings, dashboard: &DashboardSpec) -> Self {
        let t = Tier::ExtraSmall;
        let prod = ws.env.is_prod();
        let mut config = ServerConfig::for_workspace(ws, dashboard.tier);
        // Nothing in front terminates TLS: the server speaks it itself, with the workspace
        // certificate, so no token crosses a network in clear text.
        config.tls = dashboard.front().is_none();
        // Its own name only where it speaks TLS itself: a front has its own certificate.
        config.domain = settings
            .domain
            .clone()
            .filter(|_| config.tls)
            .map(|name| DomainConfig {
                name,
                acme_directory: settings.acme_directory.clone(),
                secret: ws.secret_name("domain-certificate"),
            });
        let mut problems = Vec::new();

        let kv = DynamoTable(TableSpec {
            meta: Meta::new(ids::KV_TABLE, t, config.kv_table.clone(), ws.tags(t, "kv")),
            hash_key: "pk",
            range_key: Some("sk"),
            gsis: Vec::new(),
            ttl_attribute: Some("expires_at"),
            deletion_protection: prod,
            usage: TableUsage::Kv,
        });

        let bus = EventBus {
            meta: Meta::new(
                ids::EVENT_BUS,
                t,
                config.event_bus.clone(),
                ws.tags(t, "events"),
            ),
        };
        let logs_prefix = ws.arn("logs", "log-group:");
        let events_log = LogGroup {
            meta: Meta::new(
                ids::EVENTS_LOG_GROUP,
                t,
                config.events_log_group.clone(),
                ws.tags(t, "events"),
            ),
            source: LogSource::Events,
            retention_days: 7,
            arn_prefix: logs_prefix.clone(),
            holds_data: false,
        };
        let rule_name = ws.name("all-events");
        let rule_arn = ws.arn(
            "events",
            &format!("rule/{}/{}", config.event_bus, rule_name),
        );
        let events_log_policy = LogsResourcePolicy {
            meta: Meta::new(
                ids::EVENTS_LOG_POLICY,
                t,
                ws.name("events-to-logs"),
                Vec::new(),
            ),
            log_group_arn: format!("{logs_prefix}{}", config.events_log_group),
            rule_arn: rule_arn.clone(),
        };
        let events_rule = EventRule {
            meta: Meta::new(ids::EVENTS_RULE, t, rule_name, ws.tags(t, "events")),
            bus_id: ids::EVENT_BUS,
            bus_name: config.event_bus.clone(),
            description: "Every agentbus event, into the workspace's event log".into(),
            pattern: json!({ "source": [PREFIX] }),
            target_id: ids::EVENTS_LOG_GROUP,
        };

        let secret = WorkspaceSecret {
            meta: Meta::new(
                ids::SERVER_SECRET,
                t,
                config.secret.clone(),
                ws.tags(t, "secret"),
            ),
            tenant_prefix: ws.secret_name("tenants/"),
            description: format!("agentbus {} server credentials", ws.env),
            recovery_window_days: prod.then_some(30),
            certificate: config.tls.then(|| ws.id()),
        };

        // An on-demand task as the base keeps prod up through Spot interruptions.
        let strategy = if prod {
            on_demand_base_then_spot()
        } else {
            spot_only()
        };
        let cluster = Cluster {
            meta: Meta::new(ids::CLUSTER, t, ws.id(), ws.tags(t, "dashboard")),
            default_strategy: strategy.clone(),
            container_insights: false,
        };
        let dashboard_log_name = dashboard_log_group(ws);
        let dashboard_log = LogGroup {
            meta: Meta::new(
                ids::DASHBOARD_LOG_GROUP,
                t,
                dashboard_log_name.clone(),
                ws.tags(t, "dashboard"),
            ),
            source: LogSource::Server,
            retention_days: 7,
            arn_prefix: logs_prefix.clone(),
            holds_data: false,
        };

        let image = settings.image.clone().unwrap_or_default();
        if image.is_empty() {
            problems.push(Problem::when_changing(
                ids::DASHBOARD_TASK_DEFINITION,
                "the dashboard service needs a container image: pass --image URI (an image of the agentbus server)",
            ));
        }
        let mut exec_statements = vec![statement(
            &["logs:CreateLogStream", "logs:PutLogEvents"],
            &[format!("{logs_prefix}{dashboard_log_name}:*")],
        )];
        if let Some(repo) = ecr_repository_arn(ws, &image) {
            exec_statements.push(statement(
                &[
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                &[repo],
            ));
            // GetAuthorizationToken has no resource-level scope in IAM.
            exec_statements.push(statement(
                &["ecr:GetAuthorizationToken"],
                &["*".to_string()],
            ));
        }
        let exec_name = ws.name("dashboard-execution");
        let execution_role = Role {
            meta: Meta::new(
                ids::DASHBOARD_EXECUTION_ROLE,
                t,
                exec_name.clone(),
                ws.tags(t, "dashboard"),
            ),
            service: "ecs-tasks.amazonaws.com",
            account: ws.account.clone(),
            policy_name: exec_name.clone(),
            policy: policy(exec_statements),
            arn: ws.iam_arn(&format!("role/{exec_name}")),
        };
        let kv_arn = ws.arn("dynamodb", &format!("table/{}", config.kv_table));
        let budget_arn = format!(
            "arn:{}:budgets::{}:budget/{}",
            ws.partition,
            ws.account,
            ws.id()
        );
        let task_name = ws.name("dashboard-task");
        let domain_statements = config
            .domain
            .as_ref()
            .map(|d| domain_statements(ws, d))
            .unwrap_or_default();
        let task_role = Role {
            meta: Meta::new(
                ids::DASHBOARD_TASK_ROLE,
                t,
                task_name.clone(),
                ws.tags(t, "dashboard"),
            ),
            service: "ecs-tasks.amazonaws.com",
            account: ws.account.clone(),
            policy_name: task_name.clone(),
            policy: policy(
                vec![
                    statement(
                        &[
                            "dynamodb:GetItem",
                            "dynamodb:PutItem",
                            "dynamodb:UpdateItem",
                            "dynamodb:DeleteItem",
                            "dynamodb:Query",
                            "dynamodb:ConditionCheckItem",
                            "dynamodb:DescribeTable",
                        ],
                        &[kv_arn.clone(), format!("{kv_arn}/index/*")],
                    ),
                    statement(
                        &["events:PutEvents"],
                        &[ws.arn("events", &format!("event-bus/{}", config.event_bus))],
                    ),
                    // The server only reads its own secret (tokens are written by the CLI);
                    // Secrets Manager appends six characters to a secret's name in its ARN.
                    statement(
                        &[
                            "secretsmanager:GetSecretValue",
                            "secretsmanager:DescribeSecret",
                        ],
                        &[ws.arn(
                            "secretsmanager",
                            &format!("secret:{}-??????", config.secret),
                        )],
                    ),
                    // Tenants' secrets: written, deleted, and restored when written again
                    // during a recovery window.
                    statement(
                        &[
                            "secretsmanager:GetSecretValue",
                            "secretsmanager:PutSecretValue",
                            "secretsmanager:DescribeSecret",
                            "secretsmanager:CreateSecret",
                            "secretsmanager:DeleteSecret",
                            "secretsmanager:RestoreSecret",
                            "secretsmanager:TagResource",
                        ],
                        &[ws.arn(
                            "secretsmanager",
                            &format!("secret:{}*", ws.secret_name("tenants/")),
                        )],
                    ),
                    // ListSecrets has no resource-level scope in IAM; it returns metadata only.
                    statement(&["secretsmanager:ListSecrets"], &["*".to_string()]),
                    statement(
                        &["logs:FilterLogEvents", "logs:GetLogEvents"],
                        &[format!("{logs_prefix}{}:*", config.events_log_group)],
                    ),
                    // The console's Workspace panel: the deploy table's apply records
                    // (nothing else of it) and the budget's spend.
                    statement_when(
                        &["dynamodb:Query"],
                        &[ws.arn(
                            "dynamodb",
                            &format!("table/{}", crate::engine::lock::deploy_table_name(ws)),
                        )],
                        json!({ "ForAllValues:StringEquals": { "dynamodb:LeadingKeys": ["apply"] } }),
                    ),
                    statement(&["budgets:ViewBudget"], std::slice::from_ref(&budget_arn)),
                ]
                .into_iter()
                .chain(domain_statements)
                .chain(dashboard.task_statements.iter().cloned())
                .collect(),
            ),
            arn: ws.iam_arn(&format!("role/{task_name}")),
        };

        // Behind a front the dashboard itself is not exposed.
        let front = dashboard.front();
        if prod
            && front.is_none()
            && settings
                .allow_cidrs
                .iter()
                .any(|c| c == "0.0.0.0/0" || c == "::/0")
        {
            problems.push(Problem::new(
                "prod refuses --allow-cidr 0.0.0.0/0: name the networks that may reach the dashboard (or put it behind a higher tier's front)",
            ));
        }
        for c in &settings.allow_cidrs {
            if !valid_cidr(c) {
                problems.push(Problem::new(format!(
                    "--allow-cidr {c:?} is not a CIDR block (e.g. 203.0.113.7/32)"
                )));
            }
        }
        let security_group = SecurityGroup {
            meta: Meta::new(
                ids::DASHBOARD_SECURITY_GROUP,
                t,
                ws.name("dashboard"),
                ws.tags(t, "dashboard"),
            ),
            description: format!(
                "agentbus {} dashboard: port {DASHBOARD_PORT} from allowed CIDRs",
                ws.env
            ),
            vpc_id: settings.network.vpc_id.clone(),
            rules: match front {
                Some(f) => vec![Ingress {
                    port: DASHBOARD_PORT,
                    source: Source::Group(f.security_group_id),
                }],
                None => Ingress::from_cidrs(&[DASHBOARD_PORT], &settings.allow_cidrs),
            }
            .into_iter()
            .chain(dashboard.ingress.iter().cloned())
            .collect(),
            outbound_only: None,
            holds_data: false,
        };

        if let Err(e) = validate_fargate_size(settings.cpu, settings.memory) {
            problems.push(Problem::new(e));
        }
        let task_definition = TaskDefinition {
            meta: Meta::new(
                ids::DASHBOARD_TASK_DEFINITION,
                t,
                ws.name("dashboard"),
                ws.tags(t, "dashboard"),
            ),
            cpu: settings.cpu,
            memory: settings.memory,
            container: ContainerSpec {
                name: "dashboard".into(),
                image,
                port: Some(DASHBOARD_PORT),
                env: config
                    .to_env()
                    .into_iter()
                    .chain(dashboard.env.iter().cloned())
                    .collect(),
                health_command: Some(vec![
                    IMAGE_BINARY_PATH.to_string(),
                    "healthcheck".to_string(),
                ]),
                log_group: dashboard_log_name,
                region: ws.region.clone(),
                stop_timeout: 30,
            },
            execution_role_id: ids::DASHBOARD_EXECUTION_ROLE,
            task_role_id: ids::DASHBOARD_TASK_ROLE,
            log_group_id: ids::DASHBOARD_LOG_GROUP,
            reads_at_start: std::iter::once(ids::SERVER_SECRET)
                .chain(config.domain.as_ref().map(|_| ids::DOMAIN_CERTIFICATE))
                .collect(),
            cpu_architecture: settings.architecture,
            wanted: true,
        };
        let service = Service {
            meta: Meta::new(
                ids::DASHBOARD_SERVICE,
                t,
                ws.name("dashboard"),
                ws.tags(t, "dashboard"),
            ),
            cluster_id: ids::CLUSTER,
            cluster_name: ws.id(),
            task_definition_id: ids::DASHBOARD_TASK_DEFINITION,
            security_group_id: ids::DASHBOARD_SECURITY_GROUP,
            // Behind a front, tasks run only in the zones it spans: a target elsewhere is
            // never sent traffic.
            subnets: front
                .map(|f| f.subnets.clone())
                .unwrap_or_else(|| settings.network.subnet_ids.clone()),
            public_ip: true,
            count: match dashboard.scaling() {
                Some(s) => TaskCount::Scaled {
                    min: s.min as i32,
                    max: s.max as i32,
                },
                None => TaskCount::Fixed(1),
            },
            task_cpu: settings.cpu,
            task_memory: settings.memory,
            strategy,
            wait: settings.service_wait,
            target_group: front.map(|f| TargetGroupRegistration {
                target_group_id: f.target_group_id,
                attached_by_id: f.attached_by_id,
                container_name: task_definition.container.name.clone(),
                container_port: DASHBOARD_PORT,
            }),
        };

        if let Some(e) = &settings.alert_email
            && !valid_email(e)
        {
            problems.push(Problem::new(format!(
                "--alert-email {e:?} is not an email address"
            )));
        }
        if !(settings.budget_usd.is_finite() && settings.budget_usd > 0.0) {
            problems.push(Problem::new(format!(
                "--budget-usd {} must be a positive amount",
                settings.budget_usd
            )));
        }
        let budget = Budget {
            meta: Meta::new(ids::BUDGET, t, ws.id(), ws.tags(t, "budget")),
            arn: budget_arn,
            account: ws.account.clone(),
            limit_usd: settings.budget_usd,
            email: settings.alert_email.clone(),
            workspace: ws.id(),
        };
        let image_repository =
            image_repository(ws, &[settings.image.as_deref().unwrap_or_default()]);
        let domain_certificate = DomainCertificate {
            meta: Meta::new(
                ids::DOMAIN_CERTIFICATE,
                t,
                ws.secret_name("domain-certificate"),
                ws.tags(t, "dashboard"),
            ),
            domain: config.domain.as_ref().map(|d| d.name.clone()),
        };

        ExtraSmall {
            workspace: ws.clone(),
            config,
            kv: Arc::new(kv),
            bus: Arc::new(bus),
            events_log: Arc::new(events_log),
            events_log_policy: Arc::new(events_log_policy),
            events_rule: Arc::new(events_rule),
            secret: Arc::new(secret),
            cluster: Arc::new(cluster),
            dashboard_log: Arc::new(dashboard_log),
            execution_role: Arc::new(execution_role),
            task_role: Arc::new(task_role),
            security_group: Arc::new(security_group),
            task_definition: Arc::new(task_definition),
            service: Arc::new(service),
            budget: Arc::new(budget),
            image_repository: Arc::new(image_repository),
            domain_certificate: Arc::new(domain_certificate),
            problems,
        }
    }

    /// Every resource of the tier, in the order a plan lists them.
    pub fn resources(&self) -> Vec<Arc<dyn Resource>> {
        vec![
            self.kv.clone(),
            self.bus.clone(),
            self.events_log.clone(),
            self.events_log_policy.clone(),
            self.events_rule.clone(),
            self.secret.clone(),
            self.cluster.clone(),
            self.dashboard_log.clone(),
            self.execution_role.clone(),
            self.task_role.clone(),
            self.security_group.clone(),
            self.task_definition.clone(),
            self.service.clone(),
            self.budget.clone(),
            self.image_repository.clone(),
            self.domain_certificate.clone(),
        ]
    }
}

/// What the task role needs to keep `domain` (`server::domain`): its certificate secret, and
/// in Route 53 exactly the name's A record and its ACME challenge's TXT record, in whichever
/// hosted zone holds them; its own network interface, for its public address.
fn domain_statements(ws: &Workspace, domain: &DomainConfig) -> Vec<serde_json::Value> {
    vec![
        statement(
            &[
                "secretsmanager:GetSecretValue",
                "secretsmanager:PutSecretValue",
            ],
            &[ws.arn(
                "secretsmanager",
                &format!("secret:{}-??????", domain.secret),
            )],
        ),
        statement_when(
            &["route53:ChangeResourceRecordSets"],
            &[format!("arn:{}:route53:::hostedzone/*", ws.partition)],
            json!({ "ForAllValues:StringEquals": {
                "route53:ChangeResourceRecordSetsNormalizedRecordNames":
                    crate::server::domain::record_names(&domain.name),
                "route53:ChangeResourceRecordSetsRecordTypes": ["A", "TXT"],
                "route53:ChangeResourceRecordSetsActions": ["UPSERT", "DELETE"],
            }}),
        ),
        statement(
            &["route53:GetChange"],
            &[format!("arn:{}:route53:::change/*", ws.partition)],
        ),
        // Neither takes a resource in IAM; both return names and addresses only.
        statement(
            &[
                "route53:ListHostedZonesByName",
                "ec2:DescribeNetworkInterfaces",
            ],
            &["*".to_string()],
        ),
    ]
}

/// A plausible email address: one `@`, a dot in the domain, no spaces or control characters.
pub fn valid_email(s: &str) -> bool {
    let Some((user, domain)) = s.split_once('@') else {
        return false;
    };
    !user.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && s.len() <= 254
        && s.chars().all(|c| c.is_ascii_graphic())
}

/// `a.b.c.d/n` or an IPv6 prefix.
pub fn valid_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    if let Ok(a) = addr.parse::<std::net::Ipv4Addr>() {
        let _ = a;
        len <= 32
    } else if addr.parse::<std::net::Ipv6Addr>().is_ok() {
        len <= 128
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Outputs;
    use crate::workspace::Env;
    use serde_json::Value;

    /// The dashboard as the extra-small tier alone shapes it.
    fn alone() -> DashboardSpec {
        DashboardSpec::new(Tier::ExtraSmall)
    }

    fn ws(env: &str) -> Workspace {
        Workspace::new(Env::new(env).unwrap(), "123456789012", "us-east-1")
    }

    fn settings() -> XsSettings {
        let mut s = XsSettings::new(Network {
            vpc_id: "vpc-1".into(),
            subnet_ids: vec!["subnet-1".into()],
            zones: Default::default(),
        });
        s.image = Some("example/agentbus:1".into());
        s
    }

    #[test]
    fn names_and_tags_follow_the_workspace() {
        let xs = ExtraSmall::new(&ws("dev"), &settings(), &alone());
        let names: Vec<String> = xs.resources().iter().map(|r| r.name()).collect();
        assert!(names.contains(&"agentbus-dev-kv".to_string()));
        assert!(names.contains(&"agentbus-dev".to_string()));
        assert!(names.contains(&"agentbus/dev/server".to_string()));
        assert!(names.contains(&"/ecs/agentbus-dev-dashboard".to_string()));
        assert!(xs.problems.is_empty(), "{:?}", xs.problems);
        for r in xs.resources() {
            assert_eq!(r.tier(), Tier::ExtraSmall);
        }
        let d = crate::engine::desired_of(xs.kv.as_ref(), &Outputs::new());
        assert_eq!(d.get("tags").unwrap()["agentbus:component"], "kv");
        assert!(xs.kv.data_bearing());
    }

    #[test]
    fn problems_block_unsafe_or_incomplete_deploys() {
        let mut s = settings();
        s.image = None;
        s.allow_cidrs = vec!["0.0.0.0/0".into(), "nonsense".into()];
        let xs = ExtraSmall::new(&ws("prod"), &s, &alone());
        assert!(xs.problems.iter().any(|p| p.message.contains("--image")));
        assert!(
            xs.problems
                .iter()
                .any(|p| p.message.contains("prod refuses"))
        );
        assert!(xs.problems.iter().any(|p| p.message.contains("nonsense")));
        let dev = ExtraSmall::new(
            &ws("dev"),
            &XsSettings {
                allow_cidrs: vec!["0.0.0.0/0".into()],
                ..settings()
            },
            &alone(),
        );
        assert!(dev.problems.is_empty());
        s.cpu = 256;
        s.memory = 4096;
        assert!(
            ExtraSmall::new(&ws("dev"), &s, &alone())
                .problems
                .iter()
                .any(|p| p.message.contains("Fargate"))
        );
    }

    #[test]
    fn prod_protects_data_and_keeps_an_on_demand_base() {
        let xs = ExtraSmall::new(&ws("prod"), &settings(), &alone());
        assert!(xs.kv.protected().is_some());
        assert_eq!(xs.secret.recovery_window_days, Some(30));
        assert!(
            xs.service
                .strategy
                .iter()
                .any(|c| c.provider == "FARGATE" && c.base == 1)
        );
        let dev = ExtraSmall::new(&ws("dev"), &settings(), &alone());
        assert!(dev.kv.protected().is_none());
        assert_eq!(dev.secret.recovery_window_days, None);
    }

    #[test]
    fn the_server_reads_only_the_apply_records_of_the_deploy_table_and_only_views_the_budget() {
        let xs = ExtraSmall::new(&ws("dev"), &settings(), &alone());
        let statements = xs.task_role.policy["Statement"].as_array().unwrap().clone();
        let of = |resource: &str| -> Vec<Value> {
            statements
                .iter()
                .filter(|st| st["Resource"].to_string().contains(resource))
                .cloned()
                .collect()
        };
        assert_eq!(
            of("table/agentbus-dev-deploy"),
            [json!({
                "Effect": "Allow",
                "Action": ["dynamodb:Query"],
                "Resource": ["arn:aws:dynamodb:us-east-1:123456789012:table/agentbus-dev-deploy"],
                "Condition": { "ForAllValues:StringEquals": { "dynamodb:LeadingKeys": ["apply"] } },
            })]
        );
        assert_eq!(
            of(":budget/"),
            [json!({
                "Effect": "Allow",
                "Action": ["budgets:ViewBudget"],
                "Resource": ["arn:aws:budgets::123456789012:budget/agentbus-dev"],
            })]
        );
        // The same ARN the budget resource has.
        assert_eq!(
            xs.budget.arn,
            "arn:aws:budgets::123456789012:budget/agentbus-dev"
        );
    }

    #[test]
    fn policies_are_scoped_to_workspace_resources() {
        let xs = ExtraSmall::new(&ws("dev"), &settings(), &alone());
        let p = xs.task_role.policy.to_string();
        assert!(p.contains("arn:aws:dynamodb:us-east-1:123456789012:table/agentbus-dev-kv"));
        assert!(p.contains("event-bus/agentbus-dev"));
        // Only the one action that IAM cannot scope is on "*".
        for st in xs.task_role.policy["Statement"].as_array().unwrap() {
            if st["Resource"].to_string().contains("\"*\"") {
                assert_eq!(st["Action"], json!(["secretsmanager:ListSecrets"]));
            }
        }
        // The server reads its own secret and nothing more; tenants' secrets it manages.
        let server = json!([
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:agentbus/dev/server-??????"
        ]);
        for st in xs.task_role.policy["Statement"].as_array().unwrap() {
            if st["Resource"] == server {
                assert_eq!(
                    st["Action"],
                    json!([
                        "secretsmanager:GetSecretValue",
                        "secretsmanager:DescribeSecret"
                    ])
                );
            }
        }
        assert!(p.contains("secretsmanager:RestoreSecret"));
        assert!(p.contains("secret:agentbus/dev/tenants/*"));
        let mut s = settings();
        s.image =
            Some("123456789012.dkr.ecr.us-east-1.amazonaws.com/agentbus-dev@sha256:ab".into());
        let xs = ExtraSmall::new(&ws("dev"), &s, &alone());
        assert!(
            xs.execution_role
                .policy
                .to_string()
                .contains("repository/agentbus-dev")
        );
        // An image in another account's or region's repository: the role may pull from that one.
        s.image = Some("210987654321.dkr.ecr.eu-west-1.amazonaws.com/shared/agentbus:1.2".into());
        let xs = ExtraSmall::new(&ws("dev"), &s, &alone());
        assert!(
            xs.execution_role
                .policy
                .to_string()
                .contains("arn:aws:ecr:eu-west-1:210987654321:repository/shared/agentbus"),
            "{}",
            xs.execution_role.policy
        );
        // In China the partition is aws-cn, and so are the ARNs.
        let cn = Workspace::new(Env::new("dev").unwrap(), "123456789012", "cn-north-1");
        s.image = Some("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/agentbus-dev:1".into());
        let xs = ExtraSmall::new(&cn, &s, &alone());
        assert!(
            xs.execution_role
                .policy
                .to_string()
                .contains("arn:aws-cn:ecr:cn-north-1:123456789012:repository/agentbus-dev")
        );
    }

    #[test]
    fn only_the_rule_may_put_events_but_eventbridge_may_create_its_streams() {
        let xs = ExtraSmall::new(&ws("dev"), &settings(), &alone());
        let doc = xs.events_log_policy.document();
        let st = doc["Statement"].as_array().unwrap();
        let create = st
            .iter()
            .find(|s| s["Action"] == json!(["logs:CreateLogStream"]))
            .unwrap();
        assert!(create.get("Condition").is_none(), "{create}");
        let put = st
            .iter()
            .find(|s| s["Action"] == json!(["logs:PutLogEvents"]))
            .unwrap();
        assert_eq!(
            put["Condition"]["ArnEquals"]["aws:SourceArn"],
            "arn:aws:events:us-east-1:123456789012:rule/agentbus-dev/agentbus-dev-all-events"
        );
    }

    #[test]
    fn cidrs() {
        assert!(valid_cidr("203.0.113.7/32"));
        assert!(valid_cidr("::/0"));
        assert!(!valid_cidr("203.0.113.7"));
        assert!(!valid_cidr("1.2.3.4/33"));
    }
}

#[cfg(test)]
mod cost_tests {
    //! Each pricing rule of the extra-small tier, against arithmetic done by hand with the
    //! us-east-1 prices of `prices/aws.json` and the `idle` profile.
    use super::*;
    use crate::cost::{CostContext, HOURS_PER_MONTH};
    use crate::workspace::Env;

    fn alone() -> DashboardSpec {
        DashboardSpec::new(Tier::ExtraSmall)
    }

    fn xs(env: &str) -> ExtraSmall {
        let ws = Workspace::new(Env::new(env).unwrap(), "123456789012", "us-east-1");
        let net = Network {
            vpc_id: "vpc-1".into(),
            subnet_ids: vec!["subnet-1".into()],
            zones: Default::default(),
        };
        ExtraSmall::new(&ws, &XsSettings::new(net), &alone())
    }

    fn cost_of(r: &dyn Resource, usage: &str) -> Vec<(String, f64)> {
        let usage = crate::ladder().usage_book().load(usage).unwrap();
        let ctx = CostContext {
            region: "us-east-1",
            usage: &usage,
            hours: HOURS_PER_MONTH,
        };
        r.monthly_cost(&ctx)
            .unwrap()
            .into_iter()
            .map(|l| (l.item, l.monthly))
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn spot_dashboard_task_and_its_public_address() {
        let lines = cost_of(xs("dev").service.as_ref(), "idle");
        // 0.25 vCPU x 730 h x $0.01334053 = $2.434646725
        assert!(close(lines[0].1, 0.25 * 730.0 * 0.01334053), "{lines:?}");
        // 0.5 GB x 730 h x $0.00146489 = $0.53468485
        assert!(close(lines[1].1, 0.5 * 730.0 * 0.00146489));
        // one public IPv4 address x 730 h x $0.005 = $3.65
        assert!(close(lines[2].1, 3.65));
        // 0.1 GB out is inside the free 100 GB: no transfer line.
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn prod_runs_its_base_task_on_demand() {
        let lines = cost_of(xs("prod").service.as_ref(), "idle");
        // 0.25 x 730 x $0.04048 = $7.3876 ; 0.5 x 730 x $0.004445 = $1.622425
        assert!(close(lines[0].1, 7.3876), "{lines:?}");
        assert!(close(lines[1].1, 1.622425));
        assert!(lines[0].0.starts_with("Fargate vCPU"));
    }

    #[test]
    fn kv_table_requests_storage_and_backups() {
        let lines = cost_of(xs("dev").kv.as_ref(), "light");
        // light: 100,000 writes = 0.1 M x $0.625 ; 500,000 reads = 0.5 M x $0.125
        assert!(close(lines[0].1, 0.1 * 0.625));
        assert!(close(lines[1].1, 0.5 * 0.125));
        // 0.5 GB x $0.25 storage ; 0.5 GB x $0.20 point-in-time recovery
        assert!(close(lines[2].1, 0.125));
        assert!(close(lines[3].1, 0.1));
    }

    #[test]
    fn secret_bus_and_logs() {
        let x = xs("dev");
        let secret = cost_of(x.secret.as_ref(), "idle");
        // $0.40 a secret + 1,000 calls = 0.1 x $0.05 per 10k
        assert!(close(secret[0].1, 0.40) && close(secret[1].1, 0.005));
        let bus = cost_of(x.bus.as_ref(), "team");
        // 2,000,000 events = 2 M x $1.00
        assert!(close(bus[0].1, 2.0));
        let logs = cost_of(x.dashboard_log.as_ref(), "team");
        // 5 GB ingested x $0.50 ; 5 GB x 7/30 kept x $0.03
        assert!(close(logs[0].1, 2.5));
        assert!(close(logs[1].1, 5.0 * 7.0 / 30.0 * 0.03));
        let events = cost_of(x.events_log.as_ref(), "team");
        // 2,000,000 events x 1 KB = 1.9073486 GB x $0.50
        assert!(close(events[0].1, 2_000_000.0 / 1_048_576.0 * 0.5));
    }

    #[test]
    fn the_idle_tier_total_is_under_the_seed_target() {
        let x = xs("dev");
        let ladder = crate::ladder();
        let r = ladder
            .cost_report(
                Tier::ExtraSmall,
                "us-east-1",
                &ladder.usage_book().load("idle").unwrap(),
                &x.resources(),
            )
            .unwrap();
        // 2.434646725 + 0.53468485 + 3.65 (task, address) + 0.405 (secret)
        // + 0.00125 + 0.00125 + 0.0025 + 0.002 (kv) + 0.001 (events)
        // + 0.000476837 + 0.00000668 (event log) + 0.025 + 0.00035 (server log)
        // + 10 images x 15 MB / 1024 = 0.146484375 GB x $0.10 (image repository) = 7.07281352
        assert!((r.total - 7.072814).abs() < 1e-5, "{}", r.render());
        assert!(r.total < r.target_high);
        let by = r.by_resource();
        assert!(by.contains_key("dashboard-service") && by.contains_key("server-secret"));
        assert!(!by.contains_key("budget"));
        assert!(by.contains_key("image-repository"));
    }

    #[test]
    fn the_image_repository_is_immutable_scanned_and_kept_as_data() {
        let x = xs("dev");
        let r = &x.image_repository;
        assert_eq!(r.meta.name, "agentbus-dev-images");
        assert!(r.data_bearing());
        let d = r.desired(&Default::default());
        assert_eq!(
            d.get("tag_mutability"),
            Some(&serde_json::json!("IMMUTABLE"))
        );
        assert_eq!(d.get("scan_on_push"), Some(&serde_json::json!(true)));
        let rule = &r.lifecycle_policy()["rules"][0];
        assert_eq!(rule["selection"]["countNumber"], 10);
        assert_eq!(rule["selection"]["countType"], "imageCountMoreThan");
        assert_eq!(rule["action"]["type"], "expire");
    }

    #[test]
    fn the_image_the_workspace_runs_is_never_expired_by_the_lifecycle() {
        let ws = Workspace::new(Env::new("dev").unwrap(), "123456789012", "us-east-1");
        let running = "123456789012.dkr.ecr.us-east-1.amazonaws.com/agentbus-dev-images:v7-abc";
        let r = image_repository(
            &ws,
            &[
                running,
                // Another repository's, and one named by digest only: nothing to keep by tag.
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/other:v1",
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/agentbus-dev-images@sha256:00",
            ],
        );
        assert_eq!(r.running_tags, vec!["v7-abc"]);
        let rules = r.lifecycle_policy()["rules"].as_array().unwrap().clone();
        assert_eq!(rules.len(), 2);
        // Its own rule first (count 1 keeps it), the count of the rest last, as ECR wants
        // the `any` rule.
        assert_eq!(rules[0]["rulePriority"], 1);
        assert_eq!(rules[0]["selection"]["tagStatus"], "tagged");
        assert_eq!(
            rules[0]["selection"]["tagPatternList"],
            serde_json::json!(["v7-abc"])
        );
        assert_eq!(rules[0]["selection"]["countNumber"], 1);
        assert_eq!(rules[1]["rulePriority"], 2);
        assert_eq!(rules[1]["selection"]["tagStatus"], "any");
    }
}
