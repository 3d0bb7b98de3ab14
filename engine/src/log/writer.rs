//! The writer task of one partition log, spawned on the partition's shard.
//!
//! It drains the O_DIRECT tail to disk, up to [`MAX_WRITES_IN_FLIGHT`]
//! chunk writes at once (each its own task; a write that rewrites the
//! partial last page of an earlier one waits until no write is in flight),
//! retiring them in file order so `written` never passes a gap; it seals
//! rolled segments
//! (trim the preallocation, write their indexes, advance the recovery
//! point), and runs group commit: when anyone waits for durability (or
//! `flush.messages` / `flush.ms` say so), a sync task issues one fdatasync
//! per dirty file covering every batch written so far, while the writer
//! goes on writing what arrived meanwhile (the next sync covers that). Any
//! write or fdatasync error poisons the log; nothing is retried.

use std::rc::Rc;
use std::time::Duration;

use compio::buf::BufResult;

use crate::log::error::LogResult;
use crate::log::files::{write_checkpoint, EPOCH_CHECKPOINT_FILE, LOG_START_FILE, RECOVERY_POINT_FILE};
use crate::log::index::{OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES};
use crate::log::state::{Inner, PendingWrite, SealingTail, State};
use crate::log::tail::{TailBuffer, WriteJob};
use crate::runtime::clock::Clock;
use crate::runtime::spawn::spawn_local;
use crate::storage::aligned::AlignedBuf;
use crate::storage::disk::{Disk, DiskFile};

/// Chunk writes of one log in flight at once: a deeper disk queue than one
/// write at a time, bounded so a burst does not flood the device.
pub const MAX_WRITES_IN_FLIGHT: usize = 4;

/// New entries of the active segment's index (or time index) written at
/// once: with one entry per `index_interval_bytes` (4 KiB by default), a
/// partition's index files are written once per 128 KiB of data, and when
/// it goes idle, not at every fdatasync. A crash loses at most these
/// entries, which recovery rebuilds by scanning the data after the last
/// one on disk.
pub const INDEX_PERSIST_ENTRIES: usize = 32;

/// A partition that wrote its index entries less than this long ago keeps
/// the index descriptors open; one that writes them more rarely (a slow
/// partition) releases them after each write, so it holds one descriptor
/// (its data file) while it is written.
const INDEX_DESCRIPTORS_KEEP_MS: i64 = 1_000;

enum Job<D: Disk> {
    Write {
        file: Rc<D::File>,
        job: WriteJob,
        segment_base: i64,
    },
    Seal(SealingTail<D>),
    Sync {
        files: Vec<Rc<D::File>>,
        target: i64,
        messages: u64,
        generation: u64,
    },
    PersistIndex {
        index: Vec<u8>,
        index_at: u64,
        time: Vec<u8>,
        time_at: u64,
        entries: (usize, usize),
        /// Release the index descriptors afterwards.
        release: bool,
    },
    PersistMetadata {
        epochs: String,
        log_start: i64,
        version: u64,
    },
    /// The partition is idle: cut the active segment's file to `cut_to`
    /// (its data, page padded), giving back the reservation past it, then
    /// release the descriptors of its data (write side) and index files.
    Release {
        files: [Rc<D::File>; 3],
        segment_base: i64,
        cut_to: Option<u64>,
    },
    /// Nothing to do until woken, or until `flush_deadline_ms` (clock time).
    Idle {
        flush_deadline_ms: Option<i64>,
    },
    Exit,
}

/// Runs until the log is closed (everything written and synced) or poisoned.
pub(crate) async fn run<D: Disk>(inner: Rc<Inner<D>>) {
    loop {
        let listen = inner.writer_wake.listen();
        let job = next_job(&inner);
        let busy = !matches!(job, Job::Idle { .. } | Job::Exit);
        inner.state.borrow_mut().writer_busy = busy;
        let outcome = match job {
            Job::Exit => break,
            Job::Idle { flush_deadline_ms } => {
                idle(&*inner.options.clock, listen, flush_deadline_ms).await;
                Ok(())
            }
            Job::Write { file, job, segment_base } => start_write(&inner, file, job, segment_base).await,
            Job::Seal(sealing) => seal(&inner, sealing).await.map(|base| inner.count_loaded_index(base)),
            Job::Sync { files, target, messages, generation } => {
                spawn_local(sync_task(inner.clone(), files, target, messages, generation));
                Ok(())
            }
            Job::PersistIndex { index, index_at, time, time_at, entries, release } => {
                persist_index(&inner, index, index_at, time, time_at, entries, release).await
            }
            Job::PersistMetadata { epochs, log_start, version } => {
                persist_metadata(&inner, epochs, log_start, version).await
            }
            Job::Release { files, segment_base, cut_to } => release(&inner, files, segment_base, cut_to).await,
        };
        inner.state.borrow_mut().writer_busy = false;
        if let Err(error) = outcome {
            inner.state.borrow_mut().poison(error.to_string());
        }
        if busy {
            inner.changed.notify_all();
        }
    }
    inner.state.borrow_mut().writer_running = false;
    inner.changed.notify_all();
}

fn sync_due<D: Disk>(state: &State<D>, config: &crate::log::config::LogConfig, now_ms: i64) -> bool {
    let o = &state.offsets;
    if o.durable >= o.written {
        return false;
    }
    let wanted = state.durable_wanted > o.durable;
    let by_count = config.flush_messages.is_some_and(|n| state.messages_since_sync >= n);
    let by_time = config.flush_ms.is_some_and(|interval| now_ms - state.last_sync_ms >= interval as i64);
    wanted || by_count || by_time
}

fn next_job<D: Disk>(inner: &Inner<D>) -> Job<D> {
    let mut state = inner.state.borrow_mut();
    let config = &inner.options.config;
    if state.poisoned.is_some() {
        return Job::Exit;
    }
    if state.exclusive {
        // A roll or truncation is changing segments; it wakes us when done.
        return Job::Idle { flush_deadline_ms: None };
    }
    let now_ms = inner.options.clock.now_ms();
    if !state.sync_in_flight && sync_due(&state, config, now_ms) {
        return take_sync(&mut state);
    }
    let in_flight = state.writes.len();
    // A rolled segment is written out and sealed before the active one's
    // writes go on.
    let mut sealing_pending = false;
    if let Some(front) = state.sealing.front_mut() {
        sealing_pending = true;
        if let Some(job) = take_write(&mut front.active.tail, in_flight) {
            let file = front.active.direct_file.clone();
            return Job::Write { file, job, segment_base: front.active.base_offset };
        }
        if !front.active.tail.has_unwritten() && !front.active.tail.has_in_flight() {
            if let Some(sealing) = state.sealing.pop_front() {
                return Job::Seal(sealing);
            }
        }
    }
    if state.metadata_version > state.metadata_taken {
        state.metadata_taken = state.metadata_version;
        let version = state.metadata_version;
        return Job::PersistMetadata { epochs: state.epochs.encode(), log_start: state.offsets.log_start, version };
    }
    if !sealing_pending {
        if let Some(job) = take_write(&mut state.active.tail, in_flight) {
            let file = state.active.direct_file.clone();
            return Job::Write { file, job, segment_base: state.active.base_offset };
        }
    }
    if state.closed && state.offsets.durable < state.offsets.written && !state.sync_in_flight {
        return take_sync(&mut state);
    }
    if let Some(job) = index_to_persist(&mut state, now_ms) {
        return job;
    }
    if let Some(job) = idle_release(&mut state) {
        return job;
    }

    if state.closed && !state.sync_in_flight && state.writes.is_empty() {
        return Job::Exit;
    }
    let flush_deadline_ms = match config.flush_ms {
        Some(interval) if state.offsets.durable < state.offsets.written => Some(state.last_sync_ms + interval as i64),
        _ => None,
    };
    // Nothing to write: the tail's buffers go back to the shard's pool.
    state.active.tail.park();
    Job::Idle { flush_deadline_ms }
}

/// The tail's next write, when another may be in flight now: within
/// [`MAX_WRITES_IN_FLIGHT`], and alone when it rewrites a partial page.
fn take_write(tail: &mut TailBuffer, in_flight: usize) -> Option<WriteJob> {
    if in_flight >= MAX_WRITES_IN_FLIGHT || (in_flight > 0 && tail.next_write_rewrites_partial_page()) {
        return None;
    }
    tail.take_write()
}

fn take_sync<D: Disk>(state: &mut State<D>) -> Job<D> {
    state.sync_in_flight = true;
    let files = std::mem::take(&mut state.unsynced_files);
    Job::Sync {
        files,
        target: state.offsets.written,
        messages: state.messages_since_sync,
        generation: state.truncations,
    }
}

/// New entries of the active segment's indexes that point at durable data,
/// once there are [`INDEX_PERSIST_ENTRIES`] of them or the partition went
/// idle.
fn index_to_persist<D: Disk>(state: &mut State<D>, now_ms: i64) -> Option<Job<D>> {
    let durable = state.offsets.durable;
    let segment = state.active_segment();
    let index = segment.index.as_ref()?;
    let time_index = segment.time_index.as_ref()?;
    let (index_from, time_from) = (segment.persisted_index_entries, segment.persisted_time_entries);
    if index.len() <= index_from && time_index.len() <= time_from {
        return None;
    }
    let index_upto = index.count_below(durable).max(index_from);
    let time_upto = time_index.count_below(durable).max(time_from);
    if index_upto == index_from && time_upto == time_from {
        return None;
    }
    let enough = index_upto - index_from >= INDEX_PERSIST_ENTRIES || time_upto - time_from >= INDEX_PERSIST_ENTRIES;
    if !enough && !state.idle_wanted {
        return None;
    }
    let release = state.idle_wanted || now_ms - state.last_index_persist_ms >= INDEX_DESCRIPTORS_KEEP_MS;
    let job = Job::PersistIndex {
        index: index.encode_range(index_from, index_upto),
        index_at: (index_from * OFFSET_ENTRY_BYTES) as u64,
        time: time_index.encode_range(time_from, time_upto),
        time_at: (time_from * TIME_ENTRY_BYTES) as u64,
        entries: (index_upto, time_upto),
        release,
    };
    state.last_index_persist_ms = now_ms;
    Some(job)
}

/// What `Log::release_if_idle` asked for, once nothing is being written,
/// sealed or synced (the index entries up to *durable* were persisted just
/// before, by [`index_to_persist`]).
fn idle_release<D: Disk>(state: &mut State<D>) -> Option<Job<D>> {
    if !state.idle_wanted || state.sync_in_flight || !state.writes.is_empty() || !state.sealing.is_empty() {
        return None;
    }
    if state.active.tail.has_unwritten() || state.active.tail.has_in_flight() {
        return None;
    }
    state.idle_wanted = false;
    state.settled = true;
    let to = crate::storage::aligned::page_ceil(state.active_segment().size);
    let active = &state.active;
    Some(Job::Release {
        files: [active.direct_file.clone(), active.index_file.clone(), active.time_index_file.clone()],
        segment_base: active.base_offset,
        cut_to: (active.allocated > to).then_some(to),
    })
}

async fn release<D: Disk>(
    inner: &Inner<D>,
    files: [Rc<D::File>; 3],
    segment_base: i64,
    cut_to: Option<u64>,
) -> LogResult<()> {
    if let Some(to) = cut_to {
        files[0].set_len(to).await?;
        let mut state = inner.state.borrow_mut();
        if state.active.base_offset == segment_base {
            state.active.allocated = to;
        }
    }
    for file in &files {
        file.release_descriptor();
    }
    Ok(())
}

async fn idle(clock: &dyn Clock, listen: crate::runtime::event::Listen<'_>, deadline_ms: Option<i64>) {
    match deadline_ms {
        None => listen.await,
        Some(deadline_ms) => {
            let wait_ms = (deadline_ms - clock.now_ms()).max(1) as u64;
            let sleep = clock.sleep(Duration::from_millis(wait_ms));
            futures::future::select(Box::pin(listen), sleep).await;
        }
    }
}

/// The tail of segment `segment_base`: active, or (after a roll moved it
/// meanwhile) sealing.
fn tail_of<D: Disk>(state: &mut State<D>, segment_base: i64) -> Option<&mut crate::log::state::ActiveTail<D>> {
    if state.active.base_offset == segment_base {
        return Some(&mut state.active);
    }
    state.sealing.iter_mut().find(|s| s.active.base_offset == segment_base).map(|s| &mut s.active)
}

/// Extends the fallocate reservation of segment `segment_base` to cover
/// `end`, in steps.
async fn reserve<D: Disk>(inner: &Inner<D>, file: &D::File, segment_base: i64, end: u64) -> LogResult<()> {
    let config = &inner.options.config;
    if !config.preallocate {
        return Ok(());
    }
    let target = match tail_of(&mut inner.state.borrow_mut(), segment_base) {
        Some(tail) if end > tail.allocated => {
            tail.allocated = crate::log::files::preallocation_target(config, end);
            Some(tail.allocated)
        }
        _ => None,
    };
    if let Some(target) = target {
        file.allocate(target).await?;
    }
    Ok(())
}

/// Queues a write in file order, reserves the space it needs, and starts
/// it as its own task (the writer goes on meanwhile).
async fn start_write<D: Disk>(
    inner: &Rc<Inner<D>>,
    file: Rc<D::File>,
    job: WriteJob,
    segment_base: i64,
) -> LogResult<()> {
    let id = {
        let mut state = inner.state.borrow_mut();
        let id = state.next_write_id;
        state.next_write_id += 1;
        state.writes.push_back(PendingWrite {
            id,
            file: file.clone(),
            end_offset: job.end_offset,
            end_position: (segment_base, job.end_offset_position),
            done: false,
        });
        assert!(state.writes.len() <= MAX_WRITES_IN_FLIGHT, "writes in flight are bounded");
        id
    };
    if let Err(error) = reserve(inner, &file, segment_base, job.position + job.buf.len() as u64).await {
        if let Some(tail) = tail_of(&mut inner.state.borrow_mut(), segment_base) {
            tail.tail.complete_write(job.buf);
        }
        return Err(error);
    }
    spawn_local(write_task(inner.clone(), file, job, segment_base, id));
    Ok(())
}

/// One chunk write: on completion its buffer goes back to the tail and the
/// completed writes at the front of the queue are retired.
async fn write_task<D: Disk>(inner: Rc<Inner<D>>, file: Rc<D::File>, job: WriteJob, segment_base: i64, id: u64) {
    let WriteJob { position, buf, rewrites_partial_page, .. } = job;
    let BufResult(result, buf): BufResult<(), AlignedBuf> = if rewrites_partial_page {
        file.write_aligned_after_partial_page(buf, position).await
    } else {
        file.write_aligned(buf, position).await
    };
    let mut state = inner.state.borrow_mut();
    // A roll may have moved the active tail to the sealing queue meanwhile.
    if let Some(tail) = tail_of(&mut state, segment_base) {
        tail.tail.complete_write(buf);
    }
    match result {
        Ok(()) => state.retire_write(id, inner.options.policy),
        Err(error) => state.poison(format!("write at {position} failed: {error}")),
    }
    drop(state);
    inner.changed.notify_all();
    inner.writer_wake.notify_all();
}

/// Runs one group commit beside the writer and wakes it when done.
async fn sync_task<D: Disk>(inner: Rc<Inner<D>>, files: Vec<Rc<D::File>>, target: i64, messages: u64, generation: u64) {
    let outcome = sync(&inner, files, target, messages, generation).await;
    let mut state = inner.state.borrow_mut();
    state.sync_in_flight = false;
    if let Err(error) = outcome {
        state.poison(error.to_string());
    }
    drop(state);
    inner.changed.notify_all();
    inner.writer_wake.notify_all();
}

async fn sync<D: Disk>(
    inner: &Inner<D>,
    files: Vec<Rc<D::File>>,
    target: i64,
    messages: u64,
    generation: u64,
) -> LogResult<()> {
    for file in &files {
        file.sync_data().await?;
    }
    let mut state = inner.state.borrow_mut();
    // A truncation meanwhile means `target` may name offsets re-appended since.
    if target > state.offsets.durable && generation == state.truncations {
        state.offsets.durable = target.min(state.offsets.written);
        state.offsets.follow(inner.options.policy);
    }
    state.messages_since_sync = state.messages_since_sync.saturating_sub(messages);
    state.last_sync_ms = inner.options.clock.now_ms();
    drop(state);
    inner.changed.notify_all();
    Ok(())
}

/// Returns the sealed segment's base (its indexes stay loaded, now under
/// the shard's budget).
async fn seal<D: Disk>(inner: &Inner<D>, sealing: SealingTail<D>) -> LogResult<i64> {
    let base = sealing.active.base_offset;
    let (index, time_index, next_base) = {
        let mut state = inner.state.borrow_mut();
        let segment = state.segments.get_mut(&base).ok_or(crate::log::error::LogError::Closed)?;
        segment.finish_time_index();
        let index = segment.index.clone().unwrap_or_else(|| crate::log::index::OffsetIndex::new(base));
        let time_index = segment.time_index.clone().unwrap_or_else(|| crate::log::index::TimeIndex::new(base));
        let next_base = state.segments.range(base + 1..).next().map(|(b, _)| *b);
        (index, time_index, next_base)
    };
    let data = &sealing.active.direct_file;
    data.set_len(sealing.final_size).await?;
    data.sync_data().await?;
    for (file, bytes) in
        [(&sealing.active.index_file, index.encode()), (&sealing.active.time_index_file, time_index.encode())]
    {
        let len = bytes.len() as u64;
        let BufResult(result, _) = file.write_all_at(bytes, 0).await;
        result?;
        file.set_len(len).await?;
        file.sync_data().await?;
    }
    if let Some(next_base) = next_base {
        write_checkpoint(&inner.disk, &inner.dir, RECOVERY_POINT_FILE, next_base.to_string()).await?;
    }
    inner.changed.notify_all();
    Ok(base)
}

async fn persist_index<D: Disk>(
    inner: &Inner<D>,
    index: Vec<u8>,
    index_at: u64,
    time: Vec<u8>,
    time_at: u64,
    entries: (usize, usize),
    release: bool,
) -> LogResult<()> {
    let (index_file, time_file) = {
        let state = inner.state.borrow();
        (state.active.index_file.clone(), state.active.time_index_file.clone())
    };
    let base = inner.state.borrow().active.base_offset;
    if !index.is_empty() {
        let BufResult(result, _) = index_file.write_all_at(index, index_at).await;
        result?;
    }
    if !time.is_empty() {
        let BufResult(result, _) = time_file.write_all_at(time, time_at).await;
        result?;
    }
    if release {
        index_file.release_descriptor();
        time_file.release_descriptor();
    }
    let mut state = inner.state.borrow_mut();
    if state.active.base_offset == base {
        let segment = state.active_segment_mut();
        segment.persisted_index_entries = segment.persisted_index_entries.max(entries.0);
        segment.persisted_time_entries = segment.persisted_time_entries.max(entries.1);
    }
    Ok(())
}

async fn persist_metadata<D: Disk>(inner: &Inner<D>, epochs: String, log_start: i64, version: u64) -> LogResult<()> {
    write_checkpoint(&inner.disk, &inner.dir, EPOCH_CHECKPOINT_FILE, epochs).await?;
    write_checkpoint(&inner.disk, &inner.dir, LOG_START_FILE, log_start.to_string()).await?;
    let mut state = inner.state.borrow_mut();
    state.metadata_persisted = state.metadata_persisted.max(version);
    drop(state);
    inner.changed.notify_all();
    Ok(())
}
