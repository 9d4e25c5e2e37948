//! Behind a reverse proxy: Debian's nginx, configured as README's snippet says (a sub-path,
//! websocket upgrade headers, `Host $host`), in front of the real binary started with
//! `--external-url`. The dashboard page, its websocket, a POST and websocket ingest work through
//! it; a cross-site Origin is still refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const NGINX: &str = "/usr/sbin/nginx";

/// nginx in the foreground on a loopback port, everything it writes under its own directory.
/// Killed on drop.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// nginx on `port` (from [`free_port`]) in front of `backend`.
    fn start(port: u16, backend: std::net::SocketAddr) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: scripts/test installs nginx-light"
        );
        let dir = fresh_dir("nginx");
        let d = dir.display();
        let config = format!(
            r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    # README's snippet from here on.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /statecast/ {{
            proxy_pass http://{backend}/;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout 120s;
            proxy_buffering off;
        }}
    }}
}}
"#
        );
        let file = dir.join("nginx.conf");
        std::fs::write(&file, config).expect("write nginx.conf");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx { child, port, dir };
        nginx.wait_listening();
        nginx
    }

    fn wait_listening(&mut self) {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited ({status}): {}", self.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not listen within {TIMEOUT:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// What browsers see: the proxy's origin.
    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A websocket through the proxy with an `Origin`; the HTTP status if the upgrade is refused.
async fn connect(nginx: &Nginx, path: &str, origin: &str) -> Result<WsStream, u16> {
    let url = format!("ws://{}{path}", nginx.addr());
    ws_connect_with_headers(&url, &[("origin", origin)]).await
}

async fn next_json(ws: &mut WsStream) -> Value {
    loop {
        let message = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("no frame within the timeout")
            .expect("connection ended")
            .expect("read failed");
        if let WsMessage::Text(text) = message {
            return serde_json::from_str(&text).expect("a JSON frame");
        }
    }
}

#[tokio::test]
async fn through_nginx_with_external_url() {
    let port = reserved_port();
    let external = format!("http://127.0.0.1:{port}/statecast/");
    let server = start_server(&["--external-url", &external]);
    let nginx = Nginx::start(port, server.http);
    dashboard_websocket_post_and_ingest(&nginx).await;
}

/// The other way: the proxy's `X-Forwarded-Host`, believed because it comes from a
/// `--trusted-proxy` address.
#[tokio::test]
async fn through_nginx_with_trusted_proxy() {
    let server = start_server(&["--trusted-proxy", "127.0.0.0/8,::1"]);
    let nginx = Nginx::start(reserved_port(), server.http);
    dashboard_websocket_post_and_ingest(&nginx).await;
}

async fn dashboard_websocket_post_and_ingest(nginx: &Nginx) {
    // The page and its relative assets, under the sub-path.
    let page = http_request(nginx.addr(), "GET", "/statecast/", &[], b"").await;
    assert_eq!(page.status, 200, "{}\n{}", page.body, nginx.log());
    assert!(page.body.contains("app.js"), "{}", page.body);
    let script = http_request(nginx.addr(), "GET", "/statecast/app.js", &[], b"").await;
    assert_eq!(script.status, 200);

    // The dashboard websocket: snapshot, then a live change POSTed through the proxy.
    let origin = nginx.origin();
    let mut dashboard = connect(nginx, "/statecast/ws", &origin)
        .await
        .unwrap_or_else(|status| panic!("upgrade refused: {status}\n{}", nginx.log()));
    let snapshot = next_json(&mut dashboard).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    let body = json!({"host": "proxied", "service": "through-nginx", "state": "critical"});
    let posted = http_request(
        nginx.addr(),
        "POST",
        "/statecast/api/event",
        &[("Origin", &origin), ("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(posted.status, 200, "{}", posted.body);
    let change = loop {
        let frame = next_json(&mut dashboard).await;
        if frame["type"] == "change" {
            break frame;
        }
    };
    assert_eq!(change["event"]["service"], "through-nginx", "{change}");

    // Websocket ingest through the proxy.
    let mut ingest = connect(nginx, "/statecast/events", &origin)
        .await
        .expect("ingest upgrade");
    let batch =
        json!({"id": "p", "events": [{"host": "proxied", "service": "ws-in", "state": "ok"}]});
    ingest
        .send(WsMessage::Text(batch.to_string().into()))
        .await
        .expect("send");
    assert_eq!(
        next_json(&mut ingest).await,
        json!({"id": "p", "ok": true, "accepted": 1})
    );

    // A cross-site page is still refused, on the websocket and on a POST.
    assert_eq!(
        connect(nginx, "/statecast/ws", "http://evil.example")
            .await
            .err(),
        Some(403)
    );
    let forged = http_request(
        nginx.addr(),
        "POST",
        "/statecast/api/event",
        &[("Origin", "http://evil.example")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
}

/// Without `--external-url` or `--trusted-proxy` the proxy's origin does not match the Host
/// nginx forwards, and its `X-Forwarded-Host` is not believed: the upgrade is refused.
#[tokio::test]
async fn untrusted_forwarded_host_is_ignored_and_the_proxied_origin_refused() {
    let server = start_server(&[]);
    let nginx = Nginx::start(reserved_port(), server.http);
    assert_eq!(
        connect(&nginx, "/statecast/ws", &nginx.origin())
            .await
            .err(),
        Some(403)
    );
}
