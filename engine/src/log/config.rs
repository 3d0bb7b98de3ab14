//! Per-partition log configuration, named after Kafka's topic configs where
//! one exists, with the bounds every buffer of the log must respect.

use crate::format::compression::Codec;

/// Configuration of one partition log. Lives with the log on its shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a non-empty segment older than this.
    pub segment_ms: Option<u64>,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u64,
    /// `flush.messages`: fdatasync after this many messages even without a
    /// waiter (None: only when asked).
    pub flush_messages: Option<u64>,
    /// `flush.ms`: fdatasync written data at least this often (None: never
    /// unless asked).
    pub flush_ms: Option<u64>,
    /// `retention.ms`: delete segments whose newest record is older.
    pub retention_ms: Option<u64>,
    /// `retention.bytes`: delete oldest segments while the log is larger.
    pub retention_bytes: Option<u64>,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_batch_bytes: usize,
    /// `message.timestamp.before.max.ms`: how far in the past a client
    /// record's CreateTime may lie (None: no bound).
    pub timestamp_before_max_ms: Option<u64>,
    /// `message.timestamp.after.max.ms`: how far in the future (None: no bound).
    pub timestamp_after_max_ms: Option<u64>,
    /// Size of one O_DIRECT tail chunk (multiple of 4 KiB).
    pub chunk_bytes: usize,
    /// Chunks the tail may hold before appends wait for the disk.
    pub max_pending_chunks: usize,
    /// Preallocate segments with fallocate.
    pub preallocate: bool,
    /// `compression.type`: the codec client batches are stored in (`None`:
    /// "producer", as sent); a batch in another codec is recompressed once,
    /// on produce.
    pub compression: Option<Codec>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            index_interval_bytes: 4096,
            flush_messages: None,
            flush_ms: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_batch_bytes: 1_048_588,
            timestamp_before_max_ms: None,
            timestamp_after_max_ms: None,
            chunk_bytes: 1 << 20,
            max_pending_chunks: 16,
            preallocate: true,
            compression: None,
        }
    }
}

impl LogConfig {
    /// Checks the invariants the log relies on; returns the offending key.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.segment_bytes < 14 || self.segment_bytes > i32::MAX as u64 {
            return Err("segment.bytes");
        }
        if self.index_interval_bytes == 0 {
            return Err("index.interval.bytes");
        }
        if self.chunk_bytes == 0 || !self.chunk_bytes.is_multiple_of(crate::storage::aligned::PAGE_BYTES) {
            return Err("chunk.bytes");
        }
        if self.max_pending_chunks < 2 {
            return Err("max.pending.chunks");
        }
        if self.max_batch_bytes == 0 {
            return Err("max.message.bytes");
        }
        if self.flush_messages == Some(0) {
            return Err("flush.messages");
        }
        Ok(())
    }
}
