//! Where the dashboard task runs: the default VPC and its subnets, unless the user names them.

use serde::Serialize;

use aws_sdk_ec2::types::{Filter, Subnet};

use crate::aws::AwsClients;
use crate::engine::EngineError;
use crate::engine::pair;
use crate::engine::permissions::{Permissions, any};
use crate::tag_api;
use crate::workspace::Workspace;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Network {
    pub vpc_id: String,
    pub subnet_ids: Vec<String>,
    /// Each subnet's availability zone, where known (a plan without AWS knows none).
    pub zones: std::collections::BTreeMap<String, String>,
}

/// Resolves the network: the given VPC (or the default one) and the given subnets (or the
/// VPC's default-for-AZ subnets, else all its subnets). The default VPC and its default
/// subnets are looked up at once: default-for-AZ subnets exist only in the default VPC.
pub async fn resolve(
    aws: &AwsClients,
    vpc: Option<&str>,
    subnets: &[String],
) -> Result<Network, EngineError> {
    let (vpc_id, found) = match vpc {
        Some(v) => (v.to_string(), None),
        None => {
            let ec2 = aws.ec2();
            let (vpcs, defaults) = tokio::join!(
                ec2.describe_vpcs()
                    .filters(Filter::builder().name("is-default").values("true").build())
                    .send(),
                ec2.describe_subnets()
                    .filters(
                        Filter::builder()
                            .name("default-for-az")
                            .values("true")
                            .build()
                    )
                    .send()
            );
            let vpcs = vpcs.map_err(|e| EngineError::aws("network", "DescribeVpcs", e))?;
            let vpc_id = vpcs
                .vpcs()
                .first()
                .and_then(|v| v.vpc_id.clone())
                .ok_or_else(|| {
                    EngineError::Invalid(
                        "this region has no default VPC: pass --vpc VPC_ID and --subnet SUBNET_ID (one or more public subnets)"
                            .into(),
                    )
                })?;
            let defaults =
                defaults.map_err(|e| EngineError::aws("network", "DescribeSubnets", e))?;
            let defaults: Vec<Subnet> = defaults
                .subnets()
                .iter()
                .filter(|s| s.vpc_id.as_deref() == Some(vpc_id.as_str()))
                .cloned()
                .collect();
            // Named subnets need their zones, which only the VPC's whole list gives.
            (
                vpc_id,
                (!defaults.is_empty() && subnets.is_empty()).then_some(defaults),
            )
        }
    };
    let all = match found {
        Some(defaults) => defaults,
        None => aws
            .ec2()
            .describe_subnets()
            .filters(Filter::builder().name("vpc-id").values(&vpc_id).build())
            .send()
            .await
            .map_err(|e| EngineError::aws("network", "DescribeSubnets", e))?
            .subnets()
            .to_vec(),
    };
    let zones = all
        .iter()
        .filter_map(|s| Some((s.subnet_id.clone()?, s.availability_zone.clone()?)))
        .collect();
    let mut subnet_ids: Vec<String> = if subnets.is_empty() {
        let defaults: Vec<String> = all
            .iter()
            .filter(|s| s.default_for_az == Some(true))
            .filter_map(|s| s.subnet_id.clone())
            .collect();
        if defaults.is_empty() {
            all.iter().filter_map(|s| s.subnet_id.clone()).collect()
        } else {
            defaults
        }
    } else {
        subnets.to_vec()
    };
    subnet_ids.sort();
    subnet_ids.dedup();
    if subnet_ids.is_empty() {
        return Err(EngineError::Invalid(format!(
            "VPC {vpc_id} has no subnets: pass --subnet SUBNET_ID"
        )));
    }
    Ok(Network {
        vpc_id,
        subnet_ids,
        zones,
    })
}

// ---------------------------------------------------------------------------------------------

use async_trait::async_trait;
use aws_sdk_ec2::operation::authorize_security_group_egress::AuthorizeSecurityGroupEgressError;
use aws_sdk_ec2::operation::authorize_security_group_ingress::AuthorizeSecurityGroupIngressError;
use aws_sdk_ec2::operation::create_security_group::CreateSecurityGroupError;
use aws_sdk_ec2::operation::delete_security_group::DeleteSecurityGroupError;
use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType, Tag, TagSpecification};
use serde_json::json;

use crate::engine::{
    self, Desired, Edit, Meta, Observed, Outputs, Resource, TagApi, codes, gone, own_tags,
    require_output, unmodeled, wait_until,
};

tag_api! {
    /// EC2's tags, by the resource's `id` output (security groups are the only EC2 resources
    /// here, so they are read from DescribeSecurityGroups).
    pub struct Ec2Tags;
    read(aws, meta, o): "DescribeSecurityGroups" => aws.ec2().describe_security_groups().group_ids(o.out("id")),
        |out| out.security_groups().iter().flat_map(|g| g.tags()).map(|t| pair(t.key(), t.value())).collect();
    tag(aws, meta, o, tags): "CreateTags" => aws.ec2().create_tags().resources(o.out("id"))
        .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()));
    untag(aws, meta, o, keys): "DeleteTags" => aws.ec2().delete_tags().resources(o.out("id"))
        .set_tags(Some(keys.iter().map(|k| Tag::builder().key(k).build()).collect()));
}

/// A security group admitting TCP on one port from a list of CIDRs, all egress allowed.
pub struct SecurityGroup {
    pub meta: Meta,
    pub description: String,
    pub vpc_id: String,
    /// What may come in: TCP ports and their sources. Nothing else.
    pub rules: Vec<Ingress>,
    /// What the group is for when nothing comes in: `None` for a group that serves
    /// something (without rules, the plan says it cannot be reached yet).
    pub outbound_only: Option<&'static str>,
    /// It guards a data-bearing resource (a database), which cannot lose its group: kept
    /// as long as that resource, deleted only with it.
    pub holds_data: bool,
}

/// One inbound rule: a TCP port from a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingress {
    pub port: u16,
    pub source: Source,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An IPv4 or IPv6 block (`--allow-cidr`).
    Cidr(String),
    /// Another security group of the workspace, by logical id (its `id` output).
    Group(&'static str),
}

impl Ingress {
    /// One rule per CIDR for each port.
    pub fn from_cidrs(ports: &[u16], cidrs: &[String]) -> Vec<Ingress> {
        ports
            .iter()
            .flat_map(|p| {
                cidrs.iter().map(|c| Ingress {
                    port: *p,
                    source: Source::Cidr(c.clone()),
                })
            })
            .collect()
    }
}

fn rule_text(port_from: Option<i32>, port_to: Option<i32>, proto: &str, cidr: &str) -> String {
    match (proto, port_from, port_to) {
        ("-1", _, _) => format!("all from {cidr}"),
        (p, Some(a), Some(b)) if a == b => format!("{p}/{a} from {cidr}"),
        (p, Some(a), Some(b)) => format!("{p}/{a}-{b} from {cidr}"),
        (p, _, _) => format!("{p} from {cidr}"),
    }
}

fn rules_of(perms: &[IpPermission]) -> Vec<String> {
    let mut v: Vec<String> = perms
        .iter()
        .flat_map(|p| {
            let proto = p.ip_protocol.clone().unwrap_or_default();
            let mut out: Vec<String> = p
                .ip_ranges()
                .iter()
                .filter_map(|r| r.cidr_ip.as_deref())
                .map(|c| rule_text(p.from_port, p.to_port, &proto, c))
                .collect();
            out.extend(
                p.ipv6_ranges()
                    .iter()
                    .filter_map(|r| r.cidr_ipv6.as_deref())
                    .map(|c| rule_text(p.from_port, p.to_port, &proto, c)),
            );
            out.extend(
                p.user_id_group_pairs()
                    .iter()
                    .filter_map(|g| g.group_id.as_deref())
                    .map(|g| rule_text(p.from_port, p.to_port, &proto, g)),
            );
            out
        })
        .collect();
    v.sort();
    v
}

impl SecurityGroup {
    /// The rules as text, with the source groups' ids from `outputs`; `Err(key)` names the
    /// first output not known yet.
    fn ingress(&self, outputs: &Outputs) -> Result<Vec<String>, String> {
        let mut v = Vec::new();
        for r in &self.rules {
            let from = match &r.source {
                Source::Cidr(c) => c.clone(),
                Source::Group(id) => outputs
                    .get(&format!("{id}.id"))
                    .cloned()
                    .ok_or_else(|| format!("{id}.id"))?,
            };
            let port = Some(i32::from(r.port));
            v.push(rule_text(port, port, "tcp", &from));
        }
        v.sort();
        v.dedup();
        Ok(v)
    }

    fn permission(
        &self,
        port: u16,
        source: &Source,
        outputs: &Outputs,
    ) -> Result<IpPermission, EngineError> {
        let mut p = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(i32::from(port))
            .to_port(i32::from(port));
        match source {
            Source::Cidr(c) if c.contains(':') => {
                p = p.ipv6_ranges(
                    aws_sdk_ec2::types::Ipv6Range::builder()
                        .cidr_ipv6(c)
                        .build(),
                );
            }
            Source::Cidr(c) => {
                p = p.ip_ranges(
                    IpRange::builder()
                        .cidr_ip(c)
                        .description("agentbus --allow-cidr")
                        .build(),
                );
            }
            Source::Group(id) => {
                let gid = require_output(outputs, &self.meta.name, id, "id")?;
                p = p.user_id_group_pairs(
                    aws_sdk_ec2::types::UserIdGroupPair::builder()
                        .group_id(gid)
                        .description("agentbus workspace security group")
                        .build(),
                );
            }
        }
        Ok(p.build())
    }

    async fn sync_ingress(
        &self,
        aws: &AwsClients,
        outputs: &Outputs,
        group_id: &str,
        current: &[String],
    ) -> Result<(), EngineError> {
        let want = self
            .ingress(outputs)
            .map_err(|output| EngineError::MissingOutput {
                resource: self.meta.name.clone(),
                output,
            })?;
        // Rules to revoke: every current rule that is not wanted, as observed (any port/proto).
        let out = aws
            .ec2()
            .describe_security_groups()
            .group_ids(group_id)
            .send()
            .await
            .map_err(|e| self.meta.fail("DescribeSecurityGroups", e))?;
        let perms: Vec<IpPermission> = out
            .security_groups()
            .first()
            .map(|g| g.ip_permissions().to_vec())
            .unwrap_or_default();
        let mut revoke = Vec::new();
        for p in &perms {
            let proto = p.ip_protocol.clone().unwrap_or_default();
            let mut keep = p.clone().to_builder_empty();
            let mut any = false;
            for r in p.ip_ranges() {
                let text = rule_text(
                    p.from_port,
                    p.to_port,
                    &proto,
                    r.cidr_ip.as_deref().unwrap_or(""),
                );
                if !want.contains(&text) {
                    keep = keep.ip_ranges(r.clone());
                    any = true;
                }
            }
            for r in p.ipv6_ranges() {
                let text = rule_text(
                    p.from_port,
                    p.to_port,
                    &proto,
                    r.cidr_ipv6.as_deref().unwrap_or(""),
                );
                if !want.contains(&text) {
                    keep = keep.ipv6_ranges(r.clone());
                    any = true;
                }
            }
            for g in p.user_id_group_pairs() {
                let text = rule_text(
                    p.from_port,
                    p.to_port,
                    &proto,
                    g.group_id.as_deref().unwrap_or(""),
                );
                if !want.contains(&text) {
                    keep = keep.user_id_group_pairs(g.clone());
                    any = true;
                }
            }
            if any {
                revoke.push(keep.build());
            }
        }
        if !revoke.is_empty() {
            aws.ec2()
                .revoke_security_group_ingress()
                .group_id(group_id)
                .set_ip_permissions(Some(revoke))
                .send()
                .await
                .map_err(|e| self.meta.fail("RevokeSecurityGroupIngress", e))?;
        }
        for r in &self.rules {
            let p = self.permission(r.port, &r.source, outputs)?;
            let text = rules_of(std::slice::from_ref(&p));
            if text.iter().all(|t| current.contains(t)) {
                continue;
            }
            match aws
                .ec2()
                .authorize_security_group_ingress()
                .group_id(group_id)
                .ip_permissions(p)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error().is_some_and(|e| {
                        unmodeled::<AuthorizeSecurityGroupIngressError>(codes::RULE_EXISTS)(e)
                    }) => {}
                Err(e) => return Err(self.meta.fail("AuthorizeSecurityGroupIngress", e)),
            }
        }
        Ok(())
    }
}

trait EmptyPermission {
    fn to_builder_empty(self) -> aws_sdk_ec2::types::builders::IpPermissionBuilder;
}

impl EmptyPermission for IpPermission {
    /// A permission with the same protocol and ports and no sources.
    fn to_builder_empty(self) -> aws_sdk_ec2::types::builders::IpPermissionBuilder {
        let mut b = IpPermission::builder().set_ip_protocol(self.ip_protocol);
        if let Some(f) = self.from_port {
            b = b.from_port(f);
        }
        if let Some(t) = self.to_port {
            b = b.to_port(t);
        }
        b
    }
}

#[async_trait]
impl Resource for SecurityGroup {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn data_bearing(&self) -> bool {
        self.holds_data
    }
    fn kind(&self) -> &'static str {
        "security group"
    }
    /// DeleteSecurityGroup answers DependencyViolation while a network interface (a task,
    /// a load balancer, a database) or another group's rule uses it.
    fn delete_refused_while_used(&self) -> bool {
        true
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let groups = ws.arn("ec2", "security-group/*");
        let vpc = ws.arn("ec2", "vpc/*");
        Permissions::new()
            // EC2's Describe actions have no resource-level permissions.
            .read(&["ec2:DescribeSecurityGroups"], &any())
            .write(&["ec2:CreateSecurityGroup"], &[groups.clone(), vpc])
            // Tags given at creation are authorized as CreateTags with the creating action
            // (EC2 User Guide, "Grant permission to tag resources during creation"); the group
            // has no tags yet, so the workspace-tag condition below cannot hold then.
            .write_when(
                &["ec2:CreateTags"],
                &[&groups],
                json!({"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"}}),
            )
            .write_when(
                &[
                    "ec2:AuthorizeSecurityGroupIngress",
                    "ec2:AuthorizeSecurityGroupEgress",
                    "ec2:RevokeSecurityGroupIngress",
                    "ec2:RevokeSecurityGroupEgress",
                    "ec2:DeleteSecurityGroup",
                    "ec2:CreateTags",
                    "ec2:DeleteTags",
                ],
                &[groups],
                json!({"StringEquals": {"aws:ResourceTag/agentbus:workspace": ws.id()}}),
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&Ec2Tags)
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new()
            .set_replace("vpc", self.vpc_id.clone())
            .set_replace("description", self.description.clone())
            .set(
                "ingress",
                match self.ingress(_outputs) {
                    Ok(v) => json!(v),
                    Err(key) => crate::engine::unknown(&key),
                },
            )
            .set("egress", json!(["all from 0.0.0.0/0"]))
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let out = aws
            .ec2()
            .describe_security_groups()
            .filters(
                Filter::builder()
                    .name("group-name")
                    .values(&self.meta.name)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.meta.fail("DescribeSecurityGroups", e))?;
        let Some(g) = out.security_groups().first() else {
            return Ok(None);
        };
        let egress: Vec<String> = rules_of(g.ip_permissions_egress());
        Ok(Some(
            Observed::default()
                .field("vpc", g.vpc_id.clone().unwrap_or_default())
                .field("description", g.description.clone().unwrap_or_default())
                .field("ingress", json!(rules_of(g.ip_permissions())))
                .field("egress", json!(egress))
                .field(
                    "tags",
                    own_tags(g.tags().iter().map(|t| {
                        (
                            t.key.clone().unwrap_or_default(),
                            t.value.clone().unwrap_or_default(),
                        )
                    })),
                )
                .output("id", g.group_id.clone().unwrap_or_default())
                .output("name", self.meta.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        let mut spec = TagSpecification::builder().resource_type(ResourceType::SecurityGroup);
        for (k, v) in &m.tags {
            spec = spec.tags(Tag::builder().key(k).value(v).build());
        }
        spec = spec.tags(Tag::builder().key("Name").value(&m.name).build());
        let created = aws
            .ec2()
            .create_security_group()
            .group_name(&m.name)
            .description(&self.description)
            .vpc_id(&self.vpc_id)
            .tag_specifications(spec.build())
            .send()
            .await;
        let group_id = match created {
            Ok(o) => o.group_id.unwrap_or_default(),
            // Left by an interrupted apply.
            Err(e)
                if e.as_service_error().is_some_and(|e| {
                    unmodeled::<CreateSecurityGroupError>(codes::GROUP_EXISTS)(e)
                }) =>
            {
                engine::observe(self, aws)
                    .await?
                    .and_then(|o| o.outputs.get("id").cloned())
                    .unwrap_or_default()
            }
            Err(e) => return Err(m.fail("CreateSecurityGroup", e)),
        };
        let current = engine::observe(self, aws).await?.unwrap_or_default();
        let have: Vec<String> = current
            .fields
            .get("ingress")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        self.sync_ingress(aws, outputs, &group_id, &have).await
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let (outputs, current, changed) = (c.outputs, c.current, c.fields);
        let group_id = current.out("id").to_string();
        if changed.iter().any(|c| c == "ingress") {
            let have: Vec<String> = current
                .fields
                .get("ingress")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            self.sync_ingress(aws, outputs, &group_id, &have).await?;
        }
        if changed.iter().any(|c| c == "egress") {
            // Restore the default allow-all egress.
            let all = IpPermission::builder()
                .ip_protocol("-1")
                .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                .build();
            match aws
                .ec2()
                .authorize_security_group_egress()
                .group_id(&group_id)
                .ip_permissions(all)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error().is_some_and(|e| {
                        unmodeled::<AuthorizeSecurityGroupEgressError>(codes::RULE_EXISTS)(e)
                    }) => {}
                Err(e) => return Err(self.meta.fail("AuthorizeSecurityGroupEgress", e)),
            }
        }
        Ok(())
    }
    async fn delete(&self, aws: &AwsClients, current: &Observed) -> Result<(), EngineError> {
        let group_id = current.out("id").to_string();
        let m = &self.meta;
        // Network interfaces of a just-stopped task take a while to go: retry on DependencyViolation.
        wait_until(
            &m.name,
            std::time::Duration::from_secs(300),
            std::time::Duration::from_secs(5),
            || {
                let ec2 = aws.ec2();
                let group_id = group_id.clone();
                async move {
                    let result = ec2.delete_security_group().group_id(&group_id).send().await;
                    if let Err(e) = &result
                        && e.as_service_error().is_some_and(|e| {
                            unmodeled::<DeleteSecurityGroupError>(codes::IN_USE)(e)
                        })
                    {
                        return Ok(Err("still in use by network interfaces".to_string()));
                    }
                    gone(
                        result,
                        unmodeled::<DeleteSecurityGroupError>(codes::GROUP_NOT_FOUND),
                        m,
                        "DeleteSecurityGroup",
                    )
                    .map(Ok)
                }
            },
        )
        .await
    }
    fn depends_on(&self) -> Vec<&'static str> {
        self.rules
            .iter()
            .filter_map(|r| match r.source {
                Source::Group(id) => Some(id),
                Source::Cidr(_) => None,
            })
            .collect()
    }
    fn notes(&self) -> Vec<String> {
        if self.rules.is_empty() && self.outbound_only.is_none() {
            vec![
                "no ingress: nothing can reach it yet; add --allow-cidr YOUR.IP.ADDR.ESS/32"
                    .to_string(),
            ]
        } else {
            Vec::new()
        }
    }
}
