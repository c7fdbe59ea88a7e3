//! An AWS Budget for the workspace at its tier's monthly target, filtered to the workspace's
//! tag, that emails an alert when actual spend passes 80% or the forecast passes 100%.

use async_trait::async_trait;
use aws_sdk_budgets::types::{
    Budget as AwsBudget, BudgetType, ComparisonOperator, Expression, Notification,
    NotificationType, NotificationWithSubscribers, ResourceTag, Spend, Subscriber,
    SubscriptionType, TagValues, ThresholdType, TimeUnit,
};
use serde_json::{Value, json};

use crate::aws::AwsClients;
use crate::engine::permissions::Permissions;
use crate::workspace::Workspace;
use aws_sdk_budgets::operation::create_budget::CreateBudgetError;
use aws_sdk_budgets::operation::delete_budget::DeleteBudgetError;
use aws_sdk_budgets::operation::describe_budget::DescribeBudgetError;

use crate::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, TagApi, found, gone, pair,
};
use crate::tag_api;
use crate::workspace::TAG_WORKSPACE;

pub struct Budget {
    pub meta: Meta,
    /// `arn:PARTITION:budgets::ACCOUNT:budget/NAME`: what its tags are read and set by.
    pub arn: String,
    pub account: String,
    pub limit_usd: f64,
    pub email: Option<String>,
    /// Value of the `agentbus:workspace` tag the budget counts.
    pub workspace: String,
}

/// The alerts: actual spend over 80% of the limit, forecast over 100%.
const ALERTS: [(NotificationType, f64); 2] = [
    (NotificationType::Actual, 80.0),
    (NotificationType::Forecasted, 100.0),
];

fn alert_text(kind: &str, threshold: f64, to: &str) -> String {
    format!("{kind} > {threshold}% -> {to}")
}

fn build<T, E: std::fmt::Display>(r: Result<T, E>, name: &str) -> Result<T, EngineError> {
    r.map_err(|e| EngineError::Invalid(format!("{name}: {e}")))
}

/// Budgets' form of tags.
fn resource_tags(tags: &[(String, String)]) -> Result<Vec<ResourceTag>, EngineError> {
    tags.iter()
        .map(|(k, v)| build(ResourceTag::builder().key(k).value(v).build(), k))
        .collect()
}

tag_api! {
    /// AWS Budgets' tags, by the budget's ARN.
    pub struct BudgetTags;
    read(aws, meta, o): "ListTagsForResource" => aws.budgets().list_tags_for_resource().resource_arn(o.out("arn")),
        |out| out.resource_tags().iter().map(|t| pair(t.key(), t.value())).collect();
    tag(aws, meta, o, tags): "TagResource" => aws.budgets().tag_resource().resource_arn(o.out("arn"))
        .set_resource_tags(Some(resource_tags(tags)?));
    untag(aws, meta, o, keys): "UntagResource" => aws.budgets().untag_resource().resource_arn(o.out("arn"))
        .set_resource_tag_keys(Some(keys.to_vec()));
}

impl Budget {
    fn notification(
        &self,
        kind: NotificationType,
        threshold: f64,
    ) -> Result<Notification, EngineError> {
        build(
            Notification::builder()
                .notification_type(kind)
                .comparison_operator(ComparisonOperator::GreaterThan)
                .threshold(threshold)
                .threshold_type(ThresholdType::Percentage)
                .build(),
            &self.meta.name,
        )
    }

    fn subscriber(&self, email: &str) -> Result<Subscriber, EngineError> {
        build(
            Subscriber::builder()
                .subscription_type(SubscriptionType::Email)
                .address(email)
                .build(),
            &self.meta.name,
        )
    }

    fn budget(&self) -> Result<AwsBudget, EngineError> {
        build(
            AwsBudget::builder()
                .budget_name(&self.meta.name)
                .budget_limit(build(
                    Spend::builder()
                        .amount(format!("{:.2}", self.limit_usd))
                        .unit("USD")
                        .build(),
                    &self.meta.name,
                )?)
                .time_unit(TimeUnit::Monthly)
                .budget_type(BudgetType::Cost)
                .filter_expression(
                    Expression::builder()
                        .tags(
                            TagValues::builder()
                                .key(TAG_WORKSPACE)
                                .values(&self.workspace)
                                .build(),
                        )
                        .build(),
                )
                .build(),
            &self.meta.name,
        )
    }

    fn alerts(&self) -> Value {
        let mut v: Vec<String> = match &self.email {
            Some(to) => ALERTS
                .iter()
                .map(|(k, t)| alert_text(k.as_str(), *t, &format!("email:{to}")))
                .collect(),
            None => Vec::new(),
        };
        v.sort();
        json!(v)
    }

    async fn current_alerts(
        &self,
        aws: &AwsClients,
    ) -> Result<Vec<(Notification, String)>, EngineError> {
        let out = aws
            .budgets()
            .describe_notifications_for_budget()
            .account_id(&self.account)
            .budget_name(&self.meta.name)
            .send()
            .await
            .map_err(|e| self.meta.fail("DescribeNotificationsForBudget", e))?;
        // Each notification's subscribers, read at once.
        let subscribers =
            futures::future::try_join_all(out.notifications().iter().map(|n| async move {
                aws.budgets()
                    .describe_subscribers_for_notification()
                    .account_id(&self.account)
                    .budget_name(&self.meta.name)
                    .notification(n.clone())
                    .send()
                    .await
                    .map_err(|e| self.meta.fail("DescribeSubscribersForNotification", e))
            }))
            .await?;
        let mut alerts = Vec::new();
        for (n, subs) in out.notifications().iter().zip(subscribers) {
            for s in subs.subscribers() {
                let to = format!(
                    "{}:{}",
                    s.subscription_type.as_str().to_lowercase(),
                    s.address
                );
                alerts.push((n.clone(), to));
            }
            if subs.subscribers().is_empty() {
                alerts.push((n.clone(), "nobody".into()));
            }
        }
        Ok(alerts)
    }
}

#[async_trait]
impl Resource for Budget {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "budget"
    }
    fn permissions(&self, _ws: &Workspace) -> Permissions {
        // Budgets' actions: ViewBudget reads a budget and its notifications, ModifyBudget
        // changes any of them; its tags have actions of their own.
        Permissions::new()
            .read(
                &["budgets:ViewBudget", "budgets:ListTagsForResource"],
                &[&self.arn],
            )
            .write(
                &[
                    "budgets:ModifyBudget",
                    "budgets:TagResource",
                    "budgets:UntagResource",
                ],
                std::slice::from_ref(&self.arn),
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&BudgetTags)
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new()
            .set("limit_usd", format!("{:.2}", self.limit_usd))
            .set("period", "MONTHLY")
            .set(
                "counts",
                format!(
                    "cost of resources tagged {TAG_WORKSPACE}={}",
                    self.workspace
                ),
            )
            .set("alerts", self.alerts())
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let Some(out) = found(
            aws.budgets()
                .describe_budget()
                .account_id(&self.account)
                .budget_name(&self.meta.name)
                // Without it the answer leaves the filter out and no plan would converge.
                .show_filter_expression(true)
                .send()
                .await,
            DescribeBudgetError::is_not_found_exception,
            &self.meta,
            "DescribeBudget",
        )?
        else {
            return Ok(None);
        };
        let Some(b) = out.budget else { return Ok(None) };
        let limit = b
            .budget_limit
            .as_ref()
            .and_then(|s| s.amount().parse::<f64>().ok())
            .map(|a| format!("{a:.2}"))
            .unwrap_or_default();
        let tag = b
            .filter_expression
            .as_ref()
            .and_then(|e| e.tags())
            .map(|t| {
                format!(
                    "cost of resources tagged {}={}",
                    t.key().unwrap_or(""),
                    t.values().join(",")
                )
            })
            .unwrap_or_else(|| "all cost of the account".into());
        Ok(Some(
            Observed::default()
                .field("limit_usd", limit)
                .field("period", b.time_unit.as_str().to_string())
                .field("counts", tag)
                .output("name", self.meta.name.clone())
                .output("arn", self.arn.clone()),
        ))
    }
    async fn observe_more(
        &self,
        aws: &AwsClients,
        _found: &Observed,
    ) -> Result<Observed, EngineError> {
        let mut alerts: Vec<String> = self
            .current_alerts(aws)
            .await?
            .into_iter()
            .map(|(n, to)| alert_text(n.notification_type.as_str(), n.threshold, &to))
            .collect();
        alerts.sort();
        Ok(Observed::default().field("alerts", json!(alerts)))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let mut req = aws
            .budgets()
            .create_budget()
            .account_id(&self.account)
            .budget(self.budget()?)
            .set_resource_tags(Some(resource_tags(&self.meta.tags)?));
        if let Some(to) = &self.email {
            for (kind, threshold) in ALERTS {
                req = req.notifications_with_subscribers(build(
                    NotificationWithSubscribers::builder()
                        .notification(self.notification(kind, threshold)?)
                        .subscribers(self.subscriber(to)?)
                        .build(),
                    &self.meta.name,
                )?);
            }
        }
        match req.send().await {
            Ok(_) => Ok(()),
            // Left by an interrupted apply: bring it to the spec.
            Err(e)
                if e.as_service_error()
                    .is_some_and(CreateBudgetError::is_duplicate_record_exception) =>
            {
                let current = crate::engine::observe(self, aws).await?.unwrap_or_default();
                let fields = ["limit_usd".to_string(), "alerts".to_string()];
                self.update(aws, &Edit::new(outputs, &current, &fields))
                    .await?;
                BudgetTags
                    .tag(aws, &self.meta, &current, &self.meta.tags)
                    .await
            }
            Err(e) => Err(self.meta.fail("CreateBudget", e)),
        }
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let changed = c.fields;
        if changed.iter().any(|c| c != "alerts") {
            aws.budgets()
                .update_budget()
                .account_id(&self.account)
                .new_budget(self.budget()?)
                .send()
                .await
                .map_err(|e| self.meta.fail("UpdateBudget", e))?;
        }
        if changed.iter().any(|c| c == "alerts") {
            for (n, _) in self.current_alerts(aws).await? {
                aws.budgets()
                    .delete_notification()
                    .account_id(&self.account)
                    .budget_name(&self.meta.name)
                    .notification(n)
                    .send()
                    .await
                    .map_err(|e| self.meta.fail("DeleteNotification", e))?;
            }
            if let Some(to) = &self.email {
                for (kind, threshold) in ALERTS {
                    aws.budgets()
                        .create_notification()
                        .account_id(&self.account)
                        .budget_name(&self.meta.name)
                        .notification(self.notification(kind, threshold)?)
                        .subscribers(self.subscriber(to)?)
                        .send()
                        .await
                        .map_err(|e| self.meta.fail("CreateNotification", e))?;
                }
            }
        }
        Ok(())
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        gone(
            aws.budgets()
                .delete_budget()
                .account_id(&self.account)
                .budget_name(&self.meta.name)
                .send()
                .await,
            DeleteBudgetError::is_not_found_exception,
            &self.meta,
            "DeleteBudget",
        )
    }
    fn notes(&self) -> Vec<String> {
        let mut n = Vec::new();
        if self.email.is_none() {
            n.push("no alert will be sent: pass --alert-email ADDRESS to be told when spend passes 80% of the limit".into());
        }
        n.push(format!(
            "counts only costs tagged {TAG_WORKSPACE}: activate that tag as a cost allocation tag in Billing"
        ));
        n
    }
}
