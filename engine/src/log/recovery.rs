//! Opening a partition log: finding its segments, recovering after a crash
//! (scan from the last index entry, validate each batch, truncate at the
//! first invalid byte), rebuilding missing or corrupt indexes, and the small
//! checkpoint files. Runs on the partition's shard when the log is opened.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::rc::Rc;

use crate::log::epoch_cache::LeaderEpochCache;
use crate::log::error::{LogError, LogResult};
use crate::log::files::{
    open_segment_files, preallocation_target, read_checkpoint, rebuild_indexes, remove_segments, write_indexes,
    IndexBuilder, SegmentFiles, CLEAN_SHUTDOWN_FILE, EPOCH_CHECKPOINT_FILE, LOG_START_FILE, RECOVERY_MAX_BATCH_BYTES,
    RECOVERY_POINT_FILE,
};
use crate::log::index::{OffsetIndex, TimeIndex, TIME_ENTRY_BYTES};
use crate::log::offsets::PartitionOffsets;
use crate::log::options::LogOptions;
use crate::log::scan::{scan_batches, ScanCheck};
use crate::log::segment::{parse_segment_name, segment_file, Segment, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use crate::log::state::{ActiveTail, Inner, State};
use crate::log::tail::TailBuffer;
use crate::log::Log;
use crate::runtime::event::LocalEvent;
use crate::runtime::spawn::spawn_local;
use crate::storage::aligned::page_floor;
use crate::storage::disk::{Disk, DiskFile, OpenMode};

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
                    remove_segments(&disk, dir, &[later]).await?;
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
        let mut files = open_segment_files(&disk, dir, active_base).await?;
        let (mut segment, mut tail, epochs_seen) = recover_active(&files, active_base, config, now_ms, !clean).await?;
        if log_start_checkpoint > segment.next_offset {
            // Everything held is below the log start (truncated or deleted
            // past its end): start afresh at the log start, as Kafka does.
            let mut all: Vec<i64> = discovered.segments.keys().copied().collect();
            all.push(active_base);
            discovered.segments.clear();
            drop((segment, tail, files));
            for base in all {
                remove_segments(&disk, dir, &[base]).await?;
            }
            active_base = log_start_checkpoint;
            files = open_segment_files(&disk, dir, active_base).await?;
            (segment, tail, _) = recover_active(&files, active_base, config, now_ms, false).await?;
        }
        let log_end = segment.next_offset;
        let written_size = segment.size;
        discovered.segments.insert(active_base, segment);
        let first_base = *discovered.segments.keys().next().unwrap_or(&active_base);
        let log_start = log_start_checkpoint.clamp(first_base, log_end);
        let checkpointed_epochs = read_checkpoint(&disk, dir, EPOCH_CHECKPOINT_FILE).await;
        let decoded = checkpointed_epochs.as_deref().map(LeaderEpochCache::decode);
        let recorded = decoded.clone().flatten().unwrap_or_default();
        let mut epochs = recorded.clone();
        epochs.truncate_from_end(log_end);
        for (epoch, offset) in epochs_seen {
            epochs.assign(epoch, offset);
        }
        // The checkpoints are written again only when recovery changed what
        // they say, or one is unreadable (a missing file reads as the
        // default: no epochs, log start 0).
        let unreadable = matches!(decoded, Some(None));
        let metadata_changed = unreadable || epochs != recorded || log_start != log_start_checkpoint;
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
            metadata_version: u64::from(metadata_changed),
            metadata_taken: 0,
            metadata_persisted: 0,
            poisoned: None,
            closed: false,
            exclusive: false,
            durable_wanted: log_end,
            unsynced_files: Vec::new(),
            messages_since_sync: 0,
            last_sync_ms: options.clock.now_ms(),
            writer_running: true,
            sync_in_flight: false,
            writer_busy: false,
            writes: VecDeque::new(),
            next_write_id: 0,
            truncations: 0,
            written_position: (active_base, written_size),
            appended_since_idle_check: false,
            idle_wanted: false,
            settled: false,
            last_index_persist_ms: options.clock.now_ms(),
        };
        let inner = Rc::new(Inner {
            disk,
            dir: dir.to_path_buf(),
            options,
            state: RefCell::new(state),
            changed: LocalEvent::default(),
            writer_wake: LocalEvent::default(),
        });
        spawn_local(crate::log::writer::run(inner.clone()));
        Ok(Log::from_inner(inner))
    }
}

/// Registers a sealed segment. Segments past the recovery point are scanned
/// with CRC checks and fdatasynced; returns true when one is torn (and was
/// truncated).
async fn open_sealed<D: Disk>(
    disk: &D,
    dir: &Path,
    base: i64,
    next_base: i64,
    needs_recovery: bool,
    config: &crate::log::config::LogConfig,
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
        // Complete when its offsets reach the next segment's base; bytes
        // past its last batch are then the reservation a crash left before
        // the seal trimmed it (zeros), not a torn write.
        torn = end.next_offset != next_base;
        if end.position < file_len {
            let writable = disk.open(&segment_file(dir, base, LOG_SUFFIX), OpenMode::ReadWrite).await?;
            writable.set_len(end.position).await?;
        }
        // Past the recovery point the page cache may hold what no fdatasync
        // covered (a kill -9): make it durable before the high watermark
        // moves past it and a consumer reads it.
        read.sync_data().await?;
        segment.max_timestamp = builder.max_timestamp;
        segment.offset_of_max_timestamp = builder.offset_of_max_timestamp;
        let (index, time_index) = builder.finish();
        // Written, not kept: loaded on first use under the shard's budget.
        write_indexes(disk, dir, base, &index, &time_index).await?;
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
    config: &crate::log::config::LogConfig,
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
    config: &crate::log::config::LogConfig,
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
    files.index.set_len((segment.persisted_index_entries * crate::log::index::OFFSET_ENTRY_BYTES) as u64).await?;
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
        let header = file.read_at(crate::format::batch::BATCH_HEADER_BYTES, position).await?;
        if let Ok(parsed) = crate::format::batch::parse_header(&header) {
            let total = parsed.total_bytes() as u64;
            if parsed.base_offset == offset && position + total <= file_len {
                let bytes = file.read_at(total as usize, position).await?;
                if crate::format::batch::validate_batch(&bytes, false).is_ok() {
                    return Ok((offset, position));
                }
            }
        }
        index.truncate_to_offset(offset);
    }
    Ok((base, 0))
}
