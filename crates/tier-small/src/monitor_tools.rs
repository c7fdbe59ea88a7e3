//! The event monitor's MCP tools and dashboard API: query and count recorded events, rules,
//! and webhook subscriptions. Everything is scoped to the caller's tenant.

use std::sync::Arc;

use axum::extract::{Query, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tier_xs::server::auth::{Identity, Role};
use tier_xs::server::mcp::{
    Access, NoArgs, Route, explain, tool_annotations, tool_spec, typed_route,
};
use tier_xs::server::{AppState, api_error, caller};

use crate::runtime::monitor::{
    CountQuery, Counts, Created, EventPage, EventQuery, Monitor, MonitorHealth, MonitoredEvent,
    Rule, Subscription,
};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventIdArgs {
    /// The event's id, as `events_query` lists it.
    pub event_id: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct EventOut {
    pub found: bool,
    pub event: Option<MonitoredEvent>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleArgs {
    /// 1-64 of letters, digits, `-`, `_`, `.`; putting an existing name replaces that rule.
    pub name: String,
    /// An EventBridge-style pattern over `source`, `detail-type`, `priority`, `tenant`,
    /// `time` and `detail`, e.g. `{"priority": ["error", "critical"]}` or
    /// `{"detail-type": [{"prefix": "build."}], "detail": {"status": ["FAILED"]}}`.
    /// Operators: prefix, suffix, equals-ignore-case, wildcard, anything-but, numeric,
    /// exists, and `$or`.
    pub pattern: serde_json::Map<String, Value>,
    /// What the rule is for, for people (optional).
    #[serde(default)]
    pub description: String,
    /// Whether the rule matches events now (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameArgs {
    /// The rule's name, as `rules_list` shows it.
    pub name: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct RulesOut {
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeArgs {
    /// The rule whose matching events are delivered.
    pub rule: String,
    /// Where to POST them (`https`; the local server also takes `http`).
    pub url: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionIdArgs {
    /// The subscription's id, as `subscriptions_list` shows it.
    pub subscription_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnableArgs {
    /// The subscription's id, as `subscriptions_list` shows it.
    pub subscription_id: String,
    /// `true` to deliver to it again, `false` to stop.
    pub enabled: bool,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SubscriptionsOut {
    pub subscriptions: Vec<Subscription>,
}

/// A webhook URL as a viewer sees it: scheme, host and port only. Paths and queries often
/// carry credentials (`/hooks/T000/B000/XXXX`, `?token=`), and user info always does.
pub fn masked_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or_default();
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}/…", u.scheme())
        }
        Err(_) => "…".into(),
    }
}

/// The subscriptions a caller may see: writers see their URLs, viewers only where they go.
fn for_caller(id: &Identity, mut subscriptions: Vec<Subscription>) -> SubscriptionsOut {
    if id.role == Role::Viewer {
        for s in &mut subscriptions {
            s.url = masked_url(&s.url);
        }
    }
    SubscriptionsOut { subscriptions }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DeletedOut {
    pub deleted: bool,
}

/// The dashboard's view of the monitor.
pub fn api(m: Monitor) -> axum::Router<Arc<AppState>> {
    let (m1, m2, m3) = (m.clone(), m.clone(), m);
    axum::Router::new()
        .route(
            "/api/monitor/events",
            get(move |Query(q): Query<EventQuery>, req: Request| {
                let m = m1.clone();
                async move {
                    let Some(id) = caller(req.extensions()) else {
                        return StatusCode::UNAUTHORIZED.into_response();
                    };
                    match m.query(&id.tenant, &q).await {
                        Ok(p) => axum::Json(p).into_response(),
                        Err(e) => api_error(&e),
                    }
                }
            }),
        )
        .route(
            "/api/monitor/counts",
            get(move |Query(q): Query<CountQuery>, req: Request| {
                let m = m2.clone();
                async move {
                    let Some(id) = caller(req.extensions()) else {
                        return StatusCode::UNAUTHORIZED.into_response();
                    };
                    match m.counts(&id.tenant, &q).await {
                        Ok(c) => axum::Json(c).into_response(),
                        Err(e) => api_error(&e),
                    }
                }
            }),
        )
        .route(
            "/api/monitor/subscriptions",
            get(move |req: Request| {
                let m = m3.clone();
                async move {
                    let Some(id) = caller(req.extensions()) else {
                        return StatusCode::UNAUTHORIZED.into_response();
                    };
                    match m.subscriptions(&id.tenant).await {
                        Ok(s) => axum::Json(for_caller(&id, s)).into_response(),
                        Err(e) => api_error(&e),
                    }
                }
            }),
        )
}

pub fn routes(m: &Monitor) -> Vec<Route> {
    let query = {
        let m = m.clone();
        typed_route(
            tool_spec(
                "events_query",
                "List your tenant's recorded events, newest first, filtered by source, detail_type, priority and time range (RFC 3339), a page at a time (pass next_cursor back). Events published a moment ago appear within seconds.",
                tool_annotations(true, false, true),
            ),
            Access::Read,
            move |id, q: EventQuery| {
                let m = m.clone();
                async move {
                    let p: EventPage = m.query(&id.tenant, &q).await.map_err(explain)?;
                    Ok(p)
                }
            },
        )
    };
    let get_one = {
        let m = m.clone();
        typed_route(
            tool_spec(
                "events_get",
                "One recorded event of your tenant by its event id.",
                tool_annotations(true, false, true),
            ),
            Access::Read,
            move |id, a: EventIdArgs| {
                let m = m.clone();
                async move {
                    let e = m.get(&id.tenant, &a.event_id).await.map_err(explain)?;
                    Ok(EventOut {
                        found: e.is_some(),
                        event: e,
                    })
                }
            },
        )
    };
    let counts = {
        let m = m.clone();
        typed_route(
            tool_spec(
                "events_counts",
                "Count your tenant's events per hour (up to 7 days) or per day (up to 90 days), each bucket broken down by source, detail type and priority.",
                tool_annotations(true, false, true),
            ),
            Access::Read,
            move |id, q: CountQuery| {
                let m = m.clone();
                async move {
                    let c: Counts = m.counts(&id.tenant, &q).await.map_err(explain)?;
                    Ok(c)
                }
            },
        )
    };
    let health = {
        let m = m.clone();
        typed_route(
            tool_spec(
                "events_health",
                "Your tenant's event monitoring at a glance: events in the last 24 hours by priority, the newest event's time, and which webhook subscriptions are failing.",
                tool_annotations(true, false, true),
            ),
            Access::Read,
            move |id, _: NoArgs| {
                let m = m.clone();
                async move {
                    let h: MonitorHealth = m.health(&id.tenant).await.map_err(explain)?;
                    Ok(h)
                }
            },
        )
    };
    let put_rule = {
        let m = m.clone();
        typed_route(
            tool_spec(
                "rules_put",
                "Create or replace a rule: a named EventBridge-style pattern. The pattern is checked and a bad one is refused with the place and reason.",
                tool_annotations(false, true, true),
            ),
            Access::Write,
            move |id, a: RuleArgs| {
                let m = m.clone();
                async move {
                    let r = Rule {
                        name: a.name,
                        pattern: Value::Object(a.pattern),
                        description: a.description,
                        enabled: a.enabled.unwrap_or(true),
                        updated_at: String::new(),
                    };
                    let r: Rule = m.put_rule(&id.tenant, &r).await.map_err(explain)?;
                    Ok(r)
                }
            },
        )
    };
    let list_rules = {
        let m = m.clone();
        typed_route(
            tool_spec(
                "rules_list",
                "Your tenant's rules.",
                tool_annotations(true, false, true),
            ),
            Access::Read,
            move |id, _: NoArgs| {
                let m = m.clone();
                async move {
                    let rules = m.store.rules(&id.tenant).await.map_err(explain)?;
                    Ok(RulesOut { rules })
                }
            },
        )
    };
    let delete_rule = {
        let m = m.clone();
        typed_route(
            tool_spec(
                "rules_delete",
                "Delete a rule of your tenant; refused while a subscription uses it.",
                tool_annotations(false, true, true),
            ),
            Access::Write,
            move |id, a: NameArgs| {
                let m = m.clone();
                async move {
                    let deleted = m.delete_rule(&id.tenant, &a.name).await.map_err(explain)?;
                    Ok(DeletedOut { deleted })
                }
            },
        )
    };
    let subscribe = {
        let m = m.clone();
        typed_route(
            tool_spec(
                "subscriptions_create",
                "Deliver the events a rule matches to a webhook: an HTTP POST of {subscription_id, rule, event}, signed in X-Agentbus-Signature (t=<unix time>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">), retried with backoff on errors, timeouts, 408, 429 and 5xx. The signing secret is returned only here.",
                tool_annotations(false, false, false),
            ),
            Access::Write,
            move |id, a: SubscribeArgs| {
                let m = m.clone();
                async move {
                    let c: Created = m
                        .subscribe(&id.tenant, &a.rule, &a.url)
                        .await
                        .map_err(explain)?;
                    Ok(c)
                }
            },
        )
    };
    let list_subs = {
        let m = m.clone();
        typed_route(
            tool_spec(
                "subscriptions_list",
                "Your tenant's webhook subscriptions with their delivery counts and the last failure (never their secrets; a viewer sees only where each URL goes).",
                tool_annotations(true, false, true),
            ),
            Access::Read,
            move |id, _: NoArgs| {
                let m = m.clone();
                async move {
                    let subscriptions = m.subscriptions(&id.tenant).await.map_err(explain)?;
                    Ok(for_caller(&id, subscriptions))
                }
            },
        )
    };
    let enable_m = m.clone();
    let m = m.clone();
    let unsubscribe = typed_route(
        tool_spec(
            "subscriptions_delete",
            "Delete a webhook subscription of your tenant.",
            tool_annotations(false, true, true),
        ),
        Access::Write,
        move |id, a: SubscriptionIdArgs| {
            let m = m.clone();
            async move {
                let deleted = m
                    .unsubscribe(&id.tenant, &a.subscription_id)
                    .await
                    .map_err(explain)?;
                Ok(DeletedOut { deleted })
            }
        },
    );
    let m = enable_m;
    let enable = typed_route(
        tool_spec(
            "subscriptions_enable",
            "Turn a webhook subscription of your tenant on or off. One that failed 10 deliveries in a row is turned off by the server (its last_error says so); turn it on once the receiver works.",
            tool_annotations(false, false, true),
        ),
        Access::Write,
        move |id, a: EnableArgs| {
            let m = m.clone();
            async move {
                m.set_enabled(&id.tenant, &a.subscription_id, a.enabled)
                    .await
                    .map_err(explain)?
                    .ok_or_else(|| format!("no subscription {} in your tenant", a.subscription_id))
            }
        },
    );
    vec![
        query,
        get_one,
        counts,
        health,
        put_rule,
        list_rules,
        delete_rule,
        subscribe,
        list_subs,
        unsubscribe,
        enable,
    ]
}

#[cfg(test)]
mod tests {
    use super::masked_url;

    #[test]
    fn a_viewer_sees_where_a_webhook_goes_and_nothing_that_could_be_a_credential() {
        assert_eq!(
            masked_url("https://hooks.slack.com/services/T000/B000/XXXX?token=abc"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            masked_url("https://user:pass@example.com:8443/hook"),
            "https://example.com:8443/…"
        );
        assert_eq!(masked_url("not a url"), "…");
    }
}
