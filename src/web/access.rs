//! Who may connect: origin checks on websocket upgrades and optional shared-secret tokens.
//!
//! A browser sends `Origin` on every websocket upgrade; without a check, any page a user visits
//! could open a socket to a dashboard on their intranet and read it (cross-site websocket
//! hijacking). Same-origin is the default; `--allowed-origin` widens it. Tokens are compared in
//! constant time so response timing does not leak them byte by byte.
//!
//! Two more browser attacks are refused here. Cross-site request forgery: any page the operator
//! visits can POST `text/plain` to `/api/event` (no preflight), so a request carrying a foreign
//! `Origin`, or `Sec-Fetch-Site: cross-site`, is refused; scripts and forwarders send neither.
//! DNS rebinding: a page on `evil.example` whose name later resolves to 127.0.0.1 reads the
//! dashboard as same-origin; its requests still say `Host: evil.example`, so only allowed Host
//! names are served ([`HostRule`]).
//!
//! Which of these rules an endpoint needs is in its handler's signature: `extract` turns them
//! into extractors ([`IngestWrite`], [`DashboardRead`], …) that count and answer a refusal.

mod extract;

pub(crate) use extract::{
    route, DashboardRead, DashboardWatch, IngestSocket, IngestWrite, OperatorAct,
};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use regex::Regex;

use super::error::ApiError;

fn denied(status: StatusCode, error: impl Into<String>) -> ApiError {
    ApiError::new(status, error)
}

#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// Regex an `Origin` must match in full; `{{host}}` stands for the request's Host header.
    pub allowed_origin: Option<String>,
    pub ingest_token: Option<String>,
    pub dashboard_token: Option<String>,
    /// Host names requests may be addressed to.
    pub allowed_hosts: HostRule,
    /// `--external-url`'s origin (`https://mon.example.com`): behind a reverse proxy the Host the
    /// server sees is not the one the browser used, so the same-origin rule cannot match it.
    pub external_origin: Option<String>,
    /// `--trusted-proxy`: peers whose `X-Forwarded-Host` / `Forwarded: host=` stands for Host.
    pub trusted_proxies: Vec<crate::web::proxy::Cidr>,
}

/// Which `Host` headers are served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HostRule {
    /// Any Host: the server listens on a wildcard address and no `--allowed-host` was given
    /// (its names are not known; the operator lists them to turn the check on).
    #[default]
    Any,
    /// Loopback names and addresses, and these names (lowercase, without port or brackets).
    Only(Vec<String>),
}

impl HostRule {
    /// The rule for a listener on `listen` with `--allowed-host` names `allowed`.
    pub fn for_listener(listen: std::net::SocketAddr, allowed: &[String]) -> Self {
        if !allowed.is_empty() {
            let names = allowed
                .iter()
                .map(|name| host_name(name.trim()))
                .filter(|name| !name.is_empty())
                .collect();
            return HostRule::Only(names);
        }
        if listen.ip().is_unspecified() {
            HostRule::Any
        } else {
            HostRule::Only(vec![listen.ip().to_string()])
        }
    }

    /// This rule and one more name (`--external-url`'s host); `Any` stays `Any`.
    pub fn with(self, name: Option<String>) -> Self {
        match (self, name) {
            (HostRule::Only(mut names), Some(name)) => {
                names.push(host_name(&name));
                HostRule::Only(names)
            }
            (rule, _) => rule,
        }
    }

    fn allows(&self, name: &str) -> bool {
        match self {
            HostRule::Any => true,
            HostRule::Only(names) => {
                is_loopback_name(name) || names.iter().any(|allowed| allowed == name)
            }
        }
    }
}

/// `Example.COM:8080` → `example.com`; `[::1]:8080` → `::1`; a trailing dot is dropped.
fn host_name(host: &str) -> String {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn is_loopback_name(name: &str) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl AccessConfig {
    /// Rejects a websocket upgrade from a foreign origin with 403.
    pub(crate) fn check_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        // Non-browser clients (riemann-dash's server side, scripts) send no Origin: nothing to
        // protect against there.
        let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
            return Ok(());
        };
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let external = self
            .external_origin
            .as_deref()
            .is_some_and(|external| external.eq_ignore_ascii_case(origin.trim_end_matches('/')));
        let allowed = external
            || match &self.allowed_origin {
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

    /// The Host a trusted reverse proxy says the browser used, if `peer` is one and it says so:
    /// the last `X-Forwarded-Host` value, else the last `host=` of `Forwarded` (the last is what
    /// the proxy next to us added; earlier ones came from further away, maybe from the client).
    pub(crate) fn forwarded_host(
        &self,
        peer: Option<std::net::SocketAddr>,
        headers: &HeaderMap,
    ) -> Option<HeaderValue> {
        let peer = peer?.ip();
        if !self.trusted_proxies.iter().any(|cidr| cidr.contains(peer)) {
            return None;
        }
        let last = |name: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .rfind(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let host = last("x-forwarded-host").or_else(|| {
            let forwarded = last("forwarded")?;
            forwarded.split(';').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("host")
                    .then(|| value.trim().trim_matches('"').to_owned())
            })
        })?;
        HeaderValue::from_str(&host).ok()
    }

    /// Rejects a request addressed to a Host name that is not allowed (DNS rebinding) with 403.
    /// A request without Host (HTTP/1.0 tools) passes: browsers always send one.
    pub(crate) fn check_host(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(host) = headers.get(header::HOST) else {
            return Ok(());
        };
        let name = host_name(host.to_str().unwrap_or(""));
        if self.allowed_hosts.allows(&name) {
            Ok(())
        } else {
            Err(denied(
                StatusCode::FORBIDDEN,
                format!(
                    "host {:?} is not allowed (list the names this server is reached by with \
                     --allowed-host)",
                    String::from_utf8_lossy(host.as_bytes())
                ),
            ))
        }
    }

    /// Rejects a browser's cross-site request (CSRF) with 403: a foreign `Origin` (as for
    /// websockets), or no Origin but `Sec-Fetch-Site: cross-site`. Scripts send neither.
    pub(crate) fn check_cross_site(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if headers.contains_key(header::ORIGIN) {
            return self.check_origin(headers);
        }
        let cross_site = headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        if cross_site {
            Err(denied(
                StatusCode::FORBIDDEN,
                "cross-site request refused (Sec-Fetch-Site: cross-site)",
            ))
        } else {
            Ok(())
        }
    }

    pub(crate) fn check_ingest(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        check_token(self.ingest_token.as_deref(), headers, None)
    }

    /// The ingest token on a websocket upgrade (`GET /events`): a header, or `?token=` for
    /// browsers, which cannot set headers on a websocket.
    pub(crate) fn check_ingest_ws(
        &self,
        headers: &HeaderMap,
        url_token: Option<&str>,
    ) -> Result<(), ApiError> {
        check_token(self.ingest_token.as_deref(), headers, url_token)
    }

    /// An operator action (ack, unack, silence, clear): the ingest token when one is set (an
    /// action writes, like an event) and the dashboard token when one is set (acting on the
    /// dashboard needs at least what reading it needs). Each may come as
    /// `Authorization: Bearer` or `?token=`; a token set to both values passes both.
    pub(crate) fn check_action(
        &self,
        headers: &HeaderMap,
        url_token: Option<&str>,
    ) -> Result<(), ApiError> {
        let bearer = bearer(headers);
        for (expected, name) in [
            (self.ingest_token.as_deref(), "ingest"),
            (self.dashboard_token.as_deref(), "dashboard"),
        ] {
            let Some(expected) = expected else { continue };
            let matches = |given: Option<&str>| {
                given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()))
            };
            if matches(bearer) || matches(url_token) {
                continue;
            }
            return Err(denied(
                StatusCode::UNAUTHORIZED,
                if bearer.is_none() && url_token.is_none() {
                    "a token is required (Authorization: Bearer …)".to_owned()
                } else {
                    format!(
                        "invalid token: an action needs the {name} token (as Authorization: \
                         Bearer or ?token=)"
                    )
                },
            ));
        }
        Ok(())
    }

    /// Dashboards may pass the token in the URL (`?token=`): browsers cannot set headers on a
    /// websocket.
    pub(crate) fn check_dashboard(
        &self,
        headers: &HeaderMap,
        url_token: Option<&str>,
    ) -> Result<(), ApiError> {
        check_token(self.dashboard_token.as_deref(), headers, url_token)
    }
}

/// Checks that the URL pattern compiles, so a typo fails at startup, not at the first upgrade.
pub(crate) fn validate_origin_pattern(pattern: &str) -> Result<(), String> {
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
) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = bearer(headers).or(url_token);
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(denied(StatusCode::UNAUTHORIZED, "invalid token")),
        None => Err(denied(
            StatusCode::UNAUTHORIZED,
            "a token is required (Authorization: Bearer …)",
        )),
    }
}

/// The `Authorization: Bearer` token, if one was sent.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
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
    fn host_rule_defaults_to_loopback_and_the_listening_ip() {
        let rule = |listen: &str, allowed: &[&str]| {
            let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
            AccessConfig {
                allowed_hosts: HostRule::for_listener(listen.parse().unwrap(), &allowed),
                ..Default::default()
            }
        };
        let ok = |access: &AccessConfig, host: &str| {
            access.check_host(&headers(&[(header::HOST, host)])).is_ok()
        };
        let loopback = rule("127.0.0.1:8080", &[]);
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "127.0.0.2",
        ] {
            assert!(ok(&loopback, host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:8080",
            "127.0.0.1.evil",
        ] {
            assert!(!ok(&loopback, host), "{host}");
        }
        assert!(loopback.check_host(&HeaderMap::new()).is_ok(), "no Host");
        let on_ip = rule("10.0.0.1:8080", &[]);
        assert!(ok(&on_ip, "10.0.0.1:8080") && !ok(&on_ip, "dash.example"));
        let wildcard = rule("0.0.0.0:8080", &[]);
        assert!(ok(&wildcard, "anything.example"));
        let listed = rule("0.0.0.0:8080", &["dash.example.com", "Other.Example:9000"]);
        assert!(ok(&listed, "dash.example.com:8080") && ok(&listed, "other.example"));
        assert!(ok(&listed, "localhost") && !ok(&listed, "evil.example"));
    }

    #[test]
    fn cross_site_posts_are_refused_and_scripts_pass() {
        let access = AccessConfig::default();
        let host = (header::HOST, "127.0.0.1:8080");
        assert!(access
            .check_cross_site(&headers(std::slice::from_ref(&host)))
            .is_ok());
        let same = headers(&[host.clone(), (header::ORIGIN, "http://127.0.0.1:8080")]);
        assert!(access.check_cross_site(&same).is_ok());
        let foreign = headers(&[host.clone(), (header::ORIGIN, "http://evil.example")]);
        assert_eq!(
            access.check_cross_site(&foreign).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        let fetch = headers(&[
            host,
            (
                header::HeaderName::from_static("sec-fetch-site"),
                "cross-site",
            ),
        ]);
        assert!(access.check_cross_site(&fetch).is_err());
    }

    #[test]
    fn external_url_origin_and_host_pass() {
        let url = crate::web::proxy::ExternalUrl::parse("HTTPS://Mon.Example.com:443/statecast/")
            .unwrap();
        assert_eq!(url.origin, "https://mon.example.com");
        let access = AccessConfig {
            allowed_hosts: HostRule::for_listener("127.0.0.1:8080".parse().unwrap(), &[])
                .with(Some(url.host.clone())),
            external_origin: Some(url.origin),
            ..Default::default()
        };
        let proxied = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "https://mon.example.com"),
        ]);
        assert!(access.check_origin(&proxied).is_ok());
        assert!(access
            .check_host(&headers(&[(header::HOST, "mon.example.com")]))
            .is_ok());
        let foreign = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "https://evil.example"),
        ]);
        assert!(access.check_origin(&foreign).is_err());
        assert!(access
            .check_host(&headers(&[(header::HOST, "evil.example")]))
            .is_err());
        for bad in ["mon.example.com", "ftp://x/", "https:///x", "https://u@x/"] {
            assert!(crate::web::proxy::ExternalUrl::parse(bad).is_err(), "{bad}");
        }
        let v6 = crate::web::proxy::ExternalUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (v6.origin.as_str(), v6.host.as_str()),
            ("http://[::1]:8080", "::1")
        );
    }

    #[test]
    fn forwarded_host_only_from_trusted_proxies() {
        use crate::web::proxy::Cidr;
        let access = AccessConfig {
            trusted_proxies: vec![
                Cidr::parse("10.0.0.0/8").unwrap(),
                Cidr::parse("::1").unwrap(),
            ],
            ..Default::default()
        };
        let h = headers(&[(
            header::HeaderName::from_static("x-forwarded-host"),
            "spoofed.example, mon.example.com",
        )]);
        let proxy = Some("10.1.2.3:4000".parse().unwrap());
        assert_eq!(access.forwarded_host(proxy, &h).unwrap(), "mon.example.com");
        assert!(access
            .forwarded_host(Some("192.168.1.1:1".parse().unwrap()), &h)
            .is_none());
        assert!(access.forwarded_host(None, &h).is_none());
        assert!(access
            .forwarded_host(Some("[::1]:1".parse().unwrap()), &h)
            .is_some());
        let forwarded = headers(&[(
            header::FORWARDED,
            "for=1.2.3.4;host=a.example, for=10.0.0.9;proto=https;host=\"mon.example.com\"",
        )]);
        assert_eq!(
            access.forwarded_host(proxy, &forwarded).unwrap(),
            "mon.example.com"
        );
        let mapped = Some("[::ffff:10.0.0.1]:1".parse().unwrap());
        assert!(access.forwarded_host(mapped, &h).is_some());
        for bad in ["10.0.0.0/33", "nope", "::1/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
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
