//! The server under test, two ways: [`InProcess`] runs `statecast::server::start` inside the test
//! process (for tests that only talk its protocols), [`Server`] runs the real binary (for tests
//! that read its log, signal it, kill it, restart it on the same data, or measure its memory).
//! Both listen on ephemeral loopback ports, own a fresh data directory by default, stop when
//! dropped, and dereference to their [`Addrs`], which is all the protocol helpers need.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;
use statecast::config::Config;

use super::{http_request, TIMEOUT};

/// Where a started server listens.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    pub http: SocketAddr,
}

impl Addrs {
    /// `GET /metrics` and the value of one counter line (`name value`).
    pub async fn metric(&self, name: &str) -> u64 {
        let response = http_request(self.http, "GET", "/metrics", &[], b"").await;
        assert_eq!(response.status, 200, "GET /metrics: {}", response.body);
        response
            .body
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(' ')?;
                (key == name).then(|| value.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{}", response.body))
    }

    /// Waits (up to [`TIMEOUT`]) until the sample `name` of `/metrics` (with its labels, as
    /// written: `statecast_tcp_timeouts_total{reason="idle"}`) is at least `at_least`; returns
    /// it. What a test waits for is state the server exposes, never a log line's wording.
    pub async fn wait_for_metric(&self, name: &str, at_least: u64) -> u64 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let value = self.metric(name).await;
            if value >= at_least {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is {value}, never reached {at_least}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The addresses of the binary's ready line
    /// (`{"ready":true,"tcp":"…","udp":"…","http":"…"}`).
    fn from_ready_line(line: &str) -> Option<Self> {
        let ready: Value = serde_json::from_str(line).ok()?;
        if ready["ready"] != true {
            return None;
        }
        let addr = |name: &str| ready[name].as_str()?.parse().ok();
        Some(Self {
            tcp: addr("tcp")?,
            udp: addr("udp")?,
            http: addr("http")?,
        })
    }
}

/// A fresh, empty directory under the system temp dir, unique to this process and call.
pub fn fresh_dir(what: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "statecast-test-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// The flags every test server starts with: each listener on `127.0.0.1:0`, the data directory.
fn base_args(data_dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"]
        .into_iter()
        .chain(["--http", "127.0.0.1:0", "--data-dir"])
        .map(str::to_owned)
        .collect();
    args.push(data_dir.display().to_string());
    args
}

// ---------------------------------------------------------------------------------------------
// In process
// ---------------------------------------------------------------------------------------------

/// `statecast::server::start` on its own runtime (its own threads, so a test's runtime, or a
/// test blocking its thread, never slows the server), with its own empty data directory.
/// Dropping it shuts the server down gracefully, as SIGTERM would, and removes the directory.
pub struct InProcess {
    addrs: Addrs,
    /// Dropped to shut the server down.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Told when the server has stopped.
    stopped: mpsc::Receiver<()>,
    data_dir: PathBuf,
}

impl InProcess {
    /// Starts a server with the same flags as [`start_server`]: every listener on `127.0.0.1:0`,
    /// a fresh data directory, plus `extra` (which must not repeat those).
    pub fn start(extra: &[&str]) -> Self {
        let data_dir = fresh_dir("data");
        let args = std::iter::once("statecast".to_owned())
            .chain(base_args(&data_dir))
            .chain(extra.iter().map(|s| (*s).to_owned()));
        let config = Config::try_parse_from(args).unwrap_or_else(|e| panic!("bad flags: {e}"));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (stopped_tx, stopped) = mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the server");
            runtime.block_on(async move {
                match statecast::server::start(config).await {
                    Ok(running) => {
                        let addrs = (|| {
                            Some(Addrs {
                                tcp: running.tcp_addr?,
                                udp: running.udp_addr?,
                                http: running.http_addr,
                            })
                        })();
                        let _ = ready_tx.send(addrs.ok_or_else(|| "a listener is off".to_owned()));
                        let _ = stop_rx.await;
                        running.shutdown().await;
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(error.to_string()));
                    }
                }
            });
            let _ = stopped_tx.send(());
        });
        let addrs = match ready_rx.recv_timeout(TIMEOUT) {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(error)) => panic!("statecast did not start: {error}"),
            Err(_) => panic!("statecast did not start within {TIMEOUT:?}"),
        };
        Self {
            addrs,
            stop: Some(stop),
            stopped,
            data_dir,
        }
    }
}

impl Deref for InProcess {
    type Target = Addrs;

    fn deref(&self) -> &Addrs {
        &self.addrs
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        drop(self.stop.take());
        // Connections answer what they read for up to --shutdown-grace (10 s), then are ended.
        let _ = self.stopped.recv_timeout(Duration::from_secs(20));
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// The real `statecast` binary, listening on ephemeral loopback ports. Killed on drop.
pub struct Server {
    addrs: Addrs,
    child: Child,
    /// Every stderr line so far (kept for failure messages).
    stderr: Arc<Mutex<Vec<String>>>,
    /// This server's data directory, removed on drop when `owns_data_dir`.
    data_dir: PathBuf,
    owns_data_dir: bool,
}

/// Starts `statecast` with every listener on `127.0.0.1:0` and its own empty data directory,
/// plus `extra` flags (which must not repeat those: clap refuses a flag given twice), and waits
/// (up to 10 s) for its ready line on stdout.
pub fn start_server(extra: &[&str]) -> Server {
    let mut server = start_server_in(&fresh_dir("data"), extra);
    server.owns_data_dir = true;
    server
}

/// Like [`start_server`], on a data directory the caller keeps (for restarts of the same
/// store); the directory is left in place when the server is dropped.
pub fn start_server_in(data_dir: &Path, extra: &[&str]) -> Server {
    let data_dir = data_dir.to_path_buf();
    let mut child = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(base_args(&data_dir))
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the statecast binary");
    let stderr = child.stderr.take().expect("piped stderr");
    let stdout = child.stdout.take().expect("piped stdout");
    let lines = Arc::new(Mutex::new(Vec::new()));
    {
        let lines = Arc::clone(&lines);
        // Drains stderr for the whole life of the process so the pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
    }
    let (tx, rx) = mpsc::channel::<String>();
    // The ready line is the one line statecast prints on stdout; anything after it is drained.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(TIMEOUT);
    let Some(addrs) = line.as_deref().ok().and_then(Addrs::from_ready_line) else {
        let _ = child.kill();
        let status = child.wait();
        let _ = std::fs::remove_dir_all(&data_dir);
        // Give the stderr thread a moment to collect the last lines before they are shown.
        std::thread::sleep(Duration::from_millis(100));
        panic!(
            "statecast did not print its ready line within {TIMEOUT:?} (got {line:?}, \
             exit: {status:?}); stderr:\n{}",
            lines.lock().unwrap().join("\n")
        );
    };
    Server {
        addrs,
        child,
        stderr: lines,
        data_dir,
        owns_data_dir: false,
    }
}

impl Deref for Server {
    type Target = Addrs;

    fn deref(&self) -> &Addrs {
        &self.addrs
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The log's records so far, for a server started with `--log-format json` (lines that are
    /// not JSON are left out). For tests of the log itself — its format, its rate limits — which
    /// look at a record's fields, never at its wording; every other test waits on what the
    /// server exposes (`/metrics`, `/readyz`, a reply).
    pub fn log_records(&self) -> Vec<Value> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Sends SIGTERM (with the `kill` command, so no libc binding is needed).
    pub fn send_sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits (up to 15 s) for the process to exit and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for statecast") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "statecast did not exit within 15 s; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`: no chance to flush or answer anything.
    pub fn kill_9(&self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -KILL {} failed", self.pid());
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.send_sigterm();
        self.wait_exit()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.owns_data_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Runs the binary on `dir` with `extra` flags until it exits (at most 15 s): its status and
/// stderr. For starts that must fail.
pub fn run_to_exit(dir: &Path, extra: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args([
            "--tcp",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn statecast");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return (status, stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("statecast kept running on {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
