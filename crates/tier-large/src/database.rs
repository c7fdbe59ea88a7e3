//! The workspace's Aurora cluster at run time: the server finds it by name
//! (`AGENTBUS_DATABASE_CLUSTER`), reads the password RDS manages for it from Secrets Manager,
//! and reads it again as RDS rotates it (every 7 days by default), so that new connections
//! use the new password. The password is never in the task's environment, a log or a plan.

use std::time::Duration;

use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tier_xs::aws::AwsClients;
use tier_xs::runtime::RuntimeError;

use crate::aws::LargeAws;
use crate::components::cluster::PORT;

/// How often the password is read again (a rotation takes effect for new connections only).
pub const REREAD_EVERY: Duration = Duration::from_secs(300);

/// Where the cluster answers and which secret holds its password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterAddress {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub secret_arn: String,
}

/// The secret RDS keeps for a managed master password.
#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

fn backend(op: &'static str) -> impl Fn(String) -> RuntimeError {
    move |message| RuntimeError::Backend { op, message }
}

/// Looks the cluster up.
pub async fn address(aws: &AwsClients, cluster: &str) -> Result<ClusterAddress, RuntimeError> {
    let out = aws
        .rds()
        .describe_db_clusters(cluster)
        .await
        .map_err(|e| backend("DescribeDBClusters")(tier_xs::engine::error_text(&e)))?;
    let c = out
        .into_iter()
        .next()
        .ok_or_else(|| backend("DescribeDBClusters")(format!("no cluster {cluster}")))?;
    let secret_arn = c.master_user_secret_arn.ok_or_else(|| {
        backend("DescribeDBClusters")(format!(
            "the cluster {cluster} has no password managed by RDS"
        ))
    })?;
    Ok(ClusterAddress {
        host: c.endpoint,
        port: c.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(PORT),
        database: c.database_name.unwrap_or_else(|| "postgres".into()),
        secret_arn,
    })
}

/// The connection options of `at`, with the password its secret holds now. TLS is required:
/// Aurora PostgreSQL offers it on every cluster.
pub async fn options(
    aws: &AwsClients,
    at: &ClusterAddress,
) -> Result<PgConnectOptions, RuntimeError> {
    let secret = aws
        .secrets()
        .get_secret_value()
        .secret_id(&at.secret_arn)
        .send()
        .await
        .map_err(|e| backend("GetSecretValue")(tier_xs::engine::error_text(&e)))?;
    let c: Credentials =
        serde_json::from_str(secret.secret_string().unwrap_or_default()).map_err(|e| {
            backend("GetSecretValue")(format!("the database's secret does not parse: {e}"))
        })?;
    Ok(PgConnectOptions::new()
        .host(&at.host)
        .port(at.port)
        .database(&at.database)
        .username(&c.username)
        .password(&c.password)
        .ssl_mode(PgSslMode::Require))
}
