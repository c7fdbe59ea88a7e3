//! The domain certificate's secret (`agentbus/{env}/domain-certificate`), wanted with
//! `deploy --domain NAME`: the server (`server::domain`) keeps the certificate ACME issued for
//! NAME, its key and its ACME account in it. The deploy makes it empty (`{"version": 1}`) and
//! never reads or shows its value; the task role may write it, unlike the token secret. It is
//! not data: what it holds is issued again when it is gone, so it goes with the domain
//! (without a recovery window).
//!
//! Where the dashboard answers (`agentbus status`, `agentbus connect --env`) is then
//! `https://NAME:8080/`, verified as any public site is, not by a pin.

use async_trait::async_trait;
use aws_sdk_secretsmanager::operation::create_secret::CreateSecretError;
use aws_sdk_secretsmanager::operation::delete_secret::DeleteSecretError;

use crate::aws::AwsClients;
use crate::components::secret::{SecretTags, deletion_in_progress, observe_secret, secret_tag};
use crate::config::DASHBOARD_PORT;
use crate::cost::base::base_cost;
use crate::cost::{CostContext, CostError, CostLine};
use crate::engine::permissions::Permissions;
use crate::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, SETTLE_LIMIT, TagApi, gone,
    made, settle,
};
use crate::workspace::Workspace;

pub struct DomainCertificate {
    pub meta: Meta,
    /// The name the server answers to; `None`: no domain, nothing wanted.
    pub domain: Option<String>,
}

/// What the secret is for, as its description says.
fn description(domain: &str) -> String {
    format!("agentbus: the ACME certificate of {domain} (written by the dashboard server)")
}

/// A domain name as `--domain` takes it: letters, digits and hyphens in labels of 1 to 63
/// characters (no hyphen at either end), at least two labels, 253 characters at most; one
/// final dot allowed; lowercased. No wildcard: the server answers to one name.
pub fn parse_domain(s: &str) -> Result<String, String> {
    let name = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(format!(
            "{s:?} is not a domain name the server can answer to (e.g. mcp.example.com: letters, digits and hyphens, at least two labels, no wildcard)"
        ));
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!(
            "{s:?} is an IP address, not a domain name: ACME certifies names"
        ));
    }
    Ok(name)
}

#[async_trait]
impl Resource for DomainCertificate {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "secret"
    }
    fn wanted(&self) -> bool {
        self.domain.is_some()
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        // Secret ARNs end in six random characters.
        let secret = ws.arn(
            "secretsmanager",
            &format!("secret:{}-??????", self.meta.name),
        );
        Permissions::new()
            .read(&["secretsmanager:DescribeSecret"], &[&secret])
            // The hosted zone that holds the domain (no resource in IAM).
            .read(
                &["route53:ListHostedZonesByName"],
                &crate::engine::permissions::any(),
            )
            .write(
                &[
                    "secretsmanager:CreateSecret",
                    "secretsmanager:UpdateSecret",
                    "secretsmanager:DeleteSecret",
                    "secretsmanager:TagResource",
                    "secretsmanager:UntagResource",
                ],
                &[secret],
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&SecretTags)
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new().set(
            "description",
            description(self.domain.as_deref().unwrap_or_default()),
        )
    }
    /// The secret, and (at the same time) that a public hosted zone holds the domain: without
    /// one the server could neither point the name at itself nor prove it to the authority,
    /// so the plan stops and says so.
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let zone = async {
            let Some(domain) = &self.domain else {
                return Ok(());
            };
            match crate::server::domain::hosted_zone(aws, domain).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(EngineError::Invalid(
                    crate::server::domain::DomainError::NoZone(domain.clone()).to_string(),
                )),
                Err(e) => Err(EngineError::Invalid(format!("--domain {domain}: {e}"))),
            }
        };
        let (secret, ()) = tokio::try_join!(observe_secret(aws, &self.meta), zone)?;
        Ok(secret)
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        let mut req = aws
            .secrets()
            .create_secret()
            .name(&m.name)
            .description(description(self.domain.as_deref().unwrap_or_default()))
            .secret_string(r#"{"version":1}"#);
        for (k, v) in &m.tags {
            req = req.tags(secret_tag(k, v));
        }
        made(
            settle(SETTLE_LIMIT, deletion_in_progress, || req.clone().send()).await,
            CreateSecretError::is_resource_exists_exception,
            m,
            "CreateSecret",
        )
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        if c.fields.iter().any(|f| f == "description") {
            aws.secrets()
                .update_secret()
                .secret_id(&self.meta.name)
                .description(description(self.domain.as_deref().unwrap_or_default()))
                .send()
                .await
                .map_err(|e| self.meta.fail("UpdateSecret", e))?;
        }
        Ok(())
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        gone(
            aws.secrets()
                .delete_secret()
                .secret_id(&self.meta.name)
                .force_delete_without_recovery(true)
                .send()
                .await,
            DeleteSecretError::is_resource_not_found_exception,
            &self.meta,
            "DeleteSecret",
        )
    }
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        if self.domain.is_none() {
            return Ok(Vec::new());
        }
        let (p, _) = base_cost(ctx)?;
        Ok(vec![CostLine::new(
            self.meta.id,
            "secret",
            1.0,
            "secret-month",
            p.secret_month,
        )])
    }
    fn address(&self, _observed: &Observed) -> Option<String> {
        let domain = self.domain.as_deref()?;
        Some(format!("https://{domain}:{DASHBOARD_PORT}/"))
    }
    fn notes(&self) -> Vec<String> {
        match &self.domain {
            Some(d) => vec![format!(
                "the server keeps {d}'s A record pointing at its task and a certificate for it from ACME (DNS-01) in this secret; needs a public Route 53 hosted zone holding {d}"
            )],
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_is_a_lowercased_host_name_of_two_labels_or_more() {
        assert_eq!(
            parse_domain("MCP.Example.com.").as_deref(),
            Ok("mcp.example.com")
        );
        assert_eq!(parse_domain("a-1.b.test").as_deref(), Ok("a-1.b.test"));
        for bad in [
            "",
            "localhost",
            "*.example.com",
            "-a.example.com",
            "a-.example.com",
            "a..example.com",
            "exa mple.com",
            "under_score.example.com",
            "203.0.113.7",
            &format!("{}.com", "a".repeat(64)),
            &format!("{}com", "abcdefghi.".repeat(26)),
        ] {
            assert!(parse_domain(bad).is_err(), "{bad:?}");
        }
    }
}
