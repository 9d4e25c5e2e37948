//! What names a series and what feeds it: the key (host, service), its id in the store, one
//! point (an applied event's metric and time) and where a closed bucket lives.

/// A series' name: the index key it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyName {
    pub host: Option<String>,
    pub service: Option<String>,
}

/// A key with a series, and its id in the store (local to this node's store).
#[derive(Debug, PartialEq, Eq)]
pub struct SeriesKey {
    pub id: u64,
    pub name: KeyName,
}

/// One metric of one applied event.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub key: PackedKey,
    pub time_micros: i64,
    pub value: f64,
}

/// A key's host and service in one allocation — `[flags: 1][host length: 4, LE][host][service]`,
/// flags bit 0 = host present, bit 1 = service present (the index's own layout) — so the engine
/// copies a point's key with one allocation, and the series thread finds its series by hashing
/// one slice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PackedKey(Box<[u8]>);

const HEADER: usize = 5;

impl PackedKey {
    pub fn new(host: Option<&str>, service: Option<&str>) -> Self {
        let (h, s) = (host.unwrap_or_default(), service.unwrap_or_default());
        let mut bytes = Vec::with_capacity(HEADER + h.len() + s.len());
        bytes.push(u8::from(host.is_some()) | (u8::from(service.is_some()) << 1));
        // Hosts of 4 GiB cannot arrive: frames and bodies are bounded far below.
        bytes.extend_from_slice(&(h.len() as u32).to_le_bytes());
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(s.as_bytes());
        PackedKey(bytes.into_boxed_slice())
    }

    /// The host and service again.
    pub fn name(&self) -> KeyName {
        let bytes = &self.0[..];
        let flags = bytes.first().copied().unwrap_or(0);
        let host_len = bytes
            .get(1..HEADER)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, |b| u32::from_le_bytes(b) as usize);
        let rest = bytes.get(HEADER..).unwrap_or_default();
        let (host, service) = rest.split_at(host_len.min(rest.len()));
        // Packed from two `&str`s: the halves are UTF-8.
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        KeyName {
            host: (flags & 1 != 0).then(|| text(host)),
            service: (flags & 2 != 0).then(|| text(service)),
        }
    }
}

impl KeyName {
    pub fn packed(&self) -> PackedKey {
        PackedKey::new(self.host.as_deref(), self.service.as_deref())
    }
}

/// Where a closed bucket lives: key id, tier (its index in the tiers), bucket start (ms).
pub type Slot = (u64, u8, i64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_key_gives_back_its_host_and_service() {
        for (host, service) in [
            (Some("web1"), Some("disk /")),
            (None, Some("")),
            (Some(""), None),
            (None, None),
            (Some("ünï"), Some("ß")),
        ] {
            let name = PackedKey::new(host, service).name();
            assert_eq!(name.host.as_deref(), host);
            assert_eq!(name.service.as_deref(), service);
        }
        assert_ne!(
            PackedKey::new(Some("ab"), Some("c")),
            PackedKey::new(Some("a"), Some("bc"))
        );
        assert_ne!(
            PackedKey::new(None, Some("a")),
            PackedKey::new(Some(""), Some("a"))
        );
    }
}
