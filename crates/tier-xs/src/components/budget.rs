//! An AWS Budget for the workspace at its tier's monthly target, filtered to the workspace's
//! tag, that emails an alert when actual spend passes 80% or the forecast passes 100%.

use async_trait::async_trait;
use aws_sdk_budgets::types::{
    Budget as AwsBudget, BudgetType, ComparisonOperator, Expression, Notification,
    NotificationType, NotificationWithSubscribers, Spend, Subscriber, SubscriptionType, TagValues,
    ThresholdType, TimeUnit,
};
use serde_json::{Value, json};

use crate::aws::AwsClients;
use crate::engine::{Desired, EngineError, Observed, Outputs, Resource, error_code};
use crate::workspace::{TAG_WORKSPACE, Tier};

pub struct Budget {
    pub id: &'static str,
    pub tier: Tier,
    pub name: String,
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

fn err(name: &str, op: &str, e: impl std::error::Error) -> EngineError {
    EngineError::aws(name, op, e)
}

fn build<T, E: std::fmt::Display>(r: Result<T, E>, name: &str) -> Result<T, EngineError> {
    r.map_err(|e| EngineError::Invalid(format!("{name}: {e}")))
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
            &self.name,
        )
    }

    fn subscriber(&self, email: &str) -> Result<Subscriber, EngineError> {
        build(
            Subscriber::builder()
                .subscription_type(SubscriptionType::Email)
                .address(email)
                .build(),
            &self.name,
        )
    }

    fn budget(&self) -> Result<AwsBudget, EngineError> {
        build(
            AwsBudget::builder()
                .budget_name(&self.name)
                .budget_limit(build(
                    Spend::builder()
                        .amount(format!("{:.2}", self.limit_usd))
                        .unit("USD")
                        .build(),
                    &self.name,
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
            &self.name,
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
            .budget_name(&self.name)
            .send()
            .await
            .map_err(|e| err(&self.name, "DescribeNotificationsForBudget", e))?;
        let mut alerts = Vec::new();
        for n in out.notifications() {
            let subs = aws
                .budgets()
                .describe_subscribers_for_notification()
                .account_id(&self.account)
                .budget_name(&self.name)
                .notification(n.clone())
                .send()
                .await
                .map_err(|e| err(&self.name, "DescribeSubscribersForNotification", e))?;
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
    fn id(&self) -> &'static str {
        self.id
    }
    fn kind(&self) -> &'static str {
        "budget"
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn tier(&self) -> Tier {
        self.tier
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
        let out = match aws
            .budgets()
            .describe_budget()
            .account_id(&self.account)
            .budget_name(&self.name)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if error_code(&e) == Some("NotFoundException") => return Ok(None),
            Err(e) => return Err(err(&self.name, "DescribeBudget", e)),
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
        let mut alerts: Vec<String> = self
            .current_alerts(aws)
            .await?
            .into_iter()
            .map(|(n, to)| alert_text(n.notification_type.as_str(), n.threshold, &to))
            .collect();
        alerts.sort();
        Ok(Some(
            Observed::default()
                .field("limit_usd", limit)
                .field("period", b.time_unit.as_str().to_string())
                .field("counts", tag)
                .field("alerts", json!(alerts))
                .output("name", self.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<Observed, EngineError> {
        let mut req = aws
            .budgets()
            .create_budget()
            .account_id(&self.account)
            .budget(self.budget()?);
        if let Some(to) = &self.email {
            for (kind, threshold) in ALERTS {
                req = req.notifications_with_subscribers(build(
                    NotificationWithSubscribers::builder()
                        .notification(self.notification(kind, threshold)?)
                        .subscribers(self.subscriber(to)?)
                        .build(),
                    &self.name,
                )?);
            }
        }
        match req.send().await {
            Ok(_) => {}
            Err(e) if error_code(&e) == Some("DuplicateRecordException") => {
                let current = self.observe(aws).await?.unwrap_or_default();
                return self
                    .update(
                        aws,
                        _outputs,
                        &current,
                        &["limit_usd".into(), "alerts".into()],
                    )
                    .await;
            }
            Err(e) => return Err(err(&self.name, "CreateBudget", e)),
        }
        Ok(Observed::default().output("name", self.name.clone()))
    }
    async fn update(
        &self,
        aws: &AwsClients,
        _outputs: &Outputs,
        _current: &Observed,
        changed: &[String],
    ) -> Result<Observed, EngineError> {
        if changed.iter().any(|c| c != "alerts") {
            aws.budgets()
                .update_budget()
                .account_id(&self.account)
                .new_budget(self.budget()?)
                .send()
                .await
                .map_err(|e| err(&self.name, "UpdateBudget", e))?;
        }
        if changed.iter().any(|c| c == "alerts") {
            for (n, _) in self.current_alerts(aws).await? {
                aws.budgets()
                    .delete_notification()
                    .account_id(&self.account)
                    .budget_name(&self.name)
                    .notification(n)
                    .send()
                    .await
                    .map_err(|e| err(&self.name, "DeleteNotification", e))?;
            }
            if let Some(to) = &self.email {
                for (kind, threshold) in ALERTS {
                    aws.budgets()
                        .create_notification()
                        .account_id(&self.account)
                        .budget_name(&self.name)
                        .notification(self.notification(kind, threshold)?)
                        .subscribers(self.subscriber(to)?)
                        .send()
                        .await
                        .map_err(|e| err(&self.name, "CreateNotification", e))?;
                }
            }
        }
        Ok(Observed::default().output("name", self.name.clone()))
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        match aws
            .budgets()
            .delete_budget()
            .account_id(&self.account)
            .budget_name(&self.name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("NotFoundException") => Ok(()),
            Err(e) => Err(err(&self.name, "DeleteBudget", e)),
        }
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
