//! Wiring: binds every listener, starts the engine and the transports, and shuts them down in
//! order on one signal.
//!
//! [`start`] is three steps: bind every listener (before anything is spawned, so that a port in
//! use is a clean startup error), start the engine (joining the cluster in cluster mode), then
//! the transports. Each transport is given the one [`Lifecycle`] (shutdown signal, task
//! tracking, counters): on its signal listeners stop accepting, connections answer what they
//! already read, websockets close with 1001, and the engine stops last, once the final handle to
//! it is gone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::cluster;
use crate::config::Config;
use crate::engine::{self, EngineHandle};
use crate::ingest::{tcp, udp};
use crate::lifecycle::{Lifecycle, Stopped};
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

/// Starts the server: bind every listener, then the engine (and the cluster), then the
/// transports, each given the one [`Lifecycle`].
pub async fn start(config: Config) -> Result<Running, StartError> {
    // First: SIGHUP's default action ends the process, and an operator reloading certificates
    // (or a terminal hanging up) must never stop the server.
    let hangups = Hangups::listen();
    check_settings(&config)?;
    let alerts = config.alerts().map_err(StartError::Config)?;
    // Before binding: a bad certificate is a startup error like a bad flag.
    let certificates = match config.tls_files().map_err(StartError::Config)? {
        Some(files) => Some(Arc::new(
            tls::Certificates::load(files, config.tls_handshake_timeout)
                .map_err(StartError::Config)?,
        )),
        None => None,
    };
    let listeners = Listeners::bind(&config).await?;
    // After binding (a port in use stays a one-line error), before the "listening" lines.
    let fd_budget_exceeded = check_fd_budget(&config);
    listeners.log(config.https);

    let life = Lifecycle::new();
    Counters::add(
        &life.counters().fd_budget_exceeded,
        u64::from(fd_budget_exceeded),
    );
    let engine = start_engine(&config, &life).await?;
    if let Some(alerts) = alerts {
        crate::alert::start(alerts, engine.parts.handle.clone(), &life);
    }

    let (tcp_addr, udp_addr, tls_tcp_addr, http_addr) = (
        listeners.tcp_addr,
        listeners.udp_addr,
        listeners.tls_tcp_addr,
        listeners.http_addr,
    );
    start_transports(
        &config,
        &life,
        listeners,
        engine.parts,
        certificates,
        hangups,
    );
    Ok(Running {
        tcp_addr,
        udp_addr,
        http_addr,
        tls_tcp_addr,
        https: config.https,
        counters: Arc::clone(life.counters()),
        shutdown: life.shutdown().clone(),
        done: tokio::spawn(stop_in_order(life, config.shutdown_grace, engine.task)),
    })
}

/// What is checked of the settings before anything is opened.
fn check_settings(config: &Config) -> Result<(), StartError> {
    if let Some(pattern) = &config.allowed_origin {
        web::access::validate_origin_pattern(pattern)
            .map_err(|error| StartError::Config(crate::startup_file::shorten(&error, pattern)))?;
    }
    if let Some(cluster) = config.cluster() {
        cluster
            .validate()
            .map_err(|e| StartError::Config(e.to_string()))?;
    }
    Ok(())
}

/// Every listener, bound before anything is spawned so that a port in use is a clean startup
/// error, and the addresses they got.
struct Listeners {
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
    tls_tcp: Option<TcpListener>,
    http: TcpListener,
    tcp_addr: Option<SocketAddr>,
    udp_addr: Option<SocketAddr>,
    tls_tcp_addr: Option<SocketAddr>,
    http_addr: SocketAddr,
}

impl Listeners {
    async fn bind(config: &Config) -> Result<Self, StartError> {
        let tcp = match config.tcp {
            Some(addr) => Some(bind_tcp("riemann tcp", addr).await?),
            None => None,
        };
        let udp = match config.udp {
            Some(addr) => {
                Some(
                    UdpSocket::bind(addr)
                        .await
                        .map_err(|source| StartError::Listen {
                            what: "riemann udp",
                            addr,
                            source,
                        })?,
                )
            }
            None => None,
        };
        let tls_tcp = match config.tls_tcp {
            Some(addr) => Some(bind_tcp("riemann tls", addr).await?),
            None => None,
        };
        let http = bind_tcp("http", config.http).await?;
        Ok(Self {
            tcp_addr: tcp.as_ref().and_then(|l| l.local_addr().ok()),
            udp_addr: udp.as_ref().and_then(|s| s.local_addr().ok()),
            tls_tcp_addr: tls_tcp.as_ref().and_then(|l| l.local_addr().ok()),
            http_addr: http.local_addr().unwrap_or(config.http),
            tcp,
            udp,
            tls_tcp,
            http,
        })
    }

    /// One "listening" line per listener.
    fn log(&self, https: bool) {
        if let Some(addr) = self.tcp_addr {
            tracing::info!(%addr, "riemann tcp listening");
        }
        if let Some(addr) = self.udp_addr {
            tracing::info!(%addr, "riemann udp listening");
        }
        if let Some(addr) = self.tls_tcp_addr {
            tracing::info!(%addr, "riemann tls listening");
        }
        let scheme = if https { "https" } else { "http" };
        tracing::info!(addr = %self.http_addr, "{scheme} listening (dashboard /, websocket /ws, POST /api/event)");
    }
}

/// The started engine: its task (awaited last at shutdown) and what the transports need of it.
struct Engine {
    task: tokio::task::JoinHandle<()>,
    parts: EngineParts,
}

/// What the transports need of the engine.
struct EngineParts {
    handle: EngineHandle,
    /// What dashboards resume against: the cluster's, the store's, or this process's.
    epoch: String,
    /// The store, for history reads.
    history: Option<Arc<Store>>,
    /// Metric series, for `GET /api/series` (`--series on`).
    series: Option<crate::series::SeriesReader>,
}

/// Joins the cluster (cluster mode), opens the store and starts the engine; in cluster mode the
/// engine follows the stream and its handle publishes to it.
async fn start_engine(config: &Config, life: &Lifecycle) -> Result<Engine, StartError> {
    let mut engine_config = config.engine();
    let mut joined = match config.cluster() {
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
    let (store, local_epoch) = open_store(config)?;
    let counters = life.counters();
    if let Some((_, recovered)) = &store {
        Counters::add(&counters.log_replayed, recovered.replay.replayed as u64);
        Counters::add(&counters.log_skipped, recovered.replay.skipped as u64);
        let damaged_tail = u64::from(recovered.replay.damaged_tail);
        Counters::add(&counters.log_damaged_tail, damaged_tail);
    }
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
    let series = start_series(config);
    engine_config.series = series.as_ref().map(|series| series.feed.clone());
    let (handle, task) = engine::spawn(engine_config, Arc::clone(counters), store, image);
    // The series thread ends once the engine (holding its feed) has stopped, after writing what
    // it holds: awaited with the engine.
    let (task, series) = match series {
        Some(crate::series::Series { thread, reader, .. }) => {
            let both = tokio::spawn(async move {
                let _ = task.await;
                let _ = thread.await;
            });
            (both, Some(reader))
        }
        None => (task, None),
    };
    let (handle, epoch) = match joined {
        Some(joined) => {
            let epoch = joined.epoch.clone();
            let handle = joined.run(
                handle,
                config.reap_interval,
                counters,
                life.shutdown(),
                life.force_stop(),
                life.tasks(),
            );
            (handle, epoch)
        }
        None => (handle, local_epoch),
    };
    Ok(Engine {
        task,
        parts: EngineParts {
            handle,
            epoch,
            history,
            series,
        },
    })
}

/// Starts the series thread (`--series on`) over `series.redb` in the data directory. A series
/// file that cannot be opened does not stop the server (series are derived data): one ERROR
/// line, and series are kept in memory instead.
fn start_series(config: &Config) -> Option<crate::series::Series> {
    let settings = config.series()?;
    let dir = config.data_dir.as_deref();
    match crate::series::start(settings, dir) {
        Ok(series) => Some(series),
        Err(error) => {
            tracing::error!(%error, "cannot open the series store; series are kept in memory only until a restart");
            crate::series::start(settings, None).ok()
        }
    }
}

/// Spawns every transport on its listener, and the tasks beside them (SIGHUP, stats).
fn start_transports(
    config: &Config,
    life: &Lifecycle,
    listeners: Listeners,
    engine: EngineParts,
    certificates: Option<Arc<tls::Certificates>>,
    hangups: Hangups,
) {
    let riemann = tcp::Shared::new(config.tcp(), engine.handle.clone(), life);
    if let Some(listener) = listeners.tcp {
        life.spawn(tcp::serve(listener, None, riemann.clone()));
    }
    if let (Some(listener), Some(certificates)) = (listeners.tls_tcp, &certificates) {
        life.spawn(tcp::serve(listener, Some(certificates.riemann()), riemann));
    }
    life.spawn(hangups.serve(certificates.clone(), life.clone()));
    if let Some(socket) = listeners.udp {
        life.spawn(udp::serve(
            socket,
            config.max_datagram_bytes,
            config.event_limits(),
            engine.handle.clone(),
            life.clone(),
        ));
    }
    let https = certificates
        .as_ref()
        .filter(|_| config.https)
        .map(|c| c.http());
    serve_http(
        config,
        life,
        listeners.http,
        listeners.http_addr,
        https,
        engine,
    );
}

/// The HTTP server (dashboard, API, websockets) and the stats frames it sends.
fn serve_http(
    config: &Config,
    life: &Lifecycle,
    listener: TcpListener,
    http_addr: SocketAddr,
    https: Option<tls::TlsAcceptor>,
    engine: EngineParts,
) {
    let counters = life.counters();
    // A placeholder until the ticker's first frame: a connection never sends the value it finds
    // (it waits for the next one built), but it is a whole frame all the same.
    let (stats_tx, stats_rx) = watch::channel(web::first_stats_frame(config.stats_interval));
    let rates = Arc::new(web::rates::RateRing::new(config.stats_interval));
    life.spawn(web::stats_ticker(
        Arc::clone(counters),
        config.stats_interval,
        stats_tx,
        Arc::clone(&rates),
        life.shutdown().clone(),
    ));
    let app = web::AppState {
        engine: engine.handle,
        counters: Arc::clone(counters),
        shutdown: life.shutdown().clone(),
        tasks: life.tasks().clone(),
        stats: stats_rx,
        ws_permits: Arc::new(Semaphore::new(config.max_ws_connections)),
        ws: config.ws(),
        access: Arc::new(config.access(http_addr)),
        max_body_bytes: config.max_body_bytes,
        store: engine.history,
        series: engine.series,
        epoch: engine.epoch,
        json_limits: config.json_limits(),
        body_timeout: config.http_body_timeout,
        rates,
        large_reads: web::large_reads::LargeReads::new(config.max_large_reads),
        prometheus_max_keys: config.prometheus_max_keys,
    };
    let ingest_routes = crate::ingest::http::routes(&app);
    let router = web::router(app, ingest_routes);
    life.spawn(web::http_server::serve(
        listener,
        https,
        router,
        config.http_limits(),
        Arc::clone(counters),
        life.shutdown().clone(),
        life.force_stop().clone(),
        life.tasks().clone(),
    ));
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

    async fn serve(self, certificates: Option<Arc<tls::Certificates>>, life: Lifecycle) {
        let Some(mut hangups) = self.0 else { return };
        loop {
            tokio::select! {
                _ = life.shutdown().cancelled() => return,
                received = hangups.recv() => if received.is_none() { return },
            }
            let counters = life.counters();
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
async fn stop_in_order(life: Lifecycle, grace: Duration, engine_task: tokio::task::JoinHandle<()>) {
    if let Stopped::Forced { remaining } = life.stopped(grace, FORCED_STOP_WAIT).await {
        if remaining > 0 {
            tracing::warn!(
                remaining,
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
