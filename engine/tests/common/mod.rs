//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use bytes::BytesMut;
use shardline_engine::format::batch::build::{batch, TestRecord};
use shardline_engine::log::cache::BatchCache;
use shardline_engine::{HighWatermarkPolicy, LogConfig, LogOptions};

/// A valid batch whose record values are derived from `seed`.
pub fn seeded_batch(seed: u64, records: usize, value_bytes: usize, timestamp: i64) -> BytesMut {
    let records: Vec<TestRecord> = (0..records)
        .map(|i| TestRecord {
            key: Some(seed.to_be_bytes().to_vec()),
            value: Some(
                (0..value_bytes).map(|b| (seed.wrapping_mul(31) as usize).wrapping_add(i * 7 + b) as u8).collect(),
            ),
            timestamp_delta: i as i64,
        })
        .collect();
    BytesMut::from(&batch(timestamp, &records)[..])
}

/// Bytes of a stored batch that the log must keep exactly as sent: all but
/// the base offset and partition leader epoch (which the log assigns).
pub fn payload(batch: &[u8]) -> &[u8] {
    &batch[16..]
}

/// Small segments and chunks so tests roll and wrap often.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        segment_ms: None,
        index_interval_bytes: 1024,
        chunk_bytes: 16 * 1024,
        max_pending_chunks: 8,
        max_batch_bytes: 100 * 1024,
        retention_ms: None,
        ..LogConfig::default()
    }
}

pub fn options(config: LogConfig, cache_bytes: usize) -> LogOptions {
    LogOptions {
        config,
        policy: HighWatermarkPolicy::Durable,
        cache: BatchCache::shared(cache_bytes),
        cache_key: 1,
        // Small: sealed indexes are dropped and reloaded throughout the tests.
        indexes: shardline_engine::log::index_budget::IndexBudget::shared(1024),
        clock: shardline_engine::runtime::clock::system_clock(),
    }
}

/// Splits a read result into (base offset, batch bytes).
pub fn split_batches(chunks: &[bytes::Bytes]) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    for chunk in chunks {
        for (at, header) in shardline_engine::format::batch::BatchIter::new(chunk) {
            out.push((header.base_offset, chunk[at..at + header.total_bytes()].to_vec()));
        }
    }
    out
}

/// Every byte a read returned, in order: its batches, or its resident file
/// range read back from the file.
pub fn result_bytes(result: &shardline_engine::ReadResult) -> Vec<u8> {
    let mut out: Vec<u8> = result.batches.iter().flat_map(|b| b.iter().copied()).collect();
    if let Some(range) = &result.resident {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0u8; range.len];
        range.file.read_exact_at(&mut bytes, range.position).expect("read the resident range back");
        out.extend_from_slice(&bytes);
    }
    out
}
