//! Runtime services of the small tier. Each is a trait with an AWS implementation and an
//! embedded one, and one conformance suite ([`conformance`]) runs unchanged against both —
//! the same pattern as the extra-small services in `tier_xs::runtime`.

pub mod artifacts;
pub mod monitor;
pub mod pattern;
pub mod timeline;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

#[cfg(test)]
mod tests {
    use super::artifacts::EmbeddedArtifacts;
    use super::conformance::artifacts_suite;

    #[tokio::test]
    async fn embedded_artifacts_conform() {
        let dir = std::env::temp_dir().join(format!("agentbus-art-{}", std::process::id()));
        let pool = tier_xs::runtime::embedded::open(&dir).await.unwrap();
        let store = EmbeddedArtifacts::open(pool, &dir).await.unwrap();
        artifacts_suite(&store, "emb").await;
        // Deleted and overwritten artifacts leave no files behind: one file per live content
        // of each tenant, no temporary ones.
        let files = |tenant: &str| -> Vec<String> {
            std::fs::read_dir(dir.join("artifacts/tenants").join(tenant))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        let (a, b) = (files("emb-art-a"), files("emb-art-b"));
        assert_eq!(a.len(), 3, "tenant a has 3 distinct contents: {a:?}");
        assert_eq!(b.len(), 1, "tenant b has 1: {b:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn artifacts_of_a_data_directory_that_shared_files_between_tenants_are_kept() {
        use super::artifacts::ArtifactStore;
        use sha2::Digest;
        let dir = std::env::temp_dir().join(format!("agentbus-art-old-{}", std::process::id()));
        let pool = tier_xs::runtime::embedded::open(&dir).await.unwrap();
        drop(EmbeddedArtifacts::open(pool.clone(), &dir).await.unwrap());
        // As an earlier version left it: one file for a content two tenants hold.
        let sha = hex::encode(sha2::Sha256::digest(b"shared"));
        std::fs::write(dir.join("artifacts").join(&sha), b"shared").unwrap();
        for tenant in ["t1", "t2"] {
            sqlx::query(
                "INSERT INTO artifacts (tenant, key, size, content_type, sha256, updated_at)
                 VALUES (?, 'k', 6, 'text/plain', ?, 0)",
            )
            .bind(tenant)
            .bind(&sha)
            .execute(&pool)
            .await
            .unwrap();
        }
        let store = EmbeddedArtifacts::open(pool, &dir).await.unwrap();
        for tenant in ["t1", "t2"] {
            let t = tier_xs::runtime::Tenant::new(tenant).unwrap();
            let (_, data) = store.get(&t, "k").await.unwrap().unwrap();
            assert_eq!(data, b"shared");
        }
        assert!(
            !dir.join("artifacts").join(&sha).exists(),
            "the shared file went"
        );
        // One tenant's delete leaves the other's copy.
        let t1 = tier_xs::runtime::Tenant::new("t1").unwrap();
        assert!(store.delete(&t1, "k").await.unwrap());
        let t2 = tier_xs::runtime::Tenant::new("t2").unwrap();
        assert!(store.get(&t2, "k").await.unwrap().is_some());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn embedded_monitor_conforms() {
        let dir = std::env::temp_dir().join(format!("agentbus-mon-{}", std::process::id()));
        let pool = tier_xs::runtime::embedded::open(&dir).await.unwrap();
        let store = super::monitor::sqlite::SqliteEventStore::open(pool)
            .await
            .unwrap();
        super::conformance::monitor_suite(std::sync::Arc::new(store), "emb").await;
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The embedded feed follows the extra-small event log from its checkpoint: each event
    /// once, across restarts; records past the retention are pruned.
    #[tokio::test]
    async fn the_log_feed_records_each_published_event_once() {
        use super::monitor::sqlite::{LogFeed, SqliteEventStore};
        use super::monitor::webhook::{Reach, Webhooks};
        use super::monitor::{EventQuery, Monitor, MonitoredEvent};
        use tier_xs::runtime::events::{EventBus, SqliteEvents};
        let dir = std::env::temp_dir().join(format!("agentbus-feed-{}", std::process::id()));
        let pool = tier_xs::runtime::embedded::open(&dir).await.unwrap();
        let bus = SqliteEvents::new(pool.clone());
        let t = tier_xs::runtime::Tenant::new("feed").unwrap();
        let store = std::sync::Arc::new(SqliteEventStore::open(pool.clone()).await.unwrap());
        let monitor = Monitor::new(store.clone(), Webhooks::new(Reach::Anywhere).unwrap());
        for i in 0..150 {
            let p = if i % 3 == 0 { "error" } else { "whatever" };
            bus.publish(&t, "tick", &serde_json::json!({"i": i, "priority": p}))
                .await
                .unwrap();
        }
        let feed = LogFeed::new(pool.clone(), monitor.clone());
        assert_eq!(feed.catch_up().await.unwrap(), 150, "in batches of 100");
        assert_eq!(feed.catch_up().await.unwrap(), 0);
        // A restarted feed resumes from the stored checkpoint.
        bus.publish(&t, "tock", &serde_json::json!({}))
            .await
            .unwrap();
        let again = LogFeed::new(pool.clone(), monitor.clone());
        assert_eq!(again.catch_up().await.unwrap(), 1);
        let q = |p: &str| EventQuery {
            priority: Some(p.into()),
            limit: Some(200),
            ..Default::default()
        };
        assert_eq!(
            monitor.query(&t, &q("error")).await.unwrap().events.len(),
            50
        );
        assert_eq!(
            monitor.query(&t, &q("info")).await.unwrap().events.len(),
            101
        );
        // An event older than the retention goes at the next prune.
        let old = MonitoredEvent {
            event_id: "old".into(),
            tenant: "feed".into(),
            source: "agentbus".into(),
            detail_type: "tick".into(),
            priority: "info".into(),
            time: "2020-01-01T00:00:00.000Z".into(),
            detail: serde_json::json!({}),
        };
        monitor.ingest(&old).await.unwrap();
        assert_eq!(again.prune().await.unwrap(), 1);
        assert!(monitor.get(&t, "old").await.unwrap().is_none());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn embedded_timeline_conforms() {
        let dir = std::env::temp_dir().join(format!("agentbus-tl-{}", std::process::id()));
        let pool = tier_xs::runtime::embedded::open(&dir).await.unwrap();
        let store = super::timeline::EmbeddedTimeline::open(pool).await.unwrap();
        super::conformance::timeline_suite(&store, "emb").await;
        std::fs::remove_dir_all(&dir).ok();
    }
}
