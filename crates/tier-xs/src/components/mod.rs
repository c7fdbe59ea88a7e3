//! The resource kinds every tier builds from. Each module holds one kind of AWS resource:
//! its desired fields, how to observe it, and how to create, update and delete it.
//! Higher tiers reuse these types (a table is a table in every tier).

pub mod budget;
pub mod bus;
pub mod domain;
pub mod ecr;
pub mod ecs;
pub mod iam;
pub mod logs;
pub mod network;
pub mod secret;
pub mod table;

use serde_json::Value;

/// Parses a JSON document and re-serialises it with sorted keys, so that two documents that
/// mean the same compare equal.
pub fn normalize_json(doc: &str) -> Value {
    serde_json::from_str::<Value>(doc).unwrap_or_else(|_| Value::String(doc.to_string()))
}
