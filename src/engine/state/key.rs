//! The index key: (host, service) packed into one shared allocation, and its borrowed form for
//! lookups that copy nothing.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashbrown::Equivalent;

use crate::event::Event;

/// The index key, shared (not copied) between the index and the expiry heap: host and service in
/// one allocation, inline behind the `Arc`'s counts, so comparing a key during a lookup touches
/// one cache line instead of chasing a pointer per string (the lookup dominated the engine's
/// profile). Layout: `[flags: 1][host length: 4, LE][host][service]`, flags bit 0 = host present,
/// bit 1 = service present — canonical, so equal bytes mean equal keys.
#[derive(Debug, Clone)]
pub(super) struct Key(Arc<[u8]>);

const HEADER: usize = 5;

impl Key {
    pub(super) fn new(parts: KeyRef<'_>) -> Self {
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

    /// The packed bytes: a series' name is sent as these (the series key's layout is this one).
    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub(super) fn parts(&self) -> KeyRef<'_> {
        let bytes = &self.0[..];
        let flags = bytes[0];
        let host_len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        let (host, service) = bytes[HEADER..].split_at(host_len);
        KeyRef {
            host: (flags & 1 != 0).then_some(host),
            service: (flags & 2 != 0).then_some(service),
        }
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
/// `(host, service)` strings (UTF-8 bytes sort like the text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct KeyRef<'a> {
    host: Option<&'a [u8]>,
    service: Option<&'a [u8]>,
}

impl<'a> KeyRef<'a> {
    pub(super) fn of_parts(host: Option<&'a str>, service: Option<&'a str>) -> Self {
        Self {
            host: host.map(str::as_bytes),
            service: service.map(str::as_bytes),
        }
    }

    pub(super) fn of_event(event: &'a Event) -> Self {
        Self {
            host: event.host.as_deref().map(str::as_bytes),
            service: event.service.as_deref().map(str::as_bytes),
        }
    }
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
