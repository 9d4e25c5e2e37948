//! Keepalive, slow consumers, connection limits, origin checks and tokens. The server runs in
//! process, except where a test reads its log (the binary).

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends a websocket upgrade request and returns the status code and headers of the answer
/// (a 101 is not followed by EOF, so only the head is read).
async fn upgrade_status(server: &Addrs, path: &str, extra: &[(&str, &str)]) -> (u16, String) {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        server.http
    );
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(server.http).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(TIMEOUT, async {
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
    })
    .await
    .expect("an answer to the upgrade");
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed() {
    let server = InProcess::start(&["--ws-ping", "0.2", "--ws-pong-timeout", "0.3"]);
    // Handshake done, then never polled again: tungstenite can only answer pings when read.
    let _silent = WsClient::connect(&server).await;
    // This one keeps reading, so its pongs go out; it must stay.
    let mut reader = WsClient::connect(&server).await;
    let reading =
        tokio::spawn(async move { while let WsEvent::Json(_) = reader.next_event().await {} });
    let deadline = std::time::Instant::now() + TIMEOUT;
    while server.metric("statecast_ws_clients").await != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "silent client still connected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Several ping rounds later the answering client is still there.
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(server.metric("statecast_ws_clients").await, 1);
    assert!(
        !reading.is_finished(),
        "the answering client was not closed"
    );
    reading.abort();
}

#[tokio::test]
async fn a_slow_consumer_past_its_resync_budget_is_closed_with_1008() {
    let server = InProcess::start(&["--ws-queue-bytes", "16384", "--ws-max-resyncs", "0"]);
    let mut slow = WsClient::connect_with_recv_buffer(&server, 4096).await;
    let mut tcp = RiemannTcp::connect(&server).await;
    // Enough to fill the kernel's socket buffers on both sides, then the outbox.
    let description = "x".repeat(64 * 1024);
    for round in 0..2000 {
        let state = if round % 2 == 0 { "critical" } else { "ok" };
        let mut e = event("h", "svc", state);
        e.description = Some(description.clone());
        tcp.request(&events_msg(vec![e])).await;
        if round % 16 == 0 && server.metric("statecast_ws_slow_closed_total").await > 0 {
            break;
        }
    }
    assert_eq!(server.metric("statecast_ws_slow_closed_total").await, 1);
    let (code, reason) = slow.expect_close().await;
    assert_eq!(u16::from(code), 1008);
    assert_eq!(reason, "slow consumer");
}

#[tokio::test]
async fn connection_limits_refuse_politely() {
    let server = InProcess::start(&["--max-ws-connections", "1", "--max-tcp-connections", "1"]);
    let (_first, _) = WsClient::connect_with_snapshot(&server).await;
    let (status, head) = upgrade_status(&server, "/ws", &[]).await;
    assert_eq!(status, 503, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");

    let mut first_tcp = RiemannTcp::connect(&server).await;
    assert_eq!(
        first_tcp
            .request(&events_msg(vec![event("a", "b", "ok")]))
            .await
            .ok,
        Some(true)
    );
    let mut second = tokio::net::TcpStream::connect(server.tcp).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(TIMEOUT, second.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "second connection closed: {read:?}"
    );
    assert_eq!(server.metric("statecast_tcp_refused_total").await, 1);
}

#[tokio::test]
async fn foreign_origins_get_403_and_allowed_origin_widens() {
    let server = InProcess::start(&[]);
    let evil = upgrade_status(&server, "/ws", &[("Origin", "http://evil.example")]).await;
    assert_eq!(evil.0, 403, "{}", evil.1);
    let index = upgrade_status(
        &server,
        "/index?subscribe=true",
        &[("Origin", "http://evil.example")],
    )
    .await;
    assert_eq!(index.0, 403);
    let own = format!("http://{}", server.http);
    assert_eq!(
        upgrade_status(&server, "/ws", &[("Origin", &own)]).await.0,
        101
    );

    let widened = InProcess::start(&[
        "--allowed-origin",
        r"https://dash\.example\.com|http://{{host}}",
    ]);
    let ok = upgrade_status(&widened, "/ws", &[("Origin", "https://dash.example.com")]).await;
    assert_eq!(ok.0, 101, "{}", ok.1);
    let still_evil = upgrade_status(&widened, "/ws", &[("Origin", "http://evil.example")]).await;
    assert_eq!(still_evil.0, 403);
}

#[tokio::test]
async fn tokens_guard_ingest_and_dashboards() {
    let server = InProcess::start(&[
        "--ingest-token",
        "in-secret",
        "--dashboard-token",
        "view-secret",
    ]);
    let body = br#"{"host":"a","service":"b","state":"critical"}"#;
    let none = http_request(server.http, "POST", "/api/event", &[], body).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["ok"], false);
    let wrong = http_request(
        server.http,
        "POST",
        "/api/event",
        &[("Authorization", "Bearer in-secreT")],
        body,
    )
    .await;
    assert_eq!(wrong.status, 401);
    let right = http_request(
        server.http,
        "POST",
        "/api/event",
        &[("Authorization", "Bearer in-secret")],
        body,
    )
    .await;
    assert_eq!(right.status, 200, "{}", right.body);

    for path in ["/api/state", "/api/history"] {
        assert_eq!(
            http_request(server.http, "GET", path, &[], b"")
                .await
                .status,
            401,
            "{path}"
        );
        let with = format!("{path}?token=view-secret");
        assert_eq!(
            http_request(server.http, "GET", &with, &[], b"")
                .await
                .status,
            200,
            "{path}"
        );
    }
    assert_eq!(upgrade_status(&server, "/ws", &[]).await.0, 401);
    let url = format!("ws://{}/ws?token=view-secret", server.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("token in the URL works");
    use futures_util::StreamExt;
    let first = ws.next().await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("\"snapshot\""));
}

#[tokio::test]
async fn a_client_message_over_64_kib_is_closed_with_1009() {
    use futures_util::SinkExt;
    let server = InProcess::start(&[]);
    let (mut client, _) = WsClient::connect_with_snapshot(&server).await;
    let big = format!(
        r#"{{"type":"subscribe","query":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    client
        .ws
        .send(tokio_tungstenite::tungstenite::Message::Text(big.into()))
        .await
        .expect("send");
    let (code, _) = client.expect_close().await;
    assert_eq!(u16::from(code), 1009);
}

/// `--max-keys`: a message that would add a key past the limit is refused whole — Riemann
/// `ok: false` naming the limit, the connection stays open — a POST gets 507; keys already
/// indexed keep updating, and nothing refused reaches the index.
#[tokio::test]
async fn new_keys_past_max_keys_are_refused_and_indexed_keys_keep_updating() {
    let server = start_server(&["--max-keys", "2", "--log-format", "json"]);
    assert!(
        riemann_client_send(&server, &["-h", "web1", "-S", "cpu", "-s", "ok"])
            .await
            .success()
    );
    let mut tcp = RiemannTcp::connect(&server).await;
    let ok = tcp
        .request(&events_msg(vec![event("web2", "cpu", "ok")]))
        .await;
    assert_eq!(ok.ok, Some(true));

    // A third key, with an update of an indexed one in the same message: refused, both.
    let refused = tcp
        .request(&events_msg(vec![
            event("web1", "cpu", "critical"),
            event("web3", "cpu", "critical"),
        ]))
        .await;
    assert_eq!(refused.ok, Some(false));
    let error = refused.error.unwrap_or_default();
    assert!(
        error.contains("index full") && error.contains("--max-keys"),
        "{error}"
    );
    // The connection goes on: indexed keys still update.
    let still = tcp
        .request(&events_msg(vec![event("web1", "cpu", "warning")]))
        .await;
    assert_eq!(still.ok, Some(true));
    // riemann-client reports the refusal as a failure.
    let status = riemann_client_send(&server, &["-h", "web4", "-S", "cpu", "-s", "ok"]).await;
    assert!(!status.success());

    let response = post_json(&server, r#"[{"host":"web5","service":"cpu","state":"ok"}]"#).await;
    assert_eq!(response.status, 507, "{}", response.body);
    assert!(response.json()["error"]
        .as_str()
        .unwrap_or_default()
        .contains("index full"));

    let (_, snapshot) = WsClient::connect_with_snapshot(&server).await;
    let mut indexed: Vec<(String, String)> = snapshot["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["host"].as_str().unwrap().to_owned(),
                e["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    indexed.sort();
    assert_eq!(
        indexed,
        [
            ("web1".into(), "warning".into()),
            ("web2".into(), "ok".into())
        ]
    );
    assert_eq!(server.metric("statecast_events_refused_total").await, 4);
    // Said in the log (what UDP senders have), once for the burst rather than per refusal: one
    // warning carrying the limit.
    let logged = server
        .log_records()
        .into_iter()
        .filter(|r| r["level"] == "WARN" && r["max_keys"] == 2)
        .count();
    assert_eq!(logged, 1, "{}", server.stderr());
}
