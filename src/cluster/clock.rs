//! Time as data: every node publishes a tick for each reap interval, with the interval's number
//! as message id, so the stream's duplicate window keeps exactly one per interval — whichever
//! node's lands first — and every node expires at that same point of the input, with the same
//! `now`. Any one node alive keeps expiry going.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use tokio_util::sync::CancellationToken;

use super::wire;
use crate::engine::Input;
use crate::event::now_micros;

pub(super) async fn publish_ticks(
    jetstream: jetstream::Context,
    subject: String,
    interval: Duration,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let interval_micros = i64::try_from(interval.as_micros())
        .unwrap_or(i64::MAX)
        .max(1);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        // The interval's number and start: the same on every node whose clock is within an
        // interval of the others'.
        let number = now_micros() / interval_micros;
        let input = Input::Tick {
            now_micros: number.saturating_mul(interval_micros),
        };
        let publish = PublishMessage::build()
            .payload(wire::encode_input(&input))
            .message_id(format!("tick-{number}"));
        let attempt = async {
            jetstream
                .send_publish(subject.clone(), publish)
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(_)) => {}
            // Another node's tick may land instead; expiry waits for NATS like everything else.
            Ok(Err(error)) => tracing::debug!(%error, number, "tick not published"),
            Err(_) => tracing::debug!(number, "tick not acknowledged in time"),
        }
    }
}
