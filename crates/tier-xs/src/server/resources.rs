//! The workspace's data as MCP resources: each tenant's KV entries here, and what the layers
//! above add (the small tier's artifacts) through [`super::mcp::ToolExtension::resources`].
//! A resource is `agentbus://{kind}/{key}` with the key percent-encoded (RFC 6570's simple
//! expansion of the template `agentbus://{kind}/{key}`), so every key, slashes and spaces
//! included, has one URI. A caller lists, reads and completes only its own tenant's.

use std::sync::Arc;

use async_trait::async_trait;
use rmcp::model::{Resource, ResourceContents, ResourceTemplate};

use crate::runtime::kv::KvStore;
use crate::runtime::{RuntimeError, Tenant};

/// The scheme of every resource URI.
pub const SCHEME: &str = "agentbus://";
/// Resources listed a page, at most.
pub const PAGE: u32 = 100;

/// A kind of data offered as resources.
#[async_trait]
pub trait ResourceSource: Send + Sync {
    /// The URI's kind: `agentbus://{kind}/{key}`.
    fn kind(&self) -> &'static str;
    /// The template's title and description, for `resources/templates/list`.
    fn describe(&self) -> (&'static str, &'static str);
    /// A page of the tenant's resources whose keys start with `prefix`, in key order, and
    /// the cursor of the next page.
    async fn list(
        &self,
        tenant: &Tenant,
        prefix: &str,
        cursor: Option<&str>,
    ) -> Result<(Vec<Listed>, Option<String>), RuntimeError>;
    /// One resource's contents; `None` when the tenant has nothing under `key`.
    async fn read(&self, tenant: &Tenant, key: &str) -> Result<Option<Contents>, RuntimeError>;
    /// What tells one version of the resource from another, read as cheaply as the store
    /// allows; `None` when there is none. A watcher reports a resource whose fingerprint
    /// changed ([`super::subscriptions`]).
    async fn fingerprint(&self, tenant: &Tenant, key: &str)
    -> Result<Option<String>, RuntimeError>;
    /// Whether a successful call of `tool` writes or deletes the resource its `key` argument
    /// names: such a call is announced to the resource's watchers at once.
    fn written_by(&self, _tool: &str) -> bool {
        false
    }
}

/// A resource as a source lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    pub key: String,
    pub mime_type: Option<String>,
    pub size: Option<u64>,
}

/// A resource's contents: text, or bytes (sent base64).
#[derive(Clone, Debug, PartialEq)]
pub enum Contents {
    Text { mime_type: String, text: String },
    Bytes { mime_type: String, bytes: Vec<u8> },
}

/// Every kind of data a server offers as resources, built once per server.
pub type Sources = Arc<[Arc<dyn ResourceSource>]>;

/// The source of `kind` among `sources`.
pub fn of_kind<'s>(
    sources: &'s [Arc<dyn ResourceSource>],
    kind: &str,
) -> Option<&'s Arc<dyn ResourceSource>> {
    sources.iter().find(|s| s.kind() == kind)
}

/// The URI of `key` in `kind`.
pub fn uri(kind: &str, key: &str) -> String {
    format!("{SCHEME}{kind}/{}", urlencoding::encode(key))
}

/// The template every resource of `kind` fits.
pub fn template_uri(kind: &str) -> String {
    format!("{SCHEME}{kind}/{{key}}")
}

/// `(kind, key)` of a resource URI; `None` when it is not one of ours.
pub fn parse(uri: &str) -> Option<(&str, String)> {
    let rest = uri.strip_prefix(SCHEME)?;
    let (kind, key) = rest.split_once('/')?;
    let key = urlencoding::decode(key).ok()?.into_owned();
    (!kind.is_empty() && !key.is_empty()).then_some((kind, key))
}

/// The resource `resources/list` shows for a listed one.
pub fn resource(kind: &str, l: &Listed) -> Resource {
    let mut r = Resource::new(uri(kind, &l.key), l.key.clone());
    if let Some(m) = &l.mime_type {
        r = r.with_mime_type(m.clone());
    }
    if let Some(s) = l.size {
        r = r.with_size(s);
    }
    r
}

/// The template of a source.
pub fn template(source: &dyn ResourceSource) -> ResourceTemplate {
    let (title, description) = source.describe();
    ResourceTemplate::new(template_uri(source.kind()), source.kind())
        .with_title(title)
        .with_description(description)
}

/// What `resources/read` answers for contents.
pub fn contents(uri: &str, c: Contents) -> ResourceContents {
    use base64::Engine;
    match c {
        Contents::Text { mime_type, text } => ResourceContents::TextResourceContents {
            uri: uri.to_string(),
            mime_type: Some(mime_type),
            text,
            meta: None,
        },
        Contents::Bytes { mime_type, bytes } => ResourceContents::BlobResourceContents {
            uri: uri.to_string(),
            mime_type: Some(mime_type),
            blob: base64::engine::general_purpose::STANDARD.encode(bytes),
            meta: None,
        },
    }
}

/// Whether bytes of this media type are text to show as text (when they are UTF-8).
pub fn is_text(mime_type: &str) -> bool {
    let m = mime_type.split(';').next().unwrap_or("").trim();
    m.starts_with("text/")
        || m == "application/json"
        || m == "application/xml"
        || m == "application/yaml"
        || m.ends_with("+json")
        || m.ends_with("+xml")
}

/// The tenant's KV entries: `agentbus://kv/{key}`, the value as text.
pub struct KvResources(pub Arc<dyn KvStore>);

#[async_trait]
impl ResourceSource for KvResources {
    fn kind(&self) -> &'static str {
        "kv"
    }
    fn describe(&self) -> (&'static str, &'static str) {
        (
            "KV entry",
            "An entry of your tenant's key-value store, its value as text (kv_get reads its version and expiry too).",
        )
    }
    async fn list(
        &self,
        tenant: &Tenant,
        prefix: &str,
        cursor: Option<&str>,
    ) -> Result<(Vec<Listed>, Option<String>), RuntimeError> {
        let page = self.0.list(tenant, prefix, cursor, PAGE).await?;
        Ok((
            page.entries
                .into_iter()
                .map(|e| Listed {
                    key: e.key,
                    mime_type: Some("text/plain".into()),
                    size: Some(e.bytes),
                })
                .collect(),
            page.next_cursor,
        ))
    }
    async fn fingerprint(
        &self,
        tenant: &Tenant,
        key: &str,
    ) -> Result<Option<String>, RuntimeError> {
        Ok(self
            .0
            .get(tenant, key)
            .await?
            .map(|e| e.version.to_string()))
    }
    fn written_by(&self, tool: &str) -> bool {
        matches!(tool, "kv_set" | "kv_delete")
    }
    async fn read(&self, tenant: &Tenant, key: &str) -> Result<Option<Contents>, RuntimeError> {
        Ok(self.0.get(tenant, key).await?.map(|e| Contents::Text {
            mime_type: "text/plain".into(),
            text: e.value,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_one_uri_that_reads_back_as_the_key() {
        for key in ["plain", "a/b c", "ümlaut%", "x?y#z"] {
            let u = uri("kv", key);
            assert!(!u[SCHEME.len() + 3..].contains(['/', ' ', '?', '#']), "{u}");
            assert_eq!(parse(&u), Some(("kv", key.to_string())));
        }
        assert_eq!(parse("agentbus://kv/"), None);
        assert_eq!(parse("https://kv/a"), None);
        assert_eq!(template_uri("artifacts"), "agentbus://artifacts/{key}");
    }

    #[test]
    fn json_and_text_types_are_text_and_the_rest_bytes() {
        for t in [
            "text/plain",
            "application/json",
            "text/markdown; charset=utf-8",
            "application/ld+json",
        ] {
            assert!(is_text(t), "{t}");
        }
        for t in ["image/png", "application/octet-stream", "application/pdf"] {
            assert!(!is_text(t), "{t}");
        }
    }
}
