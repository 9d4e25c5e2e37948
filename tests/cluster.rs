//! Cluster mode (issue 14) against Debian's real `nats-server`: several statecast nodes on one
//! JetStream stream compute the same index, the same changes and the same `seq`s; a node killed
//! or wiped catches up; NATS going away is an outage, not a loss.
//!
//! The tests take one lock each: every test starts a NATS deployment and several statecast
//! processes, and on a small machine running them side by side only makes them slow.

mod common;

use common::*;

/// One cluster test at a time (see the module doc). An async lock: a test holds it across its
/// awaits, and a failed test does not poison it for the others.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The harness itself: a 3-server NATS cluster forms, takes an R=3 stream, keeps taking
/// publishes with one server killed, and the restarted server rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_harness_cluster_survives_one_server() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut nats = Nats::cluster(3);
    let js = nats.jetstream().await;
    let mut stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "harness".into(),
            subjects: vec!["harness.>".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create an R=3 stream: {e}\n{}", nats.logs()));
    let publish = |n: u32| {
        let js = js.clone();
        async move {
            let ack = js
                .publish(format!("harness.{n}"), n.to_string().into())
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map(|ack| ack.sequence).map_err(|e| e.to_string())
        }
    };
    assert_eq!(publish(1).await.expect("ack"), 1);
    nats.kill(0);
    // The stream keeps a quorum (2 of 3); publishes may fail while its leader moves.
    let seq = eventually(
        TIMEOUT * 3,
        "a publish acknowledged with one server down",
        || publish(2),
    )
    .await;
    assert!(seq >= 2, "acknowledged at {seq}");
    nats.restart(0);
    let state = stream.info().await.expect("stream info").state.clone();
    assert!(
        state.last_sequence >= 2,
        "the stream holds both publishes: {state:?}"
    );
}
