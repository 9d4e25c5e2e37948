//! The websocket client of a dashboard (`/ws`, `/index`) and helpers on what it receives.

use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Addrs, TIMEOUT};

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
    pub async fn connect(server: &Addrs) -> Self {
        Self::connect_path(server, "/ws").await
    }

    /// Connects to any websocket path on the HTTP port (`/ws?query=…`, `/index?…`).
    pub async fn connect_path(server: &Addrs, path_and_query: &str) -> Self {
        let url = format!("ws://{}{}", server.http, path_and_query);
        let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("websocket connect timed out")
            .expect("websocket connect");
        Self { ws }
    }

    /// Connects over a socket with a small receive buffer, so a client that stops reading is
    /// noticed by the server after little data. The handshake completes here.
    pub async fn connect_with_recv_buffer(server: &Addrs, recv_buffer: u32) -> Self {
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
    pub async fn connect_with_snapshot(server: &Addrs) -> (Self, Value) {
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

    /// Starts the closing handshake (1000) and returns what the server answered: its Close
    /// frame (RFC 6455 §5.5.1), or `Gone` when it dropped the connection without one.
    pub async fn close_handshake(mut self) -> WsEvent {
        use futures_util::SinkExt;
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        if let Err(error) = self.ws.send(WsMessage::Close(Some(close))).await {
            return WsEvent::Gone(error.to_string());
        }
        loop {
            match self.next_event().await {
                WsEvent::Json(_) => continue,
                other => return other,
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

/// Opens a websocket to `url` with extra request headers (an `Origin`, an `Authorization`): the
/// stream, or the HTTP status of a refused upgrade.
pub async fn ws_connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Result<WsStream, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderName;
    let mut request = url.into_client_request().expect("a websocket URL");
    for (name, value) in headers {
        let name: HeaderName = name.parse().expect("header name");
        request
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    match tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("websocket connect timed out")
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("websocket connect to {url} failed: {other}"),
    }
}
