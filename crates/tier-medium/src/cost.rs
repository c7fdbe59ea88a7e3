//! The medium tier's prices (Step Functions state transitions, CloudWatch alarms and
//! dashboards) and usage fields (workflow runs and what each costs in agent task time).

use serde::{Deserialize, Serialize};
use tier_xs::cost::base::BasePrices;
use tier_xs::cost::{CostContext, CostError, CostLine, PriceSheet, UsagePart};

/// Unit prices of the medium tier's services in one region. Field names say the unit.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct MediumPrices {
    pub sfn_transitions_1k: f64,
    pub alarm_month: f64,
    pub dashboard_month: f64,
}

/// The price sheet of this crate's `prices/aws.json`.
pub static PRICES: PriceSheet<MediumPrices> = PriceSheet::new(include_str!("../prices/aws.json"));

/// The medium tier's usage fields, per month. A user's profile may leave them out (zero).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct MediumUsage {
    /// Workflow runs started.
    pub workflow_runs: f64,
    /// Approved subtasks per run (each one execute step).
    pub subtasks_per_run: f64,
    /// Minutes one agent task runs, start-up included (Fargate bills by the second, at
    /// least a minute).
    pub agent_task_minutes: f64,
    /// Log lines of the agents per run, in MB.
    pub agent_log_mb_per_run: f64,
}

impl UsagePart for MediumUsage {
    fn builtin(profile: &str) -> Option<Self> {
        let with = |runs| MediumUsage {
            workflow_runs: runs,
            subtasks_per_run: 3.0,
            agent_task_minutes: 2.0,
            agent_log_mb_per_run: 0.2,
        };
        match profile {
            "idle" => Some(with(0.0)),
            "light" => Some(with(100.0)),
            "team" => Some(with(2_000.0)),
            _ => None,
        }
    }
}

impl MediumUsage {
    /// The profile's medium-tier amounts in one sentence, for the cost report.
    pub fn describe(&self) -> String {
        format!(
            "medium tier: {} workflow runs a month, {} subtasks each, {} minutes per agent task",
            self.workflow_runs, self.subtasks_per_run, self.agent_task_minutes
        )
    }

    /// GB of the workflow's own logs a month: at the default level Step Functions logs only
    /// failures, without the states' data (about 10 KB a run at most).
    pub fn workflow_log_gb(ctx: &CostContext<'_>) -> Result<f64, CostError> {
        let u: MediumUsage = ctx.usage.part()?;
        Ok(u.workflow_runs * 0.01 / 1024.0)
    }

    /// GB a month of one agent's log group: a third of the agents' logs (three agents).
    pub fn agent_log_gb(ctx: &CostContext<'_>) -> Result<f64, CostError> {
        let u: MediumUsage = ctx.usage.part()?;
        Ok(u.workflow_runs * u.agent_log_mb_per_run / 1024.0 / 3.0)
    }
}

/// What a workflow run costs: its state transitions and its agent tasks.
#[derive(Clone, Copy, Debug)]
pub struct RunPricing {
    /// Transitions of a run without subtasks (every state it passes, start to end).
    pub fixed_transitions: f64,
    /// Transitions per subtask (its iteration of the map).
    pub transitions_per_subtask: f64,
    /// Agent tasks of a run without subtasks (plan, record, review, decision, sweep).
    pub fixed_agent_tasks: f64,
    /// Agent task size (CPU units, MiB).
    pub cpu: u32,
    pub memory: u32,
    /// Fargate Spot (not prod) or on-demand (prod).
    pub spot: bool,
    /// The agents run on ECS (else elsewhere, at no cost here).
    pub on_ecs: bool,
}

impl RunPricing {
    pub fn lines(&self, id: &str, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let p = PRICES.region(ctx.region)?;
        let base = tier_xs::cost::base::PRICES.region(ctx.region)?;
        let u: MediumUsage = ctx.usage.part()?;
        let transitions = u.workflow_runs
            * (self.fixed_transitions + self.transitions_per_subtask * u.subtasks_per_run);
        let task_hours = u.workflow_runs
            * (self.fixed_agent_tasks + u.subtasks_per_run)
            * u.agent_task_minutes.max(1.0)
            / 60.0;
        let (vcpu, gb) = if self.spot {
            (base.fargate_spot_vcpu_hour, base.fargate_spot_gb_hour)
        } else {
            (base.fargate_vcpu_hour, base.fargate_gb_hour)
        };
        let kind = if self.spot { "Spot" } else { "on-demand" };
        let transitions = CostLine::new(
            id,
            "state transitions",
            transitions / 1000.0,
            "1k transitions",
            p.sfn_transitions_1k,
        );
        if !self.on_ecs {
            return Ok(vec![transitions]);
        }
        Ok(vec![
            transitions,
            CostLine::new(
                id,
                &format!("agent tasks: vCPU ({kind})"),
                task_hours * f64::from(self.cpu) / 1024.0,
                "vCPU-hours",
                vcpu,
            ),
            CostLine::new(
                id,
                &format!("agent tasks: memory ({kind})"),
                task_hours * f64::from(self.memory) / 1024.0,
                "GB-hours",
                gb,
            ),
            CostLine::new(
                id,
                "agent tasks: public IPv4 address",
                task_hours,
                "hours",
                base.public_ipv4_hour,
            ),
        ])
    }
}

/// The runs table: a run's item is written about five times (start, approval request,
/// decision, end) and read whenever someone follows it; a few KB each, kept 90 days.
pub fn runs_table_cost(
    id: &'static str,
    p: &BasePrices,
    ctx: &CostContext<'_>,
) -> Result<Vec<CostLine>, CostError> {
    let u: MediumUsage = ctx.usage.part()?;
    Ok(vec![
        CostLine::new(
            id,
            "run writes",
            u.workflow_runs * 5.0 / 1e6,
            "M WRU",
            p.dynamodb_write_million,
        ),
        CostLine::new(
            id,
            "run reads (following runs)",
            u.workflow_runs * 50.0 / 1e6,
            "M RRU",
            p.dynamodb_read_million,
        ),
        CostLine::new(
            id,
            "storage (90 days of runs)",
            u.workflow_runs * 3.0 * 4.0 / 1_048_576.0,
            "GB-month",
            p.dynamodb_storage_gb_month,
        ),
    ])
}
