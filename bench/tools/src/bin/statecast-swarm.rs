//! `statecast-swarm`: C websocket clients plus a driver that posts state changes (benchmarks).
//!
//! Every posted event carries `sent_us` (µs since this process started) as a custom attribute;
//! every client timestamps each change it receives and records `received − sent`, so the latency
//! is event sent → change received, measured on one clock. Works against statecast (`/ws`,
//! `POST /api/event`) and against any hub that broadcasts `{"type":"change","event":E}` with the
//! posted event `E` (the Node peer in bench/peers/node-ws-hub).
//!
//! Modes: with `--post` the driver sends `--rate` events/s (0 = as fast as the server answers) in
//! POSTs of `--batch` events over `--drivers` keep-alive connections; without it the clients
//! only watch (e.g. to make an ingest benchmark broadcast to 10 clients). `--idle` connects the
//! clients, prints `swarm connected clients=N` on stderr and holds them for `--duration` seconds
//! (memory per idle connection).
//!
//! Prints a human summary and one JSON line on stdout.

#[path = "common/hist.rs"]
mod hist;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use hist::{ms, Histogram};

#[derive(Debug, Parser)]
#[command(
    name = "statecast-swarm",
    about = "Websocket swarm + change driver: deliveries/s, end-to-end latency, clients behind"
)]
struct Args {
    /// Websocket URL, e.g. ws://127.0.0.1:8080/ws; several, comma-separated, spread the clients
    /// over them in turn (client i connects to URL i mod n: the nodes of a cluster).
    #[arg(long, value_delimiter = ',', required = true)]
    ws: Vec<String>,
    /// JSON ingest URL, e.g. http://127.0.0.1:8080/api/event (omit: watch only); several,
    /// comma-separated, spread the drivers over them in turn.
    #[arg(long, value_delimiter = ',')]
    post: Vec<String>,
    /// Concurrent websocket clients.
    #[arg(long, short = 'c', default_value_t = 100)]
    clients: usize,
    /// Events per second posted in total (0: as fast as the server answers).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Events per POST.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Concurrent POST connections.
    #[arg(long, default_value_t = 1)]
    drivers: usize,
    /// Measured seconds (or, with --idle, seconds to hold the connections).
    #[arg(long, short = 'd', default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Connect and hold idle clients; no driver.
    #[arg(long)]
    idle: bool,
    /// Websocket handshakes in progress at once while connecting.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Local addresses the clients connect from, comma-separated (client i binds source i mod
    /// n), e.g. 127.0.0.1,127.0.0.2: one source address has about 28,000 ephemeral ports towards
    /// one server port, so large swarms spread over several loopback addresses.
    #[arg(long, value_delimiter = ',')]
    source: Vec<std::net::IpAddr>,
    /// Seconds to wait for every client to connect before giving up.
    #[arg(long, default_value_t = 120.0)]
    connect_timeout: f64,
    /// A label copied into the JSON line.
    #[arg(long, default_value = "")]
    label: String,
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    base().elapsed().as_micros() as u64
}

#[derive(Default)]
struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    ready: AtomicU64,
    connect_failed: AtomicU64,
    deliveries: AtomicU64,
    deliveries_total: AtomicU64,
    untimed: AtomicU64,
    snapshots: AtomicU64,
    /// `metrics` frames, their bytes and the key values they carried, while measuring.
    metrics_frames: AtomicU64,
    metrics_bytes: AtomicU64,
    metrics_values: AtomicU64,
    resynced_clients: AtomicU64,
    closed_clients: AtomicU64,
    errored_clients: AtomicU64,
    posted_events: AtomicU64,
    post_errors: AtomicU64,
    latency: Histogram,
    first_error: OnceLock<String>,
}

impl Shared {
    fn error(&self, e: String) {
        let _ = self.first_error.set(e);
    }
}

/// `host:port` and path of an `http://` or `ws://` URL (no TLS: loopback benchmarks only).
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| format!("{url:?}: only http:// and ws:// URLs are supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((host.to_owned(), path.to_owned()))
}

async fn resolve(hostport: &str) -> Result<SocketAddr, String> {
    tokio::net::lookup_host(hostport)
        .await
        .map_err(|e| format!("{hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport}: no address"))
}

#[derive(PartialEq)]
enum Kind {
    Change,
    Snapshot,
    /// The conflated live values (`{"type":"metrics",…}`, at most one per interval).
    Metrics,
    Other,
}

fn kind(text: &str) -> Kind {
    // statecast's frames end with the type (sorted keys), the Node peer's start with it.
    if text.starts_with(r#"{"type":"change""#) || text.ends_with(r#""type":"change"}"#) {
        return Kind::Change;
    }
    if text.starts_with(r#"{"type":"snapshot""#) || text.ends_with(r#""type":"snapshot"}"#) {
        return Kind::Snapshot;
    }
    if text.contains(r#""type":"metrics""#) {
        return Kind::Metrics;
    }
    match serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .as_ref()
        .and_then(|v| v.get("type"))
        .and_then(|t| t.as_str())
    {
        Some("change") => Kind::Change,
        Some("snapshot") => Kind::Snapshot,
        _ => Kind::Other,
    }
}

/// How many values a `metrics` frame carries: the items of its `values` array (arrays in the
/// compact shape, objects before it), counted in one pass over the text without parsing it.
fn metrics_values(text: &str) -> usize {
    let key = r#""values":["#;
    let Some(at) = text.find(key) else {
        return 0;
    };
    let (mut depth, mut count, mut in_string, mut escaped) = (1usize, 0, false, false);
    for byte in text[at + key.len()..].bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                count += usize::from(depth == 1);
                depth += 1;
            }
            b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    count
}

/// The `sent_us` attribute of a change frame, as a string or a number.
fn sent_us(text: &str) -> Option<u64> {
    let key = r#""sent_us":"#;
    let at = text.find(key)? + key.len();
    let digits = text[at..].trim_start_matches('"');
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

async fn client(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    url: String,
    shared: Arc<Shared>,
    connecting: Arc<Semaphore>,
) {
    let permit = connecting.acquire().await;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let connected = async {
        let tcp = match source {
            Some(ip) => {
                let socket = if ip.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()
                } else {
                    tokio::net::TcpSocket::new_v6()
                }
                .map_err(|e| format!("socket: {e}"))?;
                socket
                    .bind(SocketAddr::new(ip, 0))
                    .map_err(|e| format!("bind {ip}: {e}"))?;
                socket
                    .connect(addr)
                    .await
                    .map_err(|e| format!("connect {addr} from {ip}: {e}"))?
            }
            None => TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?,
        };
        let _ = tcp.set_nodelay(true);
        tokio_tungstenite::client_async_with_config(url.as_str(), tcp, Some(config))
            .await
            .map_err(|e| format!("websocket handshake with {url}: {e}"))
    };
    let mut ws = match tokio::time::timeout(Duration::from_secs(30), connected).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            shared.connect_failed.fetch_add(1, Ordering::Relaxed);
            shared.error(e);
            return;
        }
        Err(_) => {
            shared.connect_failed.fetch_add(1, Ordering::Relaxed);
            shared.error("websocket connect timed out after 30 s".to_owned());
            return;
        }
    };
    drop(permit);
    shared.ready.fetch_add(1, Ordering::Relaxed);
    let mut snapshots = 0u64;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(text)) => match kind(text.as_str()) {
                Kind::Change => {
                    let now = now_us();
                    shared.deliveries_total.fetch_add(1, Ordering::Relaxed);
                    if shared.measuring.load(Ordering::Relaxed) {
                        shared.deliveries.fetch_add(1, Ordering::Relaxed);
                        match sent_us(text.as_str()) {
                            Some(sent) => shared.latency.record(now.saturating_sub(sent)),
                            None => {
                                shared.untimed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                Kind::Snapshot => {
                    snapshots += 1;
                    shared.snapshots.fetch_add(1, Ordering::Relaxed);
                    if snapshots == 2 {
                        shared.resynced_clients.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Kind::Metrics => {
                    if shared.measuring.load(Ordering::Relaxed) {
                        shared.metrics_frames.fetch_add(1, Ordering::Relaxed);
                        shared
                            .metrics_bytes
                            .fetch_add(text.len() as u64, Ordering::Relaxed);
                        let values = metrics_values(text.as_str());
                        shared
                            .metrics_values
                            .fetch_add(values as u64, Ordering::Relaxed);
                    }
                }
                Kind::Other => {}
            },
            Ok(Message::Close(frame)) => {
                if !shared.stop.load(Ordering::Relaxed) {
                    shared.closed_clients.fetch_add(1, Ordering::Relaxed);
                    shared.error(format!("server closed a client: {frame:?}"));
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if !shared.stop.load(Ordering::Relaxed) {
                    shared.errored_clients.fetch_add(1, Ordering::Relaxed);
                    shared.error(format!("websocket error: {e}"));
                }
                return;
            }
        }
    }
    if !shared.stop.load(Ordering::Relaxed) {
        shared.closed_clients.fetch_add(1, Ordering::Relaxed);
    }
}

/// A keep-alive HTTP/1.1 connection posting JSON; just enough HTTP for loopback benchmarks.
/// Appends what the next read brings to `buf`; an error naming `when` if the server closed.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, when: &str) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    let n = stream
        .read(&mut chunk)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err(format!("server closed the connection {when}"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

struct Poster {
    addr: SocketAddr,
    host: String,
    path: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Poster {
    async fn post(&mut self, body: &str) -> Result<(), String> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect {}: {e}", self.addr))?;
            let _ = s.set_nodelay(true);
            self.stream = Some(s);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err("no connection".to_owned());
        };
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            self.path,
            self.host,
            body.len(),
            body
        );
        let result = async {
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| format!("write: {e}"))?;
            self.buf.clear();
            // Headers.
            let header_end = loop {
                if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                if self.buf.len() > 64 * 1024 {
                    return Err("response headers over 64 KiB".to_owned());
                }
                read_more(stream, &mut self.buf, "before answering").await?;
            };
            let head = String::from_utf8_lossy(&self.buf[..header_end]).to_ascii_lowercase();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| format!("not an HTTP response: {:?}", head.lines().next()))?;
            if head.contains("transfer-encoding: chunked") {
                return Err("chunked responses are not supported by this driver".to_owned());
            }
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| "response without Content-Length".to_owned())?;
            while self.buf.len() < header_end + length {
                read_more(stream, &mut self.buf, "mid-body").await?;
            }
            if status != 200 {
                let body =
                    String::from_utf8_lossy(&self.buf[header_end..header_end + length]).to_string();
                return Err(format!("POST answered {status}: {body}"));
            }
            Ok(head.contains("connection: close"))
        }
        .await;
        match result {
            Ok(close) => {
                if close {
                    self.stream = None;
                }
                Ok(())
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }
}

async fn driver(id: usize, args: Arc<Args>, url: String, shared: Arc<Shared>) {
    let (host, path) = match split_url(&url) {
        Ok(p) => p,
        Err(e) => return shared.error(e),
    };
    let addr = match resolve(&host).await {
        Ok(a) => a,
        Err(e) => return shared.error(e),
    };
    let mut poster = Poster {
        addr,
        host,
        path,
        stream: None,
        buf: Vec::new(),
    };
    let batch = args.batch.max(1);
    let per_driver = args.rate / args.drivers.max(1) as f64;
    let mut ticker = (per_driver > 0.0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(batch as f64 / per_driver));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        t
    });
    let mut n = 0u64;
    let mut body = String::new();
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        body.clear();
        body.push('[');
        let measuring = shared.measuring.load(Ordering::Relaxed);
        for i in 0..batch {
            // 64 keys per driver, each flipping ok/critical on every use: every event is a change.
            let key = n % 64;
            let state = if (n / 64).is_multiple_of(2) {
                "critical"
            } else {
                "ok"
            };
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                r#"{{"host":"swarm","service":"fan-{id}-{key}","state":"{state}","description":"statecast-swarm","metric":{n},"sent_us":"{}"}}"#,
                now_us()
            ));
            n += 1;
        }
        body.push(']');
        match poster.post(&body).await {
            Ok(()) => {
                if measuring {
                    shared
                        .posted_events
                        .fetch_add(batch as u64, Ordering::Relaxed);
                }
            }
            Err(e) => {
                shared.post_errors.fetch_add(1, Ordering::Relaxed);
                shared.error(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Arc::new(Args::parse());
    base();
    let mut ws_addrs = Vec::with_capacity(args.ws.len());
    for url in &args.ws {
        let resolved = match split_url(url) {
            Ok((host, _)) => resolve(&host).await,
            Err(e) => Err(e),
        };
        match resolved {
            Ok(addr) => ws_addrs.push((addr, url.clone())),
            Err(e) => {
                eprintln!("statecast-swarm: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let shared = Arc::new(Shared::default());
    let connecting = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let connect_start = Instant::now();
    for i in 0..args.clients {
        let (addr, url) = &ws_addrs[i % ws_addrs.len()];
        let source = (!args.source.is_empty()).then(|| args.source[i % args.source.len()]);
        tokio::spawn(client(
            *addr,
            source,
            url.clone(),
            Arc::clone(&shared),
            Arc::clone(&connecting),
        ));
    }
    // Wait until every client is connected or has failed.
    let total = args.clients as u64;
    loop {
        let done =
            shared.ready.load(Ordering::Relaxed) + shared.connect_failed.load(Ordering::Relaxed);
        if done >= total {
            break;
        }
        if connect_start.elapsed().as_secs_f64() > args.connect_timeout {
            eprintln!(
                "statecast-swarm: only {done} of {total} clients connected after {} s",
                args.connect_timeout
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = shared.ready.load(Ordering::Relaxed);
    let connect_secs = connect_start.elapsed().as_secs_f64();
    eprintln!("swarm connected clients={ready} in {connect_secs:.2}s");
    if ready < total {
        eprintln!(
            "statecast-swarm: {} clients failed to connect: {}",
            total - ready,
            shared.first_error.get().map_or("", String::as_str)
        );
        return std::process::ExitCode::FAILURE;
    }

    let mut drivers = Vec::new();
    if !args.post.is_empty() && !args.idle {
        for id in 0..args.drivers.max(1) {
            drivers.push(tokio::spawn(driver(
                id,
                Arc::clone(&args),
                args.post[id % args.post.len()].clone(),
                Arc::clone(&shared),
            )));
        }
    }
    if !args.idle {
        tokio::time::sleep(Duration::from_secs_f64(args.warmup.max(0.0))).await;
    }
    shared.measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration.max(0.1))).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    shared.stop.store(true, Ordering::Relaxed);
    for d in drivers {
        let _ = tokio::time::timeout(Duration::from_secs(5), d).await;
    }

    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let deliveries = get(&shared.deliveries);
    let posted = get(&shared.posted_events);
    let lat = &shared.latency;
    let (p50, p99, max) = (lat.quantile(0.5), lat.quantile(0.99), lat.max());
    let expected = posted * total;
    let behind = get(&shared.resynced_clients) + get(&shared.closed_clients);
    println!(
        "{} clients={} rate={} batch={}: {:.0} deliveries/s ({:.1}% of posted×clients), {:.0} events posted/s, latency p50={:.3}ms p99={:.3}ms max={:.3}ms, behind={} (resynced {}, closed {}, errors {})",
        if args.label.is_empty() { "swarm" } else { &args.label },
        total,
        args.rate,
        args.batch,
        deliveries as f64 / elapsed,
        if expected > 0 { 100.0 * deliveries as f64 / expected as f64 } else { 0.0 },
        posted as f64 / elapsed,
        ms(p50),
        ms(p99),
        ms(max),
        behind,
        get(&shared.resynced_clients),
        get(&shared.closed_clients),
        get(&shared.errored_clients),
    );
    let json = serde_json::json!({
        "tool": "statecast-swarm",
        "label": args.label,
        "clients": total,
        "ws_servers": args.ws.len(),
        "rate": args.rate,
        "batch": args.batch,
        "drivers": args.drivers,
        "idle": args.idle,
        "connect_seconds": connect_secs,
        "seconds": elapsed,
        "posted_events": posted,
        "posted_per_s": posted as f64 / elapsed,
        "deliveries": deliveries,
        "deliveries_per_s": deliveries as f64 / elapsed,
        "delivery_fraction": if expected > 0 { deliveries as f64 / expected as f64 } else { 0.0 },
        "untimed_deliveries": get(&shared.untimed),
        "latency_us": {"p50": p50, "p99": p99, "max": max},
        "snapshots": get(&shared.snapshots),
        "metrics_frames_per_s": get(&shared.metrics_frames) as f64 / elapsed,
        "metrics_bytes_per_s": get(&shared.metrics_bytes) as f64 / elapsed,
        "metrics_values_per_s": get(&shared.metrics_values) as f64 / elapsed,
        "resynced_clients": get(&shared.resynced_clients),
        "closed_clients": get(&shared.closed_clients),
        "errored_clients": get(&shared.errored_clients),
        "post_errors": get(&shared.post_errors),
        "first_error": shared.first_error.get(),
    });
    println!("{json}");
    std::process::ExitCode::SUCCESS
}
