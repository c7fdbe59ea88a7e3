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
        // Deleted and overwritten artifacts leave no files behind: one blob per live content.
        let files = std::fs::read_dir(dir.join("artifacts")).unwrap().count();
        assert!(files <= 3, "{files} files for 3 distinct contents");
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

    #[tokio::test]
    async fn embedded_timeline_conforms() {
        let dir = std::env::temp_dir().join(format!("agentbus-tl-{}", std::process::id()));
        let pool = tier_xs::runtime::embedded::open(&dir).await.unwrap();
        let store = super::timeline::EmbeddedTimeline::open(pool).await.unwrap();
        super::conformance::timeline_suite(&store, "emb").await;
        std::fs::remove_dir_all(&dir).ok();
    }
}
