//! Websocket ingest (`GET /events`, Riemann's shape: batches in, one ack per batch out) and
//! newline-delimited JSON on `POST /events`, with a real websocket client.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Connects to `/events` (plus `query`), optionally with extra request headers; the HTTP status
/// of a refused upgrade otherwise.
async fn connect_events(
    server: &Addrs,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<WsStream, u16> {
    ws_connect_with_headers(&format!("ws://{}/events{query}", server.http), headers).await
}

/// The next text frame as JSON, skipping pings.
async fn next_ack(ws: &mut WsStream) -> Value {
    loop {
        let message = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("no ack within the timeout")
            .expect("connection ended")
            .expect("read failed");
        match message {
            WsMessage::Text(text) => return serde_json::from_str(&text).expect("ack is JSON"),
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn send_text(ws: &mut WsStream, text: String) {
    tokio::time::timeout(TIMEOUT, ws.send(WsMessage::Text(text.into())))
        .await
        .expect("send timed out")
        .expect("send");
}

#[tokio::test]
async fn batches_are_acked_in_order_and_applied() {
    let server = InProcess::start(&[]);
    let (mut dashboard, _) = WsClient::connect_with_snapshot(&server).await;
    let mut ws = connect_events(&server, "", &[]).await.expect("upgrade");

    // The envelope with an id: acked with it, and the change reaches a dashboard.
    let batch = json!({"id": "b1", "events": [
        {"host": "web1", "service": "ws-a", "state": "ok", "metric": 1},
        {"host": "web1", "service": "ws-b", "state": "warning"},
    ]});
    send_text(&mut ws, batch.to_string()).await;
    assert_eq!(
        next_ack(&mut ws).await,
        json!({"id": "b1", "ok": true, "accepted": 2})
    );
    let change = dashboard.next_change_is("ws-b").await;
    assert_eq!(change["event"]["host"], "web1", "{change}");

    // One invalid event refuses the whole batch; the connection stays.
    let bad = json!({"id": 7, "events": [
        {"host": "web1", "service": "ws-c", "state": "ok"},
        {"host": "web1", "service": "ws-d", "metric": "not a number"},
    ]});
    send_text(&mut ws, bad.to_string()).await;
    let ack = next_ack(&mut ws).await;
    assert_eq!(
        (ack["id"].clone(), ack["ok"].clone()),
        (json!(7), json!(false)),
        "{ack}"
    );
    assert!(
        ack["error"].as_str().unwrap_or("").contains("index 1"),
        "{ack}"
    );

    // A bare array and a single object (no id), then a protobuf Msg in a binary frame.
    send_text(
        &mut ws,
        json!([{"host": "web2", "service": "ws-e", "state": "critical"}]).to_string(),
    )
    .await;
    send_text(
        &mut ws,
        json!({"host": "web2", "service": "ws-f", "state": "ok"}).to_string(),
    )
    .await;
    let msg = events_msg(vec![
        event("web3", "ws-g", "ok"),
        event("web3", "ws-h", "critical"),
        event("web3", "ws-i", "warning"),
    ]);
    ws.send(WsMessage::Binary(msg.encode_to_vec().into()))
        .await
        .expect("send binary");
    // Garbage protobuf: refused, connection kept.
    ws.send(WsMessage::Binary(vec![0xff, 0xff, 0xff].into()))
        .await
        .expect("send binary");
    let acks = [
        next_ack(&mut ws).await,
        next_ack(&mut ws).await,
        next_ack(&mut ws).await,
        next_ack(&mut ws).await,
    ];
    assert_eq!(acks[0], json!({"id": null, "ok": true, "accepted": 1}));
    assert_eq!(acks[1], json!({"id": null, "ok": true, "accepted": 1}));
    assert_eq!(acks[2], json!({"id": null, "ok": true, "accepted": 3}));
    assert_eq!(acks[3]["ok"], false, "{}", acks[3]);

    // Nothing of the refused batch was applied; everything else was.
    let state = http_request(server.http, "GET", "/api/state", &[], b"").await;
    let services: Vec<String> = state
        .json()
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["service"].as_str().map(str::to_owned))
        .collect();
    for wanted in ["ws-a", "ws-b", "ws-e", "ws-f", "ws-g", "ws-h", "ws-i"] {
        assert!(
            services.iter().any(|s| s == wanted),
            "{wanted} in {services:?}"
        );
    }
    for refused in ["ws-c", "ws-d"] {
        assert!(
            !services.iter().any(|s| s == refused),
            "{refused} in {services:?}"
        );
    }
}

#[tokio::test]
async fn ingest_token_and_origin_rules_apply() {
    let server = InProcess::start(&["--ingest-token", "s3cret"]);
    assert_eq!(connect_events(&server, "", &[]).await.err(), Some(401));
    assert_eq!(
        connect_events(&server, "?token=wrong", &[]).await.err(),
        Some(401)
    );
    let mut ws = connect_events(&server, "", &[("authorization", "Bearer s3cret")])
        .await
        .expect("token in a header");
    send_text(&mut ws, json!({"id": 1, "events": []}).to_string()).await;
    assert_eq!(
        next_ack(&mut ws).await,
        json!({"id": 1, "ok": true, "accepted": 0})
    );
    connect_events(&server, "?token=s3cret", &[])
        .await
        .expect("token in the URL");
    let foreign = [
        ("origin", "http://evil.example"),
        ("authorization", "Bearer s3cret"),
    ];
    assert_eq!(connect_events(&server, "", &foreign).await.err(), Some(403));
    let same = format!("http://{}", server.http);
    let same_origin = [
        ("origin", same.as_str()),
        ("authorization", "Bearer s3cret"),
    ];
    connect_events(&server, "", &same_origin)
        .await
        .expect("same origin");
}

/// A client that sends many batches without reading its acks (each ack made large by a 64 KiB
/// id, so they cannot all sit in socket buffers): the server stops reading once its in-flight
/// limit is reached (far fewer events applied than sent), and every ack arrives, in order, once
/// the client reads.
#[tokio::test]
async fn unread_acks_stall_the_reader_and_all_arrive_in_order() {
    const BATCHES: usize = 1000;
    let server = InProcess::start(&["--ws-write-timeout", "60s"]);
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(server.http).await.expect("connect");
    let url = format!("ws://{}/events", server.http);
    let (ws, _) = tokio::time::timeout(
        TIMEOUT,
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("handshake timed out")
    .expect("handshake");
    let (mut sink, mut stream) = ws.split();
    let padding = "x".repeat(64 * 1024);
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent_by_task = std::sync::Arc::clone(&sent);
    let sender = tokio::spawn(async move {
        for i in 0..BATCHES {
            let batch = json!({"id": [i, padding], "events": [
                {"host": "flood", "service": format!("s{}", i % 50), "metric": i},
            ]});
            sink.send(WsMessage::Text(batch.to_string().into()))
                .await
                .expect("send");
            sent_by_task.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        sink
    });
    // Wait until the server stops taking events (three equal readings in a row), then check it
    // stopped well short of everything: the acks it owes are bounded, not the whole stream.
    let mut last = u64::MAX;
    let mut same = 0;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while same < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let applied = server.metric("statecast_events_total").await;
        same = if applied == last { same + 1 } else { 0 };
        last = applied;
    }
    assert!(
        last < BATCHES as u64 / 2,
        "{last} of {BATCHES} batches applied while no ack was read (sent: {})",
        sent.load(std::sync::atomic::Ordering::Relaxed)
    );
    eprintln!(
        "stalled with {last} batches applied, {} sent",
        sent.load(std::sync::atomic::Ordering::Relaxed)
    );
    let mut seen = 0usize;
    while seen < BATCHES {
        let message = tokio::time::timeout(TIMEOUT, stream.next())
            .await
            .expect("ack within the timeout")
            .expect("open")
            .expect("read");
        let WsMessage::Text(text) = message else {
            continue;
        };
        let ack: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(ack["id"][0], json!(seen), "acks in order");
        assert_eq!(
            (ack["ok"].clone(), ack["accepted"].clone()),
            (json!(true), json!(1))
        );
        seen += 1;
    }
    let _sink = tokio::time::timeout(TIMEOUT, sender)
        .await
        .expect("sender done")
        .expect("sender ok");
    assert_eq!(
        server.metric("statecast_events_total").await,
        BATCHES as u64
    );
}

#[tokio::test]
async fn ndjson_post_events() {
    let server = InProcess::start(&[]);
    let body = b"{\"host\":\"nd\",\"service\":\"one\",\"state\":\"ok\"}\n\n{\"host\":\"nd\",\"service\":\"two\",\"metric\":2}\n";
    let response = http_request(
        server.http,
        "POST",
        "/events",
        &[("Content-Type", "application/x-ndjson")],
        body,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json(), json!({"ok": true, "accepted": 2}));
    // All or nothing: the bad second line refuses the first too.
    let bad = b"{\"host\":\"nd\",\"service\":\"three\"}\n{\"host\":\n";
    let response = http_request(server.http, "POST", "/events", &[], bad).await;
    assert_eq!(response.status, 400, "{}", response.body);
    assert!(response.body.contains("index 1"), "{}", response.body);
    let state = http_request(server.http, "GET", "/api/state", &[], b"").await;
    let body = state.body;
    assert!(
        body.contains("\"two\"") && !body.contains("\"three\""),
        "{body}"
    );
    // A foreign Origin is refused, as on /api/event.
    let response = http_request(
        server.http,
        "POST",
        "/events",
        &[("Origin", "http://evil.example")],
        b"{\"host\":\"nd\"}\n",
    )
    .await;
    assert_eq!(response.status, 403, "{}", response.body);
}

/// A message over the body limit closes with 1009, after the acks of the batches before it.
#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let server = InProcess::start(&["--max-body-bytes", "2KiB"]);
    let mut ws = connect_events(&server, "", &[]).await.expect("upgrade");
    send_text(&mut ws, json!({"id": 1, "events": []}).to_string()).await;
    let big = json!([{"host": "h", "service": "s", "description": "x".repeat(4096)}]);
    let _ = ws.send(WsMessage::Text(big.to_string().into())).await;
    assert_eq!(
        next_ack(&mut ws).await,
        json!({"id": 1, "ok": true, "accepted": 0})
    );
    let close = tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("close within the timeout");
    match close {
        Some(Ok(WsMessage::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
}
