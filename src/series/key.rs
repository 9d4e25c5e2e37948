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

/// One metric of one applied event: its key in [`PackedKey`]'s layout, borrowed from the batch's
/// [`Points`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point<'a> {
    pub key: &'a [u8],
    pub time_micros: i64,
    pub value: f64,
}

/// The points of one applied batch, their keys packed one after the other in one buffer: the
/// engine thread makes one allocation per batch, not one per point, and the series thread frees
/// one (a free on another thread than the allocating one is the allocator's slow path) and looks
/// each key up as a borrowed slice (BENCHMARKS.md, "Metric series"). Bounded by its batch.
#[derive(Debug, Default)]
pub struct Points {
    keys: Vec<u8>,
    /// Per point: where its key ends in `keys` (it starts where the previous one ends), its
    /// time and its value.
    points: Vec<(usize, i64, f64)>,
}

impl Points {
    /// Room for `points` points whose keys hold `key_bytes` bytes of host and service.
    pub fn with_capacity(points: usize, key_bytes: usize) -> Self {
        Self {
            keys: Vec::with_capacity(points * HEADER + key_bytes),
            points: Vec::with_capacity(points),
        }
    }

    pub fn push(
        &mut self,
        host: Option<&str>,
        service: Option<&str>,
        time_micros: i64,
        value: f64,
    ) {
        pack(&mut self.keys, host, service);
        self.points.push((self.keys.len(), time_micros, value));
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The points, in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = Point<'_>> {
        let mut start = 0;
        self.points.iter().map(move |&(end, time_micros, value)| {
            let key = self.keys.get(start..end).unwrap_or_default();
            start = end;
            Point {
                key,
                time_micros,
                value,
            }
        })
    }

    /// The first point (tests add points one at a time).
    #[cfg(test)]
    pub fn first(&self) -> Point<'_> {
        self.iter().next().expect("a point")
    }
}

/// A key's host and service in one allocation — `[flags: 1][host length: 4, LE][host][service]`,
/// flags bit 0 = host present, bit 1 = service present (the index's own layout) — so the series
/// thread finds a point's series by hashing one slice, borrowed from the batch's [`Points`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PackedKey(Box<[u8]>);

const HEADER: usize = 5;

/// Appends the packed form of (`host`, `service`) to `bytes`.
fn pack(bytes: &mut Vec<u8>, host: Option<&str>, service: Option<&str>) {
    let (h, s) = (host.unwrap_or_default(), service.unwrap_or_default());
    bytes.reserve(HEADER + h.len() + s.len());
    bytes.push(u8::from(host.is_some()) | (u8::from(service.is_some()) << 1));
    // Hosts of 4 GiB cannot arrive: frames and bodies are bounded far below.
    bytes.extend_from_slice(&(h.len() as u32).to_le_bytes());
    bytes.extend_from_slice(h.as_bytes());
    bytes.extend_from_slice(s.as_bytes());
}

/// The host and service of a packed key.
pub fn name_of(bytes: &[u8]) -> KeyName {
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

impl PackedKey {
    pub fn new(host: Option<&str>, service: Option<&str>) -> Self {
        let mut bytes = Vec::new();
        pack(&mut bytes, host, service);
        PackedKey(bytes.into_boxed_slice())
    }

    /// The host and service again.
    pub fn name(&self) -> KeyName {
        name_of(&self.0)
    }
}

/// Hashed and compared as its bytes, so a point's borrowed key finds it.
impl std::borrow::Borrow<[u8]> for PackedKey {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl From<&[u8]> for PackedKey {
    fn from(bytes: &[u8]) -> Self {
        PackedKey(bytes.into())
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

    #[test]
    fn a_batch_of_points_gives_back_each_key_packed_in_order() {
        let keys = [
            (Some("web1"), Some("cpu")),
            (None, Some("")),
            (Some("ünï"), None),
        ];
        let mut points = Points::with_capacity(1, 0);
        for (i, (host, service)) in keys.iter().enumerate() {
            points.push(*host, *service, i as i64, i as f64 / 2.0);
        }
        assert_eq!(points.len(), 3);
        for (i, (point, (host, service))) in points.iter().zip(keys).enumerate() {
            let packed = PackedKey::new(host, service);
            assert_eq!(point.key, std::borrow::Borrow::<[u8]>::borrow(&packed));
            assert_eq!(name_of(point.key), packed.name());
            assert_eq!((point.time_micros, point.value), (i as i64, i as f64 / 2.0));
        }
    }
}
