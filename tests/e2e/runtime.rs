//! The runtime conformance suites against the AWS backends (DynamoDB, EventBridge + Logs,
//! Secrets Manager) on the emulator, in a deployed extra-small workspace. The same suites
//! run against the embedded backend in tier-xs's unit tests.

use aws_sdk_dynamodb::types::AttributeValue;
use tier_xs::config::ServerConfig;
use tier_xs::runtime::Tenant;
use tier_xs::runtime::conformance::{deployments_suite, events_suite, kv_suite, secrets_suite};
use tier_xs::runtime::deployments::{AwsDeployments, Deployments};
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
    let deployments = AwsDeployments::new(
        &aws,
        &Workspace::new(ws.env.clone(), "unknown", "us-east-1"),
    );
    // Four suites at once: they use disjoint tenants (deploy records are the workspace's).
    tokio::join!(
        kv_suite(&kv, "aws"),
        events_suite(&events, "aws"),
        secrets_suite(&secrets, "aws"),
        deployments_suite(&deployments),
    );
    // The deploy's own record is there, older than the suite's; and the workspace's budget,
    // read as the server reads it (the account from STS: the server is not told it).
    let history = deployments.history(10).await.unwrap();
    assert_eq!(history.len(), 4, "{history:?}");
    assert_eq!(history[3].tier, Some(Tier::ExtraSmall));
    assert!(history[3].succeeded);
    let budget = deployments
        .budget()
        .await
        .unwrap()
        .expect("the workspace's budget");
    assert_eq!(budget.name, ws.id());
    assert_eq!(
        budget.limit_usd,
        tier_xs::xs::layer::SEED_TARGET.1,
        "{budget:?}"
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
    crate::harness::destroy_all(&env);
}

/// A KV count on DynamoDB reads the tenant's whole partition and is billed by its bytes: a
/// tenant's count is made at most once per window however often dashboards ask, and one
/// tenant's count never answers for another's.
#[tokio::test]
async fn a_tenants_kv_count_reads_its_partition_at_most_once_a_window() {
    use std::time::Duration;
    use tier_xs::runtime::kv::Ttl;
    let env = unique_env("cnt");
    deploy_xs(&env);
    let aws = clients().await;
    let ws = Workspace::new(Env::new(&env).unwrap(), "123456789012", "us-east-1");
    let cfg = ServerConfig::for_workspace(&ws, Tier::ExtraSmall);
    let (a, b) = (
        Tenant::new("count-a").unwrap(),
        Tenant::new("count-b").unwrap(),
    );
    let kv =
        DynamoKv::new(aws.dynamodb(), &cfg.kv_table).with_count_max_age(Duration::from_secs(3600));
    kv.set(&a, "one", "1", Ttl::Default).await.unwrap();
    assert_eq!(kv.count(&a).await.unwrap(), 1);
    kv.set(&a, "two", "2", Ttl::Default).await.unwrap();
    kv.set(&b, "one", "1", Ttl::Default).await.unwrap();
    // Within the window: a's count is the one made before (its partition not read again);
    // b's is its own.
    assert_eq!(kv.count(&a).await.unwrap(), 1);
    assert_eq!(kv.count(&b).await.unwrap(), 1);
    // A store whose window is over counts again (the server's window is a minute).
    assert_eq!(tier_xs::runtime::kv::COUNT_MAX_AGE, Duration::from_secs(60));
    let fresh = DynamoKv::new(aws.dynamodb(), &cfg.kv_table).with_count_max_age(Duration::ZERO);
    assert_eq!(fresh.count(&a).await.unwrap(), 2);
    let r = crate::harness::agentbus(&["destroy", "--env", &env, "--yes", "--destroy-data"]);
    assert_eq!(r.code, 0, "{r:?}");
}
