//! Wiring: binds every listener, starts the engine and the transports, and shuts them down in
//! order on one signal.
//!
//! Binding happens before anything is spawned so that a port in use is a clean startup error.
//! Shutdown is one [`CancellationToken`] every task hears: listeners stop accepting, connections
//! answer what they already read, websockets close with 1001, and the engine stops last, once the
//! final handle to it is gone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster;
use crate::config::Config;
use crate::engine;
use crate::ingest::{tcp, udp};
use crate::metrics::Counters;
use crate::store::{Recovered, Store, StoreError};
use crate::{tls, web};

/// How long shutdown waits, after ending stuck connections, for their tasks to finish.
const FORCED_STOP_WAIT: Duration = Duration::from_secs(2);
/// How long shutdown waits for the engine's final write.
const ENGINE_STOP_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for {what} on {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("cannot open the data directory {dir}: {source}")]
    Store { dir: String, source: StoreError },
}

/// A started server: its bound addresses and the means to stop it.
pub struct Running {
    pub tcp_addr: Option<SocketAddr>,
    pub udp_addr: Option<SocketAddr>,
    pub http_addr: SocketAddr,
    /// Riemann over TLS (`--tls-tcp`).
    pub tls_tcp_addr: Option<SocketAddr>,
    /// Whether `http_addr` serves HTTPS (`--https`).
    pub https: bool,
    pub counters: Arc<Counters>,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Signals shutdown and waits until everything has stopped.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.done.await;
    }

    /// The ready line: one JSON object naming every bound address (`null` for a listener that is
    /// `off`), e.g. `{"ready":true,"tcp":"127.0.0.1:5555","udp":null,"http":"127.0.0.1:8080"}`.
    /// Scripts and tests wait for it instead of reading log lines, whose wording may change.
    pub fn ready_line(&self) -> String {
        #[derive(serde::Serialize)]
        struct Ready {
            ready: bool,
            tcp: Option<SocketAddr>,
            udp: Option<SocketAddr>,
            http: SocketAddr,
            tls_tcp: Option<SocketAddr>,
            https: bool,
        }
        let ready = Ready {
            ready: true,
            tcp: self.tcp_addr,
            udp: self.udp_addr,
            http: self.http_addr,
            tls_tcp: self.tls_tcp_addr,
            https: self.https,
        };
        // Cannot fail: addresses and a bool always serialize.
        serde_json::to_string(&ready).unwrap_or_default()
    }

    /// Writes the ready line to `path` atomically: to a temporary file beside it, then renamed
    /// into place, so a reader polling for the file never sees it half written.
    pub fn write_ready_file(&self, path: &Path) -> std::io::Result<()> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(format!(".{}.tmp", std::process::id()));
        let temporary = PathBuf::from(temporary);
        std::fs::write(&temporary, format!("{}\n", self.ready_line()))
            .and_then(|()| std::fs::rename(&temporary, path))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&temporary);
            })
    }
}

pub async fn start(config: Config) -> Result<Running, StartError> {
    // First: SIGHUP's default action ends the process, and an operator reloading certificates
    // (or a terminal hanging up) must never stop the server.
    let hangups = Hangups::listen();
    if let Some(pattern) = &config.allowed_origin {
        web::access::validate_origin_pattern(pattern)
            .map_err(|error| StartError::Config(crate::startup_file::shorten(&error, pattern)))?;
    }
    if let Some(cluster) = config.cluster() {
        cluster
            .validate()
            .map_err(|e| StartError::Config(e.to_string()))?;
    }
    // Before binding: a bad certificate is a startup error like a bad flag.
    let certificates = match config.tls_files().map_err(StartError::Config)? {
        Some(files) => Some(Arc::new(
            tls::Certificates::load(files, config.tls_handshake_timeout)
                .map_err(StartError::Config)?,
        )),
        None => None,
    };
    let tcp_listener = match config.tcp {
        Some(addr) => Some(bind_tcp("riemann tcp", addr).await?),
        None => None,
    };
    let udp_socket = match config.udp {
        Some(addr) => Some(
            UdpSocket::bind(addr)
                .await
                .map_err(|source| StartError::Listen {
                    what: "riemann udp",
                    addr,
                    source,
                })?,
        ),
        None => None,
    };
    let tls_tcp_listener = match config.tls_tcp {
        Some(addr) => Some(bind_tcp("riemann tls", addr).await?),
        None => None,
    };
    let http_listener = bind_tcp("http", config.http).await?;

    let tcp_addr = tcp_listener.as_ref().and_then(|l| l.local_addr().ok());
    let udp_addr = udp_socket.as_ref().and_then(|s| s.local_addr().ok());
    let tls_tcp_addr = tls_tcp_listener.as_ref().and_then(|l| l.local_addr().ok());
    let http_addr = http_listener.local_addr().unwrap_or(config.http);
    // After binding (a port in use stays a one-line error), before the "listening" lines.
    let fd_budget_exceeded = check_fd_budget(&config);
    if let Some(addr) = tcp_addr {
        tracing::info!(%addr, "riemann tcp listening");
    }
    if let Some(addr) = udp_addr {
        tracing::info!(%addr, "riemann udp listening");
    }
    if let Some(addr) = tls_tcp_addr {
        tracing::info!(%addr, "riemann tls listening");
    }
    let scheme = if config.https { "https" } else { "http" };
    tracing::info!(addr = %http_addr, "{scheme} listening (dashboard /, websocket /ws, POST /api/event)");

    let counters = Arc::new(Counters::default());
    Counters::add(&counters.fd_budget_exceeded, u64::from(fd_budget_exceeded));
    let shutdown = CancellationToken::new();
    // Heard by connections still busy when the shutdown grace period ends: they stop at once.
    let force_stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let mut engine_config = config.engine();
    let joined = match config.cluster() {
        Some(cluster) => {
            engine_config.local_clock = false;
            let joined = cluster::join(cluster, &engine_config)
                .await
                .map_err(|e| StartError::Config(e.to_string()))?;
            if let Some(dir) = config.data_dir.as_deref() {
                cluster::claim_data_dir(dir, &joined.epoch)
                    .map_err(|e| StartError::Config(e.to_string()))?;
            }
            Some(joined)
        }
        None => None,
    };
    let (store, local_epoch) = open_store(&config)?;
    if let Some((_, recovered)) = &store {
        Counters::add(&counters.log_replayed, recovered.replay.replayed as u64);
        Counters::add(&counters.log_skipped, recovered.replay.skipped as u64);
        let damaged_tail = u64::from(recovered.replay.damaged_tail);
        Counters::add(&counters.log_damaged_tail, damaged_tail);
    }
    let mut joined = joined;
    if let (Some(joined), Some(dir), Some((store, recovered))) =
        (joined.as_mut(), config.data_dir.as_deref(), store.as_ref())
    {
        if let Some((from, to)) = joined.start_from_history(dir, recovered.seq) {
            store
                .record_gap(from, to)
                .map_err(|source| StartError::Store {
                    dir: dir.display().to_string(),
                    source,
                })?;
        }
    }
    let history = store.as_ref().map(|(store, _)| Arc::clone(store));
    let image = joined.as_ref().map(|joined| joined.image.clone());
    let (engine, engine_task) = engine::spawn(engine_config, Arc::clone(&counters), store, image);
    let (engine, epoch) = match joined {
        Some(joined) => {
            let epoch = joined.epoch.clone();
            let engine = joined.run(
                engine,
                config.reap_interval,
                &counters,
                &shutdown,
                &force_stop,
                &tasks,
            );
            (engine, epoch)
        }
        None => (engine, local_epoch),
    };

    let riemann = tcp::Shared::new(
        config.tcp(),
        engine.clone(),
        Arc::clone(&counters),
        shutdown.clone(),
        force_stop.clone(),
        tasks.clone(),
    );
    if let Some(listener) = tcp_listener {
        tasks.spawn(tcp::serve(listener, None, riemann.clone()));
    }
    if let (Some(listener), Some(certificates)) = (tls_tcp_listener, &certificates) {
        tasks.spawn(tcp::serve(listener, Some(certificates.riemann()), riemann));
    }
    tasks.spawn(hangups.serve(
        certificates.clone(),
        Arc::clone(&counters),
        shutdown.clone(),
    ));
    if let Some(socket) = udp_socket {
        tasks.spawn(udp::serve(
            socket,
            config.max_datagram_bytes,
            config.event_limits(),
            engine.clone(),
            Arc::clone(&counters),
            shutdown.clone(),
        ));
    }

    // A placeholder until the ticker's first frame: a connection never sends the value it finds
    // (it waits for the next one built), but it is a whole frame all the same.
    let first_stats = web::first_stats_frame(config.stats_interval);
    let (stats_tx, stats_rx) = watch::channel(first_stats);
    let rates = Arc::new(web::rates::RateRing::new(config.stats_interval));
    tasks.spawn(web::stats_ticker(
        Arc::clone(&counters),
        config.stats_interval,
        stats_tx,
        Arc::clone(&rates),
        shutdown.clone(),
    ));
    let app = web::AppState {
        engine,
        counters: Arc::clone(&counters),
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
        stats: stats_rx,
        ws_permits: Arc::new(Semaphore::new(config.max_ws_connections)),
        ws: config.ws(),
        access: Arc::new(config.access(http_addr)),
        max_body_bytes: config.max_body_bytes,
        store: history,
        epoch,
        json_limits: config.json_limits(),
        body_timeout: config.http_body_timeout,
        rates,
        large_reads: web::large_reads::LargeReads::new(config.max_large_reads),
    };
    let ingest_routes = crate::ingest::http::routes(&app);
    let router = web::router(app, ingest_routes);
    let https = certificates
        .as_ref()
        .filter(|_| config.https)
        .map(|c| c.http());
    tasks.spawn(web::http_server::serve(
        http_listener,
        https,
        router,
        config.http_limits(),
        Arc::clone(&counters),
        shutdown.clone(),
        force_stop.clone(),
        tasks.clone(),
    ));

    let done = tokio::spawn(stop_in_order(
        shutdown.clone(),
        force_stop,
        config.shutdown_grace,
        tasks,
        engine_task,
    ));
    Ok(Running {
        tcp_addr,
        udp_addr,
        http_addr,
        tls_tcp_addr,
        https: config.https,
        counters,
        shutdown,
        done,
    })
}

/// SIGHUP, handled from the start of [`start`] on: each one reloads what is reloadable (the TLS
/// certificates when a listener uses TLS), says in one log line what it did, and is counted
/// (`statecast_sighups_total`). Nothing else is read again: flags and the config file apply
/// at start only.
struct Hangups(Option<tokio::signal::unix::Signal>);

impl Hangups {
    fn listen() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(hangups) => Self(Some(hangups)),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP: a SIGHUP would stop the server");
                Self(None)
            }
        }
    }

    async fn serve(
        self,
        certificates: Option<Arc<tls::Certificates>>,
        counters: Arc<Counters>,
        shutdown: CancellationToken,
    ) {
        let Some(mut hangups) = self.0 else { return };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = hangups.recv() => if received.is_none() { return },
            }
            match &certificates {
                Some(certificates) => {
                    if !certificates.reload_logged() {
                        Counters::add(&counters.tls_reload_failures, 1);
                    }
                }
                None => tracing::info!(
                    "SIGHUP: nothing to reload (no TLS listener; flags and the config file apply at start only); still serving"
                ),
            }
            // Counted once handled, so a test that sees the count sees the reload's outcome.
            Counters::add(&counters.sighups, 1);
        }
    }
}

/// The store and the epoch clients resume against; without a store the epoch is per process.
/// An opened store with what it recovered.
type Opened = Option<(Arc<Store>, Recovered)>;

fn open_store(config: &Config) -> Result<(Opened, String), StartError> {
    let Some(dir) = config.data_dir.as_deref() else {
        return Ok((None, crate::store::new_epoch()));
    };
    let consent = crate::store::Consent {
        fresh_database: config.allow_fresh_database,
        data_loss: config.allow_data_loss,
    };
    let (store, recovered) =
        Store::open_with(dir, consent).map_err(|source| StartError::Store {
            dir: dir.display().to_string(),
            source,
        })?;
    tracing::info!(dir = %dir.display(), "data directory");
    let epoch = recovered.epoch.clone();
    Ok((Some((Arc::new(store), recovered)), epoch))
}

/// Raises the open-file limit and warns (one line) when the connection limits do not fit in it;
/// whether they do not (`statecast_fd_budget_exceeded`).
fn check_fd_budget(config: &Config) -> bool {
    match crate::fd_limit::raise_to_hard_limit() {
        Ok(limit) => {
            tracing::info!(limit, "open-file limit");
            let mut limits = vec![
                ("--max-http-connections", config.max_http_connections),
                ("--max-tcp-connections", config.max_tcp_connections),
                ("--max-ws-connections", config.max_ws_connections),
            ];
            if config.tls_tcp.is_some() {
                limits.push(("--max-tls-handshakes", config.max_tls_handshakes));
            }
            let warning = crate::fd_limit::budget_warning(limit, &limits);
            if let Some(warning) = &warning {
                tracing::warn!("{warning}");
            }
            warning.is_some()
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit");
            false
        }
    }
}

async fn bind_tcp(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { what, addr, source })
}

/// Stops in order: listeners and connections first (answering what they have read, for up to
/// `grace`, then ending stuck ones), the engine last, so its final write always happens: a
/// client that stopped reading must not cost index updates already acknowledged.
async fn stop_in_order(
    shutdown: CancellationToken,
    force_stop: CancellationToken,
    grace: Duration,
    tasks: TaskTracker,
    engine_task: tokio::task::JoinHandle<()>,
) {
    shutdown.cancelled().await;
    tracing::info!("shutting down: no new connections, answering what is in flight");
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            remaining = tasks.len(),
            grace_secs = grace.as_secs(),
            "connections still open after the grace period (--shutdown-grace); ending them"
        );
        force_stop.cancel();
        if tokio::time::timeout(FORCED_STOP_WAIT, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = tasks.len(),
                "tasks still running after being ended; waiting for the engine anyway"
            );
        }
    }
    // Every engine handle lived in a tracked task; the engine now drains its queue, makes its
    // final write and stops.
    match tokio::time::timeout(ENGINE_STOP_WAIT, engine_task).await {
        Ok(_) => tracing::info!("stopped"),
        Err(_) => tracing::error!(
            wait_secs = ENGINE_STOP_WAIT.as_secs(),
            "the engine did not finish its final write in time; index updates of the last second may be lost"
        ),
    }
}
