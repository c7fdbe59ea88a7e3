//! An agent's proof of who it is, in place of a bearer token: an STS `GetCallerIdentity`
//! request signed with the agent's own AWS credentials (its ECS task role: the lane's role),
//! which the server sends to STS and does not sign itself. STS answers with the role the
//! agent runs under — so an agent's lane is what IAM gave its task, not what it claims — and
//! the signed headers bind the proof to one run and one workspace. (The same scheme as
//! Vault's AWS auth and the EKS authenticator.)
//!
//! The proof is `agentbus-aws.` followed by the request as base64url JSON. It carries no
//! secret: the signature is good for this one request for 15 minutes.

use std::time::SystemTime;

use aws_credential_types::provider::ProvideCredentials;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// What a proof begins with (the server tells proofs from tokens by it).
pub const PREFIX: &str = "agentbus-aws.";
/// The header naming the run (`tenant/run_id`) the agent works for.
pub const RUN_HEADER: &str = "x-agentbus-run";
/// The header naming the workspace the proof is for (its state machine's ARN).
pub const AUDIENCE_HEADER: &str = "x-agentbus-audience";
/// The one request a proof may carry.
pub const BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// How far a proof's signing time may be from now (STS's own limit).
pub const MAX_SKEW_SECONDS: u64 = 15 * 60;

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("no AWS credentials to prove the agent's identity with: {0}")]
    Credentials(String),
    #[error("signing the identity proof: {0}")]
    Sign(String),
    #[error("not an agent proof: {0}")]
    Malformed(String),
    #[error("the proof {0}")]
    Refused(String),
}

/// The signed request, as the server receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// What a proof says, once its form is checked: the STS call still decides who signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub tenant: String,
    pub run_id: String,
}

/// The STS endpoint both sides use: `AWS_ENDPOINT_URL_STS`, else the configuration's
/// endpoint (`AWS_ENDPOINT_URL`: an emulator), else the region's own.
pub fn sts_url(region: &str, endpoint: Option<&str>) -> String {
    let set = std::env::var("AWS_ENDPOINT_URL_STS")
        .ok()
        .filter(|v| !v.trim().is_empty());
    if let Some(url) = set.as_deref().or(endpoint) {
        return format!("{}/", url.trim().trim_end_matches('/'));
    }
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://sts.{region}.{domain}/")
}

fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split('/').next().unwrap_or(rest))
}

impl Proof {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        )
    }

    pub fn decode(token: &str) -> Result<Proof, ProofError> {
        let b64 = token
            .strip_prefix(PREFIX)
            .ok_or_else(|| ProofError::Malformed(format!("it does not begin with {PREFIX}")))?;
        // A signed STS request with a session token is a few KiB; refuse anything far larger.
        if b64.len() > 16 * 1024 {
            return Err(ProofError::Malformed("it is too long".into()));
        }
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|e| ProofError::Malformed(e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| ProofError::Malformed(e.to_string()))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Checks the form: the STS endpoint this server uses, the one request, signed over the
    /// run and the audience, at a time STS still accepts. Answers the run it claims.
    pub fn check(
        &self,
        sts_url: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<Claim, ProofError> {
        if self.url != sts_url {
            return Err(ProofError::Refused(format!(
                "is addressed to {}, not this workspace's STS endpoint",
                self.url
            )));
        }
        if self.body != BODY {
            return Err(ProofError::Refused(
                "carries another request than GetCallerIdentity".into(),
            ));
        }
        if self.header("host") != host_of(sts_url) {
            return Err(ProofError::Refused("names another host".into()));
        }
        if self.header(AUDIENCE_HEADER) != Some(audience) {
            return Err(ProofError::Refused("is for another workspace".into()));
        }
        let signed = self
            .header("authorization")
            .and_then(|a| a.split("SignedHeaders=").nth(1))
            .map(|s| s.split(',').next().unwrap_or_default())
            .unwrap_or_default();
        let signed: Vec<&str> = signed.split(';').collect();
        for h in ["host", AUDIENCE_HEADER, RUN_HEADER, "x-amz-date"] {
            if !signed.contains(&h) {
                return Err(ProofError::Refused(format!("does not sign {h}")));
            }
        }
        let at = self
            .header("x-amz-date")
            .and_then(|d| {
                time::PrimitiveDateTime::parse(
                    d,
                    time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
                )
                .ok()
            })
            .map(|d| d.assume_utc().unix_timestamp())
            .ok_or_else(|| ProofError::Refused("has no signing time".into()))?;
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        if at.abs_diff(now) > MAX_SKEW_SECONDS {
            return Err(ProofError::Refused("has expired".into()));
        }
        let (tenant, run_id) = self
            .header(RUN_HEADER)
            .and_then(|r| r.split_once('/'))
            .filter(|(t, r)| !t.is_empty() && !r.is_empty())
            .ok_or_else(|| ProofError::Refused("names no run".into()))?;
        Ok(Claim {
            tenant: tenant.to_string(),
            run_id: run_id.to_string(),
        })
    }
}

/// Signs a proof for `claim`'s run with the credentials of `cfg` (the task role on ECS).
pub async fn prove(
    cfg: &aws_config::SdkConfig,
    claim: &Claim,
    audience: &str,
) -> Result<String, ProofError> {
    let region = cfg
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".into());
    let creds = cfg
        .credentials_provider()
        .ok_or_else(|| ProofError::Credentials("none are configured".into()))?
        .provide_credentials()
        .await
        .map_err(|e| ProofError::Credentials(e.to_string()))?;
    let url = sts_url(&region, cfg.endpoint_url());
    let host = host_of(&url).unwrap_or_default().to_string();
    let run = format!("{}/{}", claim.tenant, claim.run_id);
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), host),
        ("content-type".into(), CONTENT_TYPE.into()),
        (AUDIENCE_HEADER.into(), audience.to_string()),
        (RUN_HEADER.into(), run),
    ];
    let identity = creds.into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("sts")
        .time(SystemTime::now())
        .settings(aws_sigv4::http_request::SigningSettings::default())
        .build()
        .map_err(|e| ProofError::Sign(e.to_string()))?
        .into();
    let signable = aws_sigv4::http_request::SignableRequest::new(
        "POST",
        url.as_str(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        aws_sigv4::http_request::SignableBody::Bytes(BODY.as_bytes()),
    )
    .map_err(|e| ProofError::Sign(e.to_string()))?;
    let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|e| ProofError::Sign(e.to_string()))?
        .into_parts();
    headers.extend(
        instructions
            .headers()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())),
    );
    Ok(Proof {
        url,
        headers,
        body: BODY.into(),
    }
    .encode())
}

/// The role an STS `GetCallerIdentity` answer names, as a role ARN: an assumed role's
/// `arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION` becomes `arn:aws:iam::ACCOUNT:role/NAME`.
pub fn role_of(sts_answer: &str) -> Option<String> {
    let arn = sts_answer
        .split("<Arn>")
        .nth(1)?
        .split("</Arn>")
        .next()?
        .trim();
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("sts"), Some(_), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let name = resource.strip_prefix("assumed-role/")?.split('/').next()?;
    Some(format!("arn:{partition}:iam::{account}:role/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof(headers: &[(&str, &str)]) -> Proof {
        Proof {
            url: "https://sts.eu-west-1.amazonaws.com/".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: BODY.into(),
        }
    }

    fn at(s: &str) -> SystemTime {
        let d = time::PrimitiveDateTime::parse(
            s,
            time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
        )
        .unwrap()
        .assume_utc();
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(d.unix_timestamp() as u64)
    }

    const SIGNED: &str = "AWS4-HMAC-SHA256 Credential=AKID/20261201/eu-west-1/sts/aws4_request, SignedHeaders=content-type;host;x-agentbus-audience;x-agentbus-run;x-amz-date, Signature=00";

    fn good() -> Proof {
        proof(&[
            ("host", "sts.eu-west-1.amazonaws.com"),
            (
                AUDIENCE_HEADER,
                "arn:aws:states:eu-west-1:1:stateMachine:agentbus-dev-lanes",
            ),
            (RUN_HEADER, "default/run-1"),
            ("x-amz-date", "20261201T120000Z"),
            ("authorization", SIGNED),
        ])
    }

    const URL: &str = "https://sts.eu-west-1.amazonaws.com/";
    const AUD: &str = "arn:aws:states:eu-west-1:1:stateMachine:agentbus-dev-lanes";

    #[test]
    fn a_proof_of_the_right_form_names_its_run() {
        let claim = good().check(URL, AUD, at("20261201T120500Z")).unwrap();
        assert_eq!(
            claim,
            Claim {
                tenant: "default".into(),
                run_id: "run-1".into()
            }
        );
        assert_eq!(Proof::decode(&good().encode()).unwrap(), good());
    }

    #[test]
    fn a_proof_for_another_endpoint_workspace_or_time_is_refused() {
        let now = at("20261201T120500Z");
        assert!(good().check("https://evil.example/", AUD, now).is_err());
        assert!(good().check(URL, "arn:other", now).is_err());
        assert!(good().check(URL, AUD, at("20261201T123000Z")).is_err());
        let mut other = good();
        other.body = "Action=AssumeRole".into();
        assert!(other.check(URL, AUD, now).is_err());
        // The run must be under the signature, or anyone could change it.
        let mut unsigned = good();
        unsigned.headers[4].1 = SIGNED.replace("x-agentbus-run;", "");
        assert!(unsigned.check(URL, AUD, now).is_err());
        assert!(Proof::decode("agentbus-aws.!!!").is_err());
        assert!(Proof::decode("ab_x_y").is_err());
    }

    #[test]
    fn the_role_is_read_from_an_assumed_role_arn() {
        let answer = "<GetCallerIdentityResult><Arn>arn:aws:sts::123456789012:assumed-role/agentbus-dev-agent-read-only/task-1</Arn></GetCallerIdentityResult>";
        assert_eq!(
            role_of(answer).as_deref(),
            Some("arn:aws:iam::123456789012:role/agentbus-dev-agent-read-only")
        );
        assert_eq!(
            role_of("<Arn>arn:aws:iam::123456789012:user/alice</Arn>"),
            None
        );
    }
}
