//! Riemann protobuf: events and Msgs, the TCP framing, a raw TCP connection, and the real
//! Riemann clients (riemann-c-client's `riemann-client`, ruby-riemann-client).

use std::process::{ExitStatus, Stdio};

use prost::Message as _;
use statecast::proto::{Attribute, Event, Msg, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Addrs, TIMEOUT};

const RIEMANN_CLIENT: &str = "/usr/bin/riemann-client";

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
    pub async fn connect(server: &Addrs) -> Self {
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

/// Runs Debian's `riemann-client send ARGS 127.0.0.1 PORT` (riemann-c-client) against the
/// server: the UDP port when `args` has `-U`/`--udp`, the TCP port otherwise.
/// Flags: -h host, -S service, -s state, -D description, -i/-d/-f metric, -a key=value, -t tag,
/// -L ttl, -T tcp, -U udp.
pub async fn riemann_client_send(server: &Addrs, args: &[&str]) -> ExitStatus {
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
    server: &Addrs,
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
