//! `statecast-load`: a Riemann protobuf TCP load generator (benchmarks, see BENCHMARKS.md).
//!
//! N connections, M events per `Msg`, K messages in flight per connection, pipelined the way
//! Riemann's Java client does it: a writer keeps up to K requests outstanding, a reader matches
//! replies FIFO and measures each reply's latency. A fraction of events (`--change-ratio`) are
//! state changes: each connection has one "flip" key whose state alternates ok/critical on every
//! use, so every flip event is a change; all other events keep state `ok` on a fixed key set.
//!
//! Prints a human summary and one JSON line (prefixed by nothing, starting with `{`) on stdout.

#[path = "common/hist.rs"]
mod hist;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use prost::Message;
use statecast::ingest::frame::{encode, FrameDecoder};
use statecast::proto::{Event, Msg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

use hist::{ms, Histogram};

#[derive(Debug, Parser)]
#[command(
    name = "statecast-load",
    about = "Riemann protobuf TCP load generator: pipelined, reports acked events/s and reply latency"
)]
struct Args {
    /// Server address (Riemann TCP); several, comma-separated, spread the connections over them
    /// in turn (connection i goes to address i mod n: ingest into every node of a cluster).
    #[arg(
        long,
        default_value = "127.0.0.1:5555",
        value_delimiter = ',',
        required = true
    )]
    addr: Vec<SocketAddr>,
    /// TCP connections.
    #[arg(long, short = 'c', default_value_t = 1)]
    connections: usize,
    /// Events per Msg.
    #[arg(long, short = 'b', default_value_t = 100)]
    batch: usize,
    /// Messages in flight per connection (sent, reply not yet read).
    #[arg(long, short = 'k', default_value_t = 64)]
    in_flight: usize,
    /// Fraction of events that are state changes (0.0..=1.0).
    #[arg(long, default_value_t = 0.01)]
    change_ratio: f64,
    /// Distinct steady (never changing) keys per connection.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Make the cycle of pre-encoded messages long enough that every steady key is sent twice
    /// per cycle with two different metrics: each use of a key then moves its metric (without it
    /// a cycle can be one message, so a run touches only `batch` keys and repeats their values).
    #[arg(long)]
    cover_keys: bool,
    /// Measured seconds.
    #[arg(long, short = 'd', default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before measuring starts (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Offered events per second over all connections (0: as fast as acknowledged). Each
    /// connection sends its share on a fixed schedule (still at most `in_flight` unanswered),
    /// catching up in one write when it fell behind: a server that keeps up shows this rate.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// A label copied into the JSON line (e.g. the server's name).
    #[arg(long, default_value = "")]
    label: String,
}

/// Per-run shared counters.
struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    acked_msgs: AtomicU64,
    acked_events: AtomicU64,
    errors: AtomicU64,
    latency: Histogram,
}

/// Builds one connection's cycle of encoded frames. The cycle holds an even number of flip
/// events so that repeating it keeps alternating the flip key's state.
fn build_cycle(args: &Args, conn: usize) -> (Vec<Bytes>, u64) {
    let m = args.batch.max(1);
    let r = args.change_ratio.clamp(0.0, 1.0);
    // Smallest cycle length L (messages) with L*M*r an even integer >= 2 (when r > 0).
    let mut len = 1usize;
    if r > 0.0 {
        for l in 1..=100_000usize {
            let flips = l as f64 * m as f64 * r;
            let rounded = flips.round();
            if rounded >= 2.0
                && (flips - rounded).abs() < 1e-6
                && (rounded as u64).is_multiple_of(2)
            {
                len = l;
                break;
            }
            len = l;
        }
    }
    if args.cover_keys {
        // A whole number of the cycles above keeps the flips' count even.
        let wanted = (2 * args.keys.max(1)).div_ceil(m);
        len *= wanted.div_ceil(len).max(1);
    }
    let host = format!("load-{conn}");
    let mut frames = Vec::with_capacity(len);
    let mut flips = 0u64;
    let mut steady = 0usize;
    let total = len * m;
    for msg_i in 0..len {
        let mut events = Vec::with_capacity(m);
        for ev_i in 0..m {
            let j = msg_i * m + ev_i;
            // Event j is a flip when floor((j+1)*r) > floor(j*r): spreads flips evenly.
            let is_flip = r > 0.0
                && ((j + 1) as f64 * r + 1e-9).floor() > (j as f64 * r + 1e-9).floor()
                && flips < (total as f64 * r).round() as u64;
            let (service, state) = if is_flip {
                flips += 1;
                // Odd uses go to critical (init is ok), even uses back to ok.
                let state = if !flips.is_multiple_of(2) {
                    "critical"
                } else {
                    "ok"
                };
                ("flip".to_owned(), state)
            } else {
                steady += 1;
                (format!("svc-{}", steady % args.keys.max(1)), "ok")
            };
            events.push(Event {
                host: Some(host.clone()),
                service: Some(service),
                state: Some(state.to_owned()),
                description: Some("statecast-load".to_owned()),
                metric_d: Some(j as f64),
                // No time: the server stamps arrival, so frames can be pre-encoded and reused
                // for any duration without the events aging past their TTL.
                ttl: Some(60.0),
                ..Default::default()
            });
        }
        let msg = Msg {
            events,
            ..Default::default()
        };
        let mut buf = BytesMut::new();
        encode(&msg, &mut buf);
        frames.push(buf.freeze());
    }
    (frames, flips)
}

/// A connection's sending schedule under `--rate`: message i is due at start + i ÷ rate.
struct Schedule {
    start: Instant,
    msgs_per_s: f64,
    sent: u64,
}

impl Schedule {
    /// Waits until the next message is due; returns how many are due by then (at least 1).
    async fn wait_for_due(&self) -> usize {
        let next_due = self.start + Duration::from_secs_f64(self.sent as f64 / self.msgs_per_s);
        tokio::time::sleep_until(next_due.into()).await;
        let due_by_now = (self.start.elapsed().as_secs_f64() * self.msgs_per_s) as u64 + 1;
        due_by_now.saturating_sub(self.sent).max(1) as usize
    }
}

async fn run_connection(args: Arc<Args>, conn: usize, shared: Arc<Shared>) -> Result<(), String> {
    let (frames, _) = build_cycle(&args, conn);
    let addr = args.addr[conn % args.addr.len()];
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut read, mut write) = stream.into_split();
    let k = args.in_flight.max(1);
    let window = Arc::new(Semaphore::new(k));
    // One entry per written frame: when it was sent, in order.
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<Instant>();
    let events_per_msg = args.batch.max(1) as u64;

    let writer_window = Arc::clone(&window);
    let writer_shared = Arc::clone(&shared);
    let msgs_per_s = args.rate / events_per_msg as f64 / args.connections.max(1) as f64;
    let mut schedule = (msgs_per_s > 0.0).then(|| Schedule {
        start: Instant::now(),
        msgs_per_s,
        sent: 0,
    });
    let writer = tokio::spawn(async move {
        let mut next = 0usize;
        let mut out = BytesMut::with_capacity(64 * 1024);
        loop {
            if writer_shared.stop.load(Ordering::Relaxed) {
                break;
            }
            // Wait for one slot, then take every other slot that is free: one write per burst.
            let Ok(permit) = writer_window.acquire().await else {
                break;
            };
            permit.forget();
            let mut n = 1;
            while let Ok(p) = writer_window.try_acquire() {
                p.forget();
                n += 1;
            }
            if let Some(schedule) = schedule.as_mut() {
                let due = schedule.wait_for_due().await;
                // Slots beyond what the schedule allows now go back to the window.
                writer_window.add_permits(n - n.min(due));
                n = n.min(due);
                schedule.sent += n as u64;
            }
            let now = Instant::now();
            for _ in 0..n {
                out.extend_from_slice(&frames[next]);
                next = (next + 1) % frames.len();
                if sent_tx.send(now).is_err() {
                    return Ok::<(), String>(());
                }
            }
            if let Err(e) = write.write_all(&out).await {
                return Err(format!("write: {e}"));
            }
            out.clear();
        }
        // Done sending; half-close so the server sees EOF after answering.
        let _ = write.shutdown().await;
        Ok(())
    });

    let decoder = FrameDecoder::new(16 * 1024 * 1024);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let result = loop {
        match decoder.decode(&mut buf) {
            Ok(Some(body)) => {
                let Some(sent) = sent_rx.recv().await else {
                    break Err("server replied to a message that was never sent".to_owned());
                };
                let reply = match Msg::decode(body) {
                    Ok(reply) => reply,
                    Err(e) => break Err(format!("undecodable reply: {e}")),
                };
                if reply.ok != Some(true) {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    break Err(format!(
                        "server replied ok={:?} error={:?}",
                        reply.ok, reply.error
                    ));
                }
                if shared.measuring.load(Ordering::Relaxed) {
                    shared.acked_msgs.fetch_add(1, Ordering::Relaxed);
                    shared
                        .acked_events
                        .fetch_add(events_per_msg, Ordering::Relaxed);
                    shared.latency.record(sent.elapsed().as_micros() as u64);
                }
                window.add_permits(1);
                continue;
            }
            Ok(None) => {}
            Err(e) => break Err(format!("bad reply frame: {e}")),
        }
        if shared.stop.load(Ordering::Relaxed) && sent_rx.is_empty() && writer.is_finished() {
            break Ok(());
        }
        buf.reserve(64 * 1024);
        match tokio::time::timeout(Duration::from_secs(10), read.read_buf(&mut buf)).await {
            Ok(Ok(0)) => {
                if shared.stop.load(Ordering::Relaxed) && sent_rx.is_empty() {
                    break Ok(());
                }
                break Err("server closed the connection".to_owned());
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break Err(format!("read: {e}")),
            Err(_) => break Err("no reply for 10 s".to_owned()),
        }
    };
    window.close();
    if let Ok(Err(e)) = writer.await {
        if result.is_ok() {
            return Err(e);
        }
    }
    result
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Arc::new(Args::parse());
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        acked_msgs: AtomicU64::new(0),
        acked_events: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latency: Histogram::new(),
    });
    let (_, flips_per_cycle) = build_cycle(&args, 0);
    let mut tasks = Vec::new();
    for conn in 0..args.connections.max(1) {
        tasks.push(tokio::spawn(run_connection(
            Arc::clone(&args),
            conn,
            Arc::clone(&shared),
        )));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup.max(0.0))).await;
    shared.measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration.max(0.1))).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    shared.stop.store(true, Ordering::Relaxed);

    let mut failures = Vec::new();
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(15), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => failures.push(e),
            Ok(Err(e)) => failures.push(format!("connection task failed: {e}")),
            Err(_) => failures.push("connection did not finish within 15 s".to_owned()),
        }
    }
    let msgs = shared.acked_msgs.load(Ordering::Relaxed);
    let events = shared.acked_events.load(Ordering::Relaxed);
    let lat = &shared.latency;
    let (p50, p99, max) = (lat.quantile(0.5), lat.quantile(0.99), lat.max());
    println!(
        "{} conns={} batch={} in_flight={} change_ratio={}: {:.0} events/s, {:.0} msgs/s, latency p50={:.3}ms p99={:.3}ms max={:.3}ms",
        if args.label.is_empty() { "load" } else { &args.label },
        args.connections,
        args.batch,
        args.in_flight,
        args.change_ratio,
        events as f64 / elapsed,
        msgs as f64 / elapsed,
        ms(p50),
        ms(p99),
        ms(max)
    );
    let json = serde_json::json!({
        "tool": "statecast-load",
        "label": args.label,
        "connections": args.connections,
        "servers": args.addr.len(),
        "batch": args.batch,
        "in_flight": args.in_flight,
        "change_ratio": args.change_ratio,
        "rate": args.rate,
        "flips_per_cycle": flips_per_cycle,
        "seconds": elapsed,
        "acked_msgs": msgs,
        "acked_events": events,
        "events_per_s": events as f64 / elapsed,
        "msgs_per_s": msgs as f64 / elapsed,
        "latency_us": {"p50": p50, "p99": p99, "max": max},
        "errors": failures,
    });
    println!("{json}");
    if failures.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        for f in &failures {
            eprintln!("statecast-load: {f}");
        }
        std::process::ExitCode::FAILURE
    }
}
