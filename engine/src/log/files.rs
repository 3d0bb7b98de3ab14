//! The files of a partition log and the small helpers every part of the
//! log uses on them: opening an appendable segment (with preallocation),
//! loading, rebuilding and writing segment indexes, durable checkpoint
//! files, and removing segments. Pure file plumbing over the [`Disk`] seam;
//! runs on the partition's shard.

use std::path::Path;
use std::rc::Rc;

use crate::log::error::LogResult;
use crate::log::index::{OffsetIndex, TimeIndex};
use crate::log::scan::{scan_batches, ScanCheck};
use crate::log::segment::{segment_file, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use crate::storage::disk::{Disk, DiskFile, OpenMode};
use crate::storage::small_files::{read_whole, write_file_atomically};

/// File holding the log start offset (DeleteRecords, retention).
pub const LOG_START_FILE: &str = "log-start-offset";
/// Kafka's leader epoch checkpoint file.
pub const EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// Present only after a clean close.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

/// Largest batch recovery accepts: a hard bound, not the topic's current
/// `max.message.bytes` (which may have been lowered since the data was
/// written).
pub(crate) const RECOVERY_MAX_BATCH_BYTES: usize = i32::MAX as usize;

/// Base offset of the first segment that may hold unsynced data.
pub const RECOVERY_POINT_FILE: &str = "recovery-point";

/// Largest step of space reserved ahead of the write position.
pub const PREALLOCATE_STEP_BYTES: u64 = 64 << 20;

/// Smallest step of space reserved ahead of the write position.
pub const MIN_PREALLOCATE_STEP_BYTES: u64 = 16 << 10;

/// How far to reserve a segment's data file when `end` bytes are needed:
/// steps that double with the segment (16 KiB to 64 MiB ahead), so a new
/// partition reserves little and a busy one rarely calls fallocate. An
/// idle partition gives its reservation back
/// (`Log::release_if_idle`).
pub(crate) fn preallocation_target(config: &crate::log::config::LogConfig, end: u64) -> u64 {
    let step = end.clamp(MIN_PREALLOCATE_STEP_BYTES, PREALLOCATE_STEP_BYTES);
    (end + step).min(config.segment_bytes.max(end))
}

/// The files of the segment being appended to.
pub(crate) struct SegmentFiles<D: Disk> {
    pub read: Rc<D::File>,
    pub direct: Rc<D::File>,
    pub index: Rc<D::File>,
    pub time_index: Rc<D::File>,
    /// Bytes reserved so far.
    pub allocated: u64,
}

/// Opens (creating when missing) the files of an appendable segment and
/// makes the directory entries of those it created durable.
pub(crate) async fn open_segment_files<D: Disk>(disk: &D, dir: &Path, base: i64) -> LogResult<SegmentFiles<D>> {
    let log_path = segment_file(dir, base, LOG_SUFFIX);
    let creates =
        [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX].iter().any(|s| !disk.exists(&segment_file(dir, base, s)));
    let direct = disk.open(&log_path, OpenMode::DirectWrite).await?;
    let read = disk.open(&log_path, OpenMode::Read).await?;
    let index = disk.open(&segment_file(dir, base, INDEX_SUFFIX), OpenMode::ReadWrite).await?;
    let time_index = disk.open(&segment_file(dir, base, TIME_INDEX_SUFFIX), OpenMode::ReadWrite).await?;
    // Nothing is reserved here: the writer reserves before the first write
    // (an empty partition costs no space and no fallocate at creation), and
    // an existing segment keeps its size, its reservation included, until
    // recovery finds where its data ends.
    let allocated = direct.len().await?;
    if creates {
        disk.sync_dir(dir).await?;
    }
    Ok(SegmentFiles {
        read: Rc::new(read),
        direct: Rc::new(direct),
        index: Rc::new(index),
        time_index: Rc::new(time_index),
        allocated,
    })
}

/// Loads both index files of a sealed segment of `size` bytes; `None` when
/// either is missing or fails validation.
pub(crate) async fn load_indexes<D: Disk>(
    disk: &D,
    dir: &Path,
    base: i64,
    size: u64,
) -> Option<(OffsetIndex, TimeIndex)> {
    let index_bytes = read_whole(disk, &segment_file(dir, base, INDEX_SUFFIX)).await.ok()??;
    let time_bytes = read_whole(disk, &segment_file(dir, base, TIME_INDEX_SUFFIX)).await.ok()??;
    let index = OffsetIndex::decode(base, &index_bytes, size).ok()?;
    let time_index = TimeIndex::decode(base, &time_bytes).ok()?;
    if size > 0 && time_index.is_empty() {
        return None;
    }
    Some((index, time_index))
}

/// Rebuilds a segment's indexes by scanning its batches (headers only).
pub(crate) async fn rebuild_indexes<F: DiskFile>(
    file: &F,
    base: i64,
    size: u64,
    interval: u64,
    max_batch_bytes: usize,
) -> LogResult<(OffsetIndex, TimeIndex)> {
    let mut builder = IndexBuilder::new(base);
    scan_batches(file, 0, base, size, max_batch_bytes, ScanCheck::HeaderOnly, |position, header| {
        builder.add(header, position, interval);
        true
    })
    .await?;
    Ok(builder.finish())
}

/// Writes both index files of a segment whole.
pub(crate) async fn write_indexes<D: Disk>(
    disk: &D,
    dir: &Path,
    base: i64,
    index: &OffsetIndex,
    time_index: &TimeIndex,
) -> LogResult<()> {
    for (suffix, bytes) in [(INDEX_SUFFIX, index.encode()), (TIME_INDEX_SUFFIX, time_index.encode())] {
        let file = disk.open(&segment_file(dir, base, suffix), OpenMode::ReadWrite).await?;
        let len = bytes.len() as u64;
        let compio::buf::BufResult(result, _) = file.write_all_at(bytes, 0).await;
        result?;
        file.set_len(len).await?;
    }
    Ok(())
}

/// Builds indexes with the same spacing rule as appends.
pub(crate) struct IndexBuilder {
    index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index: u64,
    size: u64,
    /// Largest batch max timestamp added so far, -1 when none.
    pub(crate) max_timestamp: i64,
    /// Base offset of the batch carrying `max_timestamp`.
    pub(crate) offset_of_max_timestamp: i64,
}

impl IndexBuilder {
    pub(crate) fn new(base: i64) -> Self {
        Self {
            index: OffsetIndex::new(base),
            time_index: TimeIndex::new(base),
            bytes_since_index: 0,
            size: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: base,
        }
    }

    pub(crate) fn add(&mut self, header: &crate::format::batch::BatchHeader, position: u64, interval: u64) {
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        if position > 0 && self.bytes_since_index >= interval {
            self.index.append(header.base_offset, position);
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += header.total_bytes() as u64;
        self.size = position + header.total_bytes() as u64;
    }

    pub(crate) fn finish(mut self) -> (OffsetIndex, TimeIndex) {
        if self.max_timestamp >= 0 {
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
        }
        (self.index, self.time_index)
    }
}

/// Writes a checkpoint file (text) atomically and durably.
pub(crate) async fn write_checkpoint<D: Disk>(disk: &D, dir: &Path, name: &str, contents: String) -> LogResult<()> {
    Ok(write_file_atomically(disk, dir, name, contents.into_bytes()).await?)
}

pub(crate) async fn read_checkpoint<D: Disk>(disk: &D, dir: &Path, name: &str) -> Option<String> {
    let bytes = read_whole(disk, &dir.join(name)).await.ok()??;
    String::from_utf8(bytes).ok()
}

/// Removes the files of the segments at `bases` (those present) and makes
/// the removal durable.
pub(crate) async fn remove_segments<D: Disk>(disk: &D, dir: &Path, bases: &[i64]) -> LogResult<()> {
    for &base in bases {
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let path = segment_file(dir, base, suffix);
            if disk.exists(&path) {
                disk.remove_file(&path).await?;
            }
        }
    }
    if !bases.is_empty() {
        disk.sync_dir(dir).await?;
    }
    Ok(())
}
