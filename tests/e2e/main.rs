//! End-to-end tests of agentbus: the deploy engine and the extra-small tier against the moto
//! server on 127.0.0.1, driven through the real `agentbus` binary and the library.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod deploy;
mod domain;
mod faults;
mod harness;
mod iam;
mod image;
mod large;
mod medium;
mod runtime;
mod server;
mod small;
mod workflow;
