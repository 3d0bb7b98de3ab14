//! Operations that change which offsets a partition log holds: retention
//! (`retention.ms`, `retention.bytes`), DeleteRecords (advance the log
//! start), follower truncation, and the clean close. Run on the partition's
//! shard, in the background of appends: segment files are removed after the
//! in-memory state moved on, and readers holding a segment keep its file.

use crate::format::batch::BatchIter;
use crate::log::error::{LogError, LogResult};
use crate::log::files::{open_segment_files, remove_segments, write_checkpoint, write_indexes, CLEAN_SHUTDOWN_FILE};
use crate::log::segment::{segment_file, INDEX_SUFFIX, TIME_INDEX_SUFFIX};
use crate::log::state::ActiveTail;
use crate::log::tail::TailBuffer;
use crate::log::Log;
use crate::storage::aligned::page_floor;
use crate::storage::disk::{Disk, DiskFile, OpenMode};

impl<D: Disk> Log<D> {
    /// Deletes whole sealed segments below the high watermark that are past
    /// `retention.ms` (newest record older) or that `retention.bytes` no
    /// longer covers, oldest first. Returns how many were deleted.
    pub async fn apply_retention(&self, now_ms: i64) -> LogResult<usize> {
        let config = &self.inner.options.config;
        let doomed: Vec<i64> = {
            let state = self.inner.state.borrow();
            if state.exclusive {
                return Ok(0); // a roll or truncation is changing segments: next round
            }
            let total: u64 = state.segments.values().map(|s| s.size).sum();
            let mut excess = config.retention_bytes.map_or(0, |limit| total.saturating_sub(limit));
            let mut doomed = Vec::new();
            for segment in state.segments.values() {
                let active_or_sealing = segment.base_offset == state.active.base_offset
                    || state.sealing.iter().any(|s| s.active.base_offset == segment.base_offset);
                if active_or_sealing || segment.next_offset > state.offsets.high_watermark {
                    break;
                }
                let expired = config
                    .retention_ms
                    .is_some_and(|ms| segment.max_timestamp >= 0 && now_ms - segment.max_timestamp > ms as i64);
                let over_size = excess > 0 && segment.size <= excess;
                if !expired && !over_size {
                    break;
                }
                excess = excess.saturating_sub(segment.size);
                doomed.push(segment.base_offset);
            }
            doomed
        };
        let Some(&last) = doomed.last() else { return Ok(0) };
        let new_start = {
            let state = self.inner.state.borrow();
            state.segments.range(last + 1..).next().map(|(b, _)| *b).unwrap_or(state.offsets.log_end)
        };
        self.advance_log_start_to(new_start, &doomed);
        remove_segments(&self.inner.disk, &self.inner.dir, &doomed).await?;
        tracing::debug!(dir = %self.inner.dir.display(), deleted = doomed.len(), new_start, "retention deleted segments");
        Ok(doomed.len())
    }

    /// DeleteRecords: makes `offset` (≤ high watermark) the log start and
    /// deletes segments wholly below it. Returns the new log start.
    pub async fn delete_records(&self, offset: i64) -> LogResult<i64> {
        let doomed: Vec<i64> = {
            let state = self.inner.state.borrow();
            if state.exclusive {
                return Err(LogError::Closed);
            }
            let o = &state.offsets;
            if offset > o.high_watermark || offset < 0 {
                return Err(LogError::OffsetOutOfRange { offset, log_start: o.log_start, log_end: o.high_watermark });
            }
            if offset <= o.log_start {
                return Ok(o.log_start);
            }
            state
                .segments
                .values()
                .take_while(|s| {
                    s.next_offset <= offset
                        && s.base_offset != state.active.base_offset
                        && !state.sealing.iter().any(|t| t.active.base_offset == s.base_offset)
                })
                .map(|s| s.base_offset)
                .collect()
        };
        self.advance_log_start_to(offset, &doomed);
        remove_segments(&self.inner.disk, &self.inner.dir, &doomed).await?;
        // The new start must survive a crash before DeleteRecords answers.
        let version = self.inner.state.borrow().metadata_version;
        loop {
            let listen = self.inner.changed.listen();
            {
                let state = self.inner.state.borrow();
                if state.metadata_persisted >= version {
                    return Ok(state.offsets.log_start);
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

    fn advance_log_start_to(&self, offset: i64, doomed: &[i64]) {
        let mut state = self.inner.state.borrow_mut();
        for base in doomed {
            state.segments.remove(base);
        }
        self.inner.forget_indexes(doomed);
        state.offsets.advance_log_start(offset);
        state.epochs.truncate_from_start(offset);
        state.metadata_version += 1;
        let key = self.inner.options.cache_key;
        self.inner.options.cache.borrow_mut().remove_before(key, offset);
        drop(state);
        self.inner.writer_wake.notify_all();
        self.inner.changed.notify_all();
    }

    /// Waits until nothing appended is unwritten and takes the segments for
    /// exclusive change (appends wait meanwhile).
    async fn quiesce(&self) -> LogResult<()> {
        loop {
            let listen = self.inner.changed.listen();
            {
                let mut state = self.inner.state.borrow_mut();
                state.check_open()?;
                let drained = state.offsets.written == state.offsets.log_end
                    && !state.sync_in_flight
                    && !state.writer_busy
                    && state.writes.is_empty()
                    && state.sealing.is_empty()
                    && !state.active.tail.has_unwritten()
                    && !state.active.tail.has_in_flight();
                if !state.exclusive && drained {
                    state.exclusive = true;
                    return Ok(());
                }
            }
            self.inner.writer_wake.notify_all();
            listen.await;
        }
    }

    /// Follower truncation: removes every batch at or after `offset` (from
    /// the start of the batch containing it). Returns the new log end.
    pub async fn truncate_to(&self, offset: i64) -> LogResult<i64> {
        if offset >= self.offsets().log_end {
            return Ok(self.offsets().log_end);
        }
        self.quiesce().await?;
        let result = self.truncate_quiesced(offset).await;
        let mut state = self.inner.state.borrow_mut();
        state.exclusive = false;
        if let Err(error) = &result {
            state.poison(format!("truncation failed: {error}"));
        }
        drop(state);
        self.inner.changed.notify_all();
        self.inner.writer_wake.notify_all();
        result
    }

    async fn truncate_quiesced(&self, offset: i64) -> LogResult<i64> {
        let (offset, base, file, size) = {
            let state = self.inner.state.borrow();
            let offset = offset.max(state.offsets.log_start);
            let (base, segment) = state.segments.range(..=offset).next_back().ok_or(LogError::Closed)?;
            (offset, *base, segment.read_file.clone(), segment.size)
        };
        let (cut_position, new_end, scanned_max) = find_cut(&*file, size, base, offset).await?;
        // A cut through the batch holding the log start leaves an empty log there.
        let new_end = new_end.max(self.inner.state.borrow().offsets.log_start);
        let later: Vec<i64> = self.inner.state.borrow().segments.range(base + 1..).map(|(b, _)| *b).collect();
        let config = &self.inner.options.config;
        let reopen = self.inner.state.borrow().active.base_offset != base;
        if reopen {
            // The reopened segment takes appends again: recovery must rescan it.
            write_checkpoint(
                &self.inner.disk,
                &self.inner.dir,
                crate::log::files::RECOVERY_POINT_FILE,
                base.to_string(),
            )
            .await?;
            let files = open_segment_files(&self.inner.disk, &self.inner.dir, base).await?;
            let mut state = self.inner.state.borrow_mut();
            let tail = TailBuffer::new(config.chunk_bytes, config.max_pending_chunks, 0, &[]);
            state.active = ActiveTail::new(base, files, tail);
            for b in &later {
                state.segments.remove(b);
            }
            self.inner.forget_indexes(&later);
        }
        remove_segments(&self.inner.disk, &self.inner.dir, &later).await?;
        let (direct, read) = {
            let state = self.inner.state.borrow();
            (state.active.direct_file.clone(), state.active_segment().read_file.clone())
        };
        direct.set_len(cut_position).await?;
        if config.preallocate {
            let to = crate::log::files::preallocation_target(config, cut_position);
            direct.allocate(to).await?;
            self.inner.state.borrow_mut().active.allocated = to;
        }
        direct.sync_data().await?;
        let page_start = page_floor(cut_position);
        let partial = read.read_at((cut_position - page_start) as usize, page_start).await?;
        self.finish_truncation(cut_position, new_end, scanned_max, &partial).await
    }

    async fn finish_truncation(
        &self,
        cut_position: u64,
        new_end: i64,
        scanned_max: (i64, i64),
        partial: &[u8],
    ) -> LogResult<i64> {
        let config = &self.inner.options.config;
        let (index_file, time_file, index_len, time_len) = {
            let mut state = self.inner.state.borrow_mut();
            state.active.tail = TailBuffer::new(config.chunk_bytes, config.max_pending_chunks, cut_position, partial);
            let segment = state.active_segment_mut();
            segment.size = cut_position;
            segment.next_offset = new_end;
            segment.bytes_since_index = 0;
            if let Some(index) = segment.index.as_mut() {
                index.truncate_to_offset(new_end);
            }
            if let Some(time_index) = segment.time_index.as_mut() {
                time_index.truncate_to_offset(new_end);
            }
            let from_index = segment.time_index.as_ref().and_then(|t| t.last()).unwrap_or((-1, segment.base_offset));
            let (max_timestamp, offset) = if scanned_max.0 > from_index.0 { scanned_max } else { from_index };
            segment.max_timestamp = max_timestamp;
            segment.offset_of_max_timestamp = offset;
            let index_len = segment.index.as_ref().map_or(0, |i| i.len());
            let time_len = segment.time_index.as_ref().map_or(0, |t| t.len());
            segment.persisted_index_entries = segment.persisted_index_entries.min(index_len);
            segment.persisted_time_entries = segment.persisted_time_entries.min(time_len);
            let lens = (segment.persisted_index_entries, segment.persisted_time_entries);
            state.offsets.truncate_to(new_end);
            state.written_position = (state.active.base_offset, cut_position);
            state.truncations += 1;
            state.epochs.truncate_from_end(new_end);
            state.metadata_version += 1;
            let key = self.inner.options.cache_key;
            self.inner.options.cache.borrow_mut().truncate(key, new_end);
            (state.active.index_file.clone(), state.active.time_index_file.clone(), lens.0, lens.1)
        };
        index_file.set_len((index_len * crate::log::index::OFFSET_ENTRY_BYTES) as u64).await?;
        time_file.set_len((time_len * crate::log::index::TIME_ENTRY_BYTES) as u64).await?;
        // Entries past the cut must not come back after a crash.
        index_file.sync_data().await?;
        time_file.sync_data().await?;
        tracing::info!(dir = %self.inner.dir.display(), new_end, "truncated partition log");
        Ok(new_end)
    }

    /// Clean close: every appended batch written and fdatasync'ed, the
    /// active segment trimmed to its size with complete indexes, checkpoints
    /// written and the clean-shutdown marker left, so the next open needs no
    /// recovery scan.
    pub async fn close(&self) -> LogResult<()> {
        {
            let mut state = self.inner.state.borrow_mut();
            state.closed = true;
            state.durable_wanted = state.offsets.log_end;
        }
        self.inner.writer_wake.notify_all();
        loop {
            let listen = self.inner.changed.listen();
            if !self.inner.state.borrow().writer_running {
                break;
            }
            listen.await;
        }
        if let Some(reason) = self.inner.state.borrow().poisoned.clone() {
            return Err(LogError::Poisoned(reason));
        }
        let (direct, base, size, index, time_index) = {
            let mut state = self.inner.state.borrow_mut();
            let segment = state.active_segment_mut();
            segment.finish_time_index();
            let index =
                segment.index.clone().unwrap_or_else(|| crate::log::index::OffsetIndex::new(segment.base_offset));
            let time_index =
                segment.time_index.clone().unwrap_or_else(|| crate::log::index::TimeIndex::new(segment.base_offset));
            (state.active.direct_file.clone(), state.active.base_offset, state.active_segment().size, index, time_index)
        };
        let disk = &self.inner.disk;
        let dir = &self.inner.dir;
        write_indexes(disk, dir, base, &index, &time_index).await?;
        direct.set_len(size).await?;
        direct.sync_data().await?;
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            disk.open(&segment_file(dir, base, suffix), OpenMode::Read).await?.sync_data().await?;
        }
        write_checkpoint(disk, dir, CLEAN_SHUTDOWN_FILE, String::new()).await?;
        self.inner.options.cache.borrow_mut().drop_partition(self.inner.options.cache_key);
        let bases: Vec<i64> = self.inner.state.borrow().segments.keys().copied().collect();
        self.inner.forget_indexes(&bases);
        Ok(())
    }
}

/// Finds where to cut segment data so that no batch at or after `offset`
/// remains: (byte position, new log end, max timestamp and its offset among
/// the kept scanned batches).
async fn find_cut<F: DiskFile>(file: &F, size: u64, base: i64, offset: i64) -> LogResult<(u64, i64, (i64, i64))> {
    let mut position = 0u64;
    let mut next = base;
    let mut max = (-1i64, base);
    let max_steps = size / crate::format::batch::BATCH_HEADER_BYTES as u64 + 1;
    for _ in 0..max_steps {
        if position >= size {
            break;
        }
        let window =
            file.read_at(crate::log::scan::SCAN_WINDOW_BYTES.min((size - position) as usize), position).await?;
        let mut iter = BatchIter::new(&window);
        for (at, header) in iter.by_ref() {
            if header.last_offset() >= offset {
                return Ok((position + at as u64, header.base_offset.min(offset), max));
            }
            if header.max_timestamp > max.0 {
                max = (header.max_timestamp, header.base_offset);
            }
            next = header.next_offset();
        }
        if iter.position() > 0 {
            position += iter.position() as u64;
            continue;
        }
        // One batch larger than the window.
        let header = file.read_at(crate::format::batch::BATCH_HEADER_BYTES, position).await?;
        let Ok(header) = crate::format::batch::parse_header(&header) else { break };
        if header.last_offset() >= offset {
            return Ok((position, header.base_offset.min(offset), max));
        }
        if header.max_timestamp > max.0 {
            max = (header.max_timestamp, header.base_offset);
        }
        next = header.next_offset();
        position += header.total_bytes() as u64;
    }
    Ok((position, next, max))
}
