//! Where the dashboard task runs: the default VPC and its subnets, unless the user names them.

use serde::Serialize;

use crate::ec2::{Filter, GroupQuery, IpPermission, RuleChange, RuleSource, Subnet};

use crate::aws::AwsClients;
use crate::engine::EngineError;
use crate::engine::permissions::{Permissions, any};
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
            let (is_default, default_for_az) = (
                [Filter::new("is-default", "true")],
                [Filter::new("default-for-az", "true")],
            );
            let (vpcs, defaults) = tokio::join!(
                ec2.describe_vpcs(&is_default),
                ec2.describe_subnets(&default_for_az)
            );
            let vpcs = vpcs.map_err(|e| EngineError::aws("network", "DescribeVpcs", e))?;
            let vpc_id = vpcs
                .first()
                .map(|v| v.vpc_id.clone())
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    EngineError::Invalid(
                        "this region has no default VPC: pass --vpc VPC_ID and --subnet SUBNET_ID (one or more public subnets)"
                            .into(),
                    )
                })?;
            let defaults =
                defaults.map_err(|e| EngineError::aws("network", "DescribeSubnets", e))?;
            let defaults: Vec<Subnet> = defaults
                .into_iter()
                .filter(|s| s.vpc_id == vpc_id)
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
            .describe_subnets(&[Filter::new("vpc-id", &vpc_id)])
            .await
            .map_err(|e| EngineError::aws("network", "DescribeSubnets", e))?,
    };
    let zones = all
        .iter()
        .filter(|s| !s.subnet_id.is_empty() && !s.availability_zone.is_empty())
        .map(|s| (s.subnet_id.clone(), s.availability_zone.clone()))
        .collect();
    let mut subnet_ids: Vec<String> = if subnets.is_empty() {
        let defaults: Vec<String> = all
            .iter()
            .filter(|s| s.default_for_az)
            .map(|s| s.subnet_id.clone())
            .collect();
        if defaults.is_empty() {
            all.iter().map(|s| s.subnet_id.clone()).collect()
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
use serde_json::json;

use crate::ec2::Ec2Error;
use crate::engine::{
    self, Desired, Edit, Meta, Observed, Outputs, Resource, TagApi, codes, gone, own_tags,
    require_output, unmodeled, wait_until,
};
use crate::tag_api;

tag_api! {
    /// EC2's tags, by the resource's `id` output (security groups are the only EC2 resources
    /// here, so they are read from DescribeSecurityGroups).
    pub struct Ec2Tags;
    read(aws, meta, o): "DescribeSecurityGroups" =>
        future aws.ec2().describe_security_groups(GroupQuery::Ids(&[o.out("id")])),
        |groups| groups.into_iter().flat_map(|g| g.tags).collect();
    tag(aws, meta, o, tags): "CreateTags" => future aws.ec2().create_tags(o.out("id"), tags);
    untag(aws, meta, o, keys): "DeleteTags" => future aws.ec2().delete_tags(o.out("id"), keys);
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
            p.ip_ranges
                .iter()
                .chain(&p.ipv6_ranges)
                .chain(&p.groups)
                .map(|s| rule_text(p.from_port, p.to_port, &p.ip_protocol, &s.value))
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
        let mut p = IpPermission {
            ip_protocol: "tcp".into(),
            from_port: Some(i32::from(port)),
            to_port: Some(i32::from(port)),
            ..Default::default()
        };
        match source {
            Source::Cidr(c) if c.contains(':') => p.ipv6_ranges.push(RuleSource::new(c, None)),
            Source::Cidr(c) => p
                .ip_ranges
                .push(RuleSource::new(c, Some("agentbus --allow-cidr"))),
            Source::Group(id) => {
                let gid = require_output(outputs, &self.meta.name, id, "id")?;
                p.groups.push(RuleSource::new(
                    &gid,
                    Some("agentbus workspace security group"),
                ));
            }
        }
        Ok(p)
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
        let perms: Vec<IpPermission> = aws
            .ec2()
            .describe_security_groups(GroupQuery::Ids(&[group_id]))
            .await
            .map_err(|e| self.meta.fail("DescribeSecurityGroups", e))?
            .into_iter()
            .next()
            .map(|g| g.ip_permissions)
            .unwrap_or_default();
        let mut revoke = Vec::new();
        for p in &perms {
            let unwanted = |s: &Vec<RuleSource>| -> Vec<RuleSource> {
                s.iter()
                    .filter(|r| {
                        !want.contains(&rule_text(p.from_port, p.to_port, &p.ip_protocol, &r.value))
                    })
                    .cloned()
                    .collect()
            };
            let gone = IpPermission {
                ip_ranges: unwanted(&p.ip_ranges),
                ipv6_ranges: unwanted(&p.ipv6_ranges),
                groups: unwanted(&p.groups),
                ..p.without_sources()
            };
            if !(gone.ip_ranges.is_empty() && gone.ipv6_ranges.is_empty() && gone.groups.is_empty())
            {
                revoke.push(gone);
            }
        }
        if !revoke.is_empty() {
            aws.ec2()
                .change_rules(RuleChange::RevokeIngress, group_id, &revoke)
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
                .change_rules(
                    RuleChange::AuthorizeIngress,
                    group_id,
                    std::slice::from_ref(&p),
                )
                .await
            {
                Ok(()) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(unmodeled::<Ec2Error>(codes::RULE_EXISTS)) => {}
                Err(e) => return Err(self.meta.fail("AuthorizeSecurityGroupIngress", e)),
            }
        }
        Ok(())
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
        let groups = aws
            .ec2()
            .describe_security_groups(GroupQuery::Filters(&[Filter::new(
                "group-name",
                &self.meta.name,
            )]))
            .await
            .map_err(|e| self.meta.fail("DescribeSecurityGroups", e))?;
        let Some(g) = groups.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(
            Observed::default()
                .field("vpc", g.vpc_id)
                .field("description", g.description)
                .field("ingress", json!(rules_of(&g.ip_permissions)))
                .field("egress", json!(rules_of(&g.ip_permissions_egress)))
                .field("tags", own_tags(g.tags))
                .output("id", g.group_id)
                .output("name", self.meta.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        let mut tags = m.tags.clone();
        tags.push(("Name".into(), m.name.clone()));
        let created = aws
            .ec2()
            .create_security_group(&m.name, &self.description, &self.vpc_id, &tags)
            .await;
        let group_id = match created {
            Ok(id) => id,
            // Left by an interrupted apply.
            Err(e)
                if e.as_service_error()
                    .is_some_and(unmodeled::<Ec2Error>(codes::GROUP_EXISTS)) =>
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
            let all = IpPermission {
                ip_protocol: "-1".into(),
                ip_ranges: vec![RuleSource::new("0.0.0.0/0", None)],
                ..Default::default()
            };
            match aws
                .ec2()
                .change_rules(RuleChange::AuthorizeEgress, &group_id, &[all])
                .await
            {
                Ok(()) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(unmodeled::<Ec2Error>(codes::RULE_EXISTS)) => {}
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
                    let result = ec2.delete_security_group(&group_id).await;
                    if let Err(e) = &result
                        && e.as_service_error()
                            .is_some_and(unmodeled::<Ec2Error>(codes::IN_USE))
                    {
                        return Ok(Err("still in use by network interfaces".to_string()));
                    }
                    gone(
                        result,
                        unmodeled::<Ec2Error>(codes::GROUP_NOT_FOUND),
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
