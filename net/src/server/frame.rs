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

use crate::api::fetch_encode::{FrameSegments, Segment};
use crate::server::splice::SplicePipe;

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

/// Writes one frame (size prefix included in its first segment): each run
/// of in-memory segments in one `sendmsg` with a segment per iovec, each
/// file range spliced through the connection's `pipe` (made on first use).
pub async fn write_frame(
    stream: &mut TcpStream,
    frame: FrameSegments,
    pipe: &mut Option<SplicePipe>,
) -> io::Result<()> {
    let mut run: Vec<Bytes> = Vec::new();
    for segment in frame {
        match segment {
            Segment::Bytes(bytes) => run.push(bytes),
            Segment::File(range) => {
                write_run(stream, std::mem::take(&mut run)).await?;
                let pipe = match pipe {
                    Some(pipe) => pipe,
                    None => pipe.insert(SplicePipe::new().await?),
                };
                pipe.send(stream, &range).await?;
            }
        }
    }
    write_run(stream, run).await
}

/// Writes in-memory segments in order, in one `sendmsg` where there are
/// several.
async fn write_run(stream: &mut TcpStream, mut run: Vec<Bytes>) -> io::Result<()> {
    let BufResult(result, _) = match run.len() {
        0 => return Ok(()),
        1 => {
            let whole = run.pop().unwrap_or_default();
            stream.write_all(whole).await.map_buffer(|b| vec![b])
        }
        _ => stream.write_vectored_all(run).await,
    };
    result
}
