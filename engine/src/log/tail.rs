//! The O_DIRECT tail of the active segment: a bounded set of page-aligned
//! chunks that appends copy into and the writer drains to disk.
//!
//! Pure state (no I/O), owned by the partition's log on its shard. Full
//! chunks are written whole as they fill; a partially filled chunk is written
//! padded to its last page, and that partial last page is carried into the
//! next chunk so the following write rewrites it with the newer bytes.
//!
//! Memory follows traffic: an idle partition holds one page (its partial
//! last page; see [`TailBuffer::park`]), a quiet one a small buffer
//! ([`SMALL_CHUNK_BYTES`]); bursts use full chunks, and at most one spare
//! full chunk is kept. Buffers come from and go back to the shard's pool
//! ([`AlignedBuf::pooled`]).

use std::collections::VecDeque;

use crate::storage::aligned::{page_floor, AlignedBuf, PAGE_BYTES};

/// Buffer size of a quiet partition's tail.
pub const SMALL_CHUNK_BYTES: usize = 64 * 1024;

/// One write the disk must perform, in order: `buf` (page padded) at `position`.
#[derive(Debug)]
pub struct WriteJob {
    /// Page-aligned file position of the first byte of `buf`.
    pub position: u64,
    /// The bytes to write, padded to a whole page.
    pub buf: AlignedBuf,
    /// File position just after the last real (unpadded) byte.
    pub end_position: u64,
    /// The log end offset once this job is on disk, when it completes a batch.
    pub end_offset: Option<i64>,
    /// Where the batch ending at `end_offset` ends in the file (0 when
    /// `end_offset` is `None`).
    pub end_offset_position: u64,
    /// Whether the first page of `buf` rewrites the partial last page of an
    /// earlier write (bytes already on disk, followed by new ones).
    pub rewrites_partial_page: bool,
}

/// The tail buffer of one segment. See the module documentation.
#[derive(Debug)]
pub struct TailBuffer {
    chunk_bytes: usize,
    max_chunks: usize,
    filling: AlignedBuf,
    filling_position: u64,
    /// Bytes of `filling` already handed to a write job.
    filling_handed: usize,
    sealed: VecDeque<(u64, AlignedBuf)>,
    in_flight: usize,
    pool: Vec<AlignedBuf>,
    /// (file position, offset after the batch ending there), in append order.
    marks: VecDeque<(u64, i64)>,
    /// File position after the last real byte handed to a write (or on disk
    /// when the tail was made).
    handed_end: u64,
}

impl TailBuffer {
    /// A tail whose next byte goes at `end_position`; `partial_page` holds the
    /// bytes already on disk between the page start and `end_position`.
    pub fn new(chunk_bytes: usize, max_chunks: usize, end_position: u64, partial_page: &[u8]) -> Self {
        assert!(chunk_bytes.is_multiple_of(PAGE_BYTES) && chunk_bytes > 0);
        assert!(max_chunks >= 2);
        let filling_position = page_floor(end_position);
        assert_eq!((end_position - filling_position) as usize, partial_page.len());
        let mut filling = AlignedBuf::pooled(PAGE_BYTES);
        filling.push(partial_page);
        Self {
            chunk_bytes,
            max_chunks,
            filling,
            filling_position,
            filling_handed: partial_page.len(),
            sealed: VecDeque::new(),
            in_flight: 0,
            pool: Vec::new(),
            marks: VecDeque::new(),
            handed_end: end_position,
        }
    }

    /// File position just after the last appended byte.
    pub fn end_position(&self) -> u64 {
        self.filling_position + self.filling.len() as u64
    }

    fn chunks_in_use(&self) -> usize {
        1 + self.sealed.len() + self.in_flight
    }

    /// Whether `bytes` more can be appended without exceeding the chunk bound.
    pub fn has_room_for(&self, bytes: usize) -> bool {
        let free_chunks = self.max_chunks.saturating_sub(self.chunks_in_use());
        bytes <= self.filling.remaining() + free_chunks * self.chunk_bytes
    }

    /// Whether any appended byte has not been handed to a write yet.
    pub fn has_unwritten(&self) -> bool {
        !self.sealed.is_empty() || self.filling.len() > self.filling_handed
    }

    /// Whether the next write [`take_write`](Self::take_write) would hand
    /// out rewrites the partial last page of an earlier one: it must wait
    /// until that one is on disk, or the older bytes could land last.
    pub fn next_write_rewrites_partial_page(&self) -> bool {
        let position = self.sealed.front().map_or(self.filling_position, |(position, _)| *position);
        position < self.handed_end
    }

    /// Whether writes handed out have not completed yet.
    pub fn has_in_flight(&self) -> bool {
        self.in_flight > 0
    }

    /// Copies a whole batch into the tail. `next_offset` is the log end offset
    /// once this batch is durable. The caller checked [`has_room_for`].
    ///
    /// [`has_room_for`]: Self::has_room_for
    pub fn append(&mut self, batch: &[u8], next_offset: i64) {
        assert!(self.has_room_for(batch.len()), "tail buffer bound exceeded");
        let mut rest = batch;
        while !rest.is_empty() {
            let copied = self.filling.push(rest);
            rest = &rest[copied..];
            if self.filling.remaining() == 0 {
                self.seal_filling();
            }
        }
        self.marks.push_back((self.end_position(), next_offset));
    }

    /// A full-size chunk (from the pool when one is spare), or a small one
    /// for a quiet partition (which also releases the spare).
    fn fresh_buffer(&mut self, busy: bool) -> AlignedBuf {
        if !busy {
            self.pool.drain(..).for_each(AlignedBuf::recycle);
            return AlignedBuf::pooled(self.chunk_bytes.min(SMALL_CHUNK_BYTES));
        }
        match self.pool.pop() {
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => AlignedBuf::pooled(self.chunk_bytes),
        }
    }

    /// Gives the tail's buffers back to the shard's pool when nothing is
    /// unwritten or in flight, keeping one page: the partial last page the
    /// next write rewrites. Called when the partition's writer goes idle.
    pub fn park(&mut self) {
        if self.has_unwritten() || self.in_flight > 0 {
            return;
        }
        self.pool.drain(..).for_each(AlignedBuf::recycle);
        if self.filling.capacity() == PAGE_BYTES {
            return;
        }
        assert!(self.filling.len() < PAGE_BYTES, "all handed: only the partial last page is left");
        let mut page = AlignedBuf::pooled(PAGE_BYTES);
        page.push(self.filling.as_slice());
        std::mem::replace(&mut self.filling, page).recycle();
    }

    /// Bytes of buffers the tail holds (not those of writes in flight).
    pub fn buffered_capacity(&self) -> usize {
        self.filling.capacity()
            + self.sealed.iter().map(|(_, b)| b.capacity()).sum::<usize>()
            + self.pool.iter().map(AlignedBuf::capacity).sum::<usize>()
    }

    fn seal_filling(&mut self) {
        let next_position = self.filling_position + self.filling.capacity() as u64;
        let fresh = self.fresh_buffer(true);
        let full = std::mem::replace(&mut self.filling, fresh);
        debug_assert_eq!(full.len(), full.capacity());
        self.sealed.push_back((self.filling_position, full));
        self.filling_position = next_position;
        self.filling_handed = 0;
    }

    /// The next write to perform, if anything is unwritten: a sealed chunk,
    /// or else the partial filling chunk (padded), whose last page is carried
    /// into a fresh filling chunk.
    pub fn take_write(&mut self) -> Option<WriteJob> {
        let (position, mut buf) = if let Some(sealed) = self.sealed.pop_front() {
            sealed
        } else if self.filling.len() > self.filling_handed {
            let used = self.filling.len();
            let keep_from = page_floor(used as u64) as usize;
            let busy = used - self.filling_handed >= SMALL_CHUNK_BYTES / 2;
            let mut fresh = self.fresh_buffer(busy);
            fresh.push(&self.filling.as_slice()[keep_from..used]);
            let old = std::mem::replace(&mut self.filling, fresh);
            let old_position = self.filling_position;
            self.filling_position += keep_from as u64;
            self.filling_handed = used - keep_from;
            (old_position, old)
        } else {
            return None;
        };
        let unpadded = buf.pad_to_page();
        let end_position = position + unpadded as u64;
        let mut end_offset = None;
        let mut end_offset_position = 0;
        while let Some(&(mark_position, offset)) = self.marks.front() {
            if mark_position > end_position {
                break;
            }
            end_offset = Some(offset);
            end_offset_position = mark_position;
            self.marks.pop_front();
        }
        self.in_flight += 1;
        debug_assert!(position <= self.handed_end && self.handed_end - position < PAGE_BYTES as u64);
        let rewrites_partial_page = position < self.handed_end;
        self.handed_end = end_position;
        Some(WriteJob { position, buf, end_position, end_offset, end_offset_position, rewrites_partial_page })
    }

    /// Returns the buffer of a completed write to the pool.
    pub fn complete_write(&mut self, buf: AlignedBuf) {
        assert!(self.in_flight > 0);
        self.in_flight -= 1;
        if buf.capacity() == self.chunk_bytes && self.pool.is_empty() {
            self.pool.push(buf);
        } else {
            buf.recycle();
        }
    }
}

impl Drop for TailBuffer {
    fn drop(&mut self) {
        self.pool.drain(..).for_each(AlignedBuf::recycle);
        self.sealed.drain(..).for_each(|(_, buf)| buf.recycle());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Applies jobs to a model file and checks it equals everything appended
    /// (`file` beyond its real bytes is padding).
    fn drain(tail: &mut TailBuffer, file: &mut Vec<u8>, on_disk: &mut u64) -> Option<i64> {
        let mut last = None;
        while let Some(job) = tail.take_write() {
            assert_eq!(job.rewrites_partial_page, job.position < *on_disk, "job at {}", job.position);
            *on_disk = job.end_position;
            let end = job.position as usize + job.buf.len();
            if file.len() < end {
                file.resize(end, 0);
            }
            file[job.position as usize..end].copy_from_slice(job.buf.as_slice());
            if job.end_offset.is_some() {
                last = job.end_offset;
            }
            tail.complete_write(job.buf);
        }
        last
    }

    proptest! {
        #[test]
        fn writes_reproduce_appended_bytes(sizes in proptest::collection::vec(1usize..40_000, 1..60),
                                           drain_every in 1usize..5,
                                           start in 0u64..10_000,
                                           chunk_pages in prop_oneof![Just(4usize), Just(64usize)],
                                           park in proptest::bool::ANY) {
            let mut file = vec![7u8; start as usize];
            let mut expected = file.clone();
            let partial = file[page_floor(start) as usize..].to_vec();
            let mut tail = TailBuffer::new(chunk_pages * PAGE_BYTES, 64, start, &partial);
            let mut on_disk = start;
            let mut next = 0i64;
            for (i, size) in sizes.iter().enumerate() {
                let bytes: Vec<u8> = (0..*size).map(|b| (b + i) as u8).collect();
                if !tail.has_room_for(bytes.len()) {
                    drain(&mut tail, &mut file, &mut on_disk);
                }
                next += 1;
                tail.append(&bytes, next);
                expected.extend_from_slice(&bytes);
                if i % drain_every == 0 {
                    let end = drain(&mut tail, &mut file, &mut on_disk);
                    prop_assert_eq!(end, Some(next));
                    if park {
                        tail.park();
                        prop_assert_eq!(tail.buffered_capacity(), PAGE_BYTES);
                    }
                }
            }
            drain(&mut tail, &mut file, &mut on_disk);
            prop_assert_eq!(tail.end_position(), expected.len() as u64);
            prop_assert_eq!(&file[..expected.len()], &expected[..]);
            prop_assert!(file[expected.len()..].iter().all(|b| *b == 0));
        }
    }

    #[test]
    fn room_is_bounded_by_max_chunks() {
        let mut tail = TailBuffer::new(PAGE_BYTES, 2, 0, &[]);
        assert!(tail.has_room_for(2 * PAGE_BYTES));
        assert!(!tail.has_room_for(2 * PAGE_BYTES + 1));
        tail.append(&[1u8; PAGE_BYTES], 1);
        let job = tail.take_write().expect("sealed chunk");
        assert_eq!(job.end_offset, Some(1));
        assert!(tail.has_room_for(PAGE_BYTES));
        assert!(!tail.has_room_for(PAGE_BYTES + 1));
        tail.complete_write(job.buf);
        assert!(tail.has_room_for(2 * PAGE_BYTES));
    }
}
