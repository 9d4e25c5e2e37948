//! Debian's `prometheus-alertmanager` for the alerting tests, and the webhook receiver it
//! notifies, which the test serves itself: Alertmanager on a loopback port of its own (no
//! clustering), each alert its own group, small waits, every notification (firing and resolved)
//! sent to the webhook; killed (`kill -9`) and restarted on the same port as an operator's would
//! be; everything killed and removed on drop.
//!
//! `scripts/test` installs `prometheus-alertmanager` (apt); a missing binary is a failure, never
//! a skip. The package's own service is not used.
//!
//! [`FakeAlertmanager`] stands where an Alertmanager would, for what a real one does not do on
//! demand: answer 400 or 500, or show how statecast batched its POSTs (passing them on to a real
//! one).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::post;
use axum::Json;
use serde_json::Value;

use super::{fresh_dir, http_request, reserved_port};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// A webhook receiver: every alert of every notification it got, in arrival order (each alert
/// object carries its own `status`, `labels`, `annotations`, `generatorURL`).
pub struct Webhook {
    pub url: String,
    received: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    /// Serves `POST /hook` on an ephemeral loopback port of the test's runtime.
    pub async fn start() -> Self {
        let received: Arc<Mutex<Vec<Value>>> = Arc::default();
        let store = Arc::clone(&received);
        let app = axum::Router::new().route(
            "/hook",
            post(move |Json(notification): Json<Value>| async move {
                let alerts = notification["alerts"].as_array().cloned();
                let alerts = alerts.unwrap_or_default();
                // One line per notification received (its first alerts): `cargo test alerting -- --nocapture` shows what
                // reached the receiver in each case (and a failing test's output shows it too).
                let shown: Vec<String> = alerts
                    .iter()
                    .take(3)
                    .map(|alert| format!("{} {}", alert["status"], alert["labels"]))
                    .collect();
                println!(
                    "webhook received {} alert(s): {}",
                    alerts.len(),
                    shown.join("; ")
                );
                store.lock().unwrap().extend(alerts);
                "ok"
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook");
        let addr = listener.local_addr().expect("webhook address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/hook"),
            received,
            task,
        }
    }

    /// Every alert received so far.
    pub fn alerts(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// The alerts received so far whose labels include every (name, value) of `labels` and
    /// whose status is `status` (`firing`, `resolved`).
    pub fn matching(&self, status: &str, labels: &[(&str, &str)]) -> Vec<Value> {
        self.alerts()
            .into_iter()
            .filter(|alert| {
                alert["status"] == status
                    && labels
                        .iter()
                        .all(|(name, value)| alert["labels"][name] == *value)
            })
            .collect()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running (or killed) Alertmanager.
pub struct Alertmanager {
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
    /// Serving TLS with this certificate and key (`--web.config.file`): its URL is https.
    tls: Option<(PathBuf, PathBuf)>,
}

impl Alertmanager {
    /// An Alertmanager on a reserved port, not started yet: the port is known (to give statecast)
    /// before anything listens on it.
    pub fn configured(webhook: &Webhook) -> Self {
        Self::configured_grouped_by(webhook, "['...']")
    }

    /// Configured, with the route's `group_by` (YAML, e.g. `['alertname']`: one group, one
    /// notification for many alerts).
    pub fn configured_grouped_by(webhook: &Webhook, group_by: &str) -> Self {
        assert!(
            Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} is missing: install prometheus-alertmanager (scripts/test does)"
        );
        let dir = fresh_dir("alertmanager");
        std::fs::write(dir.join("alertmanager.yml"), config(&webhook.url, group_by))
            .expect("write alertmanager.yml");
        Self {
            addr: ([127, 0, 0, 1], reserved_port()).into(),
            dir,
            child: None,
            tls: None,
        }
    }

    /// Configured with `group_by` (see [`Alertmanager::configured_grouped_by`]) and started.
    pub fn start_grouped_by(webhook: &Webhook, group_by: &str) -> Self {
        let mut alertmanager = Self::configured_grouped_by(webhook, group_by);
        alertmanager.spawn();
        alertmanager
    }

    /// Configured and started.
    pub fn start(webhook: &Webhook) -> Self {
        let mut alertmanager = Self::configured(webhook);
        alertmanager.spawn();
        alertmanager
    }

    /// Configured to serve TLS with `cert` and `key` (PEM files; the certificate must name
    /// 127.0.0.1), and started.
    pub fn start_tls(webhook: &Webhook, cert: &Path, key: &Path) -> Self {
        let mut alertmanager = Self::configured(webhook);
        alertmanager.tls = Some((cert.to_path_buf(), key.to_path_buf()));
        alertmanager.spawn();
        alertmanager
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Starts the process (again), with empty storage: what it held died with it.
    pub fn spawn(&mut self) {
        let storage = self.dir.join("data");
        let _ = std::fs::remove_dir_all(&storage);
        let log = std::fs::File::create(self.dir.join("alertmanager.log")).expect("log file");
        let mut command = Command::new(ALERTMANAGER);
        if let Some((cert, key)) = &self.tls {
            let web = self.dir.join("web.yml");
            let config = format!(
                "tls_server_config:\n  cert_file: '{}'\n  key_file: '{}'\n",
                cert.display(),
                key.display()
            );
            std::fs::write(&web, config).expect("write web.yml");
            command.arg(format!("--web.config.file={}", web.display()));
        }
        let child = command
            .arg(format!(
                "--config.file={}",
                self.dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address={}", self.addr))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus-alertmanager");
        self.child = Some(child);
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Alertmanager's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("alertmanager.log")).unwrap_or_default()
    }

    /// `GET /api/v2/alerts`: the alerts it holds, or why not (not listening yet).
    pub async fn alerts(&self) -> Result<Vec<Value>, String> {
        if tokio::net::TcpStream::connect(self.addr).await.is_err() {
            return Err("alertmanager is not listening".into());
        }
        let response = http_request(self.addr, "GET", "/api/v2/alerts", &[], b"").await;
        if response.status != 200 {
            return Err(format!("{}: {}", response.status, response.body));
        }
        response
            .json()
            .as_array()
            .cloned()
            .ok_or_else(|| response.body.clone())
    }

    /// The active alerts it holds, from its own `/metrics` (`alertmanager_alerts`): cheaper than
    /// listing 100,000 of them.
    pub async fn active_alerts(&self) -> Result<u64, String> {
        if tokio::net::TcpStream::connect(self.addr).await.is_err() {
            return Err("alertmanager is not listening".into());
        }
        let response = http_request(self.addr, "GET", "/metrics", &[], b"").await;
        response
            .body
            .lines()
            .find_map(|line| line.strip_prefix("alertmanager_alerts{state=\"active\"} "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map(|value| value as u64)
            .ok_or_else(|| format!("no alertmanager_alerts in {}", response.status))
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Each alert its own group (`group_by: ['...']`) unless told otherwise, notified at once and on
/// every change (firing or resolved).
fn config(webhook: &str, group_by: &str) -> String {
    format!(
        "route:\n  receiver: hook\n  group_by: {group_by}\n  group_wait: 100ms\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: hook\n    webhook_configs:\n      - url: '{webhook}'\n        send_resolved: true\n"
    )
}

/// One POST a [`FakeAlertmanager`] got: what it answered, and the `host` label of each alert.
#[derive(Debug, Clone)]
pub struct Post {
    pub status: u16,
    pub hosts: Vec<String>,
}

/// An HTTP endpoint in place of an Alertmanager: answers every `POST /api/v2/alerts` with the
/// status it is told (or passes it on to a real Alertmanager and answers what that one did), and
/// records each POST.
pub struct FakeAlertmanager {
    pub url: String,
    answer: Arc<AtomicU16>,
    posts: Arc<Mutex<Vec<Post>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeAlertmanager {
    /// Answers `status` until told otherwise.
    pub async fn answering(status: u16) -> Self {
        Self::serve(status, None).await
    }

    /// Passes every POST on to `real` (answering 502 if it cannot).
    pub async fn forwarding_to(real: &Alertmanager) -> Self {
        Self::serve(0, Some(real.addr)).await
    }

    async fn serve(status: u16, forward: Option<SocketAddr>) -> Self {
        let answer = Arc::new(AtomicU16::new(status));
        let posts: Arc<Mutex<Vec<Post>>> = Arc::default();
        let (told, record) = (Arc::clone(&answer), Arc::clone(&posts));
        let app = axum::Router::new().route(
            "/api/v2/alerts",
            post(move |body: axum::body::Bytes| async move {
                let alerts: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
                let hosts = alerts
                    .iter()
                    .map(|a| a["labels"]["host"].as_str().unwrap_or_default().to_owned())
                    .collect();
                let status = match forward {
                    Some(real) => {
                        let json = [("Content-Type", "application/json")];
                        http_request(real, "POST", "/api/v2/alerts", &json, &body)
                            .await
                            .status
                    }
                    None => told.load(Ordering::Relaxed),
                };
                record.lock().unwrap().push(Post { status, hosts });
                let status = axum::http::StatusCode::from_u16(status)
                    .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
                (status, "told so")
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake alertmanager");
        let addr = listener.local_addr().expect("fake alertmanager address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            answer,
            posts,
            task,
        }
    }

    /// Answers `status` from now on.
    pub fn answer(&self, status: u16) {
        self.answer.store(status, Ordering::Relaxed);
    }

    /// Every POST so far, in arrival order.
    pub fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }
}

impl Drop for FakeAlertmanager {
    fn drop(&mut self) {
        self.task.abort();
    }
}
