//! Snapshots in the cluster's object store bucket: how a new or wiped node starts without
//! replaying the stream from its beginning, and what lets the stream be trimmed at all.
//!
//! One object, `latest`: the engine's [`Image`] (index, `seq`, and the stream position it
//! covers). Every node writes it periodically, unless the bucket already holds one as new as its
//! own — images at the same position are identical on every node, so which node wrote it does
//! not matter.
//!
//! A node with a data directory also keeps its own image there ([`LOCAL_IMAGE`]), written only
//! once its history holds every change the image counts. A restarted node whose history ends
//! before the bucket's snapshot starts from it and replays the stream after it, so its history
//! has no hole — as long as the stream still holds that part.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::object_store::{ObjectMetadata, ObjectStore};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::wire;
use crate::engine::{EngineHandle, Image};
use crate::metrics::Counters;

/// The object's name in the bucket.
const OBJECT: &str = "latest";

/// The metadata key holding the stream position an object covers (read without downloading it).
const POSITION: &str = "position";

/// Larger snapshot objects are refused rather than read into memory: a bucket is shared, and
/// its contents are not trusted to be sane (at the default --max-keys the index stays far below).
pub(super) const MAX_SNAPSHOT_BYTES: usize = 4 * 1024 * 1024 * 1024;

/// This node's own image, in its data directory.
pub(super) const LOCAL_IMAGE: &str = "cluster-image";

/// This node's own image, if its data directory holds a readable one (a damaged or oversized
/// one is ignored with a warning: the node then starts from the bucket's).
pub(super) fn load_local(dir: &Path) -> Option<Image> {
    let path = dir.join(LOCAL_IMAGE);
    let size = std::fs::metadata(&path).ok()?.len();
    if size > MAX_SNAPSHOT_BYTES as u64 {
        tracing::warn!(path = %path.display(), size, "this node's image is larger than a snapshot may be: ignored");
        return None;
    }
    let read = std::fs::read(&path).map_err(|e| e.to_string());
    match read.and_then(|bytes| wire::decode_image(&bytes).map_err(|e| e.to_string())) {
        Ok(image) => Some(image),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "this node's image is unreadable: ignored");
            None
        }
    }
}

/// Replaces this node's image with `bytes` (written aside, synced, then renamed: a crash leaves
/// the old image or the new one).
fn write_local(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let aside = dir.join(format!("{LOCAL_IMAGE}.new"));
    let mut file = std::fs::File::create(&aside)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&aside, dir.join(LOCAL_IMAGE))
}

/// What the bucket's snapshot is: the stream position it covers (0 if it does not say) and how
/// many seconds ago it was written.
async fn stored(bucket: &ObjectStore) -> Option<(u64, i64)> {
    let info = bucket.info(OBJECT).await.ok()?;
    if info.deleted {
        return None;
    }
    let position = info
        .metadata
        .get(POSITION)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let age = info.modified.map_or(i64::MAX, |modified| {
        now.saturating_sub(modified.unix_timestamp())
    });
    Some((position, age))
}

/// The newest snapshot, if the bucket holds one.
pub(super) async fn load(bucket: &ObjectStore) -> Result<Option<Image>, String> {
    let info = match bucket.info(OBJECT).await {
        Ok(info) if !info.deleted => info,
        Ok(_) => return Ok(None),
        Err(error)
            if error.kind() == async_nats::jetstream::object_store::InfoErrorKind::NotFound =>
        {
            return Ok(None)
        }
        Err(error) => return Err(format!("cannot read the snapshot bucket: {error}")),
    };
    if info.size > MAX_SNAPSHOT_BYTES {
        return Err(format!(
            "the snapshot object is {} bytes, more than the {MAX_SNAPSHOT_BYTES} this node reads",
            info.size
        ));
    }
    let mut object = bucket
        .get(OBJECT)
        .await
        .map_err(|e| format!("cannot read the snapshot: {e}"))?;
    let mut bytes = Vec::new();
    (&mut object)
        .take(MAX_SNAPSHOT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("cannot read the snapshot: {e}"))?;
    wire::decode_image(&bytes)
        .map(Some)
        .map_err(|e| format!("the snapshot is unreadable: {e}"))
}

/// Writes this node's image to the bucket every `interval`, when it is newer than the bucket's,
/// and to `local` (its data directory), if it has one — there first the image the engine
/// started from (`start`, unless it came from there): whatever history the node writes from now
/// on follows it.
pub(super) async fn write_periodically(
    bucket: ObjectStore,
    engine: EngineHandle,
    counters: Arc<Counters>,
    interval: Duration,
    local: Option<PathBuf>,
    start: Option<Image>,
    shutdown: CancellationToken,
) {
    if let (Some(dir), Some(start)) = (local.clone(), start) {
        let written = tokio::task::spawn_blocking(move || {
            write_local(&dir, &wire::encode_image(&start))
                .map_err(|e| format!("cannot write {}: {e}", dir.join(LOCAL_IMAGE).display()))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|written| written);
        if let Err(error) = written {
            tracing::warn!(%error, "cannot keep this node's image");
        }
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: a node that just caught up has nothing new to say yet.
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(error) = write_once(&bucket, &engine, &counters, interval, local.clone()).await {
            tracing::warn!(%error, "cannot write a cluster snapshot");
        }
    }
}

async fn write_once(
    bucket: &ObjectStore,
    engine: &EngineHandle,
    counters: &Counters,
    interval: Duration,
    local: Option<PathBuf>,
) -> Result<(), String> {
    let image = engine.image().await.map_err(|e| e.to_string())?;
    if image.position == 0 {
        return Ok(());
    }
    if local.is_some() {
        // The own image may count no change its history lacks (see `load_local`'s caller).
        engine.sync().await.map_err(|e| e.to_string())?;
    }
    // Every node runs this; one fresh snapshot per interval is enough, whoever wrote it.
    let fresh = i64::try_from(interval.as_secs()).unwrap_or(i64::MAX) / 2;
    let upload = !stored(bucket)
        .await
        .is_some_and(|(position, age)| position >= image.position || age < fresh);
    if !upload && local.is_none() {
        return Ok(());
    }
    let position = image.position;
    let seq = image.snapshot.seq;
    let bytes = tokio::task::spawn_blocking(move || {
        let bytes = wire::encode_image(&image);
        if let Some(dir) = local {
            write_local(&dir, &bytes)
                .map_err(|e| format!("cannot write {}: {e}", dir.join(LOCAL_IMAGE).display()))?;
        }
        Ok::<_, String>(bytes)
    })
    .await
    .map_err(|e| e.to_string())??;
    if !upload {
        return Ok(());
    }
    let size = bytes.len();
    let mut metadata = ObjectMetadata {
        name: OBJECT.to_owned(),
        description: Some(format!(
            "statecast snapshot: stream position {position}, seq {seq}"
        )),
        ..Default::default()
    };
    metadata
        .metadata
        .insert(POSITION.to_owned(), position.to_string());
    bucket
        .put(metadata, &mut bytes.as_slice())
        .await
        .map_err(|e| e.to_string())?;
    Counters::add(&counters.cluster.snapshots_written, 1);
    tracing::info!(position, seq, size, "wrote a cluster snapshot");
    Ok(())
}
