//! The conformance suite every artifacts backend passes: the embedded one in this crate's
//! unit tests, the S3 one against the emulator in the end-to-end tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tier_xs::runtime::{RuntimeError, Tenant};

use super::artifacts::{ArtifactStore, MAX_INLINE_BYTES};

fn tenant(label: &str, name: &str) -> Tenant {
    Tenant::new(&format!("{label}-art-{name}")).unwrap()
}

/// Round trips, overwrite, listing by prefix with pagination beyond a page, tenant
/// isolation, delete, and bad input refused with nothing written.
pub async fn artifacts_suite(store: &dyn ArtifactStore, label: &str) {
    let a = tenant(label, "a");
    let b = tenant(label, "b");

    // Round trip of binary content with its type.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let m = store
        .put(&a, "reports/bin.dat", &bytes, "application/octet-stream")
        .await
        .unwrap();
    assert_eq!(m.size, 70_000);
    let (meta, data) = store.get(&a, "reports/bin.dat").await.unwrap().unwrap();
    assert_eq!(data, bytes);
    assert_eq!(meta.content_type, "application/octet-stream");
    assert_eq!(meta.size, 70_000);

    // Overwrite.
    store
        .put(&a, "reports/bin.dat", b"second", "text/plain")
        .await
        .unwrap();
    let (meta, data) = store.get(&a, "reports/bin.dat").await.unwrap().unwrap();
    assert_eq!(
        (data.as_slice(), meta.content_type.as_str()),
        (&b"second"[..], "text/plain")
    );

    // Absent.
    assert!(store.get(&a, "reports/none").await.unwrap().is_none());

    // 25 artifacts under one prefix, listed 10 at a time; keys come back relative.
    for i in 0..25 {
        store
            .put(
                &a,
                &format!("plans/p{i:02}.json"),
                b"{}",
                "application/json",
            )
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store
            .list(&a, "plans/", cursor.as_deref(), Some(10))
            .await
            .unwrap();
        pages += 1;
        assert!(page.artifacts.len() <= 10);
        seen.extend(page.artifacts.iter().map(|m| m.key.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..25).map(|i| format!("plans/p{i:02}.json")).collect();
    assert_eq!(seen, want);
    // Everything of the tenant, without a prefix.
    let all = store.list(&a, "", None, Some(1000)).await.unwrap();
    assert_eq!(all.artifacts.len(), 26);
    assert!(all.next_cursor.is_none());

    // Tenant isolation: b sees nothing of a's, and its own key is separate.
    assert!(store.get(&b, "reports/bin.dat").await.unwrap().is_none());
    assert!(
        store
            .list(&b, "", None, None)
            .await
            .unwrap()
            .artifacts
            .is_empty()
    );
    store
        .put(&b, "reports/bin.dat", b"b's", "text/plain")
        .await
        .unwrap();
    assert_eq!(
        store.get(&a, "reports/bin.dat").await.unwrap().unwrap().1,
        b"second"
    );
    assert!(!store.delete(&b, "plans/p00.json").await.unwrap());
    assert!(store.get(&a, "plans/p00.json").await.unwrap().is_some());

    // Delete.
    assert!(store.delete(&a, "plans/p00.json").await.unwrap());
    assert!(!store.delete(&a, "plans/p00.json").await.unwrap());
    assert!(store.get(&a, "plans/p00.json").await.unwrap().is_none());

    // Bad input is refused and writes nothing.
    for key in [
        "",
        "/abs",
        "a/../b",
        "a//b",
        "trail/",
        "ctl\u{7}",
        &"k".repeat(513),
    ] {
        let e = store.put(&a, key, b"x", "text/plain").await.unwrap_err();
        assert!(matches!(e, RuntimeError::Invalid { .. }), "{key:?}: {e}");
    }
    let e = store.put(&a, "ok", b"x", "not a type").await.unwrap_err();
    assert!(matches!(e, RuntimeError::Invalid { .. }), "{e}");
    let big = vec![0u8; MAX_INLINE_BYTES + 1];
    let e = store
        .put(&a, "big", &big, "application/octet-stream")
        .await
        .unwrap_err();
    assert!(matches!(e, RuntimeError::TooLarge { .. }), "{e}");
    assert!(store.get(&a, "ok").await.unwrap().is_none());
    assert!(store.get(&a, "big").await.unwrap().is_none());
    let e = store
        .list(&a, "", Some("not-a-cursor"), None)
        .await
        .unwrap_err();
    assert!(matches!(e, RuntimeError::Invalid { .. }), "{e}");
    let e = store.list(&a, "", None, Some(0)).await.unwrap_err();
    assert!(matches!(e, RuntimeError::Invalid { .. }), "{e}");
}

use std::collections::BTreeMap;

use super::timeline::{NewRecord, TimelineQuery, TimelineStore};

fn record(agent: &str, i: usize) -> NewRecord {
    NewRecord {
        agent: agent.into(),
        task_id: format!("task-{i}"),
        action: "plan-complete".into(),
        summary: format!("step {i}\nwith a second line"),
        artifacts: vec![format!("plans/p{i}.json")],
        refs: BTreeMap::from([(
            "prs".to_string(),
            vec![format!("https://example.com/pr/{i}")],
        )]),
        metrics: BTreeMap::from([("cost_delta_monthly".to_string(), i as f64 * 0.5)]),
    }
}

/// Appends in time order, reads back by time range and agent with cursors, isolates tenants,
/// refuses bad input.
pub async fn timeline_suite(store: &dyn TimelineStore, label: &str) {
    let a = tenant(label, "tl-a");
    let b = tenant(label, "tl-b");

    let mut appended = Vec::new();
    for i in 0..24 {
        let agent = if i % 3 == 0 { "critic" } else { "conductor" };
        appended.push(store.append(&a, &record(agent, i)).await.unwrap());
        if i % 8 == 7 {
            // Some records a few milliseconds apart, so ranges have something to cut.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    let first = &appended[0];
    assert_eq!(first.record, record("critic", 0));
    assert!(
        first.ts.ends_with('Z') && first.ts.len() == 24,
        "{}",
        first.ts
    );

    // Everything, in pages of 10, in time order.
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .query(
                &a,
                &TimelineQuery {
                    cursor: cursor.clone(),
                    limit: Some(10),
                    ..TimelineQuery::default()
                },
            )
            .await
            .unwrap();
        assert!(page.records.len() <= 10);
        all.extend(page.records);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(all.len(), 24);
    assert!(all.windows(2).all(|w| w[0].ts <= w[1].ts), "time order");
    let mut ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 24);

    // A time range: [from, to) of the stored times.
    let from = all[8].ts.clone();
    let to = all[16].ts.clone();
    let want: Vec<&str> = all
        .iter()
        .filter(|r| r.ts >= from && r.ts < to)
        .map(|r| r.id.as_str())
        .collect();
    let got = store
        .query(
            &a,
            &TimelineQuery {
                from: Some(from.clone()),
                to: Some(to.clone()),
                limit: Some(200),
                ..TimelineQuery::default()
            },
        )
        .await
        .unwrap();
    let got: Vec<&str> = got.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(got, want);

    // By agent, across pages.
    let mut critic = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .query(
                &a,
                &TimelineQuery {
                    agent: Some("critic".into()),
                    cursor: cursor.clone(),
                    limit: Some(3),
                    ..TimelineQuery::default()
                },
            )
            .await
            .unwrap();
        critic.extend(page.records);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(critic.len(), 8);
    assert!(critic.iter().all(|r| r.record.agent == "critic"));

    // Tenants do not see each other's timeline.
    let none = store.query(&b, &TimelineQuery::default()).await.unwrap();
    assert!(none.records.is_empty());
    store.append(&b, &record("sweeper", 0)).await.unwrap();
    let one = store.query(&b, &TimelineQuery::default()).await.unwrap();
    assert_eq!(one.records.len(), 1);
    let still = store
        .query(
            &a,
            &TimelineQuery {
                limit: Some(200),
                ..TimelineQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(still.records.len(), 24);

    // Bad input: refused, nothing appended.
    let bad = [
        NewRecord {
            agent: "Critic".into(),
            ..record("x", 1)
        },
        NewRecord {
            agent: "a_b".into(),
            ..record("x", 1)
        },
        NewRecord {
            task_id: String::new(),
            ..record("critic", 1)
        },
        NewRecord {
            summary: " ".into(),
            ..record("critic", 1)
        },
        NewRecord {
            summary: "bell\u{7}".into(),
            ..record("critic", 1)
        },
        NewRecord {
            artifacts: vec!["../etc".into()],
            ..record("critic", 1)
        },
        NewRecord {
            metrics: BTreeMap::from([("x".to_string(), f64::NAN)]),
            ..record("critic", 1)
        },
    ];
    for r in &bad {
        let e = store.append(&a, r).await.unwrap_err();
        assert!(matches!(e, RuntimeError::Invalid { .. }), "{r:?}: {e}");
    }
    let e = store
        .query(
            &a,
            &TimelineQuery {
                from: Some("yesterday".into()),
                ..TimelineQuery::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RuntimeError::Invalid { .. }), "{e}");
    let e = store
        .query(
            &a,
            &TimelineQuery {
                cursor: Some("zz".into()),
                ..TimelineQuery::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RuntimeError::Invalid { .. }), "{e}");
    let after = store
        .query(
            &a,
            &TimelineQuery {
                limit: Some(200),
                ..TimelineQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(after.records.len(), 24);
}
