//! Issue 12, websocket and SSE slice: what one client can make the server hold or do is bounded,
//! and the stream endpoints behave at their limits. Each test attacks the server beside a
//! control client and asserts the limit with generous caps (RSS growth, latency), never tight
//! timings.
//!
//! Tests that measure the server's memory, read its log or signal it run the real binary; the
//! others run it in process.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A line of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

const MIB: u64 = 1024;

/// Indexes `keys` keys (`h{i}`/`service-{i}`), in POSTs of 2,000 events.
async fn index_keys(server: &Addrs, keys: usize, state: &str) {
    for start in (0..keys).step_by(2000) {
        let batch: Vec<Value> = (start..(start + 2000).min(keys))
            .map(|i| json!({"host": format!("h{}", i % 1000), "service": format!("service-{i}"), "state": state}))
            .collect();
        let response = post_json(server, &Value::Array(batch).to_string()).await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
}

/// Posts one event (a new key in trouble: a change) and asserts the control dashboard receives
/// its change.
async fn control_still_served(server: &Addrs, control: &mut WsClient, service: &str) {
    let response = post_json(
        server,
        &json!({"host": "control", "service": service, "state": "critical"}).to_string(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    control.next_change_is(service).await;
}

/// A websocket client of `path` over a socket with a 4 KiB receive buffer.
async fn connect_small_buffer(server: &Addrs, path: &str) -> WsClient {
    let socket = tokio::net::TcpSocket::new_v4().expect("tcp socket");
    socket.set_recv_buffer_size(4096).expect("set SO_RCVBUF");
    let stream = socket.connect(server.http).await.expect("connect");
    let url = format!("ws://{}{path}", server.http);
    let (ws, _) = tokio::time::timeout(
        TIMEOUT,
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("websocket handshake timed out")
    .expect("websocket handshake");
    WsClient { ws }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_from_a_client_that_never_reads_is_closed_and_memory_stays_bounded() {
    ping_flood("/ws").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_on_the_riemann_index_websocket_is_bounded_too() {
    ping_flood("/index?subscribe=true").await;
}

/// Issue 20 item 7: websocket ingest bounded its pongs as little as `/ws` once did (4 clients
/// flooding pings without reading: 1.87 GiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_on_websocket_ingest_is_bounded_too() {
    ping_flood("/events").await;
}

async fn ping_flood(path: &str) {
    // A write timeout long enough for an unbounded pong queue to show (before the fix, the
    // client was dropped only once the socket took no data for this long).
    let server = start_server(&["--ws-write-timeout", "5"]);
    let (mut control, _) = WsClient::connect_with_snapshot(&server).await;
    let mut attacker = connect_small_buffer(&server, path).await;
    let baseline = proc_status_kib(server.pid(), "VmRSS");

    // Up to 2M pings of 125 bytes (262 MB), 256 per write, never reading the pongs. Before the
    // fix the server queued every pong (1.3 GiB in 7 s) and never closed the client.
    let payload = Bytes::from(vec![b'p'; 125]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0u64;
    let closed = loop {
        if sent >= 2_000_000 || Instant::now() > deadline {
            break false;
        }
        let burst = async {
            for _ in 0..256 {
                attacker.ws.feed(WsMessage::Ping(payload.clone())).await?;
            }
            attacker.ws.flush().await
        };
        match tokio::time::timeout(Duration::from_secs(20), burst).await {
            Ok(Ok(())) => sent += 256,
            Ok(Err(_)) => break true,
            Err(_) => panic!("the server neither read the pings nor dropped the client"),
        }
    };
    let peak = proc_status_kib(server.pid(), "VmHWM");
    eprintln!(
        "ping flood on {path}: {sent} pings sent, closed: {closed}, server RSS {} -> peak {} MiB",
        baseline / MIB,
        peak / MIB
    );
    assert!(
        closed,
        "the client was not closed after {sent} pings ({} MiB peak)",
        peak / MIB
    );
    assert!(
        peak < baseline + 64 * MIB,
        "server RSS grew from {} to {} MiB under {sent} unread pings",
        baseline / MIB,
        peak / MIB
    );
    control_still_served(&server, &mut control, "after-ping-flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_flood_gets_a_few_snapshots_an_error_and_a_1008() {
    let server = start_server(&[]);
    index_keys(&server, 10_000, "ok").await;
    let (mut control, _) = WsClient::connect_with_snapshot(&server).await;
    let mut attacker = WsClient::connect_with_recv_buffer(&server, 4096).await;
    let baseline = proc_status_kib(server.pid(), "VmRSS");

    // 1,000 subscribes, each worth a whole-index snapshot (about a megabyte), none read. Before
    // the fix each one queued its snapshot, whatever --ws-queue-bytes said.
    let subscribe = WsMessage::Text(r#"{"type":"subscribe"}"#.into());
    let flood_started = std::time::Instant::now();
    let flood = async {
        for _ in 0..1000 {
            attacker.ws.feed(subscribe.clone()).await?;
        }
        attacker.ws.flush().await
    };
    // The server may stop reading (it closes the client): that is fine.
    let _ = tokio::time::timeout(Duration::from_secs(5), flood).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = proc_status_kib(server.pid(), "VmHWM");

    let mut snapshots = 0;
    let mut errors = Vec::new();
    let close = loop {
        match attacker.next_event().await {
            WsEvent::Json(frame) if frame["type"] == "snapshot" => {
                snapshots += 1;
                // What the budget lets through (README, Limits: 10 at once, then 2 a second) for
                // as long as the flood lasted, plus the connection's own first snapshot: however
                // slowly a loaded machine reads the flood, never more. A fixed number here failed
                // under load, when the old "refused in a row" count restarted at every refill.
                let allowed = 10.0 + 2.0 * flood_started.elapsed().as_secs_f64() + 1.0;
                assert!(
                    f64::from(snapshots) <= allowed,
                    "{snapshots} snapshots for one client, the budget allows {allowed:.0}"
                );
            }
            WsEvent::Json(frame) if frame["type"] == "error" => errors.push(frame),
            WsEvent::Json(_) => {}
            WsEvent::Close(frame) => break frame,
            WsEvent::Gone(why) => panic!("connection lost without a close frame: {why}"),
        }
    };
    eprintln!(
        "subscribe flood: {snapshots} snapshots, {} error frames, close {close:?}, server RSS {} -> peak {} MiB",
        errors.len(),
        baseline / MIB,
        peak / MIB
    );
    let close = close.expect("a close frame with a code");
    assert_eq!(close.code, CloseCode::Policy, "{close:?}");
    assert_eq!(close.reason, "too many subscribes");
    assert_eq!(errors.len(), 1, "one error frame per burst: {errors:?}");
    let error = errors[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("too many subscribes"), "{error}");
    assert!(
        peak < baseline + 150 * MIB,
        "server RSS grew from {} to {} MiB under 1,000 unread subscribes",
        baseline / MIB,
        peak / MIB
    );
    control_still_served(&server, &mut control, "after-subscribe-flood").await;
}

#[tokio::test]
async fn subscribes_within_the_budget_still_work_and_replace_the_filter() {
    let server = InProcess::start(&[]);
    index_keys(&server, 10, "ok").await;
    let (mut client, _) = WsClient::connect_with_snapshot(&server).await;
    for _ in 0..5 {
        client
            .ws
            .send(WsMessage::Text(
                r#"{"type":"subscribe","query":"service = \"service-3\""}"#.into(),
            ))
            .await
            .expect("send subscribe");
    }
    // Each subscribe is answered by a snapshot (an earlier one may be replaced while queued):
    // the last one read holds just the filtered key.
    let mut last = None;
    while let Ok(frame) =
        tokio::time::timeout(Duration::from_millis(1500), client.next_json()).await
    {
        assert_eq!(frame["type"], "snapshot", "{frame}");
        last = Some(frame);
    }
    let last = last.expect("at least one snapshot");
    assert_eq!(snapshot_services(&last), vec!["service-3"]);
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_is_closed_with_1007() {
    let server = InProcess::start(&[]);
    let (mut client, _) = WsClient::connect_with_snapshot(&server).await;
    let frame = Frame::message(
        Bytes::from_static(b"{\"type\":\"\xff\xfe\"}"),
        OpCode::Data(Data::Text),
        true,
    );
    client
        .ws
        .send(WsMessage::Frame(frame))
        .await
        .expect("send raw frame");
    let (code, _) = client.expect_close().await;
    assert_eq!(code, CloseCode::Invalid);

    // The Riemann-compatible websocket too.
    let mut index = WsClient::connect_path(&server, "/index?subscribe=true").await;
    let frame = Frame::message(
        Bytes::from_static(b"\xc3\x28"),
        OpCode::Data(Data::Text),
        true,
    );
    index
        .ws
        .send(WsMessage::Frame(frame))
        .await
        .expect("send raw frame");
    let (code, _) = index.expect_close().await;
    assert_eq!(code, CloseCode::Invalid);
}

/// One small POST /api/event round trip, timed, on a plain blocking socket: measured on its own
/// thread so that the test's own runtime (busy reading the resumes) does not count.
fn post_latency(http: SocketAddr, i: usize) -> Duration {
    use std::io::{Read, Write};
    let started = Instant::now();
    let body =
        json!({"host": "control", "service": "latency", "state": "ok", "metric": i}).to_string();
    let mut stream = std::net::TcpStream::connect(http).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let request = format!(
        "POST /api/event HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resuming_a_large_gap_does_not_stall_other_clients() {
    // What is measured is the control client's latency; the resumers themselves may be slow
    // on a busy machine, and must not be dropped for it.
    let server = start_server(&["--ws-write-timeout", "60s"]);
    // 58,000 changes: 2,000 keys flipping between ok and critical (the first round adds them).
    for round in 0..30 {
        let state = if round % 2 == 0 { "ok" } else { "critical" };
        index_keys(&server, 2000, state).await;
    }
    let (_control, snapshot) = WsClient::connect_with_snapshot(&server).await;
    let seq = snapshot["seq"].as_u64().expect("seq");
    let epoch = snapshot["epoch"].as_str().expect("epoch").to_owned();
    assert_eq!(seq, 58_000);
    let since = 0;
    let http = server.http;
    let idle = (0..10)
        .map(|i| post_latency(http, i))
        .max()
        .unwrap_or_default();

    // Four clients resume all 58,000 changes at once; each must get exactly those changes.
    let resumers: Vec<_> = (0..4)
        .map(|_| {
            let path = format!("/ws?since={since}&epoch={epoch}");
            tokio::spawn(async move { read_resume(http, &path, since, seq).await })
        })
        .collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let control = {
        let done = std::sync::Arc::clone(&done);
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut i = 10;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                worst = worst.max(post_latency(http, i));
                i += 1;
            }
            worst
        })
    };
    for resumer in resumers {
        resumer.await.expect("resumer");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let worst = control.join().expect("control thread");
    eprintln!("resume: control POST worst {worst:?} during the resumes, {idle:?} idle");
    // Before the fix: seconds (the history rows were read and serialized on runtime workers).
    assert!(
        worst < Duration::from_millis(1500).max(idle * 20),
        "control POST took {worst:?} during the resumes (idle: {idle:?})"
    );
}

/// Reads a resume: exactly the changes `since+1..=upto`, in order (checked by count, and the
/// seq of the first and the last).
async fn read_resume(http: SocketAddr, path: &str, since: u64, upto: u64) {
    use futures_util::StreamExt;
    let url = format!("ws://{http}{path}");
    let (mut ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect");
    let seq_of =
        |text: &str| -> Value { serde_json::from_str::<Value>(text).expect("json")["seq"].clone() };
    let mut changes = 0;
    while changes < upto - since {
        let message = tokio::time::timeout(3 * TIMEOUT, ws.next())
            .await
            .expect("no frame within the timeout")
            .expect("a frame")
            .expect("a frame");
        let WsMessage::Text(text) = message else {
            continue;
        };
        if text.contains(r#""type":"stats""#) {
            continue;
        }
        assert!(text.contains(r#""type":"change""#), "{text}");
        changes += 1;
        if changes == 1 {
            assert_eq!(seq_of(&text), since + 1);
        }
        if changes == upto - since {
            assert_eq!(seq_of(&text), upto);
        }
    }
}

/// Opens `GET path` and reads the response head; the stream stays open.
async fn open_stream(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, TcpStream) {
    tokio::time::timeout(TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.expect("read head");
            assert_eq!(
                n,
                1,
                "connection closed in the response head: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("bad response head {head:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (status, headers, stream)
    })
    .await
    .expect("no response head within the timeout")
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn sse_streams_count_against_the_stream_limit() {
    let server = InProcess::start(&["--max-ws-connections", "5"]);
    let mut streams = Vec::new();
    for _ in 0..5 {
        let (status, _, stream) = open_stream(server.http, "/index", &[]).await;
        assert_eq!(status, 200);
        streams.push(stream);
    }
    let (status, headers, _) = open_stream(server.http, "/index", &[]).await;
    assert_eq!(status, 503, "a sixth stream past --max-ws-connections 5");
    assert_eq!(header(&headers, "retry-after"), Some("5"));
    // A websocket shares the limit.
    let (status, _, _) = open_stream(
        server.http,
        "/ws",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    )
    .await;
    assert_eq!(status, 503);

    // Closing one frees its slot (once the server notices the client left).
    drop(streams.pop());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, stream) = open_stream(server.http, "/index", &[]).await;
        if status == 200 {
            streams.push(stream);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn sse_echoes_an_allowed_origin_and_refuses_a_foreign_one() {
    let server = InProcess::start(&["--allowed-origin", r"https://dash\.example"]);
    let (status, headers, _) =
        open_stream(server.http, "/index", &[("Origin", "https://dash.example")]).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://dash.example")
    );
    assert!(
        header(&headers, "vary").is_some_and(|v| v.to_ascii_lowercase().contains("origin")),
        "{headers:?}"
    );
    let (status, headers, _) =
        open_stream(server.http, "/index", &[("Origin", "https://evil.example")]).await;
    assert_eq!(status, 403);
    assert_eq!(header(&headers, "access-control-allow-origin"), None);

    // Same-origin by default; no Origin (not a browser): no CORS header needed.
    let server = InProcess::start(&[]);
    let own = format!("http://{}", server.http);
    let (status, headers, _) = open_stream(server.http, "/index", &[("Origin", &own)]).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(own.as_str())
    );
    let (status, headers, _) = open_stream(server.http, "/index", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
}

/// What a dashboard frame is, read without building the (possibly huge) JSON tree.
#[derive(serde::Deserialize)]
struct FrameHead {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    reset: bool,
}

/// What a dashboard that reads as fast as it can saw until it had `changes` changes.
#[derive(Debug, Default)]
struct ReaderSaw {
    snapshots: usize,
    resets: usize,
    changes: usize,
    close: Option<String>,
}

/// Reads `/ws` frames as they come until `changes` changes arrived (or the connection ended).
async fn read_until_changes(server: Addrs, changes: usize) -> ReaderSaw {
    let mut client = WsClient::connect(&server).await;
    let mut saw = ReaderSaw::default();
    while saw.changes < changes {
        let next = tokio::time::timeout(Duration::from_secs(60), client.ws.next()).await;
        match next.expect("no frame within 60 s") {
            Some(Ok(WsMessage::Text(text))) => {
                let head: FrameHead = serde_json::from_str(text.as_str()).expect("a JSON frame");
                match head.kind.as_str() {
                    "snapshot" => {
                        saw.snapshots += 1;
                        saw.resets += usize::from(head.reset);
                    }
                    "change" => saw.changes += 1,
                    _ => {}
                }
            }
            Some(Ok(WsMessage::Close(frame))) => {
                saw.close = Some(format!("{frame:?}"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                saw.close = Some(format!("error: {error}"));
                break;
            }
            None => {
                saw.close = Some("end of stream".into());
                break;
            }
        }
    }
    saw
}

/// Issue 20 item 1: a snapshot many times `--ws-queue-bytes` is still being written when changes
/// arrive. Before the fix the unflushed snapshot counted against the queue limit, so any change
/// offered meanwhile marked the client lagging: reset snapshot after reset snapshot, then 1008
/// "slow consumer", for clients that read as fast as they could.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_reading_a_snapshot_far_over_the_queue_limit_is_not_resynced() {
    let server = start_server(&["--ws-queue-bytes", "64KiB"]);
    // 20,000 keys with 400-byte descriptions: a snapshot of about 11 MB, 170 × the queue limit.
    let description = "d".repeat(400);
    for start in (0..20_000).step_by(2000) {
        let batch: Vec<Value> = (start..start + 2000)
            .map(|i| {
                json!({"host": format!("h{}", i % 1000), "service": format!("service-{i}"),
                            "state": "critical", "description": description})
            })
            .collect();
        let response = post_json(&server, &Value::Array(batch).to_string()).await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
    // A steady stream of changes (one key flipping state) while three dashboards connect and read.
    let streaming = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let stream = {
        let streaming = std::sync::Arc::clone(&streaming);
        let server = *server;
        tokio::spawn(async move {
            let mut i = 0u64;
            while streaming.load(std::sync::atomic::Ordering::Relaxed) {
                let state = if i.is_multiple_of(2) { "ok" } else { "warning" };
                let body = json!({"host": "stream", "service": "flip", "state": state});
                let response = post_json(&server, &body.to_string()).await;
                assert_eq!(response.status, 200, "{}", response.body);
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            i
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|_| tokio::spawn(read_until_changes(*server, 200)))
        .collect();
    let mut saws = Vec::new();
    for reader in readers {
        saws.push(reader.await.expect("reader task"));
    }
    streaming.store(false, std::sync::atomic::Ordering::Relaxed);
    let posted = stream.await.expect("stream task");
    let resyncs = server.metric("statecast_ws_resyncs_total").await;
    let slow_closed = server.metric("statecast_ws_slow_closed_total").await;
    eprintln!("big snapshot, steady changes ({posted} posted): {saws:?}; resyncs {resyncs}, slow-closed {slow_closed}");
    for saw in &saws {
        assert_eq!(saw.close, None, "a reading dashboard was closed: {saws:?}");
        assert_eq!(saw.resets, 0, "a reading dashboard was resynced: {saws:?}");
        assert_eq!(saw.snapshots, 1, "{saws:?}");
    }
    assert_eq!(resyncs, 0);
    assert_eq!(slow_closed, 0);
}
