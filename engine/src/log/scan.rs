//! Sequential batch scans over a segment file: recovery (validate every
//! batch, stop at the first invalid byte) and lookups (headers only). Runs on
//! the partition's shard; reads in bounded windows.

use crate::format::batch::{parse_header, validate_batch, BatchHeader, BATCH_HEADER_BYTES};
use crate::log::error::LogResult;
use crate::storage::disk::DiskFile;

/// Bytes read per scan step.
pub const SCAN_WINDOW_BYTES: usize = 1 << 20;

/// Where a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// File position after the last accepted batch.
    pub position: u64,
    /// Offset after the last accepted batch (the start offset when none).
    pub next_offset: i64,
    /// Whether the scan stopped on bytes that are not a valid batch before
    /// the end of the file (a torn or corrupt tail).
    pub stopped_early: bool,
}

/// How strictly a scan checks each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanCheck {
    /// Full validation including the CRC (recovery).
    Crc,
    /// Headers only (lookups over data that was validated on append).
    HeaderOnly,
}

/// Scans batches in `file` from `position` (whose first batch has base
/// offset ≥ `next_offset`) up to `file_len`, calling `visit` for each
/// accepted batch with its position, until `visit` returns false.
///
/// Accepts a batch only if its header parses, it lies wholly before
/// `file_len`, its offsets continue the sequence (strictly increasing), its
/// size is at most `max_batch_bytes` and (with [`ScanCheck::Crc`]) its CRC
/// matches.
pub async fn scan_batches<F: DiskFile>(
    file: &F,
    mut position: u64,
    mut next_offset: i64,
    file_len: u64,
    max_batch_bytes: usize,
    check: ScanCheck,
    mut visit: impl FnMut(u64, &BatchHeader) -> bool,
) -> LogResult<ScanEnd> {
    let mut window: Vec<u8> = Vec::new();
    let mut window_start = position;
    loop {
        if position + BATCH_HEADER_BYTES as u64 > file_len {
            let stopped_early = position < file_len;
            return Ok(ScanEnd { position, next_offset, stopped_early });
        }
        let in_window = (position - window_start) as usize;
        if in_window + BATCH_HEADER_BYTES > window.len() {
            window_start = position;
            let len = SCAN_WINDOW_BYTES.min((file_len - position) as usize);
            window = file.read_at(len, position).await?;
            if window.len() < BATCH_HEADER_BYTES {
                return Ok(ScanEnd { position, next_offset, stopped_early: true });
            }
            continue;
        }
        let header = match parse_header(&window[in_window..]) {
            Ok(header) => header,
            Err(_) => return Ok(ScanEnd { position, next_offset, stopped_early: true }),
        };
        let total = header.total_bytes();
        let fits = position + total as u64 <= file_len;
        if !fits
            || total > max_batch_bytes.max(BATCH_HEADER_BYTES)
            || header.base_offset < next_offset
            || header.last_offset_delta < 0
        {
            return Ok(ScanEnd { position, next_offset, stopped_early: true });
        }
        if in_window + total > window.len() {
            window_start = position;
            window = file.read_at(total.max(SCAN_WINDOW_BYTES.min((file_len - position) as usize)), position).await?;
            if window.len() < total {
                return Ok(ScanEnd { position, next_offset, stopped_early: true });
            }
            continue;
        }
        let bytes = &window[in_window..in_window + total];
        if check == ScanCheck::Crc && validate_batch(bytes, false).is_err() {
            return Ok(ScanEnd { position, next_offset, stopped_early: true });
        }
        if !visit(position, &header) {
            return Ok(ScanEnd { position, next_offset, stopped_early: false });
        }
        position += total as u64;
        next_offset = header.next_offset();
    }
}
