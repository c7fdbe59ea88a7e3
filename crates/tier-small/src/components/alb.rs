//! The application load balancer in front of the dashboard: the load balancer itself, the
//! target group the dashboard service registers in (type `ip`, the dashboard port, health
//! check `/health`), and its listeners (80, and 443 when a certificate is given, with 80 then
//! redirecting to 443).

use crate::aws::SmallAws;
use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::operation::delete_listener::DeleteListenerError;
use aws_sdk_elasticloadbalancingv2::operation::delete_load_balancer::DeleteLoadBalancerError;
use aws_sdk_elasticloadbalancingv2::operation::delete_target_group::DeleteTargetGroupError;
use aws_sdk_elasticloadbalancingv2::operation::describe_load_balancers::DescribeLoadBalancersError;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_groups::DescribeTargetGroupsError;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Certificate, IpAddressType, LoadBalancerAttribute,
    LoadBalancerSchemeEnum, LoadBalancerStateEnum, LoadBalancerTypeEnum, Matcher, ProtocolEnum,
    RedirectActionConfig, RedirectActionStatusCodeEnum, Tag, TargetGroupAttribute, TargetTypeEnum,
};
use serde_json::{Value, json};
use tier_xs::aws::AwsClients;
use tier_xs::cost::{CostContext, CostError, CostLine};
use tier_xs::engine::pair;
use tier_xs::engine::permissions::{Permissions, any};
use tier_xs::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, TagApi, codes, found, gone,
    output_or_unknown, require_output, unmodeled, wait_until,
};
use tier_xs::tag_api;
use tier_xs::workspace::Workspace;

/// The TLS policy of the HTTPS listener: TLS 1.3 and 1.2 only.
pub const SSL_POLICY: &str = "ELBSecurityPolicy-TLS13-1-2-2021-06";
pub const HEALTH_PATH: &str = "/health";

fn elb_tags(tags: &[(String, String)]) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

tag_api! {
    /// Elastic Load Balancing's tags, by the resource's `arn` output.
    pub struct ElbTags;
    read(aws, meta, o): "DescribeTags" => aws.elb().describe_tags().resource_arns(o.out("arn")),
        |out| out.tag_descriptions().iter().flat_map(|d| d.tags()).map(|t| pair(t.key(), t.value())).collect();
    tag(aws, meta, o, tags): "AddTags" => aws.elb().add_tags().resource_arns(o.out("arn"))
        .set_tags(Some(elb_tags(tags)));
    untag(aws, meta, o, keys): "RemoveTags" => aws.elb().remove_tags().resource_arns(o.out("arn"))
        .set_tag_keys(Some(keys.to_vec()));
}

/// A load balancer by name, if it exists (a failure is reported as `meta`'s).
async fn find_load_balancer(
    aws: &AwsClients,
    meta: &Meta,
    name: &str,
) -> Result<Option<aws_sdk_elasticloadbalancingv2::types::LoadBalancer>, EngineError> {
    let out = found(
        aws.elb().describe_load_balancers().names(name).send().await,
        DescribeLoadBalancersError::is_load_balancer_not_found_exception,
        meta,
        "DescribeLoadBalancers",
    )?;
    Ok(out.and_then(|o| o.load_balancers().first().cloned()))
}

/// The ARN of a load balancer found by name, if it exists.
async fn load_balancer_arn(
    aws: &AwsClients,
    meta: &Meta,
    name: &str,
) -> Result<Option<String>, EngineError> {
    Ok(find_load_balancer(aws, meta, name)
        .await?
        .and_then(|l| l.load_balancer_arn().map(str::to_string)))
}

/// The load balancer's attributes agentbus sets: requests with header names that are not
/// valid HTTP are dropped at the balancer, not passed to the server (AWS's default passes
/// them on).
pub const LOAD_BALANCER_ATTRIBUTES: [(&str, &str); 1] =
    [("routing.http.drop_invalid_header_fields.enabled", "true")];

/// The target group's attributes agentbus sets: a deregistered task drains for 30 s, not
/// AWS's default 300 (MCP calls are short; a rolling deploy would otherwise wait 5 minutes).
pub const TARGET_GROUP_ATTRIBUTES: [(&str, &str); 1] =
    [("deregistration_delay.timeout_seconds", "30")];

fn attributes_value(wanted: &[(&str, &str)]) -> Value {
    json!(
        wanted
            .iter()
            .copied()
            .collect::<std::collections::BTreeMap<_, _>>()
    )
}

/// The observed values of the attributes agentbus sets (others are left alone).
fn observed_attributes<'a>(
    wanted: &[(&str, &str)],
    all: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
) -> Value {
    let all: std::collections::BTreeMap<&str, &str> = all
        .filter_map(|(k, v)| Some((k?, v.unwrap_or_default())))
        .collect();
    json!(
        wanted
            .iter()
            .map(|(k, _)| (*k, all.get(k).copied().unwrap_or_default()))
            .collect::<std::collections::BTreeMap<_, _>>()
    )
}

// ---------------------------------------------------------------------------------------

pub struct LoadBalancer {
    pub meta: Meta,
    pub subnets: Vec<String>,
    /// Logical id of its security group (its `id` output).
    pub security_group_id: &'static str,
    /// It serves HTTPS (a certificate was given): its address is `https://`.
    pub https: bool,
}

impl LoadBalancer {
    fn sorted_subnets(&self) -> Vec<String> {
        let mut s = self.subnets.clone();
        s.sort();
        s
    }

    async fn set_attributes(&self, aws: &AwsClients, arn: &str) -> Result<(), EngineError> {
        aws.elb()
            .modify_load_balancer_attributes()
            .load_balancer_arn(arn)
            .set_attributes(Some(
                LOAD_BALANCER_ATTRIBUTES
                    .iter()
                    .map(|(k, v)| LoadBalancerAttribute::builder().key(*k).value(*v).build())
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| self.meta.fail("ModifyLoadBalancerAttributes", e))?;
        Ok(())
    }
}

#[async_trait]
impl Resource for LoadBalancer {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "load balancer"
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let lb = ws.arn(
            "elasticloadbalancing",
            &format!("loadbalancer/app/{}/*", self.meta.name),
        );
        Permissions::new()
            // Elastic Load Balancing's Describe actions have no resource-level permissions.
            .read(
                &[
                    "elasticloadbalancing:DescribeLoadBalancers",
                    "elasticloadbalancing:DescribeLoadBalancerAttributes",
                    "elasticloadbalancing:DescribeTags",
                ],
                &any(),
            )
            .write(
                &[
                    "elasticloadbalancing:CreateLoadBalancer",
                    "elasticloadbalancing:ModifyLoadBalancerAttributes",
                    "elasticloadbalancing:SetSecurityGroups",
                    "elasticloadbalancing:SetSubnets",
                    "elasticloadbalancing:DeleteLoadBalancer",
                    "elasticloadbalancing:AddTags",
                    "elasticloadbalancing:RemoveTags",
                ],
                &[lb],
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&ElbTags)
    }
    fn depends_on(&self) -> Vec<&'static str> {
        vec![self.security_group_id]
    }
    fn desired(&self, outputs: &Outputs) -> Desired {
        let sg = output_or_unknown(outputs, self.security_group_id, "id");
        Desired::new()
            .set_replace("scheme", "internet-facing")
            .set_replace("type", "application")
            .set("subnets", json!(self.sorted_subnets()))
            .set(
                "security_groups",
                if tier_xs::engine::is_unknown(&sg) {
                    sg
                } else {
                    json!([sg])
                },
            )
            .set("attributes", attributes_value(&LOAD_BALANCER_ATTRIBUTES))
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let m = &self.meta;
        let Some(lb) = find_load_balancer(aws, m, &m.name).await? else {
            return Ok(None);
        };
        let arn = lb.load_balancer_arn().unwrap_or_default().to_string();
        let mut subnets: Vec<String> = lb
            .availability_zones()
            .iter()
            .filter_map(|z| z.subnet_id().map(str::to_string))
            .collect();
        subnets.sort();
        let mut sgs = lb.security_groups().to_vec();
        sgs.sort();
        Ok(Some(
            Observed::default()
                .field(
                    "scheme",
                    lb.scheme()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                )
                .field(
                    "type",
                    lb.r#type()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                )
                .field("subnets", json!(subnets))
                .field("security_groups", json!(sgs))
                .output("arn", arn)
                .output("dns_name", lb.dns_name().unwrap_or_default()),
        ))
    }
    async fn observe_more(
        &self,
        aws: &AwsClients,
        found: &Observed,
    ) -> Result<Observed, EngineError> {
        let attrs = aws
            .elb()
            .describe_load_balancer_attributes()
            .load_balancer_arn(found.out("arn"))
            .send()
            .await
            .map_err(|e| self.meta.fail("DescribeLoadBalancerAttributes", e))?;
        let attributes = observed_attributes(
            &LOAD_BALANCER_ATTRIBUTES,
            attrs.attributes().iter().map(|a| (a.key(), a.value())),
        );
        Ok(Observed::default().field("attributes", attributes))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        let sg = require_output(outputs, &m.name, self.security_group_id, "id")?;
        let created = aws
            .elb()
            .create_load_balancer()
            .name(&m.name)
            .set_subnets(Some(self.sorted_subnets()))
            .security_groups(sg)
            .scheme(LoadBalancerSchemeEnum::InternetFacing)
            .r#type(LoadBalancerTypeEnum::Application)
            .ip_address_type(IpAddressType::Ipv4)
            .set_tags(Some(elb_tags(&m.tags)))
            .send()
            .await
            .map_err(|e| m.fail("CreateLoadBalancer", e))?;
        let arn = created
            .load_balancers()
            .first()
            .and_then(|l| l.load_balancer_arn())
            .unwrap_or_default()
            .to_string();
        self.set_attributes(aws, &arn).await?;
        // Wait until it serves (a few minutes on AWS).
        wait_until(
            &m.name,
            std::time::Duration::from_secs(600),
            std::time::Duration::from_secs(5),
            || async move {
                let state = find_load_balancer(aws, m, &m.name)
                    .await?
                    .and_then(|l| l.state().and_then(|s| s.code()).cloned());
                Ok(match state {
                    Some(LoadBalancerStateEnum::Active) => Ok(()),
                    Some(LoadBalancerStateEnum::Failed) => {
                        return Err(EngineError::Invalid(format!(
                            "{}: provisioning failed",
                            m.name
                        )));
                    }
                    other => Err(format!("state {other:?}")),
                })
            },
        )
        .await
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let (outputs, current, changed) = (c.outputs, c.current, c.fields);
        let arn = current.out("arn").to_string();
        for field in changed {
            match field.as_str() {
                "subnets" => {
                    aws.elb()
                        .set_subnets()
                        .load_balancer_arn(&arn)
                        .set_subnets(Some(self.sorted_subnets()))
                        .send()
                        .await
                        .map_err(|e| self.meta.fail("SetSubnets", e))?;
                }
                "security_groups" => {
                    let sg =
                        require_output(outputs, &self.meta.name, self.security_group_id, "id")?;
                    aws.elb()
                        .set_security_groups()
                        .load_balancer_arn(&arn)
                        .security_groups(sg)
                        .send()
                        .await
                        .map_err(|e| self.meta.fail("SetSecurityGroups", e))?;
                }
                "attributes" => self.set_attributes(aws, &arn).await?,
                _ => {}
            }
        }
        Ok(())
    }
    async fn delete(&self, aws: &AwsClients, current: &Observed) -> Result<(), EngineError> {
        let m = &self.meta;
        let arn = current.out("arn").to_string();
        let Some(_) = found(
            aws.elb()
                .delete_load_balancer()
                .load_balancer_arn(&arn)
                .send()
                .await,
            DeleteLoadBalancerError::is_load_balancer_not_found_exception,
            m,
            "DeleteLoadBalancer",
        )?
        else {
            return Ok(());
        };
        wait_until(
            &m.name,
            std::time::Duration::from_secs(600),
            std::time::Duration::from_secs(5),
            || async move {
                Ok(match load_balancer_arn(aws, m, &m.name).await? {
                    None => Ok(()),
                    Some(_) => Err("still deleting".to_string()),
                })
            },
        )
        .await
    }
    fn address(&self, observed: &Observed) -> Option<String> {
        let dns = observed.outputs.get("dns_name")?;
        Some(format!(
            "{}://{dns}/",
            if self.https { "https" } else { "http" }
        ))
    }
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let c = crate::cost::small_cost(ctx)?;
        let (p, u, h) = (c.prices, c.xs_usage, ctx.hours);
        // LCUs: the largest of new connections (25/s each), processed bytes (1 GB/h each);
        // requests are assumed to be ~2 KB each on top of what is sent out.
        let secs = h * 3600.0;
        let conns = u.requests / secs / 25.0;
        let gb_per_hour = (u.transfer_out_gb + u.requests * 2.0 / 1_048_576.0) / h;
        let lcu = conns.max(gb_per_hour);
        // One public IPv4 address per availability zone (subnet) it spans.
        let addresses = self.subnets.len().max(2) as f64;
        Ok(vec![
            CostLine::new(self.meta.id, "load balancer hours", h, "h", p.alb_hour),
            CostLine::new(
                self.meta.id,
                "capacity units (LCU)",
                lcu * h,
                "LCU-h",
                p.alb_lcu_hour,
            ),
            CostLine::new(
                self.meta.id,
                &format!("public IPv4 addresses ({addresses:.0}, one per zone)"),
                addresses * h,
                "address-h",
                c.xs_prices.public_ipv4_hour,
            ),
        ])
    }
}

// ---------------------------------------------------------------------------------------

pub struct TargetGroup {
    pub meta: Meta,
    pub vpc_id: String,
    pub port: u16,
}

impl TargetGroup {
    async fn set_attributes(&self, aws: &AwsClients, arn: &str) -> Result<(), EngineError> {
        aws.elb()
            .modify_target_group_attributes()
            .target_group_arn(arn)
            .set_attributes(Some(
                TARGET_GROUP_ATTRIBUTES
                    .iter()
                    .map(|(k, v)| TargetGroupAttribute::builder().key(*k).value(*v).build())
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| self.meta.fail("ModifyTargetGroupAttributes", e))?;
        Ok(())
    }

    fn health_value() -> Value {
        json!({
            "path": HEALTH_PATH, "port": "traffic-port", "matcher": "200",
            "interval_s": 30, "timeout_s": 5, "healthy": 2, "unhealthy": 2,
        })
    }
}

#[async_trait]
impl Resource for TargetGroup {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "target group"
    }
    /// DeleteTargetGroup answers ResourceInUse while a listener forwards to it.
    fn delete_refused_while_used(&self) -> bool {
        true
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let tg = ws.arn(
            "elasticloadbalancing",
            &format!("targetgroup/{}/*", self.meta.name),
        );
        Permissions::new()
            .read(
                &[
                    "elasticloadbalancing:DescribeTargetGroups",
                    "elasticloadbalancing:DescribeTargetGroupAttributes",
                    "elasticloadbalancing:DescribeTags",
                ],
                &any(),
            )
            .write(
                &[
                    "elasticloadbalancing:CreateTargetGroup",
                    "elasticloadbalancing:ModifyTargetGroup",
                    "elasticloadbalancing:ModifyTargetGroupAttributes",
                    "elasticloadbalancing:DeleteTargetGroup",
                    "elasticloadbalancing:AddTags",
                    "elasticloadbalancing:RemoveTags",
                ],
                &[tg],
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&ElbTags)
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new()
            .set_replace("protocol", format!("HTTP:{}", self.port))
            .set_replace("target_type", "ip")
            .set_replace("vpc", self.vpc_id.clone())
            .set("health_check", Self::health_value())
            .set("attributes", attributes_value(&TARGET_GROUP_ATTRIBUTES))
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let m = &self.meta;
        let Some(out) = found(
            aws.elb()
                .describe_target_groups()
                .names(&m.name)
                .send()
                .await,
            DescribeTargetGroupsError::is_target_group_not_found_exception,
            m,
            "DescribeTargetGroups",
        )?
        else {
            return Ok(None);
        };
        let Some(tg) = out.target_groups().first() else {
            return Ok(None);
        };
        let arn = tg.target_group_arn().unwrap_or_default().to_string();
        Ok(Some(
            Observed::default()
                .field(
                    "protocol",
                    format!(
                        "{}:{}",
                        tg.protocol().map(|p| p.as_str()).unwrap_or(""),
                        tg.port().unwrap_or_default()
                    ),
                )
                .field(
                    "target_type",
                    tg.target_type()
                        .map(|t| t.as_str().to_string())
                        .unwrap_or_default(),
                )
                .field("vpc", tg.vpc_id().unwrap_or_default())
                .field(
                    "health_check",
                    json!({
                        "path": tg.health_check_path().unwrap_or_default(),
                        "port": tg.health_check_port().unwrap_or_default(),
                        "matcher": tg.matcher().and_then(|m| m.http_code()).unwrap_or_default(),
                        "interval_s": tg.health_check_interval_seconds().unwrap_or_default(),
                        "timeout_s": tg.health_check_timeout_seconds().unwrap_or_default(),
                        "healthy": tg.healthy_threshold_count().unwrap_or_default(),
                        "unhealthy": tg.unhealthy_threshold_count().unwrap_or_default(),
                    }),
                )
                .output("arn", arn),
        ))
    }
    async fn observe_more(
        &self,
        aws: &AwsClients,
        found: &Observed,
    ) -> Result<Observed, EngineError> {
        let attrs = aws
            .elb()
            .describe_target_group_attributes()
            .target_group_arn(found.out("arn"))
            .send()
            .await
            .map_err(|e| self.meta.fail("DescribeTargetGroupAttributes", e))?;
        let attributes = observed_attributes(
            &TARGET_GROUP_ATTRIBUTES,
            attrs.attributes().iter().map(|a| (a.key(), a.value())),
        );
        Ok(Observed::default().field("attributes", attributes))
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        let created = aws
            .elb()
            .create_target_group()
            .name(&m.name)
            .protocol(ProtocolEnum::Http)
            .port(i32::from(self.port))
            .vpc_id(&self.vpc_id)
            .target_type(TargetTypeEnum::Ip)
            .health_check_protocol(ProtocolEnum::Http)
            .health_check_path(HEALTH_PATH)
            .health_check_port("traffic-port")
            .health_check_interval_seconds(30)
            .health_check_timeout_seconds(5)
            .healthy_threshold_count(2)
            .unhealthy_threshold_count(2)
            .matcher(Matcher::builder().http_code("200").build())
            .set_tags(Some(elb_tags(&m.tags)))
            .send()
            .await
            .map_err(|e| m.fail("CreateTargetGroup", e))?;
        let arn = created
            .target_groups()
            .first()
            .and_then(|t| t.target_group_arn())
            .unwrap_or_default()
            .to_string();
        self.set_attributes(aws, &arn).await
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let (current, changed) = (c.current, c.fields);
        let arn = current.out("arn").to_string();
        if changed.iter().any(|c| c == "health_check") {
            aws.elb()
                .modify_target_group()
                .target_group_arn(&arn)
                .health_check_protocol(ProtocolEnum::Http)
                .health_check_path(HEALTH_PATH)
                .health_check_port("traffic-port")
                .health_check_interval_seconds(30)
                .health_check_timeout_seconds(5)
                .healthy_threshold_count(2)
                .unhealthy_threshold_count(2)
                .matcher(Matcher::builder().http_code("200").build())
                .send()
                .await
                .map_err(|e| self.meta.fail("ModifyTargetGroup", e))?;
        }
        if changed.iter().any(|c| c == "attributes") {
            self.set_attributes(aws, &arn).await?;
        }
        Ok(())
    }
    async fn delete(&self, aws: &AwsClients, current: &Observed) -> Result<(), EngineError> {
        let arn = current.out("arn").to_string();
        gone(
            aws.elb()
                .delete_target_group()
                .target_group_arn(&arn)
                .send()
                .await,
            unmodeled::<DeleteTargetGroupError>(codes::TARGET_GROUP_NOT_FOUND),
            &self.meta,
            "DeleteTargetGroup",
        )
    }
}

// ---------------------------------------------------------------------------------------

/// What a listener does with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenerMode {
    /// Plain HTTP, forwarded to the target group.
    HttpForward,
    /// Plain HTTP, answered with a 301 to HTTPS on 443.
    HttpRedirect,
    /// HTTPS with this certificate, forwarded to the target group.
    Https { certificate_arn: String },
}

/// Its `meta.name` is `{load balancer name}:{port}`; a listener has no tags.
pub struct Listener {
    pub meta: Meta,
    /// The load balancer's name (a listener is found through it).
    pub load_balancer_name: String,
    pub load_balancer_id: &'static str,
    pub target_group_id: &'static str,
    pub port: u16,
    /// `None`: not wanted (the HTTPS listener without a certificate).
    pub mode: Option<ListenerMode>,
}

impl Listener {
    fn action(&self, outputs: &Outputs) -> Value {
        match &self.mode {
            Some(ListenerMode::HttpRedirect) => json!("redirect to HTTPS:443 (301)"),
            _ => json!({
                "forward": output_or_unknown(outputs, self.target_group_id, "arn"),
            }),
        }
    }

    fn build_action(&self, outputs: &Outputs) -> Result<Action, EngineError> {
        match &self.mode {
            Some(ListenerMode::HttpRedirect) => Ok(Action::builder()
                .r#type(ActionTypeEnum::Redirect)
                .redirect_config(
                    RedirectActionConfig::builder()
                        .protocol("HTTPS")
                        .port("443")
                        .status_code(RedirectActionStatusCodeEnum::Http301)
                        .build(),
                )
                .build()),
            _ => Ok(Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(require_output(
                    outputs,
                    &self.meta.name,
                    self.target_group_id,
                    "arn",
                )?)
                .build()),
        }
    }

    fn protocol(&self) -> ProtocolEnum {
        match self.mode {
            Some(ListenerMode::Https { .. }) => ProtocolEnum::Https,
            _ => ProtocolEnum::Http,
        }
    }

    fn certificate(&self) -> Option<&str> {
        match &self.mode {
            Some(ListenerMode::Https { certificate_arn }) => Some(certificate_arn),
            _ => None,
        }
    }
}

#[async_trait]
impl Resource for Listener {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "listener"
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let listener = ws.arn(
            "elasticloadbalancing",
            &format!("listener/app/{}/*", self.load_balancer_name),
        );
        Permissions::new()
            .read(
                &[
                    "elasticloadbalancing:DescribeListeners",
                    "elasticloadbalancing:DescribeTags",
                ],
                &any(),
            )
            // A listener is created on its load balancer, and tagged as it is made.
            .write(
                &["elasticloadbalancing:CreateListener"],
                &[ws.arn(
                    "elasticloadbalancing",
                    &format!("loadbalancer/app/{}/*", self.load_balancer_name),
                )],
            )
            .write(
                &[
                    "elasticloadbalancing:ModifyListener",
                    "elasticloadbalancing:DeleteListener",
                    "elasticloadbalancing:AddTags",
                    "elasticloadbalancing:RemoveTags",
                ],
                &[listener],
            )
    }
    fn wanted(&self) -> bool {
        self.mode.is_some()
    }
    fn depends_on(&self) -> Vec<&'static str> {
        vec![self.load_balancer_id, self.target_group_id]
    }
    fn desired(&self, outputs: &Outputs) -> Desired {
        let mut d = Desired::new()
            .set("protocol", self.protocol().as_str().to_string())
            .set("action", self.action(outputs));
        if let Some(c) = self.certificate() {
            d = d
                .set("certificate", c.to_string())
                .set("ssl_policy", SSL_POLICY);
        }
        d
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let Some(lb) = load_balancer_arn(aws, &self.meta, &self.load_balancer_name).await? else {
            return Ok(None);
        };
        let out = aws
            .elb()
            .describe_listeners()
            .load_balancer_arn(&lb)
            .send()
            .await
            .map_err(|e| self.meta.fail("DescribeListeners", e))?;
        let Some(l) = out
            .listeners()
            .iter()
            .find(|l| l.port() == Some(i32::from(self.port)))
        else {
            return Ok(None);
        };
        let action = match l.default_actions().first() {
            Some(a) if a.r#type() == Some(&ActionTypeEnum::Redirect) => {
                let r = a.redirect_config();
                if r.and_then(|r| r.protocol()) == Some("HTTPS")
                    && r.and_then(|r| r.port()) == Some("443")
                    && r.and_then(|r| r.status_code())
                        == Some(&RedirectActionStatusCodeEnum::Http301)
                {
                    json!("redirect to HTTPS:443 (301)")
                } else {
                    json!(format!("redirect {r:?}"))
                }
            }
            Some(a) => json!({ "forward": a.target_group_arn().unwrap_or_default() }),
            None => Value::Null,
        };
        let mut o = Observed::default()
            .field(
                "protocol",
                l.protocol()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default(),
            )
            .field("action", action)
            .output("arn", l.listener_arn().unwrap_or_default());
        if self.certificate().is_some() {
            o = o
                .field(
                    "certificate",
                    l.certificates()
                        .first()
                        .and_then(|c| c.certificate_arn())
                        .unwrap_or_default(),
                )
                .field("ssl_policy", l.ssl_policy().unwrap_or_default());
        }
        Ok(Some(o))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let lb = require_output(outputs, &self.meta.name, self.load_balancer_id, "arn")?;
        let mut req = aws
            .elb()
            .create_listener()
            .load_balancer_arn(lb)
            .protocol(self.protocol())
            .port(i32::from(self.port))
            .default_actions(self.build_action(outputs)?);
        if let Some(c) = self.certificate() {
            req = req
                .certificates(Certificate::builder().certificate_arn(c).build())
                .ssl_policy(SSL_POLICY);
        }
        req.send()
            .await
            .map_err(|e| self.meta.fail("CreateListener", e))?;
        Ok(())
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let (outputs, current) = (c.outputs, c.current);
        let arn = current.out("arn").to_string();
        let mut req = aws
            .elb()
            .modify_listener()
            .listener_arn(arn)
            .protocol(self.protocol())
            .port(i32::from(self.port))
            .default_actions(self.build_action(outputs)?);
        if let Some(c) = self.certificate() {
            req = req
                .certificates(Certificate::builder().certificate_arn(c).build())
                .ssl_policy(SSL_POLICY);
        }
        req.send()
            .await
            .map_err(|e| self.meta.fail("ModifyListener", e))?;
        Ok(())
    }
    async fn delete(&self, aws: &AwsClients, current: &Observed) -> Result<(), EngineError> {
        let arn = current.out("arn").to_string();
        gone(
            aws.elb().delete_listener().listener_arn(&arn).send().await,
            DeleteListenerError::is_listener_not_found_exception,
            &self.meta,
            "DeleteListener",
        )
    }
}
