//! The extra-small tier's resource types. Each module holds one kind of AWS resource:
//! its desired fields, how to observe it, and how to create, update and delete it.
//! Higher tiers reuse these types (a table is a table in every tier).

pub mod budget;
pub mod bus;
pub mod ecr;
pub mod ecs;
pub mod iam;
pub mod logs;
pub mod network;
pub mod secret;
pub mod table;

use serde_json::Value;

/// Tags to set and tag keys to remove to get from `current` to `desired` (both JSON objects
/// of strings). Only our own `agentbus:*` keys are ever removed.
pub fn tag_changes(
    current: Option<&Value>,
    desired: Option<&Value>,
) -> (Vec<(String, String)>, Vec<String>) {
    let empty = serde_json::Map::new();
    let cur = current.and_then(|v| v.as_object()).unwrap_or(&empty);
    let want = desired.and_then(|v| v.as_object()).unwrap_or(&empty);
    let set = want
        .iter()
        .filter(|(k, v)| cur.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let remove = cur
        .keys()
        .filter(|k| !want.contains_key(*k) && k.starts_with("agentbus:"))
        .cloned()
        .collect();
    (set, remove)
}

/// Parses a JSON document and re-serialises it with sorted keys, so that two documents that
/// mean the same compare equal.
pub fn normalize_json(doc: &str) -> Value {
    serde_json::from_str::<Value>(doc).unwrap_or_else(|_| Value::String(doc.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tag_changes_sets_and_removes_only_own_keys() {
        let cur = json!({"agentbus:tier": "xs", "agentbus:old": "x", "owner": "me"});
        let want = json!({"agentbus:tier": "small", "agentbus:env": "dev"});
        let (mut set, remove) = tag_changes(Some(&cur), Some(&want));
        set.sort();
        assert_eq!(
            set,
            vec![
                ("agentbus:env".to_string(), "dev".to_string()),
                ("agentbus:tier".to_string(), "small".to_string())
            ]
        );
        assert_eq!(remove, vec!["agentbus:old".to_string()]);
    }
}
