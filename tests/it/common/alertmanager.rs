//! Debian's `prometheus-alertmanager` for the alerting tests, and the webhook receiver it
//! notifies, which the test serves itself: Alertmanager on a loopback port of its own (no
//! clustering), each alert its own group, small waits, every notification (firing and resolved)
//! sent to the webhook; killed (`kill -9`) and restarted on the same port as an operator's would
//! be; everything killed and removed on drop.
//!
//! `scripts/test` installs `prometheus-alertmanager` (apt); a missing binary is a failure, never
//! a skip. The package's own service is not used.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
                store.lock().unwrap().extend(alerts.unwrap_or_default());
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
}

impl Alertmanager {
    /// An Alertmanager on a reserved port, not started yet: the port is known (to give statecast)
    /// before anything listens on it.
    pub fn configured(webhook: &Webhook) -> Self {
        assert!(
            Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} is missing: install prometheus-alertmanager (scripts/test does)"
        );
        let dir = fresh_dir("alertmanager");
        std::fs::write(dir.join("alertmanager.yml"), config(&webhook.url))
            .expect("write alertmanager.yml");
        Self {
            addr: ([127, 0, 0, 1], reserved_port()).into(),
            dir,
            child: None,
        }
    }

    /// Configured and started.
    pub fn start(webhook: &Webhook) -> Self {
        let mut alertmanager = Self::configured(webhook);
        alertmanager.spawn();
        alertmanager
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the process (again), with empty storage: what it held died with it.
    pub fn spawn(&mut self) {
        let storage = self.dir.join("data");
        let _ = std::fs::remove_dir_all(&storage);
        let log = std::fs::File::create(self.dir.join("alertmanager.log")).expect("log file");
        let child = Command::new(ALERTMANAGER)
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
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Each alert its own group, notified at once and on every change (firing or resolved).
fn config(webhook: &str) -> String {
    format!(
        "route:\n  receiver: hook\n  group_by: ['...']\n  group_wait: 100ms\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: hook\n    webhook_configs:\n      - url: '{webhook}'\n        send_resolved: true\n"
    )
}
