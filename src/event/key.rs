//! The (host, service) key of an event, packed into one shared allocation, and its borrowed form
//! for lookups that copy nothing.
//!
//! Shared, not copied: the engine's index makes a key once, when the key is first indexed, and
//! hands out clones of it (a reference count each) — to its expiry heap, and with each point of
//! an applied event's metric to the series thread, which keeps one as its series' name. Copying
//! host and service per metric event instead was the largest cost of series on the engine thread
//! (BENCHMARKS.md, "Metric series").

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashbrown::Equivalent;

use super::Event;

/// An event's (host, service), shared: host and service in one allocation, inline behind the
/// `Arc`'s counts, so comparing a key during a lookup touches one cache line instead of chasing a
/// pointer per string (the lookup dominated the engine's profile). Layout:
/// `[flags: 1][host length: 4, LE][host][service]`, flags bit 0 = host present, bit 1 = service
/// present — canonical, so equal bytes mean equal keys.
#[derive(Debug, Clone)]
pub struct Key(Arc<[u8]>);

const HEADER: usize = 5;

impl Key {
    pub fn new(parts: KeyRef<'_>) -> Self {
        let host = parts.host.unwrap_or_default();
        let service = parts.service.unwrap_or_default();
        let mut bytes = Vec::with_capacity(HEADER + host.len() + service.len());
        bytes.push(u8::from(parts.host.is_some()) | (u8::from(parts.service.is_some()) << 1));
        // Hosts longer than 4 GiB cannot arrive: frames are bounded far below that.
        bytes.extend_from_slice(&(host.len() as u32).to_le_bytes());
        bytes.extend_from_slice(host);
        bytes.extend_from_slice(service);
        Key(Arc::from(bytes))
    }

    pub fn parts(&self) -> KeyRef<'_> {
        let bytes = &self.0[..];
        let flags = bytes[0];
        let host_len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        let (host, service) = bytes[HEADER..].split_at(host_len);
        KeyRef {
            host: (flags & 1 != 0).then_some(host),
            service: (flags & 2 != 0).then_some(service),
        }
    }

    pub fn host(&self) -> Option<&str> {
        self.parts().host()
    }

    pub fn service(&self) -> Option<&str> {
        self.parts().service()
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Key {}

/// A borrowed key: looks an event up without copying its host and service. Ordered like
/// `(host, service)` strings (UTF-8 bytes sort like the text). Made from `&str`s only, so both
/// halves are UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyRef<'a> {
    host: Option<&'a [u8]>,
    service: Option<&'a [u8]>,
}

impl<'a> KeyRef<'a> {
    pub fn of_parts(host: Option<&'a str>, service: Option<&'a str>) -> Self {
        Self {
            host: host.map(str::as_bytes),
            service: service.map(str::as_bytes),
        }
    }

    pub fn of_event(event: &'a Event) -> Self {
        Self::of_parts(event.host.as_deref(), event.service.as_deref())
    }

    pub fn host(self) -> Option<&'a str> {
        self.host.map(text)
    }

    pub fn service(self) -> Option<&'a str> {
        self.service.map(text)
    }
}

/// A half of a key as text: always UTF-8 (see [`KeyRef`]); empty if it ever were not.
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.host.hash(state);
        self.service.hash(state);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *self == key.parts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gives_back_its_host_and_service() {
        for (host, service) in [
            (Some("web1"), Some("disk /")),
            (None, Some("")),
            (Some(""), None),
            (None, None),
            (Some("ünï"), Some("ß")),
        ] {
            let key = Key::new(KeyRef::of_parts(host, service));
            assert_eq!(key.host(), host);
            assert_eq!(key.service(), service);
        }
        let key = |host, service| Key::new(KeyRef::of_parts(host, service));
        assert_ne!(key(Some("ab"), Some("c")), key(Some("a"), Some("bc")));
        assert_ne!(key(None, Some("a")), key(Some(""), Some("a")));
    }
}
