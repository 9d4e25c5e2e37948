//! Transports: each decodes its protocol into batches of [`crate::event::Event`] and hands them to
//! the engine. Nothing here keeps state about monitored services. Each answers its client in its
//! own protocol once the engine took the batch — a TCP `Msg{ok}`, an HTTP 200, a websocket
//! reply frame: the transport's *reply* (an operator's *ack* is an action, `web::actions`).

pub mod frame;
pub(crate) mod http;
pub mod json;
pub mod tcp;
pub mod udp;
