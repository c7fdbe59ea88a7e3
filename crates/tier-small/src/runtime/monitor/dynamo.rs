//! The event monitor on AWS: the three event-monitoring tables (names, keys and indexes from
//! [`crate::monitoring`]) and the feed that receives the bus's events from SQS.

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue};
use serde_json::Value;
use tier_xs::runtime::{RuntimeError, Tenant};
use tokio_util::sync::CancellationToken;

use super::{
    CheckedQuery, CountRow, Delivery, DeliveryStats, EventStore, Monitor, MonitoredEvent, Outcome,
    RECENT_DELIVERIES, Rule, StoredSubscription, Subscription, apply_enabled,
};
use crate::config::SmallConfig;
use crate::monitoring::{events as ev, rules as rl, subscriptions as sb};

type Item = HashMap<String, AttributeValue>;

pub struct DynamoEventStore {
    db: aws_sdk_dynamodb::Client,
    events: String,
    subscriptions: String,
    rules: String,
}

impl DynamoEventStore {
    pub fn new(db: aws_sdk_dynamodb::Client, cfg: &SmallConfig) -> Self {
        DynamoEventStore {
            db,
            events: cfg.events_table.clone(),
            subscriptions: cfg.subscriptions_table.clone(),
            rules: cfg.rules_table.clone(),
        }
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n(item: &Item, k: &str) -> u64 {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn event_of(item: &Item) -> Option<MonitoredEvent> {
    Some(MonitoredEvent {
        event_id: get_s(item, ev::EVENT_ID)?,
        tenant: get_s(item, ev::TENANT)?,
        source: get_s(item, "source")?,
        detail_type: get_s(item, "detail_type")?,
        priority: get_s(item, "priority")?,
        time: get_s(item, "time")?,
        detail: get_s(item, "detail")
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or(Value::Null),
    })
}

fn joined(tenant: &str, v: &str) -> String {
    format!("{tenant}#{v}")
}

/// The outbox: beside each event with deliveries still to make, a marker item in the same
/// table, under a tenant no real tenant can be named (`#` is not allowed in tenant names),
/// so the time index lists the markers, oldest first, and nothing else sees them.
const OUTBOX_TENANT: &str = "#outbox";

fn outbox_key(event_id: &str) -> String {
    format!("{OUTBOX_TENANT}#{event_id}")
}

impl DynamoEventStore {
    /// The events of an index query with their details, read from the table (the indexes
    /// copy everything but the detail, see [`ev::INDEXED`]). An event that expired meanwhile
    /// is left out.
    async fn with_details(
        &self,
        events: Vec<MonitoredEvent>,
    ) -> Result<Vec<MonitoredEvent>, RuntimeError> {
        let mut details: HashMap<String, Value> = HashMap::new();
        for chunk in events.chunks(100) {
            let keys = chunk
                .iter()
                .map(|e| [(ev::EVENT_ID.to_string(), s(&e.event_id))].into())
                .collect::<Vec<Item>>();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .projection_expression("#i, #d")
                    .expression_attribute_names("#i", ev::EVENT_ID)
                    .expression_attribute_names("#d", "detail")
                    .build()
                    .map_err(|e| RuntimeError::backend("BatchGetItem", e))?,
            );
            // Keys DynamoDB could not read this time come back unprocessed: asked again after
            // a pause, as the API reference says.
            let mut pause = Duration::from_millis(50);
            while let Some(ask) = request.take() {
                let out = self
                    .db
                    .batch_get_item()
                    .request_items(&self.events, ask)
                    .send()
                    .await
                    .map_err(|e| RuntimeError::backend("BatchGetItem", e))?;
                for item in out
                    .responses()
                    .and_then(|r| r.get(&self.events))
                    .into_iter()
                    .flatten()
                {
                    if let Some(id) = get_s(item, ev::EVENT_ID) {
                        let detail = get_s(item, "detail")
                            .and_then(|d| serde_json::from_str(&d).ok())
                            .unwrap_or(Value::Null);
                        details.insert(id, detail);
                    }
                }
                request = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.events))
                    .filter(|k| !k.keys().is_empty());
                if request.is_some() {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
        Ok(events
            .into_iter()
            .filter_map(|mut e| {
                e.detail = details.remove(&e.event_id)?;
                Some(e)
            })
            .collect())
    }
}

#[async_trait]
impl EventStore for DynamoEventStore {
    async fn record(&self, e: &MonitoredEvent, dispatched: bool) -> Result<bool, RuntimeError> {
        if !dispatched {
            // The marker first: an event is never recorded undispatched without one.
            let marker: Item = [
                (ev::EVENT_ID, s(outbox_key(&e.event_id))),
                (ev::TENANT, s(OUTBOX_TENANT)),
                (ev::TIME_ID, s(e.ts_id())),
                (
                    ev::EXPIRES_AT,
                    AttributeValue::N(e.expires_at().to_string()),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            self.db
                .put_item()
                .table_name(&self.events)
                .set_item(Some(marker))
                .send()
                .await
                .map_err(|e| RuntimeError::backend("PutItem", e))?;
        }
        let item: Item = [
            (ev::EVENT_ID, s(&e.event_id)),
            (ev::TENANT, s(&e.tenant)),
            (ev::TENANT_SOURCE, s(joined(&e.tenant, &e.source))),
            (ev::TENANT_TYPE, s(joined(&e.tenant, &e.detail_type))),
            (ev::TENANT_PRIORITY, s(joined(&e.tenant, &e.priority))),
            (ev::TIME_ID, s(e.ts_id())),
            ("source", s(&e.source)),
            ("detail_type", s(&e.detail_type)),
            ("priority", s(&e.priority)),
            ("time", s(&e.time)),
            ("detail", s(e.detail.to_string())),
            (
                ev::EXPIRES_AT,
                AttributeValue::N(e.expires_at().to_string()),
            ),
            ("dispatched", AttributeValue::Bool(dispatched)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        match self
            .db
            .put_item()
            .table_name(&self.events)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", ev::EVENT_ID)
            .send()
            .await
        {
            Ok(_) => Ok(!dispatched),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(PutItemError::is_conditional_check_failed_exception) =>
            {
                let out = self
                    .db
                    .get_item()
                    .table_name(&self.events)
                    .key(ev::EVENT_ID, s(&e.event_id))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| RuntimeError::backend("GetItem", e))?;
                let done = out
                    .item
                    .as_ref()
                    .and_then(|i| i.get("dispatched"))
                    .and_then(|v| v.as_bool().ok())
                    .copied()
                    .unwrap_or(true);
                if done && !dispatched {
                    // The marker just written belongs to nothing left to do.
                    self.db
                        .delete_item()
                        .table_name(&self.events)
                        .key(ev::EVENT_ID, s(outbox_key(&e.event_id)))
                        .send()
                        .await
                        .map_err(|e| RuntimeError::backend("DeleteItem", e))?;
                }
                Ok(!done)
            }
            Err(err) => Err(RuntimeError::backend("PutItem", err)),
        }
    }

    async fn mark_dispatched(&self, e: &MonitoredEvent) -> Result<(), RuntimeError> {
        self.db
            .update_item()
            .table_name(&self.events)
            .key(ev::EVENT_ID, s(&e.event_id))
            .update_expression("SET #d = :t")
            .expression_attribute_names("#d", "dispatched")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .send()
            .await
            .map_err(|e| RuntimeError::backend("UpdateItem", e))?;
        self.db
            .delete_item()
            .table_name(&self.events)
            .key(ev::EVENT_ID, s(outbox_key(&e.event_id)))
            .send()
            .await
            .map_err(|e| RuntimeError::backend("DeleteItem", e))?;
        Ok(())
    }

    async fn undispatched(&self, max: usize) -> Result<Vec<MonitoredEvent>, RuntimeError> {
        let out = self
            .db
            .query()
            .table_name(&self.events)
            .index_name(ev::BY_TIME.name)
            .key_condition_expression("#h = :h")
            .expression_attribute_names("#h", ev::TENANT)
            .expression_attribute_values(":h", s(OUTBOX_TENANT))
            .limit(i32::try_from(max).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| RuntimeError::backend("Query", e))?;
        let mut pending = Vec::new();
        for marker in out.items() {
            let Some(id) = get_s(marker, ev::EVENT_ID).and_then(|k| {
                k.strip_prefix(&format!("{OUTBOX_TENANT}#"))
                    .map(str::to_string)
            }) else {
                continue;
            };
            let got = self
                .db
                .get_item()
                .table_name(&self.events)
                .key(ev::EVENT_ID, s(&id))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| RuntimeError::backend("GetItem", e))?;
            let item = got.item.as_ref();
            let done = item
                .and_then(|i| i.get("dispatched"))
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(true);
            match item.and_then(event_of) {
                Some(e) if !done => pending.push(e),
                // Dispatched (or never recorded, or expired): the marker is left over.
                _ => {
                    self.db
                        .delete_item()
                        .table_name(&self.events)
                        .key(ev::EVENT_ID, s(outbox_key(&id)))
                        .send()
                        .await
                        .map_err(|e| RuntimeError::backend("DeleteItem", e))?;
                }
            }
        }
        Ok(pending)
    }

    async fn get(
        &self,
        tenant: &Tenant,
        event_id: &str,
    ) -> Result<Option<MonitoredEvent>, RuntimeError> {
        let out = self
            .db
            .get_item()
            .table_name(&self.events)
            .key(ev::EVENT_ID, s(event_id))
            .send()
            .await
            .map_err(|e| RuntimeError::backend("GetItem", e))?;
        // Another tenant's event is, to this tenant, no event.
        Ok(out
            .item
            .as_ref()
            .and_then(event_of)
            .filter(|e| e.tenant == tenant.as_str()))
    }

    async fn query(
        &self,
        tenant: &Tenant,
        q: &CheckedQuery,
    ) -> Result<Vec<MonitoredEvent>, RuntimeError> {
        let t = tenant.as_str();
        // The most selective index the query allows; the other filters run in DynamoDB.
        let (index, hash_attr, hash) = if let Some(src) = &q.source {
            (ev::BY_SOURCE, ev::TENANT_SOURCE, joined(t, src))
        } else if let Some(ty) = &q.detail_type {
            (ev::BY_TYPE, ev::TENANT_TYPE, joined(t, ty))
        } else if let Some(p) = &q.priority {
            (ev::BY_PRIORITY, ev::TENANT_PRIORITY, joined(t, p))
        } else {
            (ev::BY_TIME, ev::TENANT, t.to_string())
        };
        let mut filters = Vec::new();
        let mut values: Item = [
            (":h".to_string(), s(hash)),
            (":from".to_string(), s(&q.from)),
            (":to".to_string(), s(&q.to)),
        ]
        .into();
        if q.source.is_some()
            && let Some(ty) = &q.detail_type
        {
            filters.push("#ty = :ty");
            values.insert(":ty".into(), s(ty));
        }
        if (q.source.is_some() || q.detail_type.is_some())
            && let Some(p) = &q.priority
        {
            filters.push("#p = :p");
            values.insert(":p".into(), s(p));
        }
        // Name only the `#` aliases the expressions use (DynamoDB refuses unused ones).
        let mut names: HashMap<String, String> = [
            ("#h".to_string(), hash_attr.to_string()),
            ("#r".to_string(), ev::TIME_ID.to_string()),
        ]
        .into();
        if values.contains_key(":ty") {
            names.insert("#ty".into(), "detail_type".into());
        }
        if values.contains_key(":p") {
            names.insert("#p".into(), "priority".into());
        }
        let want = q.limit as usize + 1;
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .db
                .query()
                .table_name(&self.events)
                .index_name(index.name)
                .key_condition_expression("#h = :h AND #r BETWEEN :from AND :to")
                .set_expression_attribute_names(Some(names.clone()))
                .set_filter_expression((!filters.is_empty()).then(|| filters.join(" AND ")))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(false)
                .limit(want.min(500) as i32)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| RuntimeError::backend("Query", e))?;
            // BETWEEN includes its upper end; the cursor's own event was on the last page.
            found.extend(
                out.items()
                    .iter()
                    .filter_map(event_of)
                    .filter(|e| q.accepts(e)),
            );
            start = out.last_evaluated_key;
            if found.len() >= want || start.is_none() {
                break;
            }
        }
        found.truncate(want);
        self.with_details(found).await
    }

    async fn count_rows(
        &self,
        tenant: &Tenant,
        from: &str,
        to: &str,
        max: usize,
    ) -> Result<(Vec<CountRow>, bool), RuntimeError> {
        let mut rows = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .db
                .query()
                .table_name(&self.events)
                .index_name(ev::BY_TIME.name)
                .key_condition_expression("#h = :h AND #r BETWEEN :from AND :to")
                .expression_attribute_names("#h", ev::TENANT)
                .expression_attribute_names("#r", ev::TIME_ID)
                .expression_attribute_names("#t", "time")
                .expression_attribute_names("#s", "source")
                .expression_attribute_names("#ty", "detail_type")
                .expression_attribute_names("#p", "priority")
                .expression_attribute_values(":h", s(tenant.as_str()))
                .expression_attribute_values(":from", s(from))
                .expression_attribute_values(":to", s(to))
                .projection_expression("#t, #r, #s, #ty, #p")
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| RuntimeError::backend("Query", e))?;
            for i in out.items() {
                if get_s(i, ev::TIME_ID).is_some_and(|ts| ts.as_str() >= to) {
                    continue;
                }
                rows.push(CountRow {
                    time: get_s(i, "time").unwrap_or_default(),
                    source: get_s(i, "source").unwrap_or_default(),
                    detail_type: get_s(i, "detail_type").unwrap_or_default(),
                    priority: get_s(i, "priority").unwrap_or_default(),
                });
            }
            start = out.last_evaluated_key;
            if rows.len() > max {
                rows.truncate(max);
                return Ok((rows, true));
            }
            if start.is_none() {
                return Ok((rows, false));
            }
        }
    }

    async fn put_rule(&self, tenant: &Tenant, rule: &Rule) -> Result<(), RuntimeError> {
        let doc = serde_json::to_string(rule).map_err(|e| RuntimeError::backend("encode", e))?;
        self.db
            .put_item()
            .table_name(&self.rules)
            .item(rl::TENANT, s(tenant.as_str()))
            .item(rl::RULE_ID, s(&rule.name))
            .item("rule", s(doc))
            .send()
            .await
            .map_err(|e| RuntimeError::backend("PutItem", e))?;
        Ok(())
    }

    async fn rules(&self, tenant: &Tenant) -> Result<Vec<Rule>, RuntimeError> {
        let items = self.all(&self.rules, rl::TENANT, tenant.as_str()).await?;
        Ok(items
            .iter()
            .filter_map(|i| get_s(i, "rule"))
            .filter_map(|d| serde_json::from_str(&d).ok())
            .collect())
    }

    async fn delete_rule(&self, tenant: &Tenant, name: &str) -> Result<bool, RuntimeError> {
        self.delete(&self.rules, (rl::TENANT, tenant), (rl::RULE_ID, name))
            .await
    }

    async fn put_subscription(
        &self,
        tenant: &Tenant,
        sub: &StoredSubscription,
    ) -> Result<(), RuntimeError> {
        let mut bare = sub.subscription.clone();
        bare.stats = DeliveryStats::default();
        let doc = serde_json::to_string(&bare).map_err(|e| RuntimeError::backend("encode", e))?;
        self.db
            .put_item()
            .table_name(&self.subscriptions)
            .item(sb::TENANT, s(tenant.as_str()))
            .item(sb::SUBSCRIPTION_ID, s(&sub.subscription.subscription_id))
            .item("subscription", s(doc))
            .item("secret", s(&sub.secret))
            .send()
            .await
            .map_err(|e| RuntimeError::backend("PutItem", e))?;
        Ok(())
    }

    async fn subscriptions(
        &self,
        tenant: &Tenant,
    ) -> Result<Vec<StoredSubscription>, RuntimeError> {
        let items = self
            .all(&self.subscriptions, sb::TENANT, tenant.as_str())
            .await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                let mut sub: Subscription =
                    serde_json::from_str(&get_s(i, "subscription")?).ok()?;
                sub.stats = DeliveryStats {
                    delivered: get_n(i, "delivered"),
                    failed: get_n(i, "failed"),
                    consecutive_failures: get_n(i, "consecutive_failures"),
                    last_attempt_at: get_s(i, "last_attempt_at"),
                    last_outcome: get_s(i, "last_outcome"),
                    last_failure_at: get_s(i, "last_failure_at"),
                    last_failed_event: get_s(i, "last_failed_event"),
                    last_error: get_s(i, "last_error"),
                    recent: i
                        .get("recent")
                        .and_then(|v| v.as_l().ok())
                        .map(|l| {
                            l.iter()
                                .filter_map(|d| serde_json::from_str(d.as_s().ok()?).ok())
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                Some(StoredSubscription {
                    subscription: sub,
                    secret: get_s(i, "secret")?,
                })
            })
            .collect())
    }

    async fn delete_subscription(&self, tenant: &Tenant, id: &str) -> Result<bool, RuntimeError> {
        self.delete(
            &self.subscriptions,
            (sb::TENANT, tenant),
            (sb::SUBSCRIPTION_ID, id),
        )
        .await
    }

    async fn record_outcome(
        &self,
        tenant: &Tenant,
        id: &str,
        o: &Outcome,
    ) -> Result<(), RuntimeError> {
        let one = AttributeValue::N("1".into());
        let delivery = serde_json::to_string(&Delivery::of(o))
            .map_err(|e| RuntimeError::backend("encode a delivery", e))?;
        // The delivery goes first in `recent`; the list is cut to its length after.
        let recent = "#r = list_append(:new, if_not_exists(#r, :empty))";
        let mut req = self
            .db
            .update_item()
            .table_name(&self.subscriptions)
            .key(sb::TENANT, s(tenant.as_str()))
            .key(sb::SUBSCRIPTION_ID, s(id))
            .condition_expression("attribute_exists(#id)")
            .return_values(ReturnValue::UpdatedNew)
            .expression_attribute_names("#id", sb::SUBSCRIPTION_ID)
            .expression_attribute_names("#r", "recent")
            .expression_attribute_values(":new", AttributeValue::L(vec![s(delivery)]))
            .expression_attribute_values(":empty", AttributeValue::L(Vec::new()))
            .expression_attribute_names("#c", "consecutive_failures")
            .expression_attribute_names("#la", "last_attempt_at")
            .expression_attribute_names("#lo", "last_outcome")
            .expression_attribute_values(":one", one)
            .expression_attribute_values(":at", s(&o.at))
            .expression_attribute_values(":o", s(&o.summary));
        req = if o.ok {
            req.update_expression(format!(
                "ADD #d :one SET #c = :zero, #la = :at, #lo = :o, {recent}"
            ))
            .expression_attribute_names("#d", "delivered")
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
        } else {
            req.update_expression(format!(
                "ADD #f :one, #c :one SET #la = :at, #lo = :o, #lf = :at, #le = :e, #er = :err, {recent}"
            ))
            .expression_attribute_names("#f", "failed")
            .expression_attribute_names("#lf", "last_failure_at")
            .expression_attribute_names("#le", "last_failed_event")
            .expression_attribute_names("#er", "last_error")
            .expression_attribute_values(":e", s(&o.event_id))
            .expression_attribute_values(":err", s(o.error.clone().unwrap_or_default()))
        };
        match req.send().await {
            Ok(out) => {
                // One delivery at a time per subscription (its queue is in order): nothing
                // appends between this append and this cut.
                let kept = out
                    .attributes()
                    .and_then(|a| a.get("recent"))
                    .and_then(|v| v.as_l().ok())
                    .map_or(0, Vec::len);
                if kept > RECENT_DELIVERIES {
                    let beyond: Vec<String> = (RECENT_DELIVERIES..kept)
                        .map(|i| format!("#r[{i}]"))
                        .collect();
                    let cut = self
                        .db
                        .update_item()
                        .table_name(&self.subscriptions)
                        .key(sb::TENANT, s(tenant.as_str()))
                        .key(sb::SUBSCRIPTION_ID, s(id))
                        .update_expression(format!("REMOVE {}", beyond.join(", ")))
                        // Never recreate a subscription deleted meanwhile.
                        .condition_expression("attribute_exists(#id)")
                        .expression_attribute_names("#id", sb::SUBSCRIPTION_ID)
                        .expression_attribute_names("#r", "recent")
                        .send()
                        .await;
                    if let Err(e) = cut
                        && !e
                            .as_service_error()
                            .is_some_and(UpdateItemError::is_conditional_check_failed_exception)
                    {
                        return Err(RuntimeError::backend("UpdateItem", e));
                    }
                }
                Ok(())
            }
            // Deleted while the delivery ran: nothing to record.
            Err(e)
                if e.as_service_error()
                    .is_some_and(UpdateItemError::is_conditional_check_failed_exception) =>
            {
                Ok(())
            }
            Err(e) => Err(RuntimeError::backend("UpdateItem", e)),
        }
    }

    async fn set_enabled(
        &self,
        tenant: &Tenant,
        id: &str,
        enabled: bool,
        note: Option<&str>,
    ) -> Result<Option<Subscription>, RuntimeError> {
        let Some(mut sub) = self
            .subscriptions(tenant)
            .await?
            .into_iter()
            .map(|s| s.subscription)
            .find(|s| s.subscription_id == id)
        else {
            return Ok(None);
        };
        let restart = enabled && !sub.enabled;
        apply_enabled(&mut sub, enabled, note);
        // The document holds no counts: they are the item's own attributes, which this
        // update leaves as they are (but the ones it names).
        let mut bare = sub.clone();
        bare.stats = DeliveryStats::default();
        let doc = serde_json::to_string(&bare).map_err(|e| RuntimeError::backend("encode", e))?;
        let mut set = vec!["#doc = :doc"];
        let mut req = self
            .db
            .update_item()
            .table_name(&self.subscriptions)
            .key(sb::TENANT, s(tenant.as_str()))
            .key(sb::SUBSCRIPTION_ID, s(id))
            .condition_expression("attribute_exists(#id)")
            .expression_attribute_names("#id", sb::SUBSCRIPTION_ID)
            .expression_attribute_names("#doc", "subscription")
            .expression_attribute_values(":doc", s(doc));
        if let Some(n) = note {
            set.push("#er = :er");
            req = req
                .expression_attribute_names("#er", "last_error")
                .expression_attribute_values(":er", s(n));
        }
        if restart {
            set.push("#c = :zero");
            req = req
                .expression_attribute_names("#c", "consecutive_failures")
                .expression_attribute_values(":zero", AttributeValue::N("0".into()));
        }
        match req
            .update_expression(format!("SET {}", set.join(", ")))
            .send()
            .await
        {
            Ok(_) => Ok(Some(sub)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(UpdateItemError::is_conditional_check_failed_exception) =>
            {
                Ok(None)
            }
            Err(e) => Err(RuntimeError::backend("UpdateItem", e)),
        }
    }
}

impl DynamoEventStore {
    /// Deletes one item of a tenant's partition; whether it was there.
    async fn delete(
        &self,
        table: &str,
        (hash, tenant): (&str, &Tenant),
        (range, id): (&str, &str),
    ) -> Result<bool, RuntimeError> {
        let out = self
            .db
            .delete_item()
            .table_name(table)
            .key(hash, s(tenant.as_str()))
            .key(range, s(id))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| RuntimeError::backend("DeleteItem", e))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    /// Every item of one tenant's partition (rules and subscriptions: at most 100 each).
    async fn all(&self, table: &str, hash: &str, tenant: &str) -> Result<Vec<Item>, RuntimeError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .db
                .query()
                .table_name(table)
                .key_condition_expression("#h = :h")
                .expression_attribute_names("#h", hash)
                .expression_attribute_values(":h", s(tenant))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| RuntimeError::backend("Query", e))?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }
}

/// A queue's URL, from its name.
pub async fn queue_url(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<String, RuntimeError> {
    sqs.get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| RuntimeError::backend("GetQueueUrl", e))?
        .queue_url
        .ok_or_else(|| RuntimeError::Rejected("the queue name", "no URL returned".into()))
}

/// Receives the bus's events from the monitor queue and feeds them to the monitor. A
/// message is deleted only after its event is recorded and dispatched; one that could not be
/// recorded comes back after the visibility timeout, and after
/// [`crate::components::queue::MAX_RECEIVES`] receives goes to the dead-letter queue. One
/// that is not an event at all never will be: it is made visible again at once, so it
/// reaches the dead-letter queue within seconds instead of ten minutes.
pub struct SqsFeed {
    sqs: aws_sdk_sqs::Client,
    queue: String,
    monitor: Monitor,
}

impl SqsFeed {
    pub fn new(sqs: aws_sdk_sqs::Client, queue: impl Into<String>, monitor: Monitor) -> Self {
        SqsFeed {
            sqs,
            queue: queue.into(),
            monitor,
        }
    }

    pub async fn queue_url(&self) -> Result<String, RuntimeError> {
        queue_url(&self.sqs, &self.queue).await
    }

    /// One receive (waiting up to `wait` seconds); handles every message it got.
    pub async fn poll(&self, url: &str, wait: i32) -> Result<usize, RuntimeError> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait)
            .send()
            .await
            .map_err(|e| RuntimeError::backend("ReceiveMessage", e))?;
        let messages = out.messages.unwrap_or_default();
        let n = messages.len();
        let handled = messages.into_iter().map(|m| async move {
            let body = m.body.as_deref().unwrap_or_default();
            let event = serde_json::from_str::<Value>(body)
                .map_err(|e| RuntimeError::invalid("message", e.to_string()))
                .and_then(|v| MonitoredEvent::from_bus(&v));
            let id = m.message_id.as_deref().unwrap_or("?");
            let event = match (event, &m.receipt_handle) {
                (Ok(e), _) => e,
                (Err(e), Some(h)) => {
                    tracing::warn!(
                        message = id,
                        "event monitor: not an event, on its way to the dead-letter queue: {e}"
                    );
                    if let Err(e) = self
                        .sqs
                        .change_message_visibility()
                        .queue_url(url)
                        .receipt_handle(h)
                        .visibility_timeout(0)
                        .send()
                        .await
                    {
                        // It comes back after the visibility timeout instead.
                        tracing::warn!(
                            "event monitor: ChangeMessageVisibility: {}",
                            tier_xs::engine::error_text(&e)
                        );
                    }
                    return;
                }
                (Err(_), None) => return,
            };
            let result = self.monitor.ingest(&event).await;
            match (result, m.receipt_handle) {
                (Ok(()), Some(h)) => {
                    if let Err(e) = self
                        .sqs
                        .delete_message()
                        .queue_url(url)
                        .receipt_handle(h)
                        .send()
                        .await
                    {
                        // It comes back and is recognised as recorded.
                        tracing::warn!(
                            "event monitor: DeleteMessage: {}",
                            tier_xs::engine::error_text(&e)
                        );
                    }
                }
                (Ok(()), None) => {}
                (Err(e), _) => {
                    tracing::warn!(message = id, "event monitor: not recorded, will retry: {e}")
                }
            }
        });
        futures::future::join_all(handled).await;
        Ok(n)
    }

    /// Runs until `stop` fires: first the deliveries a stop cut off, then long polls,
    /// backing off (1 s to 30 s) while AWS fails.
    pub async fn run(self, stop: CancellationToken) {
        if let Err(e) = self.monitor.resume().await {
            tracing::warn!("event monitor: taking up undispatched events: {e}");
        }
        let mut backoff = Duration::from_secs(1);
        let mut url: Option<String> = None;
        loop {
            let step = async {
                let u = match &url {
                    Some(u) => u.clone(),
                    None => {
                        let u = self.queue_url().await?;
                        url = Some(u.clone());
                        u
                    }
                };
                self.poll(&u, 20).await
            };
            let r = tokio::select! {
                _ = stop.cancelled() => return,
                r = step => r,
            };
            match r {
                Ok(_) => backoff = Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!("event monitor: {e}; retrying in {}s", backoff.as_secs());
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}
