//! What a partition log is opened with besides its directory and disk: the
//! topic's log configuration, the high watermark policy, the shard's batch
//! cache, index budget and clock. Built by the partition's owner on its shard.

use crate::log::cache::{CacheKey, SharedBatchCache};
use crate::log::config::LogConfig;
use crate::log::index_budget::SharedIndexBudget;
use crate::log::offsets::HighWatermarkPolicy;
use crate::runtime::clock::SharedClock;

/// Everything a log needs besides its directory and disk.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Topic-level configuration.
    pub config: LogConfig,
    /// What the high watermark follows.
    pub policy: HighWatermarkPolicy,
    /// The shard's batch cache.
    pub cache: SharedBatchCache,
    /// This partition's key in the shard's cache (and index budget).
    pub cache_key: CacheKey,
    /// The shard's budget for loaded sealed-segment indexes.
    pub indexes: SharedIndexBudget,
    /// The shard's clock (`flush.ms`, `segment.ms`).
    pub clock: SharedClock,
}
