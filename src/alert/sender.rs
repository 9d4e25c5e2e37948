//! One Alertmanager's sender task: takes batches from its [`Outbox`] and POSTs them to
//! `/api/v2/alerts`, over one kept-alive HTTP/1.1 connection (re-opened when it closes).
//!
//! Bounded: at most [`MAX_BATCH`] alerts per POST, [`POST_TIMEOUT`] per attempt (connect
//! included); a failed attempt (unreachable, timed out, a 5xx) puts its batch back in front and
//! waits [`MIN_BACKOFF`] doubling to [`MAX_BACKOFF`] before the next; a 4xx (the Alertmanager
//! refuses these alerts: retrying cannot help) drops the batch, counted and logged. Failure lines
//! are rate-limited. Nothing here is awaited by the deriving task, the engine or ingest: an
//! Alertmanager that is away only fills its own outbox.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::derive::Alert;
use super::outbox::Outbox;
use crate::event::format_time;
use crate::metrics::AlertmanagerStats;
use crate::rate_limited_log::RateLimitedLog;

/// Alerts per POST (Prometheus sends 64).
pub const MAX_BATCH: usize = 64;
/// One attempt: connecting, sending, and the answer's head.
pub const POST_TIMEOUT: Duration = Duration::from_secs(10);
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How much of an error answer is read, for the log line.
const MAX_ERROR_BODY: usize = 4096;
/// A firing alert's `endsAt` is this many resend intervals ahead (as Prometheus does): a
/// statecast that stopped lets its alerts end by themselves.
const ENDS_AFTER_RESENDS: u32 = 4;

/// Where one Alertmanager is: an `http://host[:port][/prefix]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given (the `alertmanager` label of the figures).
    pub url: String,
    /// `host:port`, connected to and sent as Host.
    authority: String,
    /// `/prefix/api/v2/alerts`.
    path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let url = url.trim();
        let bad = |why: &str| format!("--alertmanager {url:?}: {why} (e.g. http://127.0.0.1:9093)");
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err(bad(
                    "https is not supported yet (a local proxy can add TLS)",
                ))
            }
            _ => return Err(bad("the URL must start with http://")),
        };
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() || authority.contains('@') || rest.contains(['?', '#']) {
            return Err(bad("no host, or a user, query or fragment"));
        }
        let has_port = match authority.rfind(']') {
            Some(end) => authority[end..].contains(':'),
            None => authority.contains(':'),
        };
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let prefix = prefix.trim_end_matches('/');
        let path = if prefix.is_empty() {
            "/api/v2/alerts".to_owned()
        } else {
            format!("/{prefix}/api/v2/alerts")
        };
        Ok(Target {
            url: url.to_owned(),
            authority,
            path,
        })
    }
}

/// Why a POST failed.
#[derive(Debug)]
enum Failure {
    /// Worth retrying: unreachable, timed out, a 5xx.
    Retry(String),
    /// The Alertmanager refused these alerts (4xx).
    Refused(String),
}

/// The sender task of one Alertmanager; returns at shutdown.
pub async fn run(
    target: Target,
    outbox: Arc<Outbox>,
    stats: Arc<AlertmanagerStats>,
    resend: Duration,
    shutdown: CancellationToken,
) {
    let mut client = Client {
        target,
        connection: None,
    };
    let log = RateLimitedLog::default();
    let mut backoff = MIN_BACKOFF;
    loop {
        let batch = outbox.take(MAX_BATCH, &stats);
        if batch.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = outbox.pushed() => continue,
            }
        }
        let body = encode(&batch, SystemTime::now(), resend);
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = tokio::time::timeout(POST_TIMEOUT, client.post(body)) => result
                .unwrap_or_else(|_| Err(Failure::Retry(format!("no answer within {POST_TIMEOUT:?}")))),
        };
        match result {
            Ok(()) => {
                stats.sent(batch.len(), unix_ms(SystemTime::now()));
                backoff = MIN_BACKOFF;
            }
            Err(failure) => {
                stats.failed(batch.len());
                let (error, retry) = match failure {
                    Failure::Retry(error) => (error, true),
                    Failure::Refused(error) => (error, false),
                };
                if let Some(skipped) = log.due() {
                    tracing::warn!(
                        alertmanager = %client.target.url,
                        %error,
                        alerts = batch.len(),
                        retry,
                        not_logged_since_last_line = skipped,
                        "alerts not delivered to Alertmanager"
                    );
                }
                if !retry {
                    continue;
                }
                client.connection = None;
                outbox.put_back(batch, &stats);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One connection to one Alertmanager, opened when needed.
struct Client {
    target: Target,
    connection: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    async fn post(&mut self, body: Bytes) -> Result<(), Failure> {
        let connection = match self.connection.take() {
            Some(open) if !open.is_closed() => open,
            _ => connect(&self.target.authority).await?,
        };
        let connection = self.connection.insert(connection);
        connection
            .ready()
            .await
            .map_err(|e| Failure::Retry(format!("connection closed: {e}")))?;
        let request = Request::post(&self.target.path)
            .header(header::HOST, &self.target.authority)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| Failure::Refused(format!("cannot build the request: {e}")))?;
        let response = connection
            .send_request(request)
            .await
            .map_err(|e| Failure::Retry(format!("request failed: {e}")))?;
        let status = response.status();
        // Read (a bounded part of) the answer, so the connection can carry the next request.
        let text = match Limited::new(response.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
        {
            Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            Err(_) => {
                self.connection = None;
                String::new()
            }
        };
        if status.is_success() {
            Ok(())
        } else if status.is_client_error() && status != StatusCode::REQUEST_TIMEOUT {
            Err(Failure::Refused(format!("{status}: {}", text.trim())))
        } else {
            Err(Failure::Retry(format!("{status}: {}", text.trim())))
        }
    }
}

async fn connect(authority: &str) -> Result<SendRequest<Full<Bytes>>, Failure> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| Failure::Retry(format!("cannot connect to {authority}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Retry(format!("HTTP handshake with {authority} failed: {e}")))?;
    // Drives the connection; ends when `sender` is dropped or the peer closes.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// The POST body: Alertmanager's `postableAlerts`.
fn encode(batch: &[Alert], now: SystemTime, resend: Duration) -> Bytes {
    let ends = now + resend * ENDS_AFTER_RESENDS;
    let alerts: Vec<Value> = batch
        .iter()
        .map(|alert| {
            let ends_at = alert.resolved_at.unwrap_or(unix_micros(ends));
            // Alertmanager refuses a whole POST with one alert ending before it starts (an
            // event stamped in the future by its source): start it no later than its end.
            let starts_at = alert.starts_at.min(ends_at);
            let mut object = Map::new();
            object.insert("labels".into(), json!(alert.labels));
            object.insert("annotations".into(), json!(alert.annotations));
            object.insert("startsAt".into(), json!(format_time(starts_at)));
            object.insert("endsAt".into(), json!(format_time(ends_at)));
            if let Some(url) = &alert.generator_url {
                object.insert("generatorURL".into(), json!(url));
            }
            Value::Object(object)
        })
        .collect();
    Bytes::from(Value::Array(alerts).to_string())
}

fn unix_micros(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_with_an_optional_prefix() {
        let target = Target::parse("http://am.example:9093/").unwrap();
        assert_eq!(target.authority, "am.example:9093");
        assert_eq!(target.path, "/api/v2/alerts");
        let target = Target::parse("http://am/alertmanager").unwrap();
        assert_eq!(
            (target.authority.as_str(), target.path.as_str()),
            ("am:80", "/alertmanager/api/v2/alerts")
        );
        assert_eq!(
            Target::parse("http://[::1]:9").unwrap().authority,
            "[::1]:9"
        );
        for bad in [
            "https://am:9093",
            "am:9093",
            "http://",
            "http://u@am",
            "http://am/?x",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_firing_alert_ends_four_resends_ahead_and_a_resolved_one_when_it_was_resolved() {
        let alert = |resolved_at| Alert {
            labels: [("alertname".to_owned(), "statecast".to_owned())].into(),
            annotations: [("link".to_owned(), "http://x/".to_owned())].into(),
            starts_at: 1_795_435_200_000_000,
            resolved_at,
            generator_url: Some("http://x/".into()),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_435_260);
        let body = encode(
            &[alert(None), alert(Some(1_795_435_230_000_000))],
            now,
            Duration::from_secs(60),
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body[0]["startsAt"], "2026-11-23T12:00:00.000Z");
        assert_eq!(body[0]["endsAt"], "2026-11-23T12:05:00.000Z");
        assert_eq!(body[1]["endsAt"], "2026-11-23T12:00:30.000Z");
        assert_eq!(body[0]["generatorURL"], "http://x/");
        assert_eq!(body[0]["labels"]["alertname"], "statecast");
    }
}
