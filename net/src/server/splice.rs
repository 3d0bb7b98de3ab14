//! Zero-copy sends of resident file ranges: a connection's [`SplicePipe`]
//! moves page references from a segment file into a pipe with `splice(2)`
//! (inline: the pages are resident, so nothing waits for the disk), then
//! from the pipe to the socket through io_uring (compio's splice op, which
//! the kernel runs on an io-wq worker: a full socket buffer waits there,
//! never on the shard). The record bytes never enter user space. One pipe
//! per connection, made on its first spliced send; on the connection's
//! shard.

use std::io;
use std::os::fd::AsRawFd;

use compio::fs::pipe::{Receiver, Sender};
use compio::net::TcpStream;
use shardline_engine::log::FileRange;

/// The pipe size asked for: a splice moves at most this much per round.
pub const PIPE_BYTES: usize = 1 << 20;

/// A connection's pipe for splicing file ranges to its socket.
pub struct SplicePipe {
    receiver: Receiver,
    sender: Sender,
    capacity: usize,
}

impl SplicePipe {
    /// Makes the pipe, sized to [`PIPE_BYTES`] where the system allows
    /// (`fs.pipe-max-size`), else the default size.
    pub async fn new() -> io::Result<Self> {
        let (receiver, sender) = compio::fs::pipe::anonymous().await?;
        let fd = sender.as_raw_fd();
        // SAFETY: fcntl on an open pipe descriptor; a refusal keeps the size.
        let capacity = unsafe {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_BYTES as libc::c_int);
            libc::fcntl(fd, libc::F_GETPIPE_SZ)
        };
        if capacity <= 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { receiver, sender, capacity: capacity as usize })
    }

    /// Sends all of `range` to `stream`. An error (the file shorter than
    /// the range, a socket error) leaves the pipe unusable: the caller
    /// closes the connection.
    pub async fn send(&self, stream: &TcpStream, range: &FileRange) -> io::Result<()> {
        let mut sent = 0usize;
        while sent < range.len {
            let want = (range.len - sent).min(self.capacity);
            let filled = self.fill(range, sent as u64, want)?;
            let mut left = filled;
            while left > 0 {
                let moved = compio::fs::pipe::splice(&self.receiver, stream, left).await?;
                if moved == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                left -= moved;
            }
            sent += filled;
        }
        debug_assert_eq!(sent, range.len, "a send moves the whole range");
        Ok(())
    }

    /// Moves up to `want` bytes of `range` from `done` on into the (empty)
    /// pipe; returns how many.
    fn fill(&self, range: &FileRange, done: u64, want: usize) -> io::Result<usize> {
        let mut offset = (range.position + done) as libc::loff_t;
        loop {
            // SAFETY: both descriptors are open; `offset` outlives the call.
            let moved = unsafe {
                libc::splice(
                    range.file.as_raw_fd(),
                    &mut offset,
                    self.sender.as_raw_fd(),
                    std::ptr::null_mut(),
                    want,
                    libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
                )
            };
            if moved > 0 {
                return Ok(moved as usize);
            }
            if moved == 0 {
                // The file ended before the range did (truncated since).
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}
