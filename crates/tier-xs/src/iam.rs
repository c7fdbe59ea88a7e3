//! IAM through its Query API (`crate::query`), for the calls agentbus makes: its tasks' roles
//! with their inline policies and tags, and ECS's service-linked role.
//!
//! Why not `aws-sdk-iam`: that crate compiles all of IAM's ~170 operations, 5 % of a clean
//! build of the workspace, for these fourteen. What is IAM's own here: its endpoint rules (one
//! global endpoint per partition, signed for the partition's global region; checked against
//! the SDK's endpoint tests below), the `awsQuery` form of each call, and the error codes its
//! model declares for them, as the accessors below.

use crate::aws::ClientParts;
use crate::query::{Api, Endpoint, Params, Protocol, QueryClient, QueryError, ServiceError};

/// IAM's Query API.
pub static IAM: Api = Api {
    service_id: "IAM",
    signing_name: "iam",
    version: "2010-05-08",
    protocol: Protocol::AwsQuery,
    endpoint,
};

/// A failed IAM call (see [`QueryError`]).
pub type IamError = QueryError;

/// `NoSuchEntity`: the role or policy does not exist.
pub fn no_such_entity(e: &ServiceError) -> bool {
    e.is("NoSuchEntity")
}

/// `EntityAlreadyExists`: a role of that name exists.
pub fn entity_already_exists(e: &ServiceError) -> bool {
    e.is("EntityAlreadyExists")
}

/// `InvalidInput`: a parameter IAM refuses (CreateServiceLinkedRole also answers it when the
/// role exists: "has been taken in this account").
pub fn invalid_input(e: &ServiceError) -> bool {
    e.is("InvalidInput")
}

/// A role as GetRole answers it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Role {
    pub arn: String,
    /// URL-encoded, as IAM returns policy documents.
    pub assume_role_policy_document: String,
    pub tags: Vec<(String, String)>,
}

/// IAM's client: one per [`crate::aws::AwsClients`] (`aws.iam()`), cheap to clone.
#[derive(Clone)]
pub struct Iam(QueryClient);

impl Iam {
    /// The client of a registry's configuration (see [`crate::aws::AwsClients::iam`]).
    pub fn new(parts: ClientParts<'_>) -> Self {
        Iam(QueryClient::new(&IAM, parts))
    }

    fn role(name: &str) -> Params {
        Params::new().with("RoleName", name)
    }

    pub async fn get_role(&self, name: &str) -> Result<Role, IamError> {
        let answer = self.0.call("GetRole", Self::role(name)).await?;
        let role = answer.child("Role").cloned().unwrap_or_default();
        Ok(Role {
            arn: role.string("Arn"),
            assume_role_policy_document: role.string("AssumeRolePolicyDocument"),
            tags: role.pairs("Tags"),
        })
    }

    pub async fn create_role(
        &self,
        name: &str,
        trust_policy: &str,
        description: &str,
        tags: &[(String, String)],
    ) -> Result<(), IamError> {
        let mut p = Self::role(name)
            .with("AssumeRolePolicyDocument", trust_policy)
            .with("Description", description);
        p.tags(
            "Tags.member",
            tags.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))),
        );
        self.0.call("CreateRole", p).await.map(drop)
    }

    pub async fn update_assume_role_policy(
        &self,
        name: &str,
        document: &str,
    ) -> Result<(), IamError> {
        let p = Self::role(name).with("PolicyDocument", document);
        self.0.call("UpdateAssumeRolePolicy", p).await.map(drop)
    }

    pub async fn delete_role(&self, name: &str) -> Result<(), IamError> {
        self.0.call("DeleteRole", Self::role(name)).await.map(drop)
    }

    pub async fn put_role_policy(
        &self,
        name: &str,
        policy_name: &str,
        document: &str,
    ) -> Result<(), IamError> {
        let p = Self::role(name)
            .with("PolicyName", policy_name)
            .with("PolicyDocument", document);
        self.0.call("PutRolePolicy", p).await.map(drop)
    }

    /// An inline policy's document, URL-encoded as IAM returns it.
    pub async fn get_role_policy(&self, name: &str, policy_name: &str) -> Result<String, IamError> {
        let p = Self::role(name).with("PolicyName", policy_name);
        Ok(self
            .0
            .call("GetRolePolicy", p)
            .await?
            .string("PolicyDocument"))
    }

    pub async fn delete_role_policy(&self, name: &str, policy_name: &str) -> Result<(), IamError> {
        let p = Self::role(name).with("PolicyName", policy_name);
        self.0.call("DeleteRolePolicy", p).await.map(drop)
    }

    /// The names of the role's inline policies, every page.
    pub async fn list_role_policies(&self, name: &str) -> Result<Vec<String>, IamError> {
        self.0
            .collect("ListRolePolicies", Self::role(name), "PolicyNames", |n| {
                n.text.clone()
            })
            .await
    }

    /// The ARNs of the managed policies attached to the role, every page.
    pub async fn list_attached_role_policies(&self, name: &str) -> Result<Vec<String>, IamError> {
        self.0
            .collect(
                "ListAttachedRolePolicies",
                Self::role(name),
                "AttachedPolicies",
                |n| n.string("PolicyArn"),
            )
            .await
    }

    pub async fn detach_role_policy(&self, name: &str, policy_arn: &str) -> Result<(), IamError> {
        let p = Self::role(name).with("PolicyArn", policy_arn);
        self.0.call("DetachRolePolicy", p).await.map(drop)
    }

    /// The role's tags, every page.
    pub async fn list_role_tags(&self, name: &str) -> Result<Vec<(String, String)>, IamError> {
        self.0
            .collect("ListRoleTags", Self::role(name), "Tags", |t| {
                (t.string("Key"), t.string("Value"))
            })
            .await
    }

    pub async fn tag_role(&self, name: &str, tags: &[(String, String)]) -> Result<(), IamError> {
        let mut p = Self::role(name);
        p.tags(
            "Tags.member",
            tags.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))),
        );
        self.0.call("TagRole", p).await.map(drop)
    }

    pub async fn untag_role(&self, name: &str, keys: &[String]) -> Result<(), IamError> {
        let mut p = Self::role(name);
        p.list("TagKeys.member", keys.iter().map(String::as_str));
        self.0.call("UntagRole", p).await.map(drop)
    }

    /// Creates the service-linked role of an AWS service (`ecs.amazonaws.com`).
    pub async fn create_service_linked_role(&self, service: &str) -> Result<(), IamError> {
        let p = Params::new().with("AWSServiceName", service);
        self.0.call("CreateServiceLinkedRole", p).await.map(drop)
    }
}

/// Where IAM answers, by its endpoint rules: one global endpoint per partition, signed for
/// the partition's global region.
pub fn endpoint(region: &str, fips: bool, dual_stack: bool) -> Endpoint {
    // (normal, FIPS, dual-stack, FIPS and dual-stack), signing region.
    let ((normal, fips_url, dual, fips_dual), signing) = match crate::query::partition(region).0 {
        "aws-cn" => (
            (
                "iam.cn-north-1.amazonaws.com.cn",
                "iam-fips.amazonaws.com.cn",
                "iam.global.api.amazonwebservices.com.cn",
                "iam-fips.api.amazonwebservices.com.cn",
            ),
            "cn-north-1",
        ),
        "aws-us-gov" => (
            (
                "iam.us-gov.amazonaws.com",
                "iam.us-gov.amazonaws.com",
                "iam.us-gov.api.aws",
                "iam.us-gov.api.aws",
            ),
            "us-gov-west-1",
        ),
        "aws-iso" => (
            (
                "iam.us-iso-east-1.c2s.ic.gov",
                "iam-fips.us-iso-east-1.c2s.ic.gov",
                "iam.api.aws.ic.gov",
                "iam-fips.api.aws.ic.gov",
            ),
            "us-iso-east-1",
        ),
        "aws-iso-b" => (
            (
                "iam.us-isob-east-1.sc2s.sgov.gov",
                "iam-fips.us-isob-east-1.sc2s.sgov.gov",
                "iam.api.aws.scloud",
                "iam-fips.api.aws.scloud",
            ),
            "us-isob-east-1",
        ),
        "aws-iso-e" => (
            (
                "iam.eu-isoe-west-1.cloud.adc-e.uk",
                "iam-fips.cloud.adc-e.uk",
                "iam.api.cloud-aws.adc-e.uk",
                "iam-fips.api.cloud-aws.adc-e.uk",
            ),
            "eu-isoe-west-1",
        ),
        "aws-iso-f" => (
            (
                "iam.us-isof-south-1.csp.hci.ic.gov",
                "iam-fips.csp.hci.ic.gov",
                "iam.api.aws.hci.ic.gov",
                "iam-fips.api.aws.hci.ic.gov",
            ),
            "us-isof-south-1",
        ),
        "aws-eusc" => (
            (
                "iam.eusc-de-east-1.amazonaws.eu",
                "iam-fips.amazonaws.eu",
                "iam.global.api.amazonwebservices.eu",
                "iam-fips.api.amazonwebservices.eu",
            ),
            "eusc-de-east-1",
        ),
        _ => (
            (
                "iam.amazonaws.com",
                "iam-fips.amazonaws.com",
                "iam.global.api.aws",
                "iam-fips.global.api.aws",
            ),
            "us-east-1",
        ),
    };
    let host = match (fips, dual_stack) {
        (false, false) => normal,
        (true, false) => fips_url,
        (false, true) => dual,
        (true, true) => fips_dual,
    };
    Endpoint {
        url: format!("https://{host}"),
        signing_region: Some(signing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_follows_iam_s_endpoint_rules() {
        // The endpoint tests of IAM's rules, as aws-sdk-iam 1.133 ships them.
        let cases = [
            (
                "us-east-1",
                true,
                true,
                "iam-fips.global.api.aws",
                "us-east-1",
            ),
            (
                "us-east-1",
                true,
                false,
                "iam-fips.amazonaws.com",
                "us-east-1",
            ),
            ("us-east-1", false, true, "iam.global.api.aws", "us-east-1"),
            ("us-east-1", false, false, "iam.amazonaws.com", "us-east-1"),
            ("eu-west-1", false, false, "iam.amazonaws.com", "us-east-1"),
            (
                "cn-northwest-1",
                true,
                true,
                "iam-fips.api.amazonwebservices.com.cn",
                "cn-north-1",
            ),
            (
                "cn-northwest-1",
                true,
                false,
                "iam-fips.amazonaws.com.cn",
                "cn-north-1",
            ),
            (
                "cn-northwest-1",
                false,
                true,
                "iam.global.api.amazonwebservices.com.cn",
                "cn-north-1",
            ),
            (
                "cn-northwest-1",
                false,
                false,
                "iam.cn-north-1.amazonaws.com.cn",
                "cn-north-1",
            ),
            (
                "eusc-de-east-1",
                true,
                false,
                "iam-fips.amazonaws.eu",
                "eusc-de-east-1",
            ),
            (
                "eusc-de-east-1",
                false,
                false,
                "iam.eusc-de-east-1.amazonaws.eu",
                "eusc-de-east-1",
            ),
            (
                "us-iso-east-1",
                true,
                false,
                "iam-fips.us-iso-east-1.c2s.ic.gov",
                "us-iso-east-1",
            ),
            (
                "us-iso-east-1",
                false,
                false,
                "iam.us-iso-east-1.c2s.ic.gov",
                "us-iso-east-1",
            ),
            (
                "us-isob-east-1",
                true,
                false,
                "iam-fips.us-isob-east-1.sc2s.sgov.gov",
                "us-isob-east-1",
            ),
            (
                "us-isob-east-1",
                false,
                false,
                "iam.us-isob-east-1.sc2s.sgov.gov",
                "us-isob-east-1",
            ),
            (
                "eu-isoe-west-1",
                true,
                false,
                "iam-fips.cloud.adc-e.uk",
                "eu-isoe-west-1",
            ),
            (
                "eu-isoe-west-1",
                false,
                false,
                "iam.eu-isoe-west-1.cloud.adc-e.uk",
                "eu-isoe-west-1",
            ),
            (
                "us-isof-south-1",
                true,
                false,
                "iam-fips.csp.hci.ic.gov",
                "us-isof-south-1",
            ),
            (
                "us-isof-south-1",
                false,
                false,
                "iam.us-isof-south-1.csp.hci.ic.gov",
                "us-isof-south-1",
            ),
            (
                "us-gov-west-1",
                true,
                true,
                "iam.us-gov.api.aws",
                "us-gov-west-1",
            ),
            (
                "us-gov-west-1",
                true,
                false,
                "iam.us-gov.amazonaws.com",
                "us-gov-west-1",
            ),
            (
                "us-gov-west-1",
                false,
                true,
                "iam.us-gov.api.aws",
                "us-gov-west-1",
            ),
            (
                "us-gov-west-1",
                false,
                false,
                "iam.us-gov.amazonaws.com",
                "us-gov-west-1",
            ),
        ];
        for (region, fips, dual, host, signing) in cases {
            assert_eq!(
                endpoint(region, fips, dual),
                Endpoint {
                    url: format!("https://{host}"),
                    signing_region: Some(signing)
                },
                "{region} fips={fips} dual-stack={dual}"
            );
        }
        // A configured endpoint is used as it is, signed for the configured region.
        let custom = crate::query::resolve(&IAM, Some("https://example.com"), None, false, false);
        assert_eq!(
            custom,
            Ok(Endpoint {
                url: "https://example.com".into(),
                signing_region: None
            })
        );
        assert!(
            crate::query::resolve(&IAM, Some("https://example.com"), None, true, false).is_err()
        );
        assert!(crate::query::resolve(&IAM, None, None, false, false).is_err());
    }

    #[test]
    fn a_listing_and_a_role_are_read_from_iam_s_answers() {
        let xml = br#"<GetRoleResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><GetRoleResult><Role><Path>/</Path><AssumeRolePolicyDocument>%7B%7D</AssumeRolePolicyDocument><RoleName>r</RoleName><Arn>arn:aws:iam::123456789012:role/r</Arn><Tags><member><Key>agentbus:workspace</Key><Value>dev</Value></member></Tags><RoleLastUsed/></Role></GetRoleResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></GetRoleResponse>"#;
        let root = crate::query::parse(xml).expect("parses");
        let role = root
            .child("GetRoleResult")
            .and_then(|r| r.child("Role"))
            .expect("the role");
        assert_eq!(role.string("Arn"), "arn:aws:iam::123456789012:role/r");
        assert_eq!(role.string("AssumeRolePolicyDocument"), "%7B%7D");
        assert_eq!(
            role.pairs("Tags"),
            vec![("agentbus:workspace".into(), "dev".into())]
        );
        let xml = br#"<ListRolePoliciesResponse><ListRolePoliciesResult><IsTruncated>true</IsTruncated><Marker>m1</Marker><PolicyNames><member>task</member><member>extra</member></PolicyNames></ListRolePoliciesResult></ListRolePoliciesResponse>"#;
        let page = crate::query::parse(xml).expect("parses");
        let page = page.child("ListRolePoliciesResult").expect("the result");
        let names: Vec<&str> = page
            .list("PolicyNames")
            .iter()
            .map(|n| n.text.as_str())
            .collect();
        assert_eq!(names, ["task", "extra"]);
        assert_eq!(page.text("Marker"), Some("m1"));
    }
}
