//! The large tier: everything of the medium tier ([`tier_medium`]), plus vector memory —
//! per-tenant collections of documents searched by meaning — with embeddings from a provider
//! ([`embed`]): Amazon Bedrock on AWS, any OpenAI-compatible endpoint, or a local model run
//! in this process.
//!
//! Memory ([`memory`]) is a runtime service like the others: pgvector on PostgreSQL (Aurora
//! on AWS, or any Postgres through `AGENTBUS_DATABASE_URL`) and an embedded backend (SQLite and
//! an exact scan) for `agentbus up large`, held to one conformance suite.
//!
//! On AWS the tier adds Aurora PostgreSQL Serverless v2 in two availability zones
//! ([`tier`], [`components`]); the server finds the cluster and reads the password RDS manages
//! for it at run time ([`database`]).

pub mod aws;
pub mod components;
pub mod cost;
pub mod database;
pub mod embed;
pub mod layer;
pub mod memory;
pub mod rds;
pub mod tier;
pub mod tools;

/// The ladder of a build up to the large tier: the medium ladder with this tier's layer.
pub fn ladder() -> tier_xs::ladder::Ladder {
    tier_medium::ladder().with(layer::LargeLayer)
}

/// The deploy flags of every tier up to large.
pub type Flags = layer::LargeFlags;

#[cfg(any(test, feature = "conformance"))]
pub mod testing;
#[cfg(test)]
mod tests;
