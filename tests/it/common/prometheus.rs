//! Debian's `prometheus` (and its `promtool`) for the Prometheus bridge's tests: a Prometheus
//! server the test starts on a loopback port of its own, scraping statecast every second, with
//! its TSDB in a fresh directory; killed and removed on drop. Queried over its HTTP API, as
//! Grafana does.
//!
//! `scripts/test` installs `prometheus` (apt); a missing binary is a failure, never a skip. The
//! package's own service is not used.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::{fresh_dir, http_request, reserved_port};

const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// One scrape job: statecast's `/api/prometheus` at `target`, with a `query` and a token.
pub struct ScrapeJob<'a> {
    pub target: SocketAddr,
    pub query: &'a str,
    pub token: Option<&'a str>,
}

/// A running Prometheus server.
pub struct Prometheus {
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Child,
}

impl Prometheus {
    /// Starts Prometheus scraping `job` every second.
    pub fn start(job: &ScrapeJob) -> Self {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install prometheus (scripts/test does)"
        );
        let dir = fresh_dir("prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, scrape_config(job)).expect("write prometheus.yml");
        let addr: SocketAddr = ([127, 0, 0, 1], reserved_port()).into();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus log");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        Self { addr, dir, child }
    }

    /// Prometheus's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/query?query=PROMQL`: the `data.result` array, or why there is none (not up
    /// yet, an error answer).
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let answer = tokio::time::timeout(super::TIMEOUT, async {
            // Not up yet: the connection is refused, which `http_request` treats as a failure.
            tokio::net::TcpStream::connect(self.addr).await
        })
        .await;
        if !matches!(answer, Ok(Ok(_))) {
            return Err("prometheus is not listening yet".into());
        }
        let response = http_request(self.addr, "GET", &path, &[], b"").await;
        if response.status != 200 {
            return Err(format!("{}: {}", response.status, response.body));
        }
        let body = response.json();
        body["data"]["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("no data.result: {body}"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The configuration file: one job, scraped every second.
fn scrape_config(job: &ScrapeJob) -> String {
    // YAML single quotes: the query's double quotes stay as they are; a single quote doubles.
    let query = job.query.replace('\'', "''");
    let authorization = job.token.map_or(String::new(), |token| {
        format!("    authorization:\n      credentials: '{token}'\n")
    });
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n  - job_name: statecast\n    metrics_path: /api/prometheus\n\
         \x20   params:\n      query: ['{query}']\n{authorization}\
         \x20   static_configs:\n      - targets: ['{}']\n",
        job.target
    )
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `promtool check metrics` over `exposition` (its stdin): whether it passed, and what it said.
pub fn promtool_check_metrics(exposition: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool (scripts/test installs prometheus)");
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(exposition.as_bytes())
            .expect("write to promtool");
    }
    let output = child.wait_with_output().expect("promtool output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}
