//! The server's own name (`agentbus deploy --domain NAME`), where nothing in front of the
//! server terminates TLS: it keeps NAME's A record pointing at its task and serves a publicly
//! trusted certificate for NAME that an ACME authority (Let's Encrypt by default; RFC 8555)
//! issued to it.
//!
//! - **The record.** A task's public address changes with every task (a Spot replacement, a
//!   new revision). The server finds its own (ECS's task metadata, then its network
//!   interface's public IP) and UPSERTs NAME's A record in the public hosted zone that holds
//!   NAME. When it stops it deletes the record, but only while the record still names its own
//!   address: Route 53 deletes a record only when the values given match, so a replacement
//!   task's record stays.
//! - **The certificate.** DNS-01 (RFC 8555, 8.4): the server writes the TXT record of
//!   `_acme-challenge.NAME`, waits until Route 53 reports the change on all its name servers
//!   (GetChange INSYNC), and lets the authority check it; no port beyond the dashboard's is
//!   opened. The certificate, its key and the ACME account's key are kept in a secret of
//!   their own, which the task role may write (the token secret it can only read): a new task
//!   serves the same certificate at once, and the authority is asked again only to renew.
//! - **Renewal** when a third of the certificate's life is left, at most 30 days before it
//!   ends; checked every 12 hours, retried with backoff after a failure.
//! - The certificate answers handshakes that name NAME (SNI). Others, and all of them until
//!   the certificate is there, get the workspace certificate: clients that reach the server
//!   by its address and pin that (`agentbus connect --env E --url https://ADDRESS:8080/`)
//!   work throughout.
//!
//! The task role may change only those two records (IAM's
//! `route53:ChangeResourceRecordSetsNormalizedRecordNames` and `…RecordTypes` conditions; see
//! the extra-small tier's task role).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};
use aws_smithy_types::error::display::DisplayErrorContext;
use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::aws::AwsClients;
use crate::config::DomainConfig;
use crate::server::tls::{self, CertSlot, Fingerprint};

/// Why the name's record or certificate could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("cannot find this task's public address: {0}")]
    Address(String),
    #[error(
        "no public hosted zone in this account holds {0}: create one in Route 53 whose name servers the domain's registrar names (or deploy without --domain)"
    )]
    NoZone(String),
    #[error("Route 53 {op}: {message}")]
    Route53 { op: &'static str, message: String },
    #[error("the certificate secret {secret}: {message}")]
    Secret { secret: String, message: String },
    #[error("ACME at {directory}: {message}")]
    Acme { directory: String, message: String },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The environment variable ECS gives every container: its task metadata endpoint (v4).
pub const METADATA_ENV: &str = "ECS_CONTAINER_METADATA_URI_V4";
/// The TTL of the records the server writes: a replacement task is found within a minute.
const RECORD_TTL: i64 = 60;
/// How often the certificate's dates are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(12 * 3600);
/// Retries after a failure start here and double up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(60);
const MAX_RETRY: Duration = Duration::from_secs(6 * 3600);
/// At most this long before its end a certificate is renewed.
const RENEW_BEFORE_SECONDS: i64 = 30 * 86_400;
/// How long Route 53 may take to report a change on all its name servers.
const IN_SYNC_LIMIT: Duration = Duration::from_secs(180);

/// What the certificate secret holds (JSON). The deploy creates it as `{"version": 1}`.
#[derive(Default, Serialize, Deserialize)]
struct Stored {
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account: Option<StoredAccount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate: Option<Issued>,
}

/// The ACME account the server made at `directory` (its key included).
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: serde_json::Value,
}

/// A certificate the authority at `directory` issued for `name`: the chain in PEM (the
/// server's certificate first) and its private key in PEM.
#[derive(Clone, Serialize, Deserialize)]
struct Issued {
    name: String,
    directory: String,
    chain: String,
    private_key: String,
}

/// When a certificate valid from `from` until `until` (Unix seconds) is renewed: with a third
/// of its life left, and at most 30 days before it ends.
pub fn renew_at(from: i64, until: i64) -> i64 {
    until - ((until - from) / 3).clamp(0, RENEW_BEFORE_SECONDS)
}

/// The normalized names of the records the server changes for `name` (lowercase, no final
/// dot, as IAM's `route53:ChangeResourceRecordSetsNormalizedRecordNames` compares them): the
/// name itself (A) and its ACME challenge (TXT).
pub fn record_names(name: &str) -> [String; 2] {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    [name.clone(), format!("_acme-challenge.{name}")]
}

/// The id of the public hosted zone that holds `name`: the one named by its longest suffix
/// (of two labels or more); `None` when the account has none.
pub async fn hosted_zone(aws: &AwsClients, name: &str) -> Result<Option<String>, DomainError> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    for i in 0..labels.len().saturating_sub(1) {
        let suffix = format!("{}.", labels[i..].join("."));
        let out = aws
            .route53()
            .list_hosted_zones_by_name()
            .dns_name(&suffix)
            .max_items(10)
            .send()
            .await
            .map_err(|e| DomainError::Route53 {
                op: "ListHostedZonesByName",
                message: DisplayErrorContext(e).to_string(),
            })?;
        let found = out.hosted_zones().iter().find(|z| {
            z.name().eq_ignore_ascii_case(&suffix) && !z.config().is_some_and(|c| c.private_zone())
        });
        if let Some(z) = found {
            return Ok(Some(z.id().trim_start_matches("/hostedzone/").to_string()));
        }
    }
    Ok(None)
}

/// Keeps the name's record and certificate until `stop`, then lets go of the record. The
/// certificate goes into `slot`, which the TLS listener answers with.
pub fn keep(
    aws: AwsClients,
    domain: DomainConfig,
    slot: Arc<CertSlot>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let keeper = Keeper {
            aws,
            domain,
            slot,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        };
        keeper.run(stop).await
    })
}

struct Keeper {
    aws: AwsClients,
    domain: DomainConfig,
    slot: Arc<CertSlot>,
    http: reqwest::Client,
}

impl Keeper {
    async fn run(self, stop: CancellationToken) {
        let name = self.domain.name.clone();
        let mut record: Option<(String, String)> = None;
        let mut retry = FIRST_RETRY;
        loop {
            if record.is_none() {
                match self.point_record().await {
                    Ok(r) => record = Some(r),
                    Err(e) => tracing::warn!(domain = %name, "the domain's record: {e}"),
                }
            }
            let checked = match self.certificate().await {
                Ok(next) => Some(next),
                Err(e) => {
                    tracing::warn!(domain = %name, "the domain's certificate: {e}");
                    None
                }
            };
            let wait = match (&record, checked) {
                (Some(_), Some(next)) => {
                    retry = FIRST_RETRY;
                    next
                }
                _ => {
                    let wait = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => break,
            }
        }
        if let Some((zone, ip)) = record {
            match self
                .change(&zone, ChangeAction::Delete, &name, RrType::A, &ip)
                .await
            {
                Ok(_) => tracing::info!(domain = %name, %ip, "the domain's A record is removed"),
                // Another task's address by now, or already gone: not ours to remove.
                Err(e) => tracing::info!(domain = %name, "the domain's A record stays: {e}"),
            }
        }
    }

    fn acme_error(&self, e: impl std::fmt::Display) -> DomainError {
        DomainError::Acme {
            directory: self.domain.acme_directory.clone(),
            message: e.to_string(),
        }
    }

    fn secret_error(&self, message: String) -> DomainError {
        DomainError::Secret {
            secret: self.domain.secret.clone(),
            message,
        }
    }

    /// Points the name at this task; returns the zone and the address.
    async fn point_record(&self) -> Result<(String, String), DomainError> {
        let (ip, zone) = tokio::try_join!(self.public_ip(), self.zone())?;
        self.change(
            &zone,
            ChangeAction::Upsert,
            &self.domain.name,
            RrType::A,
            &ip,
        )
        .await?;
        tracing::info!(domain = %self.domain.name, %ip, "the domain's A record points at this task");
        Ok((zone, ip))
    }

    /// This task's public IPv4 address: its private address from ECS's task metadata, then
    /// the public address of the network interface that has it.
    async fn public_ip(&self) -> Result<String, DomainError> {
        let uri = std::env::var(METADATA_ENV).map_err(|_| {
            DomainError::Address(format!(
                "{METADATA_ENV} is not set: the server does not run as an ECS task"
            ))
        })?;
        let fail = |e: reqwest::Error| DomainError::Address(format!("task metadata: {e}"));
        let body = self
            .http
            .get(&uri)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(fail)?
            .bytes()
            .await
            .map_err(fail)?;
        let meta: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| DomainError::Address(format!("task metadata: {e}")))?;
        let private = meta["Networks"]
            .as_array()
            .and_then(|n| n.iter().find_map(|n| n["IPv4Addresses"][0].as_str()))
            .ok_or_else(|| {
                DomainError::Address("the task metadata names no IPv4 address".into())
            })?;
        let interfaces = self
            .aws
            .ec2()
            .describe_network_interfaces(
                &[],
                &[crate::ec2::Filter::new("private-ip-address", private)],
            )
            .await
            .map_err(|e| {
                DomainError::Address(format!(
                    "DescribeNetworkInterfaces: {}",
                    DisplayErrorContext(e)
                ))
            })?;
        interfaces
            .into_iter()
            .find_map(|n| n.public_ip)
            .ok_or_else(|| {
                DomainError::Address(format!(
                    "the network interface of {private} has no public IP (the service assigns one)"
                ))
            })
    }

    async fn zone(&self) -> Result<String, DomainError> {
        hosted_zone(&self.aws, &self.domain.name)
            .await?
            .ok_or_else(|| DomainError::NoZone(self.domain.name.clone()))
    }

    /// One record change; returns the change's id.
    async fn change(
        &self,
        zone: &str,
        action: ChangeAction,
        name: &str,
        kind: RrType,
        value: &str,
    ) -> Result<String, DomainError> {
        let invalid = |e: aws_sdk_route53::error::BuildError| DomainError::Route53 {
            op: "ChangeResourceRecordSets",
            message: e.to_string(),
        };
        let set = ResourceRecordSet::builder()
            .name(name)
            .r#type(kind)
            .ttl(RECORD_TTL)
            .resource_records(
                ResourceRecord::builder()
                    .value(value)
                    .build()
                    .map_err(invalid)?,
            )
            .build()
            .map_err(invalid)?;
        let batch = ChangeBatch::builder()
            .comment("agentbus server (--domain)")
            .changes(
                Change::builder()
                    .action(action)
                    .resource_record_set(set)
                    .build()
                    .map_err(invalid)?,
            )
            .build()
            .map_err(invalid)?;
        let out = self
            .aws
            .route53()
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| DomainError::Route53 {
                op: "ChangeResourceRecordSets",
                message: DisplayErrorContext(e).to_string(),
            })?;
        Ok(out
            .change_info()
            .map(|c| c.id().to_string())
            .unwrap_or_default())
    }

    /// Waits until Route 53 reports the change on all its name servers.
    async fn in_sync(&self, change: &str) -> Result<(), DomainError> {
        let start = tokio::time::Instant::now();
        loop {
            let out = self
                .aws
                .route53()
                .get_change()
                .id(change.trim_start_matches("/change/"))
                .send()
                .await
                .map_err(|e| DomainError::Route53 {
                    op: "GetChange",
                    message: DisplayErrorContext(e).to_string(),
                })?;
            if out.change_info().map(|c| c.status()) == Some(&ChangeStatus::Insync) {
                return Ok(());
            }
            if start.elapsed() > IN_SYNC_LIMIT {
                return Err(DomainError::Route53 {
                    op: "GetChange",
                    message: format!(
                        "change {change} not on all name servers after {} s",
                        IN_SYNC_LIMIT.as_secs()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn read(&self) -> Result<Stored, DomainError> {
        let out = self
            .aws
            .secrets()
            .get_secret_value()
            .secret_id(&self.domain.secret)
            .send()
            .await
            .map_err(|e| self.secret_error(DisplayErrorContext(e).to_string()))?;
        serde_json::from_str(out.secret_string().unwrap_or_default())
            .map_err(|e| self.secret_error(format!("not the document the server writes: {e}")))
    }

    async fn write(&self, stored: &Stored) -> Result<(), DomainError> {
        let text = serde_json::to_string(stored).map_err(|e| self.secret_error(e.to_string()))?;
        self.aws
            .secrets()
            .put_secret_value()
            .secret_id(&self.domain.secret)
            .secret_string(text)
            .send()
            .await
            .map_err(|e| self.secret_error(DisplayErrorContext(e).to_string()))?;
        Ok(())
    }

    /// Serves the stored certificate while it is good, or has a new one issued; returns how
    /// long until the next look.
    async fn certificate(&self) -> Result<Duration, DomainError> {
        let mut stored = self.read().await?;
        if let Some(issued) = stored
            .certificate
            .clone()
            .filter(|c| c.name == self.domain.name && c.directory == self.domain.acme_directory)
        {
            let due = self.serve(&issued, now_unix())?;
            if due > 0 {
                return Ok(Duration::from_secs(due.unsigned_abs()).min(CHECK_EVERY));
            }
        }
        let issued = self.issue(&mut stored).await?;
        stored.certificate = Some(issued.clone());
        self.write(&stored).await?;
        // One due at once (a very short-lived certificate) is looked at again in a minute,
        // not in a loop.
        let due = self.serve(&issued, now_unix())?.max(60);
        Ok(Duration::from_secs(due.unsigned_abs()).min(CHECK_EVERY))
    }

    /// Puts `issued` into the slot while it is valid at `now`; returns the seconds until it
    /// is due for renewal (zero or less: now).
    fn serve(&self, issued: &Issued, now: i64) -> Result<i64, DomainError> {
        let key = tls::certified_key(&issued.chain, &issued.private_key)?;
        let Some((from, until)) = key.cert.first().and_then(|c| tls::validity(c)) else {
            return Err(tls::TlsError::Unreadable("the issued certificate's dates".into()).into());
        };
        let fingerprint = key.cert.first().map(|c| Fingerprint::of(c));
        if now < until && self.slot.named_fingerprint() != fingerprint {
            self.slot.set_named(&self.domain.name, key);
            tracing::info!(
                domain = %self.domain.name,
                until = %time::OffsetDateTime::from_unix_timestamp(until).map(|t| t.to_string()).unwrap_or_default(),
                "serving the domain's certificate"
            );
        }
        Ok(renew_at(from, until) - now)
    }

    /// The stored ACME account, or a new one (stored before it is used).
    async fn account(&self, stored: &mut Stored) -> Result<Account, DomainError> {
        let directory = &self.domain.acme_directory;
        let builder = || Account::builder_with_http(Box::new(AcmeHttp(self.http.clone())));
        if let Some(a) = stored
            .account
            .as_ref()
            .filter(|a| &a.directory == directory)
        {
            let credentials: AccountCredentials = serde_json::from_value(a.credentials.clone())
                .map_err(|e| self.secret_error(format!("the ACME account: {e}")))?;
            return builder()
                .from_credentials(credentials)
                .await
                .map_err(|e| self.acme_error(e));
        }
        let (account, credentials) = builder()
            .create(
                &NewAccount {
                    contact: &[],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                directory.clone(),
                None,
            )
            .await
            .map_err(|e| self.acme_error(e))?;
        stored.account = Some(StoredAccount {
            directory: directory.clone(),
            credentials: serde_json::to_value(&credentials)
                .map_err(|e| self.secret_error(e.to_string()))?,
        });
        self.write(stored).await?;
        tracing::info!(directory = %directory, "ACME account created");
        Ok(account)
    }

    /// A certificate for the name, by DNS-01.
    async fn issue(&self, stored: &mut Stored) -> Result<Issued, DomainError> {
        let name = &self.domain.name;
        let account = self.account(stored).await?;
        let zone = self.zone().await?;
        let identifiers = [Identifier::Dns(name.clone())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| self.acme_error(e))?;
        tracing::info!(domain = %name, "ordering a certificate");
        let mut written = Vec::new();
        let proved = self.prove(&mut order, &zone, &mut written).await;
        let ready = match proved {
            Ok(()) => order
                .poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(180)))
                .await
                .map_err(|e| self.acme_error(e)),
            Err(e) => Err(e),
        };
        // The challenge's record is not needed after the check, whatever its outcome.
        for (record, value) in written {
            if let Err(e) = self
                .change(&zone, ChangeAction::Delete, &record, RrType::Txt, &value)
                .await
            {
                tracing::warn!(domain = %name, "the challenge record stays: {e}");
            }
        }
        match ready? {
            OrderStatus::Ready => {}
            other => {
                return Err(self.acme_error(format!(
                    "the order is {other:?}: the authority could not read the challenge's TXT record (is the hosted zone the one the domain's registrar names?)"
                )));
            }
        }
        let private_key = order.finalize().await.map_err(|e| self.acme_error(e))?;
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(180)))
            .await
            .map_err(|e| self.acme_error(e))?;
        tracing::info!(domain = %name, "certificate issued");
        Ok(Issued {
            name: name.clone(),
            directory: self.domain.acme_directory.clone(),
            chain,
            private_key,
        })
    }

    /// Answers the order's pending DNS-01 challenges; `written` collects the TXT records
    /// written (name, value) for their removal.
    async fn prove(
        &self,
        order: &mut instant_acme::Order,
        zone: &str,
        written: &mut Vec<(String, String)>,
    ) -> Result<(), DomainError> {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(|e| self.acme_error(e))?;
            match authorization.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(self.acme_error(format!("an authorization is {other:?}")));
                }
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Dns01)
                .ok_or_else(|| self.acme_error("the authority offers no dns-01 challenge"))?;
            let record = format!(
                "_acme-challenge.{}",
                challenge.identifier().to_string().trim_start_matches("*.")
            );
            let value = format!("\"{}\"", challenge.key_authorization().dns_value());
            let change = self
                .change(zone, ChangeAction::Upsert, &record, RrType::Txt, &value)
                .await?;
            written.push((record, value));
            self.in_sync(&change).await?;
            challenge
                .set_ready()
                .await
                .map_err(|e| self.acme_error(e))?;
        }
        Ok(())
    }
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The ACME client's requests over reqwest (the HTTP client the server already has), with the
/// platform's trusted roots (`SSL_CERT_FILE` names others).
struct AcmeHttp(reqwest::Client);

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(never) => match never {},
            };
            let url = parts.uri.to_string();
            let response = client
                .request(parts.method, url)
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let mut head = http::Response::builder().status(response.status());
            if let Some(h) = head.headers_mut() {
                *h = response.headers().clone();
            }
            let bytes = response
                .bytes()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let (parts, ()) = head
                .body(())
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?
                .into_parts();
            Ok(BytesResponse {
                parts,
                body: Box::new(bytes),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_renewed_with_a_third_of_its_life_left_and_at_most_thirty_days_before_its_end()
     {
        let day = 86_400;
        // Let's Encrypt's 90 days: renewed at day 60.
        assert_eq!(renew_at(0, 90 * day), 60 * day);
        // A year: 30 days before the end.
        assert_eq!(renew_at(0, 365 * day), 335 * day);
        // Six days: at day 4.
        assert_eq!(renew_at(0, 6 * day), 4 * day);
        // Dates out of order renew at once.
        assert_eq!(renew_at(10, 5), 5);
    }

    #[test]
    fn the_records_the_server_may_change_are_the_name_and_its_challenge_in_iam_s_form() {
        assert_eq!(
            record_names("MCP.Example.com."),
            [
                "mcp.example.com".to_string(),
                "_acme-challenge.mcp.example.com".to_string()
            ]
        );
    }
}
