//! The large tier: everything of the medium tier ([`tier_medium`]), plus vector memory —
//! per-tenant collections of documents searched by meaning — with embeddings from a provider
//! ([`embed`]): Amazon Bedrock on AWS, any OpenAI-compatible endpoint, or a local model run
//! in this process.
//!
//! Memory ([`memory`]) is a runtime service like the others: pgvector on PostgreSQL (Aurora
//! on AWS, or any Postgres through `--database-url`) and an embedded backend (SQLite and an
//! exact scan) for `agentbus up large`, held to one conformance suite.
//!
//! The AWS side of the tier (the Aurora cluster in two zones, auto scaling, observability) is
//! not built yet: its layer refuses `deploy large` with a problem that says so.

pub mod embed;
pub mod layer;
pub mod memory;
pub mod tools;

/// The ladder of a build up to the large tier: the medium ladder with this tier's layer.
pub fn ladder() -> tier_xs::ladder::Ladder {
    tier_medium::ladder().with(layer::LargeLayer)
}

/// The deploy flags of every tier up to large.
pub type Flags = layer::LargeFlags;

#[cfg(test)]
mod tests;
