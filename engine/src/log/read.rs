//! Reads of a partition log: by offset (fetch) from the shard's batch cache
//! or the segment files, and by timestamp (ListOffsets) through the time
//! index. Runs on the partition's shard; a cache miss reads asynchronously.

use bytes::Bytes;

use crate::format::batch::BatchIter;
use crate::log::error::{LogError, LogResult};
use crate::log::index::{OffsetIndex, TimeIndex};
use crate::log::scan::{scan_batches, ScanCheck};
use crate::log::segment::{INDEX_SUFFIX, TIME_INDEX_SUFFIX};
use crate::log::{FileRange, Log, ReadResult};
use crate::storage::disk::{Disk, DiskFile};
use crate::storage::page_cache;

/// Extra bytes read past `max_bytes` to cover the distance from the index
/// entry to the target batch.
const READ_SLACK_BYTES: u64 = 64 * 1024;

/// A resident range shorter than this is copied: below it a splice costs
/// more than the copy it saves.
pub const MIN_SPLICE_BYTES: usize = 16 * 1024;

/// A resident range whose batches average less than this is copied: the
/// header walk reads each batch's header, which costs more than copying
/// small batches.
pub const MIN_SPLICE_AVERAGE_BATCH: usize = 4 * 1024;

/// At most this many batch headers are read to find a resident range.
const MAX_HEADER_READS: usize = 512;

impl<D: Disk> Log<D> {
    /// Whole batches from the one containing `offset`, ending below
    /// `max_offset` (and below what is written), up to `max_bytes` except
    /// that the first batch is returned whole even when larger.
    pub async fn read(&self, offset: i64, max_bytes: usize, max_offset: i64) -> LogResult<ReadResult> {
        self.read_with(offset, max_bytes, max_offset, false).await
    }

    /// [`read`](Self::read) for a socket send: the same batches, but on a
    /// batch-cache miss, when they lie in one segment file whose pages are
    /// all in the page cache, as a [`FileRange`] in `resident` rather than
    /// copied into memory. A range that is not resident is read as `read`
    /// does (asynchronously, never blocking the shard).
    pub async fn read_resident(&self, offset: i64, max_bytes: usize, max_offset: i64) -> LogResult<ReadResult> {
        self.read_with(offset, max_bytes, max_offset, true).await
    }

    async fn read_with(&self, offset: i64, max_bytes: usize, max_offset: i64, resident: bool) -> LogResult<ReadResult> {
        let (end, mut result) = {
            let state = self.inner.state.borrow();
            let o = &state.offsets;
            if offset < o.log_start || offset > o.log_end {
                return Err(LogError::OffsetOutOfRange { offset, log_start: o.log_start, log_end: o.log_end });
            }
            let end = max_offset.min(o.written);
            let result = ReadResult {
                batches: Vec::new(),
                resident: None,
                high_watermark: o.high_watermark,
                log_start: o.log_start,
                log_end: o.log_end,
            };
            (end, result)
        };
        if offset >= end {
            return Ok(result);
        }
        let key = self.inner.options.cache_key;
        if let Some(batches) = self.inner.options.cache.borrow().read(key, offset, end, max_bytes) {
            result.batches = batches;
            return Ok(result);
        }
        if resident {
            if let Some(range) = self.resident_range(offset, end, max_bytes) {
                result.resident = Some(range);
                return Ok(result);
            }
        }
        result.batches = self.read_from_segments(offset, end, max_bytes).await?;
        Ok(result)
    }

    /// The batches [`read_batches`] would return for `target`, as a file
    /// range, when the segment's index is loaded, every header on the way
    /// is cached and the whole range is resident; `None` otherwise (the
    /// caller reads the copying way). Mirrors `read_batches` exactly: from
    /// the indexed position, the batch holding `target` whole, then whole
    /// batches within `max_bytes` and the read window; a first batch that
    /// ends past the window is returned alone.
    fn resident_range(&self, target: i64, end: i64, max_bytes: usize) -> Option<FileRange> {
        use crate::format::batch::{parse_header, BATCH_HEADER_BYTES};
        let (base, file, next_offset, size) = self.segment_for(target)?;
        if target >= next_offset {
            return None;
        }
        let kernel = file.kernel_file()?;
        let (indexed_offset, position) = self.with_index(base, |index| index.lookup(target))?;
        let window_end = (position + max_bytes as u64 + READ_SLACK_BYTES).min(size);
        let mut at = position;
        let mut first = true;
        let mut alone = false;
        let mut start: Option<u64> = None;
        let mut stop = 0u64;
        let mut batches = 0usize;
        let mut last_next = target;
        let mut walked = false;
        for _ in 0..MAX_HEADER_READS {
            if at + BATCH_HEADER_BYTES as u64 > size {
                walked = true;
                break;
            }
            let bytes = page_cache::read_resident(&kernel, at, BATCH_HEADER_BYTES).ok()??;
            let Ok(header) = parse_header(&bytes) else {
                walked = true;
                break;
            };
            if first && header.base_offset != indexed_offset && position > 0 {
                return None;
            }
            first = false;
            let batch_end = at + header.total_bytes() as u64;
            if batch_end > size {
                walked = true;
                break;
            }
            if batch_end > window_end && start.is_none() {
                // read_batches reads this one (and what follows) by itself.
                alone = true;
            }
            if header.next_offset() <= target {
                at = batch_end;
                continue;
            }
            if header.next_offset() > end {
                walked = true;
                break;
            }
            match start {
                None => {
                    start = Some(at);
                    stop = batch_end;
                }
                Some(s) if batch_end <= window_end && (batch_end - s) as usize <= max_bytes => stop = batch_end,
                Some(_) => {
                    walked = true;
                    break;
                }
            }
            batches += 1;
            last_next = header.next_offset();
            if alone {
                walked = true;
                break;
            }
            at = batch_end;
        }
        // A walk cut short by the header bound would return less than
        // read_batches does.
        let start = start.filter(|_| walked)?;
        let len = (stop - start) as usize;
        if len < MIN_SPLICE_BYTES || len / batches < MIN_SPLICE_AVERAGE_BATCH {
            return None;
        }
        if !page_cache::is_resident(&kernel, start, len as u64) {
            return None;
        }
        Some(FileRange { file: kernel, position: start, len, next_offset: last_next })
    }

    async fn read_from_segments(&self, offset: i64, end: i64, max_bytes: usize) -> LogResult<Vec<Bytes>> {
        let mut target = offset;
        // A target in a gap between segments moves to the next segment.
        for _ in 0..4 {
            let Some((base, file, next_offset, size)) = self.segment_for(target) else { return Ok(Vec::new()) };
            if target >= next_offset {
                match self.inner.state.borrow().segments.range(base + 1..).next() {
                    Some((&next_base, _)) => target = target.max(next_base),
                    None => return Ok(Vec::new()),
                }
                continue;
            }
            let (indexed_offset, position) = self.index_lookup(base, target).await?;
            let batches = read_batches(&*file, position, indexed_offset, size, target, end, max_bytes).await?;
            match batches {
                Some(batches) => return Ok(batches),
                None => {
                    // The index pointed at the wrong place: drop it and scan
                    // from the segment start.
                    tracing::warn!(dir = %self.inner.dir.display(), base, "offset index mismatch; rebuilding");
                    self.drop_index(base);
                    let batches = read_batches(&*file, 0, base, size, target, end, max_bytes).await?;
                    return Ok(batches.unwrap_or_default());
                }
            }
        }
        Ok(Vec::new())
    }

    fn segment_for(&self, offset: i64) -> Option<(i64, std::rc::Rc<D::File>, i64, u64)> {
        let state = self.inner.state.borrow();
        let (base, segment) = state.segments.range(..=offset).next_back()?;
        let readable = state.readable_size(*base, segment.size, segment.next_offset);
        Some((*base, segment.read_file.clone(), segment.next_offset, readable))
    }

    fn drop_index(&self, base: i64) {
        let mut state = self.inner.state.borrow_mut();
        let is_active = state.active.base_offset == base;
        if let Some(segment) = state.segments.get_mut(&base) {
            if !is_active {
                segment.index = None;
            }
        }
    }

    /// Loads the offset index of a sealed segment on first use (rebuilding it
    /// when missing or corrupt) and looks up `target`.
    async fn index_lookup(&self, base: i64, target: i64) -> LogResult<(i64, u64)> {
        if let Some(found) = self.with_index(base, |index| index.lookup(target)) {
            return Ok(found);
        }
        let (index, time_index) = self.load_or_rebuild_indexes(base).await?;
        let found = index.lookup(target);
        {
            let mut state = self.inner.state.borrow_mut();
            let Some(segment) = state.segments.get_mut(&base) else { return Ok(found) };
            segment.index = Some(index);
            segment.time_index = Some(time_index);
        }
        self.inner.count_loaded_index(base);
        Ok(found)
    }

    fn with_index<T>(&self, base: i64, f: impl FnOnce(&OffsetIndex) -> T) -> Option<T> {
        let state = self.inner.state.borrow();
        let found = state.segments.get(&base)?.index.as_ref().map(f);
        if found.is_some() {
            self.inner.options.indexes.borrow_mut().touch(self.inner.options.cache_key, base);
        }
        found
    }

    pub(crate) async fn load_or_rebuild_indexes(&self, base: i64) -> LogResult<(OffsetIndex, TimeIndex)> {
        let (file, size) = {
            let state = self.inner.state.borrow();
            let segment = state.segments.get(&base).ok_or(LogError::Closed)?;
            (segment.read_file.clone(), segment.size)
        };
        let dir = &self.inner.dir;
        let disk = &self.inner.disk;
        let loaded = crate::log::files::load_indexes(disk, dir, base, size).await;
        if let Some(indexes) = loaded {
            return Ok(indexes);
        }
        tracing::info!(dir = %dir.display(), base, "rebuilding missing or corrupt segment indexes");
        let interval = self.inner.options.config.index_interval_bytes;
        let max_batch = i32::MAX as usize;
        let rebuilt = crate::log::files::rebuild_indexes(&*file, base, size, interval, max_batch).await?;
        crate::log::files::write_indexes(disk, dir, base, &rebuilt.0, &rebuilt.1).await?;
        Ok(rebuilt)
    }

    /// ListOffsets by timestamp: the first batch whose max timestamp is at or
    /// after `timestamp`, as (offset of its first record with a timestamp ≥
    /// `timestamp` when uncompressed, else its base offset; its timestamp).
    pub async fn offset_for_timestamp(&self, timestamp: i64, max_offset: i64) -> LogResult<Option<(i64, i64)>> {
        let candidates: Vec<i64> = {
            let state = self.inner.state.borrow();
            state.segments.values().filter(|s| s.max_timestamp >= timestamp).map(|s| s.base_offset).collect()
        };
        for base in candidates {
            let start_offset = match self.with_time_index(base, |t| t.lookup(timestamp)) {
                Some(start) => start,
                None => {
                    self.index_lookup(base, base).await?;
                    self.with_time_index(base, |t| t.lookup(timestamp)).unwrap_or(base)
                }
            };
            let (indexed_offset, position) = self.index_lookup(base, start_offset).await?;
            let Some((_, file, _, size)) = self.segment_for(base) else { continue };
            let max_batch = i32::MAX as usize;
            let mut found = None;
            scan_batches(&*file, position, indexed_offset, size, max_batch, ScanCheck::HeaderOnly, |_, header| {
                if header.base_offset >= max_offset {
                    return false;
                }
                if header.max_timestamp >= timestamp {
                    found = Some((header.base_offset, header.max_timestamp));
                    return false;
                }
                true
            })
            .await?;
            if let Some((batch_offset, batch_max)) = found {
                return self.refine_by_record(batch_offset, timestamp, batch_max).await.map(Some);
            }
        }
        Ok(None)
    }

    fn with_time_index<T>(&self, base: i64, f: impl FnOnce(&TimeIndex) -> T) -> Option<T> {
        let state = self.inner.state.borrow();
        state.segments.get(&base)?.time_index.as_ref().map(f)
    }

    /// Within the batch at `batch_offset`, the first record at or after
    /// `timestamp` (uncompressed batches); the batch itself otherwise.
    async fn refine_by_record(&self, batch_offset: i64, timestamp: i64, batch_max: i64) -> LogResult<(i64, i64)> {
        let end = self.inner.state.borrow().offsets.log_end;
        let read = self.read(batch_offset, 1, end).await?;
        let Some(batch) = read.batches.first() else { return Ok((batch_offset, batch_max)) };
        Ok(crate::format::records::first_record_at_or_after(batch, timestamp).unwrap_or((batch_offset, batch_max)))
    }

    /// ListOffsets max timestamp (KIP-734): the offset and timestamp of the
    /// batch carrying the largest timestamp.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let state = self.inner.state.borrow();
        state
            .segments
            .values()
            .filter(|s| s.max_timestamp >= 0)
            .max_by_key(|s| s.max_timestamp)
            .map(|s| (s.offset_of_max_timestamp, s.max_timestamp))
    }

    /// ListOffsets max timestamp (KIP-734) at record level: within the
    /// batch carrying the largest timestamp, the first record with it (for
    /// uncompressed CreateTime batches; the batch's base offset otherwise).
    pub async fn max_timestamp_record(&self) -> LogResult<Option<(i64, i64)>> {
        let Some((batch_offset, timestamp)) = self.max_timestamp() else { return Ok(None) };
        let end = self.inner.state.borrow().offsets.log_end;
        let read = self.read(batch_offset, 1, end).await?;
        let exact =
            read.batches.first().and_then(|batch| crate::format::records::first_record_at_or_after(batch, timestamp));
        Ok(Some(exact.filter(|&(_, ts)| ts == timestamp).unwrap_or((batch_offset, timestamp))))
    }

    /// Paths of the index files of a segment (for tests).
    pub fn index_paths(&self, base: i64) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = &self.inner.dir;
        (
            crate::log::segment::segment_file(dir, base, INDEX_SUFFIX),
            crate::log::segment::segment_file(dir, base, TIME_INDEX_SUFFIX),
        )
    }
}

/// Reads whole batches from `file` starting the scan at `position` (batch
/// base `indexed_offset`), skipping to the batch containing `target`.
/// Returns `None` when the bytes at `position` are not the indexed batch.
async fn read_batches<F: DiskFile>(
    file: &F,
    position: u64,
    indexed_offset: i64,
    size: u64,
    target: i64,
    end: i64,
    max_bytes: usize,
) -> LogResult<Option<Vec<Bytes>>> {
    let want = (max_bytes as u64 + READ_SLACK_BYTES).min(size.saturating_sub(position));
    let buffer = file.read_at(want as usize, position).await?;
    let mut first = true;
    let mut start = None;
    let mut stop = 0usize;
    for (at, header) in BatchIter::new(&buffer) {
        if first && header.base_offset != indexed_offset && position > 0 {
            return Ok(None);
        }
        first = false;
        if header.next_offset() <= target {
            continue;
        }
        if header.next_offset() > end {
            break;
        }
        let batch_end = at + header.total_bytes();
        match start {
            None => {
                start = Some(at);
                stop = batch_end;
            }
            Some(s) if batch_end - s <= max_bytes => stop = batch_end,
            Some(_) => break,
        }
    }
    if let Some(start) = start {
        return Ok(Some(vec![Bytes::from(buffer).slice(start..stop)]));
    }
    if first && position > 0 {
        return Ok(None);
    }
    // The batch holding `target` is longer than what was read: read it whole.
    read_one_large_batch(file, &buffer, position, size, target, end).await
}

async fn read_one_large_batch<F: DiskFile>(
    file: &F,
    buffer: &[u8],
    position: u64,
    size: u64,
    target: i64,
    end: i64,
) -> LogResult<Option<Vec<Bytes>>> {
    let mut iter = BatchIter::new(buffer);
    iter.by_ref().for_each(drop);
    let mut at = position + iter.position() as u64;
    // Walk header by header; bounded by the segment size.
    let max_steps = size / crate::format::batch::BATCH_HEADER_BYTES as u64 + 1;
    for _ in 0..max_steps {
        if at >= size {
            break;
        }
        let header_bytes = file.read_at(crate::format::batch::BATCH_HEADER_BYTES, at).await?;
        let Ok(header) = crate::format::batch::parse_header(&header_bytes) else { break };
        if header.next_offset() > end {
            break;
        }
        if header.next_offset() <= target {
            at += header.total_bytes() as u64;
            continue;
        }
        let bytes = file.read_at(header.total_bytes(), at).await?;
        if bytes.len() < header.total_bytes() {
            break;
        }
        return Ok(Some(vec![Bytes::from(bytes)]));
    }
    Ok(Some(Vec::new()))
}
