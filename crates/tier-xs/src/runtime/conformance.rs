//! The conformance suites: the behaviour every backend of a runtime service must have. The
//! same functions run against the embedded backend (unit tests) and against the AWS backend
//! on the emulator (tests/e2e), so the two cannot drift apart. They panic on a violation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::json;

use super::deployments::Deployments;
use super::events::EventBus;
use super::kv::{DEFAULT_TTL_SECS, Expect, KvStore, MAX_VALUE_BYTES, Ttl};
use super::secrets::SecretStore;
use super::{RuntimeError, Tenant, now_secs};
use crate::engine::lock::{ApplyRecord, RecordedChange};
use crate::workspace::Tier;

fn tenants(tag: &str) -> (Tenant, Tenant) {
    (
        Tenant::new(&format!("{tag}-a")).unwrap(),
        Tenant::new(&format!("{tag}-b")).unwrap(),
    )
}

fn is_conflict(r: Result<impl std::fmt::Debug, RuntimeError>) -> bool {
    matches!(r, Err(RuntimeError::VersionConflict { .. }))
}

fn is_invalid(r: Result<impl std::fmt::Debug, RuntimeError>) -> bool {
    matches!(r, Err(RuntimeError::Invalid { .. }))
}

/// KV: versions, compare-and-set, TTL, validation, pagination, tenant isolation.
pub async fn kv_suite(kv: &dyn KvStore, tag: &str) {
    let (a, b) = tenants(tag);
    assert_eq!(kv.get(&a, "missing").await.unwrap(), None);

    // set / get / versions / default TTL
    let e = kv.set(&a, "greeting", "hello", Ttl::Default).await.unwrap();
    assert_eq!(e.version, 1);
    let exp = e.expires_at.expect("a default TTL applies");
    assert!(
        exp.abs_diff(now_secs() + DEFAULT_TTL_SECS) <= 5,
        "default TTL: {exp}"
    );
    assert_eq!(
        kv.get(&a, "greeting").await.unwrap().unwrap().value,
        "hello"
    );
    assert_eq!(
        kv.set(&a, "greeting", "hello again", Ttl::Default)
            .await
            .unwrap()
            .version,
        2
    );

    // compare-and-set
    let e = kv
        .compare_and_set(&a, "greeting", "v3", Expect::Version(2), Ttl::Default)
        .await
        .unwrap();
    assert_eq!((e.version, e.value.as_str()), (3, "v3"));
    assert!(is_conflict(
        kv.compare_and_set(&a, "greeting", "stale", Expect::Version(2), Ttl::Default)
            .await
    ));
    assert!(is_conflict(
        kv.compare_and_set(&a, "greeting", "new", Expect::Absent, Ttl::Default)
            .await
    ));
    assert_eq!(kv.get(&a, "greeting").await.unwrap().unwrap().value, "v3");
    let e = kv
        .compare_and_set(&a, "fresh", "1", Expect::Absent, Ttl::Default)
        .await
        .unwrap();
    assert_eq!(e.version, 1);
    assert!(is_conflict(
        kv.compare_and_set(&a, "nothing-here", "x", Expect::Version(1), Ttl::Default)
            .await
    ));

    // bad input changes nothing
    let big = "x".repeat(MAX_VALUE_BYTES + 1);
    assert!(matches!(
        kv.set(&a, "greeting", &big, Ttl::Default).await,
        Err(RuntimeError::TooLarge { .. })
    ));
    assert!(is_invalid(
        kv.set(&a, "bad\u{7}key", "v", Ttl::Default).await
    ));
    assert!(is_invalid(kv.set(&a, "", "v", Ttl::Default).await));
    assert!(is_invalid(
        kv.set(&a, &"k".repeat(600), "v", Ttl::Default).await
    ));
    assert!(is_invalid(
        kv.set(&a, "greeting", "v", Ttl::Seconds(0)).await
    ));
    // An entry can live until it is deleted: no expiry, and compare-and-set still works on it.
    let kept = kv.set(&a, "forever", "1", Ttl::Never).await.unwrap();
    assert_eq!(kept.expires_at, None);
    let read = kv.get(&a, "forever").await.unwrap().unwrap();
    assert_eq!((read.value.as_str(), read.expires_at), ("1", None));
    let next = kv
        .compare_and_set(
            &a,
            "forever",
            "2",
            Expect::Version(read.version),
            Ttl::Never,
        )
        .await
        .unwrap();
    assert_eq!((next.version, next.expires_at), (read.version + 1, None));
    assert!(is_conflict(
        kv.compare_and_set(&a, "forever", "x", Expect::Absent, Ttl::Never)
            .await
    ));
    // A later write with a lifetime gives it one again.
    let timed = kv.set(&a, "forever", "3", Ttl::Default).await.unwrap();
    assert!(timed.expires_at.is_some());
    assert!(
        kv.get(&a, "forever")
            .await
            .unwrap()
            .unwrap()
            .expires_at
            .is_some()
    );
    assert!(kv.delete(&a, "forever").await.unwrap());
    assert!(is_invalid(kv.list(&a, "", Some("zz-not-hex"), 10).await));
    assert!(is_invalid(kv.list(&a, "", None, 0).await));
    assert_eq!(kv.get(&a, "greeting").await.unwrap().unwrap().value, "v3");
    // The largest value fits.
    let max = "y".repeat(MAX_VALUE_BYTES);
    assert_eq!(
        kv.set(&a, "big", &max, Ttl::Default)
            .await
            .unwrap()
            .value
            .len(),
        MAX_VALUE_BYTES
    );
    assert_eq!(
        kv.get(&a, "big").await.unwrap().unwrap().value.len(),
        MAX_VALUE_BYTES
    );
    assert!(kv.delete(&a, "big").await.unwrap());

    // list by prefix, page by page, in key order, nothing twice
    for i in 0..25 {
        kv.set(&a, &format!("page/{i:02}"), &i.to_string(), Ttl::Default)
            .await
            .unwrap();
    }
    kv.set(&a, "pagf", "outside the prefix", Ttl::Default)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = kv.list(&a, "page/", cursor.as_deref(), 10).await.unwrap();
        pages += 1;
        assert!(page.entries.len() <= 10);
        seen.extend(page.entries.into_iter().map(|e| e.key));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    let want: Vec<String> = (0..25).map(|i| format!("page/{i:02}")).collect();
    assert_eq!(seen, want);
    assert!(pages >= 3);
    let all = kv.list(&a, "", None, 1000).await.unwrap();
    assert_eq!(
        all.entries.len(),
        28,
        "{:?}",
        all.entries.iter().map(|e| &e.key).collect::<Vec<_>>()
    );
    assert_eq!(kv.count(&a).await.unwrap(), 28);

    // tenant isolation: b sees nothing of a, and cannot change it
    assert_eq!(kv.get(&b, "greeting").await.unwrap(), None);
    assert!(kv.list(&b, "", None, 100).await.unwrap().entries.is_empty());
    assert_eq!(kv.count(&b).await.unwrap(), 0);
    assert!(!kv.delete(&b, "greeting").await.unwrap());
    assert!(is_conflict(
        kv.compare_and_set(&b, "greeting", "x", Expect::Version(3), Ttl::Default)
            .await
    ));
    kv.set(&b, "greeting", "b's own", Ttl::Default)
        .await
        .unwrap();
    assert_eq!(kv.get(&a, "greeting").await.unwrap().unwrap().value, "v3");
    assert_eq!(
        kv.get(&b, "greeting").await.unwrap().unwrap().value,
        "b's own"
    );

    // expiry: gone for every read before any sweeper runs
    // (Expiry has one-second resolution: a 2 s TTL is certainly live at once and gone after 3 s.)
    kv.set(&a, "short", "lived", Ttl::Seconds(2)).await.unwrap();
    assert!(kv.get(&a, "short").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(kv.get(&a, "short").await.unwrap(), None);
    assert!(
        kv.list(&a, "short", None, 10)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    assert!(!kv.delete(&a, "short").await.unwrap());
    assert!(
        kv.compare_and_set(&a, "short", "again", Expect::Absent, Ttl::Default)
            .await
            .is_ok()
    );

    // concurrent compare-and-set: 16 writers each add one to a counter, retrying on
    // conflict; none is lost and the backend never fails under contention.
    kv.set(&a, "counter", "0", Ttl::Default).await.unwrap();
    let writers = (0..16).map(|_| async {
        loop {
            let cur = kv.get(&a, "counter").await.unwrap().unwrap();
            let next = (cur.value.parse::<u64>().unwrap() + 1).to_string();
            match kv
                .compare_and_set(
                    &a,
                    "counter",
                    &next,
                    Expect::Version(cur.version),
                    Ttl::Default,
                )
                .await
            {
                Ok(_) => return,
                Err(RuntimeError::VersionConflict { .. }) => continue,
                Err(e) => panic!("a concurrent compare-and-set failed: {e}"),
            }
        }
    });
    futures::future::join_all(writers).await;
    let counter = kv.get(&a, "counter").await.unwrap().unwrap();
    assert_eq!((counter.value.as_str(), counter.version), ("16", 17));
    let values: Vec<String> = (0..16).map(|i| i.to_string()).collect();
    let sets = values
        .iter()
        .map(|v| kv.set(&a, "contended", v, Ttl::Default));
    for r in futures::future::join_all(sets).await {
        r.expect("plain sets under contention succeed");
    }
    assert_eq!(kv.get(&a, "contended").await.unwrap().unwrap().version, 16);
    assert!(kv.delete(&a, "counter").await.unwrap() && kv.delete(&a, "contended").await.unwrap());

    // a listing reports each value's size in bytes (UTF-8), its version and expiry
    kv.set(&a, "sized/text", "héllo wörld", Ttl::Seconds(3600))
        .await
        .unwrap();
    kv.set(&a, "sized/text", "héllo wörld!", Ttl::Never)
        .await
        .unwrap();
    let listed = kv.list(&a, "sized/", None, 10).await.unwrap().entries;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].key.as_str(), listed[0].bytes, listed[0].version),
        ("sized/text", 14, 2)
    );
    assert_eq!(listed[0].expires_at, None);
    assert!(kv.delete(&a, "sized/text").await.unwrap());

    // delete
    assert!(kv.delete(&a, "greeting").await.unwrap());
    assert!(!kv.delete(&a, "greeting").await.unwrap());
    assert_eq!(kv.get(&a, "greeting").await.unwrap(), None);
}

/// Events: published events are accepted, listed for their tenant only, validated.
pub async fn events_suite(bus: &dyn EventBus, tag: &str) {
    let (a, b) = tenants(tag);
    let first = bus
        .publish(&a, "Agent Task Started", &json!({"task": "t1"}))
        .await
        .unwrap();
    let second = bus
        .publish(
            &a,
            "Agent Task Completed",
            &json!({"task": "t1", "ok": true}),
        )
        .await
        .unwrap();
    assert_ne!(first.id, second.id);
    assert_eq!(first.source, "agentbus");
    bus.publish(&b, "Agent Task Started", &json!({"task": "b-only"}))
        .await
        .unwrap();

    let recent = bus.recent(&a, 10).await.unwrap();
    let ids: Vec<&str> = recent.iter().map(|e| e.id.as_str()).collect();
    assert!(
        ids.contains(&first.id.as_str()) && ids.contains(&second.id.as_str()),
        "{recent:?}"
    );
    assert_eq!(
        recent.len(),
        2,
        "tenant a sees its two events, no more: {recent:?}"
    );
    assert!(
        recent.windows(2).all(|w| w[0].time_ms >= w[1].time_ms),
        "newest first"
    );
    let got = recent.iter().find(|e| e.id == second.id).unwrap();
    assert_eq!(got.detail_type, "Agent Task Completed");
    assert_eq!(got.detail, json!({"task": "t1", "ok": true}));
    let theirs = bus.recent(&b, 10).await.unwrap();
    let theirs: Vec<&serde_json::Value> = theirs.iter().map(|e| &e.detail).collect();
    assert_eq!(
        theirs,
        [&json!({"task": "b-only"})],
        "tenant b sees its one event only"
    );

    assert!(is_invalid(
        bus.publish(&a, "x", &json!("not an object")).await
    ));
    assert!(is_invalid(bus.publish(&a, "bad\ntype", &json!({})).await));
    assert!(is_invalid(bus.publish(&a, "", &json!({})).await));
    let big = json!({"blob": "z".repeat(super::events::MAX_DETAIL_BYTES)});
    assert!(matches!(
        bus.publish(&a, "big", &big).await,
        Err(RuntimeError::TooLarge { .. })
    ));
    assert!(is_invalid(bus.recent(&a, 0).await));
}

/// Secrets: write-only values, names and metadata listed per tenant, validated, deletable.
pub async fn secrets_suite(store: &dyn SecretStore, tag: &str) {
    let (a, b) = tenants(tag);
    let m = store.put(&a, "api-key", "s3cret-1").await.unwrap();
    assert_eq!(m.name, "api-key");
    store.put(&a, "webhook.secret", "w").await.unwrap();
    assert_eq!(
        store.read(&a, "api-key").await.unwrap().as_deref(),
        Some("s3cret-1")
    );
    store.put(&a, "api-key", "s3cret-2").await.unwrap();
    assert_eq!(
        store.read(&a, "api-key").await.unwrap().as_deref(),
        Some("s3cret-2")
    );
    let names: Vec<String> = store
        .list(&a)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(
        names,
        vec!["api-key".to_string(), "webhook.secret".to_string()]
    );

    // isolation
    assert!(store.list(&b).await.unwrap().is_empty());
    assert_eq!(store.read(&b, "api-key").await.unwrap(), None);
    assert!(!store.delete(&b, "api-key").await.unwrap());
    assert_eq!(
        store.read(&a, "api-key").await.unwrap().as_deref(),
        Some("s3cret-2")
    );

    // validation
    assert!(is_invalid(store.put(&a, "a/b", "v").await));
    assert!(is_invalid(store.put(&a, "tab\there", "v").await));
    assert!(is_invalid(store.put(&a, "", "v").await));
    assert!(is_invalid(store.put(&a, "empty", "").await));
    let big = "s".repeat(super::secrets::MAX_SECRET_BYTES + 1);
    assert!(matches!(
        store.put(&a, "big", &big).await,
        Err(RuntimeError::TooLarge { .. })
    ));
    assert_eq!(store.list(&a).await.unwrap().len(), 2);

    // delete, and put again after a delete
    assert!(store.delete(&a, "webhook.secret").await.unwrap());
    assert!(!store.delete(&a, "webhook.secret").await.unwrap());
    assert_eq!(store.list(&a).await.unwrap().len(), 1);
    store.put(&a, "webhook.secret", "w2").await.unwrap();
    assert_eq!(
        store.read(&a, "webhook.secret").await.unwrap().as_deref(),
        Some("w2")
    );
}

/// Deploy records: what is recorded is read back whole, newest first, `limit` at most.
/// Records already there (a deployed workspace has its deploys) are older than these.
pub async fn deployments_suite(d: &dyn Deployments) {
    let base = now_secs() * 1000 + 3_600_000;
    let record = |n: u64, tier: Option<Tier>, succeeded: bool| ApplyRecord {
        at: crate::engine::lock::iso(base / 1000 + n),
        at_ms: base + n,
        tier,
        tool_version: "9.9.9".into(),
        caller: format!("conformance {n}"),
        succeeded,
        cancelled: false,
        changes: vec![RecordedChange {
            id: "kv-table".into(),
            name: format!("table-{n}"),
            action: "update".into(),
            outcome: "done".into(),
        }],
    };
    let recs = [
        record(1, Some(Tier::Small), true),
        record(2, None, false),
        record(3, Some(Tier::ExtraSmall), true),
    ];
    // Out of order: the order read is by time, not by writing.
    for r in [&recs[1], &recs[0], &recs[2]] {
        d.record(r).await.unwrap();
    }
    assert_eq!(
        d.history(2).await.unwrap(),
        [recs[2].clone(), recs[1].clone()]
    );
    let all = d.history(10).await.unwrap();
    assert_eq!(
        all[..3],
        [recs[2].clone(), recs[1].clone(), recs[0].clone()]
    );
    assert!(all[3..].iter().all(|r| r.at_ms < base), "{all:?}");
}

#[cfg(test)]
mod embedded {
    //! The suites against the embedded backend, in a fresh data directory.
    use super::*;
    use crate::runtime::embedded::{Direct, open};
    use crate::runtime::events::SqliteEvents;
    use crate::runtime::kv::SqliteKv;
    use crate::runtime::secrets::SqliteSecrets;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("agentbus-conf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[tokio::test]
    async fn kv_on_sqlite() {
        let d = dir("kv");
        let _schema = open(&d).await.unwrap();
        kv_suite(&SqliteKv::new(Direct::new(&d)), "emb").await;
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn events_on_sqlite() {
        let d = dir("events");
        events_suite(&SqliteEvents::new(open(&d).await.unwrap()), "emb").await;
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn secrets_on_sqlite() {
        let d = dir("secrets");
        secrets_suite(&SqliteSecrets::new(open(&d).await.unwrap()), "emb").await;
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn deployments_on_sqlite() {
        let d = dir("deployments");
        let store = crate::runtime::deployments::SqliteDeployments::new(open(&d).await.unwrap());
        deployments_suite(&store).await;
        // The embedded target has no budget.
        assert_eq!(store.budget().await.unwrap(), None);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn a_start_on_another_tier_is_recorded_and_a_restart_on_the_same_is_not() {
        use crate::runtime::deployments::{Deployments, SqliteDeployments, record_start};
        let d = dir("moves");
        let store: std::sync::Arc<dyn Deployments> =
            std::sync::Arc::new(SqliteDeployments::new(open(&d).await.unwrap()));
        for tier in [
            Tier::ExtraSmall,
            Tier::ExtraSmall,
            Tier::Small,
            Tier::Small,
            Tier::ExtraSmall,
        ] {
            record_start(&store, tier).await.unwrap();
            // Distinct milliseconds: a record's time is its key.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let tiers: Vec<_> = store
            .history(10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.tier)
            .collect();
        assert_eq!(
            tiers,
            [
                Some(Tier::ExtraSmall),
                Some(Tier::Small),
                Some(Tier::ExtraSmall)
            ]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let d = dir("reopen");
        let t = Tenant::new("keep").unwrap();
        {
            let pool = open(&d).await.unwrap();
            SqliteKv::new(Direct::new(&d))
                .set(&t, "k", "v", Ttl::Default)
                .await
                .unwrap();
            pool.close().await;
        }
        let _schema = open(&d).await.unwrap();
        let kv = SqliteKv::new(Direct::new(&d));
        assert_eq!(kv.get(&t, "k").await.unwrap().unwrap().value, "v");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
