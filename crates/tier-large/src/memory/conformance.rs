//! The vector memory conformance suite: every [`VectorStore`] must pass it unchanged (the
//! embedded store in its unit tests, pgvector against a real PostgreSQL).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Map, Value, json};
use tier_xs::runtime::{RuntimeError, Tenant};

use super::{Filter, Query, Stored, VectorStore, oracle};

/// Deterministic pseudo-random unit vectors (splitmix64).
pub struct Vectors(u64);

impl Vectors {
    pub fn new(seed: u64) -> Self {
        Vectors(seed)
    }

    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    pub fn unit(&mut self, dims: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dims).map(|_| self.next()).collect();
        crate::embed::unit(v).unwrap()
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn doc(id: &str, model: &str, vector: Vec<f32>, metadata: Value) -> Stored {
    Stored {
        id: id.to_string(),
        text: format!("text of {id}"),
        metadata: obj(metadata),
        model: model.to_string(),
        vector,
    }
}

fn tenant(prefix: &str, name: &str) -> Tenant {
    Tenant::new(&format!("{prefix}-{name}")).unwrap()
}

/// A search of collection `docs` with model `m1`'s vectors.
async fn docs_search(
    store: &dyn VectorStore,
    tenant: &Tenant,
    vector: &[f32],
    k: usize,
    filter: &Filter,
) -> Result<Vec<super::Hit>, RuntimeError> {
    let q = Query {
        collection: "docs",
        model: "m1",
        vector,
        k,
        filter,
    };
    store.search(tenant, &q).await
}

pub async fn memory_suite(store: &dyn VectorStore, prefix: &str) {
    let (a, b) = (tenant(prefix, "a"), tenant(prefix, "b"));
    let mut rng = Vectors::new(7);
    const DIMS: usize = 16;

    // Put and get round-trip; a second put replaces and bumps the version.
    let first = doc("n1", "m1", rng.unit(DIMS), json!({"kind": "note", "n": 1}));
    store
        .put(&a, "notes", std::slice::from_ref(&first))
        .await
        .unwrap();
    let got = store.get(&a, "notes", "n1").await.unwrap().unwrap();
    assert_eq!(
        (
            got.text.as_str(),
            got.model.as_str(),
            got.dimensions,
            got.version
        ),
        ("text of n1", "m1", DIMS, 1)
    );
    assert_eq!(got.metadata, obj(json!({"kind": "note", "n": 1})));
    assert!(
        got.updated_at.ends_with('Z') && got.updated_at.starts_with("20"),
        "{}",
        got.updated_at
    );
    let mut replaced = first.clone();
    replaced.text = "replaced".into();
    store.put(&a, "notes", &[replaced]).await.unwrap();
    let got = store.get(&a, "notes", "n1").await.unwrap().unwrap();
    assert_eq!((got.text.as_str(), got.version), ("replaced", 2));

    // Fifty documents; searches agree with the exact oracle, with and without a filter.
    let mut docs: Vec<Stored> = (0..50)
        .map(|i| {
            let kind = if i % 10 == 0 { "rare" } else { "common" };
            doc(
                &format!("d{i:02}"),
                "m1",
                rng.unit(DIMS),
                json!({"kind": kind, "i": i}),
            )
        })
        .collect();
    for chunk in docs.chunks(20) {
        store.put(&a, "docs", chunk).await.unwrap();
    }
    for round in 0..5 {
        let q = rng.unit(DIMS);
        let none = Filter::new();
        let rare = obj(json!({"kind": "rare"}));
        for (filter, k, expect) in [
            (&none, 10, 10),
            (&rare, 10, 5),
            (&rare, 3, 3),
            (&none, 1, 1),
        ] {
            let hits = docs_search(store, &a, &q, k, filter).await.unwrap();
            let ids: Vec<String> = hits.iter().map(|h| h.id.clone()).collect();
            assert_eq!(ids.len(), expect, "round {round}, k {k}, filter {filter:?}");
            assert_eq!(ids, oracle(&docs, &q, k, filter), "round {round}, k {k}");
            for h in &hits {
                let d = docs.iter().find(|d| d.id == h.id).unwrap();
                let exact = crate::embed::minilm::dot(&q, &d.vector);
                assert!((h.score - exact).abs() < 1e-4, "{} vs {exact}", h.score);
                assert_eq!(h.text, d.text);
                assert_eq!(h.metadata, d.metadata);
            }
        }
    }
    // A numeric filter compares by value.
    let q = rng.unit(DIMS);
    let hits = docs_search(store, &a, &q, 5, &obj(json!({"i": 7.0})))
        .await
        .unwrap();
    assert_eq!(
        hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["d07"]
    );

    // Another tenant sees nothing of these, under the same names.
    let none = Filter::new();
    assert_eq!(docs_search(store, &b, &q, 10, &none).await.unwrap(), vec![]);
    assert_eq!(store.get(&b, "docs", "d01").await.unwrap(), None);
    assert!(!store.delete(&b, "docs", "d01").await.unwrap());
    store
        .put(&b, "docs", &[doc("d01", "m1", rng.unit(DIMS), json!({}))])
        .await
        .unwrap();
    let hits = docs_search(store, &b, &q, 10, &none).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].metadata, Map::new());
    assert_eq!(
        store.get(&a, "docs", "d01").await.unwrap().unwrap().version,
        1
    );

    // Vectors of another model are never compared with the query's.
    let other = doc("d03", "m2", rng.unit(DIMS), json!({"kind": "rare"}));
    store
        .put(&a, "docs", std::slice::from_ref(&other))
        .await
        .unwrap();
    docs.retain(|d| d.id != "d03");
    let hits = docs_search(store, &a, &q, 50, &Filter::new())
        .await
        .unwrap();
    assert_eq!(hits.len(), 49);
    assert!(hits.iter().all(|h| h.id != "d03"));
    let cols = store.collections(&a).await.unwrap();
    let names: Vec<(&str, u64, Vec<&str>)> = cols
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.documents,
                c.models.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [("docs", 50, vec!["m1", "m2"]), ("notes", 1, vec!["m1"])]
    );
    assert_eq!(store.collections(&b).await.unwrap().len(), 1);

    // Re-embedding: the stale document is listed, and replaced only at its version.
    let stale = store.stale("m1", 100).await.unwrap();
    let mine: Vec<_> = stale.iter().filter(|s| s.tenant == a).collect();
    assert_eq!(mine.len(), 1, "{stale:?}");
    assert_eq!((mine[0].id.as_str(), mine[0].version), ("d03", 2));
    let mut outdated = mine[0].clone();
    outdated.version = 1;
    assert!(
        !store
            .revector(&outdated, "m1", &rng.unit(DIMS))
            .await
            .unwrap()
    );
    let fresh = rng.unit(DIMS);
    assert!(store.revector(mine[0], "m1", &fresh).await.unwrap());
    assert!(
        store
            .stale("m1", 100)
            .await
            .unwrap()
            .iter()
            .all(|s| s.tenant != a)
    );
    let hits = docs_search(store, &a, &fresh, 1, &Filter::new())
        .await
        .unwrap();
    assert_eq!(hits[0].id, "d03");
    assert_eq!(store.collections(&a).await.unwrap()[0].models, ["m1"]);

    // Deletes: gone from get, search and the count.
    assert!(store.delete(&a, "docs", "d03").await.unwrap());
    assert!(!store.delete(&a, "docs", "d03").await.unwrap());
    assert_eq!(store.get(&a, "docs", "d03").await.unwrap(), None);
    let hits = docs_search(store, &a, &fresh, 100, &Filter::new())
        .await
        .unwrap();
    assert_eq!(hits.len(), 49);
    assert_eq!(store.collections(&a).await.unwrap()[0].documents, 49);

    // A query of another size finds nothing (no vector of that size to compare with).
    let hits = docs_search(store, &a, &rng.unit(DIMS + 1), 10, &Filter::new())
        .await
        .unwrap();
    assert_eq!(hits, vec![]);

    // Bad input is refused before anything is stored.
    let invalid = |r: Result<(), RuntimeError>, what: &str| match r {
        Err(RuntimeError::Invalid { .. }) => {}
        other => panic!("{what}: {other:?}"),
    };
    let v = rng.unit(DIMS);
    invalid(
        store
            .put(&a, "Bad/Name", &[doc("x", "m1", v.clone(), json!({}))])
            .await,
        "collection",
    );
    invalid(store.put(&a, "docs", &[]).await, "no documents");
    invalid(
        store
            .put(
                &a,
                "docs",
                &[
                    doc("x", "m1", v.clone(), json!({})),
                    doc("x", "m1", v.clone(), json!({})),
                ],
            )
            .await,
        "duplicate ids",
    );
    let mut empty = doc("x", "m1", v.clone(), json!({}));
    empty.text = " ".into();
    invalid(store.put(&a, "docs", &[empty]).await, "empty text");
    invalid(
        store
            .put(
                &a,
                "docs",
                &[doc("x", "m1", vec![f32::NAN; DIMS], json!({}))],
            )
            .await,
        "NaN",
    );
    invalid(
        store
            .put(&a, "docs", &[doc("", "m1", v.clone(), json!({}))])
            .await,
        "empty id",
    );
    let mut long = doc("x", "m1", v.clone(), json!({}));
    long.text = "x".repeat(super::MAX_TEXT + 1);
    assert!(matches!(
        store.put(&a, "docs", &[long]).await,
        Err(RuntimeError::TooLarge { .. })
    ));
    let big_meta = json!({"blob": "y".repeat(super::MAX_METADATA)});
    invalid(
        store
            .put(&a, "docs", &[doc("x", "m1", v.clone(), big_meta)])
            .await,
        "metadata",
    );
    assert_eq!(store.get(&a, "docs", "x").await.unwrap(), None);
    for (k, filter, what) in [
        (0, json!({}), "k 0"),
        (super::MAX_K + 1, json!({}), "k too big"),
        (5, json!({"kind": {"$ne": 1}}), "an operator in a filter"),
        (5, json!({"tags": ["a"]}), "a list in a filter"),
    ] {
        let r = docs_search(store, &a, &v, k, &obj(filter))
            .await
            .map(|_| ());
        invalid(r, what);
    }
}
