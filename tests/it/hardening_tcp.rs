//! Issue 12, the Riemann TCP slice: each attack that once broke the server, replayed against the
//! server with the limit that now holds it asserted (generous caps, never tight timings).
//!
//! Tests that measure the server's memory or signal it run the real binary; the
//! others run it in process.

use std::time::{Duration, Instant};

use crate::common::*;
use statecast::proto::Msg;

/// The worst ack latency of `count` single-event Msgs sent one at a time by a fresh connection.
async fn control_worst_ack(server: &Addrs, count: usize) -> Duration {
    let mut control = RiemannTcp::connect(server).await;
    let mut worst = Duration::ZERO;
    for i in 0..count {
        let started = Instant::now();
        let reply = control
            .request(&events_msg(vec![event(
                "control",
                &format!("c{}", i % 3),
                "ok",
            )]))
            .await;
        assert_eq!(reply.ok, Some(true), "control ack: {reply:?}");
        worst = worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worst
}

fn error_of(reply: &Msg) -> &str {
    assert_eq!(
        reply.ok,
        Some(false),
        "expected ok:false, got ok {:?} with {} events",
        reply.ok,
        reply.events.len()
    );
    reply.error.as_deref().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// 1. Regex budget per query
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_of_800_heavy_regexes_is_refused_quickly_and_acks_stay_fast() {
    let server = start_server(&[]);
    // 800 patterns, each under the per-regex limit: 37 s and 1 GB to compile before the budget.
    let hostile = vec![r#"service ~= "\\w{20}""#; 800].join(" or ");
    let mut attacker = RiemannTcp::connect(&server).await;
    let started = Instant::now();
    attacker.send(&query_msg(&hostile)).await;
    let control = tokio::spawn(async move {
        let worst = control_worst_ack(&server, 10).await;
        (server, worst)
    });
    let reply = attacker.read_reply().await.expect("a reply to the query");
    let took = started.elapsed();
    let error = error_of(&reply).to_owned();
    assert!(
        error.starts_with("parse error: regexes in this query exceed the")
            && error.contains("-byte compile budget at column"),
        "{error}"
    );
    assert!(took < Duration::from_secs(5), "refused after {took:?}");
    let (server, worst) = control.await.unwrap();
    assert!(worst < Duration::from_secs(5), "control ack took {worst:?}");
    // The connection stays usable: a bad query is the client's mistake.
    let reply = attacker.request(&query_msg("true")).await;
    assert_eq!(reply.ok, Some(true), "{reply:?}");
    drop(server);
}

/// A `/proc/<pid>/status` figure of the server, in MiB (`VmRSS` now, `VmHWM` the peak).
fn vm_mib(server: &Server, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .expect("read /proc/<pid>/status");
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .unwrap_or_else(|| panic!("no {key} in /proc status"))
        / 1024
}

/// Indexes `keys` services of host `h` (batches of 1000, each acknowledged).
async fn fill_index(server: &Addrs, keys: usize) {
    let mut client = RiemannTcp::connect(server).await;
    for start in (0..keys).step_by(1000) {
        let events = (start..keys.min(start + 1000))
            .map(|i| event("h", &format!("svc{i:05}"), "ok"))
            .collect();
        let reply = client.request(&events_msg(events)).await;
        assert_eq!(reply.ok, Some(true), "{reply:?}");
    }
}

/// A connection that reads almost nothing: its receive buffer is tiny and it never reads.
async fn non_reading_client(server: &Addrs) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    tokio::time::timeout(TIMEOUT, socket.connect(server.tcp))
        .await
        .expect("connect timed out")
        .expect("connect")
}

// ---------------------------------------------------------------------------------------------
// 2. Pipelined queries: memory bounded; a reply over the frame limit is an error
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_pipelined_queries_do_not_pile_up_snapshots() {
    use tokio::io::AsyncWriteExt;
    let server = start_server(&[]);
    fill_index(&server, 20_000).await;
    let before = vm_mib(&server, "VmRSS");
    // Each snapshot is 20k entries; the replies are ~1 MB each. Before the fix every one of the
    // queued queries held its own snapshot: 10k of them grew the server by gigabytes.
    let mut attackers = Vec::new();
    for _ in 0..3 {
        let mut stream = non_reading_client(&server).await;
        let queries: Vec<u8> = (0..10_000)
            .flat_map(|_| frame(&query_msg("true")))
            .collect();
        attackers.push(tokio::spawn(async move {
            let _ = stream.write_all(&queries).await;
            stream
        }));
    }
    let mut peak = before;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(vm_mib(&server, "VmRSS"));
    }
    eprintln!("RSS {before} MiB before the queries, {peak} MiB at most after");
    // Measured: +8 MiB with the fix; +400 MiB in 30 s (and growing) before it.
    assert!(
        peak < before + 100,
        "RSS grew from {before} MiB to {peak} MiB with unread pipelined queries"
    );
    // Other clients are still served meanwhile.
    let worst = control_worst_ack(&server, 5).await;
    assert!(worst < Duration::from_secs(5), "control ack took {worst:?}");
    for attacker in attackers {
        attacker.abort();
    }
}

#[tokio::test]
async fn a_query_reply_over_the_frame_limit_is_an_error_not_an_oversized_frame() {
    let server = InProcess::start(&["--max-frame-bytes", "100000"]);
    fill_index(&server, 5_000).await;
    let mut client = RiemannTcp::connect(&server).await;
    let reply = client.request(&query_msg("true")).await;
    let error = error_of(&reply);
    assert!(
        error.starts_with("query result of ")
            && error.contains("bytes exceeds the 100000-byte frame limit (--max-frame-bytes)"),
        "{error}"
    );
    // A narrower query on the same connection is answered.
    let reply = client.request(&query_msg("service = \"svc00042\"")).await;
    assert_eq!(reply.ok, Some(true), "{reply:?}");
    assert_eq!(reply.events.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 3. Protobuf decode amplification
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_of_8m_empty_events_is_refused_before_decoding() {
    let server = start_server(&[]);
    // 16 MiB of `events {}`: two bytes each, 8M events. Decoded, one took ~3 GiB.
    let body = [0x32u8, 0x00].repeat(8 * 1024 * 1024);
    let mut wire = (body.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(&body);
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = RiemannTcp::connect(&server).await;
        let wire = wire.clone();
        clients.push(tokio::spawn(async move {
            client.write_raw(&wire).await;
            let reply = client.read_reply().await.expect("a reply");
            (client, reply)
        }));
    }
    for handle in clients {
        let (mut client, reply) = handle.await.unwrap();
        let error = error_of(&reply).to_owned();
        assert_eq!(
            error,
            "message has more than 100000 events (--max-events-per-msg)"
        );
        // Framing was intact: the connection goes on.
        let reply = client
            .request(&events_msg(vec![event("h", "after", "ok")]))
            .await;
        assert_eq!(reply.ok, Some(true), "{reply:?}");
    }
    let peak = vm_mib(&server, "VmHWM");
    assert!(peak < 400, "peak RSS {peak} MiB");
}

#[tokio::test]
async fn events_and_attributes_per_msg_and_event_size_are_bounded_by_flags() {
    let server = InProcess::start(&[
        "--max-events-per-msg",
        "10",
        "--max-attributes-per-event",
        "4",
        "--max-event-bytes",
        "1024",
    ]);
    let mut client = RiemannTcp::connect(&server).await;
    let eleven = (0..11)
        .map(|i| event("h", &format!("s{i}"), "ok"))
        .collect();
    let reply = client.request(&events_msg(eleven)).await;
    assert_eq!(
        error_of(&reply),
        "message has more than 10 events (--max-events-per-msg)"
    );
    let mut many_attributes = event("h", "attrs", "ok");
    many_attributes.attributes = (0..5).map(|i| attribute(&format!("k{i}"), "v")).collect();
    let reply = client
        .request(&events_msg(vec![event("h", "fine", "ok"), many_attributes]))
        .await;
    assert_eq!(
        error_of(&reply),
        "event 1 has more than 4 attributes (--max-attributes-per-event)"
    );
    let mut large = event("h", "large", "ok");
    large.description = Some("x".repeat(2000));
    let reply = client.request(&events_msg(vec![large])).await;
    let error = error_of(&reply);
    assert!(
        error.starts_with("event 0 of ")
            && error.ends_with("exceeds the 1024-byte limit (--max-event-bytes)"),
        "{error}"
    );
    // Nothing of a refused Msg was applied; at the limits everything is.
    let ten = (0..10)
        .map(|i| event("h", &format!("s{i}"), "ok"))
        .collect();
    assert_eq!(client.request(&events_msg(ten)).await.ok, Some(true));
    let reply = client.request(&query_msg("host = \"h\"")).await;
    assert_eq!(reply.events.len(), 10, "{reply:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. Idle and write timeouts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_free_their_slots() {
    let server = start_server(&["--tcp-idle-timeout", "1", "--max-tcp-connections", "4"]);
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(RiemannTcp::connect(&server).await);
    }
    // Before the fix these held every slot forever; now each is closed after a second idle.
    for connection in &mut idle {
        connection.expect_closed().await;
    }
    let mut client = RiemannTcp::connect(&server).await;
    let reply = client
        .request(&events_msg(vec![event("h", "after-idle", "ok")]))
        .await;
    assert_eq!(reply.ok, Some(true));
    server
        .wait_for_metric(r#"statecast_tcp_timeouts_total{reason="idle"}"#, 4)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_not_reading_its_replies_is_dropped_after_the_write_timeout() {
    use tokio::io::AsyncWriteExt;
    let server = start_server(&["--tcp-write-timeout", "1"]);
    fill_index(&server, 20_000).await;
    let mut stream = non_reading_client(&server).await;
    let queries: Vec<u8> = (0..50).flat_map(|_| frame(&query_msg("true"))).collect();
    stream.write_all(&queries).await.unwrap();
    server
        .wait_for_metric("statecast_tcp_write_timeouts_total", 1)
        .await;
    // Nothing of it holds shutdown now.
    let mut server = server;
    let started = Instant::now();
    assert!(server.terminate().success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(stream);
}

// ---------------------------------------------------------------------------------------------
// 5. Another protocol on the Riemann port
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_tls_or_http_client_on_the_riemann_port_is_named_and_closed() {
    use tokio::io::AsyncReadExt;
    let server = start_server(&[]);
    let mut tls = RiemannTcp::connect(&server).await;
    // A TLS record header (handshake, TLS 1.0 record version, length 512), then a ClientHello.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    hello.extend_from_slice(&[0u8; 64]);
    tls.write_raw(&hello).await;
    tls.expect_closed().await;
    // Named as TLS, not taken for a frame length.
    server
        .wait_for_metric(r#"statecast_tcp_foreign_protocol_total{protocol="tls"}"#, 1)
        .await;

    let mut http = RiemannTcp::connect(&server).await;
    http.write_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut response = Vec::new();
    tokio::time::timeout(TIMEOUT, http.stream.read_to_end(&mut response))
        .await
        .expect("closed")
        .expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    server
        .wait_for_metric(
            r#"statecast_tcp_foreign_protocol_total{protocol="http"}"#,
            1,
        )
        .await;

    // The server keeps running.
    let mut client = RiemannTcp::connect(&server).await;
    let reply = client
        .request(&events_msg(vec![event("h", "s", "ok")]))
        .await;
    assert_eq!(reply.ok, Some(true));
}

// ---------------------------------------------------------------------------------------------
// 6. Shutdown with a stuck connection still makes the engine's final write
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_stuck_client_exits_in_time_and_keeps_what_was_accepted() {
    use tokio::io::AsyncWriteExt;
    let dir = fresh_dir("stuck-shutdown");
    let mut server = start_server_in(&dir, &["--shutdown-grace", "1"]);
    fill_index(&server, 20_000).await;
    let mut stuck = non_reading_client(&server).await;
    let queries: Vec<u8> = (0..20).flat_map(|_| frame(&query_msg("true"))).collect();
    stuck.write_all(&queries).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // An index update that is not a change: acknowledged at once, written by the engine's
    // periodic flush, or its final one.
    let mut client = RiemannTcp::connect(&server).await;
    let mut update = event("h", "svc00007", "ok");
    update.metric_sint64 = Some(4242);
    assert_eq!(
        client.request(&events_msg(vec![update])).await.ok,
        Some(true)
    );
    let started = Instant::now();
    let status = server.terminate();
    let took = started.elapsed();
    assert!(status.success(), "exit {status:?}: {}", server.stderr());
    // Before: 10 s of grace, then exit without waiting for the engine. Within 8 s, the engine
    // finished its final write (it is given 30 s): the restart below finds the update.
    assert!(took < Duration::from_secs(8), "exit took {took:?}");
    drop(stuck);
    drop(server);

    let restarted = start_server_in(&dir, &[]);
    let mut client = RiemannTcp::connect(&restarted).await;
    let reply = client.request(&query_msg("service = \"svc00007\"")).await;
    assert_eq!(reply.events.len(), 1, "{reply:?}");
    assert_eq!(reply.events[0].metric_sint64, Some(4242), "{reply:?}");
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// 7. TCP queries can be turned off (the port has no token)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tcp_queries_off_refuses_queries_from_riemann_client() {
    let server = start_server(&["--dashboard-token", "secret", "--tcp-queries", "off"]);
    let status = riemann_client_send(&server, &["-h", "web1", "-S", "cpu", "-s", "ok"]).await;
    assert!(status.success());
    let output = tokio::time::timeout(
        TIMEOUT,
        tokio::process::Command::new("/usr/bin/riemann-client")
            .args(["query", "true", "127.0.0.1", &server.tcp.port().to_string()])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("riemann-client query finished")
    .expect("run riemann-client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("web1"), "query answered: {stdout}");
    assert!(
        !output.status.success(),
        "riemann-client query exit: {output:?}"
    );
    let mut client = RiemannTcp::connect(&server).await;
    let reply = client.request(&query_msg("true")).await;
    assert_eq!(
        error_of(&reply),
        "queries are disabled on this port (--tcp-queries off)"
    );
    assert!(reply.events.is_empty());
    // Events still flow on the same connection.
    let reply = client
        .request(&events_msg(vec![event("h", "s", "ok")]))
        .await;
    assert_eq!(reply.ok, Some(true));
}

// ---------------------------------------------------------------------------------------------
// 5. First-frame and frame deadlines (issue 20, item 16)
// ---------------------------------------------------------------------------------------------

/// One counter of `statecast_tcp_timeouts_total{reason}`.
async fn tcp_timeouts(server: &Addrs, reason: &str) -> u64 {
    server
        .metric(&format!(
            "statecast_tcp_timeouts_total{{reason=\"{reason}\"}}"
        ))
        .await
}

/// Writes `bytes` one at a time, one every 250 ms, until the server closes the connection
/// (`true`) or [`TIMEOUT`] passes (`false`).
async fn drip_until_closed(stream: &mut tokio::net::TcpStream, bytes: &[u8]) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut read, mut write) = stream.split();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    let mut next = bytes.iter();
    let mut sink = [0u8; 64];
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return false,
            read = read.read(&mut sink) => match read {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            },
            _ = ticks.tick() => {
                let Some(byte) = next.next() else { return false };
                if write.write_all(&[*byte]).await.is_err() {
                    return true;
                }
            }
        }
    }
}

/// Connections that send nothing are closed after `--tcp-first-frame-timeout` (not the 5-minute
/// idle timeout) and free their slots; a client dripping a frame a byte at a time is closed after
/// `--tcp-frame-timeout`; a client that sends whole frames and idles between them longer than
/// both keeps its connection (the idle timeout is its bound). Each close is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_dripping_connections_are_closed_long_before_the_idle_timeout() {
    let server = start_server(&[
        "--max-tcp-connections",
        "4",
        "--tcp-first-frame-timeout",
        "1s",
        "--tcp-frame-timeout",
        "1s",
    ]);
    // A client that idles between whole frames for longer than both deadlines.
    let mut steady = RiemannTcp::connect(&server).await;
    let reply = steady
        .request(&events_msg(vec![event("h", "steady-1", "ok")]))
        .await;
    assert_eq!(reply.ok, Some(true));

    // Three silent sockets fill the other slots, until the first-frame deadline closes them.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(RiemannTcp::connect(&server).await);
    }
    for connection in &mut silent {
        connection.expect_closed().await;
    }
    assert!(tcp_timeouts(&server, "first-frame").await >= 3);

    // An established client that starts a frame and drips it is closed by the frame deadline.
    let mut dripping = RiemannTcp::connect(&server).await;
    let reply = dripping
        .request(&events_msg(vec![event("h", "drip-1", "ok")]))
        .await;
    assert_eq!(reply.ok, Some(true));
    let mut long = event("h", "drip-2", "ok");
    long.description = Some("d".repeat(200));
    let bytes = frame(&events_msg(vec![long]));
    assert!(
        drip_until_closed(&mut dripping.stream, &bytes).await,
        "a frame dripped at 4 bytes/s was not closed within {TIMEOUT:?}"
    );
    assert!(tcp_timeouts(&server, "frame").await >= 1);

    // The steady client idled through all of that and is still served.
    let reply = steady
        .request(&events_msg(vec![event("h", "steady-2", "ok")]))
        .await;
    assert_eq!(reply.ok, Some(true), "{reply:?}");
    // And the freed slots take new clients.
    let mut fresh = RiemannTcp::connect(&server).await;
    let reply = fresh
        .request(&events_msg(vec![event("h", "fresh", "ok")]))
        .await;
    assert_eq!(reply.ok, Some(true));
    assert_eq!(tcp_timeouts(&server, "idle").await, 0);
}
