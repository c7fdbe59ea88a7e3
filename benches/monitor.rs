//! Benchmark of the event monitor on the embedded store (SQLite on local disk).
//!
//!   cargo bench -p tier-small --bench monitor        (release build)
//!
//! Measures what one server does with each event and each read:
//! - ingest: events recorded per second with no rules, and with 20 rules none of which match
//!   (every event is matched against every rule of its tenant);
//! - ingest with delivery: one matching rule and one webhook subscription on 127.0.0.1, time
//!   per event from ingest to the receiver's answer being recorded;
//! - events_query: a page of 50 (newest; and filtered by source) among 20,000 events;
//! - events_counts: 24 hours by hour over those 20,000 events.
//!
//! Results: docs/benchmarks/monitor.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tier_small::runtime::monitor::sqlite::SqliteEventStore;
use tier_small::runtime::monitor::webhook::{Reach, Webhooks};
use tier_small::runtime::monitor::{CountQuery, EventQuery, Monitor, MonitoredEvent, Rule};
use tier_small::runtime::timeline::ts_of;
use tier_xs::runtime::{Tenant, now_millis};

const EVENTS: usize = 20_000;

fn event(tenant: &Tenant, n: usize, millis: u64) -> MonitoredEvent {
    let sources = [
        "agentbus",
        "ci.github",
        "agentbus.conductor",
        "agentbus.critic",
    ];
    let types = [
        "build.started",
        "build.failed",
        "task.done",
        "review.posted",
        "push",
    ];
    let prios = ["info", "info", "info", "warning", "error"];
    MonitoredEvent {
        event_id: format!("bench-{n:08}"),
        tenant: tenant.as_str().into(),
        source: sources[n % sources.len()].into(),
        detail_type: types[n % types.len()].into(),
        priority: prios[n % prios.len()].into(),
        time: ts_of(millis),
        detail: json!({"n": n, "summary": "x".repeat(200)}),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

async fn receiver() -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async { axum::http::StatusCode::NO_CONTENT }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}/hook")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::temp_dir().join(format!("agentbus-bench-monitor-{}", std::process::id()));
    let pool = tier_xs::runtime::embedded::open(&dir).await.unwrap();
    let store = Arc::new(SqliteEventStore::open(pool).await.unwrap());
    let m = Monitor::new(store.clone(), Webhooks::new(Reach::Anywhere).unwrap());
    let a = Tenant::new("bench-a").unwrap();
    let b = Tenant::new("bench-b").unwrap();
    let now = now_millis();
    // Spread over the last 24 hours.
    let at = |n: usize| now - 86_400_000 + (n as u64 * 86_400_000 / EVENTS as u64);

    println!("agentbus event monitor, embedded store (SQLite), {EVENTS} events of ~300 bytes");
    let start = Instant::now();
    for n in 0..EVENTS / 2 {
        m.ingest(&event(&a, n, at(n))).await.unwrap();
    }
    let el = start.elapsed();
    println!(
        "ingest, no rules:           {:>8.0} events/s ({:.1} µs each)",
        (EVENTS / 2) as f64 / el.as_secs_f64(),
        el.as_secs_f64() * 1e6 / (EVENTS / 2) as f64
    );

    for i in 0..20 {
        let r = Rule {
            name: format!("rule-{i}"),
            pattern: json!({"detail-type": [format!("never.{i}")], "priority": ["critical"]}),
            description: String::new(),
            enabled: true,
            updated_at: String::new(),
        };
        m.put_rule(&a, &r).await.unwrap();
    }
    let start = Instant::now();
    for n in EVENTS / 2..EVENTS {
        m.ingest(&event(&a, n, at(n))).await.unwrap();
    }
    let el = start.elapsed();
    println!(
        "ingest, 20 rules, no match: {:>8.0} events/s ({:.1} µs each)",
        (EVENTS / 2) as f64 / el.as_secs_f64(),
        el.as_secs_f64() * 1e6 / (EVENTS / 2) as f64
    );

    // Deliveries: tenant b, one matching rule, one subscription on 127.0.0.1.
    let url = receiver().await;
    m.put_rule(
        &b,
        &Rule {
            name: "all".into(),
            pattern: json!({"source": [{"prefix": ""}]}),
            description: String::new(),
            enabled: true,
            updated_at: String::new(),
        },
    )
    .await
    .unwrap();
    m.subscribe(&b, "all", &url).await.unwrap();
    let mut times = Vec::new();
    for n in 0..500 {
        let e = event(&b, EVENTS + n, now_millis());
        let t = Instant::now();
        m.ingest(&e).await.unwrap();
        times.push(t.elapsed());
    }
    let subs = m.subscriptions(&b).await.unwrap();
    assert_eq!(subs[0].stats.delivered, 500);
    println!(
        "ingest + webhook delivery:  median {:>7.0} µs, p99 {:>7.0} µs (500 events, each POSTed and its outcome recorded)",
        median(times.clone()).as_secs_f64() * 1e6,
        p99(times).as_secs_f64() * 1e6
    );

    let time = |label: &str, runs: usize, q: EventQuery| {
        let m = m.clone();
        let a = a.clone();
        let label = label.to_string();
        async move {
            let mut v = Vec::new();
            for _ in 0..runs {
                let t = Instant::now();
                let p = m.query(&a, &q).await.unwrap();
                v.push(t.elapsed());
                assert!(!p.events.is_empty());
            }
            println!(
                "{label:<27} median {:>7.0} µs, p99 {:>7.0} µs",
                median(v.clone()).as_secs_f64() * 1e6,
                p99(v).as_secs_f64() * 1e6
            );
        }
    };
    time("events_query, newest 50:", 200, EventQuery::default()).await;
    time(
        "events_query, by source:",
        200,
        EventQuery {
            source: Some("ci.github".into()),
            ..Default::default()
        },
    )
    .await;
    time(
        "events_query, by priority:",
        200,
        EventQuery {
            priority: Some("error".into()),
            ..Default::default()
        },
    )
    .await;
    let mut v = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let c = m.counts(&a, &CountQuery::default()).await.unwrap();
        v.push(t.elapsed());
        assert!(c.total > 0);
    }
    println!(
        "events_counts, 24 h hourly: median {:>7.0} µs, p99 {:>7.0} µs ({} events counted)",
        median(v.clone()).as_secs_f64() * 1e6,
        p99(v).as_secs_f64() * 1e6,
        m.counts(&a, &CountQuery::default()).await.unwrap().total
    );
    std::fs::remove_dir_all(&dir).ok();
}
