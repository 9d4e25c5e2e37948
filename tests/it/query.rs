//! Riemann's query language where it is used: Riemann TCP queries (with Debian's
//! riemann-client), `/ws?query=` and subscribe switching, `/api/state`, the Riemann-compatible
//! `/index` websocket and server-sent events, and TTL expiry seen from a dashboard. The server runs
//! in process, except where a test restarts it on the same data (the binary, SIGTERM).

use crate::common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn send_json(client: &mut WsClient, value: Value) {
    use futures_util::SinkExt;
    client
        .ws
        .send(tokio_tungstenite::tungstenite::Message::Text(
            value.to_string().into(),
        ))
        .await
        .expect("send to websocket");
}

async fn riemann_client_query(server: &Addrs, query: &str) -> std::process::Output {
    let child = tokio::process::Command::new("/usr/bin/riemann-client")
        .args(["query", query, "127.0.0.1", &server.tcp.port().to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run riemann-client (install riemann-c-client; scripts/test does)");
    tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("riemann-client query timed out")
        .expect("wait for riemann-client")
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn seed(server: &Addrs) {
    let mut tcp = RiemannTcp::connect(server).await;
    let mut web = event("web1", "cpu", "critical");
    web.metric_d = Some(0.97);
    web.attributes.push(attribute("org", "Production"));
    let reply = tcp
        .request(&events_msg(vec![
            web,
            event("web2", "cpu", "ok"),
            event("db1", "disk /", "warning"),
        ]))
        .await;
    assert_eq!(reply.ok, Some(true), "{reply:?}");
}

#[tokio::test]
async fn riemann_client_query_prints_matches_and_fails_on_a_parse_error() {
    let server = InProcess::start(&[]);
    seed(&server).await;

    let out = riemann_client_query(&server, r#"state = "critical""#).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}: {stdout}", out.status);
    assert!(stdout.contains("host = web1"), "{stdout}");
    assert!(stdout.contains("org = Production"), "{stdout}");
    assert!(!stdout.contains("web2"), "only matches: {stdout}");

    let none = riemann_client_query(&server, r#"host = "nobody""#).await;
    assert!(none.status.success());
    assert!(!String::from_utf8_lossy(&none.stdout).contains("host ="));

    let bad = riemann_client_query(&server, "state = ").await;
    assert!(!bad.status.success(), "a parse error must fail the client");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("parse error"), "{stderr}");
}

#[tokio::test]
async fn tcp_query_returns_riemann_encoding_and_a_bad_query_keeps_the_connection() {
    let server = InProcess::start(&[]);
    seed(&server).await;
    let mut tcp = RiemannTcp::connect(&server).await;

    let bad = tcp.request(&query_msg("metric > ")).await;
    assert_eq!(bad.ok, Some(false));
    let error = bad.error.unwrap_or_default();
    assert!(
        error.starts_with("parse error: expected a number after '>' at column"),
        "{error}"
    );

    let good = tcp
        .request(&query_msg("metric >= 0.9 or service =~ \"disk%\""))
        .await;
    assert_eq!(good.ok, Some(true));
    let mut hosts: Vec<_> = good.events.iter().filter_map(|e| e.host.clone()).collect();
    hosts.sort();
    assert_eq!(hosts, ["db1", "web1"]);
    let web = good
        .events
        .iter()
        .find(|e| e.host.as_deref() == Some("web1"))
        .unwrap();
    assert_eq!(web.metric_d, Some(0.97));
    assert!(web.metric_f.is_some(), "metric_f is always set");
    assert!(web.time.is_some() && web.time_micros.is_some());

    // Events and a query in one Msg: the answer includes the events just sent.
    let mut both = events_msg(vec![event("new", "svc", "critical")]);
    both.query = query_msg(r#"host = "new""#).query;
    let reply = tcp.request(&both).await;
    assert_eq!(reply.ok, Some(true));
    assert_eq!(reply.events.len(), 1);
}

#[tokio::test]
async fn ws_query_filters_snapshot_and_changes_including_leaving_the_filter() {
    let server = InProcess::start(&[]);
    seed(&server).await;
    let mut dash = WsClient::connect_path(
        &server,
        &format!("/ws?query={}", url_encode(r#"state = "critical""#)),
    )
    .await;
    let snapshot = dash.next_json().await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot_services(&snapshot), ["cpu"]);
    assert_eq!(snapshot["events"][0]["host"], "web1");

    let mut tcp = RiemannTcp::connect(&server).await;
    // Not matching before or after: not delivered. Then web1 leaves the filter: delivered.
    tcp.request(&events_msg(vec![event("db1", "disk /", "ok")]))
        .await;
    tcp.request(&events_msg(vec![event("web1", "cpu", "ok")]))
        .await;
    let left = dash.next_change().await;
    assert_eq!(left["event"]["host"], "web1");
    assert_eq!(left["previous_state"], "critical");
    assert_eq!(left["event"]["state"], "ok");
}

#[tokio::test]
async fn ws_subscribe_switches_the_filter_and_a_bad_query_keeps_the_old_one() {
    let server = InProcess::start(&[]);
    seed(&server).await;
    let (mut dash, all) = WsClient::connect_with_snapshot(&server).await;
    assert_eq!(snapshot_services(&all), ["cpu", "cpu", "disk /"]);

    send_json(
        &mut dash,
        serde_json::json!({"type": "subscribe", "query": "service = \"disk /\""}),
    )
    .await;
    let narrowed = dash.next_json().await;
    assert_eq!(narrowed["type"], "snapshot", "{narrowed}");
    assert_eq!(snapshot_services(&narrowed), ["disk /"]);

    send_json(
        &mut dash,
        serde_json::json!({"type": "subscribe", "query": "service = "}),
    )
    .await;
    let error = dash.next_json().await;
    assert_eq!(error["type"], "error");
    assert!(
        error["error"].as_str().unwrap().contains("parse error"),
        "{error}"
    );

    // The old subscription stays: a cpu change is not delivered, the disk change is.
    let mut tcp = RiemannTcp::connect(&server).await;
    tcp.request(&events_msg(vec![event("web2", "cpu", "critical")]))
        .await;
    tcp.request(&events_msg(vec![event("db1", "disk /", "critical")]))
        .await;
    dash.next_change_is("disk /").await;
}

#[tokio::test]
async fn api_state_returns_matching_events_and_rejects_a_bad_query() {
    let server = InProcess::start(&[]);
    seed(&server).await;
    let all = http_request(server.http, "GET", "/api/state", &[], b"").await;
    assert_eq!(all.status, 200);
    assert_eq!(all.json().as_array().unwrap().len(), 3);
    let path = format!("/api/state?query={}", url_encode(r#"org = "Production""#));
    let org = http_request(server.http, "GET", &path, &[], b"").await;
    let org = org.json();
    assert_eq!(org.as_array().unwrap().len(), 1);
    assert_eq!(org[0]["host"], "web1");
    let bad = http_request(server.http, "GET", "/api/state?query=%28", &[], b"").await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"]
        .as_str()
        .unwrap()
        .contains("parse error"));
}

#[tokio::test]
async fn riemann_index_websocket_streams_snapshot_then_every_matching_update() {
    let server = InProcess::start(&[]);
    seed(&server).await;
    let query = url_encode(r#"host =~ "web%""#);
    let mut once = WsClient::connect_path(&server, &format!("/index?query={query}")).await;
    let mut hosts = Vec::new();
    while let WsEvent::Json(e) = once.next_event().await {
        hosts.push(e["host"].as_str().unwrap().to_owned());
    }
    hosts.sort();
    assert_eq!(hosts, ["web1", "web2"], "snapshot only, then closed");

    let mut live =
        WsClient::connect_path(&server, &format!("/index?subscribe=true&query={query}")).await;
    for _ in 0..2 {
        live.next_json_any().await;
    }
    let mut tcp = RiemannTcp::connect(&server).await;
    // Not a change (ok → ok) but an index update: Riemann streams those too.
    let mut update = event("web2", "cpu", "ok");
    update.metric_sint64 = Some(5);
    tcp.request(&events_msg(vec![event("db1", "x", "critical"), update]))
        .await;
    let got = live.next_json_any().await;
    assert_eq!(got["host"], "web2");
    assert_eq!(got["metric"], 5);
}

#[tokio::test]
async fn riemann_index_server_sent_events() {
    let server = InProcess::start(&[]);
    seed(&server).await;
    let mut stream = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let path = format!("/index?query={}", url_encode(r#"state = "warning""#));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.http
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    let mut data = Vec::new();
    let mut content_type = String::new();
    let mut tcp = RiemannTcp::connect(&server).await;
    let mut sent_live = false;
    tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.to_ascii_lowercase().starts_with("content-type:") {
                content_type = line.clone();
            }
            if let Some(json) = line.strip_prefix("data: ") {
                data.push(serde_json::from_str::<Value>(json).unwrap());
                if !sent_live {
                    sent_live = true;
                    tcp.request(&events_msg(vec![event("web9", "mem", "warning")]))
                        .await;
                }
                if data.len() == 2 {
                    break;
                }
            }
        }
    })
    .await
    .expect("two server-sent events");
    assert!(content_type.contains("text/event-stream"), "{content_type}");
    assert_eq!(data[0]["host"], "db1", "snapshot first");
    assert_eq!(data[1]["host"], "web9", "then live");
}

#[tokio::test]
async fn an_event_past_its_ttl_becomes_an_expired_change() {
    let server = InProcess::start(&["--reap-interval", "0.05"]);
    let (mut dash, _) = WsClient::connect_with_snapshot(&server).await;
    let status = riemann_client_send(
        &server,
        &["-h", "web1", "-S", "cpu", "-s", "critical", "-L", "0.3"],
    )
    .await;
    assert!(status.success());
    let critical = dash.next_change().await;
    assert_eq!(critical["event"]["state"], "critical");
    let expired = dash.next_change().await;
    assert_eq!(expired["event"]["state"], "expired", "{expired}");
    assert_eq!(expired["previous_state"], "critical");
    assert_eq!(expired["seq"], critical["seq"].as_u64().unwrap() + 1);
    // It stays visible as expired, and reporting again is a change from "expired".
    let (_, snapshot) = WsClient::connect_with_snapshot(&server).await;
    assert_eq!(snapshot["events"][0]["state"], "expired");
    riemann_client_send(&server, &["-h", "web1", "-S", "cpu", "-s", "ok"]).await;
    let back = dash.next_change().await;
    assert_eq!(
        (
            back["previous_state"].as_str(),
            back["event"]["state"].as_str()
        ),
        (Some("expired"), Some("ok"))
    );
}

/// `--expired-keep`: an expired key is shown as expired for that long, then removed — from live
/// dashboards (a change marked `removed`), from snapshots, from Riemann queries, from the stored
/// index across a restart — while history keeps the removal.
#[tokio::test]
async fn an_expired_key_is_removed_after_the_keep_time_everywhere() {
    let dir = fresh_dir("expired-keep");
    let flags = ["--reap-interval", "0.05", "--expired-keep", "0.3"];
    let mut server = start_server_in(&dir, &flags);
    let (mut dash, _) = WsClient::connect_with_snapshot(&server).await;
    let short = ["-h", "web1", "-S", "cpu", "-s", "critical", "-L", "0.2"];
    assert!(riemann_client_send(&server, &short).await.success());
    let long = ["-h", "web2", "-S", "cpu", "-s", "warning", "-L", "600"];
    assert!(riemann_client_send(&server, &long).await.success());

    let mut seen = Vec::new();
    while !seen.iter().any(|c: &Value| c["removed"] == true) {
        seen.push(dash.next_change().await);
    }
    let summary: Vec<(String, String, bool)> = seen
        .iter()
        .map(|c| {
            (
                c["event"]["host"].as_str().unwrap_or_default().to_owned(),
                c["event"]["state"].as_str().unwrap_or_default().to_owned(),
                c["removed"] == true,
            )
        })
        .collect();
    let web1: Vec<_> = summary.iter().filter(|(h, ..)| h == "web1").collect();
    assert_eq!(
        web1,
        [
            &("web1".into(), "critical".into(), false),
            &("web1".into(), "expired".into(), false),
            &("web1".into(), "expired".into(), true),
        ],
        "{seen:?}"
    );
    let removal = seen.last().unwrap();
    assert_eq!(removal["previous_state"], "expired");
    assert_eq!(
        removal["seq"],
        seen[seen.len() - 2]["seq"].as_u64().unwrap() + 1
    );

    let (_, snapshot) = WsClient::connect_with_snapshot(&server).await;
    assert_eq!(snapshot_services(&snapshot).len(), 1, "{snapshot}");
    assert_eq!(snapshot["events"][0]["host"], "web2");
    let queried = riemann_client_query(&server, "true").await;
    let listed = String::from_utf8_lossy(&queried.stdout);
    assert!(
        listed.contains("web2") && !listed.contains("web1"),
        "{listed}"
    );
    let history = http_request(server.http, "GET", "/api/history?since=0", &[], b"").await;
    let history = history.json();
    let last = history["changes"]
        .as_array()
        .and_then(|h| h.last())
        .cloned();
    assert_eq!(
        last.as_ref().map(|c| c["removed"].clone()),
        Some(Value::Bool(true))
    );

    assert!(server.terminate().success());
    let restarted = start_server_in(&dir, &flags);
    let (_, snapshot) = WsClient::connect_with_snapshot(&restarted).await;
    assert_eq!(
        snapshot_services(&snapshot).len(),
        1,
        "after a restart: {snapshot}"
    );
    assert_eq!(snapshot["events"][0]["host"], "web2");
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}
