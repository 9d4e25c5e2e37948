//! Issue 16, "Health, metrics, logs": `/healthz` and `/readyz` (also during a storage outage,
//! on a full tmpfs: this test mounts one, so it runs as root, as CI does), every metric added
//! for operators present and moving, `--log-format json`, and refusal log lines rate-limited.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request with the given `Host` and extra headers; the status and the body (read by
/// Content-Length, so a kept-alive connection does not hold the test up).
async fn request(
    addr: SocketAddr,
    path: &str,
    host: &str,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let mut text = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in extra {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    tokio::time::timeout(TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await.expect("http connect");
        stream.write_all(text.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if raw.len() >= end + 4 + length {
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + length]);
                    return (status, body.into_owned());
                }
            }
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed mid-response: {raw:?}");
            raw.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("an http response within the timeout")
}

/// A websocket upgrade request's status (the connection is dropped after the head).
async fn upgrade_status(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> u16 {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    headers.extend_from_slice(extra);
    // `Connection: close` beside `Upgrade`: the refusal closes, an accepted upgrade would not
    // be read on here anyway.
    let host = addr.to_string();
    let mut text = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    tokio::time::timeout(TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await.expect("http connect");
        stream.write_all(text.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head)
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    })
    .await
    .expect("an answer to the upgrade")
}

/// The whole `/metrics` text.
async fn metrics(server: &Addrs) -> String {
    let (status, body) = request(server.http, "/metrics", &server.http.to_string(), &[]).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample `name` (with its labels, as written) in a metrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
}

/// Polls `/metrics` until `name` satisfies `ok` (state reaches metrics asynchronously, e.g. a
/// websocket's gauge after its handshake); panics with the last text after the timeout.
async fn wait_for_sample(server: &Addrs, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let text = metrics(server).await;
        if let Some(value) = sample(&text, name).filter(|v| ok(*v)) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reached the expected value:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn health_endpoints_need_no_token_origin_or_allowed_host() {
    let server = InProcess::start(&[
        "--dashboard-token",
        "view",
        "--ingest-token",
        "write",
        "--allowed-host",
        "dash.example.com",
    ]);
    // A load balancer's probe: by IP, with nothing else.
    for host in ["10.1.2.3:8080", "dash.example.com", "evil.example"] {
        let (status, body) = request(server.http, "/healthz", host, &[]).await;
        assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#), "{host}");
        let (status, body) = request(
            server.http,
            "/readyz",
            host,
            &[("Origin", "http://evil.example")],
        )
        .await;
        assert_eq!(status, 200, "{host}: {body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["ready"], true);
    }
    // Everything else keeps the Host rule, and counts its refusals.
    let (status, _) = request(server.http, "/metrics", "10.1.2.3:8080", &[]).await;
    assert_eq!(status, 403);
    let text = metrics(&server).await;
    assert_eq!(
        sample(&text, r#"statecast_refusals_total{reason="host"}"#),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn every_operator_metric_is_present_and_moves() {
    let server = InProcess::start(&["--dashboard-token", "view", "--max-ws-connections", "3"]);
    let before = metrics(&server).await;
    let build = before
        .lines()
        .find(|l| l.starts_with("statecast_build_info{"))
        .unwrap_or_else(|| panic!("no build info:\n{before}"));
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && build.contains("rustc=\"1.")
            && build.ends_with("} 1"),
        "{build}"
    );
    for name in [
        "statecast_index_keys",
        "statecast_engine_queue",
        r#"statecast_dashboards{endpoint="ws"}"#,
        r#"statecast_dashboards{endpoint="index-ws"}"#,
        r#"statecast_dashboards{endpoint="sse"}"#,
        r#"statecast_refusals_total{reason="origin"}"#,
        r#"statecast_refusals_total{reason="token"}"#,
        r#"statecast_refusals_total{reason="limit"}"#,
        r#"statecast_refusals_total{reason="host"}"#,
        "statecast_commit_seconds_count",
        "statecast_tcp_ack_seconds_count",
        r#"statecast_commit_seconds_bucket{le="+Inf"}"#,
        "statecast_ws_resyncs_total",
    ] {
        assert_eq!(sample(&before, name), Some(0.0), "{name}:\n{before}");
    }
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(sample(&before, name).is_some_and(|v| v > 0.0), "{name}");
    }
    // Started within the last day (the test process, when the server runs in it).
    let started = sample(&before, "process_start_time_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now + 1.0 && started > now - 86_400.0,
        "{started}"
    );

    // Index size, commit and acknowledgement latency: 5 changes over Riemann TCP, one at a time.
    let mut tcp = RiemannTcp::connect(&server).await;
    for i in 0..5 {
        let reply = tcp
            .request(&events_msg(vec![event("m", &format!("s{i}"), "critical")]))
            .await;
        assert_eq!(reply.ok, Some(true));
    }
    let after = metrics(&server).await;
    assert_eq!(sample(&after, "statecast_index_keys"), Some(5.0), "{after}");
    assert!(sample(&after, "statecast_commit_seconds_count").unwrap() >= 1.0);
    assert_eq!(sample(&after, "statecast_tcp_ack_seconds_count"), Some(5.0));
    assert_eq!(
        sample(&after, r#"statecast_tcp_ack_seconds_bucket{le="+Inf"}"#),
        Some(5.0)
    );
    assert!(sample(&after, "statecast_tcp_ack_seconds_sum").unwrap() > 0.0);

    // Dashboards per endpoint, while they are connected.
    let ws = WsClient::connect_path(&server, "/ws?token=view").await;
    wait_for_sample(&server, r#"statecast_dashboards{endpoint="ws"}"#, |v| {
        v == 1.0
    })
    .await;
    let index = WsClient::connect_path(&server, "/index?subscribe=true&token=view").await;
    wait_for_sample(
        &server,
        r#"statecast_dashboards{endpoint="index-ws"}"#,
        |v| v == 1.0,
    )
    .await;
    let mut sse = TcpStream::connect(server.http).await.unwrap();
    sse.write_all(
        format!(
            "GET /index?token=view HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            server.http
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    wait_for_sample(&server, r#"statecast_dashboards{endpoint="sse"}"#, |v| {
        v == 1.0
    })
    .await;
    // The fourth dashboard is past --max-ws-connections 3.
    let refused = upgrade_status(server.http, "/ws?token=view", &[]).await;
    assert_eq!(refused, 503);
    drop((ws, index, sse));
    for endpoint in ["ws", "index-ws", "sse"] {
        let name = format!(r#"statecast_dashboards{{endpoint="{endpoint}"}}"#);
        wait_for_sample(&server, &name, |v| v == 0.0).await;
    }

    // Refusals by reason.
    let own = format!("http://{}", server.http);
    let foreign = upgrade_status(
        server.http,
        "/ws?token=view",
        &[("Origin", "http://evil.example")],
    )
    .await;
    assert_eq!(foreign, 403);
    assert_eq!(
        upgrade_status(server.http, "/ws?token=view", &[("Origin", &own)]).await,
        101
    );
    let (status, _) = request(server.http, "/api/state", &server.http.to_string(), &[]).await;
    assert_eq!(status, 401);
    let (status, _) = request(server.http, "/api/state?token=view", "evil.example", &[]).await;
    assert_eq!(status, 403);
    let text = metrics(&server).await;
    for (reason, count) in [
        ("origin", 1.0),
        ("token", 1.0),
        ("limit", 1.0),
        ("host", 1.0),
    ] {
        let name = format!(r#"statecast_refusals_total{{reason="{reason}"}}"#);
        assert_eq!(sample(&text, &name), Some(count), "{name}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_that_falls_behind_counts_as_a_resync() {
    const N: usize = 2_000;
    let server = InProcess::start(&["--ws-queue-bytes", "65536"]);
    // Handshake done, then not read while 8 MB of changes go by (far more than its queue and
    // the socket buffers hold): a tiny receive buffer makes the server notice early.
    let mut stuck = WsClient::connect_with_recv_buffer(&server, 4096).await;
    let mut tcp = RiemannTcp::connect(&server).await;
    let description = "d".repeat(4096);
    for batch in 0..N / 4 {
        let events = (0..4)
            .map(|i| {
                let mut e = event("lag", &format!("s{}", batch * 4 + i), "critical");
                e.description = Some(description.clone());
                e
            })
            .collect();
        assert_eq!(tcp.request(&events_msg(events)).await.ok, Some(true));
    }
    // Read now: the queue drains, and the client is resynchronised with a `reset` snapshot
    // (counted), or closed as a slow consumer (counted apart).
    loop {
        match stuck.next_event().await {
            WsEvent::Json(v) if v["type"] == "snapshot" && v["reset"] == true => break,
            WsEvent::Json(v) if v["type"] == "change" && v["seq"] == N as u64 => {
                panic!("the stuck client never fell behind")
            }
            WsEvent::Json(_) => {}
            other => panic!("closed instead of resynchronised: {other:?}"),
        }
    }
    let resyncs = wait_for_sample(&server, "statecast_ws_resyncs_total", |v| v >= 1.0).await;
    eprintln!("MEASURE resync: {resyncs} after {N} changes of 4 KiB to a client not reading");
}

#[tokio::test]
async fn json_log_lines_parse_and_refusals_are_logged_with_their_reason() {
    let server = start_server(&["--log-format", "json", "--dashboard-token", "view"]);
    let (status, _) = request(server.http, "/api/state", &server.http.to_string(), &[]).await;
    assert_eq!(status, 401);
    // The refusal is counted when it is logged; its line follows through the pipe.
    wait_for_sample(
        &server,
        r#"statecast_refusals_total{reason="token"}"#,
        |v| v >= 1.0,
    )
    .await;
    let is_refusal = |line: &Value| line["reason"] == "token" && line["path"] == "/api/state";
    let deadline = Instant::now() + TIMEOUT;
    while !server.log_records().iter().any(is_refusal) {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stderr = server.stderr();
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(lines.len() >= 3, "{stderr}");
    for line in &lines {
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
        assert!(line["message"].is_string(), "{line}");
    }
    let refusal = lines.iter().find(|l| is_refusal(l)).unwrap();
    assert_eq!(refusal["level"], "INFO");
    assert_eq!(refusal["reason"], "token");
    assert_eq!(refusal["path"], "/api/state");
    assert_eq!(refusal["status"], 401);
}

#[tokio::test]
async fn many_refusals_make_few_log_lines() {
    let server = start_server(&["--log-format", "json"]);
    let started = Instant::now();
    for _ in 0..50 {
        let status = upgrade_status(server.http, "/ws", &[("Origin", "http://evil.example")]).await;
        assert_eq!(status, 403);
    }
    let elapsed = started.elapsed();
    let text = metrics(&server).await;
    assert_eq!(
        sample(&text, r#"statecast_refusals_total{reason="origin"}"#),
        Some(50.0)
    );
    let logged: Vec<Value> = server
        .log_records()
        .into_iter()
        .filter(|r| r["reason"] == "origin")
        .collect();
    // One line per reason every 10 s (a slow machine may cross into a second window).
    let allowed = 1 + elapsed.as_secs() / 10;
    eprintln!(
        "MEASURE refusal log: 50 refusals in {elapsed:?} -> {} lines",
        logged.len()
    );
    assert!(
        !logged.is_empty() && logged.len() as u64 <= allowed,
        "{} lines for 50 refusals in {elapsed:?}:\n{logged:?}",
        logged.len(),
    );
    assert_eq!(logged[0]["level"], "INFO", "{}", logged[0]);
}

async fn readyz(server: &Addrs) -> (u16, Value) {
    let (status, body) = request(server.http, "/readyz", "127.0.0.1", &[]).await;
    (status, serde_json::from_str(&body).expect("JSON"))
}

#[tokio::test]
async fn readyz_is_503_with_the_reason_while_storage_fails_and_200_after() {
    let fs = Tmpfs::mount("ready", "64m");
    let server = start_server_in(&fs.dir.join("data"), &[]);
    assert_eq!(readyz(&server).await.0, 200);
    fs.fill("filler");
    // Changes until one is refused: the committer's log write failed, storage is "failing".
    let mut tcp = RiemannTcp::connect(&server).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    loop {
        let mut e = event("ready", &format!("s{i}"), "critical");
        e.description = Some("x".repeat(16 * 1024));
        i += 1;
        let reply = tcp.request(&events_msg(vec![e])).await;
        if reply.ok == Some(false) {
            break;
        }
        assert!(Instant::now() < deadline, "a full disk never refused");
    }
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("storage unavailable"), "{reasons}");
    // Alive all the same: a full disk is no reason to restart the process.
    let (status, _) = request(server.http, "/healthz", "127.0.0.1", &[]).await;
    assert_eq!(status, 200);

    std::fs::remove_file(fs.dir.join("filler")).unwrap();
    // The committer retries (backoff up to 1 s); readiness follows without anyone's help.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = readyz(&server).await;
        if status == 200 {
            assert_eq!(body["ready"], true);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready again: {body}\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
