//! Command-line and environment configuration.
//!
//! Every flag can also be set by an environment variable (`STATECAST_…`), so the same binary is
//! configured the same way from a shell, systemd or a container. Defaults listen on loopback
//! only: exposing monitoring data is a decision, not an accident.

use std::net::SocketAddr;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "statecast",
    version,
    about = "Live Riemann state to browser dashboards over websockets"
)]
pub struct Config {
    /// Riemann protobuf over TCP (Riemann's forwarding stream, riemann-client, collectd): an
    /// address to listen on, or `off`.
    #[arg(long, env = "STATECAST_TCP", default_value = "127.0.0.1:5555", value_parser = parse_listen)]
    pub tcp: Listen,

    /// Riemann protobuf over UDP, one Msg per datagram: an address to listen on, or `off`.
    #[arg(long, env = "STATECAST_UDP", default_value = "127.0.0.1:5555", value_parser = parse_listen)]
    pub udp: Listen,

    /// HTTP: dashboard page, websocket /ws, JSON POST /api/event, /metrics.
    #[arg(long, env = "STATECAST_HTTP", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,

    /// The state every (host, service) is assumed to start in; the first event in another state is
    /// a change (Riemann's `changed-state {:init "ok"}`).
    #[arg(long, env = "STATECAST_INIT_STATE", default_value = "ok")]
    pub init_state: String,

    /// Seconds an event stays in the index when it carries no TTL (Riemann's `default-ttl`);
    /// after `time + ttl` it expires, which is a change to state "expired".
    #[arg(long, env = "STATECAST_DEFAULT_TTL", default_value_t = 60.0)]
    pub default_ttl: f64,

    /// Seconds between looks for expired events.
    #[arg(long, env = "STATECAST_REAP_INTERVAL", default_value_t = 5.0)]
    pub reap_interval: f64,

    /// Seconds an expired (host, service) stays on dashboards before it is removed from the
    /// index (and every screen); `0` removes it right after the "expired" change (as Riemann
    /// does); `forever` keeps it until it reports again — the index then grows with every key
    /// ever seen.
    #[arg(long, env = "STATECAST_EXPIRED_KEEP", default_value = "86400", value_parser = parse_keep)]
    pub expired_keep: Keep,

    /// (host, service) keys the index may hold. Past it, a message (or POST) that would add keys
    /// is refused whole (Riemann `ok: false`, HTTP 507) and counted; indexed keys keep updating.
    /// A key costs about 0.7 KiB of memory (measured with 45 bytes of host and service; more with
    /// longer descriptions, tags and attributes): the default bounds the index near 0.7 GiB.
    #[arg(long, env = "STATECAST_MAX_KEYS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_keys: u64,

    /// Directory of the embedded database (index and transition history), created if missing;
    /// `off` keeps everything in memory only (nothing survives a restart; resume always resets).
    #[arg(long, env = "STATECAST_DATA_DIR", default_value = "./statecast-data")]
    pub data_dir: String,

    /// Transitions kept in history at most (oldest pruned first).
    #[arg(
        long,
        env = "STATECAST_HISTORY_MAX_CHANGES",
        default_value_t = 1_000_000
    )]
    pub history_max_changes: u64,

    /// Seconds a transition is kept in history at most (default 7 days).
    #[arg(long, env = "STATECAST_HISTORY_MAX_AGE", default_value_t = 7.0 * 24.0 * 3600.0)]
    pub history_max_age: f64,

    /// Largest Riemann TCP frame accepted, in bytes; a larger announced length gets an error
    /// reply and the connection is closed.
    #[arg(long, env = "STATECAST_MAX_FRAME_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_frame_bytes: usize,

    /// Largest UDP datagram accepted, in bytes (Riemann's default); larger ones are dropped and
    /// counted.
    #[arg(long, env = "STATECAST_MAX_DATAGRAM_BYTES", default_value_t = 16 * 1024)]
    pub max_datagram_bytes: usize,

    /// Largest JSON body accepted by POST /api/event, in bytes; larger gets 413.
    #[arg(long, env = "STATECAST_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Concurrent Riemann TCP connections; past it new connections are closed after a log line.
    #[arg(long, env = "STATECAST_MAX_TCP_CONNECTIONS", default_value_t = 1024)]
    pub max_tcp_connections: usize,

    /// Replies a TCP connection may have outstanding before statecast stops reading from it.
    #[arg(long, env = "STATECAST_MAX_IN_FLIGHT", default_value_t = 8192)]
    pub max_in_flight: usize,

    /// Concurrent dashboard websockets; past it upgrades get 503 with Retry-After.
    #[arg(long, env = "STATECAST_MAX_WS_CONNECTIONS", default_value_t = 10_000)]
    pub max_ws_connections: usize,

    /// Batches queued for the state engine before transports are made to wait (backpressure).
    #[arg(long, env = "STATECAST_ENGINE_QUEUE", default_value_t = 1024)]
    pub engine_queue: usize,

    /// Changes buffered for the slowest dashboard before it is resynchronised with a snapshot.
    #[arg(long, env = "STATECAST_BROADCAST_CAPACITY", default_value_t = 16 * 1024)]
    pub broadcast_capacity: usize,

    /// Bytes queued for one dashboard before it is resynchronised with a fresh snapshot.
    #[arg(long, env = "STATECAST_WS_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub ws_queue_bytes: usize,

    /// Resynchronisations a dashboard may need within a minute before it is closed with code
    /// 1008 ("slow consumer").
    #[arg(long, env = "STATECAST_WS_MAX_RESYNCS", default_value_t = 3)]
    pub ws_max_resyncs: u32,

    /// Seconds a single websocket frame write may take before the client is dropped.
    #[arg(
        long = "ws-write-timeout",
        env = "STATECAST_WS_WRITE_TIMEOUT",
        default_value_t = 10
    )]
    pub ws_write_timeout_secs: u64,

    /// Seconds between websocket pings; a dashboard that does not answer within
    /// `--ws-pong-timeout` is closed (finds dead peers, e.g. a laptop that went to sleep).
    #[arg(long, env = "STATECAST_WS_PING", default_value_t = 25.0)]
    pub ws_ping: f64,

    /// Seconds a dashboard has to answer a ping.
    #[arg(long, env = "STATECAST_WS_PONG_TIMEOUT", default_value_t = 10.0)]
    pub ws_pong_timeout: f64,

    /// Regex (matched in full) of browser origins allowed to open websockets; `{{host}}` stands
    /// for the request's Host. Default: same origin only.
    #[arg(long, env = "STATECAST_ALLOWED_ORIGIN")]
    pub allowed_origin: Option<String>,

    /// Shared secret required as `Authorization: Bearer` on POST /api/event.
    #[arg(long, env = "STATECAST_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,

    /// Shared secret required for /ws, /index, /api/state and /api/history (as `Authorization:
    /// Bearer` or `?token=`; the dashboard passes its own `?token=` on).
    #[arg(long, env = "STATECAST_DASHBOARD_TOKEN", hide_env_values = true)]
    pub dashboard_token: Option<String>,

    /// Seconds between `stats` messages to dashboards.
    #[arg(
        long = "stats-interval",
        env = "STATECAST_STATS_INTERVAL",
        default_value_t = 2.0
    )]
    pub stats_interval_secs: f64,

    /// Events one POST /api/event may carry; past it the request gets 413 and nothing is applied
    /// (each event costs memory while the body is decoded, whatever its size in the body).
    #[arg(long, env = "STATECAST_MAX_EVENTS_PER_REQUEST", default_value_t = 100_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_events_per_request: usize,

    /// Seconds an HTTP client has to send a request's headers, counted from the connection (or
    /// the end of the previous response) on: a client that trickles headers, or an idle
    /// keep-alive connection, is closed after it.
    #[arg(long, env = "STATECAST_HTTP_HEADER_TIMEOUT", default_value = "10", value_parser = parse_timeout)]
    pub http_header_timeout: std::time::Duration,

    /// Seconds a request body may take to arrive in full (408 past it), and a response write may
    /// wait for the client to read before the connection is closed.
    #[arg(long, env = "STATECAST_HTTP_BODY_TIMEOUT", default_value = "30", value_parser = parse_timeout)]
    pub http_body_timeout: std::time::Duration,

    /// Concurrent HTTP connections (websockets, once upgraded, count against
    /// `--max-ws-connections` instead); past it new connections get a 503 and are closed.
    #[arg(long, env = "STATECAST_MAX_HTTP_CONNECTIONS", default_value_t = 1024, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_http_connections: usize,

    /// Host names (repeatable or comma-separated; no port) HTTP requests may be addressed to, a
    /// defence against DNS rebinding. Loopback names are always allowed. Default: when `--http`
    /// is a wildcard address (0.0.0.0, ::) any Host; otherwise loopback and the listening IP.
    #[arg(long, env = "STATECAST_ALLOWED_HOST", value_delimiter = ',')]
    pub allowed_host: Vec<String>,

    /// Custom attributes one event may carry (JSON); past it the request gets 400 naming the
    /// event, and nothing is applied.
    #[arg(
        long,
        env = "STATECAST_MAX_ATTRIBUTES_PER_EVENT",
        default_value_t = 256
    )]
    pub max_attributes_per_event: usize,

    /// Bytes one event may take (its JSON text on the HTTP path); past it the request gets 400
    /// naming the event, and nothing is applied. Every snapshot carries every event: this bounds
    /// what one client can add to each.
    #[arg(long, env = "STATECAST_MAX_EVENT_BYTES", default_value_t = 64 * 1024, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_event_bytes: usize,
}

/// A timeout in seconds: more than 0, at most a day (larger values are mistakes, and `inf` or
/// `nan` would not make a `Duration`).
fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Ok(std::time::Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 (excluded) and 86400"
        )),
    }
}

/// How long something is kept, or `None` for forever.
pub type Keep = Option<std::time::Duration>;

fn parse_keep(s: &str) -> Result<Keep, String> {
    if s.eq_ignore_ascii_case("forever") {
        return Ok(None);
    }
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => std::time::Duration::try_from_secs_f64(secs)
            .map(Some)
            .map_err(|e| format!("{s:?}: {e}")),
        _ => Err(format!(
            "{s:?} is not a number of seconds (0 or more) or `forever`"
        )),
    }
}

/// A listener address, or `off`.
pub type Listen = Option<SocketAddr>;

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("{s:?} is not an address like 127.0.0.1:5555 (or `off`)"))
}

impl Config {
    /// Defaults with every listener on an ephemeral loopback port: what tests and benchmarks use.
    pub fn ephemeral() -> Self {
        let mut c = Config::parse_from(["statecast"]);
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        c.tcp = Some(any);
        c.udp = Some(any);
        c.http = any;
        c.data_dir = "off".into();
        c
    }
}
