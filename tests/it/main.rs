//! The integration tests: one crate, one module per area, so `tests/common` and the crate's
//! dependencies (tokio, axum, redb, async-nats) are compiled and linked once instead of once per
//! file. Each module reads as the scenarios it checks, against a server on ephemeral loopback
//! ports (`common`); the tests wait on what the server exposes (a reply, a frame, `/metrics`,
//! `/readyz`), never on the wording of a log line.
//!
//! A new area is a new module here, not a new file directly under `tests/` (that would be a
//! crate of its own again; `scripts/test` refuses one). Run one area with
//! `cargo test --test it MODULE::`.

mod common;

mod actions;
mod alerting;
mod cli;
mod cluster;
mod config_file;
mod dashboard_assets;
mod durability;
mod hardening_http;
mod hardening_store;
mod hardening_tcp;
mod hardening_ws;
mod http_json;
mod inputs;
mod limits_and_access;
mod operability;
mod packaging;
mod prometheus_bridge;
mod query;
mod rates;
mod reverse_proxy;
mod riemann_fidelity;
mod riemann_tcp;
mod riemann_udp;
mod tls;
mod trends_live;
mod trends_series;
mod trends_series_full_disk;
mod websocket;
mod ws_ingest;
