//! What statecast needs to know about the reverse proxy in front of it: which peers are proxies
//! (`--trusted-proxy`, address blocks) and the URL browsers use (`--external-url`), reduced to
//! what the Host and Origin checks in `access` compare. Parsed from flags by `config`; a leaf, so
//! that both `config` and `access` can use it without importing each other.

/// An address block: `10.0.0.0/8`, `::1/128`, or one address (`127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an address or CIDR block (e.g. 10.0.0.0/8, ::1)");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s.trim(), None),
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is in this block (an IPv4-mapped IPv6 peer counts as its IPv4 address).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(block), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(block) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(block), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(block) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `--external-url`, reduced to what the access checks compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalUrl {
    /// The URL as given: where the dashboard is (alert links point there).
    pub url: String,
    /// `scheme://host[:port]`, lowercase, without a default port: what a browser sends as Origin.
    pub origin: String,
    /// The host name alone (no port, no brackets), for the Host rule.
    pub host: String,
}

impl ExternalUrl {
    pub fn parse(s: &str) -> Result<ExternalUrl, String> {
        let bad =
            |why: &str| format!("--external-url {s:?}: {why} (e.g. https://mon.example.com/)");
        let (scheme, rest) = s.trim().split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => ":80",
            "https" => ":443",
            _ => return Err(bad("the scheme must be http or https")),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("no host"));
        }
        let authority = authority.to_ascii_lowercase();
        let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.split(':').next().unwrap_or(""),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(ExternalUrl {
            url: s.trim().to_owned(),
            origin: format!("{scheme}://{authority}"),
            host: host.trim_end_matches('.').to_owned(),
        })
    }
}
