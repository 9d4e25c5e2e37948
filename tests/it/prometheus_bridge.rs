//! `GET /api/prometheus`: the current metric of each key in Prometheus's text format, read by
//! Debian's real `promtool` and scraped by a real Prometheus server, whose PromQL answers give
//! the values and the (hostile) label values back as they were sent.

use std::time::Duration;

use statecast::proto::Event as ProtoEvent;

use crate::common::*;

const TOKEN: &str = "scrape-token";

/// A host name with everything the format must escape (backslash, quote, newline) and some it
/// must not (tab, non-ASCII, braces, a comma, an equals sign).
const HOSTILE_HOST: &str = "we\"b\\1\nx\t{é},a=\"b";

async fn get(server: &Addrs, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request(server.http, "GET", path, headers, b"").await
}

async fn scrape(server: &Addrs, query: &str) -> HttpResponse {
    let path = format!("/api/prometheus?query={}", url_encode(query));
    let bearer = format!("Bearer {TOKEN}");
    let response = get(server, &path, &[("Authorization", &bearer)]).await;
    assert_eq!(response.status, 200, "{}", response.body);
    response
}

/// The sample lines of `statecast_metric` in an answer.
fn samples(body: &str) -> Vec<&str> {
    body.lines()
        .filter(|line| line.starts_with("statecast_metric{"))
        .collect()
}

fn posted(body: serde_json::Value) -> String {
    body.to_string()
}

#[tokio::test]
async fn promtool_reads_hostile_labels_and_special_values_clean() {
    let server = InProcess::start(&["--dashboard-token", TOKEN]);
    let res = post_json(
        &server,
        &posted(serde_json::json!([
            {"host": HOSTILE_HOST, "service": "disk \"/\"\n", "state": "critical", "metric": 0.97},
            {"service": "no host", "state": "ok", "metric": -3},
            {"host": "web3", "service": "no metric", "state": "ok"},
            {"host": "web4", "service": "no state", "metric": 1e300},
        ])),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    // NaN and infinities have no JSON form: Riemann's protobuf carries them.
    let special = |service: &str, value: f64| ProtoEvent {
        metric_d: Some(value),
        ..event("web5", service, "warning")
    };
    let mut riemann = RiemannTcp::connect(&server).await;
    let reply = riemann
        .request(&events_msg(vec![
            special("nan", f64::NAN),
            special("inf", f64::INFINITY),
            special("-inf", f64::NEG_INFINITY),
        ]))
        .await;
    assert_eq!(reply.ok, Some(true), "{reply:?}");

    let body = scrape(&server, "true").await.body;
    let (clean, said) = promtool_check_metrics(&body);
    assert!(clean && said.trim().is_empty(), "promtool: {said}\n{body}");
    let lines = samples(&body);
    assert_eq!(lines.len(), 6, "no-metric key left out:\n{body}");
    let hostile = lines
        .iter()
        .find(|l| l.contains("0.97 "))
        .expect("the hostile key");
    assert!(
        hostile.starts_with(
            r#"statecast_metric{host="we\"b\\1\nx	{é},a=\"b",service="disk \"/\"\n",state="critical"} 0.97 "#
        ),
        "{hostile}"
    );
    for (service, value) in [("nan", "NaN"), ("inf", "+Inf"), ("-inf", "-Inf")] {
        let wanted = format!(r#"service="{service}",state="warning"}} {value} "#);
        assert!(body.contains(&wanted), "{wanted} in\n{body}");
    }
    assert!(body.contains(r#"{host="",service="no host",state="ok"} -3 "#));
    assert!(body.contains(r#"{host="web4",service="no state",state=""} 1e300 "#));
    assert!(body.contains("\nstatecast_prometheus_keys_omitted 0\n"));
}

#[tokio::test]
async fn the_key_cap_keeps_the_first_keys_and_says_how_many_it_left_out() {
    let server = InProcess::start(&["--prometheus-max-keys", "3"]);
    let events: Vec<serde_json::Value> = (0..5)
        .rev()
        .map(|i| serde_json::json!({"host": format!("h{i}"), "service": "cap", "metric": i}))
        .chain([serde_json::json!({"host": "other", "service": "x", "metric": 1})])
        .collect();
    let res = post_json(&server, &posted(serde_json::json!(events))).await;
    assert_eq!(res.status, 200, "{}", res.body);

    let body = get(&server, "/api/prometheus", &[]).await.body;
    let hosts: Vec<&str> = samples(&body)
        .iter()
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert_eq!(hosts, ["h0", "h1", "h2"], "{body}");
    assert!(
        body.contains("\nstatecast_prometheus_keys_omitted 3\n"),
        "{body}"
    );
    let (clean, said) = promtool_check_metrics(&body);
    assert!(clean, "promtool: {said}");

    // A query that matches fewer than the cap: all of them, nothing omitted.
    let path = format!(
        "/api/prometheus?query={}",
        url_encode(r#"service = "x" or host = "h4""#)
    );
    let body = get(&server, &path, &[]).await.body;
    let hosts: Vec<&str> = samples(&body)
        .iter()
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert_eq!(hosts, ["h4", "other"], "{body}");
    assert!(body.contains("\nstatecast_prometheus_keys_omitted 0\n"));
}

#[tokio::test]
async fn bad_queries_and_missing_tokens_are_refused_with_a_sentence() {
    let server = InProcess::start(&["--dashboard-token", TOKEN]);
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];

    let path = format!("/api/prometheus?query={}", url_encode("service = "));
    let res = get(&server, &path, &auth).await;
    assert_eq!(res.status, 400, "{}", res.body);
    assert!(
        res.json()["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("parse error: ")),
        "{}",
        res.body
    );

    let patterns = vec![r#"service =~ "a%""#; 65].join(" or ");
    let path = format!("/api/prometheus?query={}", url_encode(&patterns));
    let res = get(&server, &path, &auth).await;
    assert_eq!(res.status, 400, "{}", res.body);
    assert!(res.body.contains("more than 64"), "{}", res.body);

    assert_eq!(get(&server, "/api/prometheus", &[]).await.status, 401);
    let wrong = [("Authorization", "Bearer nope")];
    assert_eq!(get(&server, "/api/prometheus", &wrong).await.status, 401);
    let by_url = format!("/api/prometheus?token={TOKEN}");
    assert_eq!(get(&server, &by_url, &[]).await.status, 200);
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_values_and_promql_reads_them_back() {
    let server = InProcess::start(&["--dashboard-token", TOKEN]);
    let res = post_json(
        &server,
        &posted(serde_json::json!([
            {"host": HOSTILE_HOST, "service": "bridge", "state": "critical", "metric": 0.97},
            {"host": "web2", "service": "bridge", "state": "ok", "metric": 12},
            {"host": "web3", "service": "bridge", "state": "ok"},
            {"host": "web2", "service": "not scraped", "state": "ok", "metric": 5},
        ])),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);

    let prometheus = Prometheus::start(&ScrapeJob {
        target: server.http,
        query: r#"service = "bridge""#,
        token: Some(TOKEN),
    });
    let series = eventually(
        Duration::from_secs(30),
        "prometheus holds both bridge series",
        || async {
            let result = prometheus.query("statecast_metric").await?;
            if result.len() == 2 {
                Ok(result)
            } else {
                Err(format!("{result:?}\n{}", prometheus.log()))
            }
        },
    )
    .await;
    let mut got: Vec<(String, String, String)> = series
        .iter()
        .map(|s| {
            let label = |name: &str| s["metric"][name].as_str().unwrap_or_default().to_owned();
            let value = s["value"][1].as_str().unwrap_or_default().to_owned();
            (label("host"), label("state"), value)
        })
        .collect();
    got.sort();
    let expected = [
        (
            HOSTILE_HOST.to_owned(),
            "critical".to_owned(),
            "0.97".to_owned(),
        ),
        ("web2".to_owned(), "ok".to_owned(), "12".to_owned()),
    ];
    assert_eq!(got, expected);

    // The scrape is healthy (the token passed) and a PromQL selector on a label works.
    let up = prometheus.query(r#"up{job="statecast"}"#).await;
    assert!(
        up.as_ref()
            .is_ok_and(|r| r.len() == 1 && r[0]["value"][1] == "1"),
        "{up:?}"
    );
    let bridge = prometheus
        .query(r#"statecast_metric{service="bridge",host="web2"}"#)
        .await;
    assert!(bridge.as_ref().is_ok_and(|r| r.len() == 1), "{bridge:?}");
}
