//! Issue 12, the Riemann TCP slice: each attack that once broke the server, replayed against the
//! real binary with the limit that now holds it asserted (generous caps, never tight timings).

mod common;

use std::time::{Duration, Instant};

use common::*;
use statecast::proto::Msg;

/// The worst ack latency of `count` single-event Msgs sent one at a time by a fresh connection.
async fn control_worst_ack(server: &Server, count: usize) -> Duration {
    let mut control = RiemannTcp::connect(server).await;
    let mut worst = Duration::ZERO;
    for i in 0..count {
        let started = Instant::now();
        let reply = control
            .request(&events_msg(vec![event(
                "control",
                &format!("c{}", i % 3),
                "ok",
            )]))
            .await;
        assert_eq!(reply.ok, Some(true), "control ack: {reply:?}");
        worst = worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worst
}

fn error_of(reply: &Msg) -> &str {
    assert_eq!(reply.ok, Some(false), "expected ok:false, got {reply:?}");
    reply.error.as_deref().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// 1. Regex budget per query
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_of_800_heavy_regexes_is_refused_quickly_and_acks_stay_fast() {
    let server = start_server(&[]);
    // 800 patterns, each under the per-regex limit: 37 s and 1 GB to compile before the budget.
    let hostile = vec![r#"service ~= "\\w{20}""#; 800].join(" or ");
    let mut attacker = RiemannTcp::connect(&server).await;
    let started = Instant::now();
    attacker.send(&query_msg(&hostile)).await;
    let control = tokio::spawn(async move {
        let worst = control_worst_ack(&server, 10).await;
        (server, worst)
    });
    let reply = attacker.read_reply().await.expect("a reply to the query");
    let took = started.elapsed();
    let error = error_of(&reply).to_owned();
    assert!(
        error.starts_with("parse error: regexes in this query exceed the")
            && error.contains("-byte compile budget at column"),
        "{error}"
    );
    assert!(took < Duration::from_secs(5), "refused after {took:?}");
    let (server, worst) = control.await.unwrap();
    assert!(worst < Duration::from_secs(2), "control ack took {worst:?}");
    // The connection stays usable: a bad query is the client's mistake.
    let reply = attacker.request(&query_msg("true")).await;
    assert_eq!(reply.ok, Some(true), "{reply:?}");
    drop(server);
}
