//! The in-memory state of one partition log, shared by its handle
//! (`Log`), its writer task and its recovery: offsets,
//! segments, the write side of the active segment and of segments being
//! sealed, group-commit bookkeeping and the poison flag. Lives on the
//! partition's shard in a `RefCell` that is never borrowed across an await.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;

use crate::log::config::LogConfig;
use crate::log::epoch_cache::LeaderEpochCache;
use crate::log::error::{LogError, LogResult};
use crate::log::files::SegmentFiles;
use crate::log::offsets::PartitionOffsets;
use crate::log::options::LogOptions;
use crate::log::segment::Segment;
use crate::log::tail::TailBuffer;
use crate::runtime::event::LocalEvent;
use crate::storage::disk::Disk;

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
    pub(crate) fn new(base_offset: i64, files: SegmentFiles<D>, tail: TailBuffer) -> Self {
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
    /// Clock time (ms) of the last completed fdatasync (`flush.ms`).
    pub last_sync_ms: i64,
    pub writer_running: bool,
    /// An fdatasync task is running (overlapping the next writes).
    pub sync_in_flight: bool,
    /// The writer task is executing a job (write, seal, index or checkpoint).
    pub writer_busy: bool,
    /// Data writes handed to the disk and not yet retired, in the order
    /// they were issued (file order): `written` moves past one only once it
    /// and every earlier one completed.
    pub writes: VecDeque<PendingWrite<D>>,
    /// Identifies the next data write issued.
    pub next_write_id: u64,
    /// Bumped by every truncation (syncs and waiters started before it
    /// must not count offsets re-appended after it).
    pub truncations: u64,
    /// Where `offsets.written` ends on disk: (segment base, file
    /// position). Bytes past it in that segment (and in later ones) may be
    /// a later write that completed first, or a failed one's leftovers:
    /// reads from the files stop there ([`State::readable_size`]).
    pub written_position: (i64, u64),
    /// Something was appended since the last `Log::release_if_idle`.
    pub appended_since_idle_check: bool,
    /// The partition went idle: once nothing is being written, the writer
    /// persists the active segment's index entries, gives back the
    /// reservation past its data and releases the segment's descriptors.
    pub idle_wanted: bool,
    /// The writer did that, and nothing was appended since.
    pub settled: bool,
    /// Clock time of the last write of the active segment's index entries.
    pub last_index_persist_ms: i64,
}

/// A data write in flight (see [`State::writes`]).
pub struct PendingWrite<D: Disk> {
    /// Which write this is.
    pub id: u64,
    /// The file written.
    pub file: Rc<D::File>,
    /// The log end offset once this write and every earlier one are on
    /// disk, when it completes a batch.
    pub end_offset: Option<i64>,
    /// The segment written and where that batch ends in it.
    pub end_position: (i64, u64),
    /// Whether it completed (successfully).
    pub done: bool,
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

impl<D: Disk> crate::log::index_budget::IndexHolder for Inner<D> {
    fn unload_index(&self, base: i64) {
        // Borrowed means busy on this shard right now: keep it this time.
        let Ok(mut state) = self.state.try_borrow_mut() else { return };
        let sealed = base != state.active.base_offset && !state.sealing.iter().any(|s| s.active.base_offset == base);
        if let (true, Some(segment)) = (sealed, state.segments.get_mut(&base)) {
            segment.index = None;
            segment.time_index = None;
        }
    }
}

impl<D: Disk> Inner<D> {
    /// Counts the just-loaded indexes of sealed segment `base` in the
    /// shard's budget, dropping those of the least recently used beyond it.
    pub(crate) fn count_loaded_index(self: &std::rc::Rc<Self>, base: i64) {
        let bytes = {
            let state = self.state.borrow();
            let Some(segment) = state.segments.get(&base) else { return };
            segment.index.as_ref().map_or(0, |i| i.memory_bytes())
                + segment.time_index.as_ref().map_or(0, |t| t.memory_bytes())
        };
        let holder: std::rc::Weak<dyn crate::log::index_budget::IndexHolder> = std::rc::Rc::downgrade(self) as _;
        let evicted = self.options.indexes.borrow_mut().loaded(self.options.cache_key, base, bytes, holder);
        crate::log::index_budget::unload(evicted);
    }

    /// Stops counting the indexes of segments that are gone.
    pub(crate) fn forget_indexes(&self, bases: &[i64]) {
        let mut budget = self.options.indexes.borrow_mut();
        for &base in bases {
            budget.forget(self.options.cache_key, base);
        }
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

    /// Marks write `id` done and retires every completed write at the
    /// front of the queue: their files need a sync, and `written` moves to
    /// the last batch end among them.
    pub fn retire_write(&mut self, id: u64, policy: crate::log::offsets::HighWatermarkPolicy) {
        if let Some(write) = self.writes.iter_mut().find(|w| w.id == id) {
            write.done = true;
        }
        while let Some(write) = self.writes.pop_front() {
            if !write.done {
                self.writes.push_front(write);
                break;
            }
            self.note_unsynced(&write.file);
            if let Some(end) = write.end_offset {
                if end > self.offsets.written {
                    self.offsets.written = end;
                    self.written_position = write.end_position;
                    self.offsets.follow(policy);
                }
            }
        }
    }

    /// Bytes of segment `base` (of `size` bytes, ending at `next_offset`)
    /// that reads may take from its file: all of a segment before the one
    /// where `written` ends, up to `written` in that one, none after it
    /// unless `written` passed its end.
    pub fn readable_size(&self, base: i64, size: u64, next_offset: i64) -> u64 {
        let (written_base, written_position) = self.written_position;
        match base.cmp(&written_base) {
            std::cmp::Ordering::Less => size,
            std::cmp::Ordering::Equal => size.min(written_position),
            std::cmp::Ordering::Greater if next_offset <= self.offsets.written => size,
            std::cmp::Ordering::Greater => 0,
        }
    }

    pub fn note_unsynced(&mut self, file: &Rc<D::File>) {
        if !self.unsynced_files.iter().any(|f| Rc::ptr_eq(f, file)) {
            self.unsynced_files.push(file.clone());
        }
    }

    pub(crate) fn needs_roll(&self, config: &LogConfig, bytes: u64, last_offset: i64, now_ms: i64) -> bool {
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
