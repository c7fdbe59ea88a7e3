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

    // What a tenant keeps, for its quota: the current version of each of its artifacts.
    assert_eq!(store.stored_bytes(&a).await.unwrap(), 6);
    assert_eq!(store.stored_bytes(&b).await.unwrap(), 0);

    // A fingerprint tells writes apart without reading the bytes: another content, another
    // type; none once deleted (and another tenant's artifact of the same key has none).
    assert_eq!(store.fingerprint(&a, "fp").await.unwrap(), None);
    store.put(&a, "fp", b"one", "text/plain").await.unwrap();
    let first = store.fingerprint(&a, "fp").await.unwrap();
    assert!(first.is_some());
    assert_eq!(store.fingerprint(&a, "fp").await.unwrap(), first, "stable");
    assert_eq!(store.fingerprint(&b, "fp").await.unwrap(), None);
    store.put(&a, "fp", b"two", "text/plain").await.unwrap();
    let second = store.fingerprint(&a, "fp").await.unwrap();
    assert!(second.is_some() && second != first, "{first:?} {second:?}");
    store.put(&a, "fp", b"two", "text/markdown").await.unwrap();
    let third = store.fingerprint(&a, "fp").await.unwrap();
    assert!(third.is_some() && third != second, "{second:?} {third:?}");
    assert!(store.delete(&a, "fp").await.unwrap());
    assert_eq!(store.fingerprint(&a, "fp").await.unwrap(), None);

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

    concurrent_identical_content(store, &a, &b).await;
}

/// Two tenants put, replace and delete artifacts of identical content at once: every put
/// lands, and every artifact a listing shows can be read, with its content.
async fn concurrent_identical_content(store: &dyn ArtifactStore, a: &Tenant, b: &Tenant) {
    use std::future::Future;
    use std::pin::Pin;
    type Op<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;
    let same: &[u8] = b"the same bytes, again and again";
    let keys: Vec<String> = (0..6).map(|i| format!("race/k{i}")).collect();
    for round in 0..8 {
        let mut ops: Vec<Op<'_>> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            // Half the keys are deleted in the same breath as the other half are put.
            if (i + round) % 2 == 0 {
                ops.push(Box::pin(async move {
                    store.delete(a, k).await.unwrap();
                }));
            } else {
                ops.push(Box::pin(async move {
                    store.put(a, k, same, "text/plain").await.unwrap();
                }));
                ops.push(Box::pin(async move {
                    store.put(a, k, same, "text/plain").await.unwrap();
                }));
            }
            ops.push(Box::pin(async move {
                store.put(b, k, same, "text/plain").await.unwrap();
                store.delete(b, k).await.unwrap();
            }));
        }
        futures::future::join_all(ops).await;
        let listed = store.list(a, "race/", None, None).await.unwrap();
        assert_eq!(listed.artifacts.len(), 3, "round {round}");
        for m in listed.artifacts {
            let got = store.get(a, &m.key).await.unwrap();
            assert_eq!(
                got.map(|(_, d)| d).as_deref(),
                Some(same),
                "round {round}: {} is listed but cannot be read",
                m.key
            );
        }
    }
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

    // Names without the records, from a time, by prefix, a page at a time; each reads back
    // as its record, for its tenant only.
    let name = |r: &crate::runtime::timeline::TimelineRecord| {
        format!("{}_{}_{}", r.ts, r.record.agent, r.id)
    };
    let (names, more) = store.names(&a, &all[4].ts, "", None, 15).await.unwrap();
    let want: Vec<String> = all.iter().filter(|r| r.ts >= all[4].ts).map(name).collect();
    assert_eq!((names.as_slice(), more), (&want[..15], true));
    let (rest, more) = store
        .names(&a, &all[4].ts, "", names.last().map(String::as_str), 15)
        .await
        .unwrap();
    assert_eq!((rest.as_slice(), more), (&want[15..], false));
    let day = &all[0].ts[..10];
    let (of_day, _) = store
        .names(&a, "1970-01-01T00:00:00.000Z", day, None, 200)
        .await
        .unwrap();
    assert_eq!(
        of_day.len(),
        all.iter().filter(|r| r.ts.starts_with(day)).count()
    );
    let (none, more) = store
        .names(&a, "1970-01-01T00:00:00.000Z", "1999", None, 10)
        .await
        .unwrap();
    assert!(none.is_empty() && !more);
    assert_eq!(
        store.get(&a, &name(&all[3])).await.unwrap().as_ref(),
        Some(&all[3])
    );
    assert_eq!(store.get(&b, &name(&all[3])).await.unwrap(), None);
    for bad in ["nope", "../x", "2026-01-01T00:00:00.000Z_critic_00/x"] {
        assert_eq!(store.get(&a, bad).await.unwrap(), None, "{bad}");
    }

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

// ---------------------------------------------------------------------------------------
// Event monitoring

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::monitor::dispatch::DISABLE_AFTER;
use super::monitor::webhook::{Reach, Webhooks, signature};
use super::monitor::{
    CountQuery, Delivery, EventQuery, EventStore, Granularity, Monitor, MonitoredEvent, Outcome,
    Rule,
};
use super::timeline::ts_of;

/// A webhook receiver on 127.0.0.1 that answers 503 to the first `fail_first` requests and
/// records every request (headers and body).
pub struct Receiver {
    pub url: String,
    pub seen: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>,
}

pub async fn receiver(fail_first: usize) -> Receiver {
    use axum::http::StatusCode;
    let seen: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let s = s.clone();
            async move {
                let n = {
                    let mut v = s.lock().unwrap();
                    v.push((headers, body));
                    v.len()
                };
                if n <= fail_first {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://{addr}/hook"),
        seen,
    }
}

fn event(
    tenant: &Tenant,
    id: &str,
    millis: u64,
    source: &str,
    ty: &str,
    prio: &str,
) -> MonitoredEvent {
    MonitoredEvent {
        event_id: id.to_string(),
        tenant: tenant.as_str().to_string(),
        source: source.to_string(),
        detail_type: ty.to_string(),
        priority: prio.to_string(),
        time: ts_of(millis),
        detail: json!({"n": id, "priority": prio}),
    }
}

/// Recording exactly once, queries by every filter with cursors, counts, tenant isolation,
/// rules (validated) and signed webhook deliveries with retries and visible failures.
pub async fn monitor_suite(store: Arc<dyn EventStore>, label: &str) {
    let uniq = format!("{}-{}", label, tier_xs::runtime::now_millis() % 1_000_000);
    let a = Tenant::new(&format!("{uniq}-mon-a")).unwrap();
    let b = Tenant::new(&format!("{uniq}-mon-b")).unwrap();
    let m = Monitor::new(
        store.clone(),
        Webhooks::with_backoff(Reach::Anywhere, std::time::Duration::from_millis(20)).unwrap(),
    );
    // Two hours ago, on the hour, so the events fall in two known hours.
    let hour = 3_600_000;
    let base = (tier_xs::runtime::now_millis() / hour - 2) * hour;
    let id = |n: &str| format!("{uniq}-{n}");
    let evs = [
        event(
            &a,
            &id("1"),
            base + 60_000,
            "agentbus",
            "build.started",
            "info",
        ),
        event(
            &a,
            &id("2"),
            base + 120_000,
            "agentbus",
            "build.failed",
            "error",
        ),
        event(&a, &id("3"), base + 180_000, "ci.github", "push", "info"),
        event(
            &a,
            &id("4"),
            base + hour + 60_000,
            "agentbus",
            "build.failed",
            "critical",
        ),
        event(
            &a,
            &id("5"),
            base + hour + 120_000,
            "agentbus",
            "build.started",
            "info",
        ),
        event(
            &b,
            &id("6"),
            base + 60_000,
            "agentbus",
            "build.failed",
            "error",
        ),
    ];
    for e in &evs {
        m.ingest(e).await.unwrap();
    }
    // Delivered again (SQS does that): still one record, and nothing left to dispatch.
    m.ingest(&evs[1]).await.unwrap();
    assert!(
        !store.record(&evs[1], false).await.unwrap(),
        "a dispatched event is done"
    );

    let ids = |p: &super::monitor::EventPage| -> Vec<String> {
        p.events.iter().map(|e| e.event_id.clone()).collect()
    };
    let all = m.query(&a, &EventQuery::default()).await.unwrap();
    assert_eq!(
        ids(&all),
        [id("5"), id("4"), id("3"), id("2"), id("1")],
        "newest first, once each"
    );
    assert_eq!(all.events[3], evs[1]);
    assert!(all.next_cursor.is_none());

    // Pagination beyond one page.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let p = m
            .query(
                &a,
                &EventQuery {
                    limit: Some(2),
                    cursor: cursor.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(p.events.len() <= 2);
        seen.extend(ids(&p));
        cursor = p.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, ids(&all));

    let q = |f: fn(&mut EventQuery)| {
        let mut q = EventQuery::default();
        f(&mut q);
        q
    };
    let by_source = m
        .query(&a, &q(|q| q.source = Some("ci.github".into())))
        .await
        .unwrap();
    assert_eq!(ids(&by_source), [id("3")]);
    let by_type = m
        .query(&a, &q(|q| q.detail_type = Some("build.failed".into())))
        .await
        .unwrap();
    assert_eq!(ids(&by_type), [id("4"), id("2")]);
    let by_prio = m
        .query(&a, &q(|q| q.priority = Some("info".into())))
        .await
        .unwrap();
    assert_eq!(ids(&by_prio), [id("5"), id("3"), id("1")]);
    let combined = m
        .query(
            &a,
            &q(|q| {
                q.source = Some("agentbus".into());
                q.priority = Some("info".into());
            }),
        )
        .await
        .unwrap();
    assert_eq!(ids(&combined), [id("5"), id("1")]);
    let type_and_prio = m
        .query(
            &a,
            &q(|q| {
                q.detail_type = Some("build.failed".into());
                q.priority = Some("critical".into());
            }),
        )
        .await
        .unwrap();
    assert_eq!(ids(&type_and_prio), [id("4")]);
    let first_hour = m
        .query(
            &a,
            &EventQuery {
                from: Some(ts_of(base)),
                to: Some(ts_of(base + hour)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&first_hour), [id("3"), id("2"), id("1")]);
    // A page of a filtered query continues where it stopped.
    let p1 = m
        .query(
            &a,
            &EventQuery {
                source: Some("agentbus".into()),
                limit: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let p2 = m
        .query(
            &a,
            &EventQuery {
                source: Some("agentbus".into()),
                limit: Some(3),
                cursor: p1.next_cursor.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (ids(&p1), ids(&p2)),
        (vec![id("5"), id("4"), id("2")], vec![id("1")])
    );

    // Tenant isolation: b sees its one event; a's ids are not found for b.
    let bs = m.query(&b, &EventQuery::default()).await.unwrap();
    assert_eq!(ids(&bs), [id("6")]);
    assert!(m.get(&b, &id("1")).await.unwrap().is_none());
    assert_eq!(m.get(&a, &id("1")).await.unwrap().unwrap(), evs[0]);

    // Counts per hour and per day.
    let c = m
        .counts(
            &a,
            &CountQuery {
                granularity: Granularity::Hour,
                from: Some(ts_of(base)),
                to: Some(ts_of(base + 2 * hour)),
            },
        )
        .await
        .unwrap();
    assert_eq!(c.total, 5);
    assert!(c.complete);
    assert_eq!(c.buckets.len(), 2);
    assert_eq!(c.buckets[0].total, 3);
    assert_eq!(c.buckets[0].by_source["ci.github"], 1);
    assert_eq!(c.buckets[0].by_type["build.failed"], 1);
    assert_eq!(c.buckets[1].by_priority["critical"], 1);
    assert_eq!(c.buckets[0].start, format!("{}:00:00Z", &ts_of(base)[..13]));
    let d = m
        .counts(
            &a,
            &CountQuery {
                granularity: Granularity::Day,
                from: Some(ts_of(base - 86_400_000)),
                to: Some(ts_of(base + 2 * hour)),
            },
        )
        .await
        .unwrap();
    assert_eq!(d.total, 5);
    assert_eq!(d.buckets.iter().map(|b| b.total).sum::<u64>(), 5);
    assert_eq!(
        m.counts(
            &b,
            &CountQuery {
                granularity: Granularity::Day,
                ..Default::default()
            }
        )
        .await
        .unwrap()
        .total,
        1
    );

    // Rules: validated, listed per tenant.
    let bad = Rule {
        name: "bad".into(),
        pattern: json!({"priority": "error"}),
        description: String::new(),
        enabled: true,
        updated_at: String::new(),
    };
    let e = m.put_rule(&a, &bad).await.unwrap_err().to_string();
    assert!(e.contains("at priority: must be a list"), "{e}");
    let bad_name = Rule {
        name: "no spaces".into(),
        pattern: json!({"source": ["x"]}),
        ..bad.clone()
    };
    assert!(m.put_rule(&a, &bad_name).await.is_err());
    let failures = Rule {
        name: "failures".into(),
        pattern: json!({"detail-type": [{"suffix": ".failed"}], "priority": ["error", "critical"]}),
        description: "failed builds".into(),
        ..bad.clone()
    };
    let saved = m.put_rule(&a, &failures).await.unwrap();
    assert!(!saved.updated_at.is_empty());
    assert_eq!(store.rules(&a).await.unwrap().len(), 1);
    assert!(store.rules(&b).await.unwrap().is_empty());

    // Subscriptions: a rule must exist; the URL is checked.
    assert!(
        m.subscribe(&a, "nope", "http://127.0.0.1:1/x")
            .await
            .is_err()
    );
    assert!(
        m.subscribe(&a, "failures", "ftp://127.0.0.1/x")
            .await
            .is_err()
    );
    assert!(
        m.subscribe(&b, "failures", "http://127.0.0.1:1/x")
            .await
            .is_err(),
        "rules are per tenant"
    );
    let flaky = receiver(1).await;
    let created = m.subscribe(&a, "failures", &flaky.url).await.unwrap();
    assert!(created.signing_secret.starts_with("whsec_"));
    let sub_id = created.subscription.subscription_id.clone();
    // A subscriber that never answers: a port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{p}/gone")
    };
    let dead_sub = m.subscribe(&a, "failures", &dead).await.unwrap();
    let e = m.delete_rule(&a, "failures").await.unwrap_err().to_string();
    assert!(e.contains(&sub_id), "{e}");

    // A matching event: delivered once to each subscription, retried after the 503.
    let hit = event(
        &a,
        &id("7"),
        tier_xs::runtime::now_millis(),
        "agentbus",
        "deploy.failed",
        "critical",
    );
    let miss = event(
        &a,
        &id("8"),
        tier_xs::runtime::now_millis(),
        "agentbus",
        "deploy.failed",
        "info",
    );
    m.ingest(&hit).await.unwrap();
    m.ingest(&miss).await.unwrap();
    m.ingest(&hit).await.unwrap();
    m.settled().await;
    assert!(
        !store.record(&hit, false).await.unwrap(),
        "delivered to every subscription: dispatched"
    );
    let got = flaky.seen.lock().unwrap().clone();
    assert_eq!(
        got.len(),
        2,
        "one failure, one retry; the miss and the repeat send nothing"
    );
    for (n, (h, body)) in got.iter().enumerate() {
        assert_eq!(h["x-agentbus-attempt"], (n + 1).to_string().as_str());
        assert_eq!(h["x-agentbus-event-id"], id("7").as_str());
        assert_eq!(h["x-agentbus-subscription"], sub_id.as_str());
        let sig = h["x-agentbus-signature"].to_str().unwrap();
        let t: u64 = sig
            .strip_prefix("t=")
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        assert_eq!(sig, signature(&created.signing_secret, t, body.as_bytes()));
        assert_ne!(sig, signature("whsec_wrong", t, body.as_bytes()));
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["rule"], "failures");
        assert_eq!(v["event"]["id"], id("7"));
        assert_eq!(v["event"]["detail-type"], "deploy.failed");
        assert_eq!(v["event"]["tenant"], a.as_str());
        assert!(!body.contains(&created.signing_secret));
    }
    let subs = m.subscriptions(&a).await.unwrap();
    let ok = subs.iter().find(|s| s.subscription_id == sub_id).unwrap();
    assert_eq!((ok.stats.delivered, ok.stats.failed), (1, 0));
    assert_eq!(
        ok.stats.last_outcome.as_deref(),
        Some("204 after 2 attempts")
    );
    let bad_sub = subs
        .iter()
        .find(|s| s.subscription_id == dead_sub.subscription.subscription_id)
        .unwrap();
    assert_eq!(
        (
            bad_sub.stats.delivered,
            bad_sub.stats.failed,
            bad_sub.stats.consecutive_failures
        ),
        (0, 1, 1)
    );
    assert_eq!(
        bad_sub.stats.last_failed_event.as_deref(),
        Some(id("7").as_str())
    );
    let why = bad_sub.stats.last_error.as_deref().unwrap();
    assert!(why.contains("after 5 attempts"), "{:?}", bad_sub.stats);
    assert!(
        !why.contains("/gone"),
        "a webhook URL may hold a token: not in errors ({why})"
    );
    assert!(
        serde_json::to_string(&subs)
            .unwrap()
            .find("whsec_")
            .is_none(),
        "no secrets listed"
    );
    // Each delivery is kept, newest first, the last RECENT_DELIVERIES of them.
    assert_eq!(
        ok.stats.recent,
        [Delivery {
            at: ok.stats.last_attempt_at.clone().unwrap(),
            event_id: id("7"),
            ok: true,
            outcome: "204 after 2 attempts".into(),
        }]
    );
    for n in 0..12u32 {
        let failed = n % 3 == 0;
        store
            .record_outcome(
                &a,
                &sub_id,
                &Outcome {
                    event_id: format!("e{n}"),
                    at: format!("2026-12-01T00:00:{n:02}Z"),
                    ok: !failed,
                    summary: format!("outcome {n}"),
                    error: failed.then(|| "boom".to_string()),
                },
            )
            .await
            .unwrap();
    }
    let subs = m.subscriptions(&a).await.unwrap();
    let recent = &subs
        .iter()
        .find(|s| s.subscription_id == sub_id)
        .unwrap()
        .stats
        .recent;
    assert_eq!(
        recent
            .iter()
            .map(|d| d.event_id.as_str())
            .collect::<Vec<_>>(),
        ["e11", "e10", "e9", "e8", "e7", "e6", "e5", "e4", "e3", "e2"]
    );
    assert_eq!(
        recent[2],
        Delivery {
            at: "2026-12-01T00:00:09Z".into(),
            event_id: "e9".into(),
            ok: false,
            outcome: "outcome 9".into(),
        }
    );
    assert!(m.subscriptions(&b).await.unwrap().is_empty());
    let h = m.health(&a).await.unwrap();
    assert_eq!(h.status, "failing");
    assert_eq!(
        h.failing_subscriptions,
        std::slice::from_ref(&dead_sub.subscription.subscription_id)
    );
    assert_eq!(h.subscriptions, 2);
    assert_eq!(
        h.events_24h, 7,
        "the five earlier events, the hit and the miss: {h:?}"
    );
    assert_eq!(
        h.latest_event_at.as_deref(),
        Some(miss.time.as_str()).max(Some(hit.time.as_str()))
    );
    assert!(
        !m.unsubscribe(&b, &sub_id).await.unwrap(),
        "b cannot delete a's subscription"
    );

    // Clean up in order: subscriptions, then the rule.
    assert!(m.unsubscribe(&a, &sub_id).await.unwrap());
    assert!(
        m.unsubscribe(&a, &dead_sub.subscription.subscription_id)
            .await
            .unwrap()
    );
    assert!(m.delete_rule(&a, "failures").await.unwrap());
    assert!(!m.delete_rule(&a, "failures").await.unwrap());

    let counter = std::sync::atomic::AtomicU64::new(100);
    let next = |t: &Tenant| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        event(
            t,
            &id(&n.to_string()),
            tier_xs::runtime::now_millis(),
            "agentbus",
            "job.failed",
            "error",
        )
    };
    let rule = |name: &str| Rule {
        name: name.into(),
        pattern: json!({"detail-type": ["job.failed"]}),
        ..bad.clone()
    };

    // A webhook that keeps failing is turned off after DISABLE_AFTER deliveries, saying why;
    // turned on again, it starts afresh.
    m.put_rule(&a, &rule("jobs")).await.unwrap();
    let broken = receiver(usize::MAX).await;
    let sub = m.subscribe(&a, "jobs", &broken.url).await.unwrap();
    let sub_id = sub.subscription.subscription_id.clone();
    for _ in 0..=DISABLE_AFTER {
        m.ingest(&next(&a)).await.unwrap();
    }
    m.settled().await;
    let s = m.subscriptions(&a).await.unwrap();
    let s = s.iter().find(|s| s.subscription_id == sub_id).unwrap();
    assert!(!s.enabled, "{s:?}");
    assert_eq!(s.stats.failed, DISABLE_AFTER);
    let why = s.stats.last_error.as_deref().unwrap_or_default();
    assert!(
        why.contains("disabled after 10 failed deliveries in a row"),
        "{why}"
    );
    assert_eq!(
        broken.seen.lock().unwrap().len() as u64,
        DISABLE_AFTER * 5,
        "five attempts for each of ten deliveries; nothing for the eleventh"
    );
    let on = m.set_enabled(&a, &sub_id, true).await.unwrap().unwrap();
    assert!(on.enabled && on.stats.consecutive_failures == 0, "{on:?}");
    assert!(m.set_enabled(&b, &sub_id, true).await.unwrap().is_none());
    assert!(m.unsubscribe(&a, &sub_id).await.unwrap());

    // An event recorded but not delivered when the server stopped (the outbox) is
    // delivered by the next monitor when it starts, once.
    let ok = receiver(0).await;
    m.subscribe(&a, "jobs", &ok.url).await.unwrap();
    let cut_off = next(&a);
    assert!(store.record(&cut_off, false).await.unwrap());
    let pending = store.undispatched(1000).await.unwrap();
    assert!(pending.iter().any(|e| e.event_id == cut_off.event_id));
    let restarted = Monitor::new(
        store.clone(),
        Webhooks::with_backoff(Reach::Anywhere, std::time::Duration::from_millis(20)).unwrap(),
    );
    restarted.resume().await.unwrap();
    restarted.settled().await;
    let got = ok.seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0["x-agentbus-event-id"], cut_off.event_id.as_str());
    let pending = store.undispatched(1000).await.unwrap();
    assert!(!pending.iter().any(|e| e.event_id == cut_off.event_id));
    assert!(!store.record(&cut_off, false).await.unwrap());

    // One tenant's webhook that never answers holds up nobody: another tenant's event is
    // recorded and delivered while it hangs (and so is this tenant's next event).
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_url = format!("http://{}/hook", hanging.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = hanging.accept().await {
            keep.lock().unwrap().push(conn);
        }
    });
    m.put_rule(&a, &rule("hang")).await.unwrap();
    m.subscribe(&a, "hang", &hang_url).await.unwrap();
    m.put_rule(&b, &rule("jobs")).await.unwrap();
    let b_hook = receiver(0).await;
    m.subscribe(&b, "jobs", &b_hook.url).await.unwrap();
    let start = std::time::Instant::now();
    let stuck = next(&a);
    m.ingest(&stuck).await.unwrap();
    let theirs = next(&b);
    m.ingest(&theirs).await.unwrap();
    let mine_next = next(&a);
    m.ingest(&mine_next).await.unwrap();
    assert!(m.get(&b, &theirs.event_id).await.unwrap().is_some());
    assert!(m.get(&a, &mine_next.event_id).await.unwrap().is_some());
    while b_hook.seen.lock().unwrap().is_empty() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(3),
            "another tenant's delivery waited on a hanging webhook"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !held.lock().unwrap().is_empty(),
        "the hanging webhook was called"
    );
}
