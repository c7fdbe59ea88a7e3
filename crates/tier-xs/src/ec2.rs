//! EC2 through its Query API (`crate::query`), for the eleven calls agentbus makes (the
//! default VPC and its subnets, security groups and their rules and tags, a task's network
//! interface).
//!
//! Why not `aws-sdk-ec2`: that crate compiles every one of EC2's ~700 operations, a quarter of
//! a clean build of the workspace (`docs/benchmarks/build.md`), for these eleven. What is
//! EC2's own here: its Query form (`Filter.1.Name=…`, lists as `.N` without `member`), its
//! endpoint rules (checked against the SDK's own endpoint tests below), and reading its XML
//! answers (lists of `item`s). EC2 models no error types: every one of its errors is a code
//! (`crate::engine::codes`).

use crate::aws::ClientParts;
use crate::query::{Api, Endpoint, Node, Params, Protocol, QueryClient, QueryError, ServiceError};

/// EC2's Query API.
pub static EC2: Api = Api {
    service_id: "EC2",
    signing_name: "ec2",
    version: "2016-11-15",
    protocol: Protocol::Ec2,
    endpoint,
};

/// A failed EC2 call (see [`QueryError`]).
pub type Ec2SdkError = QueryError;

/// An error answer of EC2: its code (`InvalidGroup.NotFound`, `RequestLimitExceeded`, …) and
/// message.
pub type Ec2Error = ServiceError;

/// A filter of a Describe call: a name (`group-name`, `vpc-id`, …) and its values.
#[derive(Clone, Debug)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

impl Filter {
    pub fn new(name: &str, value: &str) -> Self {
        Filter {
            name: name.to_string(),
            values: vec![value.to_string()],
        }
    }
}

/// One source of a rule: a CIDR block (`cidr_ip` / `cidr_ipv6`) or a security group's id, with
/// its description.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSource {
    pub value: String,
    pub description: Option<String>,
}

impl RuleSource {
    pub fn new(value: &str, description: Option<&str>) -> Self {
        RuleSource {
            value: value.to_string(),
            description: description.map(str::to_string),
        }
    }
}

/// A security group rule: a protocol (`tcp`, `-1` for all), a port range and its sources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpPermission {
    pub ip_protocol: String,
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    pub ip_ranges: Vec<RuleSource>,
    pub ipv6_ranges: Vec<RuleSource>,
    /// Source security groups, by id.
    pub groups: Vec<RuleSource>,
}

impl IpPermission {
    /// The same protocol and ports without sources.
    pub fn without_sources(&self) -> Self {
        IpPermission {
            ip_protocol: self.ip_protocol.clone(),
            from_port: self.from_port,
            to_port: self.to_port,
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityGroup {
    pub group_id: String,
    pub group_name: String,
    pub description: String,
    pub vpc_id: String,
    pub ip_permissions: Vec<IpPermission>,
    pub ip_permissions_egress: Vec<IpPermission>,
    pub tags: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vpc {
    pub vpc_id: String,
    pub is_default: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subnet {
    pub subnet_id: String,
    pub vpc_id: String,
    pub availability_zone: String,
    pub default_for_az: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkInterface {
    pub network_interface_id: String,
    pub private_ip_address: String,
    /// The public address associated with it, if any.
    pub public_ip: Option<String>,
}

/// A change to a security group's rules, by its EC2 action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleChange {
    AuthorizeIngress,
    AuthorizeEgress,
    RevokeIngress,
}

impl RuleChange {
    /// The EC2 action (also the name errors carry).
    pub fn action(self) -> &'static str {
        match self {
            RuleChange::AuthorizeIngress => "AuthorizeSecurityGroupIngress",
            RuleChange::AuthorizeEgress => "AuthorizeSecurityGroupEgress",
            RuleChange::RevokeIngress => "RevokeSecurityGroupIngress",
        }
    }
}

/// Which security groups DescribeSecurityGroups reads.
#[derive(Clone, Debug)]
pub enum GroupQuery<'a> {
    Ids(&'a [&'a str]),
    Filters(&'a [Filter]),
}

/// EC2's client: one per [`crate::aws::AwsClients`] (`aws.ec2()`), cheap to clone.
#[derive(Clone)]
pub struct Ec2(QueryClient);

impl Ec2 {
    /// The client of a registry's configuration (see [`crate::aws::AwsClients::ec2`]).
    pub fn new(parts: ClientParts<'_>) -> Self {
        Ec2(QueryClient::new(&EC2, parts))
    }

    /// Every page of a Describe action: the items of each page's `set`.
    async fn describe<T: FromItem>(
        &self,
        action: &'static str,
        params: Params,
        set: &str,
    ) -> Result<Vec<T>, Ec2SdkError> {
        self.0.collect(action, params, set, T::from_item).await
    }

    pub async fn describe_vpcs(&self, filters: &[Filter]) -> Result<Vec<Vpc>, Ec2SdkError> {
        let p = describe_params("VpcId", &[], filters);
        self.describe("DescribeVpcs", p, "vpcSet").await
    }

    pub async fn describe_subnets(&self, filters: &[Filter]) -> Result<Vec<Subnet>, Ec2SdkError> {
        let p = describe_params("SubnetId", &[], filters);
        self.describe("DescribeSubnets", p, "subnetSet").await
    }

    pub async fn describe_security_groups(
        &self,
        query: GroupQuery<'_>,
    ) -> Result<Vec<SecurityGroup>, Ec2SdkError> {
        let p = match query {
            GroupQuery::Ids(ids) => describe_params("GroupId", ids, &[]),
            GroupQuery::Filters(f) => describe_params("GroupId", &[], f),
        };
        self.describe("DescribeSecurityGroups", p, "securityGroupInfo")
            .await
    }

    /// Creates a security group with its tags; its id.
    pub async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc_id: &str,
        tags: &[(String, String)],
    ) -> Result<String, Ec2SdkError> {
        let mut p = Params::new();
        p.push("GroupName", name);
        p.push("GroupDescription", description);
        p.push("VpcId", vpc_id);
        if !tags.is_empty() {
            p.push("TagSpecification.1.ResourceType", "security-group");
            p.tags(
                "TagSpecification.1.Tag",
                tags.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))),
            );
        }
        Ok(self
            .0
            .call("CreateSecurityGroup", p)
            .await?
            .string("groupId"))
    }

    pub async fn delete_security_group(&self, group_id: &str) -> Result<(), Ec2SdkError> {
        let mut p = Params::new();
        p.push("GroupId", group_id);
        self.0.call("DeleteSecurityGroup", p).await.map(drop)
    }

    /// Adds or removes a security group's rules.
    pub async fn change_rules(
        &self,
        change: RuleChange,
        group_id: &str,
        permissions: &[IpPermission],
    ) -> Result<(), Ec2SdkError> {
        let mut p = Params::new();
        p.push("GroupId", group_id);
        permission_params(&mut p, permissions);
        self.0.call(change.action(), p).await.map(drop)
    }

    pub async fn create_tags(
        &self,
        resource_id: &str,
        tags: &[(String, String)],
    ) -> Result<(), Ec2SdkError> {
        let mut p = Params::new();
        p.push("ResourceId.1", resource_id);
        p.tags(
            "Tag",
            tags.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))),
        );
        self.0.call("CreateTags", p).await.map(drop)
    }

    /// Removes tags by key, whatever their values.
    pub async fn delete_tags(&self, resource_id: &str, keys: &[String]) -> Result<(), Ec2SdkError> {
        let mut p = Params::new();
        p.push("ResourceId.1", resource_id);
        p.tags("Tag", keys.iter().map(|k| (k.as_str(), None)));
        self.0.call("DeleteTags", p).await.map(drop)
    }

    /// Network interfaces by id, or by filters.
    pub async fn describe_network_interfaces(
        &self,
        ids: &[&str],
        filters: &[Filter],
    ) -> Result<Vec<NetworkInterface>, Ec2SdkError> {
        let p = describe_params("NetworkInterfaceId", ids, filters);
        self.describe("DescribeNetworkInterfaces", p, "networkInterfaceSet")
            .await
    }
}

/// Where EC2 answers, by its endpoint rules: `ec2[-fips].{region}.{the partition's DNS
/// suffix}` (`crate::query::regional`).
pub fn endpoint(region: &str, fips: bool, dual_stack: bool) -> Endpoint {
    crate::query::regional("ec2", region, fips, dual_stack)
}

// --- the request's form ------------------------------------------------------------------

/// A Describe action's parameters: the ids asked for (`{id}.N`) and the filters
/// (`Filter.N.Name`, `Filter.N.Value.M`).
fn describe_params(id: &str, ids: &[&str], filters: &[Filter]) -> Params {
    let mut p = Params::new();
    p.list(id, ids.iter().copied());
    for (i, f) in filters.iter().enumerate() {
        let n = i + 1;
        p.push(&format!("Filter.{n}.Name"), &f.name);
        for (j, v) in f.values.iter().enumerate() {
            p.push(&format!("Filter.{n}.Value.{}", j + 1), v);
        }
    }
    p
}

/// `IpPermissions.N.IpProtocol`, `.FromPort`, `.ToPort`, `.IpRanges.M.CidrIp`,
/// `.Ipv6Ranges.M.CidrIpv6`, `.Groups.M.GroupId`, each source with its `Description`.
fn permission_params(p: &mut Params, permissions: &[IpPermission]) {
    for (i, perm) in permissions.iter().enumerate() {
        let pre = format!("IpPermissions.{}", i + 1);
        p.push(&format!("{pre}.IpProtocol"), &perm.ip_protocol);
        if let Some(f) = perm.from_port {
            p.push(&format!("{pre}.FromPort"), &f.to_string());
        }
        if let Some(t) = perm.to_port {
            p.push(&format!("{pre}.ToPort"), &t.to_string());
        }
        for (list, field, sources) in [
            ("Groups", "GroupId", &perm.groups),
            ("IpRanges", "CidrIp", &perm.ip_ranges),
            ("Ipv6Ranges", "CidrIpv6", &perm.ipv6_ranges),
        ] {
            for (j, s) in sources.iter().enumerate() {
                let at = format!("{pre}.{list}.{}", j + 1);
                if let Some(d) = &s.description {
                    p.push(&format!("{at}.Description"), d);
                }
                p.push(&format!("{at}.{field}"), &s.value);
            }
        }
    }
}

// --- the answers -------------------------------------------------------------------------

/// A Describe answer's item as its type.
trait FromItem {
    fn from_item(n: &Node) -> Self;
}

impl FromItem for Vpc {
    fn from_item(v: &Node) -> Self {
        Vpc {
            vpc_id: v.string("vpcId"),
            is_default: v.flag("isDefault") == Some(true),
        }
    }
}

impl FromItem for Subnet {
    fn from_item(s: &Node) -> Self {
        Subnet {
            subnet_id: s.string("subnetId"),
            vpc_id: s.string("vpcId"),
            availability_zone: s.string("availabilityZone"),
            default_for_az: s.flag("defaultForAz") == Some(true),
        }
    }
}

impl FromItem for SecurityGroup {
    fn from_item(g: &Node) -> Self {
        SecurityGroup {
            group_id: g.string("groupId"),
            group_name: g.string("groupName"),
            description: g.string("groupDescription"),
            vpc_id: g.string("vpcId"),
            ip_permissions: permissions_of(g.list("ipPermissions")),
            ip_permissions_egress: permissions_of(g.list("ipPermissionsEgress")),
            tags: tags_of(g),
        }
    }
}

impl FromItem for NetworkInterface {
    fn from_item(n: &Node) -> Self {
        NetworkInterface {
            network_interface_id: n.string("networkInterfaceId"),
            private_ip_address: n.string("privateIpAddress"),
            public_ip: n
                .child("association")
                .and_then(|a| a.text("publicIp"))
                .map(str::to_string),
        }
    }
}

fn permissions_of(list: &[Node]) -> Vec<IpPermission> {
    let sources = |p: &Node, list: &str, field: &str| -> Vec<RuleSource> {
        p.list(list)
            .iter()
            .map(|s| RuleSource {
                value: s.string(field),
                description: s.text("description").map(str::to_string),
            })
            .collect()
    };
    list.iter()
        .map(|p| IpPermission {
            ip_protocol: p.string("ipProtocol"),
            from_port: p.number("fromPort"),
            to_port: p.number("toPort"),
            ip_ranges: sources(p, "ipRanges", "cidrIp"),
            ipv6_ranges: sources(p, "ipv6Ranges", "cidrIpv6"),
            groups: sources(p, "groups", "groupId"),
        })
        .collect()
}

fn tags_of(n: &Node) -> Vec<(String, String)> {
    n.list("tagSet")
        .iter()
        .map(|i| (i.string("key"), i.string("value")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_follows_ec2_s_endpoint_rules() {
        // Cases from the endpoint tests of EC2's rules (as aws-sdk-ec2 1.274 ships them).
        let cases = [
            (
                "us-east-1",
                false,
                false,
                "https://ec2.us-east-1.amazonaws.com",
            ),
            (
                "af-south-1",
                false,
                false,
                "https://ec2.af-south-1.amazonaws.com",
            ),
            (
                "ca-central-1",
                true,
                false,
                "https://ec2-fips.ca-central-1.amazonaws.com",
            ),
            ("us-east-1", false, true, "https://ec2.us-east-1.api.aws"),
            (
                "us-east-1",
                true,
                true,
                "https://ec2-fips.us-east-1.api.aws",
            ),
            (
                "cn-north-1",
                false,
                false,
                "https://ec2.cn-north-1.amazonaws.com.cn",
            ),
            (
                "cn-north-1",
                true,
                true,
                "https://ec2-fips.cn-north-1.api.amazonwebservices.com.cn",
            ),
            (
                "cn-north-1",
                true,
                false,
                "https://ec2-fips.cn-north-1.amazonaws.com.cn",
            ),
            (
                "cn-north-1",
                false,
                true,
                "https://ec2.cn-north-1.api.amazonwebservices.com.cn",
            ),
            (
                "us-gov-west-1",
                false,
                false,
                "https://ec2.us-gov-west-1.amazonaws.com",
            ),
            (
                "us-gov-east-1",
                true,
                true,
                "https://ec2-fips.us-gov-east-1.api.aws",
            ),
            (
                "us-gov-east-1",
                true,
                false,
                "https://ec2.us-gov-east-1.amazonaws.com",
            ),
            (
                "us-gov-east-1",
                false,
                true,
                "https://ec2.us-gov-east-1.api.aws",
            ),
            (
                "us-iso-east-1",
                false,
                false,
                "https://ec2.us-iso-east-1.c2s.ic.gov",
            ),
            (
                "us-iso-east-1",
                true,
                false,
                "https://ec2-fips.us-iso-east-1.c2s.ic.gov",
            ),
            (
                "us-isob-east-1",
                false,
                false,
                "https://ec2.us-isob-east-1.sc2s.sgov.gov",
            ),
            (
                "us-isob-east-1",
                true,
                false,
                "https://ec2-fips.us-isob-east-1.sc2s.sgov.gov",
            ),
        ];
        for (region, fips, dual, url) in cases {
            assert_eq!(
                endpoint(region, fips, dual).url,
                url,
                "{region} fips={fips} dual-stack={dual}"
            );
        }
        let resolve = |custom, region, fips, dual| {
            crate::query::resolve(&EC2, custom, region, fips, dual).map(|e| e.url)
        };
        let custom = Some("https://example.com");
        assert_eq!(
            resolve(custom, Some("us-east-1"), false, false).as_deref(),
            Ok("https://example.com")
        );
        assert_eq!(
            resolve(custom, None, false, false).as_deref(),
            Ok("https://example.com")
        );
        assert!(resolve(custom, Some("us-east-1"), true, false).is_err());
        assert!(resolve(custom, Some("us-east-1"), false, true).is_err());
        assert!(resolve(None, None, false, false).is_err());
    }

    #[test]
    fn a_request_is_written_as_ec2_s_query_form() {
        let mut p = Params::new().with("GroupId", "sg-1");
        permission_params(
            &mut p,
            &[IpPermission {
                ip_protocol: "tcp".into(),
                from_port: Some(443),
                to_port: Some(443),
                ip_ranges: vec![RuleSource::new("10.0.0.0/8", Some("agentbus --allow-cidr"))],
                ipv6_ranges: vec![RuleSource::new("2001:db8::/32", None)],
                groups: vec![RuleSource::new("sg-2", None)],
            }],
        );
        assert_eq!(
            p.encode("AuthorizeSecurityGroupIngress", EC2.version),
            "Action=AuthorizeSecurityGroupIngress&Version=2016-11-15&GroupId=sg-1\
             &IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=443&IpPermissions.1.ToPort=443\
             &IpPermissions.1.Groups.1.GroupId=sg-2\
             &IpPermissions.1.IpRanges.1.Description=agentbus%20--allow-cidr\
             &IpPermissions.1.IpRanges.1.CidrIp=10.0.0.0%2F8\
             &IpPermissions.1.Ipv6Ranges.1.CidrIpv6=2001%3Adb8%3A%3A%2F32"
        );
        let mut p = describe_params(
            "GroupId",
            &[],
            &[Filter::new("group-name", "agentbus-dev-dash")],
        );
        p.tags("Tag", [("a", Some("b c")), ("d", None)].into_iter());
        assert_eq!(
            p.encode("X", EC2.version),
            "Action=X&Version=2016-11-15&Filter.1.Name=group-name&Filter.1.Value.1=agentbus-dev-dash\
             &Tag.1.Key=a&Tag.1.Value=b%20c&Tag.2.Key=d"
        );
    }

    #[test]
    fn a_security_group_answer_is_read_with_its_rules_and_tags_and_unknown_fields_skipped() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeSecurityGroupsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>r-1</requestId>
  <securityGroupInfo>
    <item>
      <ownerId>123456789012</ownerId>
      <groupId>sg-1</groupId>
      <groupName>agentbus-dev-dash</groupName>
      <groupDescription>the dashboard &amp; MCP</groupDescription>
      <vpcId>vpc-1</vpcId>
      <securityGroupArn>arn:aws:ec2:us-east-1:123456789012:security-group/sg-1</securityGroupArn>
      <ipPermissions>
        <item>
          <ipProtocol>tcp</ipProtocol><fromPort>8080</fromPort><toPort>8080</toPort>
          <groups><item><userId>123456789012</userId><groupId>sg-2</groupId></item></groups>
          <ipRanges><item><cidrIp>203.0.113.0/24</cidrIp><description>agentbus --allow-cidr</description></item></ipRanges>
          <ipv6Ranges/>
          <prefixListIds><item><prefixListId>pl-1</prefixListId></item></prefixListIds>
        </item>
      </ipPermissions>
      <ipPermissionsEgress>
        <item><ipProtocol>-1</ipProtocol><groups/><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp></item></ipRanges></item>
      </ipPermissionsEgress>
      <tagSet><item><key>agentbus:workspace</key><value>dev</value></item></tagSet>
    </item>
  </securityGroupInfo>
</DescribeSecurityGroupsResponse>"#;
        let root = crate::query::parse(xml).expect("parses");
        let groups: Vec<SecurityGroup> = root
            .list("securityGroupInfo")
            .iter()
            .map(SecurityGroup::from_item)
            .collect();
        assert_eq!(
            groups,
            vec![SecurityGroup {
                group_id: "sg-1".into(),
                group_name: "agentbus-dev-dash".into(),
                description: "the dashboard & MCP".into(),
                vpc_id: "vpc-1".into(),
                ip_permissions: vec![IpPermission {
                    ip_protocol: "tcp".into(),
                    from_port: Some(8080),
                    to_port: Some(8080),
                    ip_ranges: vec![RuleSource::new(
                        "203.0.113.0/24",
                        Some("agentbus --allow-cidr")
                    )],
                    ipv6_ranges: vec![],
                    groups: vec![RuleSource::new("sg-2", None)],
                }],
                ip_permissions_egress: vec![IpPermission {
                    ip_protocol: "-1".into(),
                    ip_ranges: vec![RuleSource::new("0.0.0.0/0", None)],
                    ..Default::default()
                }],
                tags: vec![("agentbus:workspace".into(), "dev".into())],
            }]
        );
    }
}
