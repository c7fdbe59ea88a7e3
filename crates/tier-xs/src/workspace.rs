//! Workspace identity: the validated environment name, the tier ladder, and the one
//! naming function every resource name comes from.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Product prefix of every physical name and the source of every event this system emits.
pub const PREFIX: &str = "agentbus";

/// Tag keys put on everything that takes tags. One case, one place.
pub const TAG_WORKSPACE: &str = "agentbus:workspace";
pub const TAG_TIER: &str = "agentbus:tier";
pub const TAG_ENV: &str = "agentbus:env";
pub const TAG_COMPONENT: &str = "agentbus:component";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error(
        "invalid env {0:?}: use 1-16 characters of lowercase letters, digits and '-', starting with a letter or digit"
    )]
    InvalidEnv(String),
    #[error("unknown tier {0:?}: expected one of extra-small (xs), small, medium, large")]
    UnknownTier(String),
}

/// A validated environment name (`dev`, `staging`, `prod`, `pr-123` ...).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Env(String);

impl Env {
    pub fn new(name: &str) -> Result<Self, NameError> {
        let ok = (1..=16).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if ok {
            Ok(Env(name.to_string()))
        } else {
            Err(NameError::InvalidEnv(name.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `prod` keeps deletion protection on and secrets recoverable for 30 days.
    pub fn is_prod(&self) -> bool {
        self.0 == "prod"
    }
}

impl TryFrom<String> for Env {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Env::new(&s)
    }
}

impl From<Env> for String {
    fn from(e: Env) -> String {
        e.0
    }
}

impl fmt::Display for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Env {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Env::new(s)
    }
}

/// The tier ladder. Ordering is meaningful: a higher tier contains every lower one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    ExtraSmall,
    Small,
    Medium,
    Large,
}

impl Tier {
    pub const ALL: [Tier; 4] = [Tier::ExtraSmall, Tier::Small, Tier::Medium, Tier::Large];

    pub fn name(self) -> &'static str {
        match self {
            Tier::ExtraSmall => "extra-small",
            Tier::Small => "small",
            Tier::Medium => "medium",
            Tier::Large => "large",
        }
    }

    /// Short form used in tags and flags.
    pub fn short(self) -> &'static str {
        match self {
            Tier::ExtraSmall => "xs",
            Tier::Small => "small",
            Tier::Medium => "medium",
            Tier::Large => "large",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Tier {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "xs" | "extra-small" | "extrasmall" | "extra_small" => Ok(Tier::ExtraSmall),
            "s" | "small" => Ok(Tier::Small),
            "m" | "medium" => Ok(Tier::Medium),
            "l" | "large" => Ok(Tier::Large),
            _ => Err(NameError::UnknownTier(s.to_string())),
        }
    }
}

/// Where a workspace lives: env, account and region. Every physical name derives from this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Workspace {
    pub env: Env,
    pub account: String,
    pub region: String,
    /// AWS partition (`aws`, `aws-cn`, `aws-us-gov`), for ARNs.
    pub partition: String,
}

impl Workspace {
    pub fn new(env: Env, account: impl Into<String>, region: impl Into<String>) -> Self {
        let region = region.into();
        let partition = partition_of(&region);
        Workspace {
            env,
            account: account.into(),
            region,
            partition: partition.to_string(),
        }
    }

    /// `agentbus-{env}`: the workspace's name and the value of its `agentbus:workspace` tag.
    pub fn id(&self) -> String {
        format!("{PREFIX}-{}", self.env)
    }

    /// `agentbus-{env}-{component}`: the name of every regional resource.
    pub fn name(&self, component: &str) -> String {
        format!("{PREFIX}-{}-{component}", self.env)
    }

    /// Names that are global across accounts (S3 buckets) carry the account and region.
    pub fn global_name(&self, component: &str) -> String {
        format!(
            "{PREFIX}-{}-{component}-{}-{}",
            self.env, self.account, self.region
        )
    }

    /// Secret names use a path: `agentbus/{env}/{name}`.
    pub fn secret_name(&self, name: &str) -> String {
        format!("{PREFIX}/{}/{name}", self.env)
    }

    pub fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{resource}",
            self.partition, self.region, self.account
        )
    }

    /// IAM is global: no region in its ARNs.
    pub fn iam_arn(&self, resource: &str) -> String {
        format!("arn:{}:iam::{}:{resource}", self.partition, self.account)
    }

    /// The four workspace tags for a component of a tier.
    pub fn tags(&self, tier: Tier, component: &str) -> Vec<(String, String)> {
        vec![
            (TAG_WORKSPACE.to_string(), self.id()),
            (TAG_TIER.to_string(), tier.short().to_string()),
            (TAG_ENV.to_string(), self.env.to_string()),
            (TAG_COMPONENT.to_string(), component.to_string()),
        ]
    }
}

/// The AWS partition of a region (`aws`, `aws-cn`, `aws-us-gov`), for ARNs.
pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_validation() {
        for ok in ["dev", "prod", "pr-12", "a", "abcdefghijklmnop"] {
            assert!(Env::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Dev",
            "dev_1",
            "-dev",
            "dev-",
            "abcdefghijklmnopq",
            "dév",
            "a b",
        ] {
            assert_eq!(
                Env::new(bad),
                Err(NameError::InvalidEnv(bad.to_string())),
                "{bad}"
            );
        }
    }

    #[test]
    fn tiers_parse_and_order() {
        assert_eq!("xs".parse::<Tier>(), Ok(Tier::ExtraSmall));
        assert_eq!("extra-small".parse::<Tier>(), Ok(Tier::ExtraSmall));
        assert_eq!("Large".parse::<Tier>(), Ok(Tier::Large));
        assert!("huge".parse::<Tier>().is_err());
        assert!(Tier::ExtraSmall < Tier::Small && Tier::Medium < Tier::Large);
    }

    #[test]
    fn names_are_deterministic() {
        let ws = Workspace::new(
            Env::new("dev").unwrap_or_else(|e| panic!("{e}")),
            "123456789012",
            "us-east-1",
        );
        assert_eq!(ws.name("kv"), "agentbus-dev-kv");
        assert_eq!(
            ws.global_name("artifacts"),
            "agentbus-dev-artifacts-123456789012-us-east-1"
        );
        assert_eq!(ws.secret_name("server"), "agentbus/dev/server");
        assert_eq!(
            ws.arn("dynamodb", "table/agentbus-dev-kv"),
            "arn:aws:dynamodb:us-east-1:123456789012:table/agentbus-dev-kv"
        );
        assert_eq!(ws.iam_arn("role/x"), "arn:aws:iam::123456789012:role/x");
        let tags = ws.tags(Tier::ExtraSmall, "kv");
        assert!(tags.contains(&("agentbus:tier".into(), "xs".into())));
        assert!(tags.contains(&("agentbus:workspace".into(), "agentbus-dev".into())));
    }
}
