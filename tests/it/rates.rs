//! `GET /api/rates`: the recent stats samples the dashboard's chart starts from after a reload,
//! and the plain `GET /ws` the page uses to learn why its websocket is refused.

use std::time::Duration;

use crate::common::*;

/// Polls `/api/rates` until it holds at least `n` samples (bounded by TIMEOUT).
async fn rates_with(server: &Addrs, n: usize, path: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let res = http_request(server.http, "GET", path, &[], b"").await;
        assert_eq!(res.status, 200, "{}", res.body);
        let body = res.json();
        if body["samples"].as_array().map_or(0, Vec::len) >= n {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {n} samples: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rates_answer_the_recent_samples_oldest_first() {
    let server = InProcess::start(&["--stats-interval", "0.1"]);
    let before = rates_with(&server, 1, "/api/rates").await;
    assert_eq!(before["interval_ms"], 100);
    let res = post_json(
        &server,
        r#"[{"host":"a","service":"b","state":"critical"},{"host":"a","service":"c","state":"ok"}]"#,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);

    // A later sample counts the two events and the one change.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let samples = loop {
        let body = rates_with(&server, 2, "/api/rates").await;
        let samples = body["samples"].as_array().cloned().unwrap_or_default();
        if samples.last().is_some_and(|s| s[1] == 2) {
            break samples;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events never counted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let last = samples.last().cloned().unwrap_or_default();
    assert_eq!(last[2], 1, "one change (the critical event): {last}");
    let times: Vec<u64> = samples.iter().filter_map(|s| s[0].as_u64()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {times:?}"
    );
    assert!(samples.len() <= 3600);
}

#[tokio::test]
async fn rates_follow_the_dashboard_token() {
    let server = InProcess::start(&[
        "--stats-interval",
        "0.1",
        "--dashboard-token",
        "view-secret",
    ]);
    let none = http_request(server.http, "GET", "/api/rates", &[], b"").await;
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["ok"], false);
    rates_with(&server, 1, "/api/rates?token=view-secret").await;
}

#[tokio::test]
async fn a_plain_get_of_ws_says_why_an_upgrade_would_be_refused() {
    let server = InProcess::start(&["--dashboard-token", "view-secret"]);
    let no_token = http_request(server.http, "GET", "/ws", &[], b"").await;
    assert_eq!(no_token.status, 401, "{}", no_token.body);
    assert!(no_token.json()["error"]
        .as_str()
        .unwrap_or("")
        .contains("token"));
    let bad_query = http_request(
        server.http,
        "GET",
        "/ws?token=view-secret&query=%28%28",
        &[],
        b"",
    )
    .await;
    assert_eq!(bad_query.status, 400, "{}", bad_query.body);
    // Admitted, but not an upgrade: the upgrade's own refusal, never a session.
    let admitted = http_request(server.http, "GET", "/ws?token=view-secret", &[], b"").await;
    assert!(
        admitted.status >= 400 && ![401, 403, 503].contains(&admitted.status),
        "{} {}",
        admitted.status,
        admitted.body
    );
}
