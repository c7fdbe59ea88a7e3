//! The medium tier's resource kinds, one per module.

pub mod alarm;
pub mod dashboard;
pub mod metric_filter;
pub mod state_machine;
pub mod topic;

/// Error codes of the medium tier's services that their SDKs do not model (the engine's
/// `tier_xs::engine::codes` holds the lower tiers').
pub mod codes {
    /// Step Functions: the caller (or a role the service assumes) may not do this yet.
    pub const ACCESS_DENIED: &[&str] = &["AccessDeniedException"];
    /// Step Functions DeleteStateMachine: the SDK models no error for an absent machine.
    pub const STATE_MACHINE_NOT_FOUND: &[&str] = &["StateMachineDoesNotExist"];
    /// SNS: the topic does not exist, from an endpoint that answers without the modeled code.
    pub const SNS_NOT_FOUND: &[&str] = &["NotFound"];
}
