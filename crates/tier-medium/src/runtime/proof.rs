//! The server's side of the agents' proofs of identity ([`agents::proof`]): it sends the
//! agent's signed `GetCallerIdentity` to STS as it is, reads which role signed it, and lets
//! that role's lane act for the run the proof names — while that run is not over.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agents::lane::Lane;
use agents::proof::{Proof, role_of};
use agents::run::run_prefix;
use async_trait::async_trait;
use tier_xs::runtime::Tenant;
use tier_xs::server::auth::{AgentProof, Identity, Role};

use super::sfn::StepFunctions;

/// Checks agents' proofs against STS and the runs table.
pub struct StsAgents {
    http: reqwest::Client,
    sts_url: String,
    /// The workspace a proof must name (its state machine's ARN).
    audience: String,
    /// Each lane's role ARN.
    roles: Vec<(Lane, String)>,
    runs: Arc<StepFunctions>,
}

impl StsAgents {
    pub fn new(
        region: &str,
        endpoint: Option<&str>,
        audience: &str,
        roles: Vec<(Lane, String)>,
        runs: Arc<StepFunctions>,
    ) -> Self {
        StsAgents {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            sts_url: agents::proof::sts_url(region, endpoint),
            audience: audience.to_string(),
            roles,
            runs,
        }
    }

    async fn check(&self, token: &str) -> Result<Identity, String> {
        let proof = Proof::decode(token).map_err(|e| e.to_string())?;
        let claim = proof
            .check(&self.sts_url, &self.audience, SystemTime::now())
            .map_err(|e| e.to_string())?;
        let mut req = self.http.post(&self.sts_url).body(proof.body.clone());
        for (k, v) in &proof.headers {
            // reqwest sets the host from the URL, which `check` compared with the header.
            if !k.eq_ignore_ascii_case("host") {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let answer = req.send().await.map_err(|e| format!("STS: {e}"))?;
        let status = answer.status();
        let body = answer.text().await.map_err(|e| format!("STS: {e}"))?;
        if !status.is_success() {
            return Err(format!("STS refused the proof ({status})"));
        }
        let role = role_of(&body).ok_or("the proof was not signed by a role")?;
        let lane = self
            .roles
            .iter()
            .find(|(_, arn)| *arn == role)
            .map(|(lane, _)| *lane)
            .ok_or_else(|| format!("{role} is not one of this workspace's agent roles"))?;
        let tenant = Tenant::new(&claim.tenant).map_err(|e| e.to_string())?;
        if !self
            .runs
            .is_live(&claim.tenant, &claim.run_id)
            .await
            .map_err(|e| e.to_string())?
        {
            return Err(format!(
                "run {} of tenant {} is not in progress",
                claim.run_id, claim.tenant
            ));
        }
        let mut id = Identity::agent(
            format!("agent:{}:{}", lane.as_str(), claim.run_id),
            tenant,
            if lane == Lane::Execute {
                Role::User
            } else {
                Role::Viewer
            },
            &claim.run_id,
        );
        if lane != Lane::Execute {
            id.records = Some(run_prefix(&claim.run_id));
        }
        Ok(id)
    }
}

#[async_trait]
impl AgentProof for StsAgents {
    async fn verify(&self, proof: &str) -> Option<Identity> {
        match self.check(proof).await {
            Ok(id) => Some(id),
            Err(why) => {
                tracing::warn!("an agent's proof of identity was refused: {why}");
                None
            }
        }
    }
}
