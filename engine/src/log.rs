//! The partition log: the one object through which a partition's shard
//! appends, reads, flushes, truncates and expires data.
//!
//! A [`Log`] lives on the shard that owns the partition and is never touched
//! by another core (no locks; `Rc`/`RefCell` state that is never borrowed
//! across an await). Appends validate and copy batches into the O_DIRECT tail
//! synchronously; a writer task on the same shard drains the tail to disk
//! and runs group commit: one fdatasync covers every batch written since the
//! previous one. Callers wait separately for "written" (survives a process
//! crash: acks=1) and "durable" (fdatasync'ed: acks=all).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::batch::{assign_offsets, validate_batch, BatchHeader};
use crate::cache::{CacheKey, SharedBatchCache};
use crate::config::LogConfig;
use crate::disk::Disk;
use crate::epoch_cache::LeaderEpochCache;
use crate::error::{LogError, LogResult};
use crate::event::LocalEvent;
use crate::segment::Segment;
use crate::state::{HighWatermarkPolicy, PartitionOffsets};
use crate::tail::TailBuffer;

/// File holding the log start offset (DeleteRecords, retention).
pub const LOG_START_FILE: &str = "log-start-offset";
/// Kafka's leader epoch checkpoint file.
pub const EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// Present only after a clean close.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

/// Everything a log needs besides its directory and disk.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Topic-level configuration.
    pub config: LogConfig,
    /// What the high watermark follows.
    pub policy: HighWatermarkPolicy,
    /// The shard's batch cache.
    pub cache: SharedBatchCache,
    /// This partition's key in the shard's cache.
    pub cache_key: CacheKey,
}

/// What an append assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// Largest record timestamp in the appended batches.
    pub max_timestamp: i64,
    /// Log start offset at the time of the append.
    pub log_start: i64,
}

/// Whole batches returned by a read, with the offsets at read time.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    /// Whole record batches, in offset order, as stored.
    pub batches: Vec<Bytes>,
    /// High watermark.
    pub high_watermark: i64,
    /// Log start offset.
    pub log_start: i64,
    /// Log end offset.
    pub log_end: i64,
}

impl ReadResult {
    /// Total bytes of the returned batches.
    pub fn total_bytes(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

/// The active segment's write side.
#[derive(Debug)]
pub(crate) struct ActiveTail<D: Disk> {
    pub base_offset: i64,
    pub direct_file: Rc<D::File>,
    pub index_file: Rc<D::File>,
    pub time_index_file: Rc<D::File>,
    pub tail: TailBuffer,
    /// Bytes of the data file reserved with fallocate so far.
    pub allocated: u64,
}

impl<D: Disk> ActiveTail<D> {
    /// The write side of segment `base_offset` from its opened files.
    pub(crate) fn new(base_offset: i64, files: crate::open::SegmentFiles<D>, tail: TailBuffer) -> Self {
        ActiveTail {
            base_offset,
            direct_file: files.direct,
            index_file: files.index,
            time_index_file: files.time_index,
            tail,
            allocated: files.allocated,
        }
    }
}

/// A rolled segment whose tail is still being written.
#[derive(Debug)]
pub(crate) struct SealingTail<D: Disk> {
    pub active: ActiveTail<D>,
    pub final_size: u64,
}

pub(crate) struct State<D: Disk> {
    pub offsets: PartitionOffsets,
    pub segments: BTreeMap<i64, Segment<D>>,
    pub active: ActiveTail<D>,
    pub sealing: VecDeque<SealingTail<D>>,
    pub epochs: LeaderEpochCache,
    /// Bumped whenever the epoch cache or log start changes.
    pub metadata_version: u64,
    /// Version handed to the writer for persisting.
    pub metadata_taken: u64,
    /// Version known to be durable in the checkpoint files.
    pub metadata_persisted: u64,
    pub poisoned: Option<String>,
    pub closed: bool,
    /// A roll or truncation is changing segments: appends wait.
    pub exclusive: bool,
    pub durable_wanted: i64,
    pub unsynced_files: Vec<Rc<D::File>>,
    pub messages_since_sync: u64,
    pub last_sync: Instant,
    pub writer_running: bool,
    /// An fdatasync task is running (overlapping the next writes).
    pub sync_in_flight: bool,
    /// The writer task is executing a job (write, seal, index or checkpoint).
    pub writer_busy: bool,
    /// Bumped by every truncation (syncs and waiters started before it
    /// must not count offsets re-appended after it).
    pub truncations: u64,
}

pub(crate) struct Inner<D: Disk> {
    pub disk: D,
    pub dir: PathBuf,
    pub options: LogOptions,
    pub state: RefCell<State<D>>,
    /// Offsets moved, room freed, segments changed, or the log was poisoned.
    pub changed: LocalEvent,
    /// Work for the writer task.
    pub writer_wake: LocalEvent,
}

/// Handle to a partition log; clones share it. See the module documentation.
pub struct Log<D: Disk> {
    pub(crate) inner: Rc<Inner<D>>,
    _close_on_drop: Rc<CloseOnDrop<D>>,
}

impl<D: Disk> Clone for Log<D> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), _close_on_drop: self._close_on_drop.clone() }
    }
}

/// Stops the writer task when the last handle goes away.
struct CloseOnDrop<D: Disk>(Rc<Inner<D>>);

impl<D: Disk> Drop for CloseOnDrop<D> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.try_borrow_mut() {
            state.closed = true;
        }
        self.0.writer_wake.notify_all();
    }
}

impl<D: Disk> State<D> {
    pub fn check_open(&self) -> LogResult<()> {
        if let Some(reason) = &self.poisoned {
            return Err(LogError::Poisoned(reason.clone()));
        }
        if self.closed {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    pub fn active_segment(&self) -> &Segment<D> {
        self.segments.get(&self.active.base_offset).expect("active segment is in the map")
    }

    pub fn active_segment_mut(&mut self) -> &mut Segment<D> {
        let base = self.active.base_offset;
        self.segments.get_mut(&base).expect("active segment is in the map")
    }

    pub fn poison(&mut self, reason: String) {
        if self.poisoned.is_none() {
            tracing::error!(%reason, "partition log poisoned; appends refused until reopened");
            self.poisoned = Some(reason);
        }
    }

    pub fn note_unsynced(&mut self, file: &Rc<D::File>) {
        if !self.unsynced_files.iter().any(|f| Rc::ptr_eq(f, file)) {
            self.unsynced_files.push(file.clone());
        }
    }

    fn needs_roll(&self, config: &LogConfig, bytes: u64, last_offset: i64, now_ms: i64) -> bool {
        let active = self.active_segment();
        if active.is_empty() {
            return false;
        }
        let too_big = active.size + bytes > config.segment_bytes;
        let too_old = config.segment_ms.is_some_and(|ms| now_ms.saturating_sub(active.created_ms) >= ms as i64);
        let offsets_overflow = last_offset - active.base_offset > i64::from(i32::MAX);
        too_big || too_old || offsets_overflow
    }
}

/// What an append must do before copying its batches.
enum Readiness {
    Ready,
    Roll,
    Wait,
}

/// Validates every batch in `records`; returns their positions and headers.
fn validate_all(records: &[u8], max_batch_bytes: usize) -> LogResult<Vec<(usize, BatchHeader)>> {
    let mut batches = Vec::new();
    let mut position = 0usize;
    while position < records.len() {
        let header = validate_batch(&records[position..], true)?;
        let size = header.total_bytes();
        if size > max_batch_bytes {
            return Err(LogError::BatchTooLarge { size, limit: max_batch_bytes });
        }
        batches.push((position, header));
        position += size;
    }
    if batches.is_empty() {
        return Err(crate::error::InvalidBatch::Truncated.into());
    }
    Ok(batches)
}

impl<D: Disk> Log<D> {
    pub(crate) fn from_inner(inner: Rc<Inner<D>>) -> Self {
        let guard = Rc::new(CloseOnDrop(inner.clone()));
        Self { inner, _close_on_drop: guard }
    }

    /// The directory holding this partition's files.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The configuration the log runs with.
    pub fn config(&self) -> &LogConfig {
        &self.inner.options.config
    }

    /// A snapshot of the partition's offsets.
    pub fn offsets(&self) -> PartitionOffsets {
        self.inner.state.borrow().offsets.clone()
    }

    /// Whether an I/O error has poisoned the log.
    pub fn is_poisoned(&self) -> bool {
        self.inner.state.borrow().poisoned.is_some()
    }

    /// The leader-epoch cache.
    pub fn leader_epochs(&self) -> LeaderEpochCache {
        self.inner.state.borrow().epochs.clone()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<i64> {
        self.inner.state.borrow().segments.keys().copied().collect()
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner.state.borrow().segments.values().map(|s| s.size).sum()
    }

    /// Appends one or more client batches (validated, then offsets assigned
    /// in place and stamped with `leader_epoch`). Returns once the batches
    /// are in the tail and readable by replicas; wait with
    /// [`wait_written`](Self::wait_written) or
    /// [`wait_durable`](Self::wait_durable) for the acknowledgement.
    pub async fn append(&self, mut records: BytesMut, leader_epoch: i32, now_ms: i64) -> LogResult<AppendInfo> {
        let config = &self.inner.options.config;
        let batches = validate_all(&records, config.max_batch_bytes)?;
        let total = records.len();
        let capacity = config.chunk_bytes * (config.max_pending_chunks - 1);
        if total > capacity {
            return Err(LogError::BatchTooLarge { size: total, limit: capacity });
        }
        let records_count: i64 = batches.iter().map(|(_, h)| i64::from(h.last_offset_delta) + 1).sum();
        loop {
            let listen = self.inner.changed.listen();
            match self.append_readiness(total, records_count, now_ms)? {
                Readiness::Ready => break,
                Readiness::Roll => self.roll(now_ms).await?,
                Readiness::Wait => listen.await,
            }
        }
        let info = self.append_now(&mut records, &batches, leader_epoch);
        if self.inner.options.policy == HighWatermarkPolicy::Durable {
            // The high watermark follows durability: every append asks for
            // a group commit, whoever (if anyone) waits for it.
            let mut state = self.inner.state.borrow_mut();
            state.durable_wanted = state.durable_wanted.max(info.last_offset + 1);
        }
        self.insert_into_cache(records.freeze(), &batches, info.base_offset);
        self.inner.writer_wake.notify_all();
        Ok(info)
    }

    fn append_readiness(&self, total: usize, records_count: i64, now_ms: i64) -> LogResult<Readiness> {
        let state = self.inner.state.borrow();
        state.check_open()?;
        if state.exclusive {
            return Ok(Readiness::Wait);
        }
        let last_offset = state.offsets.log_end + records_count - 1;
        if state.needs_roll(&self.inner.options.config, total as u64, last_offset, now_ms) {
            return Ok(Readiness::Roll);
        }
        if state.active.tail.has_room_for(total) {
            return Ok(Readiness::Ready);
        }
        Ok(Readiness::Wait)
    }

    fn append_now(&self, records: &mut BytesMut, batches: &[(usize, BatchHeader)], leader_epoch: i32) -> AppendInfo {
        let mut state = self.inner.state.borrow_mut();
        let interval = self.inner.options.config.index_interval_bytes;
        let base_offset = state.offsets.log_end;
        if state.epochs.assign(leader_epoch, base_offset) {
            state.metadata_version += 1;
        }
        let mut next = base_offset;
        let mut max_timestamp = -1;
        for (position, header) in batches {
            let bytes = &mut records[*position..*position + header.total_bytes()];
            assign_offsets(bytes, next, leader_epoch);
            let assigned = BatchHeader { base_offset: next, partition_leader_epoch: leader_epoch, ..*header };
            next = assigned.next_offset();
            max_timestamp = max_timestamp.max(assigned.max_timestamp);
            state.active.tail.append(bytes, next);
            let at = state.active_segment().size;
            state.active_segment_mut().record_batch(&assigned, at, interval);
            state.messages_since_sync += (i64::from(header.last_offset_delta) + 1) as u64;
        }
        state.offsets.log_end = next;
        state.offsets.check();
        AppendInfo { base_offset, last_offset: next - 1, max_timestamp, log_start: state.offsets.log_start }
    }

    fn insert_into_cache(&self, records: Bytes, batches: &[(usize, BatchHeader)], base_offset: i64) {
        let mut cache = self.inner.options.cache.borrow_mut();
        let mut next = base_offset;
        for (position, header) in batches {
            let end = next + i64::from(header.last_offset_delta) + 1;
            let bytes = records.slice(*position..*position + header.total_bytes());
            cache.insert(self.inner.options.cache_key, next, end, bytes);
            next = end;
        }
    }

    /// Starts a new segment at the log end offset; the old one is sealed by
    /// the writer once its tail is on disk.
    async fn roll(&self, now_ms: i64) -> LogResult<()> {
        let base = {
            let mut state = self.inner.state.borrow_mut();
            if state.exclusive {
                return Ok(());
            }
            state.exclusive = true;
            state.offsets.log_end
        };
        let opened =
            crate::open::open_segment_files(&self.inner.disk, &self.inner.dir, base, &self.inner.options.config).await;
        let mut state = self.inner.state.borrow_mut();
        state.exclusive = false;
        self.inner.changed.notify_all();
        state.check_open()?;
        let files = match opened {
            Ok(files) => files,
            Err(error) => {
                state.poison(format!("cannot roll segment {base}: {error}"));
                return Err(error);
            }
        };
        let tail = TailBuffer::new(
            self.inner.options.config.chunk_bytes,
            self.inner.options.config.max_pending_chunks,
            0,
            &[],
        );
        let read_file = files.read.clone();
        let new_active = ActiveTail::new(base, files, tail);
        let old = std::mem::replace(&mut state.active, new_active);
        let final_size = state.segments.get(&old.base_offset).map_or(0, |s| s.size);
        state.sealing.push_back(SealingTail { active: old, final_size });
        state.segments.insert(base, Segment::new(base, read_file, now_ms));
        tracing::debug!(dir = %self.inner.dir.display(), base, "rolled segment");
        drop(state);
        self.inner.writer_wake.notify_all();
        Ok(())
    }

    async fn wait_for(&self, target: i64, reached: impl Fn(&PartitionOffsets) -> bool) -> LogResult<()> {
        let truncations = self.inner.state.borrow().truncations;
        loop {
            let listen = self.inner.changed.listen();
            {
                let state = self.inner.state.borrow();
                if state.truncations != truncations {
                    // The awaited offsets may have been replaced by others.
                    return Err(LogError::Truncated { offset: target });
                }
                if reached(&state.offsets) {
                    return Ok(());
                }
                if state.offsets.log_end < target {
                    return Err(LogError::Truncated { offset: target });
                }
                if let Some(reason) = &state.poisoned {
                    return Err(LogError::Poisoned(reason.clone()));
                }
                if !state.writer_running {
                    return Err(LogError::Closed);
                }
            }
            listen.await;
        }
    }

    /// Waits until every offset below `offset` is written to the file.
    pub async fn wait_written(&self, offset: i64) -> LogResult<()> {
        self.wait_for(offset, |o| o.written >= offset).await
    }

    /// Waits until every offset below `offset` is fdatasync'ed.
    pub async fn wait_durable(&self, offset: i64) -> LogResult<()> {
        {
            let mut state = self.inner.state.borrow_mut();
            if state.offsets.durable < offset {
                state.durable_wanted = state.durable_wanted.max(offset);
                self.inner.writer_wake.notify_all();
            }
        }
        self.wait_for(offset, |o| o.durable >= offset).await
    }

    /// Waits until every offset appended so far is durable.
    pub async fn flush(&self) -> LogResult<()> {
        let end = self.inner.state.borrow().offsets.log_end;
        self.wait_durable(end).await
    }

    /// Moves the high watermark forward (replication; capped at the LEO).
    pub fn advance_high_watermark(&self, to: i64) {
        self.inner.state.borrow_mut().offsets.advance_high_watermark(to);
        self.inner.changed.notify_all();
    }

    /// Waits until the offsets change in any way (for long-poll fetches).
    pub async fn changed(&self) {
        self.inner.changed.listen().await
    }
}
