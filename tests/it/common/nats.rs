//! Debian's `nats-server` with JetStream for the cluster tests: one server, or a NATS cluster of
//! several, each on loopback ports of its own with its own store directory and log file. Servers
//! can be killed (`kill -9`) and restarted on the same ports and store, as an operator's would;
//! everything is killed and removed on drop. Plus the statecast side: the `--cluster …` flags of
//! a node, a wait for its `/readyz`, its labelled metrics, and a JetStream client for what a test
//! does to the stream itself (read its state, purge its beginning).
//!
//! `scripts/test` installs `nats-server` (apt); a missing one is a failure, never a skip.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{fresh_dir, http_request, reserved_port, start_server_in, Addrs, Server, TIMEOUT};

const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// How long a NATS server (or a NATS cluster electing its JetStream leader) may take to be ready.
pub const NATS_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One `nats-server` process of a [`Nats`] deployment.
pub struct NatsServer {
    pub name: String,
    /// Client port (`nats://127.0.0.1:port`).
    pub port: u16,
    /// Monitoring port (`/healthz`, `/jsz`).
    pub monitor_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn spawn(&mut self) {
        assert!(
            Path::new(NATS_SERVER).exists(),
            "{NATS_SERVER} is missing: install nats-server (scripts/test does)"
        );
        let child = Command::new(NATS_SERVER)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
    }

    /// `kill -9` and reap: the server gets no chance to say goodbye to clients or routes.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `GET /healthz` on the monitoring port answered 200: listening, and with JetStream current
    /// (in a cluster: a meta leader is elected and this server has caught up with it).
    fn healthy(&mut self) -> Result<(), String> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!("nats-server {} exited: {status}", self.name));
            }
        } else {
            return Err(format!("nats-server {} is not running", self.name));
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], self.monitor_port));
        let response = blocking_get(addr, "/healthz").map_err(|e| e.to_string())?;
        if response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200") {
            Ok(())
        } else {
            Err(response.lines().last().unwrap_or_default().to_owned())
        }
    }
}

/// A plain blocking HTTP GET (the harness waits outside any runtime).
fn blocking_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// A NATS deployment for one test: one JetStream server, or a cluster of them.
pub struct Nats {
    pub servers: Vec<NatsServer>,
    dir: PathBuf,
}

/// The JetStream file store of a test server unless a test asks for another.
const DEFAULT_FILE_STORE: &str = "4GB";

impl Nats {
    /// One `nats-server` with JetStream, ready.
    pub fn single() -> Self {
        Self::start(1)
    }

    /// [`Nats::cluster`] with `extra(i)` appended to server `i`'s configuration (e.g. an
    /// `authorization` block of its own), ready.
    pub fn cluster_with(n: usize, extra: impl Fn(usize) -> String) -> Self {
        assert!(n >= 2, "a NATS cluster has at least 2 servers");
        Self::start_with(n, DEFAULT_FILE_STORE, extra)
    }

    /// One `nats-server` whose JetStream file store is `max_file_store` (its config syntax: `64MB`).
    pub fn single_with_store(max_file_store: &str) -> Self {
        Self::start_with(1, max_file_store, |_| String::new())
    }

    /// A NATS cluster of `n` servers with JetStream (streams with up to `n` replicas), ready:
    /// routes formed and a JetStream meta leader elected.
    pub fn cluster(n: usize) -> Self {
        assert!(n >= 2, "a NATS cluster has at least 2 servers");
        Self::start(n)
    }

    fn start(n: usize) -> Self {
        Self::start_with(n, DEFAULT_FILE_STORE, |_| String::new())
    }

    fn start_with(n: usize, max_file_store: &str, extra: impl Fn(usize) -> String) -> Self {
        let dir = fresh_dir("nats");
        let cluster_ports: Vec<u16> = (0..n).map(|_| reserved_port()).collect();
        let mut servers = Vec::with_capacity(n);
        for (i, cluster_port) in cluster_ports.iter().enumerate() {
            let name = format!("n{i}");
            let port = reserved_port();
            let monitor_port = reserved_port();
            let store = dir.join(format!("store-{name}"));
            let log = dir.join(format!("{name}.log"));
            let mut config = format!(
                "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor_port}\"\n\
                 log_file: {log:?}\n\
                 jetstream {{\n  store_dir: {store:?}\n  max_memory_store: 64MB\n  max_file_store: {max_file_store}\n}}\n"
            );
            if n > 1 {
                let routes: Vec<String> = cluster_ports
                    .iter()
                    .filter(|p| *p != cluster_port)
                    .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                    .collect();
                config.push_str(&format!(
                    "cluster {{\n  name: statecast-test\n  listen: \"127.0.0.1:{cluster_port}\"\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                ));
            }
            config.push_str(&extra(i));
            let config_path = dir.join(format!("{name}.conf"));
            std::fs::write(&config_path, config).expect("write the nats-server config");
            servers.push(NatsServer {
                name,
                port,
                monitor_port,
                config: config_path,
                log,
                child: None,
            });
        }
        let mut nats = Self { servers, dir };
        for server in &mut nats.servers {
            server.spawn();
        }
        nats.wait_ready();
        nats
    }

    /// Every server's client URL, comma-separated: the value of `--cluster`.
    pub fn url(&self) -> String {
        self.servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The first running server's URL (for the test's own client).
    pub fn any_url(&self) -> String {
        self.servers
            .iter()
            .find(|s| s.is_running())
            .map(NatsServer::url)
            .expect("no nats-server is running")
    }

    /// `kill -9` server `i`.
    pub fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// `kill -9` every server: NATS is unreachable.
    pub fn kill_all(&mut self) {
        for server in &mut self.servers {
            server.kill();
        }
    }

    /// Starts server `i` again on the same ports, store and config, and waits until every
    /// running server is ready again.
    pub fn restart(&mut self, i: usize) {
        assert!(!self.servers[i].is_running(), "nats-server {i} is running");
        self.servers[i].spawn();
        self.wait_ready();
    }

    /// Starts every stopped server again (same ports and stores) and waits until all are ready.
    pub fn restart_all(&mut self) {
        for server in &mut self.servers {
            if !server.is_running() {
                server.spawn();
            }
        }
        self.wait_ready();
    }

    /// Waits (up to [`NATS_READY_TIMEOUT`]) until every running server answers `/healthz` 200.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + NATS_READY_TIMEOUT;
        for server in self.servers.iter_mut().filter(|s| s.is_running()) {
            loop {
                match server.healthy() {
                    Ok(()) => break,
                    Err(why) if Instant::now() > deadline => panic!(
                        "nats-server {} not ready within {NATS_READY_TIMEOUT:?}: {why}; log:\n{}",
                        server.name,
                        server.log()
                    ),
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }

    /// Every server's log, for failure messages.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("--- nats-server {} ---\n{}", s.name, s.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A JetStream client of this deployment (connected to every server, so it survives one).
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let urls: Vec<async_nats::ServerAddr> = self
            .servers
            .iter()
            .filter(|s| s.is_running())
            .map(|s| s.url().parse().expect("a nats URL"))
            .collect();
        let client = tokio::time::timeout(TIMEOUT, async_nats::connect(urls))
            .await
            .expect("connecting to nats-server timed out")
            .expect("connect to nats-server");
        async_nats::jetstream::new(client)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill_all();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("nats-server logs and stores kept in {}", self.dir.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// statecast nodes in cluster mode
// ---------------------------------------------------------------------------------------------

/// What every node of one test's cluster shares: the NATS URL and the stream's name.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub url: String,
    pub stream: String,
    /// Flags every node gets after the `--cluster…` ones (e.g. `--reap-interval`).
    pub extra: Vec<String>,
}

impl ClusterSpec {
    /// A stream of this deployment, named after the test so streams never mix.
    pub fn new(nats: &Nats, stream: &str) -> Self {
        Self {
            url: nats.url(),
            stream: stream.to_owned(),
            extra: vec![
                // Tests keep the stream small: the default (1 GiB) is reserved on the NATS store.
                "--cluster-max-bytes".into(),
                "64MiB".into(),
            ],
        }
    }

    pub fn with(mut self, flags: &[&str]) -> Self {
        self.extra.extend(flags.iter().map(|s| (*s).to_owned()));
        self
    }

    /// The flags of node `id`.
    pub fn args(&self, id: &str) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--cluster".into(),
            self.url.clone(),
            "--cluster-stream".into(),
            self.stream.clone(),
            "--cluster-node-id".into(),
            id.to_owned(),
        ];
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Starts node `id` (the real binary) on `data_dir` (kept by the caller, so the node can be
    /// restarted on it) and waits for its ready line; not for `/readyz` (see [`wait_readyz`]).
    pub fn start_node(&self, id: &str, data_dir: &Path, more: &[&str]) -> Server {
        let mut args = self.args(id);
        args.extend(more.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        start_server_in(data_dir, &args)
    }
}

/// A statecast node of a test cluster: the process, its id and its data directory (which
/// outlives the process, for restarts; removed on drop).
pub struct Node {
    pub id: String,
    pub data_dir: PathBuf,
    pub server: Option<Server>,
}

impl Node {
    /// Starts node `id` with a fresh data directory and waits until `/readyz` says it caught up.
    pub async fn start(spec: &ClusterSpec, id: &str) -> Self {
        let data_dir = fresh_dir(&format!("node-{id}"));
        let server = spec.start_node(id, &data_dir, &[]);
        wait_readyz(&server).await;
        Self {
            id: id.to_owned(),
            data_dir,
            server: Some(server),
        }
    }

    /// The running process (panics when it was killed).
    pub fn server(&self) -> &Server {
        self.server
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is not running", self.id))
    }

    /// `kill -9` the process; the data directory stays.
    pub fn kill_9(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill_9();
            drop(server); // reaps it
        }
    }

    /// Starts the process again on the same data directory and waits for `/readyz` 200.
    pub async fn restart(&mut self, spec: &ClusterSpec) {
        assert!(self.server.is_none(), "node {} is running", self.id);
        let server = spec.start_node(&self.id, &self.data_dir, &[]);
        wait_readyz(&server).await;
        self.server = Some(server);
    }
}

impl std::ops::Deref for Node {
    type Target = Addrs;

    fn deref(&self) -> &Addrs {
        self.server()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            if std::thread::panicking() {
                eprintln!(
                    "--- statecast node {} stderr ---\n{}",
                    self.id,
                    server.stderr()
                );
            }
            drop(server);
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// How long a node may take to catch up with the stream (`/readyz` 200).
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits (up to [`CATCH_UP_TIMEOUT`]) for `GET /readyz` 200: caught up with the stream.
pub async fn wait_readyz(server: &Addrs) {
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        let response = http_request(server.http, "GET", "/readyz", &[], b"").await;
        if response.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz of {} still {} after {CATCH_UP_TIMEOUT:?}: {}",
            server.http,
            response.status,
            response.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /readyz`'s status right now.
pub async fn readyz_status(server: &Addrs) -> u16 {
    http_request(server.http, "GET", "/readyz", &[], b"")
        .await
        .status
}

/// The value of the first `/metrics` line whose name (labels included) starts with `prefix`,
/// e.g. `statecast_cluster_info{` or `statecast_cluster_applied_seq`; `None` when absent.
pub async fn metric_line(server: &Addrs, prefix: &str) -> Option<(String, f64)> {
    let response = http_request(server.http, "GET", "/metrics", &[], b"").await;
    assert_eq!(response.status, 200, "GET /metrics: {}", response.body);
    response.body.lines().find_map(|line| {
        if line.starts_with('#') || !line.starts_with(prefix) {
            return None;
        }
        let (key, value) = line.rsplit_once(' ')?;
        Some((key.to_owned(), value.trim().parse().ok()?))
    })
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `timeout`; panics with
/// `what` (and the last answer) when it does not.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: not within {timeout:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
