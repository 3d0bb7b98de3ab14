//! Positional writes whose io_uring SQE carries an I/O priority, so a
//! shard's O_DIRECT appends can be dispatched by the disk scheduler
//! (mq-deadline, bfq) before its own backlog reads and before other
//! processes' page-cache writeback, while the reads keep the thread's
//! priority. compio's write op leaves the SQE's `ioprio` at 0 (the
//! thread's); this op is the same write with it set. The priority is a
//! per-thread setting ([`set_append_priority`]), made once by each shard
//! thread at start, read by the real disk on that thread.

use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd};

use compio::buf::{IntoInner, IoBuf};
use compio::driver::{OpCode, OpEntry, SharedFd};
use io_uring::{opcode, types::Fd};

thread_local! {
    static APPEND_PRIORITY: Cell<u16> = const { Cell::new(0) };
}

/// Sets the I/O priority value (`ioprio_set(2)` encoding; 0 = the
/// thread's own) of the O_DIRECT appends this thread submits.
pub fn set_append_priority(value: u16) {
    APPEND_PRIORITY.with(|p| p.set(value));
}

/// This thread's append priority value (0 = the thread's own).
pub fn append_priority() -> u16 {
    APPEND_PRIORITY.with(Cell::get)
}

/// A write of `buffer` at `offset` with `ioprio` on the SQE.
pub struct PriorityWriteAt<T: IoBuf> {
    fd: SharedFd<std::fs::File>,
    offset: u64,
    buffer: T,
    ioprio: u16,
}

impl<T: IoBuf> PriorityWriteAt<T> {
    /// The op; submit it with `compio::runtime::submit`.
    pub fn new(fd: SharedFd<std::fs::File>, offset: u64, buffer: T, ioprio: u16) -> Self {
        Self { fd, offset, buffer, ioprio }
    }
}

// SAFETY: the entry points into `buffer`, which the op owns (and the
// runtime keeps alive, unmoved, until the kernel completes it), and at the
// descriptor, which the shared fd keeps open as long.
unsafe impl<T: IoBuf> OpCode for PriorityWriteAt<T> {
    type Control = ();

    fn create_entry(&mut self, _: &mut Self::Control) -> OpEntry {
        let slice = self.buffer.as_init();
        opcode::Write::new(Fd(self.fd.as_fd().as_raw_fd()), slice.as_ptr(), slice.len().try_into().unwrap_or(u32::MAX))
            .offset(self.offset)
            .ioprio(self.ioprio)
            .build()
            .into()
    }
}

impl<T: IoBuf> IntoInner for PriorityWriteAt<T> {
    type Inner = T;

    fn into_inner(self) -> T {
        self.buffer
    }
}
