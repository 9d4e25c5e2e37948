//! Issue 12, "nothing acknowledged lost without a word": a corrupt record in the middle of the
//! change log, an empty database beside a log, and a full disk (on a small tmpfs: these tests
//! mount one, so they run as root, as CI does).

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// Every change in history (paged: a page holds at most 10,000): their seqs and services.
async fn history_seqs_and_services(server: &Server) -> (Vec<u64>, BTreeSet<String>) {
    let (mut seqs, mut services) = (Vec::new(), BTreeSet::new());
    loop {
        let since = seqs.last().copied().unwrap_or(0);
        let path = format!("/api/history?since={since}&limit=10000");
        let response = http_request(server.http, "GET", &path, &[], b"").await;
        assert_eq!(response.status, 200, "{}", response.body);
        let json = response.json();
        let changes = json["changes"].as_array().unwrap();
        if changes.is_empty() {
            return (seqs, services);
        }
        for c in changes {
            seqs.push(c["seq"].as_u64().unwrap());
            services.insert(c["event"]["service"].as_str().unwrap_or("").to_owned());
        }
    }
}

/// The records of the change log's current round (from offset 0 while checksums hold and `seq`
/// increases): (offset, payload length, seq). Parsed here independently of the server's code.
fn logged_records(log: &[u8]) -> Vec<(usize, usize, u64)> {
    let mut records = Vec::new();
    let mut at = 0;
    let mut last_seq = 0;
    while at + 8 <= log.len() {
        let len = u32::from_be_bytes(log[at..at + 4].try_into().unwrap()) as usize;
        let crc = u32::from_be_bytes(log[at + 4..at + 8].try_into().unwrap());
        if len == 0 || at + 8 + len > log.len() {
            break;
        }
        let payload = &log[at + 8..at + 8 + len];
        if crc32fast::hash(payload) != crc || payload[0] != 0x08 {
            break;
        }
        // Field 1 (seq) comes first: a varint.
        let mut seq = 0u64;
        for (i, byte) in payload[1..].iter().take(10).enumerate() {
            seq |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                break;
            }
        }
        if seq <= last_seq {
            break;
        }
        last_seq = seq;
        records.push((at, len, seq));
        at += 8 + len;
    }
    records
}

#[tokio::test]
async fn a_flipped_byte_in_the_first_logged_record_loses_only_that_record() {
    let dir = fresh_dir("flip");
    let log_path = dir.join("changes.log");
    let db_path = dir.join("statecast.redb");
    // The database as a clean stop leaves it (durable): what a power cut falls back to.
    let mut server = start_server_in(&dir, &[]);
    let mut tcp = RiemannTcp::connect(&server).await;
    let reply = tcp
        .request(&events_msg(vec![event("flip", "first", "critical")]))
        .await;
    assert_eq!(reply.ok, Some(true), "{reply:?}");
    drop(tcp);
    assert!(server.terminate().success());
    drop(server);
    let durable_db = std::fs::read(&db_path).unwrap();

    let server = start_server_in(&dir, &[]);
    let mut tcp = RiemannTcp::connect(&server).await;
    // Changes until the log's current round (since the last checkpoint, at most a second)
    // holds many records, then kill -9.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    loop {
        // Pipelined: many changes per log write, so a slow machine still logs many records
        // between two checkpoints.
        let mut burst = Vec::new();
        for _ in 0..50 {
            let msg = events_msg(vec![event("flip", &format!("s{i}"), "critical")]);
            burst.extend(frame(&msg));
            i += 1;
        }
        tcp.write_raw(&burst).await;
        for _ in 0..50 {
            assert_eq!(tcp.read_reply().await.and_then(|r| r.ok), Some(true));
        }
        let log = std::fs::read(&log_path).unwrap();
        if logged_records(&log).len() >= 50 {
            break;
        }
        assert!(Instant::now() < deadline, "the log never held 50 records");
    }
    server.kill_9();
    drop(server);
    // A power cut rather than a kill: redb's writes since its last durable commit are gone
    // (a kill leaves them in the page cache), so the log's records are all there is.
    std::fs::write(&db_path, &durable_db).unwrap();

    let mut log = std::fs::read(&log_path).unwrap();
    let records = logged_records(&log);
    assert!(records.len() >= 50, "{} records", records.len());
    let (first_at, first_len, first_seq) = records[0];
    // Flip one byte in the first record's payload: its checksum no longer holds.
    log[first_at + 8 + first_len - 1] ^= 0x40;
    std::fs::write(&log_path, &log).unwrap();
    let later: Vec<u64> = records[1..].iter().map(|r| r.2).collect();

    let restarted = start_server_in(&dir, &[]);
    let (seqs, _) = history_seqs_and_services(&restarted).await;
    let stored: BTreeSet<u64> = seqs.into_iter().collect();
    let lost: Vec<u64> = later
        .iter()
        .copied()
        .filter(|s| !stored.contains(s))
        .collect();
    eprintln!(
        "MEASURE flipped byte: {} later records, {} lost (first record seq {first_seq})",
        later.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} of {} later records lost",
        lost.len(),
        later.len()
    );
    // Said, not only survived: the start counts the damaged stretch it skipped and the records
    // after it that it replayed.
    assert_eq!(restarted.metric("statecast_store_log_skipped").await, 1);
    assert_eq!(
        restarted.metric("statecast_store_log_replayed").await,
        later.len() as u64
    );
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_empty_database_beside_a_change_log_is_refused_unless_allowed() {
    let dir = fresh_dir("emptydb");
    let mut server = start_server_in(&dir, &[]);
    let mut tcp = RiemannTcp::connect(&server).await;
    for i in 0..50 {
        let reply = tcp
            .request(&events_msg(vec![event("e", &format!("s{i}"), "critical")]))
            .await;
        assert_eq!(reply.ok, Some(true));
    }
    drop(tcp);
    assert!(server.terminate().success());
    drop(server);
    // The database file loses its content (a bad copy, a full disk during a restore...).
    std::fs::File::create(dir.join("statecast.redb")).unwrap();

    let (status, stderr) = run_to_exit(&dir, &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    // Besides the usual INFO lines of a start (listeners), one line says why.
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains(" INFO ")).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("statecast: "), "{stderr}");
    assert!(
        lines[0].contains("--allow-fresh-database") && lines[0].contains("changes.log"),
        "{stderr}"
    );
    assert!(
        std::fs::metadata(dir.join("statecast.redb")).unwrap().len() == 0,
        "a refused start leaves the files as they were"
    );

    // The operator says so: a fresh database, with what the log still holds replayed.
    let allowed = start_server_in(&dir, &["--allow-fresh-database"]);
    let (_, services) = history_seqs_and_services(&allowed).await;
    assert!(
        services.contains("s49"),
        "the last change is replayed: {services:?}"
    );
    drop(allowed);
    // Once started, the new database is the data: a plain restart works.
    let again = start_server_in(&dir, &[]);
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends one change on `tcp` (reconnecting when the server closed it, counted): the reply.
async fn send_counting_reconnects(
    server: &Server,
    tcp: &mut RiemannTcp,
    reconnects: &mut usize,
    msg: &statecast::proto::Msg,
) -> statecast::proto::Msg {
    loop {
        let bytes = frame(msg);
        if tcp.stream.write_all(&bytes).await.is_ok() {
            if let Some(reply) = tcp.read_reply().await {
                return reply;
            }
        }
        *reconnects += 1;
        assert!(*reconnects < 10_000, "reconnect storm");
        *tcp = RiemannTcp::connect(server).await;
    }
}

fn big_change(service: &str) -> statecast::proto::Msg {
    let mut e = event("full", service, "critical");
    e.description = Some("x".repeat(16 * 1024));
    events_msg(vec![e])
}

#[tokio::test]
async fn a_full_disk_refuses_keeps_connections_and_recovers_by_itself() {
    let fs = Tmpfs::mount("full", "64m");
    let data = fs.dir.join("data");
    // Room for every held change when they are published at once (16 KiB each): the dashboard
    // must see them all as changes, not a resynchronising snapshot.
    let server = start_server_in(&data, &["--ws-queue-bytes", "67108864"]);
    let (mut dash, _) = WsClient::connect_with_snapshot(&server).await;
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let watcher = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(Ok(frame)) = dash.ws.next().await {
                let Ok(text) = frame.into_text() else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if value["type"] == "change" {
                    seen.lock().unwrap().push(value);
                }
            }
        })
    };
    let mut tcp = RiemannTcp::connect(&server).await;
    let mut acked = BTreeSet::new();
    let mut reconnects = 0;
    for i in 0..5 {
        let service = format!("before{i}");
        let reply =
            send_counting_reconnects(&server, &mut tcp, &mut reconnects, &big_change(&service))
                .await;
        assert_eq!(reply.ok, Some(true), "{reply:?}");
        acked.insert(service);
    }

    // The disk fills up.
    let filler = fs.fill("filler");
    eprintln!("filler: {filler} bytes");
    let started = Instant::now();
    let (mut refused, mut refused_services) = (0, BTreeSet::new());
    let mut n = 0;
    while refused < 40 && started.elapsed() < Duration::from_secs(60) {
        let service = format!("during{n}");
        n += 1;
        let reply =
            send_counting_reconnects(&server, &mut tcp, &mut reconnects, &big_change(&service))
                .await;
        if reply.ok == Some(true) {
            acked.insert(service);
        } else {
            refused += 1;
            refused_services.insert(service);
        }
    }
    let outage = started.elapsed();
    eprintln!(
        "MEASURE disk full: {n} sends, {refused} refused, {reconnects} reconnects in {outage:?}"
    );
    let post = post_json(
        &server,
        r#"{"host":"full","service":"post","state":"critical"}"#,
    )
    .await;
    // While the disk is full, dashboards see only what was acknowledged.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let unacked_seen: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| c["event"]["service"].as_str().unwrap().to_owned())
        .filter(|s| !acked.contains(s))
        .collect();
    eprintln!(
        "MEASURE disk full: dashboard saw {} changes whose message got ok:false",
        unacked_seen.len()
    );
    assert!(refused > 0, "a full disk refuses changes");
    assert_eq!(
        reconnects, 0,
        "the connection stays open on a storage error"
    );
    assert!(
        unacked_seen.is_empty(),
        "dashboards saw refused changes: {unacked_seen:?}"
    );
    assert_eq!(post.status, 503, "POST while storage fails: {}", post.body);
    assert!(post.body.contains("storage unavailable"), "{}", post.body);

    // Space comes back: the server recovers by itself.
    std::fs::remove_file(fs.dir.join("filler")).unwrap();
    let freed = Instant::now();
    let mut attempt = 0;
    loop {
        let service = format!("after{attempt}");
        attempt += 1;
        let reply =
            send_counting_reconnects(&server, &mut tcp, &mut reconnects, &big_change(&service))
                .await;
        if reply.ok == Some(true) {
            acked.insert(service);
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(30),
            "not recovered 30 s after space came back: {reply:?}\n{}\n{}",
            server.stderr(),
            String::from_utf8_lossy(
                &Command::new("sh")
                    .arg("-c")
                    .arg(format!("ls -la {0}/data; df -k {0}", fs.dir.display()))
                    .output()
                    .unwrap()
                    .stdout
            )
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "MEASURE recovered {:?} after space came back",
        freed.elapsed()
    );
    for i in 0..5 {
        let service = format!("later{i}");
        let reply =
            send_counting_reconnects(&server, &mut tcp, &mut reconnects, &big_change(&service))
                .await;
        assert_eq!(reply.ok, Some(true), "{reply:?}");
        acked.insert(service);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen
        .lock()
        .unwrap()
        .iter()
        .any(|c| c["event"]["service"] == "later4")
    {
        assert!(Instant::now() < deadline, "dashboard never saw later4");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watcher.abort();
    let dash_seqs: Vec<u64> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert!(
        dash_seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "dashboard seqs have a hole: {dash_seqs:?}"
    );
    let (seqs, services) = history_seqs_and_services(&server).await;
    let holes = seqs.windows(2).filter(|w| w[1] != w[0] + 1).count();
    eprintln!("MEASURE history holes after the outage: {holes}");
    assert_eq!(holes, 0, "history has a hole: {seqs:?}");
    assert_eq!(seqs.first(), Some(&1));
    let missing: Vec<&String> = acked.difference(&services).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in history: {missing:?}"
    );

    // A restart on a full disk starts, and catches up by itself once space is back.
    fs.fill("filler");
    // Changes the log takes (it is preallocated) but the database cannot: only the log has them
    // when the process dies.
    for i in 0..20 {
        let service = format!("full-again{i}");
        let reply = tcp.request(&big_change(&service)).await;
        if reply.ok == Some(true) {
            acked.insert(service);
        }
    }
    server.kill_9();
    drop(server);
    let restarted = start_server_in(&data, &[]);
    let mut tcp = RiemannTcp::connect(&restarted).await;
    let reply = tcp.request(&big_change("while-full")).await;
    eprintln!(
        "MEASURE restart on a full disk: started (database written at start: {}), first reply ok={:?}",
        !restarted.stderr().contains("cannot write the database"),
        reply.ok
    );
    if reply.ok == Some(true) {
        acked.insert("while-full".to_owned());
    }
    std::fs::remove_file(fs.dir.join("filler")).unwrap();
    let freed = Instant::now();
    for attempt in 0.. {
        let service = format!("after-restart{attempt}");
        let reply = tcp.request(&big_change(&service)).await;
        if reply.ok == Some(true) {
            acked.insert(service);
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(30),
            "restarted on a full disk, not recovered 30 s after space came back: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(tcp);
    let mut restarted = restarted;
    assert!(restarted.terminate().success());
    drop(restarted);

    // A restart finds everything acknowledged.
    let restarted = start_server_in(&data, &[]);
    let (seqs, services) = history_seqs_and_services(&restarted).await;
    let missing: Vec<&String> = acked.difference(&services).collect();
    assert!(missing.is_empty(), "lost across a restart: {missing:?}");
    let holes = seqs.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert_eq!(holes, 0, "history has a hole: {seqs:?}");
    drop(restarted);
}

#[tokio::test]
async fn a_server_starts_in_a_2_mib_data_directory() {
    let fs = Tmpfs::mount("small", "2m");
    let server = start_server_in(&fs.dir.join("data"), &[]);
    let mut tcp = RiemannTcp::connect(&server).await;
    let reply = tcp
        .request(&events_msg(vec![event("small", "disk", "critical")]))
        .await;
    assert_eq!(reply.ok, Some(true), "{reply:?}");
    drop(server);
}

/// Streams changes (each message a new key) on one connection until `stop`: every service the
/// server acknowledged goes into `acked`, refusals are counted.
fn stream_changes(
    server: &Server,
    conn: usize,
    acked: Arc<Mutex<BTreeSet<String>>>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let addrs: Addrs = **server;
    tokio::spawn(async move {
        use std::sync::atomic::Ordering;
        let mut tcp = RiemannTcp::connect(&addrs).await;
        let mut reconnects = 0;
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let service = format!("c{conn}-{i}");
            i += 1;
            let mut e = event("stream", &service, "critical");
            e.description = Some("d".repeat(2000));
            let reply = loop {
                if tcp
                    .stream
                    .write_all(&frame(&events_msg(vec![e.clone()])))
                    .await
                    .is_ok()
                {
                    if let Some(reply) = tcp.read_reply().await {
                        break reply;
                    }
                }
                reconnects += 1;
                assert!(reconnects < 1000, "reconnect storm");
                tcp = RiemannTcp::connect(&addrs).await;
            };
            if reply.ok == Some(true) {
                acked.lock().unwrap().insert(service);
            } else {
                refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

async fn readyz(server: &Addrs) -> u16 {
    http_request(server.http, "GET", "/readyz", &[], b"")
        .await
        .status
}

/// Waits (up to `limit`) until `check` holds, polling every 50 ms; panics with `what`.
async fn wait_until<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Issue 20 item 14: the disk fills up under a continuous stream, then space comes back while
/// the stream goes on. Recovery must make progress under that load (the stream must not refill
/// the disk before the database is back), `/api/history` must answer again, and a restart after
/// `kill -9` must find every acknowledged change and no damaged record.
#[tokio::test]
async fn a_full_disk_under_a_continuous_stream_recovers_when_space_comes_back() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let fs = Tmpfs::mount("full-stream", "24m");
    let data = fs.dir.join("data");
    let server = start_server_in(&data, &[]);
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|conn| {
            let (a, r, s) = (Arc::clone(&acked), Arc::clone(&refused), Arc::clone(&stop));
            stream_changes(&server, conn, a, r, s)
        })
        .collect();
    let acked_now = || acked.lock().unwrap().len();
    wait_until(Duration::from_secs(60), "the stream starts", || async {
        acked_now() >= 200
    })
    .await;

    // The disk fills up: the server refuses (storage unavailable) while the stream goes on.
    let filler = fs.fill("filler");
    let to_failing = wait_until(
        Duration::from_secs(60),
        "/readyz 503 on a full disk",
        || async { readyz(&server).await == 503 },
    )
    .await;
    wait_until(
        Duration::from_secs(60),
        "refusals on a full disk",
        || async { refused.load(Ordering::Relaxed) >= 50 },
    )
    .await;

    // Space comes back under the same stream.
    std::fs::remove_file(fs.dir.join("filler")).unwrap();
    let acked_at_free = acked_now();
    let to_ready = wait_until(
        Duration::from_secs(60),
        "/readyz 200 after space came back",
        || async { readyz(&server).await == 200 },
    )
    .await;
    let to_history = wait_until(
        Duration::from_secs(60),
        "/api/history 200 after space came back",
        || async {
            http_request(server.http, "GET", "/api/history?since=0&limit=1", &[], b"")
                .await
                .status
                == 200
        },
    )
    .await;
    wait_until(
        Duration::from_secs(60),
        "the stream acknowledged again",
        || async { acked_now() >= acked_at_free + 500 },
    )
    .await;
    assert_eq!(readyz(&server).await, 200, "{}", server.stderr());
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    eprintln!(
        "MEASURE full disk under a stream: filler {filler} bytes, /readyz 503 after {to_failing:?}; \
         after space came back /readyz 200 in {to_ready:?}, /api/history 200 in {to_history:?}; \
         {} acknowledged, {} refused",
        acked_now(),
        refused.load(Ordering::Relaxed)
    );
    server.kill_9();
    drop(server);

    let restarted = start_server_in(&data, &[]);
    let skipped = restarted.metric("statecast_store_log_skipped").await;
    assert_eq!(
        skipped,
        0,
        "damaged records skipped:\n{}",
        restarted.stderr()
    );
    let (seqs, services) = history_seqs_and_services(&restarted).await;
    let holes = seqs.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert_eq!(holes, 0, "history has a hole");
    let acked = acked.lock().unwrap().clone();
    let missing = acked.difference(&services).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged changes lost",
        acked.len()
    );
    drop(restarted);
}

/// How a test damages the change log.
#[derive(Debug, Clone, Copy)]
enum LogDamage {
    /// Replaced with 4 MiB of garbage.
    Garbage,
    /// Cut to 100 bytes.
    Truncated,
    Deleted,
}

impl LogDamage {
    fn apply(self, log: &std::path::Path) {
        match self {
            LogDamage::Garbage => {
                // Deterministic noise (an LCG): no zeros at the start, no records anywhere.
                let mut x: u32 = 0x1234_5678;
                let bytes: Vec<u8> = (0..4 << 20)
                    .map(|_| {
                        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        (x >> 24) as u8 | 1
                    })
                    .collect();
                std::fs::write(log, bytes).unwrap();
            }
            LogDamage::Truncated => {
                let file = std::fs::OpenOptions::new().write(true).open(log).unwrap();
                file.set_len(100).unwrap();
            }
            LogDamage::Deleted => std::fs::remove_file(log).unwrap(),
        }
    }
}

/// Issue 20 item 13: a change log replaced with garbage, cut short or deleted while the database
/// lacks what it held (after a power cut: the database is at its last checkpoint) is refused
/// with one line naming the log and the flag; with `--allow-data-loss` the server starts from
/// what is left. After a clean stop the same damage loses nothing, and the start goes on.
#[tokio::test]
async fn a_damaged_or_missing_change_log_is_refused_unless_allowed() {
    for damage in [LogDamage::Garbage, LogDamage::Truncated, LogDamage::Deleted] {
        let dir = fresh_dir("lost-log");
        let (log, db) = (dir.join("changes.log"), dir.join("statecast.redb"));
        let mut server = start_server_in(&dir, &[]);
        let mut tcp = RiemannTcp::connect(&server).await;
        for i in 0..10 {
            let msg = events_msg(vec![event("kept", &format!("s{i}"), "critical")]);
            assert_eq!(tcp.request(&msg).await.ok, Some(true));
        }
        drop(tcp);
        assert!(server.terminate().success());
        drop(server);
        let server = start_server_in(&dir, &[]);
        // The database as it is durable now (the start committed, nothing sent since): what a
        // power cut falls back to.
        let durable_db = std::fs::read(&db).unwrap();
        let mut tcp = RiemannTcp::connect(&server).await;
        for i in 0..50 {
            let msg = events_msg(vec![event("lost", &format!("s{i}"), "critical")]);
            assert_eq!(tcp.request(&msg).await.ok, Some(true));
        }
        drop(tcp);
        server.kill_9();
        drop(server);
        std::fs::write(&db, &durable_db).unwrap();
        damage.apply(&log);
        let log_before = std::fs::read(&log).ok();

        let (status, stderr) = run_to_exit(&dir, &[]);
        assert_eq!(
            status.code(),
            Some(1),
            "{damage:?} must be refused: {stderr}"
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains(" INFO ")).collect();
        assert_eq!(lines.len(), 1, "{damage:?}: one line: {stderr}");
        assert!(lines[0].starts_with("statecast: "), "{stderr}");
        assert!(
            lines[0].contains("changes.log") && lines[0].contains("--allow-data-loss"),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read(&log).ok(),
            log_before,
            "{damage:?}: a refused start leaves the log as it was"
        );

        // The operator consents: the server starts from what is left, and says what it lost.
        let allowed = start_server_in(&dir, &["--allow-data-loss"]);
        let (_, services) = history_seqs_and_services(&allowed).await;
        let kept = services.iter().filter(|s| s.starts_with('s')).count();
        assert!(
            kept >= 10,
            "the changes of the database are there: {services:?}"
        );
        eprintln!(
            "MEASURE {damage:?}: refused ({}); with --allow-data-loss {kept} of 60 acknowledged changes are there",
            lines[0]
        );
        drop(allowed);
        // Once started, the log is the server's own again: a plain restart works.
        let again = start_server_in(&dir, &[]);
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The other half of item 13: after a clean stop the log holds nothing the database lacks, so
/// losing it loses nothing, and the start goes on (with a warning).
#[tokio::test]
async fn a_missing_change_log_after_a_clean_stop_loses_nothing() {
    for damage in [LogDamage::Garbage, LogDamage::Truncated, LogDamage::Deleted] {
        let dir = fresh_dir("clean-lost-log");
        let mut server = start_server_in(&dir, &[]);
        let mut tcp = RiemannTcp::connect(&server).await;
        for i in 0..50 {
            let msg = events_msg(vec![event("kept", &format!("s{i}"), "critical")]);
            assert_eq!(tcp.request(&msg).await.ok, Some(true));
        }
        drop(tcp);
        assert!(server.terminate().success());
        drop(server);
        damage.apply(&dir.join("changes.log"));
        let restarted = start_server_in(&dir, &[]);
        let (seqs, _) = history_seqs_and_services(&restarted).await;
        assert_eq!(seqs, (1..=50).collect::<Vec<u64>>(), "{damage:?}");
        drop(restarted);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
