//! Live values (issue 23): `metrics` frames carry the latest metric and description of the keys
//! a dashboard's query matches whose values moved without a change of state — at most one frame
//! per `--metrics-interval`, latest value per key, none with `off`, and one frame with the
//! latest values for a client that stopped reading for many intervals.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::common::*;
use serde_json::{json, Value};

/// The next `metrics` frame, skipping stats; any other frame is a failure.
async fn next_metrics(ws: &mut WsClient) -> Value {
    let frame = ws.next_json().await;
    assert_eq!(
        frame["type"], "metrics",
        "expected a metrics frame, got {frame:.300}"
    );
    assert!(frame["time"].is_u64(), "{frame}");
    frame
}

/// A metrics frame's values as objects `{host, service, metric, description, time}`: its
/// compact rows `[host index, service, metric, description, age]` decoded, `time` (the frame's
/// less the age) written as an event's.
fn decoded(frame: &Value) -> Vec<Value> {
    let time = frame["time"].as_i64().expect("time");
    let hosts = frame["hosts"].as_array().expect("hosts");
    frame["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|row| {
            let host = row[0]
                .as_u64()
                .map_or(Value::Null, |h| hosts[h as usize].clone());
            let at = time - row[4].as_i64().expect("age");
            let at = chrono::DateTime::from_timestamp_millis(at).expect("a time");
            json!({"host": host, "service": row[1], "metric": row[2], "description": row[3],
                   "time": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)})
        })
        .collect()
}

/// A metrics frame's values as `host/service` → metric.
fn values(frame: &Value) -> BTreeMap<String, Value> {
    decoded(frame)
        .iter()
        .map(|v| {
            let key = format!(
                "{}/{}",
                v["host"].as_str().unwrap_or(""),
                v["service"].as_str().unwrap_or("")
            );
            (key, v["metric"].clone())
        })
        .collect()
}

async fn post(server: &Addrs, body: Value) {
    let response = post_json(server, &body.to_string()).await;
    assert_eq!(response.status, 200, "{}", response.body);
}

fn metric_event(host: &str, service: &str, metric: f64) -> Value {
    json!({"host": host, "service": service, "metric": metric})
}

#[tokio::test]
async fn a_query_gets_the_latest_metric_of_its_keys_only() {
    let server = InProcess::start(&["--metrics-interval", "0.1"]);
    post(
        &server,
        json!([
            {"host": "web1", "service": "disk", "state": "critical", "metric": 91.0},
            {"host": "web1", "service": "cpu", "state": "critical", "metric": 10.0},
        ]),
    )
    .await;
    let mut ws = WsClient::connect_path(&server, "/ws?query=service%20%3D%20%22disk%22").await;
    let snapshot = ws.next_json().await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot_services(&snapshot), ["disk"]);

    // Metric-only updates (one with the same state, then ones without a state), all in one
    // batch: one interval, so one frame with the last value. The cpu key is not the client's.
    post(
        &server,
        json!([
            {"host": "web1", "service": "disk", "state": "critical", "metric": 95.0},
            metric_event("web1", "disk", 97.0),
            metric_event("web1", "cpu", 50.0),
            {"host": "web1", "service": "disk", "metric": 99.1, "description": "99.1% used"},
        ]),
    )
    .await;
    let frame = next_metrics(&mut ws).await;
    assert_eq!(
        values(&frame),
        BTreeMap::from([("web1/disk".into(), json!(99.1))]),
        "{frame}"
    );
    let value = &decoded(&frame)[0];
    assert_eq!(value["description"], "99.1% used");
    assert!(
        value["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{value}"
    );
    assert!(
        value.get("seq").is_none() && frame.get("seq").is_none(),
        "not a change: {frame}"
    );

    // Again, the other key first: still only the client's key.
    post(
        &server,
        json!([
            metric_event("web1", "cpu", 60.0),
            metric_event("web1", "disk", 42.0)
        ]),
    )
    .await;
    let frame = next_metrics(&mut ws).await;
    assert_eq!(
        values(&frame),
        BTreeMap::from([("web1/disk".into(), json!(42.0))]),
        "{frame}"
    );
    assert!(server.metric("statecast_ws_metrics_values_total").await >= 2);

    // A change of state is a change frame (with its seq), as before.
    post(
        &server,
        json!({"host": "web1", "service": "disk", "state": "ok", "metric": 1.0}),
    )
    .await;
    let change = ws.next_change().await;
    assert_eq!(change["event"]["metric"], 1.0);
}

/// Many updates of one key, each its own batch: the client gets at most one frame per
/// interval (checked against the time they took, with a margin), and the last is the latest.
#[tokio::test]
async fn at_most_one_frame_per_interval_with_the_latest_value() {
    const UPDATES: u32 = 60;
    let server = InProcess::start(&["--metrics-interval", "0.5"]);
    post(
        &server,
        json!({"host": "h", "service": "s", "state": "warning", "metric": 0}),
    )
    .await;
    let (mut ws, _) = WsClient::connect_with_snapshot(&server).await;
    let started = Instant::now();
    for n in 1..=UPDATES {
        post(&server, metric_event("h", "s", f64::from(n))).await;
    }
    let mut frames = 0;
    loop {
        let frame = next_metrics(&mut ws).await;
        frames += 1;
        if values(&frame)["h/s"] == json!(f64::from(UPDATES)) {
            break;
        }
    }
    let intervals = started.elapsed().as_secs_f64() / 0.5;
    assert!(
        f64::from(frames) <= intervals + 2.0,
        "{frames} frames in {intervals:.1} intervals"
    );
    assert!(
        frames < UPDATES / 2,
        "{frames} frames for {UPDATES} updates"
    );
}

#[tokio::test]
async fn metrics_off_sends_none() {
    let server = InProcess::start(&["--metrics-interval", "off", "--stats-interval", "0.1"]);
    post(
        &server,
        json!({"host": "h", "service": "s", "state": "warning", "metric": 0}),
    )
    .await;
    let (mut ws, _) = WsClient::connect_with_snapshot(&server).await;
    post(&server, metric_event("h", "s", 5.0)).await;
    // Twenty stats frames (2 s: twice the default interval) and no metrics frame among them.
    for _ in 0..20 {
        let frame = ws.next_json_any().await;
        assert_eq!(frame["type"], "stats", "{frame:.300}");
    }
    assert_eq!(server.metric("statecast_ws_metrics_frames_total").await, 0);
    // Changes still arrive.
    post(&server, json!({"host": "h", "service": "s", "state": "ok"})).await;
    ws.next_change().await;
}

/// A client that stops reading while values move for many intervals holds one pending frame,
/// not a queue: when it reads again it gets a few frames at most (those already in the
/// sockets' buffers, then the merged one), no reset snapshot, and every key's latest value.
#[tokio::test]
async fn a_client_that_does_not_read_gets_the_latest_values_when_it_reads_again() {
    const KEYS: usize = 50;
    const ROUNDS: usize = 80;
    // The stuck client takes no data for as long as the rounds last: that must not be the
    // write timeout's business (on a busy CI machine the rounds took more than its default 10 s,
    // and the server rightly dropped the client — "connection reset" — failing this test).
    let server = InProcess::start(&[
        "--metrics-interval",
        "0.05",
        "--stats-interval",
        "1h",
        "--ws-write-timeout",
        "1h",
        // Frames as large as before `--metrics-max-bytes` (64 KiB by default) bounded them: the
        // socket buffers (≈ 4 MB on loopback) hold what the server wrote before the client
        // stopped reading, and as many frames of it as before.
        "--metrics-max-bytes",
        "256KiB",
    ]);
    let text = "x".repeat(8 * 1024);
    let round = |metric: usize| warnings_with_long_descriptions(KEYS, metric, &text);
    post(&server, round(0)).await;
    // A client that reads: a round has been taken once it has the round's frame.
    let (mut reader, _) = WsClient::connect_with_snapshot(&server).await;
    let mut stuck = WsClient::connect_with_recv_buffer(&server, 4096).await;
    // Its snapshot read: subscribed (values that move before a dashboard subscribes are in
    // its snapshot, not in a frame). From here on it reads nothing until the rounds are done.
    let snapshot = stuck.next_json().await;
    assert_eq!(snapshot["type"], "snapshot");
    // Each round moves every key (≈ 400 KiB of values: 80 rounds are 32 MiB queued unmerged, far
    // past --ws-queue-bytes) and is published before the next.
    for metric in 1..=ROUNDS {
        post(&server, round(metric)).await;
        loop {
            let frame = next_metrics(&mut reader).await;
            if values(&frame).values().any(|m| *m == json!(metric)) {
                break;
            }
        }
    }
    let mut latest = BTreeMap::new();
    let mut frames = 0;
    while latest.len() < KEYS || latest.values().any(|m| *m != json!(ROUNDS)) {
        let frame = next_metrics(&mut stuck).await;
        frames += 1;
        latest.extend(values(&frame));
    }
    assert!(
        frames <= ROUNDS / 2,
        "{frames} frames for {ROUNDS} intervals"
    );
    assert_eq!(server.metric("statecast_ws_resyncs_total").await, 0);
    assert_eq!(server.metric("statecast_ws_slow_closed_total").await, 0);
}

/// A `metrics` frame as the server sent it: its JSON and its length on the wire (written
/// again compactly: the same bytes' count, serde_json writing both).
async fn next_metrics_sized(ws: &mut WsClient) -> (Value, usize) {
    let frame = next_metrics(ws).await;
    let len = frame.to_string().len();
    (frame, len)
}

/// Issue 23: more keys move than one frame of `--metrics-max-bytes` (64 KiB by default)
/// carries. Each dashboard — one without a query (the shared frames) and one with — gets one
/// frame at a time within the bound, and every key's latest value within ceil(keys ÷ values
/// per frame) + 1 frames, the keys that waited longest first; what waited is counted as
/// deferred. Keys that move again while waiting go at their newest value, never an older one
/// after it.
#[tokio::test]
async fn more_moving_keys_than_a_frame_holds_come_within_their_share_of_frames() {
    const KEYS: usize = 50;
    const MAX_BYTES: usize = 64 * 1024;
    let server = InProcess::start(&["--metrics-interval", "0.1", "--stats-interval", "1h"]);
    // ≈ 8 KiB a value: 7 to a frame, 50 keys take 8 frames.
    let text = "x".repeat(8 * 1024);
    let round = |metric: usize| warnings_with_long_descriptions(KEYS, metric, &text);
    post(&server, round(0)).await;
    let (mut shared, _) = WsClient::connect_with_snapshot(&server).await;
    let mut query = WsClient::connect_path(&server, "/ws?query=service%20%3D%20%22s%22").await;
    assert_eq!(query.next_json().await["type"], "snapshot");

    post(&server, round(1)).await;
    for ws in [&mut shared, &mut query] {
        let mut latest = BTreeMap::new();
        let mut frames = 0;
        let mut per_frame = 0;
        while latest.len() < KEYS || latest.values().any(|m| *m != json!(1)) {
            let (frame, len) = next_metrics_sized(ws).await;
            assert!(len <= MAX_BYTES, "a frame of {len} bytes");
            let values = values(&frame);
            per_frame = per_frame.max(values.len());
            frames += 1;
            latest.extend(values);
        }
        assert!(
            frames <= KEYS.div_ceil(per_frame) + 1,
            "{frames} frames of at most {per_frame} values for {KEYS} keys"
        );
    }
    assert!(server.metric("statecast_ws_metrics_deferred_total").await >= 2 * KEYS as u64);

    // The keys move twice while their frames go: each key's newest value comes in its turn,
    // and never an older one after it.
    post(&server, round(2)).await;
    let (first, _) = next_metrics_sized(&mut shared).await;
    post(&server, round(3)).await;
    let mut latest = values(&first);
    let mut frames = 0;
    while latest.len() < KEYS || latest.values().any(|m| *m != json!(3)) {
        let (frame, len) = next_metrics_sized(&mut shared).await;
        assert!(len <= MAX_BYTES, "a frame of {len} bytes");
        for (key, metric) in values(&frame) {
            let before = latest.insert(key.clone(), metric.clone());
            assert!(
                before
                    .as_ref()
                    .is_none_or(|b| b.as_u64() <= metric.as_u64()),
                "{key}: {metric} after {before:?}"
            );
        }
        frames += 1;
    }
    assert!(frames <= 2 * (KEYS.div_ceil(7) + 1), "{frames} frames");
}

/// `keys` warning events (hosts h00, h01, …, service "s") with `metric` and a description of
/// the metric followed by `text`: values large enough that few fit in a frame.
fn warnings_with_long_descriptions(keys: usize, metric: usize, text: &str) -> Value {
    let events: Vec<Value> = (0..keys)
        .map(|k| {
            json!({"host": format!("h{k:02}"), "service": "s", "state": "warning",
                   "metric": metric, "description": format!("{metric} {text}")})
        })
        .collect();
    Value::Array(events)
}
