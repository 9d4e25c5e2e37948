//! Issue 23, bad input: the series store on a full disk. `series.redb` lives on a small tmpfs of
//! its own (a symlink from the data directory; the history store stays where it is, so only the
//! series' disk fills up). Series are derived data: ingest must not notice, `/metrics` and one
//! log line must say it, `GET /api/series` answers 503 with a sentence, and once space comes
//! back what waited in memory is written.
//!
//! These tests mount a tmpfs, so they run as root, as CI does.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::trends_series::{base_secs, encode, item_points, post_points, series};

/// Keys whose points arrive while the disk is full: their closed buckets (two 10 s buckets and
/// one minute each) are several hundred KiB of new btree pages, more than redb can recycle.
const KEYS_DURING: usize = 900;

/// Waits (up to 60 s) until `/metrics`' `name` satisfies `ok`; returns it.
async fn wait_for(server: &Addrs, name: &str, what: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = server.metric(name).await;
        if ok(value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{name} is {value}, never {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POSTs one event that changes `service`'s state to critical, and waits for a dashboard to see
/// that change and `/api/state` to hold it: ingest acknowledged and applied it.
async fn change_reaches_the_dashboard(server: &Addrs, dash: &mut WsClient, service: &str) {
    let body = json!({"host": "probe", "service": service, "state": "critical", "metric": 1});
    let response = post_json(server, &body.to_string()).await;
    assert_eq!(response.status, 200, "{service}: {}", response.body);
    let change = dash.next_change_is(service).await;
    assert_eq!(change["event"]["state"], "critical", "{change}");
    let query = encode(&format!("service = \"{service}\""));
    let state = http_request(
        server.http,
        "GET",
        &format!("/api/state?query={query}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(state.status, 200, "{}", state.body);
    assert_eq!(
        state.json().as_array().map(Vec::len),
        Some(1),
        "{}",
        state.body
    );
}

async fn readyz(server: &Addrs) -> (u16, String) {
    let response = http_request(server.http, "GET", "/readyz", &[], b"").await;
    (response.status, response.body)
}

/// The log's WARN lines of the series thread.
fn series_warnings(server: &Server) -> Vec<Value> {
    server
        .log_records()
        .into_iter()
        .filter(|r| r["level"] == "WARN" && r["target"] == "statecast::series::worker")
        .collect()
}

#[tokio::test]
async fn a_full_series_disk_leaves_ingest_alone_and_series_resume_when_space_returns() {
    // Declared first, dropped last: the server stops before the file system is unmounted.
    let fs = Tmpfs::mount("series-full", "4m");
    let data = fresh_dir("series-full-data");
    std::os::unix::fs::symlink(fs.dir.join("series.redb"), data.join("series.redb"))
        .expect("link series.redb to the tmpfs");
    let server = start_server_in(&data, &["--log-format", "json"]);
    let base = base_secs();

    // Series work on that disk: the closed buckets of ten minutes ago are written.
    let before: Vec<String> = (0..20).map(|i| format!("before{i}")).collect();
    let points_before: Vec<(&str, &str, i64, f64)> = before
        .iter()
        .map(|service| ("db", service.as_str(), base + 1, 1.0))
        .collect();
    post_points(&server, &points_before).await;
    server
        .wait_for_metric("statecast_series_buckets_written_total", 40)
        .await;
    assert!(
        std::fs::metadata(fs.dir.join("series.redb")).is_ok(),
        "series.redb is on the tmpfs"
    );
    let (mut dash, _) = WsClient::connect_with_snapshot(&server).await;

    // The disk fills up; points whose closed buckets need new pages keep coming.
    let filler = fs.fill("filler");
    eprintln!("filler: {filler} bytes");
    let during: Vec<String> = (0..KEYS_DURING).map(|i| format!("during{i:04}")).collect();
    let points_during: Vec<(&str, &str, i64, f64)> = during
        .iter()
        .flat_map(|s| {
            [
                ("db", s.as_str(), base + 1, 2.0),
                ("db", s.as_str(), base + 31, 4.0),
            ]
        })
        .collect();
    for chunk in points_during.chunks(600) {
        post_points(&server, chunk).await;
    }
    wait_for(&server, "statecast_series_store_failing", "1", |v| v == 1).await;
    let errors = server.metric("statecast_series_store_errors_total").await;
    assert!(errors >= 1, "a failed write is counted");
    let written = server
        .metric("statecast_series_buckets_written_total")
        .await;

    // Ingest keeps acknowledging and applying, dashboards see changes, /readyz stays ready —
    // through several retries (a second apart, or nine times as long as an attempt took) and
    // longer than the 10 s a rate-limited line would wait before repeating itself: the log
    // says it once.
    let mut probe = 0;
    let failing = Instant::now();
    let deadline = failing + Duration::from_secs(60);
    while server.metric("statecast_series_store_errors_total").await < errors + 5
        || failing.elapsed() < Duration::from_secs(11)
    {
        assert!(
            Instant::now() < deadline,
            "the failing store is not retried each second"
        );
        change_reaches_the_dashboard(&server, &mut dash, &format!("probe{probe}")).await;
        probe += 1;
        let (status, body) = readyz(&server).await;
        assert_eq!(
            status, 200,
            "series failing is no reason to be unready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        server.metric("statecast_series_store_failing").await,
        1,
        "the disk is still full"
    );
    assert_eq!(
        server
            .metric("statecast_series_buckets_written_total")
            .await,
        written,
        "nothing is written while the disk is full"
    );
    let pending = server.metric("statecast_series_pending_buckets").await;
    assert!(
        pending >= 2 * KEYS_DURING as u64,
        "closed buckets wait in memory: {pending}"
    );
    let warnings = series_warnings(&server);
    assert_eq!(
        warnings.len(),
        1,
        "one line says the series store fails, not one per retry: {warnings:#?}"
    );
    assert!(
        warnings[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left on device")),
        "the line says why: {}",
        warnings[0]
    );

    // Reading series: whole answers (what waits in memory included), or, while the store
    // cannot be read either, a 503 that says so — never an answer cut short.
    let query = encode(r#"service =~ "during%""#);
    let response = http_request(
        server.http,
        "GET",
        &format!("/api/series?query={query}&from={}", base * 1000),
        &[],
        b"",
    )
    .await;
    let short: String = response.body.chars().take(300).collect();
    eprintln!(
        "MEASURE series disk full: GET /api/series answered {}",
        response.status
    );
    match response.status {
        200 => {
            let answer: Value = serde_json::from_str(&response.body)
                .unwrap_or_else(|e| panic!("a 200 that is not whole JSON ({e}): {short}"));
            assert_eq!(answer["series"].as_array().map(Vec::len), Some(KEYS_DURING));
        }
        503 => assert!(
            response.json()["error"].as_str().is_some_and(
                |e| e.contains("series cannot be read until the series store works again")
            ),
            "{short}"
        ),
        status => panic!("{status}: {short}"),
    }
    eprintln!(
        "MEASURE series disk full: {} failed writes in {:?}, {pending} buckets held, {probe} changes acknowledged and seen meanwhile",
        server.metric("statecast_series_store_errors_total").await - errors + 1,
        failing.elapsed()
    );

    // Space comes back: what waited is written, and the series are whole.
    std::fs::remove_file(fs.dir.join("filler")).expect("remove the filler");
    let freed = Instant::now();
    wait_for(&server, "statecast_series_store_failing", "0", |v| v == 0).await;
    eprintln!(
        "MEASURE series disk full: writing again {:?} after space came back",
        freed.elapsed()
    );
    wait_for(&server, "statecast_series_pending_buckets", "0", |v| v == 0).await;
    assert!(
        server
            .metric("statecast_series_buckets_written_total")
            .await
            >= written + 3 * KEYS_DURING as u64
    );
    assert_eq!(
        server.metric("statecast_series_buckets_lost_total").await,
        0
    );
    let from = base * 1000;
    let (status, answer) = series(
        &server,
        &format!(
            "query={}&from={from}&to={}&step=60000",
            encode(r#"service =~ "during%""#),
            from + 59_000
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let answered = answer["series"].as_array().expect("series");
    assert_eq!(answered.len(), KEYS_DURING, "every key's series");
    for item in answered {
        let service = item["service"].as_str().unwrap_or_default();
        assert_eq!(
            item_points(item),
            vec![vec![from as f64, 2.0, 4.0, 3.0, 4.0, 2.0]],
            "{service}"
        );
    }
    // And the line that said so was not repeated.
    assert_eq!(series_warnings(&server).len(), 1);
    change_reaches_the_dashboard(&server, &mut dash, "after").await;
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}
