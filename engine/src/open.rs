//! Opening a partition log: finding its segments, recovering after a crash
//! (scan from the last index entry, validate each batch, truncate at the
//! first invalid byte), rebuilding missing or corrupt indexes, and the small
//! checkpoint files. Runs on the partition's shard when the log is opened.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use crate::aligned::page_floor;
use crate::disk::{Disk, DiskFile, OpenMode};
use crate::epoch_cache::LeaderEpochCache;
use crate::error::{LogError, LogResult};
use crate::event::LocalEvent;
use crate::index::{OffsetIndex, TimeIndex, TIME_ENTRY_BYTES};
use crate::log::{
    ActiveTail, Inner, Log, LogOptions, State, CLEAN_SHUTDOWN_FILE, EPOCH_CHECKPOINT_FILE, LOG_START_FILE,
};
use crate::scan::{scan_batches, ScanCheck};
use crate::segment::{parse_segment_name, segment_file, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use crate::state::PartitionOffsets;
use crate::tail::TailBuffer;

/// Largest batch recovery accepts: a hard bound, not the topic's current
/// `max.message.bytes` (which may have been lowered since the data was
/// written).
const RECOVERY_MAX_BATCH_BYTES: usize = i32::MAX as usize;

/// Base offset of the first segment that may hold unsynced data.
pub const RECOVERY_POINT_FILE: &str = "recovery-point";

/// Largest step of space reserved ahead of the write position.
pub const PREALLOCATE_STEP_BYTES: u64 = 64 << 20;

/// How far to reserve a segment's data file when `end` bytes are needed:
/// steps that double with the segment (1 MiB to 64 MiB ahead), so an idle
/// partition reserves little and a busy one rarely calls fallocate.
pub(crate) fn preallocation_target(config: &crate::config::LogConfig, end: u64) -> u64 {
    let step = end.clamp(1 << 20, PREALLOCATE_STEP_BYTES);
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

/// Opens (creating when missing) the files of an appendable segment,
/// preallocates the data file and makes the directory entries durable.
pub(crate) async fn open_segment_files<D: Disk>(
    disk: &D,
    dir: &Path,
    base: i64,
    config: &crate::config::LogConfig,
) -> LogResult<SegmentFiles<D>> {
    let log_path = segment_file(dir, base, LOG_SUFFIX);
    let direct = disk.open(&log_path, OpenMode::DirectWrite).await?;
    let read = disk.open(&log_path, OpenMode::Read).await?;
    let index = disk.open(&segment_file(dir, base, INDEX_SUFFIX), OpenMode::ReadWrite).await?;
    let time_index = disk.open(&segment_file(dir, base, TIME_INDEX_SUFFIX), OpenMode::ReadWrite).await?;
    let mut allocated = 0;
    if config.preallocate {
        allocated = preallocation_target(config, direct.len().await?);
        direct.allocate(allocated).await?;
    }
    disk.sync_dir(dir).await?;
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

async fn read_whole<D: Disk>(disk: &D, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    if !disk.exists(path) {
        return Ok(None);
    }
    let file = disk.open(path, OpenMode::Read).await?;
    let len = file.len().await?;
    if len > 64 << 20 {
        return Ok(None);
    }
    Ok(Some(file.read_at(len as usize, 0).await?))
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
struct IndexBuilder {
    index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index: u64,
    size: u64,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
}

impl IndexBuilder {
    fn new(base: i64) -> Self {
        Self {
            index: OffsetIndex::new(base),
            time_index: TimeIndex::new(base),
            bytes_since_index: 0,
            size: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: base,
        }
    }

    fn add(&mut self, header: &crate::batch::BatchHeader, position: u64, interval: u64) {
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

    fn finish(mut self) -> (OffsetIndex, TimeIndex) {
        if self.max_timestamp >= 0 {
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
        }
        (self.index, self.time_index)
    }
}

/// Writes a small file atomically and durably: temp file, fdatasync, rename,
/// directory sync.
pub(crate) async fn write_checkpoint<D: Disk>(disk: &D, dir: &Path, name: &str, contents: String) -> LogResult<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let file = disk.open(&tmp, OpenMode::ReadWrite).await?;
    let len = contents.len() as u64;
    let compio::buf::BufResult(result, _) = file.write_all_at(contents.into_bytes(), 0).await;
    result?;
    file.set_len(len).await?;
    file.sync_data().await?;
    disk.rename(&tmp, &dir.join(name)).await?;
    disk.sync_dir(dir).await?;
    Ok(())
}

async fn read_checkpoint<D: Disk>(disk: &D, dir: &Path, name: &str) -> Option<String> {
    let bytes = read_whole(disk, &dir.join(name)).await.ok()??;
    String::from_utf8(bytes).ok()
}

/// What recovery found on disk for the sealed segments.
struct Discovered<D: Disk> {
    segments: BTreeMap<i64, Segment<D>>,
}

impl<D: Disk> Log<D> {
    /// Opens the log in `dir` (creating it when empty), recovering from a
    /// crash if the last close was not clean. Spawns the writer task on the
    /// current compio runtime (this shard).
    pub async fn open(disk: D, dir: &Path, options: LogOptions, now_ms: i64) -> LogResult<Log<D>> {
        options.config.validate().map_err(|key| LogError::Corrupt(format!("invalid config {key}")))?;
        let existed = disk.exists(dir);
        disk.create_dir_all(dir)?;
        if !existed {
            if let Some(parent) = dir.parent() {
                disk.sync_dir(parent).await?;
            }
        }
        let clean = disk.exists(&dir.join(CLEAN_SHUTDOWN_FILE));
        if clean {
            disk.remove_file(&dir.join(CLEAN_SHUTDOWN_FILE)).await?;
            disk.sync_dir(dir).await?;
        }
        let mut bases: Vec<i64> = disk.list_dir(dir)?.iter().filter_map(|n| parse_segment_name(n)).collect();
        bases.sort_unstable();
        let had_segments = !bases.is_empty();
        let recovery_point = match clean {
            true => i64::MAX,
            false => read_checkpoint(&disk, dir, RECOVERY_POINT_FILE)
                .await
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(i64::MIN),
        };
        let config = &options.config;
        let mut discovered = Discovered { segments: BTreeMap::new() };
        let last = bases.last().copied();
        for (i, &base) in bases.iter().enumerate() {
            if Some(base) == last {
                break;
            }
            let next_base = bases[i + 1];
            let stop =
                open_sealed(&disk, dir, base, next_base, base >= recovery_point, config, &mut discovered).await?;
            if stop {
                // A torn sealed segment: nothing after it was ever durable.
                for &later in &bases[i + 1..] {
                    remove_segment_files(&disk, dir, later).await?;
                }
                bases.truncate(i + 1);
                break;
            }
        }
        let log_start_checkpoint: i64 =
            read_checkpoint(&disk, dir, LOG_START_FILE).await.and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let active_base = match discovered.segments.keys().next_back() {
            Some(_) if bases.len() == discovered.segments.len() => {
                // The last surviving segment was sealed: reopen it for appends.
                let base = *bases.last().unwrap_or(&0);
                discovered.segments.remove(&base);
                base
            }
            _ => bases.last().copied().unwrap_or_else(|| log_start_checkpoint.max(0)),
        };
        let mut active_base = active_base;
        let mut files = open_segment_files(&disk, dir, active_base, config).await?;
        let (mut segment, mut tail, epochs_seen) = recover_active(&files, active_base, config, now_ms, !clean).await?;
        if log_start_checkpoint > segment.next_offset {
            // Everything held is below the log start (truncated or deleted
            // past its end): start afresh at the log start, as Kafka does.
            let mut all: Vec<i64> = discovered.segments.keys().copied().collect();
            all.push(active_base);
            discovered.segments.clear();
            drop((segment, tail, files));
            for base in all {
                remove_segment_files(&disk, dir, base).await?;
            }
            active_base = log_start_checkpoint;
            files = open_segment_files(&disk, dir, active_base, config).await?;
            (segment, tail, _) = recover_active(&files, active_base, config, now_ms, false).await?;
        }
        let log_end = segment.next_offset;
        discovered.segments.insert(active_base, segment);
        let first_base = *discovered.segments.keys().next().unwrap_or(&active_base);
        let log_start = log_start_checkpoint.clamp(first_base, log_end);
        let mut epochs = read_checkpoint(&disk, dir, EPOCH_CHECKPOINT_FILE)
            .await
            .and_then(|text| LeaderEpochCache::decode(&text))
            .unwrap_or_default();
        epochs.truncate_from_end(log_end);
        for (epoch, offset) in epochs_seen {
            epochs.assign(epoch, offset);
        }
        let mut offsets = PartitionOffsets::recovered(log_start, log_end);
        offsets.follow(options.policy);
        if !clean && had_segments {
            tracing::info!(dir = %dir.display(), log_start, log_end, "recovered partition log after unclean shutdown");
        }
        let state = State {
            offsets,
            segments: discovered.segments,
            active: ActiveTail::new(active_base, files, tail),
            sealing: VecDeque::new(),
            epochs,
            metadata_version: 1,
            metadata_taken: 0,
            metadata_persisted: 0,
            poisoned: None,
            closed: false,
            exclusive: false,
            durable_wanted: log_end,
            unsynced_files: Vec::new(),
            messages_since_sync: 0,
            last_sync: Instant::now(),
            writer_running: true,
            sync_in_flight: false,
            writer_busy: false,
            truncations: 0,
        };
        let inner = Rc::new(Inner {
            disk,
            dir: dir.to_path_buf(),
            options,
            state: RefCell::new(state),
            changed: LocalEvent::default(),
            writer_wake: LocalEvent::default(),
        });
        compio::runtime::spawn(crate::writer::run(inner.clone())).detach();
        Ok(Log::from_inner(inner))
    }
}

async fn remove_segment_files<D: Disk>(disk: &D, dir: &Path, base: i64) -> LogResult<()> {
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let path = segment_file(dir, base, suffix);
        if disk.exists(&path) {
            disk.remove_file(&path).await?;
        }
    }
    disk.sync_dir(dir).await?;
    Ok(())
}

/// Registers a sealed segment. Segments past the recovery point are scanned
/// with CRC checks; returns true when one is torn (and was truncated).
async fn open_sealed<D: Disk>(
    disk: &D,
    dir: &Path,
    base: i64,
    next_base: i64,
    needs_recovery: bool,
    config: &crate::config::LogConfig,
    discovered: &mut Discovered<D>,
) -> LogResult<bool> {
    let read = Rc::new(disk.open(&segment_file(dir, base, LOG_SUFFIX), OpenMode::Read).await?);
    let file_len = read.len().await?;
    let mut segment = Segment::new(base, read.clone(), 0);
    segment.index = None;
    segment.time_index = None;
    segment.next_offset = next_base;
    segment.size = file_len;
    let mut torn = false;
    if needs_recovery {
        let mut builder = IndexBuilder::new(base);
        let end =
            scan_batches(&*read, 0, base, file_len, RECOVERY_MAX_BATCH_BYTES, ScanCheck::Crc, |position, header| {
                builder.add(header, position, config.index_interval_bytes);
                true
            })
            .await?;
        segment.size = end.position;
        segment.next_offset = end.next_offset;
        torn = end.stopped_early || end.next_offset != next_base;
        if end.position < file_len {
            let writable = disk.open(&segment_file(dir, base, LOG_SUFFIX), OpenMode::ReadWrite).await?;
            writable.set_len(end.position).await?;
            writable.sync_data().await?;
        }
        segment.max_timestamp = builder.max_timestamp;
        segment.offset_of_max_timestamp = builder.offset_of_max_timestamp;
        let (index, time_index) = builder.finish();
        write_indexes(disk, dir, base, &index, &time_index).await?;
        segment.index = Some(index);
        segment.time_index = Some(time_index);
    } else {
        let (max_timestamp, offset) = last_time_entry(disk, dir, base, next_base, file_len, config).await?;
        segment.max_timestamp = max_timestamp;
        segment.offset_of_max_timestamp = offset;
    }
    discovered.segments.insert(base, segment);
    Ok(torn)
}

/// The segment's max timestamp from the last time index entry, rebuilding
/// the indexes when the time index is missing or corrupt.
async fn last_time_entry<D: Disk>(
    disk: &D,
    dir: &Path,
    base: i64,
    next_base: i64,
    file_len: u64,
    config: &crate::config::LogConfig,
) -> LogResult<(i64, i64)> {
    let path = segment_file(dir, base, TIME_INDEX_SUFFIX);
    if disk.exists(&path) {
        let file = disk.open(&path, OpenMode::Read).await?;
        let len = file.len().await?;
        if len >= TIME_ENTRY_BYTES as u64 && len % TIME_ENTRY_BYTES as u64 == 0 {
            let bytes = file.read_at(TIME_ENTRY_BYTES, len - TIME_ENTRY_BYTES as u64).await?;
            if let Ok(index) = TimeIndex::decode(base, &bytes) {
                if let Some(last) = index.last().filter(|&(_, offset)| offset < next_base) {
                    return Ok(last);
                }
            }
        }
    }
    tracing::info!(dir = %dir.display(), base, "rebuilding missing or corrupt time index");
    let data = disk.open(&segment_file(dir, base, LOG_SUFFIX), OpenMode::Read).await?;
    let (index, time_index) =
        rebuild_indexes(&data, base, file_len, config.index_interval_bytes, RECOVERY_MAX_BATCH_BYTES).await?;
    write_indexes(disk, dir, base, &index, &time_index).await?;
    Ok(time_index.last().unwrap_or((-1, base)))
}

/// Recovers the active segment: loads its index, verifies the last entries
/// point at valid batches, scans (with CRC) from there to the first invalid
/// byte, truncates the file there and rebuilds the tail buffer.
async fn recover_active<D: Disk>(
    files: &SegmentFiles<D>,
    base: i64,
    config: &crate::config::LogConfig,
    now_ms: i64,
    sync_after: bool,
) -> LogResult<(Segment<D>, TailBuffer, Vec<(i32, i64)>)> {
    let file_len = files.read.len().await?;
    let index_len = files.index.len().await?;
    let index_bytes = files.index.read_at(index_len.min(64 << 20) as usize, 0).await?;
    let mut index = OffsetIndex::decode(base, &index_bytes, file_len.max(1)).unwrap_or_else(|_| OffsetIndex::new(base));
    let time_len = files.time_index.len().await?;
    let time_bytes = files.time_index.read_at(time_len.min(64 << 20) as usize, 0).await?;
    let mut time_index = TimeIndex::decode(base, &time_bytes).unwrap_or_else(|_| TimeIndex::new(base));
    let (start_offset, start_position) = verified_start(&*files.read, &mut index, base, file_len).await?;
    time_index.truncate_to_offset(start_offset);
    let mut segment = Segment::new(base, files.read.clone(), now_ms);
    segment.size = start_position;
    segment.next_offset = start_offset;
    if let Some((ts, offset)) = time_index.last() {
        segment.max_timestamp = ts;
        segment.offset_of_max_timestamp = offset;
    }
    segment.persisted_index_entries = index.len();
    segment.persisted_time_entries = time_index.len();
    segment.index = Some(index);
    segment.time_index = Some(time_index);
    let mut epochs_seen = Vec::new();
    let end = scan_batches(
        &*files.read,
        start_position,
        start_offset,
        file_len,
        RECOVERY_MAX_BATCH_BYTES,
        ScanCheck::Crc,
        |position, header| {
            segment.record_batch(header, position, config.index_interval_bytes);
            epochs_seen.push((header.partition_leader_epoch, header.base_offset));
            true
        },
    )
    .await?;
    debug_assert_eq!(end.position, segment.size);
    if end.position < file_len {
        files.direct.set_len(end.position).await?;
        if config.preallocate {
            files.direct.allocate(files.allocated.max(preallocation_target(config, end.position))).await?;
        }
    }
    if sync_after {
        // Whatever survived is made durable before anything new is acknowledged.
        files.direct.sync_data().await?;
    }
    files.index.set_len((segment.persisted_index_entries * crate::index::OFFSET_ENTRY_BYTES) as u64).await?;
    files.time_index.set_len((segment.persisted_time_entries * TIME_ENTRY_BYTES) as u64).await?;
    let page_start = page_floor(end.position);
    let partial = files.read.read_at((end.position - page_start) as usize, page_start).await?;
    if partial.len() as u64 != end.position - page_start {
        return Err(LogError::Corrupt("active segment shorter than recovered".into()));
    }
    let tail = TailBuffer::new(config.chunk_bytes, config.max_pending_chunks, end.position, &partial);
    Ok((segment, tail, epochs_seen))
}

/// Walks back from the last offset index entry until one points at a batch
/// with the indexed base offset and a valid CRC; drops the rest.
async fn verified_start<F: DiskFile>(
    file: &F,
    index: &mut OffsetIndex,
    base: i64,
    file_len: u64,
) -> LogResult<(i64, u64)> {
    while let Some((offset, position)) = index.last() {
        let header = file.read_at(crate::batch::BATCH_HEADER_BYTES, position).await?;
        if let Ok(parsed) = crate::batch::parse_header(&header) {
            let total = parsed.total_bytes() as u64;
            if parsed.base_offset == offset && position + total <= file_len {
                let bytes = file.read_at(total as usize, position).await?;
                if crate::batch::validate_batch(&bytes, false).is_ok() {
                    return Ok((offset, position));
                }
            }
        }
        index.truncate_to_offset(offset);
    }
    Ok((base, 0))
}
