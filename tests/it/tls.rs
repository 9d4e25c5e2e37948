//! TLS: Riemann over TLS (`--tls-tcp`) with Debian's riemann-client and the Ruby client, HTTPS
//! and WSS (`--https`), mutual TLS (`--tls-client-ca`), the handshake timeout, certificate reload
//! on SIGHUP, and startup errors. Every certificate is generated here (rcgen), never checked in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::StreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use statecast::proto::Msg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A CA, and the PEM files it signed under `dir` (also used by `alerting`).
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate's PEM file.
    pub(crate) cert: PathBuf,
    dir: PathBuf,
}

impl Ca {
    pub(crate) fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("statecast test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, cert.pem()).expect("write the CA");
        Self {
            issuer: Issuer::new(params, key),
            cert: path,
            dir: dir.to_path_buf(),
        }
    }

    /// A leaf certificate and key, written as `NAME.pem` and `NAME.key`: a server certificate
    /// for localhost and 127.0.0.1, or a client certificate.
    pub(crate) fn leaf(&self, name: &str, server: bool) -> (PathBuf, PathBuf) {
        let names = if server {
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
        } else {
            Vec::new()
        };
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        let cert_path = self.dir.join(format!("{name}.pem"));
        let key_path = self.dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write the certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
        (cert_path, key_path)
    }
}

/// A CA, a server certificate and a client certificate signed by it.
struct Pki {
    dir: PathBuf,
    ca: Ca,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = fresh_dir("tls");
        let ca = Ca::new(&dir, "main");
        let (server_cert, server_key) = ca.leaf("server", true);
        let (client_cert, client_key) = ca.leaf("client", false);
        Self {
            dir,
            ca,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    /// The server flags: certificate and key, plus `extra`.
    fn server_args<'a>(&'a self, extra: &[&'a str]) -> Vec<String> {
        let mut args = vec![
            "--tls-cert".to_owned(),
            self.server_cert.display().to_string(),
            "--tls-key".to_owned(),
            self.server_key.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A rustls client trusting `ca`, presenting `client` (certificate, key) when given.
fn client_config(ca: &Path, client: Option<(&Path, &Path)>, alpn: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read the CA") {
        roots
            .add(cert.expect("a CA certificate"))
            .expect("add the CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .expect("read the client certificate")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client certificates"),
                PrivateKeyDer::from_pem_file(key).expect("read the client key"),
            )
            .expect("client auth"),
    };
    if alpn {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Arc::new(config)
}

/// A TLS connection to `addr` (as server name 127.0.0.1); the handshake error when it fails.
async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    tokio::time::timeout(TIMEOUT, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("the TLS handshake did not finish in time")
}

/// The server certificate (DER) a TLS connection was given.
fn served_certificate(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .expect("a server certificate")
        .to_vec()
}

/// One Riemann request over a TLS stream and its reply (`None`: the server closed or reset).
async fn riemann_request(stream: &mut TlsStream<TcpStream>, msg: &Msg) -> Option<Msg> {
    use prost::Message;
    stream.write_all(&frame(msg)).await.ok()?;
    stream.flush().await.ok()?;
    let read = async {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await.ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut body).await.ok()?;
        Msg::decode(body.as_slice()).ok()
    };
    tokio::time::timeout(TIMEOUT, read)
        .await
        .expect("no reply within the timeout")
}

/// The binary, with the ready line also in a file, and the `tls_tcp` address it names.
fn start_with_ready_file(args: &[String]) -> (Server, Value, PathBuf) {
    let ready_dir = fresh_dir("ready");
    let ready_file = ready_dir.join("ready.json");
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    let ready_flag = ready_file.display().to_string();
    all.extend(["--ready-file", &ready_flag]);
    let server = start_server(&all);
    let ready: Value = serde_json::from_str(
        &std::fs::read_to_string(&ready_file).expect("the ready file is written before the line"),
    )
    .expect("the ready file holds JSON");
    (server, ready, ready_dir)
}

fn tls_addr(ready: &Value) -> SocketAddr {
    ready["tls_tcp"]
        .as_str()
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no tls_tcp address in the ready line {ready}"))
}

/// `GET /api/state` (plain HTTP) and whether it holds `service`.
async fn state_has(server: &Addrs, service: &str) -> bool {
    let response = http_request(server.http, "GET", "/api/state", &[], b"").await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body.contains(&format!("\"{service}\""))
}

async fn run(command: &mut tokio::process::Command) -> std::process::Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the client");
    tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("the client did not finish within the timeout")
        .expect("wait for the client")
}

// ---------------------------------------------------------------------------------------------
// Riemann over TLS with real clients
// ---------------------------------------------------------------------------------------------

/// Debian's riemann-client (riemann-c-client, GnuTLS) sends and queries over TLS with a client
/// certificate, against a server requiring one (Riemann's own TLS is always mutual).
#[tokio::test]
async fn riemann_c_client_sends_and_queries_over_mutual_tls() {
    let pki = Pki::new();
    let ca = pki.ca.cert.display().to_string();
    let (server, ready, _dir) = start_with_ready_file(&pki.server_args(&[
        "--tls-tcp",
        "127.0.0.1:0",
        "--tls-client-ca",
        &ca,
    ]));
    let port = tls_addr(&ready).port().to_string();
    let options = [
        "-o".to_owned(),
        format!("cafile={ca}"),
        "-o".to_owned(),
        format!("certfile={}", pki.client_cert.display()),
        "-o".to_owned(),
        format!("keyfile={}", pki.client_key.display()),
    ];
    let sent = run(tokio::process::Command::new("riemann-client")
        .args(["send", "-G", "-h", "web1", "-S", "tls-c", "-s", "critical"])
        .args(&options)
        .args(["127.0.0.1", &port]))
    .await;
    assert!(
        sent.status.success(),
        "riemann-client send -G failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&sent.stderr),
        server.stderr()
    );
    assert!(state_has(&server, "tls-c").await);
    let queried = run(tokio::process::Command::new("riemann-client")
        .args(["query", "-G", "-j"])
        .args(&options)
        .args(["service = \"tls-c\"", "127.0.0.1", &port]))
    .await;
    let out = String::from_utf8_lossy(&queried.stdout);
    assert!(
        queried.status.success() && out.contains("tls-c") && out.contains("critical"),
        "riemann-client query -G: {out} {}",
        String::from_utf8_lossy(&queried.stderr)
    );
}

/// Debian's ruby-riemann-client (0.2.3) has no TLS option of its own (later gem versions add
/// `ssl: true`); its documented `TCP.socket_factory` hook gives it a socket, here Ruby's
/// OpenSSL one with a client certificate, and everything else (encoding, send, the reply
/// check) is the gem's own code.
#[tokio::test]
async fn ruby_riemann_client_sends_over_mutual_tls() {
    let pki = Pki::new();
    let ca = pki.ca.cert.display().to_string();
    let (server, ready, _dir) = start_with_ready_file(&pki.server_args(&[
        "--tls-tcp",
        "127.0.0.1:0",
        "--tls-client-ca",
        &ca,
    ]));
    let script = r#"
        require "riemann/client"
        require "openssl"
        port, ca, cert, key = ARGV
        Riemann::Client::TCP.socket_factory = proc do |o|
          ctx = OpenSSL::SSL::SSLContext.new
          ctx.ca_file = ca
          ctx.cert = OpenSSL::X509::Certificate.new(File.read(cert))
          ctx.key = OpenSSL::PKey.read(File.read(key))
          ctx.verify_mode = OpenSSL::SSL::VERIFY_PEER
          ctx.verify_hostname = true
          s = OpenSSL::SSL::SSLSocket.new(TCPSocket.new(o[:host], o[:port]), ctx)
          s.hostname = "localhost"
          s.sync_close = true
          s.connect
          s
        end
        c = Riemann::Client.new(host: "127.0.0.1", port: port.to_i, timeout: 5)
        reply = c.tcp << {host: "web1", service: "tls-ruby", state: "warning"}
        raise "reply not ok: #{reply.inspect}" unless reply.ok
        events = c.tcp["service = \"tls-ruby\""]
        raise "query found #{events.inspect}" unless events.map(&:state) == ["warning"]
        puts "ok"
    "#;
    let output = run(tokio::process::Command::new("ruby")
        .arg("-e")
        .arg(script)
        .args([
            tls_addr(&ready).port().to_string(),
            ca,
            pki.client_cert.display().to_string(),
            pki.client_key.display().to_string(),
        ]))
    .await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "ok",
        "ruby over TLS: {}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.stderr()
    );
    assert!(state_has(&server, "tls-ruby").await);
}

/// With --tls-client-ca a client with a certificate of that CA is served; one without a
/// certificate, or with one of another CA, is refused in the handshake and applies nothing.
#[tokio::test]
async fn mutual_tls_accepts_a_good_client_certificate_and_refuses_others() {
    let pki = Pki::new();
    let rogue = Ca::new(&pki.dir, "rogue");
    let (rogue_cert, rogue_key) = rogue.leaf("rogue-client", false);
    let ca = pki.ca.cert.display().to_string();
    let (server, ready, _dir) = start_with_ready_file(&pki.server_args(&[
        "--tls-tcp",
        "127.0.0.1:0",
        "--tls-client-ca",
        &ca,
    ]));
    let addr = tls_addr(&ready);

    let good = client_config(
        &pki.ca.cert,
        Some((&pki.client_cert, &pki.client_key)),
        false,
    );
    let mut stream = tls_connect(addr, good)
        .await
        .expect("handshake with a good client cert");
    let reply = riemann_request(
        &mut stream,
        &events_msg(vec![event("h", "mtls-good", "ok")]),
    )
    .await
    .expect("a reply");
    assert_eq!(reply.ok, Some(true));

    let refused = [
        (
            "no client certificate",
            client_config(&pki.ca.cert, None, false),
        ),
        (
            "a certificate of another CA",
            client_config(&pki.ca.cert, Some((&rogue_cert, &rogue_key)), false),
        ),
    ];
    for (what, config) in refused {
        // TLS 1.3: the client's handshake may finish before the server checks its certificate;
        // the refusal then arrives as an alert instead of a reply.
        let outcome = match tls_connect(addr, config).await {
            Err(error) => format!("handshake refused: {error}"),
            Ok(mut stream) => {
                let msg = events_msg(vec![event("h", "mtls-bad", "critical")]);
                match riemann_request(&mut stream, &msg).await {
                    None => "closed without a reply".to_owned(),
                    Some(reply) => panic!("{what}: served, reply {reply:?}"),
                }
            }
        };
        eprintln!("{what}: {outcome}");
    }
    assert!(state_has(&server, "mtls-good").await);
    assert!(!state_has(&server, "mtls-bad").await);
    // Each refusal is counted (the first is logged at info with its reason, later ones within
    // 10 s at debug).
    server
        .wait_for_metric("statecast_tls_handshakes_failed_total", 2)
        .await;
}

/// Waits until the accept loops have taken `n` connections in all (accepted or refused).
async fn wait_accepted(server: &Addrs, n: u64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let body = http_request(server.http, "GET", "/metrics", &[], b"")
            .await
            .body;
        let seen: u64 = body
            .lines()
            .filter_map(|line| line.split_once(' '))
            .filter(|(key, _)| {
                [
                    "statecast_tcp_connections_total",
                    "statecast_tcp_refused_total",
                    "statecast_tls_handshakes_refused_total",
                ]
                .contains(key)
            })
            .filter_map(|(_, value)| value.trim().parse::<u64>().ok())
            .sum();
        if seen >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{seen} of {n} connections taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Silent TLS sockets do not lock plain Riemann clients out: a TLS connection in its handshake
/// holds a handshake slot (`--max-tls-handshakes`), not a `--max-tcp-connections` slot, which it
/// takes only once the handshake is done. Before, 12 silent sockets against a limit of 4 refused
/// every plain client for the whole handshake timeout.
#[tokio::test]
async fn silent_tls_handshakes_do_not_lock_plain_riemann_clients_out() {
    let pki = Pki::new();
    let (server, ready, _dir) = start_with_ready_file(&pki.server_args(&[
        "--tls-tcp",
        "127.0.0.1:0",
        "--max-tcp-connections",
        "4",
    ]));
    let addr = tls_addr(&ready);
    let mut silent = Vec::new();
    for _ in 0..12 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    wait_accepted(&server, 12).await;
    // Plain clients get in (and so does a TLS client that completes its handshake).
    for i in 0..3 {
        let mut plain = RiemannTcp::connect(&server).await;
        let reply = plain
            .request(&events_msg(vec![event("h", &format!("plain-{i}"), "ok")]))
            .await;
        assert_eq!(reply.ok, Some(true), "{reply:?}");
    }
    let config = client_config(&pki.ca.cert, None, false);
    let mut stream = tls_connect(addr, config).await.expect("handshake");
    let reply = riemann_request(&mut stream, &events_msg(vec![event("h", "tls", "ok")])).await;
    assert_eq!(reply.expect("a reply").ok, Some(true));
    assert_eq!(server.metric("statecast_tcp_refused_total").await, 0);
    drop(silent);
}

/// Handshakes have their own budget: past `--max-tls-handshakes` in progress a new TLS
/// connection is closed at once and counted; a silent handshake is closed after
/// `--tls-handshake-timeout`, which frees its slot for a TLS client; a TLS connection that
/// completes its handshake then holds a slot of the shared `--max-tcp-connections`.
#[tokio::test]
async fn tls_handshakes_have_their_own_budget_and_a_silent_one_times_out() {
    let pki = Pki::new();
    let (server, ready, _dir) = start_with_ready_file(&pki.server_args(&[
        "--tls-tcp",
        "127.0.0.1:0",
        "--max-tcp-connections",
        "1",
        "--max-tls-handshakes",
        "2",
        "--tls-handshake-timeout",
        "2s",
    ]));
    let addr = tls_addr(&ready);
    let config = client_config(&pki.ca.cert, None, false);
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    wait_accepted(&server, 2).await;
    // The third is past the handshake budget: closed at once, counted.
    let mut third = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(TIMEOUT, third.read(&mut buf))
        .await
        .expect("the connection past the handshake budget was not closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert_eq!(
        server
            .metric("statecast_tls_handshakes_refused_total")
            .await,
        1
    );
    // The plain port is unaffected.
    let mut plain = RiemannTcp::connect(&server).await;
    let reply = plain
        .request(&events_msg(vec![event("h", "plain", "ok")]))
        .await;
    assert_eq!(reply.ok, Some(true));
    drop(plain);
    // After the handshake timeout the silent sockets are closed…
    for socket in &mut silent {
        let closed = tokio::time::timeout(TIMEOUT, socket.read(&mut buf))
            .await
            .expect("the silent handshake was not closed");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    }
    // …and a TLS client gets in (the slots are released just after the close: retry).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(mut stream) = tls_connect(addr, Arc::clone(&config)).await {
            if let Some(reply) = riemann_request(
                &mut stream,
                &events_msg(vec![event("h", "tls-after", "ok")]),
            )
            .await
            {
                assert_eq!(reply.ok, Some(true));
                break;
            }
        }
        assert!(Instant::now() < deadline, "no TLS connection got in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// HTTPS and WSS
// ---------------------------------------------------------------------------------------------

/// One HTTP/1.1 request over TLS; the status and body.
async fn https_request(addr: SocketAddr, config: Arc<ClientConfig>, path: &str) -> (u16, String) {
    let mut stream = tls_connect(addr, config).await.expect("https handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut response))
        .await
        .expect("no response in time")
        .ok();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

type Wss = tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>;

/// A websocket to `/ws` over TLS.
async fn wss_connect(http: SocketAddr, config: Arc<ClientConfig>) -> Wss {
    let tls = tls_connect(http, config).await.expect("wss handshake");
    let url = format!("wss://127.0.0.1:{}/ws", http.port());
    let (ws, response) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(url, tls))
        .await
        .expect("websocket upgrade in time")
        .expect("websocket upgrade over TLS");
    assert_eq!(response.status(), 101);
    ws
}

/// The next change of `service` a websocket receives.
async fn next_change_of(ws: &mut Wss, service: &str) -> Value {
    tokio::time::timeout(TIMEOUT, async {
        while let Some(frame) = ws.next().await {
            let text = frame
                .expect("a websocket frame")
                .into_text()
                .unwrap_or_default();
            let Ok(json) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if json["type"] == "change" && json["event"]["service"] == service {
                return json;
            }
        }
        panic!("the websocket closed before the change of {service}");
    })
    .await
    .expect("the change over wss in time")
}

/// With --https the dashboard, the API and /ws are served over TLS (a wss client sees a change
/// sent over Riemann TLS); a plain-HTTP request on that port gets no HTTP answer.
#[tokio::test]
async fn https_serves_the_dashboard_api_and_wss() {
    let pki = Pki::new();
    let (server, ready, _dir) =
        start_with_ready_file(&pki.server_args(&["--https", "--tls-tcp", "127.0.0.1:0"]));
    assert_eq!(ready["https"], true, "{ready}");
    let config = client_config(&pki.ca.cert, None, true);

    let (status, body) = https_request(server.http, Arc::clone(&config), "/").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("<html") || body.contains("<!doctype"),
        "{body}"
    );
    let (status, body) = https_request(server.http, Arc::clone(&config), "/api/state").await;
    assert_eq!(status, 200, "{body}");

    let mut ws = wss_connect(server.http, Arc::clone(&config)).await;
    let mut riemann = tls_connect(tls_addr(&ready), client_config(&pki.ca.cert, None, false))
        .await
        .expect("riemann tls handshake");
    let reply = riemann_request(
        &mut riemann,
        &events_msg(vec![event("web1", "over-wss", "critical")]),
    )
    .await
    .expect("a reply");
    assert_eq!(reply.ok, Some(true));
    let change = next_change_of(&mut ws, "over-wss").await;
    assert_eq!(change["event"]["state"], "critical", "{change}");
    let _ = ws.close(None).await;

    // Plain HTTP on the HTTPS port: the handshake fails, no HTTP is answered.
    let plain = tokio::time::timeout(
        TIMEOUT,
        http_request(server.http, "GET", "/api/state", &[], b""),
    );
    let outcome = tokio::spawn(plain).await;
    assert!(
        !matches!(&outcome, Ok(Ok(response)) if response.status == 200),
        "plain HTTP was served on the HTTPS port"
    );
}

// ---------------------------------------------------------------------------------------------
// Reload and startup
// ---------------------------------------------------------------------------------------------

/// SIGHUP reloads the certificate: new handshakes get the new one, an open connection keeps
/// working; a bad new certificate logs an error and the previous one keeps serving.
#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let pki = Pki::new();
    let (server, ready, _dir) =
        start_with_ready_file(&pki.server_args(&["--tls-tcp", "127.0.0.1:0", "--https"]));
    let addr = tls_addr(&ready);
    let config = client_config(&pki.ca.cert, None, false);
    let mut open = tls_connect(addr, Arc::clone(&config))
        .await
        .expect("handshake");
    let old = served_certificate(&open);
    let reply = riemann_request(&mut open, &events_msg(vec![event("h", "before", "ok")])).await;
    assert_eq!(reply.expect("a reply").ok, Some(true));
    let mut ws = wss_connect(server.http, client_config(&pki.ca.cert, None, true)).await;

    // A new server certificate (same CA) replaces the files in place.
    let (new_cert, new_key) = pki.ca.leaf("server-renewed", true);
    std::fs::copy(&new_cert, &pki.server_cert).expect("replace the certificate");
    std::fs::copy(&new_key, &pki.server_key).expect("replace the key");
    let renewed = std::fs::read(&new_cert).expect("read");
    let renewed = CertificateDer::from_pem_slice(&renewed)
        .expect("PEM")
        .to_vec();
    let hup = |server: &Server| {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &server.pid().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
    };
    hup(&server);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let stream = tls_connect(addr, Arc::clone(&config))
            .await
            .expect("handshake");
        let served = served_certificate(&stream);
        if served == renewed {
            break;
        }
        assert_eq!(served, old, "neither the old nor the new certificate");
        assert!(
            Instant::now() < deadline,
            "the reload did not happen:\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // HTTPS reloaded too.
    let https = tls_connect(server.http, client_config(&pki.ca.cert, None, true))
        .await
        .expect("https handshake");
    assert_eq!(served_certificate(&https), renewed);
    // The connection opened before the reload still works.
    let reply = riemann_request(
        &mut open,
        &events_msg(vec![event("h", "after", "critical")]),
    )
    .await;
    assert_eq!(
        reply.expect("the old connection still answers").ok,
        Some(true)
    );
    // So does the websocket opened before the reload.
    let change = next_change_of(&mut ws, "after").await;
    assert_eq!(change["event"]["state"], "critical", "{change}");

    // A broken certificate file: an error line, and the renewed certificate keeps serving.
    std::fs::write(&pki.server_cert, "not a certificate").expect("break the certificate");
    hup(&server);
    // Counted once the SIGHUP is handled (`/metrics` is on the HTTPS port here).
    let https = client_config(&pki.ca.cert, None, true);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, metrics) = https_request(server.http, Arc::clone(&https), "/metrics").await;
        assert_eq!(status, 200, "{metrics}");
        if metrics
            .lines()
            .any(|line| line.trim() == "statecast_tls_reload_failures_total 1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failed reload was never counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stream = tls_connect(addr, config)
        .await
        .expect("handshake after a failed reload");
    assert_eq!(served_certificate(&stream), renewed);
    let reply = riemann_request(&mut open, &events_msg(vec![event("h", "later", "ok")])).await;
    assert_eq!(reply.expect("still answering").ok, Some(true));
}

/// A TLS listener without a readable, valid certificate and key does not start: one line on
/// stderr naming the problem, exit 1.
#[test]
fn startup_without_a_valid_certificate_is_one_line_and_exit_1() {
    let pki = Pki::new();
    let garbage = pki.dir.join("garbage.pem");
    std::fs::write(&garbage, "hello").expect("write");
    let missing = pki.dir.join("missing.pem");
    let cert = pki.server_cert.display().to_string();
    let key = pki.server_key.display().to_string();
    let client_key = pki.client_key.display().to_string();
    let garbage = garbage.display().to_string();
    let missing = missing.display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--tls-tcp", "127.0.0.1:0"], "need both --tls-cert"),
        (vec!["--https", "--tls-cert", &cert], "need both --tls-cert"),
        (
            vec![
                "--tls-tcp",
                "127.0.0.1:0",
                "--tls-cert",
                &missing,
                "--tls-key",
                &key,
            ],
            "--tls-cert",
        ),
        (
            vec!["--https", "--tls-cert", &garbage, "--tls-key", &key],
            "no PEM certificate",
        ),
        (
            vec!["--https", "--tls-cert", &cert, "--tls-key", &garbage],
            "--tls-key",
        ),
        (
            vec!["--https", "--tls-cert", &cert, "--tls-key", &client_key],
            "--tls-cert",
        ),
        (
            vec![
                "--https",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-client-ca",
                &garbage,
            ],
            "--tls-client-ca",
        ),
    ];
    for (args, expected) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_statecast"))
            .args([
                "--tcp",
                "127.0.0.1:0",
                "--udp",
                "off",
                "--http",
                "127.0.0.1:0",
            ])
            .args(["--data-dir", "off"])
            .args(&args)
            .output()
            .expect("run statecast");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|line| line.starts_with("statecast: "))
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(lines[0].contains(expected), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}: no ready line");
    }
}

/// A certificate, key or client CA "file" that never ends (`/dev/zero`) is refused after a
/// bounded read, in one short line naming the flag; the binary runs with its address space
/// capped (`ulimit -v`) so a read that is not bounded fails the test instead of eating memory.
#[test]
fn endless_certificate_files_are_refused_after_a_bounded_read() {
    let pki = Pki::new();
    let cert = pki.server_cert.display().to_string();
    let key = pki.server_key.display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--tls-cert", "/dev/zero", "--tls-key", &key],
            "--tls-cert",
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", "/dev/zero"],
            "--tls-key",
        ),
        (
            vec![
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-client-ca",
                "/dev/zero",
            ],
            "--tls-client-ca",
        ),
    ];
    for (args, flag) in cases {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -v 1048576 && exec "$@""#)
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_statecast"))
            .args([
                "--tcp",
                "127.0.0.1:0",
                "--udp",
                "off",
                "--http",
                "127.0.0.1:0",
            ])
            .args(["--data-dir", "off", "--https"])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run statecast");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let shown: String = stderr.chars().take(2000).collect();
        assert_eq!(output.status.code(), Some(1), "{args:?}: {shown}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|line| line.starts_with("statecast: "))
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: {shown}");
        assert!(lines[0].len() < 400, "{args:?}: a short line: {shown}");
        assert!(lines[0].contains(flag), "{args:?}: {shown}");
        assert!(
            lines[0].contains("MiB"),
            "{args:?}: names the limit: {shown}"
        );
        assert!(output.stdout.is_empty(), "{args:?}: no ready line");
    }
}
