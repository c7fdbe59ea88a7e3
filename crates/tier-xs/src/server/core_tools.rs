//! The extra-small tier's own tools (KV, events, secrets, status) as typed routes, like every
//! higher tier's: a function of the server's state, the caller and its typed arguments. The
//! caller's tenant and role come from the authenticated request (HTTP) or from the process
//! (stdio), never from arguments.

use std::sync::Arc;

use serde_json::Value;

use super::AppState;
use super::auth::{Identity, Role};
use super::mcp::{
    Access, CONFIG_PREFIX, DeletedOut, EventArgs, EventOut, KeyArgs, KvGetOut, KvListArgs,
    KvListItem, KvListOut, KvSetArgs, KvSetOut, NoArgs, Route, SecretNameArgs, SecretOut,
    SecretPutArgs, SecretsOut, StatusOut, explain, tool_annotations, tool_spec, typed_route_in,
};
use super::quota::{Kept, Meter, kv_kib};
use crate::runtime::RuntimeError;
use crate::runtime::kv::{Expect, Ttl};

/// The caller, if they may write `key`: a writer, or a run's agent writing its records; the
/// workspace's configuration (keys under [`CONFIG_PREFIX`]) only an admin.
fn writer_of(id: Identity, key: &str) -> Result<Identity, String> {
    if key.starts_with(CONFIG_PREFIX) && id.role != Role::Admin {
        return Err(format!(
            "keys under {CONFIG_PREFIX} are the workspace's configuration (its governance policy, its registered tools): only an admin token writes them"
        ));
    }
    match &id.records {
        _ if id.may_write(key) => Ok(id),
        Some(prefix) => Err(format!(
            "this agent's lane only reads: it may write its run's records (keys under {prefix}), not {key}"
        )),
        None => Access::Write.admit(id),
    }
}

async fn kv_get(state: Arc<AppState>, id: Identity, a: KeyArgs) -> Result<KvGetOut, String> {
    let e = state.kv.get(&id.tenant, &a.key).await.map_err(explain)?;
    Ok(KvGetOut {
        found: e.is_some(),
        key: a.key,
        version: e.as_ref().map(|e| e.version),
        expires_at: e.as_ref().and_then(|e| e.expires_at),
        value: e.map(|e| e.value),
    })
}

async fn kv_set(state: Arc<AppState>, id: Identity, a: KvSetArgs) -> Result<KvSetOut, String> {
    let id = writer_of(id, &a.key)?;
    let ttl = match (a.no_expiry.unwrap_or(false), a.ttl_seconds) {
        (true, Some(_)) => {
            return Err(explain(RuntimeError::invalid(
                "no_expiry",
                "give either ttl_seconds or no_expiry, not both",
            )));
        }
        (true, None) => Ttl::Never,
        (false, s) => s.map(Ttl::Seconds).unwrap_or(Ttl::Default),
    };
    // A new key past the entry quota is refused before anything is counted.
    state
        .admit_kv_entry(&id.tenant, &a.key)
        .await
        .map_err(explain)?;
    // Counted when taken for writing: DynamoDB bills a refused conditional write too.
    state
        .quota
        .take(&id.tenant, Meter::KvKib, kv_kib(&a.key, &a.value))
        .map_err(explain)?;
    let kv = &state.kv;
    let e = match (a.expected_version, a.only_if_absent.unwrap_or(false)) {
        (Some(_), true) => {
            return Err("give expected_version or only_if_absent, not both".into());
        }
        (Some(v), false) => {
            kv.compare_and_set(&id.tenant, &a.key, &a.value, Expect::Version(v), ttl)
                .await
        }
        (None, true) => {
            kv.compare_and_set(&id.tenant, &a.key, &a.value, Expect::Absent, ttl)
                .await
        }
        (None, false) => kv.set(&id.tenant, &a.key, &a.value, ttl).await,
    }
    .map_err(explain)?;
    if e.version == 1 {
        state.quota.kept_changed(&id.tenant, Kept::KvEntries, 1);
    }
    Ok(KvSetOut {
        key: e.key,
        version: e.version,
        expires_at: e.expires_at,
    })
}

async fn kv_delete(state: Arc<AppState>, id: Identity, a: KeyArgs) -> Result<DeletedOut, String> {
    let id = writer_of(id, &a.key)?;
    let deleted = state.kv.delete(&id.tenant, &a.key).await.map_err(explain)?;
    if deleted {
        state.quota.kept_changed(&id.tenant, Kept::KvEntries, -1);
    }
    Ok(DeletedOut { deleted })
}

async fn kv_list(state: Arc<AppState>, id: Identity, a: KvListArgs) -> Result<KvListOut, String> {
    let page = state
        .kv
        .list(
            &id.tenant,
            a.prefix.as_deref().unwrap_or(""),
            a.cursor.as_deref(),
            a.limit.unwrap_or(100),
        )
        .await
        .map_err(explain)?;
    Ok(KvListOut {
        entries: page
            .entries
            .into_iter()
            .map(|e| KvListItem {
                bytes: e.bytes,
                key: e.key,
                version: e.version,
                expires_at: e.expires_at,
            })
            .collect(),
        next_cursor: page.next_cursor,
    })
}

async fn events_send(state: Arc<AppState>, id: Identity, a: EventArgs) -> Result<EventOut, String> {
    let ev = state
        .publish(&id.tenant, &a.detail_type, &Value::Object(a.detail))
        .await
        .map_err(explain)?;
    Ok(EventOut {
        id: ev.id,
        source: ev.source,
    })
}

fn secret_out(m: crate::runtime::secrets::SecretMeta) -> SecretOut {
    SecretOut {
        name: m.name,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

async fn secrets_put(
    state: Arc<AppState>,
    id: Identity,
    a: SecretPutArgs,
) -> Result<SecretOut, String> {
    let m = state
        .secrets
        .put(&id.tenant, &a.name, &a.value)
        .await
        .map_err(explain)?;
    Ok(secret_out(m))
}

async fn secrets_list(state: Arc<AppState>, id: Identity, _: NoArgs) -> Result<SecretsOut, String> {
    let list = state.secrets.list(&id.tenant).await.map_err(explain)?;
    Ok(SecretsOut {
        secrets: list.into_iter().map(secret_out).collect(),
    })
}

async fn secrets_delete(
    state: Arc<AppState>,
    id: Identity,
    a: SecretNameArgs,
) -> Result<DeletedOut, String> {
    let deleted = state
        .secrets
        .delete(&id.tenant, &a.name)
        .await
        .map_err(explain)?;
    Ok(DeletedOut { deleted })
}

async fn status(state: Arc<AppState>, id: Identity, _: NoArgs) -> Result<StatusOut, String> {
    let health = state.health(&id.tenant).await;
    Ok(StatusOut {
        tier: state.info.tier.clone(),
        env: state.info.env.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: state.started.elapsed().as_secs(),
        tenant: id.tenant.to_string(),
        role: format!("{:?}", id.role).to_lowercase(),
        health,
    })
}

/// The tools, in the order `tools/list` has always shown them (it sorts by name).
pub(super) fn routes() -> Vec<Route> {
    vec![
        typed_route_in(
            tool_spec(
                "kv_get",
                "Read a key of your tenant's KV store. Expired entries read as absent.",
                tool_annotations(true, false, true),
            ),
            Access::Read,
            kv_get,
        ),
        typed_route_in(
            tool_spec(
                "kv_set",
                "Write a key of your tenant's KV store (expires after 24 h unless ttl_seconds or no_expiry says otherwise). With expected_version or only_if_absent it writes only if the entry is as expected, for safe concurrent updates.",
                tool_annotations(false, true, false),
            ),
            // Who may write depends on the key: the tool asks.
            Access::Read,
            kv_set,
        ),
        typed_route_in(
            tool_spec(
                "kv_delete",
                "Delete a key of your tenant's KV store.",
                tool_annotations(false, true, true),
            ),
            Access::Read,
            kv_delete,
        ),
        typed_route_in(
            tool_spec(
                "kv_list",
                "List keys of your tenant's KV store by prefix, a page at a time (pass next_cursor back for the next page).",
                tool_annotations(true, false, true),
            ),
            Access::Read,
            kv_list,
        ),
        typed_route_in(
            tool_spec(
                "events_send",
                "Publish an event on the workspace's event bus (source \"agentbus\"), tagged with your tenant.",
                tool_annotations(false, false, false),
            ),
            Access::Write,
            events_send,
        ),
        typed_route_in(
            tool_spec(
                "secrets_put",
                "Store a secret for your tenant. The value is write-only: no tool returns it.",
                tool_annotations(false, true, true),
            ),
            Access::Write,
            secrets_put,
        ),
        typed_route_in(
            tool_spec(
                "secrets_list",
                "List your tenant's secrets: names and dates, never values.",
                tool_annotations(true, false, true),
            ),
            Access::Read,
            secrets_list,
        ),
        typed_route_in(
            tool_spec(
                "secrets_delete",
                "Delete one of your tenant's secrets.",
                tool_annotations(false, true, true),
            ),
            Access::Write,
            secrets_delete,
        ),
        typed_route_in(
            tool_spec(
                "status",
                "The workspace's tier, env, version, uptime and the health of each backing service.",
                tool_annotations(true, false, true),
            ),
            Access::Read,
            status,
        ),
    ]
}
