//! Transports: each decodes its protocol into batches of [`crate::event::Event`] and hands them to
//! the engine. Nothing here keeps state about monitored services.

/// The protobuf ↔ event conversion lives in [`crate::event::convert`]; this alias only keeps
/// `super::convert` in the TCP transport resolving until its import is updated.
pub(crate) use crate::event::convert;
pub mod frame;
pub mod json;
pub mod tcp;
pub mod udp;
