//! Runtime services of the extra-small tier — KV, events, secrets — each a trait with an AWS
//! implementation (DynamoDB, EventBridge, Secrets Manager) and an embedded one (SQLite in a
//! data directory). One conformance suite ([`conformance`]) runs unchanged against both.
//!
//! Tenancy is part of every key: every call names a [`Tenant`], and no call can reach
//! another tenant's data.

pub mod deployments;
pub mod embedded;
pub mod events;
pub mod kv;
pub mod secrets;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The source of every event this system emits.
pub const EVENT_SOURCE: &str = crate::workspace::PREFIX;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("value is {size} bytes; the limit is {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("version conflict on {key:?}: expected {expected}, found {found}")]
    VersionConflict {
        key: String,
        expected: String,
        found: String,
    },
    #[error("{0} was not accepted by the backing service: {1}")]
    Rejected(&'static str, String),
    #[error("backing service error during {op}: {message}")]
    Backend { op: &'static str, message: String },
}

impl RuntimeError {
    pub fn backend(op: &'static str, e: impl std::error::Error) -> Self {
        RuntimeError::Backend {
            op,
            message: crate::engine::error_text(&e),
        }
    }

    pub fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        RuntimeError::Invalid {
            what,
            why: why.into(),
        }
    }
}

/// A tenant id: 1-64 characters of `[a-z0-9_-]`. Derived from the caller's credential,
/// never from request input.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(try_from = "String", into = "String")]
pub struct Tenant(String);

impl Tenant {
    pub fn new(id: &str) -> Result<Self, RuntimeError> {
        let ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Tenant(id.to_string()))
        } else {
            Err(RuntimeError::invalid(
                "tenant",
                format!("{id:?}: use 1-64 characters of a-z, 0-9, '-' and '_'"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Tenant {
    type Error = RuntimeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Tenant::new(&s)
    }
}

impl From<Tenant> for String {
    fn from(t: Tenant) -> String {
        t.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A page size: `default` when not given, otherwise 1..=`max`.
pub fn page_limit(limit: Option<u32>, default: u32, max: u32) -> Result<u32, RuntimeError> {
    let limit = limit.unwrap_or(default);
    if limit == 0 || limit > max {
        return Err(RuntimeError::invalid("limit", format!("use 1-{max}")));
    }
    Ok(limit)
}

/// Keeps the first `limit` of `items` (read as `limit + 1` to learn whether there is more)
/// and returns the next page's cursor: the last kept item's key, when more were there.
pub fn cut_page<T>(items: &mut Vec<T>, limit: u32, key: impl Fn(&T) -> String) -> Option<String> {
    if items.len() <= limit as usize {
        return None;
    }
    items.truncate(limit as usize);
    items.last().map(|i| kv::encode_cursor(&key(i)))
}

/// A name made by people (KV keys, secret names): printable, no control characters.
pub fn check_name(
    what: &'static str,
    s: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), RuntimeError> {
    if s.is_empty() {
        return Err(RuntimeError::invalid(what, "must not be empty"));
    }
    if s.len() > max {
        return Err(RuntimeError::invalid(
            what,
            format!("is {} bytes; at most {max}", s.len()),
        ));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(RuntimeError::invalid(
            what,
            format!("contains the control character {c:?}"),
        ));
    }
    if let Some(c) = s.chars().find(|c| !allowed(*c)) {
        return Err(RuntimeError::invalid(
            what,
            format!("contains {c:?}, which is not allowed"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_are_validated() {
        assert!(Tenant::new("acme-1").is_ok());
        assert!(Tenant::new("").is_err());
        assert!(Tenant::new("Acme").is_err());
        assert!(Tenant::new("a#b").is_err());
        assert!(Tenant::new(&"a".repeat(65)).is_err());
    }

    #[test]
    fn names_reject_control_characters() {
        let any = |_: char| true;
        assert!(check_name("key", "ok/key", 10, any).is_ok());
        assert!(check_name("key", "bad\nkey", 10, any).is_err());
        assert!(check_name("key", "", 10, any).is_err());
        assert!(check_name("key", "01234567890", 10, any).is_err());
    }
}
