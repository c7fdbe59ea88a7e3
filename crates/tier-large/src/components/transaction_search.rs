//! CloudWatch Transaction Search: the account's X-Ray trace destination set to CloudWatch
//! Logs, which is what makes CloudWatch's OTLP traces endpoint keep the spans the server
//! sends (in the `aws/spans` log group, priced as log ingestion). It is one setting for the
//! whole account and region, not the workspace's: a deploy turns it on only when told
//! (`--enable-transaction-search`), and nothing agentbus does turns it off again — a plan that
//! no longer asks for it leaves it as it is and does not show it.
//!
//! Turning it on follows the documented order (CloudWatch User Guide, "Enable transaction
//! search"): a CloudWatch Logs resource policy letting X-Ray write to `aws/spans` (and to
//! Application Signals' log group), then UpdateTraceSegmentDestination to `CloudWatchLogs`,
//! which is PENDING for a while and then ACTIVE.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_xray::types::TraceSegmentDestination;
use serde_json::json;
use tier_xs::aws::AwsClients;
use tier_xs::cost::{CostContext, CostError, CostLine};
use tier_xs::engine::permissions::{Permissions, any};
use tier_xs::engine::{Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, wait_until};
use tier_xs::workspace::Workspace;

use crate::aws::LargeAws;

/// The log group Transaction Search keeps spans in.
pub const SPANS_LOG_GROUP: &str = "aws/spans";
/// The log group Application Signals keeps its data in (the documented policy names both).
const SIGNALS_LOG_GROUP: &str = "/aws/application-signals/data";
/// The CloudWatch Logs resource policy's name, as the documentation's example names it (a
/// console-enabled account has the same one, so this replaces it with the same grant).
pub const POLICY_NAME: &str = "TransactionSearchXRayAccess";
/// How long the destination may stay PENDING.
const WAIT: Duration = Duration::from_secs(10 * 60);

pub struct TransactionSearch {
    /// Its name is the account's, for the plan: the setting is the account's.
    pub meta: Meta,
    /// The deploy was told to turn it on.
    pub enable: bool,
    /// The CloudWatch Logs resource policy it puts ([`TransactionSearch::policy`]).
    pub policy: String,
}

impl TransactionSearch {
    /// The resource policy's document: X-Ray, for this account and region only, may write to
    /// the two log groups.
    pub fn policy(ws: &Workspace) -> serde_json::Value {
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "TransactionSearchXRayAccess",
                "Effect": "Allow",
                "Principal": {"Service": "xray.amazonaws.com"},
                "Action": "logs:PutLogEvents",
                "Resource": [
                    ws.arn("logs", &format!("log-group:{SPANS_LOG_GROUP}:*")),
                    ws.arn("logs", &format!("log-group:{SIGNALS_LOG_GROUP}:*")),
                ],
                "Condition": {
                    "ArnLike": {"aws:SourceArn": ws.arn("xray", "*")},
                    "StringEquals": {"aws:SourceAccount": ws.account},
                },
            }],
        })
    }

    async fn destination(
        &self,
        aws: &AwsClients,
    ) -> Result<(TraceSegmentDestination, Option<String>), EngineError> {
        let out = aws
            .xray()
            .get_trace_segment_destination()
            .send()
            .await
            .map_err(|e| self.meta.fail("GetTraceSegmentDestination", e))?;
        Ok((
            out.destination()
                .cloned()
                .unwrap_or(TraceSegmentDestination::XRay),
            out.status().map(|s| s.as_str().to_string()),
        ))
    }
}

#[async_trait]
impl Resource for TransactionSearch {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "transaction search"
    }
    fn wanted(&self) -> bool {
        self.enable
    }
    fn account_setting(&self) -> bool {
        true
    }
    fn note_when_absent(&self) -> Option<String> {
        Some(
            "traces: CloudWatch Transaction Search is off in this account and region, so the \
             server's traces are not kept; --enable-transaction-search turns it on (for the \
             whole account and region; spans are billed as CloudWatch Logs ingestion)"
                .into(),
        )
    }
    fn change_notes(&self, _fields: &[String]) -> Vec<String> {
        vec![format!(
            "account-wide: every span sent to X-Ray in this account and region is kept in the \
             {SPANS_LOG_GROUP} log group from now on; agentbus never turns it off"
        )]
    }
    /// The spans the server sends, kept in `aws/spans` at CloudWatch Logs' ingestion price
    /// (CloudWatch pricing, Transaction Search; indexing the default 1 % of them is free).
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let (p, _) = tier_xs::cost::base::base_cost(ctx)?;
        let u: crate::cost::LargeUsage = ctx.usage.part()?;
        Ok(vec![CostLine::new(
            self.meta.id,
            "spans kept by Transaction Search (aws/spans ingestion)",
            u.traces_gb,
            "GB",
            p.logs_ingest_gb,
        )])
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        // X-Ray's trace destination and CloudWatch Logs' resource policies take no resource
        // (Service Authorization Reference); the log groups are X-Ray's to write.
        Permissions::new()
            .read(&["xray:GetTraceSegmentDestination"], &any())
            .write(
                &[
                    "xray:UpdateTraceSegmentDestination",
                    "logs:PutResourcePolicy",
                    "logs:DescribeResourcePolicies",
                ],
                &any(),
            )
            .write(
                &["logs:CreateLogGroup", "logs:CreateLogStream"],
                &[
                    ws.arn("logs", &format!("log-group:{SPANS_LOG_GROUP}:*")),
                    ws.arn("logs", &format!("log-group:{SIGNALS_LOG_GROUP}:*")),
                ],
            )
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new().set(
            "destination",
            TraceSegmentDestination::CloudWatchLogs.as_str(),
        )
    }
    /// On when the destination is CloudWatch Logs (ACTIVE, or PENDING on its way there).
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let (destination, _) = self.destination(aws).await?;
        Ok((destination == TraceSegmentDestination::CloudWatchLogs)
            .then(|| Observed::default().field("destination", destination.as_str())))
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        aws.logs()
            .put_resource_policy()
            .policy_name(POLICY_NAME)
            .policy_document(&self.policy)
            .send()
            .await
            .map_err(|e| m.fail("PutResourcePolicy", e))?;
        aws.xray()
            .update_trace_segment_destination()
            .destination(TraceSegmentDestination::CloudWatchLogs)
            .send()
            .await
            .map_err(|e| m.fail("UpdateTraceSegmentDestination", e))?;
        wait_until(&m.name, WAIT, Duration::from_secs(10), || async {
            Ok(match self.destination(aws).await? {
                (TraceSegmentDestination::CloudWatchLogs, Some(s)) if s == "ACTIVE" => Ok(()),
                (d, s) => Err(format!(
                    "destination {} {}",
                    d.as_str(),
                    s.unwrap_or_default()
                )),
            })
        })
        .await
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        self.create(aws, c.outputs).await
    }
    /// Never called: the engine leaves an account setting alone when it is no longer wanted.
    async fn delete(&self, _aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        Err(EngineError::Invalid(format!(
            "{}: Transaction Search is the account's; agentbus does not turn it off",
            self.meta.name
        )))
    }
}
