//! Bounded Kafka framing: a 4-byte big-endian size, then that many bytes.
//! The size is checked against the limit before anything is read; the body
//! buffer grows as bytes arrive (doubling from [`FIRST_CHUNK`]), so a peer
//! that declares a large frame and sends little holds little memory. A
//! connection that sends nothing for the idle limit is closed. Per
//! connection, on the shard that accepted it.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use compio::buf::{BufResult, IntoInner, IoBuf};
use compio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use shardline_engine::runtime::clock::{timeout, Clock, Elapsed};

/// The body buffer's first allocation.
pub const FIRST_CHUNK: usize = 64 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// Negative or larger than allowed.
    #[error("frame size {0} outside 8..={1}")]
    BadSize(i64, usize),
    /// Nothing arrived for the idle limit.
    #[error("idle for {0:?}")]
    Idle(Duration),
    /// I/O error (including a connection closed mid-frame).
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

/// What one frame may be.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// Largest size accepted.
    pub max_bytes: usize,
    /// Longest wait for the next bytes.
    pub idle: Duration,
}

/// Reads one frame within `limits`, timing waits on `clock`.
pub async fn read_frame(stream: &mut TcpStream, limits: FrameLimits, clock: &dyn Clock) -> Result<Bytes, FrameError> {
    let idle = |_: Elapsed| FrameError::Idle(limits.idle);
    let BufResult(result, size) = timeout(clock, limits.idle, stream.read_exact([0u8; 4])).await.map_err(idle)?;
    if let Err(error) = result {
        return Err(if error.kind() == io::ErrorKind::UnexpectedEof { FrameError::Closed } else { error.into() });
    }
    let size = i32::from_be_bytes(size);
    if size < 8 || size as usize > limits.max_bytes {
        return Err(FrameError::BadSize(i64::from(size), limits.max_bytes));
    }
    let size = size as usize;
    let mut buffer: Vec<u8> = Vec::with_capacity(size.min(FIRST_CHUNK));
    while buffer.len() < size {
        let have = buffer.len();
        if have == buffer.capacity() {
            buffer.reserve_exact(have.min(size - have));
        }
        let end = buffer.capacity().min(size);
        let BufResult(result, slice) =
            timeout(clock, limits.idle, stream.read(buffer.slice(have..end))).await.map_err(idle)?;
        buffer = slice.into_inner();
        match result {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(read) => debug_assert_eq!(buffer.len(), have + read, "a read extends the buffer by what it read"),
            Err(error) => return Err(error.into()),
        }
    }
    assert_eq!(buffer.len(), size, "a frame body is exactly its declared size");
    Ok(Bytes::from(buffer))
}

/// Writes one frame (size prefix included in its first segment), in one
/// `sendmsg` with a segment per iovec where the frame has several.
pub async fn write_frame(stream: &mut TcpStream, mut frame: Vec<Bytes>) -> io::Result<()> {
    let BufResult(result, _) = if frame.len() == 1 {
        let whole = frame.pop().unwrap_or_default();
        stream.write_all(whole).await.map_buffer(|b| vec![b])
    } else {
        stream.write_vectored_all(frame).await
    };
    result
}
