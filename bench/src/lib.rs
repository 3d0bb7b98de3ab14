//! Shardline's benchmark crate: the load generator and side-by-side
//! harness against Apache Kafka (`shardline-bench`), and the engine's
//! criterion benchmarks (`benches/engine.rs`) with the helpers they share.

pub mod broker_stats;
pub mod cluster;
pub mod harness;
pub mod load;
pub mod machine;
pub mod partitions;
pub mod profile;
pub mod report;
pub mod workload;

use std::path::Path;
use std::rc::Rc;

use bytes::BytesMut;
use shardline_engine::format::batch::build::simple_batch;
use shardline_engine::log::cache::BatchCache;
use shardline_engine::{HighWatermarkPolicy, Log, LogConfig, LogOptions, RealDisk};

/// A valid uncompressed batch of about `bytes` bytes (one record).
pub fn batch_of(bytes: usize) -> BytesMut {
    let value = bytes.saturating_sub(61 + 16).max(1);
    BytesMut::from(&simple_batch(0, 1, value)[..])
}

/// Opens a benchmark log in `dir` with production defaults and a cache of
/// `cache_bytes` (0 forces reads from the files).
pub async fn open_log(dir: &Path, cache_bytes: usize) -> Log<RealDisk> {
    let options = LogOptions {
        config: LogConfig::default(),
        policy: HighWatermarkPolicy::Durable,
        cache: BatchCache::shared(cache_bytes),
        cache_key: 0,
        indexes: shardline_engine::log::index_budget::IndexBudget::shared(64 << 20),
        clock: shardline_engine::runtime::clock::system_clock(),
    };
    Log::open(RealDisk, dir, options, 0).await.expect("open benchmark log")
}

/// How a benchmark producer waits after each append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Wait until written to the file (acks=1).
    Written,
    /// Wait for fdatasync (acks=all); with many producers, group commit.
    Durable,
}

/// Appends `batches` copies of `template` from `producers` concurrent tasks,
/// each waiting for `ack` after every append. Returns the bytes appended.
pub async fn produce(log: &Log<RealDisk>, template: &BytesMut, batches: usize, producers: usize, ack: Ack) -> u64 {
    let per_producer = batches.div_ceil(producers);
    let template = Rc::new(template.clone());
    let tasks: Vec<_> = (0..producers)
        .map(|_| {
            let log = log.clone();
            let template = template.clone();
            compio::runtime::spawn(async move {
                for _ in 0..per_producer {
                    let info = log.append((*template).clone(), 0, 0).await.expect("append");
                    let result = match ack {
                        Ack::Written => log.wait_written(info.last_offset + 1).await,
                        Ack::Durable => log.wait_durable(info.last_offset + 1).await,
                    };
                    result.expect("ack");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("producer task");
    }
    (per_producer * producers * template.len()) as u64
}
