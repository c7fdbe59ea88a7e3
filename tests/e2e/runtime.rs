//! The runtime conformance suites against the AWS backends (DynamoDB, EventBridge + Logs,
//! Secrets Manager) on the emulator, in a deployed extra-small workspace. The same suites
//! run against the embedded backend in tier-xs's unit tests.

use aws_sdk_dynamodb::types::AttributeValue;
use tier_xs::config::ServerConfig;
use tier_xs::runtime::Tenant;
use tier_xs::runtime::conformance::{events_suite, kv_suite, secrets_suite};
use tier_xs::runtime::events::AwsEvents;
use tier_xs::runtime::kv::{DynamoKv, KvStore};
use tier_xs::runtime::secrets::AwsSecrets;
use tier_xs::workspace::{Env, Tier, Workspace};

use crate::harness::{clients, deploy_xs, unique_env};

#[tokio::test]
async fn runtime_services_conform_on_aws() {
    let env = unique_env("rt");
    deploy_xs(&env);
    let aws = clients().await;
    let ws = Workspace::new(Env::new(&env).unwrap(), "123456789012", "us-east-1");
    let cfg = ServerConfig::for_workspace(&ws, Tier::ExtraSmall);

    let kv = DynamoKv::new(aws.dynamodb(), &cfg.kv_table);
    let events = AwsEvents::new(
        aws.events(),
        aws.logs(),
        &cfg.event_bus,
        &cfg.events_log_group,
    );
    let secrets = AwsSecrets::new(aws.secrets(), &ws);
    // Three suites at once: they use disjoint tenants.
    tokio::join!(
        kv_suite(&kv, "aws"),
        events_suite(&events, "aws"),
        secrets_suite(&secrets, "aws")
    );

    // An entry written before values' sizes were stored is listed with its size too.
    let n = |v: &str| AttributeValue::N(v.into());
    aws.dynamodb()
        .put_item()
        .table_name(&cfg.kv_table)
        .item("pk", AttributeValue::S("kv#legacy".into()))
        .item("sk", AttributeValue::S("old".into()))
        .item("value", AttributeValue::S("héllo".into()))
        .item("version", n("1"))
        .item("updated_at", n("1700000000"))
        .send()
        .await
        .unwrap();
    let page = kv
        .list(&Tenant::new("legacy").unwrap(), "", None, 10)
        .await
        .unwrap();
    assert_eq!(
        page.entries
            .iter()
            .map(|e| (e.key.as_str(), e.bytes, e.version))
            .collect::<Vec<_>>(),
        [("old", 6, 1)]
    );
}
