//! Page-aligned byte buffers for O_DIRECT writes.
//!
//! An [`AlignedBuf`] is owned by one shard at a time; while a write is in
//! flight it is owned by the io_uring operation (compio moves buffers in and
//! hands them back), so it implements [`compio::buf::IoBuf`].

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

/// Alignment and granularity of direct I/O: one 4 KiB page.
pub const PAGE_BYTES: usize = 4096;

/// Rounds `n` down to a page boundary.
pub fn page_floor(n: u64) -> u64 {
    n - n % PAGE_BYTES as u64
}

/// Rounds `n` up to a page boundary.
pub fn page_ceil(n: u64) -> u64 {
    page_floor(n + PAGE_BYTES as u64 - 1)
}

/// A zero-initialised, 4 KiB-aligned buffer of fixed capacity with a length.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    capacity: usize,
    len: usize,
}

// SAFETY: the buffer exclusively owns its allocation, like Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `capacity` bytes (a non-zero multiple of [`PAGE_BYTES`]).
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0 && capacity.is_multiple_of(PAGE_BYTES));
        let layout = Self::layout(capacity);
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self { ptr, capacity, len: 0 }
    }

    fn layout(capacity: usize) -> Layout {
        Layout::from_size_align(capacity, PAGE_BYTES).expect("page layout")
    }

    /// Bytes the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes currently held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free space left.
    pub fn remaining(&self) -> usize {
        self.capacity - self.len
    }

    /// The held bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the whole allocation is initialised (zeroed at birth).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn whole_mut(&mut self) -> &mut [u8] {
        // SAFETY: the whole allocation is initialised and exclusively ours.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity) }
    }

    /// Appends as much of `bytes` as fits; returns how many were copied.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.remaining());
        let at = self.len;
        self.whole_mut()[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    /// Empties the buffer (contents past the length are left as they are).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Extends the length to the next page boundary with zero bytes, so the
    /// buffer can be written with O_DIRECT. Returns the unpadded length.
    pub fn pad_to_page(&mut self) -> usize {
        let unpadded = self.len;
        let padded = page_ceil(unpadded as u64) as usize;
        assert!(padded <= self.capacity);
        self.whole_mut()[unpadded..padded].fill(0);
        self.len = padded;
        unpadded
    }

    /// Sets the length back after [`pad_to_page`](Self::pad_to_page).
    pub fn truncate(&mut self, len: usize) {
        assert!(len <= self.len);
        self.len = len;
    }
}

/// Spare buffers a shard keeps for reuse, in bytes: chunks given back by
/// idle partitions are handed to busy ones instead of going back to the
/// allocator (a chunk is one mmap and its page faults).
pub const POOL_MAX_BYTES: usize = 16 << 20;

thread_local! {
    /// This shard's spare buffers, by capacity.
    static POOL: std::cell::RefCell<(usize, Vec<AlignedBuf>)> = const { std::cell::RefCell::new((0, Vec::new())) };
}

impl AlignedBuf {
    /// An empty buffer of `capacity` bytes from this thread's (shard's)
    /// pool, or a new one.
    pub fn pooled(capacity: usize) -> Self {
        let reused = POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            let at = pool.1.iter().position(|b| b.capacity == capacity)?;
            let buf = pool.1.swap_remove(at);
            pool.0 -= buf.capacity;
            Some(buf)
        });
        match reused {
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => Self::new(capacity),
        }
    }

    /// Gives a buffer back to this thread's pool (freed when the pool
    /// holds [`POOL_MAX_BYTES`] already).
    pub fn recycle(self) {
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.0 + self.capacity <= POOL_MAX_BYTES {
                pool.0 += self.capacity;
                pool.1.push(self);
            }
        });
    }

    /// Bytes this thread's pool holds.
    pub fn pooled_bytes() -> usize {
        POOL.with(|pool| pool.borrow().0)
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.capacity)) }
    }
}

impl compio::buf::IoBuf for AlignedBuf {
    fn as_init(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf").field("capacity", &self.capacity).field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pad_and_alignment() {
        let mut buf = AlignedBuf::new(2 * PAGE_BYTES);
        assert_eq!(buf.as_slice().as_ptr() as usize % PAGE_BYTES, 0);
        assert_eq!(buf.push(&[1u8; 10]), 10);
        assert_eq!(buf.pad_to_page(), 10);
        assert_eq!(buf.len(), PAGE_BYTES);
        assert!(buf.as_slice()[10..].iter().all(|b| *b == 0));
        buf.truncate(10);
        assert_eq!(buf.push(&vec![2u8; 3 * PAGE_BYTES]), 2 * PAGE_BYTES - 10);
        assert_eq!(buf.remaining(), 0);
        assert_eq!(page_floor(4097), 4096);
        assert_eq!(page_ceil(4097), 8192);
        assert_eq!(page_ceil(4096), 4096);
    }

    #[test]
    fn the_pool_reuses_buffers_of_the_asked_capacity_within_its_bound() {
        let mut buf = AlignedBuf::pooled(2 * PAGE_BYTES);
        buf.push(&[7u8; 10]);
        let address = buf.as_slice().as_ptr() as usize;
        buf.recycle();
        assert_eq!(AlignedBuf::pooled_bytes(), 2 * PAGE_BYTES);
        let other = AlignedBuf::pooled(PAGE_BYTES);
        assert_eq!(AlignedBuf::pooled_bytes(), 2 * PAGE_BYTES, "another capacity is allocated anew");
        let again = AlignedBuf::pooled(2 * PAGE_BYTES);
        assert_eq!(again.as_slice().as_ptr() as usize, address, "the spare is reused");
        assert!(again.is_empty(), "handed out empty");
        assert_eq!(AlignedBuf::pooled_bytes(), 0);
        for _ in 0..(POOL_MAX_BYTES / PAGE_BYTES + 2) {
            AlignedBuf::new(PAGE_BYTES).recycle();
        }
        assert_eq!(AlignedBuf::pooled_bytes(), POOL_MAX_BYTES, "the pool is bounded");
        drop(other);
    }
}
