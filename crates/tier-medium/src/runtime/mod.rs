//! The medium tier's runtime: workflow runs, durable in SQLite ([`store`]), advanced by the
//! embedded engine of the lanes workflow ([`runner`]); the workflow scenarios every engine
//! passes ([`scenarios`], for tests).

pub mod proof;
pub mod runner;
pub mod sfn;
pub mod store;
pub mod workflows;

#[cfg(any(test, feature = "conformance"))]
pub mod scenarios;

#[cfg(test)]
mod embedded_scenarios;
