//! Producer-state snapshots of a partition (`<offset>.producer-snapshot` in
//! its directory, Kafka's name): written at clean close (at the log end) and
//! periodically (at the durable offset, so a crash never leaves a snapshot
//! beyond the recovered log), each atomically and durably through the
//! [`Disk`] seam. At open, and after a truncation, the newest readable
//! snapshot at or below the log end is loaded and the batches after it are
//! replayed. Runs on the partition's shard.

use std::path::Path;

use crate::format::batch::BatchIter;
use crate::log::error::LogResult;
use crate::log::Log;
use crate::partition::producer_state::ProducerState;
use crate::storage::disk::Disk;
use crate::storage::small_files::{read_whole, write_file_atomically};

const SUFFIX: &str = ".producer-snapshot";
/// Snapshots kept per partition (the newest ones).
pub const SNAPSHOTS_KEPT: usize = 2;
/// Bytes a partition reads per step while replaying batches after a snapshot.
const REPLAY_READ_BYTES: usize = 4 << 20;

fn name_of(offset: i64) -> String {
    format!("{offset:020}{SUFFIX}")
}

/// Snapshot offsets present in `dir`, newest first.
fn list<D: Disk>(disk: &D, dir: &Path) -> Vec<i64> {
    let mut offsets: Vec<i64> = disk
        .list_dir(dir)
        .map(|names| names.iter().filter_map(|n| n.strip_suffix(SUFFIX)?.parse().ok()).collect())
        .unwrap_or_default();
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    offsets
}

/// Writes a snapshot of `state` at `offset` and removes older ones beyond
/// the newest [`SNAPSHOTS_KEPT`].
pub async fn write<D: Disk>(disk: &D, dir: &Path, offset: i64, state: &ProducerState) -> LogResult<()> {
    write_file_atomically(disk, dir, &name_of(offset), state.encode()).await?;
    for old in list(disk, dir).into_iter().skip(SNAPSHOTS_KEPT) {
        disk.remove_file(&dir.join(name_of(old))).await?;
    }
    Ok(())
}

/// Whether a snapshot at `offset` exists.
pub fn exists<D: Disk>(disk: &D, dir: &Path, offset: i64) -> bool {
    disk.exists(&dir.join(name_of(offset)))
}

/// Removes snapshots above `offset` (the log was truncated there).
pub async fn remove_above<D: Disk>(disk: &D, dir: &Path, offset: i64) -> LogResult<()> {
    for above in list(disk, dir).into_iter().filter(|o| *o > offset) {
        disk.remove_file(&dir.join(name_of(above))).await?;
    }
    Ok(())
}

/// The producer state of `log`: the newest readable snapshot at or below
/// the log end, then every batch after it. Returns it with the snapshot's
/// offset (the log start when there was none).
pub async fn load<D: Disk>(log: &Log<D>) -> LogResult<(ProducerState, i64)> {
    let offsets = log.offsets();
    let mut snapshot = None;
    for offset in list(log.disk(), log.dir()).into_iter().filter(|o| *o <= offsets.log_end) {
        let bytes = read_whole(log.disk(), &log.dir().join(name_of(offset))).await.ok().flatten();
        if let Some(state) = bytes.as_deref().and_then(ProducerState::decode) {
            snapshot = Some((state, offset));
            break;
        }
        tracing::warn!(dir = %log.dir().display(), offset, "unreadable producer snapshot; trying an older one");
    }
    let (mut state, from) = snapshot.unwrap_or_else(|| (ProducerState::default(), offsets.log_start));
    let mut offset = from.max(offsets.log_start);
    while offset < offsets.log_end {
        let read = log.read(offset, REPLAY_READ_BYTES, offsets.log_end).await?;
        if read.batches.is_empty() {
            break;
        }
        let before = offset;
        for chunk in &read.batches {
            for (at, header) in BatchIter::new(chunk) {
                state.replay(&header, &chunk[at..at + header.total_bytes()]);
                offset = offset.max(header.next_offset());
            }
        }
        assert!(offset > before, "replay makes progress");
    }
    Ok((state, from))
}
