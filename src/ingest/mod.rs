//! Transports: each decodes its protocol into batches of [`crate::event::Event`] and hands them to
//! the engine. Nothing here keeps state about monitored services.

pub mod frame;
pub mod json;
pub mod tcp;
pub mod udp;
