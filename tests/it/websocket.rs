//! The dashboard websocket: snapshot then changes in seq order, stats, slow clients, shutdown.
//! The server runs in process, except for the SIGTERM test (the binary).

use crate::common::*;
use serde_json::{json, Value};
use statecast::proto::Msg;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn the_snapshot_holds_only_events_with_a_state_and_later_clients_get_changes_in_it() {
    let server = InProcess::start(&[]);
    let (mut early, snapshot) = WsClient::connect_with_snapshot(&server).await;
    assert_eq!(snapshot["seq"], 0, "{snapshot}");
    assert_eq!(snapshot["events"], json!([]), "{snapshot}");

    let response = post_json(
        &server,
        r#"[{"host":"h","service":"no-state","metric":1},
            {"host":"h","service":"empty-state","state":"","metric":2},
            {"host":"h","service":"down","state":"critical"},
            {"host":"h","service":"fine","state":"ok"}]"#,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let change = early.next_change().await;
    assert_eq!(change["seq"], 1);
    assert_eq!(change["event"]["service"], "down");

    // A client arriving now: the change is in its snapshot (as of seq 1), not sent again.
    let (mut late, snapshot) = WsClient::connect_with_snapshot(&server).await;
    assert_eq!(snapshot["seq"], 1);
    assert_eq!(snapshot_services(&snapshot), ["down", "fine"]);
    assert_eq!(
        snapshot_event(&snapshot, "down").unwrap()["state"],
        "critical"
    );

    let response = post_json(
        &server,
        r#"{"host":"h","service":"fine","state":"warning"}"#,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    for client in [&mut early, &mut late] {
        let change = client.next_change().await;
        assert_eq!(change["seq"], 2, "{change}");
        assert_eq!(change["event"]["service"], "fine");
        assert_eq!(change["previous_state"], "ok");
    }
}

/// Reads stats frames until one reports `clients`; the count may lag a tick behind.
async fn wait_for_clients(ws: &mut WsClient, clients: u64) -> Value {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let stats = ws.next_stats().await;
            if stats["clients"] == clients {
                return stats;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no stats frame with clients = {clients} within the timeout"))
}

#[tokio::test]
async fn stats_frames_count_clients_and_the_count_drops_when_a_client_leaves() {
    let server = InProcess::start(&["--stats-interval", "0.2"]);
    let (mut first, _) = WsClient::connect_with_snapshot(&server).await;
    let stats = wait_for_clients(&mut first, 1).await;
    assert!(stats["clients"].is_u64(), "{stats}");

    let (second, _) = WsClient::connect_with_snapshot(&server).await;
    wait_for_clients(&mut first, 2).await;

    second.close().await;
    wait_for_clients(&mut first, 1).await;

    // A client that just vanishes (no close handshake) is removed too.
    let (third, _) = WsClient::connect_with_snapshot(&server).await;
    wait_for_clients(&mut first, 2).await;
    drop(third);
    wait_for_clients(&mut first, 1).await;
}

/// Events `prefix-0000…` in state critical, each with a description of `description_bytes`.
fn big_events(prefix: &str, from: usize, count: usize, description_bytes: usize) -> Msg {
    let description = "d".repeat(description_bytes);
    events_msg(
        (from..from + count)
            .map(|i| {
                let mut e = event("big", &format!("{prefix}-{i:04}"), "critical");
                e.description = Some(description.clone());
                e
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_never_reads_does_not_delay_another_client() {
    const N: usize = 2_000;
    // Small enough that the reader's queue (64 KiB) never holds more than two batches.
    const BATCH: usize = 4;
    let server = InProcess::start(&["--ws-queue-bytes", "65536"]);

    // The stuck client: handshake done, then not polled again until the end. A tiny receive
    // buffer makes the server notice early.
    let mut stuck = WsClient::connect_with_recv_buffer(&server, 4096).await;
    let (mut reader, _) = WsClient::connect_with_snapshot(&server).await;
    let mut tcp = RiemannTcp::connect(&server).await;

    // 2,000 changes of ~4 KiB each (8 MB, far more than the stuck client's buffers hold); the
    // reader gets every one, in seq order, while the stuck client stays connected. Each wait is
    // bounded by the helpers' 10 s timeout.
    let mut seq = 0u64;
    for batch in 0..N / BATCH {
        let reply = tcp
            .request(&big_events("s", batch * BATCH, BATCH, 4096))
            .await;
        assert_eq!(reply.ok, Some(true), "{reply:?}");
        for _ in 0..BATCH {
            let change = reader.next_json().await;
            seq += 1;
            assert_eq!(
                change["type"],
                "change",
                "after seq {}: {change:.200}",
                seq - 1
            );
            assert_eq!(change["seq"], seq, "changes in seq order, none missed");
            assert_eq!(
                change["event"]["service"],
                format!("s-{:04}", seq - 1),
                "the reader is never resynchronised"
            );
        }
    }

    // The stuck client was never silently deaf: reading it now, it gets changes in seq order and
    // a fresh snapshot after any gap, up to the last change; or it was closed (1008 "slow
    // consumer", or dropped once a write to it timed out). Silence would time out here.
    let mut last = None::<u64>;
    loop {
        match stuck.next_event().await {
            WsEvent::Json(v) if v["type"] == "snapshot" => last = v["seq"].as_u64(),
            WsEvent::Json(v) if v["type"] == "change" => {
                let s = v["seq"].as_u64().unwrap();
                assert_eq!(Some(s - 1), last, "a gap without a fresh snapshot");
                last = Some(s);
            }
            WsEvent::Json(_) => {}
            WsEvent::Close(frame) => {
                if let Some(frame) = frame {
                    assert_eq!(frame.code, CloseCode::Policy, "{frame:?}");
                }
                break;
            }
            WsEvent::Gone(_) => break,
        }
        if last == Some(N as u64) {
            break;
        }
    }
}

#[tokio::test]
async fn a_snapshot_larger_than_the_websocket_write_buffer_still_reaches_a_new_client() {
    // Default settings: 3,000 events with 1 KiB descriptions make a ~3.3 MB snapshot: one frame
    // larger than the dashboard queue (--ws-queue-bytes, 1 MiB) and than tungstenite's write
    // buffer (16 KiB). It must still go out whole.
    const N: usize = 3_000;
    let server = InProcess::start(&[]);
    let mut tcp = RiemannTcp::connect(&server).await;
    let reply = tcp.request(&big_events("k", 0, N, 1024)).await;
    assert_eq!(reply.ok, Some(true), "{reply:?}");

    let mut client = WsClient::connect(&server).await;
    match client.next_event().await {
        WsEvent::Json(snapshot) => {
            assert_eq!(snapshot["type"], "snapshot");
            assert_eq!(snapshot["seq"], N as u64);
            assert_eq!(snapshot["events"].as_array().map(Vec::len), Some(N));
        }
        other => panic!(
            "a dashboard connecting to a large index gets no snapshot, only {other:?}; \
             the snapshot frame is larger than the websocket write buffer"
        ),
    }
}

#[tokio::test]
async fn sigterm_closes_websockets_with_1001_and_exits_0() {
    let mut server = start_server(&[]);
    let (mut ws, _) = WsClient::connect_with_snapshot(&server).await;
    server.send_sigterm();
    let (code, _reason) = ws.expect_close().await;
    assert_eq!(code, CloseCode::Away, "close code 1001");
    let status = server.wait_exit();
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        server.stderr()
    );
    assert_eq!(status.code(), Some(0));
}

/// An operator action over HTTP that must be answered 200.
async fn act(server: &Addrs, method: &str, path: &str, body: Value) {
    let response = http_request(
        server.http,
        method,
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200, "{method} {path}: {}", response.body);
}

/// Issue 20 item 2: a filtered snapshot and `GET /api/acks?query=` carry the acks and silenced
/// keys of the keys the filter sees, nothing else (before: every ack, whatever the filter); the
/// silences themselves are all sent. `/api/acks` is streamed (chunked), not one JSON value.
#[tokio::test]
async fn snapshots_and_api_acks_carry_only_what_the_filter_sees() {
    let server = InProcess::start(&[]);
    let events = json!([
        {"host": "web1", "service": "cpu", "state": "critical"},
        {"host": "db1", "service": "disk", "state": "critical"},
        {"host": "web2", "service": "cpu", "state": "ok"}
    ]);
    let response = post_json(&server, &events.to_string()).await;
    assert_eq!(response.status, 200, "{}", response.body);
    for host in ["web1", "db1"] {
        let service = if host == "web1" { "cpu" } else { "disk" };
        let ack = json!({"host": host, "service": service, "note": "n", "by": "ann"});
        act(&server, "POST", "/api/ack", ack).await;
    }
    let silence = json!({"query": "host = \"db1\"", "comment": "c", "by": "bob", "duration": "1h"});
    act(&server, "POST", "/api/silence", silence).await;

    let acked_hosts = |acks: &Value| -> Vec<String> {
        let mut hosts: Vec<String> = acks
            .as_array()
            .unwrap_or_else(|| panic!("not an array: {acks}"))
            .iter()
            .map(|a| a["host"].as_str().unwrap_or_default().to_owned())
            .collect();
        hosts.sort();
        hosts
    };
    let (_all, snapshot) = WsClient::connect_with_snapshot(&server).await;
    assert_eq!(acked_hosts(&snapshot["acks"]), ["db1", "web1"]);
    assert_eq!(snapshot["silenced"], json!([["db1", "disk"]]));

    let mut web = WsClient::connect_path(&server, "/ws?query=host%20%3D%20%22web1%22").await;
    let snapshot = web.next_json().await;
    assert_eq!(snapshot_services(&snapshot), ["cpu"]);
    assert_eq!(acked_hosts(&snapshot["acks"]), ["web1"], "{snapshot}");
    assert_eq!(snapshot["silenced"], json!([]), "{snapshot}");
    assert_eq!(snapshot["silences"].as_array().map(Vec::len), Some(1));

    let mut nobody = WsClient::connect_path(&server, "/ws?query=host%20%3D%20%22nobody%22").await;
    let snapshot = nobody.next_json().await;
    assert_eq!(snapshot["acks"], json!([]), "{snapshot}");
    assert_eq!(snapshot["silenced"], json!([]), "{snapshot}");

    let get = |path: &'static str| {
        let server = *server;
        async move { http_request(server.http, "GET", path, &[], b"").await }
    };
    let all = get("/api/acks").await;
    assert_eq!(all.status, 200, "{}", all.body);
    assert_eq!(acked_hosts(&all.json()["acks"]), ["db1", "web1"]);
    let db = get("/api/acks?query=host%20%3D%20%22db1%22").await;
    assert_eq!(acked_hosts(&db.json()["acks"]), ["db1"], "{}", db.body);
    assert_eq!(get("/api/acks?query=host%20%3D").await.status, 400);

    // Enough acks for many chunks: the answer is streamed, not one value with a length.
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.push(json!({"host": format!("many{i}"), "service": "s", "state": "critical"}));
    }
    let response = post_json(&server, &Value::Array(batch).to_string()).await;
    assert_eq!(response.status, 200, "{}", response.body);
    for i in 0..200 {
        let note = "x".repeat(1000);
        let ack = json!({"host": format!("many{i}"), "service": "s", "note": note, "by": "ann"});
        act(&server, "POST", "/api/ack", ack).await;
    }
    let many = get("/api/acks").await;
    assert_eq!(many.json()["acks"].as_array().map(Vec::len), Some(202));
    let chunked = many
        .headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    assert!(chunked, "not streamed: {:?}", many.headers);
}

/// Issue 24, defect 8: every websocket answers a client's Close with its own (RFC 6455
/// §5.5.1); `/events` and `/index` used to drop the connection (the client saw 1006).
#[tokio::test]
async fn every_websocket_answers_a_clients_close() {
    let server = start_server(&[]);
    for path in ["/ws", "/index?subscribe=true&query=true", "/events"] {
        let client = WsClient::connect_path(&server, path).await;
        match client.close_handshake().await {
            WsEvent::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal, "{path}"),
            other => panic!("{path}: the close was not answered: {other:?}"),
        }
    }
}

/// `/ws?batch=true`: view frames queued together leave as one `{"type":"batch","frames":[…]}`
/// message — a resume's replay is queued at once, so it comes as one — and a client that did
/// not ask never sees a batch. Either way every change arrives once, in `seq` order.
#[tokio::test]
async fn a_batching_client_gets_frames_queued_together_as_one_message() {
    let server = InProcess::start(&[]);
    let (_watcher, snapshot) = WsClient::connect_with_snapshot(&server).await;
    let epoch = snapshot["epoch"].as_str().unwrap().to_owned();
    let events: Vec<Value> = (0..10)
        .map(|i| json!({"host":"h","service":format!("s{i}"),"state":"critical"}))
        .collect();
    let response = post_json(&server, &Value::Array(events).to_string()).await;
    assert_eq!(response.status, 200, "{}", response.body);

    let mut batching =
        WsClient::connect_path(&server, &format!("/ws?since=2&epoch={epoch}&batch=true")).await;
    let replay = batching.next_json().await;
    assert_eq!(replay["type"], "batch", "{replay}");
    let seqs: Vec<u64> = replay["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|frame| {
            assert_eq!(frame["type"], "change", "{frame}");
            frame["seq"].as_u64().expect("seq")
        })
        .collect();
    assert_eq!(seqs, (3..=10).collect::<Vec<_>>());

    let mut plain = WsClient::connect_path(&server, &format!("/ws?since=2&epoch={epoch}")).await;
    for expected in 3..=10u64 {
        let change = plain.next_json().await;
        assert_eq!(
            (change["type"].as_str(), change["seq"].as_u64()),
            (Some("change"), Some(expected))
        );
    }
    // Live changes after the replay: however they are grouped, each once and in order.
    let events: Vec<Value> = (0..10)
        .map(|i| json!({"host":"h","service":format!("s{i}"),"state":"ok"}))
        .collect();
    let response = post_json(&server, &Value::Array(events).to_string()).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let message = batching.next_json().await;
        let frames = match message["type"].as_str() {
            Some("batch") => message["frames"].as_array().cloned().expect("frames"),
            _ => vec![message],
        };
        seen.extend(
            frames
                .iter()
                .map(|frame| frame["seq"].as_u64().expect("seq")),
        );
    }
    assert_eq!(seen, (11..=20).collect::<Vec<_>>());
    for expected in 11..=20u64 {
        assert_eq!(plain.next_json().await["seq"], expected);
    }
}
