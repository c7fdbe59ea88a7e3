//! The one typed source of the server's configuration. The deploy renders it into the
//! dashboard task's environment; the server reads it back from the same variable names.

use serde::Serialize;

use crate::workspace::{Tier, Workspace};

/// The container port, used by the task definition, the security group, the health check
/// and the server itself.
pub const DASHBOARD_PORT: u16 = 8080;

/// Where the agentbus binary sits in the container image.
pub const IMAGE_BINARY_PATH: &str = "/usr/local/bin/agentbus";
/// Where the agents' image keeps the `agentbus-agent` binary (its entrypoint).
pub const AGENT_BINARY_PATH: &str = "/usr/local/bin/agentbus-agent";

pub const ENV_ENV: &str = "AGENTBUS_ENV";
pub const ENV_TIER: &str = "AGENTBUS_TIER";
pub const ENV_PORT: &str = "AGENTBUS_PORT";
pub const ENV_KV_TABLE: &str = "AGENTBUS_KV_TABLE";
pub const ENV_EVENT_BUS: &str = "AGENTBUS_EVENT_BUS";
pub const ENV_SECRET: &str = "AGENTBUS_SECRET";
pub const ENV_EVENTS_LOG_GROUP: &str = "AGENTBUS_EVENTS_LOG_GROUP";
pub const ENV_REGION: &str = "AWS_REGION";
/// `json` for one JSON object per log line (what a deployed task writes, for Logs Insights).
pub const ENV_LOG_FORMAT: &str = "AGENTBUS_LOG_FORMAT";
/// The log group the server sends its metrics to as EMF documents (only where a layer asks
/// for them: custom metrics are priced per metric).
pub const ENV_METRICS_LOG_GROUP: &str = "AGENTBUS_METRICS_LOG_GROUP";
/// `workspace-certificate`: the server speaks TLS itself, with the certificate the workspace
/// secret holds (nothing in front of it terminates TLS).
pub const ENV_TLS: &str = "AGENTBUS_TLS";
/// The one value of [`ENV_TLS`].
pub const TLS_WORKSPACE_CERTIFICATE: &str = "workspace-certificate";
/// `--domain`: the name the server keeps pointing at its task and gets a publicly trusted
/// certificate for (`server::domain`).
pub const ENV_DOMAIN: &str = "AGENTBUS_DOMAIN";
/// The ACME directory that certificate comes from.
pub const ENV_ACME_DIRECTORY: &str = "AGENTBUS_ACME_DIRECTORY";
/// The secret the server keeps that certificate, its key and its ACME account in.
pub const ENV_DOMAIN_SECRET: &str = "AGENTBUS_DOMAIN_SECRET";
/// Let's Encrypt's production directory, the default ACME directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Seconds between two sends of the server's metrics (default 60: CloudWatch's resolution).
pub const ENV_METRICS_INTERVAL: &str = "AGENTBUS_METRICS_INTERVAL_SECONDS";

/// The names every server of a workspace needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerConfig {
    pub env: String,
    pub tier: Tier,
    pub region: String,
    pub port: u16,
    pub kv_table: String,
    pub event_bus: String,
    pub secret: String,
    pub events_log_group: String,
    /// Where the server sends its metrics, if anywhere ([`ENV_METRICS_LOG_GROUP`]).
    pub metrics_log_group: Option<String>,
    /// The server speaks TLS with the workspace certificate ([`ENV_TLS`]).
    pub tls: bool,
    /// The name it answers to with a publicly trusted certificate, when it has one.
    pub domain: Option<DomainConfig>,
}

/// A server's own name (`deploy --domain`): the server keeps the name's A record pointing at
/// its task and serves a certificate ACME issued for it, renewed in time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DomainConfig {
    pub name: String,
    pub acme_directory: String,
    /// The secret that holds the certificate, its key and the ACME account's key.
    pub secret: String,
}

impl ServerConfig {
    /// The configuration of the extra-small tier's server for a workspace.
    pub fn for_workspace(ws: &Workspace, tier: Tier) -> Self {
        ServerConfig {
            env: ws.env.to_string(),
            tier,
            region: ws.region.clone(),
            port: DASHBOARD_PORT,
            kv_table: ws.name("kv"),
            event_bus: ws.id(),
            secret: ws.secret_name("server"),
            events_log_group: format!("/aws/events/{}", ws.id()),
            metrics_log_group: None,
            tls: false,
            domain: None,
        }
    }

    /// Reads the configuration back from the environment the deploy gave the task; names
    /// every missing variable at once.
    pub fn from_env() -> Result<Self, String> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let names = [
            ENV_ENV,
            ENV_TIER,
            ENV_REGION,
            ENV_KV_TABLE,
            ENV_EVENT_BUS,
            ENV_SECRET,
            ENV_EVENTS_LOG_GROUP,
        ];
        let missing: Vec<&str> = names.iter().copied().filter(|k| get(k).is_none()).collect();
        if !missing.is_empty() {
            return Err(format!(
                "the server needs these environment variables, which the deploy sets on the task: {} \
                 (to run locally without AWS, use `agentbus up`)",
                missing.join(", ")
            ));
        }
        let v = |k: &str| get(k).unwrap_or_default();
        let tier = v(ENV_TIER)
            .parse::<Tier>()
            .map_err(|e| format!("{ENV_TIER}: {e}"))?;
        let port = match get(ENV_PORT) {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{ENV_PORT}={p:?} is not a port number"))?,
            None => DASHBOARD_PORT,
        };
        let tls = match get(ENV_TLS).as_deref() {
            None => false,
            Some(TLS_WORKSPACE_CERTIFICATE) => true,
            Some(other) => {
                return Err(format!(
                    "{ENV_TLS}={other:?}: the one value is {TLS_WORKSPACE_CERTIFICATE:?}"
                ));
            }
        };
        let domain = match (
            get(ENV_DOMAIN),
            get(ENV_ACME_DIRECTORY),
            get(ENV_DOMAIN_SECRET),
        ) {
            (None, _, _) => None,
            (Some(name), Some(acme_directory), Some(secret)) if tls => Some(DomainConfig {
                name,
                acme_directory,
                secret,
            }),
            (Some(_), ..) => {
                return Err(format!(
                    "{ENV_DOMAIN} needs {ENV_ACME_DIRECTORY}, {ENV_DOMAIN_SECRET} and {ENV_TLS}={TLS_WORKSPACE_CERTIFICATE}, which the deploy sets with it"
                ));
            }
        };
        Ok(ServerConfig {
            env: v(ENV_ENV),
            tier,
            region: v(ENV_REGION),
            port,
            kv_table: v(ENV_KV_TABLE),
            event_bus: v(ENV_EVENT_BUS),
            secret: v(ENV_SECRET),
            events_log_group: v(ENV_EVENTS_LOG_GROUP),
            metrics_log_group: get(ENV_METRICS_LOG_GROUP),
            tls,
            domain,
        })
    }

    /// As environment variables for the task definition.
    pub fn to_env(&self) -> Vec<(String, String)> {
        vec![
            (ENV_ENV.into(), self.env.clone()),
            (ENV_TIER.into(), self.tier.short().into()),
            (ENV_REGION.into(), self.region.clone()),
            (ENV_PORT.into(), self.port.to_string()),
            (ENV_KV_TABLE.into(), self.kv_table.clone()),
            (ENV_EVENT_BUS.into(), self.event_bus.clone()),
            (ENV_SECRET.into(), self.secret.clone()),
            (ENV_EVENTS_LOG_GROUP.into(), self.events_log_group.clone()),
            (ENV_LOG_FORMAT.into(), "json".into()),
        ]
        .into_iter()
        .chain(
            self.metrics_log_group
                .iter()
                .map(|g| (ENV_METRICS_LOG_GROUP.to_string(), g.clone())),
        )
        .chain(
            self.tls
                .then(|| (ENV_TLS.to_string(), TLS_WORKSPACE_CERTIFICATE.to_string())),
        )
        .chain(self.domain.iter().flat_map(|d| {
            [
                (ENV_DOMAIN.to_string(), d.name.clone()),
                (ENV_ACME_DIRECTORY.to_string(), d.acme_directory.clone()),
                (ENV_DOMAIN_SECRET.to_string(), d.secret.clone()),
            ]
        }))
        .collect()
    }
}
