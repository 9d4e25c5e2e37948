//! Who may connect: origin checks on websocket upgrades and optional shared-secret tokens.
//!
//! A browser sends `Origin` on every websocket upgrade; without a check, any page a user visits
//! could open a socket to a dashboard on their intranet and read it (cross-site websocket
//! hijacking). Same-origin is the default; `--allowed-origin` widens it. Tokens are compared in
//! constant time so response timing does not leak them byte by byte.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use regex::Regex;

use super::api::error_response;

/// A refused request: small to pass around, turned into a JSON error response at the edge.
#[derive(Debug)]
pub struct Denied {
    pub status: StatusCode,
    pub error: String,
}

impl axum::response::IntoResponse for Denied {
    fn into_response(self) -> Response {
        error_response(self.status, self.error)
    }
}

fn denied(status: StatusCode, error: impl Into<String>) -> Denied {
    Denied {
        status,
        error: error.into(),
    }
}

#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// Regex an `Origin` must match in full; `{{host}}` stands for the request's Host header.
    pub allowed_origin: Option<String>,
    pub ingest_token: Option<String>,
    pub dashboard_token: Option<String>,
}

impl AccessConfig {
    /// Rejects a websocket upgrade from a foreign origin with 403.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), Denied> {
        // Non-browser clients (riemann-dash's server side, scripts) send no Origin: nothing to
        // protect against there.
        let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
            return Ok(());
        };
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let allowed = match &self.allowed_origin {
            None => origin_host(origin).is_some_and(|h| h.eq_ignore_ascii_case(host)),
            Some(pattern) => {
                let pattern = pattern.replace("{{host}}", &regex::escape(host));
                Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|re| re.is_match(origin))
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(denied(
                StatusCode::FORBIDDEN,
                format!("origin {origin:?} is not allowed"),
            ))
        }
    }

    pub fn check_ingest(&self, headers: &HeaderMap) -> Result<(), Denied> {
        check_token(self.ingest_token.as_deref(), headers, None)
    }

    /// Dashboards may pass the token in the URL (`?token=`): browsers cannot set headers on a
    /// websocket.
    pub fn check_dashboard(
        &self,
        headers: &HeaderMap,
        url_token: Option<&str>,
    ) -> Result<(), Denied> {
        check_token(self.dashboard_token.as_deref(), headers, url_token)
    }
}

/// Checks that the URL pattern compiles, so a typo fails at startup, not at the first upgrade.
pub fn validate_origin_pattern(pattern: &str) -> Result<(), String> {
    let probe = pattern.replace("{{host}}", "localhost");
    Regex::new(&format!("^(?:{probe})$"))
        .map(|_| ())
        .map_err(|e| {
            let detail = e.to_string().lines().last().unwrap_or("").trim().to_owned();
            format!("--allowed-origin {pattern:?} is not a valid regex: {detail}")
        })
}

/// `http://host:port` → `host:port`.
fn origin_host(origin: &str) -> Option<&str> {
    origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
}

fn check_token(
    expected: Option<&str>,
    headers: &HeaderMap,
    url_token: Option<&str>,
) -> Result<(), Denied> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let given = bearer.or(url_token);
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(denied(StatusCode::UNAUTHORIZED, "invalid token")),
        None => Err(denied(
            StatusCode::UNAUTHORIZED,
            "a token is required (Authorization: Bearer …)",
        )),
    }
}

/// Equality whose running time depends only on the lengths, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn same_origin_by_default() {
        let access = AccessConfig::default();
        let ok = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://127.0.0.1:8080"),
        ]);
        assert!(access.check_origin(&ok).is_ok());
        let foreign = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://evil.example"),
        ]);
        assert_eq!(
            access.check_origin(&foreign).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert!(
            access
                .check_origin(&headers(&[(header::HOST, "x")]))
                .is_ok(),
            "no Origin: not a browser"
        );
    }

    #[test]
    fn allowed_origin_regex_with_host_placeholder() {
        let access = AccessConfig {
            allowed_origin: Some(r"https?://(dash\.example\.com|{{host}})".into()),
            ..Default::default()
        };
        for (origin, ok) in [
            ("https://dash.example.com", true),
            ("http://10.0.0.1:8080", true),
            ("http://evil.example", false),
            ("https://dash.example.com.evil", false),
        ] {
            let h = headers(&[(header::HOST, "10.0.0.1:8080"), (header::ORIGIN, origin)]);
            assert_eq!(access.check_origin(&h).is_ok(), ok, "{origin}");
        }
        assert!(validate_origin_pattern("(").is_err());
    }

    #[test]
    fn tokens() {
        let access = AccessConfig {
            ingest_token: Some("s3cret".into()),
            dashboard_token: Some("view".into()),
            ..Default::default()
        };
        let good = headers(&[(header::AUTHORIZATION, "Bearer s3cret")]);
        let bad = headers(&[(header::AUTHORIZATION, "Bearer s3creT")]);
        assert!(access.check_ingest(&good).is_ok());
        assert_eq!(
            access.check_ingest(&bad).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            access.check_ingest(&HeaderMap::new()).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert!(access
            .check_dashboard(&HeaderMap::new(), Some("view"))
            .is_ok());
        assert!(access
            .check_dashboard(&HeaderMap::new(), Some("vie"))
            .is_err());
        assert!(AccessConfig::default()
            .check_ingest(&HeaderMap::new())
            .is_ok());
    }
}
