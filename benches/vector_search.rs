//! Benchmark of vector memory: real 384-dimension embeddings (all-MiniLM-L6-v2, computed by the
//! server's own local model) of real sentences, searched by cosine on both stores.
//!
//!   bash scripts/bench-vector.sh [N]          (default 100,000 documents; release build)
//!
//! which runs `cargo bench -p tier-large --bench vector_search -- CORPUS MODEL_DIR N [DATABASE_URL]`
//! with a corpus of N + 1,000 sentences (the last 1,000 are the queries) and a PostgreSQL with
//! pgvector on 127.0.0.1. Measures:
//! - embedding: sentences per second of the local model, on all cores (cached next to the
//!   corpus, so later runs skip it);
//! - embedded store: the exact scan's latency per query (p50, p99), one client;
//! - pgvector: bulk load, HNSW build time, then per `hnsw.ef_search`: recall@10 against the
//!   exact results and latency (p50, p99) for one client, and queries per second at 8
//!   clients; a tenant holding 1 % of the rows next to one holding the rest: recall and
//!   latency of its searches as the store plans them (exact below its threshold), and through
//!   the index with the iterative scan.
//!
//! Results: docs/benchmarks/vector-search.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Map;
use tier_large::embed::minilm::Bert;
use tier_large::memory::embedded::EmbeddedMemory;
use tier_large::memory::pgvector::PgMemory;
use tier_large::memory::{Filter, Query, Stored, VectorStore, oracle, recall};
use tier_xs::runtime::Tenant;

const QUERIES: usize = 1_000;
const K: usize = 10;
const MODEL: &str = "all-MiniLM-L6-v2";

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The embeddings of `lines`, from the cache file when it has them all.
fn embeddings(lines: &[String], model_dir: &Path, cache: &Path) -> Vec<Vec<f32>> {
    const DIMS: usize = 384;
    if let Ok(bytes) = std::fs::read(cache)
        && bytes.len() == lines.len() * DIMS * 4
    {
        println!("embeddings: {} from {}", lines.len(), cache.display());
        return bytes
            .chunks_exact(DIMS * 4)
            .map(|c| {
                c.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            })
            .collect();
    }
    let bert = Arc::new(Bert::load(model_dir).unwrap());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let start = Instant::now();
    let chunk = lines.len().div_ceil(threads);
    let out: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = lines
            .chunks(chunk)
            .map(|part| {
                let bert = bert.clone();
                s.spawn(move || part.iter().map(|t| bert.embed(t)).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let took = start.elapsed();
    println!(
        "embedding: {} sentences in {:.0} s on {threads} threads: {:.0} sentences/s ({:.1} ms each per thread)",
        lines.len(),
        took.as_secs_f64(),
        lines.len() as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 * threads as f64 / lines.len() as f64
    );
    let bytes: Vec<u8> = out
        .iter()
        .flat_map(|v| v.iter().flat_map(|x| x.to_le_bytes()))
        .collect();
    std::fs::write(cache, bytes).unwrap();
    out
}

fn docs(lines: &[String], vectors: &[Vec<f32>], range: std::ops::Range<usize>) -> Vec<Stored> {
    range
        .map(|i| Stored {
            id: format!("d{i:06}"),
            text: lines[i].clone(),
            metadata: Map::new(),
            model: MODEL.into(),
            vector: vectors[i].clone(),
        })
        .collect()
}

async fn load(store: &dyn VectorStore, tenant: &Tenant, docs: &[Stored]) -> Duration {
    let start = Instant::now();
    for batch in docs.chunks(64) {
        store.put(tenant, "corpus", batch).await.unwrap();
    }
    start.elapsed()
}

/// The `K` nearest documents of the corpus to `q`, unfiltered.
async fn search(
    store: &dyn VectorStore,
    tenant: &Tenant,
    q: &[f32],
) -> Vec<tier_large::memory::Hit> {
    let none = Filter::new();
    let query = Query {
        collection: "corpus",
        model: MODEL,
        vector: q,
        k: K,
        filter: &none,
    };
    store.search(tenant, &query).await.unwrap()
}

/// Recall@10 against the exact answers and per-query latencies of `queries` on `store`.
async fn measure(
    store: &dyn VectorStore,
    tenant: &Tenant,
    queries: &[Vec<f32>],
    truth: &[Vec<String>],
) -> (f64, Duration, Duration) {
    let mut times = Vec::with_capacity(queries.len());
    let mut total = 0.0;
    for (q, want) in queries.iter().zip(truth) {
        let start = Instant::now();
        let hits = search(store, tenant, q).await;
        times.push(start.elapsed());
        assert_eq!(hits.len(), K, "k rows");
        let ids: Vec<String> = hits.into_iter().map(|h| h.id).collect();
        total += recall(&ids, want);
    }
    (
        total / queries.len() as f64,
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.99),
    )
}

/// Queries per second of `clients` concurrent clients over the queries.
async fn throughput(
    store: Arc<PgMemory>,
    tenant: &Tenant,
    queries: &[Vec<f32>],
    clients: usize,
) -> f64 {
    let queries = Arc::new(queries.to_vec());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (store, queries, tenant) = (store.clone(), queries.clone(), tenant.clone());
        tasks.push(tokio::spawn(async move {
            for q in queries.iter().skip(c).step_by(clients) {
                search(store.as_ref(), &tenant, q).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    queries.len() as f64 / start.elapsed().as_secs_f64()
}

/// Prints the plan of one search as the store runs it (with `ef_search`).
async fn explain(store: &PgMemory, tenant: &Tenant, q: &[f32], ef: u32) {
    use tier_large::memory::pgvector::{literal, search_sql};
    let sql = search_sql(q.len(), store.exact_below == 0)
        .replace("$1", &format!("'{}'", tenant.as_str()))
        .replace("$2", "'corpus'")
        .replace("$3", &format!("'{MODEL}'"))
        .replace("$4", &format!("'{}'", literal(q)))
        .replace("$5", "'{}'")
        .replace("$6", &K.to_string());
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = {ef}"
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, COSTS OFF) {sql}"
    )))
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    for line in plan.iter().filter(|l| !l.contains("Sort Key")) {
        let line: String = line.chars().take(140).collect();
        println!("    {line}");
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [corpus, model_dir, n, rest @ ..] = args.as_slice() else {
        panic!("usage: vector_search CORPUS MODEL_DIR N [DATABASE_URL]");
    };
    let n: usize = n.parse().unwrap();
    let lines: Vec<String> = std::fs::read_to_string(corpus)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        lines.len() >= n + QUERIES,
        "the corpus needs {} lines",
        n + QUERIES
    );
    let lines = &lines[..n + QUERIES];
    let cache = PathBuf::from(format!("{corpus}.{n}.minilm.f32"));
    let vectors = embeddings(lines, Path::new(model_dir), &cache);
    let queries: Vec<Vec<f32>> = vectors[n..].to_vec();
    let all = docs(lines, &vectors, 0..n);
    // The small tenant: every hundredth document (1 %), the big one the rest.
    let (small_docs, big_docs): (Vec<Stored>, Vec<Stored>) =
        all.iter().cloned().partition(|d| d.id.ends_with("00"));
    let none = Filter::new();
    let truth: Vec<Vec<String>> = queries.iter().map(|q| oracle(&all, q, K, &none)).collect();
    let small_truth: Vec<Vec<String>> = queries
        .iter()
        .map(|q| oracle(&small_docs, q, K, &none))
        .collect();

    // The embedded store: SQLite and the exact scan.
    let dir = std::env::temp_dir().join(format!("agentbus-bench-vector-{}", std::process::id()));
    let pool = tier_xs::runtime::embedded::open(&dir).await.unwrap();
    let embedded = EmbeddedMemory::open(pool).await.unwrap();
    let one = Tenant::new("bench").unwrap();
    let took = load(&embedded, &one, &all).await;
    println!(
        "embedded: loaded {n} documents in {:.1} s ({:.0}/s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    let (r, p50, p99) = measure(&embedded, &one, &queries, &truth).await;
    println!(
        "embedded exact scan, {n} vectors: recall@10 {r:.3}, p50 {}, p99 {}",
        ms(p50),
        ms(p99)
    );
    drop(embedded);
    std::fs::remove_dir_all(&dir).ok();

    let Some(url) = rest.first() else {
        return;
    };
    let store = PgMemory::connect(url).await.unwrap();
    // Bulk load without the index, then build it once (as a restore would).
    sqlx::raw_sql("DROP INDEX IF EXISTS memory_hnsw_384")
        .execute(store.pool())
        .await
        .unwrap();
    let (big, small) = (Tenant::new("big").unwrap(), Tenant::new("small").unwrap());
    let took = load(&store, &big, &big_docs).await + load(&store, &small, &small_docs).await;
    println!(
        "pgvector: loaded {n} documents in {:.1} s ({:.0}/s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    let start = Instant::now();
    sqlx::raw_sql(
        "SET maintenance_work_mem = '1GB'; CREATE INDEX memory_hnsw_384 ON memory_documents
           USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE dimensions = 384; ANALYZE memory_documents",
    )
    .execute(store.pool())
    .await
    .unwrap();
    println!(
        "pgvector: HNSW index (m 16, ef_construction 64) built in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let sizes: (String, String) = sqlx::query_as(
        "SELECT pg_size_pretty(pg_table_size('memory_documents')), pg_size_pretty(pg_relation_size('memory_hnsw_384'))",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    println!("pgvector: table {}, index {}", sizes.0, sizes.1);
    // The big tenant: 99 % of the rows, through the index (after one pass to warm the cache).
    let big_truth: Vec<Vec<String>> = queries
        .iter()
        .map(|q| oracle(&big_docs, q, K, &none))
        .collect();
    let mut warm = PgMemory::connect(url).await.unwrap();
    warm.exact_below = 0;
    measure(&warm, &big, &queries, &big_truth).await;
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    for ef in [40, 64, 80, 100] {
        let mut s = PgMemory::connect_tuned(options.clone(), ef).await.unwrap();
        s.exact_below = 0;
        explain(&s, &big, &queries[0], ef).await;
        let (r, p50, p99) = measure(&s, &big, &queries, &big_truth).await;
        let qps = throughput(Arc::new(s), &big, &queries, 8).await;
        println!(
            "pgvector HNSW ef_search {ef}, tenant with {} rows: recall@10 {r:.3}, p50 {}, p99 {}, {qps:.0} queries/s at 8 clients",
            big_docs.len(),
            ms(p50),
            ms(p99)
        );
    }
    // The small tenant: 1 % of the rows, as the store plans it (exact below its threshold)
    // and forced through the index with the iterative scan.
    for (label, exact_below) in [
        ("as planned (exact: below the threshold)", 10_000u64),
        ("through the index, iterative scan", 0),
    ] {
        for ef in [40, 100] {
            let mut s = PgMemory::connect_tuned(options.clone(), ef).await.unwrap();
            s.exact_below = exact_below;
            let (r, p50, p99) = measure(&s, &small, &queries, &small_truth).await;
            println!(
                "pgvector tenant with {} rows (1 %), {label}, ef_search {ef}: recall@10 {r:.3}, p50 {}, p99 {}",
                small_docs.len(),
                ms(p50),
                ms(p99)
            );
            if exact_below > 0 {
                break;
            }
        }
    }
}
