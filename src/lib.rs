//! statecast: receives Riemann events, keeps the current state of every (host, service), and pushes
//! state changes to browser dashboards over websockets.
//!
//! Data flows one way: [`ingest`] (tcp, udp, http) decodes into [`event::Event`] batches →
//! `engine` (one owner of the index, change detection, `seq`) → `broadcast` (fan-out of
//! serialized changes) → [`web`] (websocket sessions, pages). [`server`] wires them together.

pub(crate) mod action;
pub mod alert;
pub(crate) mod broadcast;
pub(crate) mod change;
pub mod cluster;
pub mod config;
pub mod config_file;
pub(crate) mod engine;
pub mod event;
pub mod fd_limit;
pub mod ingest;
pub mod invariants;
pub(crate) mod lifecycle;
pub mod metrics;
pub mod proto;
pub(crate) mod protocol;
pub mod query;
pub(crate) mod rate_limited_log;
pub mod series;
pub mod server;
pub mod startup_file;
pub(crate) mod store;
pub mod tls;
pub mod units;
pub mod web;
