//! The per-shard batch cache: recent appended batches of every partition on
//! the shard, kept as the `Bytes` the producer sent (offsets already
//! assigned), bounded in total bytes, oldest insertion evicted first.
//!
//! Serves fetches of the newest data without touching the file (O_DIRECT
//! writes bypass the page cache). One instance per shard, shared by that
//! shard's partition logs through [`SharedBatchCache`]; never crosses cores.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use bytes::Bytes;

/// Identifies a partition log within one shard's cache.
pub type CacheKey = u64;

/// The cache shared by the logs of one shard.
pub type SharedBatchCache = Rc<RefCell<BatchCache>>;

#[derive(Debug, Clone)]
struct CachedBatch {
    base_offset: i64,
    next_offset: i64,
    bytes: Bytes,
}

/// See the module documentation.
#[derive(Debug)]
pub struct BatchCache {
    limit_bytes: usize,
    used_bytes: usize,
    live_batches: usize,
    partitions: HashMap<CacheKey, VecDeque<CachedBatch>>,
    insertion_order: VecDeque<(CacheKey, i64)>,
}

impl BatchCache {
    /// A cache holding at most `limit_bytes` of batches.
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            limit_bytes,
            used_bytes: 0,
            live_batches: 0,
            partitions: HashMap::new(),
            insertion_order: VecDeque::new(),
        }
    }

    /// A new shared cache for one shard.
    pub fn shared(limit_bytes: usize) -> SharedBatchCache {
        Rc::new(RefCell::new(Self::new(limit_bytes)))
    }

    /// Bytes currently held.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// Adds a batch `[base_offset, next_offset)` of partition `key`. A batch
    /// that does not follow the partition's cached range replaces it.
    pub fn insert(&mut self, key: CacheKey, base_offset: i64, next_offset: i64, bytes: Bytes) {
        assert!(next_offset > base_offset);
        if bytes.len() > self.limit_bytes {
            return;
        }
        let contiguous = self
            .partitions
            .get(&key)
            .and_then(|batches| batches.back())
            .is_none_or(|last| last.next_offset == base_offset);
        if !contiguous {
            self.drop_partition(key);
        }
        self.used_bytes += bytes.len();
        self.live_batches += 1;
        let batch = CachedBatch { base_offset, next_offset, bytes };
        self.partitions.entry(key).or_default().push_back(batch);
        self.insertion_order.push_back((key, base_offset));
        self.evict();
        self.compact_order();
    }

    fn evict(&mut self) {
        while self.used_bytes > self.limit_bytes {
            let Some((key, base)) = self.insertion_order.pop_front() else { break };
            let Some(batches) = self.partitions.get_mut(&key) else { continue };
            if batches.front().is_some_and(|b| b.base_offset == base) {
                if let Some(evicted) = batches.pop_front() {
                    self.used_bytes -= evicted.bytes.len();
                    self.live_batches -= 1;
                }
            }
        }
        debug_assert!(self.used_bytes <= self.limit_bytes);
    }

    /// Stale order entries (left by truncation) are purged when they dominate.
    fn compact_order(&mut self) {
        if self.insertion_order.len() <= 2 * self.live_batches + 1024 {
            return;
        }
        let partitions = &self.partitions;
        self.insertion_order.retain(|(key, base)| {
            partitions.get(key).is_some_and(|batches| batches.iter().any(|b| b.base_offset == *base))
        });
    }

    /// Whole batches from the one containing `offset`, below `end_offset`,
    /// up to `max_bytes` (the first batch always). `None` when `offset` is
    /// not cached.
    pub fn read(&self, key: CacheKey, offset: i64, end_offset: i64, max_bytes: usize) -> Option<Vec<Bytes>> {
        let batches = self.partitions.get(&key)?;
        let first = batches.front()?;
        if offset < first.base_offset {
            return None;
        }
        let start = batches.partition_point(|b| b.next_offset <= offset);
        let mut out = Vec::new();
        let mut total = 0usize;
        for batch in batches.iter().skip(start) {
            if batch.base_offset >= end_offset || batch.next_offset > end_offset {
                break;
            }
            if !out.is_empty() && total + batch.bytes.len() > max_bytes {
                break;
            }
            total += batch.bytes.len();
            out.push(batch.bytes.clone());
        }
        if out.is_empty() && start >= batches.len() {
            return None;
        }
        Some(out)
    }

    /// Drops cached batches that end after `offset` (log truncated there).
    pub fn truncate(&mut self, key: CacheKey, offset: i64) {
        let Some(batches) = self.partitions.get_mut(&key) else { return };
        while batches.back().is_some_and(|b| b.next_offset > offset) {
            if let Some(batch) = batches.pop_back() {
                self.used_bytes -= batch.bytes.len();
                self.live_batches -= 1;
            }
        }
    }

    /// Drops cached batches wholly before `offset` (log start advanced).
    pub fn remove_before(&mut self, key: CacheKey, offset: i64) {
        let Some(batches) = self.partitions.get_mut(&key) else { return };
        while batches.front().is_some_and(|b| b.next_offset <= offset) {
            if let Some(batch) = batches.pop_front() {
                self.used_bytes -= batch.bytes.len();
                self.live_batches -= 1;
            }
        }
    }

    /// Forgets a partition entirely.
    pub fn drop_partition(&mut self, key: CacheKey) {
        if let Some(batches) = self.partitions.remove(&key) {
            for batch in batches {
                self.used_bytes -= batch.bytes.len();
                self.live_batches -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn reads_whole_batches_and_evicts_oldest() {
        let mut cache = BatchCache::new(300);
        cache.insert(1, 0, 10, bytes(100));
        cache.insert(2, 0, 5, bytes(100));
        cache.insert(1, 10, 20, bytes(100));
        assert_eq!(cache.read(1, 15, 100, 1000).map(|v| v.len()), Some(1));
        assert_eq!(cache.read(1, 0, 100, 150).map(|v| v.len()), Some(1));
        assert_eq!(cache.read(1, 0, 100, 1000).map(|v| v.len()), Some(2));
        assert_eq!(cache.read(1, 0, 10, 1000).map(|v| v.len()), Some(1));
        cache.insert(2, 5, 6, bytes(100));
        assert_eq!(cache.used_bytes(), 300);
        assert!(cache.read(1, 0, 100, 1000).is_none(), "oldest evicted");
        assert_eq!(cache.read(1, 20, 100, 1000).map(|v| v.len()), None);
        cache.truncate(2, 5);
        assert_eq!(cache.used_bytes(), 200);
        cache.insert(1, 30, 31, bytes(10)); // gap: replaces partition 1
        assert_eq!(cache.used_bytes(), 110);
        assert!(cache.read(1, 15, 100, 1000).is_none());
        cache.remove_before(2, 5);
        assert_eq!(cache.used_bytes(), 10);
    }
}
