//! `--alertmanager`: statecast as an Alertmanager client, against Debian's real
//! `prometheus-alertmanager`, which notifies a webhook the test serves. A critical reaches the
//! webhook firing with its labels and link; ok, or an ack, resolves it; an unack fires it again;
//! an Alertmanager that was away gets the alerts once it is back.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// Alertmanager's own waits (group_wait, group_interval) plus a resend or two, with margin.
const NOTIFIED: Duration = Duration::from_secs(30);

async fn post(server: &Addrs, path: &str, body: Value) -> HttpResponse {
    let json = [("Content-Type", "application/json")];
    http_request(
        server.http,
        "POST",
        path,
        &json,
        body.to_string().as_bytes(),
    )
    .await
}

async fn send(server: &Addrs, host: &str, state: &str) {
    let event = serde_json::json!([{
        "host": host, "service": "cpu", "state": state, "metric": 0.97,
        "description": "load 12", "team": "db"
    }]);
    let res = post(server, "/api/event", event).await;
    assert_eq!(res.status, 200, "{}", res.body);
}

/// Waits until the webhook has received at least `n` alerts of `host` with `status`; returns
/// the last.
async fn notified(
    webhook: &Webhook,
    am: &Alertmanager,
    host: &str,
    status: &str,
    n: usize,
) -> Value {
    eventually(
        NOTIFIED,
        &format!("{n} {status} notification(s) of {host}"),
        || async {
            let got = webhook.matching(status, &[("host", host)]);
            if got.len() >= n {
                Ok(got.last().cloned().unwrap_or_default())
            } else {
                Err(format!("webhook got {:?}\n{}", webhook.alerts(), am.log()))
            }
        },
    )
    .await
}

fn alerting_flags(am: &Alertmanager) -> Vec<String> {
    [
        "--alertmanager",
        &am.url(),
        "--alert-resend",
        "1s",
        "--alert-labels",
        "team",
        "--external-url",
        "http://dash.example.com/statecast/",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn start(am: &Alertmanager) -> InProcess {
    let flags = alerting_flags(am);
    InProcess::start(&flags.iter().map(String::as_str).collect::<Vec<_>>())
}

#[tokio::test]
async fn a_critical_fires_with_its_labels_and_link_and_ok_resolves_it() {
    let webhook = Webhook::start().await;
    let am = Alertmanager::start(&webhook);
    let server = start(&am);
    send(&server, "web1", "critical").await;

    let firing = notified(&webhook, &am, "web1", "firing", 1).await;
    let labels = &firing["labels"];
    assert_eq!(labels["alertname"], "statecast");
    assert_eq!(labels["service"], "cpu");
    assert_eq!(labels["state"], "critical");
    assert_eq!(labels["team"], "db", "--alert-labels copies the attribute");
    let link = "http://dash.example.com/statecast/?query=host%20%3D%20%22web1%22%20and%20service%20%3D%20%22cpu%22";
    assert_eq!(firing["annotations"]["link"], link);
    assert_eq!(firing["annotations"]["description"], "load 12");
    assert_eq!(firing["annotations"]["metric"], "0.97");
    assert_eq!(firing["generatorURL"], link);

    send(&server, "web1", "ok").await;
    let resolved = notified(&webhook, &am, "web1", "resolved", 1).await;
    assert_eq!(resolved["labels"]["state"], "critical");
    let url = am.url();
    let sent = format!("statecast_alerts_sent_total{{alertmanager=\"{url}\"}}");
    assert!(server.metric(&sent).await >= 2, "firing and resolved sent");
    assert_eq!(server.metric("statecast_alerts_firing").await, 0);

    // The alerting families read clean, and say when a POST last went through.
    let metrics = http_request(server.http, "GET", "/metrics", &[], b"")
        .await
        .body;
    let (clean, said) = promtool_check_metrics(&metrics);
    assert!(clean && said.trim().is_empty(), "promtool: {said}");
    let last =
        format!("statecast_alerts_last_success_timestamp_seconds{{alertmanager=\"{url}\"}} ");
    let seconds: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix(&last)?.parse().ok())
        .unwrap_or_default();
    assert!(seconds > 1.7e9, "{metrics}");
}

#[tokio::test]
async fn an_ack_or_a_silence_resolves_the_alert_and_its_end_fires_it_again() {
    let webhook = Webhook::start().await;
    let am = Alertmanager::start(&webhook);
    let server = start(&am);
    send(&server, "web2", "critical").await;
    notified(&webhook, &am, "web2", "firing", 1).await;

    let key = serde_json::json!({"host": "web2", "service": "cpu", "note": "on it", "by": "ann"});
    let res = post(&server, "/api/ack", key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let resolved = notified(&webhook, &am, "web2", "resolved", 1).await;
    assert_eq!(resolved["annotations"]["acked_by"], "ann", "{resolved}");
    assert_eq!(resolved["annotations"]["ack_note"], "on it");
    assert_eq!(server.metric("statecast_alerts_firing").await, 0);

    let key = serde_json::json!({"host": "web2", "service": "cpu", "by": "ann"});
    let res = post(&server, "/api/unack", key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    notified(&webhook, &am, "web2", "firing", 2).await;
    assert_eq!(server.metric("statecast_alerts_firing").await, 1);

    // A silence does the same, for every key its query matches: resolved while it lasts,
    // firing again once it is deleted.
    send(&server, "web3", "critical").await;
    notified(&webhook, &am, "web3", "firing", 1).await;
    let silence = serde_json::json!({
        "query": "host = \"web2\" or host = \"web3\"", "comment": "maintenance", "by": "ann",
        "duration": "1h"
    });
    let res = post(&server, "/api/silence", silence).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let resolved = notified(&webhook, &am, "web2", "resolved", 2).await;
    let id = res.json()["id"].as_str().unwrap_or_default().to_owned();
    let annotations = &resolved["annotations"];
    assert_eq!(annotations["silenced_by"], "ann", "{resolved}");
    assert_eq!(annotations["silence_id"], id.as_str());
    assert_eq!(annotations["silence_comment"], "maintenance");
    assert_eq!(annotations["acked_by"], Value::Null, "the ack ended");
    let other = notified(&webhook, &am, "web3", "resolved", 1).await;
    assert_eq!(other["annotations"]["silence_id"], id.as_str(), "{other}");
    let path = format!("/api/silence/{id}?by=ann");
    let res = http_request(server.http, "DELETE", &path, &[], b"").await;
    assert_eq!(res.status, 200, "{}", res.body);
    notified(&webhook, &am, "web2", "firing", 3).await;
    notified(&webhook, &am, "web3", "firing", 2).await;
}

#[tokio::test]
async fn an_alertmanager_away_gets_the_alerts_once_it_is_back() {
    let webhook = Webhook::start().await;
    let mut am = Alertmanager::configured(&webhook);
    let server = start(&am);
    let url = am.url();
    let failed = format!("statecast_alerts_failed_total{{alertmanager=\"{url}\"}}");
    let sent = format!("statecast_alerts_sent_total{{alertmanager=\"{url}\"}}");

    // Not started yet: the alert waits and is retried.
    send(&server, "web3", "critical").await;
    server.wait_for_metric(&failed, 1).await;
    assert_eq!(server.metric(&sent).await, 0);
    am.spawn();
    notified(&webhook, &am, "web3", "firing", 1).await;
    server.wait_for_metric(&sent, 1).await;

    // Killed, and back empty: the next resends give it the alert again.
    am.kill();
    let failed_before = server.metric(&failed).await;
    server.wait_for_metric(&failed, failed_before + 1).await;
    am.spawn();
    let held = eventually(
        NOTIFIED,
        "the restarted Alertmanager holds the alert",
        || async {
            let alerts = am.alerts().await?;
            alerts
                .into_iter()
                .find(|a| a["labels"]["host"] == "web3" && a["status"]["state"] == "active")
                .ok_or_else(|| "not yet".to_owned())
        },
    )
    .await;
    assert_eq!(held["labels"]["state"], "critical");

    // Away again while the key recovers: the resolved alert (never resent) is retried until the
    // Alertmanager takes it.
    am.kill();
    let sent_before = server.metric(&sent).await;
    let failed_before = server.metric(&failed).await;
    send(&server, "web3", "ok").await;
    server.wait_for_metric(&failed, failed_before + 1).await;
    am.spawn();
    metric_reaches(&server, &sent, sent_before + 1).await;
    let queue = format!("statecast_alerts_queue{{alertmanager=\"{url}\"}}");
    assert_eq!(server.metric(&queue).await, 0);
}

/// Waits (longer than `wait_for_metric`: a retry may be up to its 10 s backoff away) until the
/// sample `name` is at least `at_least`.
async fn metric_reaches(server: &Addrs, name: &str, at_least: u64) {
    eventually(NOTIFIED, &format!("{name} >= {at_least}"), || async {
        let value = server.metric(name).await;
        if value >= at_least {
            Ok(())
        } else {
            Err(value.to_string())
        }
    })
    .await;
}

#[tokio::test]
async fn a_flapping_key_fires_one_flapping_alert() {
    let webhook = Webhook::start().await;
    let am = Alertmanager::start(&webhook);
    let server = start(&am);
    for state in [
        "critical", "ok", "critical", "ok", "critical", "ok", "critical",
    ] {
        send(&server, "web4", state).await;
    }
    let flapping = eventually(NOTIFIED, "a flapping alert of web4", || async {
        let got = webhook.matching("firing", &[("host", "web4"), ("flapping", "true")]);
        got.last()
            .cloned()
            .ok_or_else(|| format!("{:?}\n{}", webhook.alerts(), am.log()))
    })
    .await;
    assert_eq!(flapping["labels"]["state"], Value::Null, "no state label");
    let url = am.url();
    let sent = format!("statecast_alerts_sent_total{{alertmanager=\"{url}\"}}");
    server.wait_for_metric(&sent, 1).await;
    assert_eq!(
        server.metric("statecast_alerts_firing").await,
        1,
        "only the flapping alert"
    );
    // The state alerts went to Alertmanager too before it flapped; none of them is firing there.
    let held = am.alerts().await.unwrap_or_default();
    let active: Vec<&Value> = held
        .iter()
        .filter(|a| a["labels"]["host"] == "web4" && a["status"]["state"] == "active")
        .collect();
    assert_eq!(active.len(), 1, "{held:?}");
    assert_eq!(active[0]["labels"]["flapping"], "true");
}

/// Two cluster nodes (one nats-server) derive the same alerts from the same changes: both send
/// the alert of an event ingested on one of them, with the same labels and `startsAt`, and
/// Alertmanager holds it once; an ack on the other node resolves it from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cluster_nodes_send_the_same_alert_and_alertmanager_holds_it_once() {
    let webhook = Webhook::start().await;
    let am = Alertmanager::start(&webhook);
    let nats = Nats::single();
    let flags = alerting_flags(&am);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let spec = ClusterSpec::new(&nats, "alerting").with(&flags);
    let a = Node::start(&spec, "a").await;
    let b = Node::start(&spec, "b").await;
    let url = am.url();
    let sent = format!("statecast_alerts_sent_total{{alertmanager=\"{url}\"}}");
    let firing = "statecast_alerts_firing";

    send(&a, "web5", "critical").await;
    notified(&webhook, &am, "web5", "firing", 1).await;
    for node in [&a, &b] {
        metric_reaches(node, &sent, 1).await;
        metric_reaches(node, firing, 1).await;
    }
    let held = am.alerts().await.unwrap_or_default();
    let web5: Vec<&Value> = held
        .iter()
        .filter(|alert| alert["labels"]["host"] == "web5")
        .collect();
    assert_eq!(web5.len(), 1, "one alert from both nodes: {held:?}");
    let state = http_request(b.http, "GET", "/api/state", &[], b"")
        .await
        .json();
    // Compared as times: Alertmanager writes them with Go's trimmed fractions.
    let time = |value: &Value| {
        chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap_or_default()).ok()
    };
    assert!(time(&state[0]["time"]).is_some(), "{state}");
    assert_eq!(
        time(&web5[0]["startsAt"]),
        time(&state[0]["time"]),
        "the change's time, on both nodes: {} {}",
        web5[0]["startsAt"],
        state[0]["time"]
    );

    let key = serde_json::json!({"host": "web5", "service": "cpu", "note": "mine", "by": "bo"});
    let res = post(&b, "/api/ack", key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    notified(&webhook, &am, "web5", "resolved", 1).await;
    for node in [&a, &b] {
        eventually(NOTIFIED, "no alert firing", || async {
            let value = node.metric(firing).await;
            if value == 0 {
                Ok(())
            } else {
                Err(value.to_string())
            }
        })
        .await;
    }
    assert_eq!(
        webhook.matching("firing", &[("host", "web5")]).len(),
        1,
        "notified once while it fired: {:?}",
        webhook.alerts()
    );
}

/// An "Alertmanager" that takes connections and never answers: ingest goes on, one POST of at
/// most 64 alerts is in flight, the rest wait in the queue.
#[tokio::test]
async fn an_alertmanager_that_never_answers_holds_one_batch_and_the_rest_wait() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket); // kept open, never read
        }
    });
    let server = InProcess::start(&["--alertmanager", &url]);
    let events: Vec<Value> = (0..100)
        .map(
            |i| serde_json::json!({"host": format!("h{i}"), "service": "cpu", "state": "critical"}),
        )
        .collect();
    let res = post(&server, "/api/event", Value::Array(events)).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let queue = format!("statecast_alerts_queue{{alertmanager=\"{url}\"}}");
    server.wait_for_metric("statecast_alerts_firing", 100).await;
    // 100 alerts, 64 in flight (the first POST, unanswered for its 10 s), 36 waiting.
    eventually(NOTIFIED, "36 alerts waiting", || async {
        let waiting = server.metric(&queue).await;
        if waiting == 36 {
            Ok(())
        } else {
            Err(waiting.to_string())
        }
    })
    .await;
    // Ingest is not held up by it.
    send(&server, "web6", "critical").await;
    server.wait_for_metric("statecast_alerts_firing", 101).await;
    held.abort();
}

/// A key whose events stop (a short `ttl`) expires and fires a "went silent" alert.
#[tokio::test]
async fn an_expired_key_fires_a_went_silent_alert() {
    let webhook = Webhook::start().await;
    let am = Alertmanager::start(&webhook);
    let mut flags = alerting_flags(&am);
    flags.extend(["--reap-interval", "0.1"].map(str::to_owned));
    let server = InProcess::start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let event = serde_json::json!([{"host": "web7", "service": "backup", "state": "ok", "ttl": 1}]);
    let res = post(&server, "/api/event", event).await;
    assert_eq!(res.status, 200, "{}", res.body);

    let silent = notified(&webhook, &am, "web7", "firing", 1).await;
    assert_eq!(silent["labels"]["state"], "expired", "{silent}");
    assert_eq!(silent["labels"]["service"], "backup");
    assert_eq!(
        silent["annotations"]["description"],
        "went silent: no event within its TTL"
    );
}

/// An Alertmanager that answers 400 refuses the alerts: the batch is dropped (counted failed,
/// never retried); one that answers 500 is retried, with backoff, until it answers 200. Riemann
/// ingest answers meanwhile.
#[tokio::test]
async fn a_400_drops_the_batch_and_a_500_is_retried_until_it_is_taken() {
    let fake = FakeAlertmanager::answering(400).await;
    // A resend an hour away: whatever reaches the endpoint again is a retry.
    let server = InProcess::start(&["--alertmanager", &fake.url, "--alert-resend", "1h"]);
    let url = &fake.url;
    let failed = format!("statecast_alerts_failed_total{{alertmanager=\"{url}\"}}");
    let sent = format!("statecast_alerts_sent_total{{alertmanager=\"{url}\"}}");
    let queue = format!("statecast_alerts_queue{{alertmanager=\"{url}\"}}");

    send(&server, "refused", "critical").await;
    server.wait_for_metric(&failed, 1).await;
    assert_eq!(server.metric(&queue).await, 0, "dropped, not put back");

    fake.answer(500);
    send(&server, "retried", "critical").await;
    metric_reaches(&server, &failed, 4).await; // refused once, then failed three times
    let status = riemann_client_send(&server, &["-h", "web8", "-S", "cpu", "-s", "ok"]).await;
    assert!(status.success(), "riemann-client send: {status:?}");
    assert_eq!(server.metric(&sent).await, 0);

    fake.answer(200);
    metric_reaches(&server, &sent, 1).await;
    assert_eq!(server.metric(&queue).await, 0);
    let posts = fake.posts();
    let summary: Vec<(u16, Vec<String>)> =
        posts.iter().map(|p| (p.status, p.hosts.clone())).collect();
    assert_eq!(summary[0], (400, vec!["refused".to_owned()]), "{summary:?}");
    assert!(
        summary[1..].iter().all(|(_, hosts)| hosts == &["retried"]),
        "the refused alert is never sent again: {summary:?}"
    );
    let statuses: Vec<u16> = summary[1..].iter().map(|(status, _)| *status).collect();
    assert!(statuses.len() >= 4, "{statuses:?}");
    assert!(
        statuses[..statuses.len() - 1].iter().all(|s| *s == 500) && statuses.last() == Some(&200),
        "retried until taken, then not again: {statuses:?}"
    );
}

/// Label values come from events, which may hold anything up to 1 MiB: a long value with quotes,
/// a newline and non-ASCII text is cut to at most 1,024 bytes (at a character, marked "…"), and
/// Alertmanager takes the alert.
#[tokio::test]
async fn long_and_odd_label_values_are_cut_and_alertmanager_takes_them() {
    let webhook = Webhook::start().await;
    let am = Alertmanager::start(&webhook);
    let server = start(&am);
    let team = format!("db \"core\"\nrésumé {}", "é".repeat(5000));
    let event = serde_json::json!([{
        "host": "web9", "service": "cpu", "state": "critical", "team": team,
        "description": "x".repeat(100_000)
    }]);
    let res = post(&server, "/api/event", event).await;
    assert_eq!(res.status, 200, "{}", res.body);

    let firing = notified(&webhook, &am, "web9", "firing", 1).await;
    let label = firing["labels"]["team"].as_str().unwrap_or_default();
    assert!(label.len() <= 1024, "{} bytes", label.len());
    assert!(
        label.starts_with("db \"core\"\nrésumé éé") && label.ends_with('…'),
        "{label}"
    );
    let description = firing["annotations"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        description.len() <= 4096 && description.ends_with('…'),
        "{} bytes",
        description.len()
    );
    // Alertmanager holds it, cut label and all: it took the alert. (Failures are not counted on
    // here: an attempt made before Alertmanager listens fails, and is retried.)
    let held = am.alerts().await.unwrap_or_default();
    let web9 = held.iter().find(|a| a["labels"]["host"] == "web9");
    assert_eq!(
        web9.map(|a| a["labels"]["team"].clone()),
        Some(Value::from(label)),
        "{held:?}"
    );
}

/// 100,000 keys go critical in one POST: statecast sends them in POSTs of at most 64, its queue
/// never holds more than 10,000 (the rest are dropped, oldest first, and counted), ingest keeps
/// answering, and Alertmanager ends up holding every alert it was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_keys_critical_at_once_are_batched_bounded_and_counted() {
    const KEYS: u64 = 100_000;
    let webhook = Webhook::start().await;
    let am = Alertmanager::start_grouped_by(&webhook, "['alertname']");
    // Listening before statecast starts: every POST passed on is then taken (no failures).
    eventually(NOTIFIED, "Alertmanager listens", || am.active_alerts()).await;
    let fake = FakeAlertmanager::forwarding_to(&am).await;
    let server = InProcess::start(&[
        "--alertmanager",
        &fake.url,
        "--alert-resend",
        "1h",
        "--max-body-bytes",
        "16MiB",
    ]);
    let url = &fake.url;
    let name = |family: &str| format!("statecast_alerts_{family}{{alertmanager=\"{url}\"}}");
    let (sent, dropped, queue, failed) = (
        name("sent_total"),
        name("dropped_total"),
        name("queue"),
        name("failed_total"),
    );
    let events: Vec<Value> = (0..KEYS)
        .map(
            |i| serde_json::json!({"host": format!("h{i}"), "service": "cpu", "state": "critical"}),
        )
        .collect();
    let body = Value::Array(events).to_string();
    let json = [("Content-Type", "application/json")];
    let res = http_request(server.http, "POST", "/api/event", &json, body.as_bytes()).await;
    assert_eq!(res.status, 200, "{}", res.body);

    // Ingest answers while the alerts go out.
    let status = riemann_client_send(&server, &["-h", "web10", "-S", "cpu", "-s", "ok"]).await;
    assert!(status.success(), "riemann-client send: {status:?}");

    // Until every alert is sent or dropped: the queue stays within its bound.
    let most_waiting = std::sync::atomic::AtomicU64::new(0);
    let drained = eventually(
        Duration::from_secs(50),
        "every alert sent or dropped",
        || {
            let (server, sent, dropped, queue) = (&server, &sent, &dropped, &queue);
            let most_waiting = &most_waiting;
            async move {
                let waiting = server.metric(queue).await;
                most_waiting.fetch_max(waiting, std::sync::atomic::Ordering::Relaxed);
                let (sent, dropped) = (server.metric(sent).await, server.metric(dropped).await);
                if waiting == 0 && sent + dropped >= KEYS {
                    Ok((sent, dropped))
                } else {
                    Err(format!("sent {sent}, dropped {dropped}, waiting {waiting}"))
                }
            }
        },
    )
    .await;
    let (sent_alerts, dropped_alerts) = drained;
    let most_waiting = most_waiting.into_inner();
    assert!(most_waiting <= 10_000, "queue reached {most_waiting}");
    assert_eq!(server.metric("statecast_alerts_firing").await, KEYS);
    assert_eq!(server.metric(&failed).await, 0);

    let posts = fake.posts();
    let largest = posts.iter().map(|p| p.hosts.len()).max().unwrap_or(0);
    assert!(largest <= 64, "a POST of {largest} alerts");
    assert!(posts.iter().all(|p| p.status == 200));
    // Counted per alert in each POST taken (an alert sent twice, after a resync, counts twice).
    let posted: usize = posts.iter().map(|p| p.hosts.len()).sum();
    assert_eq!(posted as u64, sent_alerts, "dropped {dropped_alerts}");
    let forwarded: std::collections::HashSet<&str> = posts
        .iter()
        .flat_map(|p| p.hosts.iter().map(String::as_str))
        .collect();
    let forwarded = forwarded.len() as u64;
    eventually(
        NOTIFIED,
        "Alertmanager holds every alert it was sent",
        || async {
            let held = am.active_alerts().await?;
            if held == forwarded {
                Ok(())
            } else {
                Err(format!("holds {held} of {forwarded}"))
            }
        },
    )
    .await;
}

/// The Alertmanager configurations in the README's "Notifications through Alertmanager" section
/// pass Debian's `amtool check-config`.
#[test]
fn the_readme_alertmanager_configurations_pass_amtool() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let section = readme
        .split("## Notifications through Alertmanager")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README has the section");
    let configs: Vec<&str> = section
        .split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .collect();
    assert!(
        configs.len() >= 2,
        "webhook, and mail and Slack: {configs:?}"
    );
    let dir = fresh_dir("amtool");
    for (i, config) in configs.iter().enumerate() {
        let file = dir.join(format!("alertmanager-{i}.yml"));
        std::fs::write(&file, config).expect("write the configuration");
        let output = std::process::Command::new("/usr/bin/amtool")
            .arg("check-config")
            .arg(&file)
            .output()
            .expect("run amtool (installed with prometheus-alertmanager)");
        assert!(
            output.status.success(),
            "README configuration {i} does not pass amtool:\n{config}\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An `https://` Alertmanager (Alertmanager itself serving TLS, with a certificate from a private
/// CA): with `--alertmanager-ca` naming that CA the alert gets through; trusting the system's
/// store only, the certificate is refused and nothing is sent.
#[tokio::test]
async fn an_https_alertmanager_is_trusted_through_its_ca_and_only_then() {
    let dir = fresh_dir("alertmanager-tls");
    let ca = crate::tls::Ca::new(&dir, "alerting");
    let (cert, key) = ca.leaf("alertmanager", true);
    let webhook = Webhook::start().await;
    let am = Alertmanager::start_tls(&webhook, &cert, &key);
    // Listening before statecast starts, so every failure counted below is the TLS refusal.
    eventually(NOTIFIED, "Alertmanager listens", || async {
        tokio::net::TcpStream::connect(am.addr)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
    let url = am.url();
    assert!(url.starts_with("https://"), "{url}");
    let ca_path = ca.cert.display().to_string();
    let trusting = InProcess::start(&[
        "--alertmanager",
        &url,
        "--alertmanager-ca",
        &ca_path,
        "--alert-resend",
        "1s",
    ]);
    let untrusting = InProcess::start(&["--alertmanager", &url, "--alert-resend", "1s"]);
    let failed = format!("statecast_alerts_failed_total{{alertmanager=\"{url}\"}}");
    let sent = format!("statecast_alerts_sent_total{{alertmanager=\"{url}\"}}");

    send(&untrusting, "web11", "critical").await;
    untrusting.wait_for_metric(&failed, 1).await;
    send(&trusting, "web12", "critical").await;
    let firing = notified(&webhook, &am, "web12", "firing", 1).await;
    assert_eq!(firing["labels"]["state"], "critical");
    assert!(trusting.metric(&sent).await >= 1);

    assert_eq!(
        untrusting.metric(&sent).await,
        0,
        "an unknown CA is refused"
    );
    let status = http_request(untrusting.http, "GET", "/api/alerting", &[], b"")
        .await
        .json();
    let error = status["alertmanagers"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("TLS handshake"), "{status}");
    assert!(webhook.matching("firing", &[("host", "web11")]).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET /api/alerting` takes the dashboard token, like `/api/state`, and says "off" without
/// `--alertmanager`.
#[tokio::test]
async fn the_alerting_status_follows_the_dashboard_token() {
    let server = InProcess::start(&["--dashboard-token", "view-secret"]);
    let none = http_request(server.http, "GET", "/api/alerting", &[], b"").await;
    assert_eq!(none.status, 401, "{}", none.body);
    let path = "/api/alerting?token=view-secret";
    let off = http_request(server.http, "GET", path, &[], b"").await;
    assert_eq!(off.status, 200, "{}", off.body);
    assert_eq!(off.json(), serde_json::json!({"enabled": false}));
}
