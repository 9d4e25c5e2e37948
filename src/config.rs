//! Command-line and environment configuration.
//!
//! Every flag can also be set by an environment variable (`STATECAST_…`), so the same binary is
//! configured the same way from a shell, systemd or a container. Defaults listen on loopback
//! only: exposing monitoring data is a decision, not an accident.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::web::access::{AccessConfig, HostRule};
use crate::web::http_server::HttpLimits;
use crate::web::proxy::{Cidr, ExternalUrl};
use crate::web::ws::WsConfig;

use crate::alert::{AlertConfig, Rules, Target};
use crate::cluster::ClusterConfig;
use crate::engine::EngineConfig;
use crate::event::EventLimits;
use crate::ingest::tcp::TcpConfig;
use crate::query::Query;
use crate::store::Retention;
use crate::tls::TlsFiles;
use crate::units::{duration_in, keep_in, size_in, DAY, GIB, HOUR, KIB, MIB, YEAR};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "statecast",
    version,
    about = "Live Riemann state to browser dashboards over websockets"
)]
pub struct Config {
    /// Riemann protobuf over TCP (Riemann's forwarding stream, riemann-client, collectd): an
    /// address to listen on (written as for `--http`), or `off`.
    #[arg(long, env = "STATECAST_TCP", default_value = "127.0.0.1:5555", value_parser = parse_listen)]
    pub tcp: Listen,

    /// Riemann protobuf over UDP, one Msg per datagram: an address to listen on, or `off`.
    #[arg(long, env = "STATECAST_UDP", default_value = "127.0.0.1:5555", value_parser = parse_listen)]
    pub udp: Listen,

    /// HTTP: dashboard page, websocket /ws, JSON POST /api/event, /metrics.
    /// An address (`127.0.0.1:8080`), a name resolved at startup (`localhost:8080`), or `:8080`
    /// for loopback (not every interface: give `0.0.0.0:8080` for that).
    #[arg(long, env = "STATECAST_HTTP", default_value = "127.0.0.1:8080", value_parser = parse_addr)]
    pub http: SocketAddr,

    /// The state every (host, service) is assumed to start in; the first event in another state is
    /// a change (Riemann's `changed-state {:init "ok"}`).
    #[arg(long, env = "STATECAST_INIT_STATE", default_value = "ok")]
    pub init_state: String,

    /// How long an event stays in the index when it carries no TTL (Riemann's `default-ttl`);
    /// after `time + ttl` it expires, which is a change to state "expired". Durations are
    /// seconds (`60`, `0.5`) or a number with a unit (`500ms`, `25s`, `5m`, `2h`, `7d`).
    #[arg(long, env = "STATECAST_DEFAULT_TTL", default_value = "60", value_parser = duration_in(Duration::from_millis(1), 10 * YEAR))]
    pub default_ttl: Duration,

    /// Time between looks for expired events.
    #[arg(long, env = "STATECAST_REAP_INTERVAL", default_value = "5", value_parser = duration_in(Duration::from_millis(10), HOUR))]
    pub reap_interval: Duration,

    /// How long an expired (host, service) stays on dashboards before it is removed from the
    /// index (and every screen); `0` removes it right after the "expired" change (as Riemann
    /// does); `forever` keeps it until it reports again — the index then grows with every key
    /// ever seen.
    #[arg(long, env = "STATECAST_EXPIRED_KEEP", default_value = "1d", value_parser = keep_in(10 * YEAR))]
    pub expired_keep: Keep,

    /// (host, service) keys the index may hold. Past it, a message (or POST) that would add keys
    /// is refused whole (Riemann `ok: false`, HTTP 507) and counted; indexed keys keep updating.
    /// A key costs about 0.7 KiB of memory (measured with 45 bytes of host and service; more with
    /// longer descriptions, tags and attributes): the default bounds the index near 0.7 GiB.
    #[arg(long, env = "STATECAST_MAX_KEYS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_keys: u64,

    /// Directory of the embedded database (index and transition history), created if missing;
    /// `off` keeps everything in memory only (nothing survives a restart; resume always resets).
    #[arg(long, env = "STATECAST_DATA_DIR", default_value = "./statecast-data", value_parser = parse_data_dir)]
    pub data_dir: DataDir,

    /// Metric series: every event with a metric adds to its key's 10 s buckets (kept 6 h), 1 min
    /// buckets (7 d) and 1 h buckets (`--series-retention`), answered by `GET /api/series`; closed buckets
    /// go to `series.redb` in the data directory (with `--data-dir off`, to a bounded window in
    /// memory). `off`: no series, no cost.
    #[arg(long, env = "STATECAST_SERIES", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub series: bool,

    /// How long the 1 h series buckets are kept (the 10 s ones 6 hours and the 1 min ones 7
    /// days, or this if shorter), and how long a key that stopped reporting keeps its series.
    #[arg(long, env = "STATECAST_SERIES_RETENTION", default_value = "30d", value_parser = duration_in(HOUR, 400 * DAY))]
    pub series_retention: Duration,

    /// Keys with a metric series at most; points of further keys are dropped (counted in
    /// `statecast_series_points_dropped_total{reason="max-keys"}`) until old keys are forgotten.
    #[arg(long, env = "STATECAST_SERIES_MAX_KEYS", default_value_t = 100_000, value_parser = count_in(1, 10_000_000))]
    pub series_max_keys: usize,

    /// Transitions kept in history at most (oldest pruned first).
    #[arg(
        long,
        env = "STATECAST_HISTORY_MAX_CHANGES",
        default_value_t = 1_000_000,
        value_parser = clap::value_parser!(u64).range(1..=1_000_000_000_000)
    )]
    pub history_max_changes: u64,

    /// How long a transition is kept in history at most.
    #[arg(long, env = "STATECAST_HISTORY_MAX_AGE", default_value = "7d", value_parser = duration_in(Duration::from_secs(1), 100 * YEAR))]
    pub history_max_age: Duration,

    /// Largest Riemann TCP frame accepted; a larger announced length gets an error reply and
    /// the connection is closed. Sizes are bytes (`16777216`) or a number with a unit (`64KiB`,
    /// `16MiB`, `1GiB`; `KB`/`MB`/`GB` are powers of 1000).
    #[arg(long, env = "STATECAST_MAX_FRAME_BYTES", default_value = "16MiB", value_parser = size_in(64, GIB))]
    pub max_frame_bytes: usize,

    /// Largest UDP datagram accepted (Riemann's default); larger ones are dropped and counted.
    #[arg(long, env = "STATECAST_MAX_DATAGRAM_BYTES", default_value = "16KiB", value_parser = size_in(512, 65_507))]
    pub max_datagram_bytes: usize,

    /// Largest JSON body accepted by POST /api/event; larger gets 413.
    #[arg(long, env = "STATECAST_MAX_BODY_BYTES", default_value = "4MiB", value_parser = size_in(KIB, GIB))]
    pub max_body_bytes: usize,

    /// Concurrent Riemann TCP connections; past it new connections are closed after a log line.
    #[arg(long, env = "STATECAST_MAX_TCP_CONNECTIONS", default_value_t = 1024, value_parser = count_in(1, 1_000_000))]
    pub max_tcp_connections: usize,

    /// Replies a TCP connection may have outstanding before statecast stops reading from it.
    #[arg(long, env = "STATECAST_MAX_IN_FLIGHT", default_value_t = 8192, value_parser = count_in(1, 1_000_000))]
    pub max_in_flight: usize,

    /// Concurrent dashboard websockets; past it upgrades get 503 with Retry-After.
    #[arg(long, env = "STATECAST_MAX_WS_CONNECTIONS", default_value_t = 10_000, value_parser = count_in(1, 1_000_000))]
    pub max_ws_connections: usize,

    /// Batches queued for the state engine before transports are made to wait (backpressure).
    #[arg(long, env = "STATECAST_ENGINE_QUEUE", default_value_t = 1024, value_parser = count_in(1, 1_000_000))]
    pub engine_queue: usize,

    /// Changes buffered for the slowest dashboard before it is resynchronised with a snapshot.
    #[arg(long, env = "STATECAST_BROADCAST_CAPACITY", default_value_t = 16 * 1024, value_parser = count_in(1, 1 << 24))]
    pub broadcast_capacity: usize,

    /// Bytes queued for one dashboard before it is resynchronised with a fresh snapshot.
    #[arg(long, env = "STATECAST_WS_QUEUE_BYTES", default_value = "1MiB", value_parser = size_in(4 * KIB, GIB))]
    pub ws_queue_bytes: usize,

    /// Resynchronisations a dashboard may need within a minute before it is closed with code
    /// 1008 ("slow consumer").
    #[arg(long, env = "STATECAST_WS_MAX_RESYNCS", default_value_t = 3)]
    pub ws_max_resyncs: u32,

    /// How long a single websocket frame write may take before the client is dropped.
    #[arg(long, env = "STATECAST_WS_WRITE_TIMEOUT", default_value = "10s", value_parser = duration_in(Duration::from_millis(10), HOUR))]
    pub ws_write_timeout: Duration,

    /// Time between websocket pings; a dashboard that does not answer within
    /// `--ws-pong-timeout` is closed (finds dead peers, e.g. a laptop that went to sleep).
    #[arg(long, env = "STATECAST_WS_PING", default_value = "25s", value_parser = duration_in(Duration::from_millis(50), DAY))]
    pub ws_ping: Duration,

    /// How long a dashboard has to answer a ping.
    #[arg(long, env = "STATECAST_WS_PONG_TIMEOUT", default_value = "10s", value_parser = duration_in(Duration::from_millis(50), HOUR))]
    pub ws_pong_timeout: Duration,

    /// Regex (matched in full) of browser origins allowed to open websockets; `{{host}}` stands
    /// for the request's Host. Default: same origin only. At most 4096 bytes.
    #[arg(long, env = "STATECAST_ALLOWED_ORIGIN", value_parser = parse_origin_pattern)]
    pub allowed_origin: Option<String>,

    /// Shared secret required as `Authorization: Bearer` on POST /api/event.
    #[arg(long, env = "STATECAST_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,

    /// Shared secret required for /ws, /index, /api/state and /api/history (as `Authorization:
    /// Bearer` or `?token=`; the dashboard passes its own `?token=` on).
    #[arg(long, env = "STATECAST_DASHBOARD_TOKEN", hide_env_values = true)]
    pub dashboard_token: Option<String>,

    /// Time between `stats` messages to dashboards.
    #[arg(long, env = "STATECAST_STATS_INTERVAL", default_value = "2s", value_parser = duration_in(Duration::from_millis(50), HOUR))]
    pub stats_interval: Duration,

    /// Time between `metrics` frames to dashboards: each gets at most one per interval, with the
    /// latest metric and description of the keys its query matches whose values moved (within
    /// their state) since its last one; `off` sends none.
    #[arg(long, env = "STATECAST_METRICS_INTERVAL", default_value = "1s", value_parser = every_in(Duration::from_millis(50), HOUR))]
    pub metrics_interval: Every,

    /// Bytes one `metrics` frame may take: each dashboard gets at most one such frame per
    /// `--metrics-interval`; values that do not fit follow in the next intervals, the keys that
    /// waited longest first, each at its latest value.
    #[arg(long, env = "STATECAST_METRICS_MAX_BYTES", default_value = "64KiB", value_parser = size_in(4 * KIB, MIB))]
    pub metrics_max_bytes: usize,

    /// Start even though `statecast.redb` is missing or empty while `changes.log` beside it holds
    /// changes of an earlier run. Without it such a start is refused (exit 1): the database was
    /// lost or damaged (a bad copy or restore), and starting would silently begin an empty
    /// history. With it, a new database (and a new epoch: dashboards reset) is created and the
    /// changes the log still holds (those since the last checkpoint) are replayed into it;
    /// everything else is gone.
    #[arg(long, env = "STATECAST_ALLOW_FRESH_DATABASE")]
    pub allow_fresh_database: bool,

    /// Start even though `changes.log` is missing, empty, cut short or not a change log while
    /// `statecast.redb` beside it was not stopped cleanly. Without it such a start is refused
    /// (exit 1) with one line naming the file and the database's last checkpoint: the changes
    /// acknowledged since that checkpoint (about a second's worth) were only in the log. With it,
    /// what the log still holds is replayed and the server continues from there; the rest is
    /// gone. After a clean stop nothing can be missing, and such a log is started anew with a
    /// warning.
    #[arg(long, env = "STATECAST_ALLOW_DATA_LOSS")]
    pub allow_data_loss: bool,

    /// Events (and Riemann `states`, which statecast ignores) one Riemann TCP Msg may carry; a
    /// Msg with more is answered `ok: false` and nothing of it is applied. Counted on the wire
    /// before decoding, so a frame of millions of empty events costs nothing. (A UDP datagram
    /// is bounded by --max-datagram-bytes.)
    #[arg(long, env = "STATECAST_MAX_EVENTS_PER_MSG", default_value_t = crate::event::EventLimits::DEFAULT.max_events_per_msg, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_events_per_msg: usize,

    /// Custom attributes one event may carry (every dashboard snapshot carries each indexed
    /// event whole): a Riemann TCP Msg holding an event with more is answered `ok: false`, a
    /// POST gets 400 naming the event, a UDP datagram is dropped; nothing of it is applied.
    #[arg(long, env = "STATECAST_MAX_ATTRIBUTES_PER_EVENT", default_value_t = crate::event::EventLimits::DEFAULT.max_attributes_per_event, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..))]
    pub max_attributes_per_event: usize,

    /// Bytes one event may take (its protobuf encoding on the Riemann ports, its JSON text on
    /// HTTP): past it a Msg is answered `ok: false`, a POST gets 400 naming the event, a UDP
    /// datagram is dropped; nothing of it is applied.
    #[arg(long, env = "STATECAST_MAX_EVENT_BYTES", default_value = "1MiB", value_parser = size_in(64, GIB))]
    pub max_event_bytes: usize,

    /// How long an established Riemann TCP connection may wait between whole frames before it is
    /// closed (connections are limited by --max-tcp-connections: idle ones must not hold them).
    #[arg(long, env = "STATECAST_TCP_IDLE_TIMEOUT", default_value = "5m", value_parser = duration_in(Duration::from_millis(100), YEAR))]
    pub tcp_idle_timeout: Duration,

    /// How long a new Riemann TCP connection (after its TLS handshake, on --tls-tcp) has to send
    /// its first complete frame before it is closed: a socket that sends nothing holds a slot of
    /// --max-tcp-connections for this long, not for --tcp-idle-timeout.
    #[arg(long, env = "STATECAST_TCP_FIRST_FRAME_TIMEOUT", default_value = "30s", value_parser = duration_in(Duration::from_millis(100), HOUR))]
    pub tcp_first_frame_timeout: Duration,

    /// How long a Riemann TCP frame, once its first byte has arrived, may take to arrive whole
    /// before the connection is closed (a client dripping a frame a byte at a time). Waiting
    /// between frames is bounded by --tcp-idle-timeout instead.
    #[arg(long, env = "STATECAST_TCP_FRAME_TIMEOUT", default_value = "30s", value_parser = duration_in(Duration::from_millis(100), HOUR))]
    pub tcp_frame_timeout: Duration,

    /// How long a write of replies to a Riemann TCP client may make no progress before the
    /// client (which is not reading its replies) is dropped.
    #[arg(long, env = "STATECAST_TCP_WRITE_TIMEOUT", default_value = "30s", value_parser = duration_in(Duration::from_millis(100), DAY))]
    pub tcp_write_timeout: Duration,

    /// Whether a Riemann TCP Msg may carry a query (which returns every matching indexed event).
    /// The Riemann port has no authentication: with `off`, queries are answered `ok: false`.
    #[arg(long, env = "STATECAST_TCP_QUERIES", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub tcp_queries: bool,

    /// How long shutdown waits for connections to answer what they have read; then stuck ones
    /// are ended, and the engine's final write still happens.
    #[arg(long, env = "STATECAST_SHUTDOWN_GRACE", default_value = "10s", value_parser = duration_in(Duration::ZERO, HOUR))]
    pub shutdown_grace: Duration,
    /// Events one POST /api/event may carry; past it the request gets 413 and nothing is applied
    /// (each event costs memory while the body is decoded, whatever its size in the body).
    #[arg(long, env = "STATECAST_MAX_EVENTS_PER_REQUEST", default_value_t = 100_000, value_parser = count_in(1, 10_000_000))]
    pub max_events_per_request: usize,

    /// How long an HTTP client has to send a request's headers, counted from the connection (or
    /// the end of the previous response) on: a client that trickles headers, or an idle
    /// keep-alive connection, is closed after it.
    #[arg(long, env = "STATECAST_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = duration_in(Duration::from_millis(100), DAY))]
    pub http_header_timeout: Duration,

    /// How long a request body may take to arrive in full (408 past it), and a response write
    /// may wait for the client to read before the connection is closed.
    #[arg(long, env = "STATECAST_HTTP_BODY_TIMEOUT", default_value = "30s", value_parser = duration_in(Duration::from_millis(100), DAY))]
    pub http_body_timeout: Duration,

    /// Whole-index reads (`GET /api/state`) served at once; past it a read gets 503 with
    /// `Retry-After: 1`. Each serializes every indexed event, so a burst of them took the CPU
    /// that acknowledgements need; a read holds its slot until its response is sent whole.
    #[arg(long, env = "STATECAST_MAX_LARGE_READS", default_value_t = 4, value_parser = count_in(1, 10_000))]
    pub max_large_reads: usize,

    /// Samples (keys) one `GET /api/prometheus` answer holds at most: the first in (host,
    /// service) order; the answer's `statecast_prometheus_keys_omitted` counts the others. Scrape
    /// a larger index in slices (one scrape job per `?query=`).
    #[arg(long, env = "STATECAST_PROMETHEUS_MAX_KEYS", default_value_t = 100_000, value_parser = count_in(1, 10_000_000))]
    pub prometheus_max_keys: usize,

    /// Concurrent HTTP connections (websockets, once upgraded, count against
    /// `--max-ws-connections` instead); past it new connections get a 503 and are closed.
    #[arg(long, env = "STATECAST_MAX_HTTP_CONNECTIONS", default_value_t = 1024, value_parser = count_in(1, 1_000_000))]
    pub max_http_connections: usize,

    /// Host names (repeatable or comma-separated; no port) HTTP requests may be addressed to, a
    /// defence against DNS rebinding. Loopback names are always allowed. Default: when `--http`
    /// is a wildcard address (0.0.0.0, ::) any Host; otherwise loopback and the listening IP.
    #[arg(long, env = "STATECAST_ALLOWED_HOST", value_delimiter = ',')]
    pub allowed_host: Vec<String>,

    /// Also write the ready line (the JSON printed on stdout once every listener is bound and the
    /// server is serving) to this file, atomically: a temporary file beside it, renamed into place.
    #[arg(long, env = "STATECAST_READY_FILE")]
    pub ready_file: Option<PathBuf>,

    /// How log lines on stderr look: `text` (for people) or `json` (one JSON object per line, for
    /// log shippers). Which lines are logged is `RUST_LOG`'s choice (default `info`).
    #[arg(long, env = "STATECAST_LOG_FORMAT", default_value = "text", value_enum)]
    pub log_format: LogFormat,

    /// The URL browsers reach this server by through a reverse proxy, e.g.
    /// `https://mon.example.com/statecast/`: its origin passes the websocket/CSRF Origin check
    /// and its host the `--allowed-host` rule, whatever Host header the proxy forwards.
    #[arg(long, env = "STATECAST_EXTERNAL_URL", value_parser = ExternalUrl::parse)]
    pub external_url: Option<ExternalUrl>,

    /// Addresses or CIDR blocks (repeatable or comma-separated, e.g. `127.0.0.1,10.0.0.0/8`) of
    /// reverse proxies whose `X-Forwarded-Host` (or `Forwarded: host=`) is taken as the request's
    /// Host, for the Host and Origin checks. Default none: from any other peer those headers are
    /// ignored, since anyone can send them.
    #[arg(long, env = "STATECAST_TRUSTED_PROXY", value_delimiter = ',', value_parser = Cidr::parse)]
    pub trusted_proxy: Vec<Cidr>,

    /// Riemann protobuf over TLS (Riemann's own TLS listener, conventionally port 5554): an
    /// address to listen on, or `off`. Needs --tls-cert and --tls-key; shares the plain port's
    /// limits, including --max-tcp-connections (taken once a handshake is done).
    #[arg(long, env = "STATECAST_TLS_TCP", default_value = "off", value_parser = parse_listen)]
    pub tls_tcp: Listen,

    /// Serve HTTP (dashboard, websockets, API) as HTTPS/WSS on --http, with --tls-cert and
    /// --tls-key. Without it --http is plain HTTP.
    #[arg(long, env = "STATECAST_HTTPS")]
    pub https: bool,

    /// PEM certificate chain (server certificate first) of --tls-tcp and --https. Read again,
    /// with the key and client CA, on SIGHUP.
    #[arg(long, env = "STATECAST_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "STATECAST_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): with it, TLS clients must present a certificate signed by one of
    /// them (mutual TLS, as Riemann's TLS listener requires); others are refused in the handshake.
    #[arg(long, env = "STATECAST_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// How long a TLS client has to complete its handshake; meanwhile the connection holds a slot
    /// of --max-tls-handshakes (Riemann TLS) or of --max-http-connections (HTTPS).
    #[arg(long, env = "STATECAST_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration_in(Duration::from_millis(100), HOUR))]
    pub tls_handshake_timeout: Duration,

    /// Riemann TLS (--tls-tcp) handshakes in progress at once; past it a new TLS connection is
    /// closed at once (counted, logged at most every 10 s). A connection takes a slot of
    /// --max-tcp-connections only once its handshake is done, so sockets that never handshake
    /// cannot keep plain Riemann clients out.
    #[arg(long, env = "STATECAST_MAX_TLS_HANDSHAKES", default_value_t = 128, value_parser = count_in(1, 1_000_000))]
    pub max_tls_handshakes: usize,

    /// A TOML file of settings: each key is a flag's long name (`max-frame-bytes = "16MiB"`),
    /// each value what the flag takes. A flag or environment variable overrides the file.
    #[arg(long, env = "STATECAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Cluster mode: the NATS servers (`nats://HOST:PORT`, comma-separated) whose JetStream stream
    /// orders every node's input, so every node computes the same index, changes and `seq`s.
    /// Off by default: a single node needs nothing but itself.
    #[arg(
        long,
        env = "STATECAST_CLUSTER",
        value_name = "URLS",
        value_delimiter = ','
    )]
    pub cluster: Vec<String>,

    /// The JetStream stream of cluster mode (its snapshot bucket is `NAME-snapshots`).
    #[arg(long, env = "STATECAST_CLUSTER_STREAM", default_value = "statecast", value_parser = parse_stream_name)]
    pub cluster_stream: String,

    /// Replicas of the stream and its snapshot bucket when this node creates them (3 on a
    /// three-server NATS cluster: an acknowledged input then survives the loss of one server).
    #[arg(long, env = "STATECAST_CLUSTER_REPLICAS", default_value_t = 1, value_parser = count_in(1, 5))]
    pub cluster_replicas: usize,

    /// This node's name in logs, `/metrics` and its publishes' ids (default: host name and pid).
    #[arg(long, env = "STATECAST_CLUSTER_NODE_ID")]
    pub cluster_node_id: Option<String>,

    /// How long the stream keeps inputs: at least 2 minutes (the stream's duplicate window), and
    /// longer than --cluster-snapshot-interval, since a node starting from the newest snapshot
    /// replays the stream after it.
    #[arg(long, env = "STATECAST_CLUSTER_MAX_AGE", default_value = "24h", value_parser = duration_in(Duration::from_secs(1), YEAR))]
    pub cluster_max_age: Duration,

    /// Bytes the stream may hold; the oldest inputs are dropped beyond (and the node that finds
    /// the stream trimmed past the newest snapshot refuses to start). Reserved on the NATS
    /// servers' JetStream store when the stream is created: it must fit there, with room for the
    /// snapshot bucket.
    #[arg(long, env = "STATECAST_CLUSTER_MAX_BYTES", default_value = "1GiB", value_parser = size_in(1024 * 1024, usize::MAX))]
    pub cluster_max_bytes: usize,

    /// How often a node writes a snapshot (index, `seq`, stream position) to the snapshot bucket.
    #[arg(long, env = "STATECAST_CLUSTER_SNAPSHOT_INTERVAL", default_value = "60s", value_parser = duration_in(Duration::from_millis(100), DAY))]
    pub cluster_snapshot_interval: Duration,

    /// Bound on waiting for NATS: connecting at start, a publish's acknowledgement, and as much
    /// again for this node to apply an acknowledged input. Past it, ingest is answered with an
    /// error saying what is known (Riemann `ok:false`, HTTP 503).
    #[arg(long, env = "STATECAST_CLUSTER_TIMEOUT", default_value = "5s", value_parser = duration_in(Duration::from_millis(100), HOUR))]
    pub cluster_timeout: Duration,

    /// Send alerts to these Alertmanagers (`http://host:port`, repeatable or comma-separated;
    /// each gets every alert), as Prometheus does: a key fires in an `--alert-states` state,
    /// until it is ok again, removed, acknowledged or silenced. Off by default.
    #[arg(long, env = "STATECAST_ALERTMANAGER", value_delimiter = ',', value_parser = Target::parse)]
    pub alertmanager: Vec<Target>,

    /// PEM file of the certificate authorities trusted for `https://` Alertmanagers; default
    /// the system's store (/etc/ssl/certs/ca-certificates.crt).
    #[arg(long, env = "STATECAST_ALERTMANAGER_CA")]
    pub alertmanager_ca: Option<PathBuf>,

    /// Only keys whose event this query matches alert (judged at each change of state); default
    /// every key.
    #[arg(long, env = "STATECAST_ALERT_QUERY")]
    pub alert_query: Option<String>,

    /// The states that fire an alert (comma-separated).
    #[arg(
        long,
        env = "STATECAST_ALERT_STATES",
        value_delimiter = ',',
        default_value = "critical,warning,expired"
    )]
    pub alert_states: Vec<String>,

    /// Attribute or tag names (comma-separated) copied onto each alert as labels: an attribute's
    /// value, or "true" for a tag the event carries.
    #[arg(long, env = "STATECAST_ALERT_LABELS", value_delimiter = ',', value_parser = crate::alert::check_label_name)]
    pub alert_labels: Vec<String>,

    /// How often every firing alert is sent again; each is sent valid for four of these, so
    /// the alerts of a statecast that stopped end by themselves.
    #[arg(long, env = "STATECAST_ALERT_RESEND", default_value = "1m", value_parser = duration_in(Duration::from_secs(1), DAY))]
    pub alert_resend: Duration,
}

/// The longest `--allowed-origin` pattern: a list of a few dozen origins fits; a longer one is
/// a mistake, and compiling it (on every websocket upgrade) would cost far more than its size.
const MAX_ORIGIN_PATTERN_BYTES: usize = 4096;

/// `--allowed-origin`: its length is checked before anything compiles it.
fn parse_origin_pattern(s: &str) -> Result<String, String> {
    if s.len() > MAX_ORIGIN_PATTERN_BYTES {
        return Err(format!(
            "the pattern is {} bytes; at most {MAX_ORIGIN_PATTERN_BYTES} are accepted",
            s.len()
        ));
    }
    Ok(s.to_owned())
}

/// JetStream names may not hold spaces, `.`, `*`, `>`, path separators or control characters.
fn parse_stream_name(s: &str) -> Result<String, String> {
    let valid = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a stream name (1 to 64 letters, digits, '-' or '_')"
        ))
    }
}

/// The shape of log lines (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("{s:?} is not `on` or `off`")),
    }
}

/// How long something is kept, or `None` for forever.
pub type Keep = Option<Duration>;

/// How often something is done, or `None` for `off` (never).
pub type Every = Option<Duration>;

/// A clap value parser for [`Every`]: a duration within `min..=max`, or `off`.
fn every_in(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Every, String> + Clone + Send + Sync + 'static {
    let within = duration_in(min, max);
    move |s| {
        if s.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        within(s).map(Some).map_err(|e| format!("{e} (or `off`)"))
    }
}

/// A whole number within `min..=max`, for counts whose zero (or huge values) would make no
/// sense: a queue of zero cannot hold anything, and some of them size allocations at startup.
fn count_in(min: usize, max: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s| match s.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a whole number from {min} to {max}")),
    }
}

/// The data directory, or `None` for `off` (memory only).
pub type DataDir = Option<PathBuf>;

fn parse_data_dir(s: &str) -> Result<DataDir, String> {
    if s.trim().is_empty() {
        return Err("the data directory is empty (give a path, or `off`)".into());
    }
    Ok((!s.eq_ignore_ascii_case("off")).then(|| PathBuf::from(s)))
}

/// A listener address, or `off`.
pub type Listen = Option<SocketAddr>;

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_addr(s)
        .map(Some)
        .map_err(|why| format!("{why} (or `off`)"))
}

/// A listening address: `IP:port`, `:port` (loopback: the defaults never expose anything, and
/// neither does a short form), or `name:port`, resolved once at startup (IPv4 preferred, so that
/// `localhost` means 127.0.0.1 whatever the order of /etc/hosts).
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let bad = |why: String| {
        format!("{s:?} is not an address like 127.0.0.1:5555, :5555 or localhost:5555{why}")
    };
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| bad(String::new()))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
        _ => return Err(bad(String::new())),
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(s)
        .map_err(|e| bad(format!(": cannot resolve it: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| bad(": the name resolves to no address".into()))
}

/// The settings of each part, built here so that `server.rs` only wires parts together and no
/// part reads flags it does not own.
impl Config {
    /// Limits on one message and its events, the same on every transport.
    pub(crate) fn event_limits(&self) -> EventLimits {
        EventLimits {
            max_events_per_msg: self.max_events_per_msg,
            max_attributes_per_event: self.max_attributes_per_event,
            max_event_bytes: self.max_event_bytes,
        }
    }

    /// The JSON body's limits: the per-event ones, with the event count of one request.
    pub(crate) fn json_limits(&self) -> EventLimits {
        EventLimits {
            max_events_per_msg: self.max_events_per_request,
            ..self.event_limits()
        }
    }

    pub(crate) fn engine(&self) -> EngineConfig {
        EngineConfig {
            init_state: self.init_state.clone(),
            default_ttl_secs: self.default_ttl.as_secs_f64(),
            reap_interval: self.reap_interval,
            expired_keep: self.expired_keep,
            max_keys: usize::try_from(self.max_keys).unwrap_or(usize::MAX),
            retention: Retention {
                max_changes: self.history_max_changes,
                max_age_micros: i64::try_from(self.history_max_age.as_micros()).unwrap_or(i64::MAX),
            },
            queue_capacity: self.engine_queue,
            broadcast_capacity: self.broadcast_capacity,
            local_clock: true,
            series: None,
            metrics_interval: self.metrics_interval,
            metrics_max_bytes: self.metrics_max_bytes,
        }
    }

    /// The series' settings, when `--series on`.
    pub(crate) fn series(&self) -> Option<crate::series::SeriesSettings> {
        self.series.then(|| {
            let retention_ms = i64::try_from(self.series_retention.as_millis()).unwrap_or(i64::MAX);
            crate::series::SeriesSettings::new(retention_ms, self.series_max_keys)
        })
    }

    /// Cluster mode's settings, when `--cluster` names NATS servers.
    pub(crate) fn cluster(&self) -> Option<ClusterConfig> {
        if self.cluster.is_empty() {
            return None;
        }
        let node_id = self.cluster_node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "node".into());
            format!("{host}-{}", std::process::id())
        });
        Some(ClusterConfig {
            urls: self.cluster.clone(),
            stream: self.cluster_stream.clone(),
            replicas: self.cluster_replicas,
            node_id,
            max_age: self.cluster_max_age,
            max_bytes: self.cluster_max_bytes,
            snapshot_interval: self.cluster_snapshot_interval,
            timeout: self.cluster_timeout,
            max_in_flight: self.engine_queue.saturating_mul(16).max(1024),
        })
    }

    /// Alerting's settings, when `--alertmanager` names one; an error sentence for a bad
    /// `--alert-query`.
    pub(crate) fn alerts(&self) -> Result<Option<AlertConfig>, String> {
        if self.alertmanager.is_empty() {
            return Ok(None);
        }
        let query = match self.alert_query.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(
                Query::parse(text).map_err(|error| format!("--alert-query {text:?}: {error}"))?,
            ),
        };
        let states: Vec<String> = self
            .alert_states
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if states.is_empty() {
            return Err("--alert-states names no state".into());
        }
        Ok(Some(AlertConfig {
            alertmanagers: self.alertmanager.clone(),
            rules: Rules {
                query,
                states,
                labels: self.alert_labels.clone(),
                external_url: self.external_url.as_ref().map(|url| url.url.clone()),
            },
            resend: self.alert_resend,
            tls: if self.alertmanager.iter().any(|target| target.tls) {
                Some(crate::alert::tls::client_config(
                    self.alertmanager_ca.as_deref(),
                )?)
            } else {
                None
            },
        }))
    }

    pub(crate) fn tcp(&self) -> TcpConfig {
        TcpConfig {
            max_frame_bytes: self.max_frame_bytes,
            max_connections: self.max_tcp_connections,
            max_tls_handshakes: self.max_tls_handshakes,
            max_in_flight: self.max_in_flight,
            limits: self.event_limits(),
            idle_timeout: self.tcp_idle_timeout,
            first_frame_timeout: self.tcp_first_frame_timeout,
            frame_timeout: self.tcp_frame_timeout,
            write_timeout: self.tcp_write_timeout,
            queries: self.tcp_queries,
        }
    }

    pub(crate) fn ws(&self) -> WsConfig {
        WsConfig {
            queue_bytes: self.ws_queue_bytes,
            max_resyncs: self.ws_max_resyncs,
            write_timeout: self.ws_write_timeout,
            ping_interval: self.ws_ping,
            pong_timeout: self.ws_pong_timeout,
        }
    }

    /// Origin, token and Host rules; the Host rule depends on the address HTTP is bound to.
    pub(crate) fn access(&self, http_addr: SocketAddr) -> AccessConfig {
        AccessConfig {
            allowed_origin: self.allowed_origin.clone(),
            ingest_token: self.ingest_token.clone(),
            dashboard_token: self.dashboard_token.clone(),
            allowed_hosts: HostRule::for_listener(http_addr, &self.allowed_host)
                .with(self.external_url.as_ref().map(|url| url.host.clone())),
            external_origin: self.external_url.as_ref().map(|url| url.origin.clone()),
            trusted_proxies: self.trusted_proxy.clone(),
        }
    }

    /// The TLS files when a listener uses TLS; an error when one does without a certificate.
    pub(crate) fn tls_files(&self) -> Result<Option<TlsFiles>, String> {
        if self.tls_tcp.is_none() && !self.https {
            if self.tls_cert.is_some() || self.tls_key.is_some() || self.tls_client_ca.is_some() {
                tracing::warn!("--tls-cert/--tls-key/--tls-client-ca are set but unused: add --tls-tcp ADDR or --https");
            }
            return Ok(None);
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            })),
            _ => Err("--tls-tcp and --https need both --tls-cert FILE and --tls-key FILE".into()),
        }
    }

    pub(crate) fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            max_connections: self.max_http_connections,
            header_timeout: self.http_header_timeout,
            write_stall_timeout: self.http_body_timeout,
        }
    }
}
