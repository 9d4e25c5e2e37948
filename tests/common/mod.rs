//! Shared helpers for the integration tests: the real `statecast` binary on ephemeral loopback
//! ports, and real clients for each of its protocols.
//!
//! Every wait has a timeout and every missing tool is a failure, never a skip: `scripts/test`
//! installs `riemann-client` (riemann-c-client) and `ruby-riemann-client`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use prost::Message as _;
use serde_json::Value;
use statecast::proto::{Attribute, Event, Msg, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected thing (a reply, a frame, a process exit) may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

const RIEMANN_CLIENT: &str = "/usr/bin/riemann-client";

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// The real `statecast` binary, listening on ephemeral loopback ports. Killed on drop.
pub struct Server {
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    pub http: SocketAddr,
    child: Child,
    /// Every stderr line so far (kept for failure messages).
    stderr: Arc<Mutex<Vec<String>>>,
    /// This server's data directory, removed on drop when `owns_data_dir`.
    data_dir: PathBuf,
    owns_data_dir: bool,
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

/// Starts `statecast` with every listener on `127.0.0.1:0` and its own empty data directory,
/// plus `extra` flags (which must not repeat those: clap refuses a flag given twice), and waits (up to 10 s) for its three
/// "listening addr=" log lines.
pub fn start_server(extra: &[&str]) -> Server {
    let mut server = start_server_in(&fresh_dir("data"), extra);
    server.owns_data_dir = true;
    server
}

/// Like [`start_server`], on a data directory the caller keeps (for restarts of the same
/// store); the directory is left in place when the server is dropped.
pub fn start_server_in(data_dir: &std::path::Path, extra: &[&str]) -> Server {
    let data_dir = data_dir.to_path_buf();
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
        .arg(&data_dir)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the statecast binary");
    let stderr = child.stderr.take().expect("piped stderr");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel::<String>();
    {
        let lines = Arc::clone(&lines);
        // Drains stderr for the whole life of the process so the pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
    }
    let deadline = Instant::now() + TIMEOUT;
    let (mut tcp, mut udp, mut http) = (None, None, None);
    while tcp.is_none() || udp.is_none() || http.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                let _ = std::fs::remove_dir_all(&data_dir);
                panic!(
                    "statecast did not report its three listeners within {TIMEOUT:?} \
                     (exit: {status:?}); stderr:\n{}",
                    lines.lock().unwrap().join("\n")
                );
            }
        };
        let Some(addr) = listening_addr(&line) else {
            continue;
        };
        if line.contains("riemann tcp listening") {
            tcp = Some(addr);
        } else if line.contains("riemann udp listening") {
            udp = Some(addr);
        } else if line.contains("http listening") {
            http = Some(addr);
        }
    }
    Server {
        tcp: tcp.unwrap(),
        udp: udp.unwrap(),
        http: http.unwrap(),
        child,
        stderr: lines,
        data_dir,
        owns_data_dir: false,
    }
}

/// `… listening addr=127.0.0.1:40001` → the address.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
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

// ---------------------------------------------------------------------------------------------
// Riemann protobuf
// ---------------------------------------------------------------------------------------------

/// A protobuf event with host, service and state.
pub fn event(host: &str, service: &str, state: &str) -> Event {
    Event {
        host: Some(host.to_owned()),
        service: Some(service.to_owned()),
        state: Some(state.to_owned()),
        ..Default::default()
    }
}

pub fn attribute(key: &str, value: &str) -> Attribute {
    Attribute {
        key: key.to_owned(),
        value: Some(value.to_owned()),
    }
}

pub fn events_msg(events: Vec<Event>) -> Msg {
    Msg {
        events,
        ..Default::default()
    }
}

pub fn query_msg(query: &str) -> Msg {
    Msg {
        query: Some(Query {
            string: Some(query.to_owned()),
        }),
        ..Default::default()
    }
}

/// Riemann's TCP framing: a 4-byte big-endian length, then the `Msg`.
pub fn frame(msg: &Msg) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A raw Riemann TCP connection: frames out, replies in.
pub struct RiemannTcp {
    pub stream: TcpStream,
}

impl RiemannTcp {
    pub async fn connect(server: &Server) -> Self {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(server.tcp))
            .await
            .expect("riemann tcp connect timed out")
            .expect("riemann tcp connect");
        Self { stream }
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) {
        tokio::time::timeout(TIMEOUT, self.stream.write_all(bytes))
            .await
            .expect("riemann tcp write timed out")
            .expect("riemann tcp write");
    }

    pub async fn send(&mut self, msg: &Msg) {
        self.write_raw(&frame(msg)).await;
    }

    /// The next reply, or `None` at EOF (or a reset). Panics after [`TIMEOUT`].
    pub async fn read_reply(&mut self) -> Option<Msg> {
        tokio::time::timeout(TIMEOUT, async {
            let mut header = [0u8; 4];
            if self.stream.read_exact(&mut header).await.is_err() {
                return None;
            }
            let len = u32::from_be_bytes(header) as usize;
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).await.ok()?;
            Some(Msg::decode(body.as_slice()).expect("reply decodes as Msg"))
        })
        .await
        .expect("no riemann tcp reply within the timeout")
    }

    /// Sends one `Msg` and returns its reply.
    pub async fn request(&mut self, msg: &Msg) -> Msg {
        self.send(msg).await;
        self.read_reply().await.expect("a reply, not EOF")
    }

    /// Asserts the server closes the connection (EOF or reset) with nothing more to say.
    pub async fn expect_closed(&mut self) {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(TIMEOUT, self.stream.read(&mut buf))
            .await
            .expect("server did not close the connection");
        match read {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("expected EOF, got {n} more bytes: {:?}", &buf[..n]),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Real Riemann clients
// ---------------------------------------------------------------------------------------------

/// Runs Debian's `riemann-client send ARGS 127.0.0.1 PORT` (riemann-c-client) against the
/// server: the UDP port when `args` has `-U`/`--udp`, the TCP port otherwise.
/// Flags: -h host, -S service, -s state, -D description, -i/-d/-f metric, -a key=value, -t tag,
/// -L ttl, -T tcp, -U udp.
pub async fn riemann_client_send(server: &Server, args: &[&str]) -> ExitStatus {
    let udp = args.iter().any(|a| *a == "-U" || *a == "--udp");
    let port = if udp {
        server.udp.port()
    } else {
        server.tcp.port()
    };
    assert!(
        std::path::Path::new(RIEMANN_CLIENT).exists(),
        "{RIEMANN_CLIENT} is missing: install riemann-c-client (scripts/test does)"
    );
    let mut child = tokio::process::Command::new(RIEMANN_CLIENT)
        .arg("send")
        .args(args)
        .arg("127.0.0.1")
        .arg(port.to_string())
        .kill_on_drop(true)
        .spawn()
        .expect("run riemann-client (install riemann-c-client; scripts/test does)");
    tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("riemann-client send did not finish within the timeout")
        .expect("wait for riemann-client")
}

/// Sends one event with ruby-riemann-client over TCP (`c.tcp << {…}` waits for the reply and
/// raises unless it is ok); returns the script's output (stdout "ok" on success).
pub async fn ruby_client_send(
    server: &Server,
    host: &str,
    service: &str,
    state: &str,
) -> std::process::Output {
    let script = r#"
        require "riemann/client"
        host, port, ev_host, ev_service, ev_state = ARGV
        c = Riemann::Client.new(host: host, port: port.to_i, timeout: 5)
        reply = c.tcp << {host: ev_host, service: ev_service, state: ev_state}
        raise "reply not ok: #{reply.inspect}" unless reply.ok
        puts "ok"
    "#;
    let child = tokio::process::Command::new("ruby")
        .arg("-e")
        .arg(script)
        .args([
            "127.0.0.1",
            &server.tcp.port().to_string(),
            host,
            service,
            state,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run ruby (install ruby and ruby-riemann-client; scripts/test does)");
    tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("ruby riemann client did not finish within the timeout")
        .expect("wait for ruby")
}

// ---------------------------------------------------------------------------------------------
// Websocket
// ---------------------------------------------------------------------------------------------

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a websocket client saw next.
#[derive(Debug)]
pub enum WsEvent {
    Json(Value),
    Close(Option<CloseFrame>),
    /// EOF or a transport error without a close frame.
    Gone(String),
}

/// A dashboard client of `GET /ws`.
pub struct WsClient {
    pub ws: WsStream,
}

impl WsClient {
    pub async fn connect(server: &Server) -> Self {
        Self::connect_path(server, "/ws").await
    }

    /// Connects to any websocket path on the HTTP port (`/ws?query=…`, `/index?…`).
    pub async fn connect_path(server: &Server, path_and_query: &str) -> Self {
        let url = format!("ws://{}{}", server.http, path_and_query);
        let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("websocket connect timed out")
            .expect("websocket connect");
        Self { ws }
    }

    /// Connects over a socket with a small receive buffer, so a client that stops reading is
    /// noticed by the server after little data. The handshake completes here.
    pub async fn connect_with_recv_buffer(server: &Server, recv_buffer: u32) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("tcp socket");
        socket
            .set_recv_buffer_size(recv_buffer)
            .expect("set SO_RCVBUF");
        let stream = tokio::time::timeout(TIMEOUT, socket.connect(server.http))
            .await
            .expect("websocket connect timed out")
            .expect("websocket connect");
        let url = format!("ws://{}/ws", server.http);
        let (ws, _) = tokio::time::timeout(
            TIMEOUT,
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)),
        )
        .await
        .expect("websocket handshake timed out")
        .expect("websocket handshake");
        Self { ws }
    }

    /// Connects and returns the client with its first frame, which must be the snapshot.
    pub async fn connect_with_snapshot(server: &Server) -> (Self, Value) {
        let mut client = Self::connect(server).await;
        let snapshot = client.next_json().await;
        assert_eq!(snapshot["type"], "snapshot", "first frame: {snapshot}");
        (client, snapshot)
    }

    /// The next frame of any kind (stats included), or a close / disconnect.
    pub async fn next_event(&mut self) -> WsEvent {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(WsMessage::Text(text))) => {
                        let value: Value = serde_json::from_str(text.as_str())
                            .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}"));
                        return WsEvent::Json(value);
                    }
                    Some(Ok(WsMessage::Close(frame))) => return WsEvent::Close(frame),
                    Some(Ok(WsMessage::Binary(b))) => {
                        panic!("unexpected binary frame of {} bytes", b.len())
                    }
                    Some(Ok(_)) => continue, // ping / pong
                    Some(Err(e)) => return WsEvent::Gone(e.to_string()),
                    None => return WsEvent::Gone("end of stream".into()),
                }
            }
        })
        .await
        .expect("no websocket frame within the timeout")
    }

    /// The next JSON frame, stats included.
    pub async fn next_json_any(&mut self) -> Value {
        match self.next_event().await {
            WsEvent::Json(v) => v,
            other => panic!("expected a JSON frame, got {other:?}"),
        }
    }

    /// The next JSON frame that is not `stats`.
    pub async fn next_json(&mut self) -> Value {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                let v = self.next_json_any().await;
                if v["type"] != "stats" {
                    return v;
                }
            }
        })
        .await
        .expect("no frame other than stats within the timeout")
    }

    /// The next `stats` frame, skipping anything else.
    pub async fn next_stats(&mut self) -> Value {
        loop {
            let v = self.next_json_any().await;
            if v["type"] == "stats" {
                return v;
            }
        }
    }

    /// The next non-stats frame, which must be a change.
    pub async fn next_change(&mut self) -> Value {
        let v = self.next_json().await;
        assert_eq!(v["type"], "change", "expected a change frame, got {v}");
        v
    }

    /// Asserts that no change arrives before `marker_service`'s change: used to prove a negative
    /// (e.g. critical→critical is not a change) without sleeping. Returns the marker's change.
    pub async fn next_change_is(&mut self, service: &str) -> Value {
        let v = self.next_change().await;
        assert_eq!(
            v["event"]["service"], service,
            "expected the change of {service:?}, got {v}"
        );
        v
    }

    /// Waits for the close frame and returns its code.
    pub async fn expect_close(&mut self) -> (CloseCode, String) {
        loop {
            match self.next_event().await {
                WsEvent::Json(_) => continue,
                WsEvent::Close(Some(frame)) => return (frame.code, frame.reason.to_string()),
                other => panic!("expected a close frame with a code, got {other:?}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Read until the server's close reply so the server sees a clean close.
        let _ = tokio::time::timeout(TIMEOUT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// The services of a snapshot's events, sorted.
pub fn snapshot_services(snapshot: &Value) -> Vec<String> {
    let mut services: Vec<String> = snapshot["events"]
        .as_array()
        .unwrap_or_else(|| panic!("snapshot without events: {snapshot}"))
        .iter()
        .map(|e| e["service"].as_str().unwrap_or_default().to_owned())
        .collect();
    services.sort();
    services
}

/// The snapshot event with this service, if any.
pub fn snapshot_event<'a>(snapshot: &'a Value, service: &str) -> Option<&'a Value> {
    snapshot["events"]
        .as_array()?
        .iter()
        .find(|e| e["service"] == service)
}

// ---------------------------------------------------------------------------------------------
// Minimal HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request with `Connection: close`; reads the response to EOF.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    tokio::time::timeout(TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await.expect("http connect");
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        // Write and read at once: the server may answer (e.g. 413) before reading everything,
        // and a failed write is fine as long as the response arrives.
        let (mut read, mut write) = stream.split();
        let mut raw = Vec::new();
        let (_, _) = tokio::join!(write.write_all(&bytes), read.read_to_end(&mut raw));
        parse_response(&raw)
    })
    .await
    .expect("no http response within the timeout")
}

pub async fn post_json(server: &Server, body: &str) -> HttpResponse {
    http_request(
        server.http,
        "POST",
        "/api/event",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "incomplete http response: {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).expect("chunk size");
        raw = &raw[eol + 2..];
        if size == 0 || raw.len() < size {
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[(size + 2).min(raw.len())..];
    }
    out
}
