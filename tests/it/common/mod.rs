//! Shared helpers for the integration tests: a server on ephemeral loopback ports (in process,
//! or the real `statecast` binary), and real clients for each of its protocols, one module each.
//! Everything is re-exported here, so a test module says `use crate::common::*`.
//!
//! Every wait has a timeout and every missing tool is a failure, never a skip: `scripts/test`
//! installs `riemann-client` (riemann-c-client) and `ruby-riemann-client`.

#![allow(dead_code, unused_imports)]

mod http;
mod nats;
mod riemann;
mod server;
mod tmpfs;
mod ws;

pub use http::*;
pub use nats::*;
pub use riemann::*;
pub use server::*;
pub use tmpfs::*;
pub use ws::*;

use std::time::Duration;

/// How long any single expected thing (a reply, a frame, a process exit) may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
