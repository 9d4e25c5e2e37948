//! Metric series and `GET /api/series`: exact bucket values from events with explicit times, the
//! step and tier choices, bad parameters and caps (400 with a sentence), NaN metrics not stored,
//! closed buckets surviving `kill -9`, and two cluster nodes answering the same.

use serde_json::{json, Value};

use crate::common::*;

/// A minute-aligned unix time (seconds) ten minutes ago: inside every tier's retention, and its
/// buckets long closed by the clock.
pub(crate) fn base_secs() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now / 60 * 60 - 600
}

/// Percent-encodes a query parameter's value.
pub(crate) fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) async fn series(server: &Addrs, params: &str) -> (u16, Value) {
    let response = http_request(
        server.http,
        "GET",
        &format!("/api/series?{params}"),
        &[],
        b"",
    )
    .await;
    let body = serde_json::from_str(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", response.body));
    (response.status, body)
}

/// POSTs `(host, service, seconds, metric)` events and waits until the series thread took them.
pub(crate) async fn post_points(server: &Addrs, points: &[(&str, &str, i64, f64)]) {
    let events: Vec<Value> = points
        .iter()
        .map(|(host, service, time, metric)| {
            json!({"host": host, "service": service, "time": time, "metric": metric, "ttl": 3600})
        })
        .collect();
    post_events_with_points(server, events).await;
}

/// POSTs events, each with a metric, and waits until the series thread took their points.
async fn post_events_with_points(server: &Addrs, events: Vec<Value>) {
    let before = server.metric("statecast_series_points_total").await;
    let n = events.len() as u64;
    let response = post_json(server, &Value::Array(events).to_string()).await;
    assert_eq!(response.status, 200, "{}", response.body);
    server
        .wait_for_metric("statecast_series_points_total", before + n)
        .await;
}

/// The (host, service) of each series of an answer to `query`, in order.
async fn series_matching(server: &Addrs, query: &str) -> Vec<(String, String)> {
    let (status, answer) = series(server, &format!("query={}", encode(query))).await;
    assert_eq!(status, 200, "{query}: {answer}");
    answer["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let field = |name: &str| s[name].as_str().unwrap_or_default().to_owned();
            (field("host"), field("service"))
        })
        .collect()
}

fn points(answer: &Value, host: &str) -> Vec<Vec<f64>> {
    let item = answer["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["host"] == host)
        .unwrap_or_else(|| panic!("no series of {host} in {answer}"));
    item_points(item)
}

/// One series' `points`, as numbers.
pub(crate) fn item_points(item: &Value) -> Vec<Vec<f64>> {
    item["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn buckets_hold_the_exact_min_max_avg_last_and_count_of_their_points() {
    let server = InProcess::start(&[]);
    let base = base_secs();
    post_points(
        &server,
        &[
            ("web1", "disk", base + 1, 1.0),
            ("web1", "disk", base + 5, 3.0),
            // Earlier event time, applied later: in the bucket, not its `last`.
            ("web1", "disk", base + 3, 5.0),
            ("web1", "disk", base + 12, 10.0),
            ("web1", "disk", base + 15, -2.0),
            ("web2", "disk", base + 30, 7.5),
        ],
    )
    .await;
    let (from, to) = (base * 1000, (base + 59) * 1000);

    // One minute: the 10 s tier.
    let (status, answer) = series(&server, &format!("from={from}&to={to}")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["from"].as_i64(), answer["to"].as_i64()),
        (Some(from), Some(to))
    );
    assert_eq!(answer["step"], 10_000);
    assert_eq!(
        answer["series"][0]["host"], "web1",
        "sorted by host, service"
    );
    assert_eq!(answer["series"][0]["service"], "disk");
    assert_eq!(
        points(&answer, "web1"),
        vec![
            vec![from as f64, 1.0, 5.0, 3.0, 3.0, 3.0],
            vec![(from + 10_000) as f64, -2.0, 10.0, 4.0, -2.0, 2.0],
        ]
    );
    assert_eq!(
        points(&answer, "web2"),
        vec![vec![(from + 30_000) as f64, 7.5, 7.5, 7.5, 7.5, 1.0]]
    );

    // A step of a minute: the 1 min tier, one bucket of all five.
    let query = encode(r#"host = "web1""#);
    let (status, answer) = series(
        &server,
        &format!("query={query}&from={from}&to={to}&step=60000"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["step"], 60_000);
    assert_eq!(answer["series"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(
        points(&answer, "web1"),
        vec![vec![from as f64, -2.0, 10.0, 17.0 / 5.0, -2.0, 5.0]]
    );

    // A step finer than the finest tier is raised to it; a 20 s step folds two 10 s buckets.
    let (_, answer) = series(&server, &format!("from={from}&to={to}&step=1")).await;
    assert_eq!(answer["step"], 10_000);
    let (_, answer) = series(
        &server,
        &format!("query={query}&from={from}&to={to}&step=20000"),
    )
    .await;
    assert_eq!(answer["step"], 20_000);
    assert_eq!(
        points(&answer, "web1"),
        vec![vec![from as f64, -2.0, 10.0, 17.0 / 5.0, -2.0, 5.0]]
    );
}

#[tokio::test]
async fn the_open_bucket_is_in_the_answer_and_nan_and_infinite_metrics_are_counted_not_stored() {
    let server = InProcess::start(&[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    post_points(&server, &[("live", "cpu", now, 0.25)]).await;
    let (status, answer) = series(&server, "").await;
    assert_eq!(status, 200, "{answer}");
    let newest = points(&answer, "live");
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0][4], 0.25, "the current bucket's last value");

    // NaN and infinities have no JSON form: sent as Riemann protobuf, as doubles and floats.
    let mut tcp = RiemannTcp::connect(&server).await;
    let mut nan = event("live", "nan", "ok");
    nan.metric_d = Some(f64::NAN);
    let mut inf = event("live", "inf", "ok");
    inf.metric_d = Some(f64::INFINITY);
    let mut minus_inf = event("live", "minus-inf", "ok");
    minus_inf.metric_f = Some(f32::NEG_INFINITY);
    let mut events = vec![nan, inf, minus_inf];
    for e in &mut events {
        e.time = Some(now);
    }
    let reply = tcp.request(&events_msg(events)).await;
    assert_eq!(reply.ok, Some(true), "the events themselves are accepted");
    server
        .wait_for_metric(
            r#"statecast_series_points_dropped_total{reason="not-finite"}"#,
            3,
        )
        .await;
    let query = r#"service = "nan" or service = "inf" or service = "minus-inf""#;
    let (_, answer) = series(&server, &format!("query={}", encode(query))).await;
    assert_eq!(answer["series"], json!([]), "{answer}");
    // The events themselves are in the index.
    let state = http_request(
        server.http,
        "GET",
        &format!("/api/state?query={}", encode(query)),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        state.json().as_array().map(Vec::len),
        Some(3),
        "{}",
        state.body
    );
}

#[tokio::test]
async fn bad_parameters_and_answers_past_the_caps_get_400_with_a_sentence() {
    let server = InProcess::start(&[]);
    let base = base_secs();
    post_points(&server, &[("web1", "disk", base, 1.0)]).await;
    for (params, says) in [
        (
            "from=yesterday",
            "`from` must be a whole number of milliseconds",
        ),
        ("to=-1", "`to` of -1 is out of range"),
        ("from=2000&to=1000", "`from` (2000) is after `to` (1000)"),
        ("from=0&to=253402300799999", "longer than the 400 days"),
        ("step=0", "`step` of 0 ms is out of range"),
        ("step=1e3", "`step` must be a whole number"),
        ("query=host%20%3D", "parse error"),
    ] {
        let (status, answer) = series(&server, params).await;
        assert_eq!(status, 400, "{params}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{params}: {error}");
    }
    // The query module's regex budget holds here too: patterns per query, and their compiled
    // size together (each of these is under the per-pattern limit; ten are past the budget).
    let patterns: Vec<String> = (0..65).map(|i| format!("host =~ \"a{i}%\"")).collect();
    let heavy = [r#"service ~= "\\w{20}""#; 10];
    for (query, says) in [
        (patterns.join(" or "), "more than 64"),
        (heavy.join(" or "), "compile budget"),
    ] {
        let (status, answer) = series(&server, &format!("query={}", encode(&query))).await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{answer}");
    }
}

#[tokio::test]
async fn more_series_than_an_answer_holds_get_400_and_a_query_narrows_them() {
    let server = InProcess::start(&[]);
    let base = base_secs();
    let hosts: Vec<String> = (0..1001).map(|i| format!("h{i:04}")).collect();
    let points: Vec<(&str, &str, i64, f64)> = hosts
        .iter()
        .map(|h| (h.as_str(), "cpu", base, 1.0))
        .collect();
    post_points(&server, &points).await;
    let (status, answer) = series(&server, "").await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("the query matches 1001 series, more than the 1000"),
        "{answer}"
    );
    let (status, answer) = series(
        &server,
        &format!(
            "query={}&from={}",
            encode(r#"host =~ "h000%""#),
            base * 1000
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["series"].as_array().unwrap().len(), 10);
    // 1,000 series of an hour at 10 s steps is 361,000 points: past the point cap. Without a
    // step, a coarser tier answers.
    let thousand = encode(r#"host =~ "h0%""#);
    let (status, answer) = series(&server, &format!("query={thousand}&step=10000")).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("is up to 361000 points, more than the 100000 one answer holds"),
        "{answer}"
    );
    let (status, answer) = series(&server, &format!("query={thousand}")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["step"], 60_000);
}

#[tokio::test]
async fn a_query_on_state_tags_or_metric_matches_each_keys_current_event() {
    let server = InProcess::start(&[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ev = |host: &str, service: &str, state: &str, metric: f64, tags: &[&str]| {
        json!({"host": host, "service": service, "state": state, "metric": metric,
               "tags": tags, "time": now, "ttl": 3600})
    };
    post_events_with_points(
        &server,
        vec![
            ev("web1", "disk-root", "critical", 95.0, &["prod"]),
            ev("web2", "disk-root", "ok", 10.0, &[]),
            ev("web1", "cpu", "critical", 99.0, &["prod"]),
            ev("web3", "disk-home", "critical", 97.0, &[]),
        ],
    )
    .await;
    let pair = |host: &str, service: &str| (host.to_owned(), service.to_owned());
    let critical_disks = r#"service =~ "disk%" and state = "critical""#;
    assert_eq!(
        series_matching(&server, critical_disks).await,
        vec![pair("web1", "disk-root"), pair("web3", "disk-home")]
    );
    assert_eq!(
        series_matching(&server, r#"tagged "prod" and metric > 96"#).await,
        vec![pair("web1", "cpu")]
    );
    // The key's current event answers: web1's disk recovers.
    post_events_with_points(&server, vec![ev("web1", "disk-root", "ok", 40.0, &[])]).await;
    assert_eq!(
        series_matching(&server, critical_disks).await,
        vec![pair("web3", "disk-home")]
    );
    // A key no longer in the index keeps its series, matched by its host and service alone.
    let clear = json!({"host": "web3", "service": "disk-home", "by": "eve"}).to_string();
    let response = http_request(
        server.http,
        "POST",
        "/api/clear",
        &[("Content-Type", "application/json")],
        clear.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(series_matching(&server, critical_disks).await, vec![]);
    assert_eq!(
        series_matching(&server, r#"service =~ "disk%""#).await,
        vec![
            pair("web1", "disk-root"),
            pair("web2", "disk-root"),
            pair("web3", "disk-home")
        ]
    );
    assert_eq!(
        series_matching(&server, r#"service = "disk-home" and state = nil"#).await,
        vec![pair("web3", "disk-home")]
    );
}

/// One key's flood: points at a million a minute of event time — 250,000 within 15 s.
const FLOOD_POINTS: usize = 250_000;
const FLOOD_SECONDS: i64 = 15;
/// Events per Riemann message of the flood.
const FLOOD_BATCH: usize = 10_000;

#[tokio::test]
async fn a_key_with_a_million_points_a_minute_costs_one_bucket_per_tier_not_per_point() {
    let server = InProcess::start(&[]);
    let base = base_secs();
    let mut tcp = RiemannTcp::connect(&server).await;
    let started = std::time::Instant::now();
    let spacing = FLOOD_SECONDS * 1_000_000 / FLOOD_POINTS as i64;
    for batch in 0..FLOOD_POINTS / FLOOD_BATCH {
        let events = (0..FLOOD_BATCH)
            .map(|i| {
                let n = batch * FLOOD_BATCH + i;
                let mut e = event("hot", "requests", "ok");
                e.time_micros = Some(base * 1_000_000 + n as i64 * spacing);
                e.metric_sint64 = Some((n % 1000) as i64);
                e
            })
            .collect();
        let reply = tcp.request(&events_msg(events)).await;
        assert_eq!(reply.ok, Some(true), "batch {batch}: {reply:?}");
    }
    let sent = started.elapsed();
    // Every point is in the series or counted as dropped for a full queue (the series thread
    // behind): never lost without a count.
    let taken = loop {
        let taken = server.metric("statecast_series_points_total").await;
        let dropped = server
            .metric(r#"statecast_series_points_dropped_total{reason="queue-full"}"#)
            .await;
        if taken + dropped == FLOOD_POINTS as u64 {
            break taken;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "{taken} taken + {dropped} dropped of {FLOOD_POINTS}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    eprintln!(
        "MEASURE one key's flood: {FLOOD_POINTS} points sent in {sent:?}, {taken} in the series"
    );
    assert!(taken > 0);
    assert_eq!(server.metric("statecast_series_keys").await, 1);
    let from = base * 1000;
    let to = from + 59_999;
    // The minute: one bucket holding every point taken.
    let (status, answer) = series(&server, &format!("from={from}&to={to}&step=60000")).await;
    assert_eq!(status, 200, "{answer}");
    let minute = points(&answer, "hot");
    assert_eq!(minute.len(), 1, "{answer}");
    assert_eq!(minute[0][5], taken as f64, "count");
    assert_eq!((minute[0][1], minute[0][2]), (0.0, 999.0), "min, max");
    // Two 10 s buckets hold the same points between them.
    let (_, answer) = series(&server, &format!("from={from}&to={to}")).await;
    let fine = points(&answer, "hot");
    assert_eq!(fine.len(), 2, "{answer}");
    assert_eq!(fine.iter().map(|p| p[5]).sum::<f64>(), taken as f64);
    // The disk sees buckets, not points: a closed bucket that keeps getting points is written
    // again at most once a second (each write whole), whatever their number.
    server
        .wait_for_metric("statecast_series_buckets_written_total", 3)
        .await;
    let written = server
        .metric("statecast_series_buckets_written_total")
        .await;
    assert!(
        written <= 1_000,
        "{written} bucket writes for {taken} points"
    );
    eprintln!("MEASURE one key's flood: {written} bucket writes");
}

#[tokio::test]
async fn the_dashboard_token_guards_series_like_history() {
    let server = InProcess::start(&["--dashboard-token", "s3cret"]);
    let response = http_request(server.http, "GET", "/api/series", &[], b"").await;
    assert_eq!(response.status, 401, "{}", response.body);
    let response = http_request(server.http, "GET", "/api/series?token=s3cret", &[], b"").await;
    assert_eq!(response.status, 200, "{}", response.body);
    let off = InProcess::start(&["--series", "off"]);
    let response = http_request(off.http, "GET", "/api/series", &[], b"").await;
    assert_eq!(response.status, 404, "{}", response.body);
    assert!(response.body.contains("--series off"), "{}", response.body);
}

#[tokio::test]
async fn closed_buckets_survive_kill_9() {
    let dir = fresh_dir("series-kill9");
    let server = start_server_in(&dir, &[]);
    let base = base_secs();
    post_points(
        &server,
        &[
            ("db1", "disk", base + 1, 2.0),
            ("db1", "disk", base + 2, 4.0),
            // The next minute: closes the first 10 s and 1 min buckets by event time.
            ("db1", "disk", base + 61, 9.0),
        ],
    )
    .await;
    // Keys and the two closed buckets (10 s and 1 min) are on disk.
    server
        .wait_for_metric("statecast_series_buckets_written_total", 2)
        .await;
    server.kill_9();
    drop(server);

    let restarted = start_server_in(&dir, &[]);
    let from = base * 1000;
    for step in [10_000, 60_000] {
        let (status, answer) = series(
            &restarted,
            &format!("from={from}&to={}&step={step}", from + 59_000),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            points(&answer, "db1"),
            vec![vec![from as f64, 2.0, 4.0, 3.0, 4.0, 2.0]],
            "step {step}"
        );
    }
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cluster_nodes_answer_the_same_series() {
    let nats = Nats::single();
    let spec = ClusterSpec::new(&nats, "series");
    let a = Node::start(&spec, "a").await;
    let b = Node::start(&spec, "b").await;
    let base = base_secs();
    // Into A over HTTP, into B over Riemann TCP: both nodes apply both.
    post_points(
        &a,
        &[
            ("web1", "load", base + 1, 1.0),
            ("web1", "load", base + 11, 3.0),
            ("web2", "load", base + 2, 8.0),
        ],
    )
    .await;
    let mut tcp = RiemannTcp::connect(&b).await;
    let mut e = event("web1", "load", "ok");
    e.metric_d = Some(6.0);
    e.time = Some(base + 4);
    assert_eq!(tcp.request(&events_msg(vec![e])).await.ok, Some(true));
    for node in [&a, &b] {
        node.wait_for_metric("statecast_series_points_total", 4)
            .await;
    }
    let params = format!("from={}&to={}", base * 1000, (base + 59) * 1000);
    let (status, on_a) = series(&a, &params).await;
    assert_eq!(status, 200, "{on_a}");
    let (_, on_b) = series(&b, &params).await;
    assert_eq!(on_a, on_b);
    assert_eq!(
        points(&on_a, "web1"),
        vec![
            vec![(base * 1000) as f64, 1.0, 6.0, 3.5, 6.0, 2.0],
            vec![((base + 10) * 1000) as f64, 3.0, 3.0, 3.0, 3.0, 1.0],
        ]
    );
}
