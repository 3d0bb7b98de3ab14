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

pub mod cache;
pub mod config;
pub mod epoch_cache;
pub mod error;
pub(crate) mod files;
pub mod index;
pub mod index_budget;
mod maintenance;
pub mod offsets;
pub mod options;
mod read;
mod recovery;
pub mod scan;
pub mod segment;
pub(crate) mod state;
pub mod tail;
mod writer;

use std::path::Path;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use crate::format::batch::InvalidBatch;
use crate::format::batch::{assign_offsets, validate_batch, BatchHeader};
use crate::log::config::LogConfig;
use crate::log::epoch_cache::LeaderEpochCache;
use crate::log::error::{LogError, LogResult};
use crate::log::offsets::{HighWatermarkPolicy, PartitionOffsets};
use crate::log::segment::Segment;
use crate::log::state::{ActiveTail, Inner, SealingTail};
use crate::log::tail::TailBuffer;
use crate::storage::disk::Disk;

pub use crate::log::options::LogOptions;
pub use crate::log::writer::MAX_WRITES_IN_FLIGHT;

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

/// Whole batches left in a segment file whose pages are in the page cache:
/// what a socket send can take straight from the file (`splice`), with no
/// copy in user space. The file stays open while the range is held.
#[derive(Debug, Clone)]
pub struct FileRange {
    /// The segment file (a page-cache read descriptor).
    pub file: std::sync::Arc<std::fs::File>,
    /// Where the first batch starts.
    pub position: u64,
    /// Bytes of whole batches from `position`.
    pub len: usize,
    /// The offset after the last batch in the range.
    pub next_offset: i64,
}

/// Whole batches returned by a read, with the offsets at read time.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    /// Whole record batches, in offset order, as stored.
    pub batches: Vec<Bytes>,
    /// Instead of `batches`, for [`Log::read_resident`]: the same batches
    /// as a resident file range (then `batches` is empty).
    pub resident: Option<FileRange>,
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
        self.batches.iter().map(Bytes::len).sum::<usize>() + self.resident.as_ref().map_or(0, |r| r.len)
    }
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

/// What an append must do before copying its batches.
enum Readiness {
    Ready,
    Roll,
    Wait,
}

/// How an append places its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Leader: offsets assigned from the log end, stamped with this leader
    /// epoch.
    Leader {
        /// The leader epoch to stamp.
        leader_epoch: i32,
    },
    /// Follower: the batches keep the offsets and epochs the leader gave
    /// them; they must continue the log exactly.
    Follower,
}

/// Batches that passed validation, ready to append: their bytes, and each
/// batch's position and header.
#[derive(Debug)]
pub struct ValidBatches {
    records: BytesMut,
    batches: Vec<(usize, BatchHeader)>,
    records_count: i64,
}

impl ValidBatches {
    /// The batches' headers, in order.
    pub fn headers(&self) -> impl Iterator<Item = &BatchHeader> {
        self.batches.iter().map(|(_, header)| header)
    }

    /// Each batch's bytes with its header, in order.
    pub fn batches(&self) -> impl Iterator<Item = (&[u8], &BatchHeader)> {
        self.batches
            .iter()
            .map(|(position, header)| (&self.records[*position..position + header.total_bytes()], header))
    }

    /// The bytes of all batches.
    pub fn bytes(&self) -> &[u8] {
        &self.records
    }

    /// Number of batches.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// Always false: validation refuses an empty set.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Records in all batches.
    pub fn records_count(&self) -> i64 {
        self.records_count
    }
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
        return Err(InvalidBatch::Truncated.into());
    }
    Ok(batches)
}

/// Checks that follower batches continue the log at `log_end` with no gap
/// and no overlap, each starting where the previous one ended.
fn check_contiguous(batches: &[(usize, BatchHeader)], log_end: i64) -> LogResult<()> {
    let mut expected = log_end;
    for (_, header) in batches {
        if header.base_offset != expected {
            return Err(LogError::NotContiguous { expected, found: header.base_offset });
        }
        expected = header.next_offset();
    }
    Ok(())
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

    /// The disk the log lives on.
    pub fn disk(&self) -> &D {
        &self.inner.disk
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

    /// When nothing was appended since the previous call, gives back what
    /// the idle partition holds: the writer persists the active segment's
    /// remaining index entries, cuts its file to the page after its data
    /// (the reservation past it is given back) and releases the segment's
    /// write and index descriptors, once nothing is being written. Called
    /// periodically by the shard, so a partition idle for one to two
    /// periods holds no reservation and none of those descriptors.
    pub fn release_if_idle(&self) {
        let mut state = self.inner.state.borrow_mut();
        if std::mem::take(&mut state.appended_since_idle_check) || state.settled || state.idle_wanted {
            return;
        }
        state.idle_wanted = true;
        drop(state);
        self.inner.writer_wake.notify_all();
    }

    /// Bytes held by the tail's buffers (its memory while idle).
    pub fn tail_buffer_bytes(&self) -> usize {
        self.inner.state.borrow().active.tail.buffered_capacity()
    }

    /// Appends one or more client batches as the leader (validated, then
    /// offsets assigned in place and stamped with `leader_epoch`). Returns
    /// once the batches are in the tail and readable by replicas; wait with
    /// [`wait_written`](Self::wait_written) or
    /// [`wait_durable`](Self::wait_durable) for the acknowledgement.
    pub async fn append(&self, records: BytesMut, leader_epoch: i32, now_ms: i64) -> LogResult<AppendInfo> {
        let valid = self.validate(records)?;
        self.make_room(&valid, now_ms).await?;
        self.append_valid(valid, Placement::Leader { leader_epoch })
    }

    /// Appends a follower's batches with the offsets and epochs the leader
    /// gave them; they must start at the log end and be contiguous.
    pub async fn append_as_follower(&self, records: BytesMut, now_ms: i64) -> LogResult<AppendInfo> {
        let valid = self.validate(records)?;
        self.make_room(&valid, now_ms).await?;
        self.append_valid(valid, Placement::Follower)
    }

    /// Validates `records` (every batch: length, magic, CRC, record count,
    /// size limits) without appending anything.
    pub fn validate(&self, records: BytesMut) -> LogResult<ValidBatches> {
        let config = &self.inner.options.config;
        let batches = validate_all(&records, config.max_batch_bytes)?;
        let capacity = config.chunk_bytes * (config.max_pending_chunks - 1);
        if records.len() > capacity {
            return Err(LogError::BatchTooLarge { size: records.len(), limit: capacity });
        }
        let records_count = batches.iter().map(|(_, h)| i64::from(h.last_offset_delta) + 1).sum();
        Ok(ValidBatches { records, batches, records_count })
    }

    /// Waits until the tail has room for `valid` (rolling the segment when
    /// it is due). When this returns, [`append_valid`](Self::append_valid)
    /// succeeds if called before the caller awaits anything else: this is
    /// how a check (sequence numbers, contiguity) and the append that
    /// depends on it stay one step, with no lock.
    pub async fn make_room(&self, valid: &ValidBatches, now_ms: i64) -> LogResult<()> {
        loop {
            let listen = self.inner.changed.listen();
            match self.append_readiness(valid.records.len(), valid.records_count, now_ms)? {
                Readiness::Ready => return Ok(()),
                Readiness::Roll => self.roll(now_ms).await?,
                Readiness::Wait => listen.await,
            }
        }
    }

    /// Appends batches that [`make_room`](Self::make_room) made room for.
    /// Synchronous: nothing else runs on the shard between the check and
    /// the append.
    pub fn append_valid(&self, mut valid: ValidBatches, placement: Placement) -> LogResult<AppendInfo> {
        {
            let state = self.inner.state.borrow();
            state.check_open()?;
            assert!(!state.exclusive, "append_valid without make_room: segments are being changed");
            assert!(state.active.tail.has_room_for(valid.records.len()), "append_valid without make_room");
            if placement == Placement::Follower {
                check_contiguous(&valid.batches, state.offsets.log_end)?;
            }
        }
        let info = self.append_now(&mut valid.records, &valid.batches, placement);
        if self.inner.options.policy == HighWatermarkPolicy::Durable {
            // The high watermark follows durability: every append asks for
            // a group commit, whoever (if anyone) waits for it.
            let mut state = self.inner.state.borrow_mut();
            state.durable_wanted = state.durable_wanted.max(info.last_offset + 1);
        }
        self.insert_into_cache(valid.records.freeze(), &valid.batches, info.base_offset);
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

    fn append_now(&self, records: &mut BytesMut, batches: &[(usize, BatchHeader)], placement: Placement) -> AppendInfo {
        let mut state = self.inner.state.borrow_mut();
        let interval = self.inner.options.config.index_interval_bytes;
        let base_offset = state.offsets.log_end;
        let mut next = base_offset;
        let mut max_timestamp = -1;
        for (position, header) in batches {
            let bytes = &mut records[*position..*position + header.total_bytes()];
            let assigned = match placement {
                Placement::Leader { leader_epoch } => {
                    assign_offsets(bytes, next, leader_epoch);
                    BatchHeader { base_offset: next, partition_leader_epoch: leader_epoch, ..*header }
                }
                Placement::Follower => {
                    debug_assert_eq!(header.base_offset, next, "checked contiguous");
                    *header
                }
            };
            if state.epochs.assign(assigned.partition_leader_epoch, assigned.base_offset) {
                state.metadata_version += 1;
            }
            next = assigned.next_offset();
            max_timestamp = max_timestamp.max(assigned.max_timestamp);
            state.active.tail.append(bytes, next);
            let at = state.active_segment().size;
            state.active_segment_mut().record_batch(&assigned, at, interval);
            state.messages_since_sync += (i64::from(header.last_offset_delta) + 1) as u64;
        }
        assert!(next > base_offset, "an append moves the log end");
        state.appended_since_idle_check = true;
        state.idle_wanted = false;
        state.settled = false;
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
        let opened = crate::log::files::open_segment_files(&self.inner.disk, &self.inner.dir, base).await;
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
