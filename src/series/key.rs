//! What names a series and what feeds it: the key (host, service), its id in the store, one
//! point (an applied event's metric and time, its key named by the index's slot number) and
//! where a closed bucket lives.

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

/// One metric of one applied event: the index's number for its key (see [`Points`]), its event
/// time and its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub slot: u32,
    pub time_micros: i64,
    pub value: f64,
}

/// The points of one applied batch, each naming its key by the index's small stable number for
/// it (its *slot*), and the names of the slots that carry a key new to the series thread: the
/// engine sends a key's name once (when the key first gets a point in a slot), and every later
/// point is a number the series thread looks up in a dense array — no key bytes to build,
/// hash or compare per point (BENCHMARKS.md, "Metric series").
///
/// Why it stays right when slots are reused: a slot is numbered again only after its key left
/// the index, and the new key's name travels in the first batch carrying its points, ahead of
/// them, over the same ordered channel; the feed keeps the names of a dropped batch for the next
/// one (`feed`), so no point ever reaches the series thread before its slot's current name.
/// Bounded by its batch (names: at most one per point).
#[derive(Debug, Default, Clone)]
pub struct Points {
    /// The names, packed one after the other ([`PackedKey`]'s layout).
    name_bytes: Vec<u8>,
    /// Per name: its slot and where it ends in `name_bytes` (it starts where the previous ends).
    names: Vec<(u32, usize)>,
    points: Vec<Point>,
    /// Metrics of the batch that were NaN or infinite (not stored: counted).
    pub not_finite: u64,
}

impl Points {
    /// Room for `points` points.
    pub fn with_capacity(points: usize) -> Self {
        Self {
            points: Vec::with_capacity(points),
            ..Self::default()
        }
    }

    /// Says that from now on `slot` names the key packed in `name` ([`PackedKey`]'s layout).
    pub fn name(&mut self, slot: u32, name: &[u8]) {
        self.name_bytes.extend_from_slice(name);
        self.names.push((slot, self.name_bytes.len()));
    }

    /// A point of the key `slot` names (its name pushed before, in this batch or an earlier one).
    pub fn push(&mut self, slot: u32, time_micros: i64, value: f64) {
        self.points.push(Point {
            slot,
            time_micros,
            value,
        });
    }

    /// Points (not names).
    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Whether the batch carries names.
    pub fn has_names(&self) -> bool {
        !self.names.is_empty()
    }

    /// The names, in the order they were pushed: each slot's latest one wins.
    pub fn names(&self) -> impl Iterator<Item = (u32, &[u8])> {
        let mut start = 0;
        self.names.iter().map(move |&(slot, end)| {
            let name = self.name_bytes.get(start..end).unwrap_or_default();
            start = end;
            (slot, name)
        })
    }

    /// The points, in the order they were pushed.
    pub fn points(&self) -> &[Point] {
        &self.points
    }

    /// Appends `later`'s points after this batch's own (its count of metrics not stored is the
    /// feed's to count).
    /// `later` must carry no names: a name goes ahead of every point of the batch it came with,
    /// so a batch naming slots starts a batch of its own (see [`super::SeriesFeed`]).
    pub fn append(&mut self, later: Points) {
        debug_assert!(!later.has_names(), "a batch with names starts anew");
        self.points.extend_from_slice(&later.points);
    }

    /// Puts `earlier`'s names ahead of this batch's own (the feed's names of dropped batches).
    pub fn prepend_names(&mut self, earlier: &[(u32, Box<[u8]>)]) {
        let mut bytes = Vec::with_capacity(self.name_bytes.len() + earlier.len() * 16);
        let mut names = Vec::with_capacity(self.names.len() + earlier.len());
        for (slot, name) in earlier {
            bytes.extend_from_slice(name);
            names.push((*slot, bytes.len()));
        }
        for (slot, name) in self.names() {
            bytes.extend_from_slice(name);
            names.push((slot, bytes.len()));
        }
        self.name_bytes = bytes;
        self.names = names;
    }

    /// A batch of one point of (`host`, `service`) in slot `slot`, its name with it (tests).
    #[cfg(test)]
    pub fn one(slot: u32, host: &str, service: &str, time_micros: i64, value: f64) -> Self {
        let mut points = Points::default();
        points.name(slot, &PackedKey::new(Some(host), Some(service)).0);
        points.push(slot, time_micros, value);
        points
    }
}

/// A key's host and service in one allocation — `[flags: 1][host length: 4, LE][host][service]`,
/// flags bit 0 = host present, bit 1 = service present (the index's own layout, so the engine
/// sends a slot's name as the index key's bytes) — hashed as one slice when a name is bound.
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

    /// The packed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
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
    fn a_batch_gives_back_its_names_in_order_after_the_names_put_ahead_of_it() {
        let web = PackedKey::new(Some("web1"), Some("cpu"));
        let db = PackedKey::new(None, Some("ünï"));
        let mut points = Points::with_capacity(2);
        assert!(!points.has_names());
        points.name(3, &web.0);
        points.push(3, 10, 0.5);
        points.name(0, &db.0);
        points.push(0, 11, 1.5);
        points.push(3, 12, 2.5);
        points.prepend_names(&[(3, db.0.clone()), (7, web.0.clone())]);
        let names: Vec<(u32, KeyName)> = points.names().map(|(s, n)| (s, name_of(n))).collect();
        assert_eq!(
            names,
            [
                (3, db.name()),
                (7, web.name()),
                (3, web.name()),
                (0, db.name())
            ]
        );
        let slots: Vec<u32> = points.points().iter().map(|p| p.slot).collect();
        assert_eq!(slots, [3, 0, 3]);
        assert_eq!(points.len(), 3);
    }
}
