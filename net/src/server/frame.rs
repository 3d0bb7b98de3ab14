//! Bounded Kafka framing: a 4-byte big-endian size, then that many bytes.
//! The size is checked against the limit before anything is allocated; the
//! body is read into a buffer of exactly that size. Per connection, on the
//! shard that accepted it.

use std::io;

use bytes::Bytes;
use compio::buf::{BufResult, IntoInner};
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// Negative or larger than allowed.
    #[error("frame size {0} outside 0..={1}")]
    BadSize(i64, usize),
    /// I/O error (including a connection closed mid-frame).
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

/// Reads one frame of at most `max_bytes`.
pub async fn read_frame(stream: &mut TcpStream, max_bytes: usize) -> Result<Bytes, FrameError> {
    let BufResult(result, size) = stream.read_exact([0u8; 4]).await;
    if let Err(error) = result {
        return Err(if error.kind() == io::ErrorKind::UnexpectedEof { FrameError::Closed } else { error.into() });
    }
    let size = i32::from_be_bytes(size);
    if size < 8 || size as usize > max_bytes {
        return Err(FrameError::BadSize(i64::from(size), max_bytes));
    }
    let buffer = Vec::with_capacity(size as usize);
    let BufResult(result, buffer) = stream.read_exact(compio::buf::IoBuf::slice(buffer, 0..size as usize)).await;
    result?;
    Ok(Bytes::from(buffer.into_inner()))
}

/// Writes one frame (size prefix included in `frame`).
pub async fn write_frame(stream: &mut TcpStream, frame: bytes::BytesMut) -> io::Result<()> {
    let BufResult(result, _) = stream.write_all(frame).await;
    result
}
