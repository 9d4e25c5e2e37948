//! JSON POST /api/event: Riemann event maps as Riemann's HTTP forwarders post them; a request is
//! applied whole or not at all. The server runs in process.

use crate::common::*;
use serde_json::json;

/// Now, to the second, plus 500 ms, as ISO-8601 UTC with milliseconds.
fn recent_time_with_millis() -> String {
    let now = chrono::Utc::now().timestamp();
    chrono::DateTime::from_timestamp(now, 500_000_000)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test]
async fn a_single_object_is_accepted_and_becomes_a_change_with_every_field() {
    let server = InProcess::start(&[]);
    let (mut ws, _) = WsClient::connect_with_snapshot(&server).await;

    // A recent time: events older than their TTL would expire (a change of their own).
    let time = recent_time_with_millis();
    let body = json!({
        "host": "web1", "service": "api", "state": "critical", "description": "<b>down</b>",
        "metric": 0.25, "time": time, "ttl": 60, "tags": ["prod", "eu"],
        "org": "Production", "rack": 7, "owner": null
    });
    let response = post_json(&server, &body.to_string()).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json(), json!({"ok": true, "accepted": 1}));

    let change = ws.next_change().await;
    assert_eq!(change["seq"], 1);
    assert_eq!(change["previous_state"], "ok");
    assert_eq!(
        change["event"],
        json!({
            "host": "web1", "service": "api", "state": "critical", "description": "<b>down</b>",
            "metric": 0.25, "time": time, "ttl": 60.0,
            "tags": ["prod", "eu"], "org": "Production", "rack": "7"
        })
    );
}

#[tokio::test]
async fn unix_seconds_time_is_shown_as_iso_with_milliseconds() {
    let server = InProcess::start(&[]);
    let (mut ws, _) = WsClient::connect_with_snapshot(&server).await;
    let now = chrono::Utc::now().timestamp();
    let body = json!({"host": "h", "service": "t", "state": "warning", "time": now as f64 + 0.5});
    let response = post_json(&server, &body.to_string()).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let change = ws.next_change().await;
    let expected = chrono::DateTime::from_timestamp(now, 500_000_000)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert!(expected.ends_with(".500Z"), "{expected}");
    assert_eq!(change["event"]["time"], expected);
}

#[tokio::test]
async fn an_array_of_three_is_accepted_as_three() {
    let server = InProcess::start(&[]);
    let (mut ws, _) = WsClient::connect_with_snapshot(&server).await;

    let response = post_json(
        &server,
        r#"[{"host":"h","service":"a","state":"critical"},
            {"host":"h","service":"b","state":"warning"},
            {"host":"h","service":"c","state":"critical"}]"#,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json(), json!({"ok": true, "accepted": 3}));
    for (seq, service) in [(1, "a"), (2, "b"), (3, "c")] {
        let change = ws.next_change().await;
        assert_eq!(change["seq"], seq);
        assert_eq!(change["event"]["service"], service);
    }
}

#[tokio::test]
async fn an_array_with_an_invalid_second_element_is_rejected_whole_and_applies_nothing() {
    let server = InProcess::start(&[]);
    let (mut ws, _) = WsClient::connect_with_snapshot(&server).await;

    let response = post_json(
        &server,
        r#"[{"host":"h","service":"first","state":"critical"},
            {"host":"h","service":"second","state":"critical","metric":"high"},
            {"host":"h","service":"third","state":"critical"}]"#,
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.body);
    let body = response.json();
    assert_eq!(body["ok"], false, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("index 1"),
        "error names the index: {error:?}"
    );

    // Nothing applied: the next change is the marker's, with seq 1, and the index lacks them.
    let response = post_json(
        &server,
        r#"{"host":"h","service":"marker","state":"critical"}"#,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let marker = ws.next_change_is("marker").await;
    assert_eq!(marker["seq"], 1);
    let (_late, snapshot) = WsClient::connect_with_snapshot(&server).await;
    assert_eq!(snapshot_services(&snapshot), ["marker"]);
}

#[tokio::test]
async fn a_body_that_is_not_json_gets_400() {
    let server = InProcess::start(&[]);
    let response = post_json(&server, "host=web1&state=critical").await;
    assert_eq!(response.status, 400, "{}", response.body);
    let body = response.json();
    assert_eq!(body["ok"], false);
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );

    let response = post_json(&server, "42").await;
    assert_eq!(response.status, 400, "{}", response.body);
}

#[tokio::test]
async fn a_body_over_max_body_bytes_gets_413() {
    let server = InProcess::start(&["--max-body-bytes", "1024"]);
    let description = "x".repeat(3000);
    let body = format!(
        r#"{{"host":"h","service":"big","state":"critical","description":"{description}"}}"#
    );
    let response = post_json(&server, &body).await;
    assert_eq!(response.status, 413, "{}", response.body);

    // Under the limit is fine.
    let response = post_json(&server, r#"{"host":"h","service":"small","state":"ok"}"#).await;
    assert_eq!(response.status, 200, "{}", response.body);
}

#[tokio::test]
async fn the_body_is_accepted_whatever_its_content_type() {
    let server = InProcess::start(&[]);
    let (mut ws, _) = WsClient::connect_with_snapshot(&server).await;
    let body = br#"{"host":"h","service":"plain","state":"critical"}"#;
    let response = http_request(
        server.http,
        "POST",
        "/api/event",
        &[("Content-Type", "text/plain")],
        body,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json(), json!({"ok": true, "accepted": 1}));
    ws.next_change_is("plain").await;

    let body = br#"{"host":"h","service":"none","state":"critical"}"#;
    let response = http_request(server.http, "POST", "/api/event", &[], body).await;
    assert_eq!(response.status, 200, "{}", response.body);
    ws.next_change_is("none").await;
}

#[tokio::test]
async fn a_body_over_the_default_4_mib_limit_gets_413() {
    let server = InProcess::start(&[]);
    let description = "x".repeat(5 * 1024 * 1024);
    let body = format!(
        r#"{{"host":"h","service":"big","state":"critical","description":"{description}"}}"#
    );
    let response = post_json(&server, &body).await;
    assert_eq!(response.status, 413, "{}", response.body);
    assert_eq!(response.json()["ok"], false);
}
