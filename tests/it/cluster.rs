//! Cluster mode (issue 14) against Debian's real `nats-server`: several statecast nodes on one
//! JetStream stream compute the same index, the same changes and the same `seq`s; a node killed
//! or wiped catches up; NATS going away is an outage, not a loss.
//!
//! The tests take one lock each: every test starts a NATS deployment and several statecast
//! processes, and on a small machine running them side by side only makes them slow.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

// ---------------------------------------------------------------------------------------------
// Helpers of this file
// ---------------------------------------------------------------------------------------------

/// `GET /api/state?query=Q` (`Q` already URL-encoded), sorted by (host, service): the same
/// index on two nodes gives equal vectors.
async fn state(node: &Addrs, query: &str) -> Vec<Value> {
    let response = http_request(
        node.http,
        "GET",
        &format!("/api/state?query={query}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(response.status, 200, "/api/state: {}", response.body);
    let mut events = response.json().as_array().cloned().unwrap_or_default();
    events.sort_by_key(|e| (e["host"].to_string(), e["service"].to_string()));
    events
}

/// Every indexed event (`query=true`).
async fn all_state(node: &Addrs) -> Vec<Value> {
    state(node, "true").await
}

/// `GET /api/history?since=0` with a limit above anything a test writes: the node's changes.
async fn history(node: &Addrs) -> Vec<Value> {
    let response = http_request(
        node.http,
        "GET",
        "/api/history?since=0&limit=100000",
        &[],
        b"",
    )
    .await;
    assert_eq!(response.status, 200, "/api/history: {}", response.body);
    response.json()["changes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn seq(change: &Value) -> u64 {
    change["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("a change without seq: {change}"))
}

/// Asserts `changes` have consecutive seqs (no gap, no duplicate) starting right after `after`.
fn assert_consecutive(changes: &[Value], after: u64, what: &str) {
    let seqs: Vec<u64> = changes.iter().map(seq).collect();
    let expected: Vec<u64> = (after + 1..=after + changes.len() as u64).collect();
    assert_eq!(seqs, expected, "{what}: seqs with a gap or a duplicate");
}

/// The next `n` change frames of a dashboard.
async fn changes(ws: &mut WsClient, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(ws.next_change().await);
    }
    out
}

/// Change frames of a dashboard up to and including seq `last`.
async fn changes_through(ws: &mut WsClient, last: u64) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    while out.last().map(seq).is_none_or(|s| s < last) {
        out.push(ws.next_change().await);
    }
    out
}

/// A dashboard's snapshot: (seq, epoch).
async fn position(node: &Addrs) -> (u64, String) {
    let (ws, snapshot) = WsClient::connect_with_snapshot(node).await;
    ws.close().await;
    let epoch = snapshot["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("a snapshot without epoch: {snapshot}"))
        .to_owned();
    (seq(&snapshot), epoch)
}

/// A JSON event that is a change (a new key in `critical`), with an attribute saying which run
/// sent it.
fn critical(service: &str) -> String {
    format!(r#"[{{"host":"cluster","service":"{service}","state":"critical","run":"t"}}]"#)
}

/// `POST /api/event` that reports a refused or dropped connection (a killed node) instead of
/// panicking: `(status, body)`.
async fn try_post(node: SocketAddr, body: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(node)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = format!(
            "POST /api/event HTTP/1.1\r\nHost: {node}\r\nContent-Type: application/json\r\n\
             Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no complete response: {raw:?}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line: {head:?}"))?;
        Ok((status, body.to_owned()))
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
}

/// Posts one new critical key after another to `node` until `stop` is set or a post fails to
/// get any answer; returns the services that were acknowledged (200).
fn ingest_until(
    node: SocketAddr,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let service = format!("{prefix}-{i}");
            i += 1;
            match try_post(node, &critical(&service)).await {
                Ok((200, _)) => acked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(service),
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
}

fn count(acked: &Mutex<Vec<String>>) -> usize {
    acked.lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// Waits until every service in `acked` is indexed as critical on `node`.
async fn wait_all_indexed(node: &Addrs, acked: &[String], name: &str) {
    wait_all_indexed_within(CATCH_UP_TIMEOUT, node, acked, name).await
}

/// [`wait_all_indexed`] with a bound of its own.
async fn wait_all_indexed_within(timeout: Duration, node: &Addrs, acked: &[String], name: &str) {
    eventually(
        timeout,
        &format!("every acknowledged key on {name}"),
        || async {
            let indexed: HashSet<String> = state(node, "host%20%3D%20%22cluster%22")
                .await
                .iter()
                .filter(|e| e["state"] == "critical")
                .filter_map(|e| e["service"].as_str().map(str::to_owned))
                .collect();
            let missing: Vec<&String> = acked.iter().filter(|s| !indexed.contains(*s)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} missing, e.g. {:?}",
                    missing.len(),
                    &missing[..missing.len().min(5)]
                ))
            }
        },
    )
    .await
}

/// Waits until `nodes` hold the same index (`/api/state`); returns it.
async fn wait_agree(nodes: &[&Node]) -> Vec<Value> {
    eventually(
        CATCH_UP_TIMEOUT,
        "every node holds the same index",
        || async {
            let first = all_state(nodes[0]).await;
            for node in &nodes[1..] {
                let other = all_state(node).await;
                if other != first {
                    return Err(format!(
                        "{} has {} events, {} has {}",
                        nodes[0].id,
                        first.len(),
                        node.id,
                        other.len()
                    ));
                }
            }
            Ok(first)
        },
    )
    .await
}

/// `statecast_cluster_applied_seq` of a node.
async fn applied_seq(node: &Addrs) -> u64 {
    metric_line(node, "statecast_cluster_applied_seq ")
        .await
        .map(|(_, v)| v as u64)
        .expect("statecast_cluster_applied_seq in /metrics")
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// Three nodes on one nats-server: Riemann TCP (riemann-client) into node A; dashboards on B and
/// C see the identical change sequence (same seqs, same JSON); queries agree on every node; a
/// TTL expiry is one `expired` change with the same seq everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_see_the_same_changes_queries_and_expiry() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let nats = Nats::single();
    let spec = ClusterSpec::new(&nats, "agree").with(&["--reap-interval", "100ms"]);
    let a = Node::start(&spec, "a").await;
    let b = Node::start(&spec, "b").await;
    let c = Node::start(&spec, "c").await;

    let (mut dash_b, snap_b) = WsClient::connect_with_snapshot(&b).await;
    let (mut dash_c, snap_c) = WsClient::connect_with_snapshot(&c).await;
    let (seq_a, epoch_a) = position(&a).await;
    assert_eq!(snap_b["epoch"], epoch_a.as_str(), "one epoch per stream");
    assert_eq!(snap_c["epoch"], epoch_a.as_str(), "one epoch per stream");
    assert_eq!((seq(&snap_b), seq(&snap_c)), (seq_a, seq_a));

    // Five changes and one short-lived key, each through the real Riemann client into A.
    for (host, state) in [
        ("web1", "critical"),
        ("web2", "warning"),
        ("web3", "critical"),
        ("web1", "ok"),
        ("web2", "critical"),
    ] {
        let status = riemann_client_send(
            &a,
            &[
                "-h", host, "-S", "cpu", "-s", state, "-D", "from A", "-d", "0.5",
            ],
        )
        .await;
        assert!(status.success(), "riemann-client send to A: {status:?}");
    }
    let status =
        riemann_client_send(&a, &["-h", "short", "-S", "ttl", "-s", "ok", "-L", "1"]).await;
    assert!(status.success(), "riemann-client send to A: {status:?}");
    let status = riemann_client_send(
        &a,
        &["-h", "short", "-S", "ttl2", "-s", "warning", "-L", "1"],
    )
    .await;
    assert!(status.success(), "riemann-client send to A: {status:?}");

    // The five, then short/ttl2 (short/ttl stays `ok`: no change), then both short keys expire:
    // two `expired` changes. 8 in all.
    let seen_b = changes(&mut dash_b, 8).await;
    let seen_c = changes(&mut dash_c, 8).await;
    assert_consecutive(&seen_b, seq_a, "dashboard on B");
    assert_eq!(
        seen_b, seen_c,
        "B and C must see the identical change frames"
    );
    let expired: Vec<&Value> = seen_b
        .iter()
        .filter(|c| c["event"]["state"] == "expired")
        .collect();
    assert_eq!(expired.len(), 2, "two expiries: {seen_b:#?}");
    assert!(
        expired.iter().all(|c| c["event"]["host"] == "short"),
        "{expired:#?}"
    );

    // Let more ticks pass through the stream than there are nodes, then a marker: the next
    // change on each dashboard is the marker, so no node produced a second `expired`.
    let ticks_from = applied_seq(&b).await;
    eventually(TIMEOUT, "ticks keep flowing through the stream", || async {
        let now = applied_seq(&b).await;
        if now >= ticks_from + 5 {
            Ok(())
        } else {
            Err(format!("applied seq {now}, from {ticks_from}"))
        }
    })
    .await;
    let status = riemann_client_send(&a, &["-h", "marker", "-S", "m", "-s", "critical"]).await;
    assert!(status.success());
    let marker_b = dash_b.next_change_is("m").await;
    let marker_c = dash_c.next_change_is("m").await;
    assert_eq!(marker_b, marker_c);
    assert_eq!(seq(&marker_b), seq_a + 9);

    // Every node's history holds the same changes (A's too: it had no dashboard).
    for node in [&a, &b, &c] {
        wait_readyz(node).await;
        let mut mine = history(node).await;
        mine.retain(|c| seq(c) > seq_a);
        let expired_once: Vec<u64> = mine
            .iter()
            .filter(|c| c["event"]["state"] == "expired" && c["event"]["service"] == "ttl2")
            .map(seq)
            .collect();
        assert_eq!(expired_once.len(), 1, "node {}: {mine:#?}", node.id);
        assert_eq!(
            mine.iter().map(seq).collect::<Vec<_>>(),
            (seq_a + 1..=seq_a + 9).collect::<Vec<_>>(),
            "node {}",
            node.id
        );
    }
    assert_eq!(history(&a).await, history(&b).await, "history on A and B");
    assert_eq!(history(&b).await, history(&c).await, "history on B and C");

    // Queries agree on every node: everything, and a filter.
    let everything = wait_agree(&[&a, &b, &c]).await;
    assert!(everything.len() >= 6, "{everything:#?}");
    let critical_q = "state%20%3D%20%22critical%22";
    let on_a = state(&a, critical_q).await;
    assert_eq!(on_a.len(), 3, "web2, web3 and the marker: {on_a:#?}");
    assert_eq!(on_a, state(&b, critical_q).await);
    assert_eq!(on_a, state(&c, critical_q).await);
    let mut tcp_b = RiemannTcp::connect(&b).await;
    let reply = tcp_b.request(&query_msg(r#"state = "critical""#)).await;
    assert_eq!(reply.ok, Some(true), "{reply:?}");
    assert_eq!(reply.events.len(), 3, "Riemann TCP query on B: {reply:?}");

    // The node says who it is and how far it is.
    let (info, one) = metric_line(&b, "statecast_cluster_info{")
        .await
        .expect("statecast_cluster_info in B's /metrics");
    assert_eq!(one, 1.0);
    assert!(
        info.contains(r#"node="b""#) && info.contains(r#"stream="agree""#),
        "{info}"
    );
    for name in [
        "statecast_cluster_stream_seq ",
        "statecast_cluster_lag ",
        "statecast_cluster_publish_seconds_count",
        "statecast_cluster_snapshots_written_total ",
    ] {
        assert!(
            metric_line(&a, name).await.is_some(),
            "{name} missing in A's /metrics"
        );
    }
    let published = metric_line(&a, "statecast_cluster_publish_seconds_count")
        .await
        .map_or(0.0, |(_, v)| v);
    assert!(published >= 8.0, "A published its 8 batches: {published}");
}

/// `kill -9` of the node taking the ingest, mid-stream: every acknowledged change is on the
/// survivors; the restarted node catches up and agrees; a dashboard of B resumes on C with
/// since/epoch and gets exactly the changes it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_loses_nothing_acknowledged_and_catches_up() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let nats = Nats::single();
    let spec = ClusterSpec::new(&nats, "kill");
    let mut a = Node::start(&spec, "a").await;
    let b = Node::start(&spec, "b").await;
    let c = Node::start(&spec, "c").await;

    // A reference dashboard on B stays connected throughout; another one leaves early.
    let (mut reference, snapshot) = WsClient::connect_with_snapshot(&b).await;
    let (mut leaver, _) = WsClient::connect_with_snapshot(&b).await;
    let start = seq(&snapshot);
    let epoch = snapshot["epoch"].as_str().expect("epoch").to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let ingest = ingest_until(a.http, "a", Arc::clone(&stop), Arc::clone(&acked));
    eventually(CATCH_UP_TIMEOUT, "20 acknowledged posts to A", || async {
        let n = count(&acked);
        if n >= 20 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    })
    .await;
    // The leaver has seen a few changes and goes away.
    let left_at = seq(changes(&mut leaver, 5).await.last().expect("5 changes"));
    leaver.close().await;

    a.kill_9();
    stop.store(true, Ordering::Relaxed);
    ingest.await.expect("ingest task");
    let acked_on_a: Vec<String> = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();

    // The survivors take more (into B) while A is down.
    let more: Vec<String> = (0..10).map(|i| format!("b-{i}")).collect();
    for service in &more {
        let (status, body) = try_post(b.http, &critical(service))
            .await
            .expect("post to B");
        assert_eq!(status, 200, "post to B with A down: {body}");
    }
    wait_all_indexed(&b, &acked_on_a, "B").await;
    wait_all_indexed(&c, &acked_on_a, "C").await;
    wait_all_indexed(&c, &more, "C").await;

    // The leaver's dashboard resumes on C: exactly what it missed, in order, then live.
    let (now, epoch_c) = position(&c).await;
    assert_eq!(epoch_c, epoch);
    let mut resumed =
        WsClient::connect_path(&c, &format!("/ws?since={left_at}&epoch={epoch}")).await;
    let missed = changes_through(&mut resumed, now).await;
    assert_consecutive(&missed, left_at, "resumed on C");
    let all_on_b = changes_through(&mut reference, now).await;
    assert_consecutive(&all_on_b, start, "reference dashboard on B");
    assert_eq!(
        missed.as_slice(),
        &all_on_b[(left_at - start) as usize..],
        "the resumed dashboard on C gets the frames B's dashboard got"
    );
    let (status, _) = try_post(c.http, &critical("live"))
        .await
        .expect("post to C");
    assert_eq!(status, 200);
    let live = resumed.next_change_is("live").await;
    assert_eq!(seq(&live), now + 1);
    assert_eq!(reference.next_change_is("live").await, live);

    // A comes back on its own data directory, catches up, and agrees with the others.
    a.restart(&spec).await;
    wait_all_indexed(&a, &more, "restarted A").await;
    wait_agree(&[&a, &b, &c]).await;
    let (seq_a, epoch_a) = position(&a).await;
    assert_eq!((seq_a, epoch_a), (now + 1, epoch));
    assert_eq!(
        history(&a).await,
        history(&b).await,
        "history of restarted A and B"
    );
}

/// The sum of `statecast_cluster_snapshots_written_total` over `nodes`.
async fn snapshots_written(nodes: &[&Node]) -> u64 {
    let mut total = 0;
    for node in nodes {
        total += metric_line(node, "statecast_cluster_snapshots_written_total ")
            .await
            .map_or(0, |(_, v)| v as u64);
    }
    total
}

/// A new node with an empty data directory joins after the stream's beginning was purged: it
/// loads the newest snapshot, replays the stream after it, and agrees with the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_node_bootstraps_from_the_snapshot_after_the_stream_start_was_purged() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let nats = Nats::single();
    let spec = ClusterSpec::new(&nats, "boot").with(&["--cluster-snapshot-interval", "1s"]);
    let a = Node::start(&spec, "a").await;
    let b = Node::start(&spec, "b").await;

    let before: Vec<String> = (0..20).map(|i| format!("before-{i}")).collect();
    for service in &before {
        let (status, body) = try_post(a.http, &critical(service))
            .await
            .expect("post to A");
        assert_eq!(status, 200, "{body}");
    }
    let js = nats.jetstream().await;
    let mut stream = js
        .get_stream("boot")
        .await
        .expect("the stream named by --cluster-stream");
    let covered = stream
        .info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    // Both nodes have applied it; then two more snapshots: the second one began after the first
    // was written, so after `covered` was applied.
    for node in [&a, &b] {
        eventually(
            CATCH_UP_TIMEOUT,
            "the node applied the first batches",
            || async {
                let applied = applied_seq(node).await;
                if applied >= covered {
                    Ok(())
                } else {
                    Err(format!("{applied} < {covered}"))
                }
            },
        )
        .await;
    }
    let written = snapshots_written(&[&a, &b]).await;
    eventually(CATCH_UP_TIMEOUT, "two more snapshots written", || async {
        let now = snapshots_written(&[&a, &b]).await;
        if now >= written + 2 {
            Ok(())
        } else {
            Err(format!("{now}, from {written}"))
        }
    })
    .await;

    // Trim the stream's beginning: everything before `covered` is gone.
    stream
        .purge()
        .sequence(covered)
        .await
        .expect("purge the stream's beginning");
    let first = stream
        .info()
        .await
        .expect("stream info")
        .state
        .first_sequence;
    assert!(
        first >= covered,
        "the stream starts at {first} after the purge"
    );

    let after: Vec<String> = (0..10).map(|i| format!("after-{i}")).collect();
    for service in &after {
        let (status, body) = try_post(b.http, &critical(service))
            .await
            .expect("post to B");
        assert_eq!(status, 200, "{body}");
    }

    let d = Node::start(&spec, "d").await;
    wait_all_indexed(&d, &before, "new node D").await;
    wait_all_indexed(&d, &after, "new node D").await;
    wait_agree(&[&a, &b, &d]).await;
    let (seq_b, epoch_b) = position(&b).await;
    assert_eq!(
        position(&d).await,
        (seq_b, epoch_b),
        "D continues the same seq and epoch"
    );

    // Live changes after the join: D computes the same ones.
    let (mut dash_a, _) = WsClient::connect_with_snapshot(&a).await;
    let (mut dash_d, _) = WsClient::connect_with_snapshot(&d).await;
    let (status, _) = try_post(d.http, &critical("joined"))
        .await
        .expect("post to D");
    assert_eq!(status, 200);
    let on_d = dash_d.next_change_is("joined").await;
    assert_eq!(seq(&on_d), seq_b + 1);
    assert_eq!(dash_a.next_change_is("joined").await, on_d);
}

/// How long a node may take to go on after one server of its NATS cluster died: NATS elects new
/// leaders (seconds), and a stream consumer that lived on the dead server is only noticed gone
/// after missed heartbeats, then recreated through the new leaders.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(90);

/// A 3-server NATS cluster and a stream with 3 replicas: one nats-server is killed during
/// ingest; ingest continues and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_continues_when_one_of_three_nats_servers_dies() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut nats = Nats::cluster(3);
    let spec = ClusterSpec::new(&nats, "r3").with(&["--cluster-replicas", "3"]);
    let a = Node::start(&spec, "a").await;
    let b = Node::start(&spec, "b").await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let ingest = ingest_until(a.http, "r3", Arc::clone(&stop), Arc::clone(&acked));
    let wait_for = |n: usize| {
        let acked = Arc::clone(&acked);
        async move {
            eventually(
                FAILOVER_TIMEOUT,
                &format!("{n} acknowledged posts"),
                || async {
                    let have = count(&acked);
                    if have >= n {
                        Ok(())
                    } else {
                        Err(format!("{have}"))
                    }
                },
            )
            .await
        }
    };
    wait_for(20).await;
    nats.kill(0);
    let killed = Instant::now();
    let at_kill = count(&acked);
    // Ingest goes on through the two others: after the NATS cluster elects new leaders where n0
    // led, and after each node's stream consumer, if it lived on n0, is recreated elsewhere.
    wait_for(at_kill + 20).await;
    eprintln!(
        "20 more posts acknowledged {:.1}s after nats-server n0 was killed",
        killed.elapsed().as_secs_f64()
    );
    stop.store(true, Ordering::Relaxed);
    ingest.await.expect("ingest task");
    let acked: Vec<String> = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    wait_all_indexed_within(FAILOVER_TIMEOUT, &a, &acked, "A").await;
    wait_all_indexed_within(FAILOVER_TIMEOUT, &b, &acked, "B").await;
    wait_agree(&[&a, &b]).await;

    // The stream itself holds them with its replicas.
    let js = nats.jetstream().await;
    let mut stream = js.get_stream("r3").await.expect("the stream");
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.config.num_replicas, 3, "{:?}", info.config);
    // The killed server comes back and rejoins; the nodes stay in agreement.
    nats.restart(0);
    let (status, _) = try_post(b.http, &critical("after-restart"))
        .await
        .expect("post to B");
    assert_eq!(status, 200);
    wait_all_indexed(&a, &["after-restart".to_owned()], "A").await;
    wait_agree(&[&a, &b]).await;
}

/// NATS unreachable: ingest is refused with a clear error within --cluster-timeout, readiness
/// drops, dashboards keep the last state; when NATS returns the node recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_unreachable_refuses_ingest_then_recovers() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut nats = Nats::single();
    let spec = ClusterSpec::new(&nats, "outage").with(&["--cluster-timeout", "1s"]);
    let a = Node::start(&spec, "a").await;
    let b = Node::start(&spec, "b").await;

    let (mut dash_b, snapshot) = WsClient::connect_with_snapshot(&b).await;
    let start = seq(&snapshot);
    for service in ["up-1", "up-2", "up-3"] {
        let (status, body) = try_post(a.http, &critical(service))
            .await
            .expect("post to A");
        assert_eq!(status, 200, "{body}");
    }
    let before = changes(&mut dash_b, 3).await;
    assert_consecutive(&before, start, "dashboard on B");
    let state_before = all_state(&b).await;

    nats.kill_all();
    // HTTP: 503 with ok:false and an error that says what is wrong (within try_post's bound).
    let (status, body) = try_post(a.http, &critical("down-1"))
        .await
        .expect("an answer");
    assert_eq!(status, 503, "POST with NATS down: {body}");
    let reply: Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(reply["ok"], false, "{reply}");
    let error = reply["error"].as_str().unwrap_or_default();
    assert!(!error.is_empty(), "a clear error: {reply}");
    // Riemann TCP: Msg{ok:false, error}.
    let mut tcp = RiemannTcp::connect(&a).await;
    let reply = tcp
        .request(&events_msg(vec![event("cluster", "down-2", "critical")]))
        .await;
    assert_eq!(reply.ok, Some(false), "{reply:?}");
    assert!(
        !reply.error.clone().unwrap_or_default().is_empty(),
        "{reply:?}"
    );
    // Not ready while NATS is away.
    for node in [&a, &b] {
        eventually(
            CATCH_UP_TIMEOUT,
            "/readyz 503 while NATS is unreachable",
            || async {
                match readyz_status(node).await {
                    503 => Ok(()),
                    other => Err(other.to_string()),
                }
            },
        )
        .await;
    }
    // The dashboard stays connected and the last state stays served.
    let stats = dash_b.next_stats().await;
    assert_eq!(stats["type"], "stats");
    assert_eq!(all_state(&b).await, state_before);

    nats.restart_all();
    wait_readyz(&a).await;
    wait_readyz(&b).await;
    eventually(CATCH_UP_TIMEOUT, "a POST accepted again", || async {
        match try_post(a.http, &critical("back")).await {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // The dashboard goes on where it was: no gap, no duplicate, and `back` arrives.
    let mut after = Vec::new();
    while after
        .last()
        .is_none_or(|c: &Value| c["event"]["service"] != "back")
    {
        after.push(dash_b.next_change().await);
    }
    assert_consecutive(&after, start + 3, "dashboard on B after the outage");
    let agreed = wait_agree(&[&a, &b]).await;
    // Refused while NATS was away: if the client flushed them on reconnect, they reached the
    // stream after their deadline, and no node applies them (issue 21, item 2).
    let applied: Vec<&Value> = agreed
        .iter()
        .filter(|e| e["service"] == "down-1" || e["service"] == "down-2")
        .collect();
    assert!(applied.is_empty(), "refused, yet applied: {applied:?}");
}

/// A snapshot interval not below the stream's max age could leave a gap between the newest
/// snapshot and the stream's oldest message: the node refuses to start, with one line.
#[test]
fn a_snapshot_interval_not_below_the_max_age_is_refused() {
    let data_dir = fresh_dir("refuse");
    let (status, stderr) = run_to_exit(
        &data_dir,
        &[
            "--cluster",
            "nats://127.0.0.1:1",
            "--cluster-max-age",
            "1h",
            "--cluster-snapshot-interval",
            "2h",
        ],
    );
    let _ = std::fs::remove_dir_all(&data_dir);
    assert_eq!(status.code(), Some(1), "stderr:\n{stderr}");
    // Refused before anything is bound or connected: one line, nothing else.
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    assert!(
        lines[0].contains("--cluster-snapshot-interval") && lines[0].contains("--cluster-max-age"),
        "names both flags:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 21: one connection's order, exact refusals, bounded answers
// ---------------------------------------------------------------------------------------------

/// Index of the nats-server leading `stream`'s replicas.
async fn stream_leader(nats: &Nats, stream: &str) -> usize {
    let js = nats.jetstream().await;
    let mut stream = js.get_stream(stream).await.expect("the stream");
    let info = stream.info().await.expect("stream info");
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .unwrap_or_else(|| panic!("a stream leader: {:?}", info.cluster));
    nats.servers
        .iter()
        .position(|s| s.name == leader)
        .unwrap_or_else(|| panic!("leader {leader} is not one of the servers"))
}

/// One client connection pipelining numbered messages for one key (states alternating, the
/// number in the description): Riemann TCP or an `/events` websocket.
enum Pipe {
    Tcp(RiemannTcp),
    Ws(Box<WsStream>),
}

impl Pipe {
    async fn send(&mut self, number: u64) {
        self.send_for("order", number).await;
    }

    /// Message `number` for `host`'s key (`host`/`flip`).
    async fn send_for(&mut self, host: &str, number: u64) {
        let state = if number.is_multiple_of(2) {
            "ok"
        } else {
            "critical"
        };
        match self {
            Pipe::Tcp(tcp) => {
                let mut event = event(host, "flip", state);
                event.description = Some(number.to_string());
                event.ttl = Some(3600.0);
                tcp.send(&events_msg(vec![event])).await;
            }
            Pipe::Ws(ws) => {
                use futures_util::SinkExt;
                let batch = serde_json::json!([{"host": host, "service": "flip", "state": state,
                    "description": number.to_string(), "ttl": 3600}]);
                ws.send(tokio_tungstenite::tungstenite::Message::Text(
                    batch.to_string().into(),
                ))
                .await
                .expect("send on /events");
            }
        }
    }

    /// The next answer, in order: `Ok`, or the error it carries. Waits longer than the common
    /// helpers: during a failover an answer may take two `--cluster-timeout`s.
    async fn answer(&mut self) -> Result<(), String> {
        use futures_util::StreamExt;
        use prost::Message as _;
        tokio::time::timeout(FAILOVER_TIMEOUT, async {
            match self {
                Pipe::Tcp(tcp) => {
                    let mut header = [0u8; 4];
                    tcp.stream.read_exact(&mut header).await.expect("a reply");
                    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
                    tcp.stream.read_exact(&mut body).await.expect("a reply");
                    let reply = statecast::proto::Msg::decode(body.as_slice()).expect("a Msg");
                    match reply.ok {
                        Some(true) => Ok(()),
                        _ => Err(reply.error.unwrap_or_default()),
                    }
                }
                Pipe::Ws(ws) => loop {
                    let frame = ws.next().await.expect("an ack").expect("an ack");
                    if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
                        let ack: Value = serde_json::from_str(&text).expect("a JSON ack");
                        return match ack["ok"].as_bool() {
                            Some(true) => Ok(()),
                            _ => Err(ack["error"].as_str().unwrap_or_default().to_owned()),
                        };
                    }
                },
            }
        })
        .await
        .expect("an answer within the failover bound")
    }
}

/// The numbers (descriptions) of `host`'s changes in a node's history, in seq order.
async fn numbered_changes(node: &Addrs, host: &str) -> Vec<u64> {
    history(node)
        .await
        .iter()
        .filter(|c| c["event"]["host"] == host && c["event"]["state"] != "expired")
        .map(|c| {
            c["event"]["description"]
                .as_str()
                .and_then(|d| d.parse().ok())
                .unwrap_or_else(|| panic!("a numbered change: {c}"))
        })
        .collect()
}

/// The prefix of every answer that promises the input is not applied, on any node, ever.
const NOT_APPLIED: &str = "not applied:";

/// Issue 21, items 1 and 2: one client connection pipelines a window of 16 messages for one
/// key (states alternating, numbered in the description) into node B while the R=3 stream's
/// leader is killed. On every node the key's changes are in send order (strictly increasing
/// numbers: no inversion), every node has the same ones, and no message answered "not applied"
/// is applied anywhere.
async fn pipelined_order_survives_a_leader_kill(transport: &str) {
    const WINDOW: u64 = 16;
    const KILL_AFTER: u64 = 200;
    const TOTAL: u64 = 800;
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut nats = Nats::cluster(3);
    let spec = ClusterSpec::new(&nats, "order").with(&[
        "--cluster-replicas",
        "3",
        "--cluster-timeout",
        "2s",
    ]);
    let a = Node::start(&spec, "a").await;
    let b = Node::start(&spec, "b").await;
    let c = Node::start(&spec, "c").await;
    let leader = stream_leader(&nats, "order").await;

    let mut pipe = match transport {
        "tcp" => Pipe::Tcp(RiemannTcp::connect(&b).await),
        _ => Pipe::Ws(Box::new(
            ws_connect_with_headers(&format!("ws://{}/events", b.http), &[])
                .await
                .expect("upgrade"),
        )),
    };
    let mut sent = 0u64;
    let mut refused = Vec::new();
    let mut other_errors = 0usize;
    for answered in 0..TOTAL {
        while sent < TOTAL && sent - answered < WINDOW {
            pipe.send(sent).await;
            sent += 1;
        }
        match pipe.answer().await {
            Ok(()) => {}
            Err(error) if error.starts_with(NOT_APPLIED) => refused.push(answered),
            Err(error) => {
                if other_errors < 3 {
                    eprintln!("answer {answered}: {error}");
                }
                other_errors += 1;
            }
        }
        if answered == KILL_AFTER {
            // In good weather a connection's inputs reach the stream in send order: none is
            // dropped as overtaken (only retries after a failure can reorder them).
            assert_eq!(
                dropped(&b, "overtaken").await,
                0,
                "{transport}: before the kill"
            );
            nats.kill(leader);
        }
    }
    let overtaken = dropped(&b, "overtaken").await;
    eprintln!(
        "{transport}: {TOTAL} sent: {} answered not applied ({overtaken} overtaken), {other_errors} other errors",
        refused.len()
    );
    // Every node ends with the same changes for the key.
    let on_b = eventually(
        FAILOVER_TIMEOUT,
        "every node has the same changes",
        || async {
            let first = numbered_changes(&b, "order").await;
            for node in [&a, &c] {
                let other = numbered_changes(node, "order").await;
                if other != first {
                    return Err(format!(
                        "B {} changes, {} {}",
                        first.len(),
                        node.id,
                        other.len()
                    ));
                }
            }
            Ok(first)
        },
    )
    .await;
    let inversions: Vec<(u64, u64)> = on_b
        .windows(2)
        .filter(|w| w[1] <= w[0])
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        inversions.is_empty(),
        "{} applied out of send order, e.g. {:?}",
        inversions.len(),
        &inversions[..inversions.len().min(5)]
    );
    let applied: HashSet<u64> = on_b.iter().copied().collect();
    let broken: Vec<&u64> = refused.iter().filter(|n| applied.contains(n)).collect();
    assert!(
        broken.is_empty(),
        "answered not applied, yet applied: {broken:?}"
    );
    assert!(on_b.len() > 1, "changes applied: {on_b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_keeps_its_send_order_when_the_stream_leader_dies() {
    pipelined_order_survives_a_leader_kill("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_events_websocket_keeps_its_send_order_when_the_stream_leader_dies() {
    pipelined_order_survives_a_leader_kill("ws").await;
}

/// Issue 21 (speed at batch 1): a node's publisher puts the inputs waiting at the same moment,
/// from every connection, into one stream message. Many connections pipelining into two nodes
/// at once: every input takes effect, on every node, in its connection's send order, and both
/// nodes hold the same history seq by seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_inputs_all_take_effect_in_each_ones_order_on_every_node() {
    const CONNECTIONS: usize = 12;
    const WINDOW: u64 = 16;
    const EACH: u64 = 150;
    let _serial = ONE_AT_A_TIME.lock().await;
    let nats = Nats::single();
    let spec = ClusterSpec::new(&nats, "coalesce");
    let a = Node::start(&spec, "a").await;
    let b = Node::start(&spec, "b").await;
    let mut senders = Vec::new();
    for i in 0..CONNECTIONS {
        // A third of the connections into B: two publishers interleave in the stream.
        let node: Addrs = if i % 3 == 2 { *b } else { *a };
        let mut pipe = Pipe::Tcp(RiemannTcp::connect(&node).await);
        senders.push(tokio::spawn(async move {
            let host = format!("conn{i}");
            let mut sent = 0u64;
            let mut errors = Vec::new();
            for answered in 0..EACH {
                while sent < EACH && sent - answered < WINDOW {
                    // From 1: `critical` first, so every input is a change (a new key `ok`
                    // is not one).
                    pipe.send_for(&host, sent + 1).await;
                    sent += 1;
                }
                if let Err(error) = pipe.answer().await {
                    errors.push(format!("{host} answer {answered}: {error}"));
                }
            }
            errors
        }));
    }
    for sender in senders {
        let errors = sender.await.expect("a sender");
        assert!(errors.is_empty(), "every input acknowledged: {errors:?}");
    }
    let expected: Vec<u64> = (1..=EACH).collect();
    for node in [&a, &b] {
        eventually(
            CATCH_UP_TIMEOUT,
            "every connection's inputs applied in send order",
            || async {
                for i in 0..CONNECTIONS {
                    let numbers = numbered_changes(node, &format!("conn{i}")).await;
                    if numbers != expected {
                        return Err(format!(
                            "{}: conn{i} has {} changes, e.g. {:?}",
                            node.id,
                            numbers.len(),
                            &numbers[..numbers.len().min(8)]
                        ));
                    }
                }
                Ok(())
            },
        )
        .await;
    }
    let seen = |changes: Vec<Value>| -> Vec<(u64, Value, Value)> {
        changes
            .iter()
            .map(|c| {
                (
                    seq(c),
                    c["event"]["host"].clone(),
                    c["event"]["description"].clone(),
                )
            })
            .collect()
    };
    let on_a = seen(history(&a).await);
    assert_eq!(on_a.len(), CONNECTIONS * EACH as usize);
    assert_eq!(
        on_a,
        seen(history(&b).await),
        "the same history on both nodes"
    );
    for node in [&a, &b] {
        let messages = node
            .metric("statecast_cluster_messages_published_total")
            .await;
        let inputs = node
            .metric("statecast_cluster_inputs_published_total")
            .await;
        eprintln!("{}: {inputs} inputs in {messages} stream messages", node.id);
        assert!(
            messages >= 1 && inputs >= messages,
            "{inputs} in {messages}"
        );
    }
}

/// A stream input of one event for `host`/`flip`, in statecast's own encoding, with `header`.
fn stream_input(
    host: &str,
    state: &str,
    number: &str,
    header: &statecast::cluster::Header,
) -> bytes::Bytes {
    let event = statecast::event::Event {
        host: Some(host.into()),
        service: Some("flip".into()),
        state: Some(state.into()),
        description: Some(number.into()),
        time_micros: statecast::event::now_micros(),
        ttl: Some(3600.0),
        ..Default::default()
    };
    statecast::cluster::encode_published(&statecast::cluster::Input::Events(vec![event]), header)
}

/// Publishes `payload` to the stream `stream` and returns its stream sequence.
async fn publish_raw(
    js: &async_nats::jetstream::Context,
    stream: &str,
    payload: bytes::Bytes,
) -> u64 {
    js.publish(format!("{stream}.input"), payload)
        .await
        .expect("publish")
        .await
        .expect("stream ack")
        .sequence
}

/// `statecast_cluster_inputs_dropped_total{reason=…}` of a node.
async fn dropped(node: &Addrs, reason: &str) -> u64 {
    metric_line(
        node,
        &format!("statecast_cluster_inputs_dropped_total{{reason=\"{reason}\"}}"),
    )
    .await
    .map_or(0, |(_, v)| v as u64)
}

/// Issue 21, item 2: what the stream stored after its deadline, or after a later input of the
/// same connection, is applied by no node, and each node counts it. The inputs are published by
/// the test itself, so the late and the overtaken one are certain, not a matter of timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_overtaken_inputs_are_applied_by_no_node() {
    use statecast::cluster::Header;
    let _serial = ONE_AT_A_TIME.lock().await;
    let nats = Nats::single();
    let spec = ClusterSpec::new(&nats, "late");
    let a = Node::start(&spec, "a").await;
    let b = Node::start(&spec, "b").await;
    let js = nats.jetstream().await;
    let now = statecast::event::now_micros();

    // Refused by its publisher at its deadline, stored a second after it.
    let late = Header {
        origin: None,
        deadline_micros: Some(now - 1_000_000),
    };
    publish_raw(&js, "late", stream_input("late", "critical", "0", &late)).await;
    // One connection's input 2 stored before its input 1 (a retry after a failover).
    let numbered = |n: u64| Header {
        origin: Some(("test-1-1".into(), n)),
        deadline_micros: Some(now + 60_000_000),
    };
    publish_raw(&js, "late", stream_input("conn", "ok", "2", &numbered(2))).await;
    let last = publish_raw(
        &js,
        "late",
        stream_input("conn", "critical", "1", &numbered(1)),
    )
    .await;

    for node in [&a, &b] {
        eventually(
            CATCH_UP_TIMEOUT,
            "the inputs applied or dropped",
            || async {
                let applied = applied_seq(node).await;
                if applied >= last {
                    Ok(())
                } else {
                    Err(format!("{} applied up to {applied} of {last}", node.id))
                }
            },
        )
        .await;
        let indexed = all_state(node).await;
        assert!(
            indexed.iter().all(|e| e["host"] != "late"),
            "{}: the late input is not applied: {indexed:?}",
            node.id
        );
        let conn: Vec<&Value> = indexed.iter().filter(|e| e["host"] == "conn").collect();
        assert_eq!(conn.len(), 1, "{}: {indexed:?}", node.id);
        assert_eq!(
            (&conn[0]["state"], &conn[0]["description"]),
            (&Value::from("ok"), &Value::from("2")),
            "{}: the connection's newest input stays",
            node.id
        );
        assert_eq!(dropped(node, "late").await, 1, "{}", node.id);
        assert_eq!(dropped(node, "overtaken").await, 1, "{}", node.id);
    }
}

/// Issue 21, item 3: a POST whose input the stream acknowledged is answered within the bound
/// even when this node cannot apply it (here: B may publish but not create its stream
/// consumer, as when its consumer keeps failing to be re-created after a failover), with an
/// error saying it is stored; the nodes that read the stream apply it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_input_not_yet_applied_is_answered_within_the_bound() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // Clients of server 1 are "blind": everything but creating a consumer on the input stream.
    let nats = Nats::cluster_with(2, |i| {
        format!(
            "no_auth_user: {}\nauthorization {{\n  users = [\n    {{user: admin, password: pw}}\n    \
             {{user: blind, password: pw, permissions: {{publish: {{allow: \">\", deny: \
             [\"$JS.API.CONSUMER.CREATE.bound\", \"$JS.API.CONSUMER.CREATE.bound.>\"]}}}}}}\n  ]\n}}\n",
            if i == 0 { "admin" } else { "blind" }
        )
    });
    let on_server = |i: usize| ClusterSpec {
        url: nats.servers[i].url(),
        ..ClusterSpec::new(&nats, "bound").with(&["--cluster-timeout", "500ms"])
    };
    let a = Node::start(&on_server(0), "a").await;
    let data_dir = fresh_dir("node-b");
    let b = on_server(1).start_node("b", &data_dir, &[]);

    let (status, body) = try_post(b.http, &critical("behind"))
        .await
        .expect("an answer");
    eprintln!("answer {status} {body}");
    assert_eq!(status, 503, "{body}");
    let unconfirmed = metric_line(&b, "statecast_cluster_unconfirmed_total{known=\"stored\"}")
        .await
        .map_or(0, |(_, v)| v as u64);
    assert_eq!(
        unconfirmed, 1,
        "answered as stored, not yet applied: {body}"
    );
    // Stored: every node that reads the stream applies it.
    wait_all_indexed(&a, &["behind".to_owned()], "A").await;
    drop(b);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// A max age below the stream's 2-minute duplicate window is inside the flag's range but NATS
/// cannot make such a stream: refused before anything is bound or connected, one line naming it.
#[test]
fn a_max_age_below_the_duplicate_window_is_refused() {
    let data_dir = fresh_dir("refuse-age");
    let (status, stderr) = run_to_exit(
        &data_dir,
        &[
            "--cluster",
            "nats://127.0.0.1:1",
            "--cluster-max-age",
            "90s",
            "--cluster-snapshot-interval",
            "10s",
        ],
    );
    let _ = std::fs::remove_dir_all(&data_dir);
    assert_eq!(status.code(), Some(1), "stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    assert!(
        lines[0].contains("--cluster-max-age"),
        "names the flag:\n{stderr}"
    );
}

/// `--cluster-max-bytes` that the NATS server's JetStream store cannot reserve, or can reserve
/// only by leaving nothing for the snapshot bucket, is refused with one line naming the flag,
/// and nothing is left in JetStream; a size that fits starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_bytes_the_nats_store_cannot_hold_is_refused() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let nats = Nats::single_with_store("64MB");
    let js = nats.jetstream().await;
    // 64MiB: the stream fits exactly, the bucket does not; 1GiB: the stream does not fit.
    for max_bytes in ["64MiB", "1GiB"] {
        let data_dir = fresh_dir("refuse-bytes");
        let url = nats.url();
        let args = [
            "--cluster",
            url.as_str(),
            "--cluster-stream",
            "tight",
            "--cluster-max-bytes",
            max_bytes,
        ];
        let (status, stderr) = tokio::task::block_in_place(|| run_to_exit(&data_dir, &args));
        let _ = std::fs::remove_dir_all(&data_dir);
        assert_eq!(status.code(), Some(1), "{max_bytes}: stderr:\n{stderr}");
        let refusals: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("--cluster-max-bytes"))
            .collect();
        assert_eq!(
            refusals.len(),
            1,
            "{max_bytes}: one line names the flag:\n{stderr}"
        );
        for name in ["tight", "OBJ_tight-snapshots"] {
            assert!(
                js.get_stream(name).await.is_err(),
                "{max_bytes}: stream {name} left behind; stderr:\n{stderr}"
            );
        }
    }
    let spec = ClusterSpec {
        extra: vec!["--cluster-max-bytes".into(), "32MiB".into()],
        ..ClusterSpec::new(&nats, "tight")
    };
    let _a = Node::start(&spec, "a").await;
}

/// What a [`Link`] does with the bytes it carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum LinkMode {
    Forward,
    /// Nothing forwarded, nothing closed (no FIN, no RST): new connections are accepted and
    /// held. A firewall or NAT that forgot the connection looks like this.
    Silent,
    /// Towards the node, 512 bytes per 10 ms: a catch-up that takes long enough to be watched.
    Slow,
}

/// A TCP proxy between a node and nats-server whose forwarding the test switches.
struct Link {
    addr: SocketAddr,
    mode: tokio::sync::watch::Sender<LinkMode>,
}

impl Link {
    async fn to(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the link");
        let addr = listener.local_addr().expect("link address");
        let (mode, _) = tokio::sync::watch::channel(LinkMode::Forward);
        let modes = mode.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut rx = modes.subscribe();
                tokio::spawn(async move {
                    let _ = rx.wait_for(|m| *m != LinkMode::Silent).await;
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(Self::pump(client_read, server_write, rx.clone(), false));
                    Self::pump(server_read, client_write, rx, true).await;
                });
            }
        });
        Self { addr, mode }
    }

    /// Copies `from` to `to` as the mode allows; `towards_node` is the direction `Slow` slows.
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut mode: tokio::sync::watch::Receiver<LinkMode>,
        towards_node: bool,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if mode.wait_for(|m| *m != LinkMode::Silent).await.is_err() {
                return;
            }
            let slow = towards_node && *mode.borrow() == LinkMode::Slow;
            let limit = if slow { 512 } else { buf.len() };
            let n = match from.read(&mut buf[..limit]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // Bytes read just as the link went silent are held, not delivered.
            if mode.wait_for(|m| *m != LinkMode::Silent).await.is_err() {
                return;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
            if slow {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    fn set(&self, mode: LinkMode) {
        self.mode.send_replace(mode);
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }
}

/// `statecast_cluster_lag` of a node.
async fn lag(node: &Addrs) -> u64 {
    metric_line(node, "statecast_cluster_lag ")
        .await
        .map(|(_, v)| v as u64)
        .expect("statecast_cluster_lag in /metrics")
}

/// The link between a node and NATS stops forwarding without closing (a silent partition): the
/// node says it is not ready within seconds; once the stream moved on (through another node) and
/// the link carries again, its lag counts what it has not applied, and it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_partition_from_nats_is_noticed_in_seconds() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let nats = Nats::single();
    let link = Link::to(SocketAddr::from(([127, 0, 0, 1], nats.servers[0].port))).await;
    let spec = ClusterSpec::new(&nats, "silent");
    let spec_b = ClusterSpec {
        url: link.url(),
        ..spec.clone()
    };
    let a = Node::start(&spec, "a").await;
    let b = Node::start(&spec_b, "b").await;
    let (status, body) = try_post(a.http, &critical("before"))
        .await
        .expect("post to A");
    assert_eq!(status, 200, "{body}");
    wait_all_indexed(&b, &["before".to_owned()], "B").await;
    assert_eq!(readyz_status(&b).await, 200);

    link.set(LinkMode::Silent);
    let silent = Instant::now();
    eventually(
        Duration::from_secs(30),
        "/readyz of B 503 after the link went silent",
        || async {
            match readyz_status(&b).await {
                503 => Ok(()),
                other => Err(other.to_string()),
            }
        },
    )
    .await;
    eprintln!(
        "B not ready {:.1}s after its link to NATS went silent",
        silent.elapsed().as_secs_f64()
    );

    // The stream moves on through A.
    let during: Vec<String> = (0..300).map(|i| format!("during-{i}")).collect();
    for service in &during {
        let (status, body) = try_post(a.http, &critical(service))
            .await
            .expect("post to A");
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(readyz_status(&b).await, 503, "B still not ready");

    link.set(LinkMode::Slow);
    eventually(
        CATCH_UP_TIMEOUT,
        "B's lag counts what it has not applied",
        || async {
            match lag(&b).await {
                0 => Err("0".to_owned()),
                n => Ok(n),
            }
        },
    )
    .await;
    link.set(LinkMode::Forward);
    wait_all_indexed(&b, &during, "B").await;
    wait_readyz(&b).await;
    wait_agree(&[&a, &b]).await;
}

/// `GET /api/history?since=S` on a node: the whole answer.
async fn history_page(node: &Addrs, since: u64) -> Value {
    let response = http_request(
        node.http,
        "GET",
        &format!("/api/history?since={since}&limit=100000"),
        &[],
        b"",
    )
    .await;
    assert_eq!(response.status, 200, "/api/history: {}", response.body);
    response.json()
}

/// Posts one new critical key per name to `node`, each acknowledged.
async fn post_all(node: &Addrs, services: &[String]) {
    for service in services {
        let (status, body) = try_post(node.http, &critical(service)).await.expect("post");
        assert_eq!(status, 200, "{body}");
    }
}

/// Kills B, writes to A while A and C write snapshots past all B had, and waits until the
/// bucket's snapshot covers those writes. Returns (B's seq before the kill, the epoch, the
/// stream's last sequence before the writes).
async fn kill_b_while_snapshots_move_on(
    nats: &Nats,
    stream: &str,
    a: &Node,
    b: &mut Node,
    c: &Node,
) -> (u64, String, u64) {
    let first: Vec<String> = (0..20).map(|i| format!("first-{i}")).collect();
    post_all(a, &first).await;
    wait_all_indexed(b, &first, "B").await;
    let (before_kill, epoch) = position(b).await;
    b.kill_9();
    let js = nats.jetstream().await;
    let mut info = js.get_stream(stream).await.expect("the stream");
    let at_kill = info.info().await.expect("stream info").state.last_sequence;
    let later: Vec<String> = (0..30).map(|i| format!("later-{i}")).collect();
    post_all(a, &later).await;
    wait_all_indexed(c, &later, "C").await;
    // The second snapshot from now began after the first was written: after `later` applied.
    let written = snapshots_written(&[a, c]).await;
    eventually(CATCH_UP_TIMEOUT, "two more snapshots written", || async {
        let now = snapshots_written(&[a, c]).await;
        if now >= written + 2 {
            Ok(())
        } else {
            Err(format!("{now}, from {written}"))
        }
    })
    .await;
    (before_kill, epoch, at_kill)
}

/// Issue 21 item 4: node B is killed and stays down while A and C write snapshots past all B
/// had; restarted on its data directory, B replays the stream from its own position (the stream
/// still holds it) instead of jumping to the snapshot: its history has every seq, and a dashboard
/// resumes on B from before the kill without a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_behind_the_snapshot_keeps_its_history_whole() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let nats = Nats::single();
    let spec = ClusterSpec::new(&nats, "whole").with(&["--cluster-snapshot-interval", "2s"]);
    let a = Node::start(&spec, "a").await;
    let mut b = Node::start(&spec, "b").await;
    let c = Node::start(&spec, "c").await;
    let (before_kill, epoch, _) =
        kill_b_while_snapshots_move_on(&nats, "whole", &a, &mut b, &c).await;

    b.restart(&spec).await;
    let (now, _) = position(&a).await;
    wait_all_indexed(&b, &["later-29".to_owned()], "restarted B").await;
    let page = history_page(&b, 0).await;
    let on_b = page["changes"].as_array().cloned().unwrap_or_default();
    assert_consecutive(&on_b, 0, "history of restarted B");
    assert_eq!(
        on_b.last().map(seq),
        Some(now),
        "B's history reaches the present"
    );
    assert_eq!(page["oldest_seq"], 1, "{page}");
    assert!(page.get("gap").is_none_or(Value::is_null), "{page}");
    assert_eq!(on_b, history(&a).await, "history of restarted B and of A");

    let since = before_kill.saturating_sub(5);
    let mut resumed = WsClient::connect_path(&b, &format!("/ws?since={since}&epoch={epoch}")).await;
    let frame = resumed.next_json().await;
    assert_eq!(
        frame["type"], "change",
        "resume across B's downtime, not a reset: {frame}"
    );
    let mut replayed = vec![frame];
    replayed.extend(changes_through(&mut resumed, now).await);
    assert_consecutive(&replayed, since, "resumed on B");
}

/// Issue 21 item 4, when the hole cannot be avoided: B is down while the stream is trimmed past
/// its position, so it must start from the snapshot. Its history says so: the page stops at an
/// explicit gap, `oldest_seq` is past it, and a resume from before the gap is a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavoidable_hole_in_history_is_explicit() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let nats = Nats::single();
    let spec = ClusterSpec::new(&nats, "gap").with(&["--cluster-snapshot-interval", "2s"]);
    let a = Node::start(&spec, "a").await;
    let mut b = Node::start(&spec, "b").await;
    let c = Node::start(&spec, "c").await;
    let (before_kill, epoch, at_kill) =
        kill_b_while_snapshots_move_on(&nats, "gap", &a, &mut b, &c).await;
    // Everything up to B's position and a little after is gone from the stream.
    let js = nats.jetstream().await;
    let stream = js.get_stream("gap").await.expect("the stream");
    stream
        .purge()
        .sequence(at_kill + 2)
        .await
        .expect("purge the stream's beginning");

    b.restart(&spec).await;
    post_all(&a, &["after".to_owned()]).await;
    wait_all_indexed(&b, &["after".to_owned()], "restarted B").await;
    let (now, _) = position(&a).await;

    let page = history_page(&b, 0).await;
    let gap = &page["gap"];
    let (from, to) = (
        gap["from"]
            .as_u64()
            .unwrap_or_else(|| panic!("an explicit gap: {page}")),
        gap["to"]
            .as_u64()
            .unwrap_or_else(|| panic!("an explicit gap: {page}")),
    );
    assert!(
        from > before_kill && to >= from && to < now,
        "gap {from}..={to}: {page}"
    );
    let before = page["changes"].as_array().cloned().unwrap_or_default();
    assert_consecutive(&before, 0, "B's history before the gap");
    assert_eq!(
        before.last().map(seq),
        Some(from - 1),
        "the page stops at the gap"
    );
    assert_eq!(
        page["oldest_seq"],
        to + 1,
        "oldest_seq is where whole history starts: {page}"
    );
    let rest = history_page(&b, to).await;
    let after = rest["changes"].as_array().cloned().unwrap_or_default();
    assert_consecutive(&after, to, "B's history after the gap");
    assert_eq!(after.last().map(seq), Some(now));
    assert!(rest.get("gap").is_none_or(Value::is_null), "{rest}");

    // A resume from before the gap cannot be answered from history: a reset.
    let mut across =
        WsClient::connect_path(&b, &format!("/ws?since={}&epoch={epoch}", from - 2)).await;
    let frame = across.next_json().await;
    assert_eq!(
        (frame["type"].as_str(), frame["reset"].as_bool()),
        (Some("snapshot"), Some(true)),
        "{frame}"
    );
    // A resume after it is answered from history.
    let mut after_gap = WsClient::connect_path(&b, &format!("/ws?since={to}&epoch={epoch}")).await;
    let frame = after_gap.next_json().await;
    assert_eq!(
        (frame["type"].as_str(), frame["seq"].as_u64()),
        (Some("change"), Some(to + 1)),
        "{frame}"
    );
}

/// Issue 23: live values need nothing of the cluster — every node's engine marks what moved in
/// the inputs it applies from the stream, so a dashboard on one node sees a metric-only update
/// sent to another.
#[tokio::test]
async fn a_dashboard_on_one_node_gets_live_values_ingested_on_another() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let nats = Nats::single();
    let spec = ClusterSpec::new(&nats, "live").with(&["--metrics-interval", "100ms"]);
    let a = Node::start(&spec, "a").await;
    let b = Node::start(&spec, "b").await;
    let critical = r#"{"host":"db1","service":"disk","state":"critical","metric":91}"#;
    let response = post_json(&a, critical).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let (mut dash, _) = WsClient::connect_with_snapshot(&b).await;
    let response = post_json(&a, r#"{"host":"db1","service":"disk","metric":99.5}"#).await;
    assert_eq!(response.status, 200, "{}", response.body);
    // The change comes first if b applied it after the snapshot; then the live value.
    let frame = loop {
        let frame = dash.next_json().await;
        if frame["type"] == "metrics" {
            break frame;
        }
        assert_eq!(frame["type"], "change", "{frame}");
    };
    // The compact row: [host index into "hosts", service, metric, description, age].
    assert_eq!(
        frame["hosts"][frame["values"][0][0].as_u64().unwrap_or(u64::MAX) as usize],
        "db1",
        "{frame}"
    );
    assert_eq!(frame["values"][0][2], 99.5, "{frame}");
}
