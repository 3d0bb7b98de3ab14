//! The leader-epoch cache of one partition: for each leader epoch, the first
//! offset written in it. Followers use it (through OffsetForLeaderEpoch) to
//! find where to truncate after a leader change. Checkpointed to
//! `leader-epoch-checkpoint` in Kafka's text format. Pure data, owned by the
//! partition on its shard.

/// Epoch → start offset entries, both strictly increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<(i32, i64)>,
}

/// Kafka's "undefined" epoch and offset answer.
pub const UNDEFINED: (i32, i64) = (-1, -1);

impl LeaderEpochCache {
    /// The entries, oldest first.
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// The newest epoch, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// Records that `epoch` starts at `start_offset` when it is newer than the
    /// latest epoch. Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        match self.entries.last() {
            Some(&(latest, _)) if epoch <= latest => false,
            Some(&(_, latest_start)) => {
                assert!(start_offset >= latest_start, "epoch start offsets must not decrease");
                self.entries.push((epoch, start_offset));
                true
            }
            None => {
                self.entries.push((epoch, start_offset));
                true
            }
        }
    }

    /// OffsetForLeaderEpoch: the largest epoch ≤ `epoch` and the offset where
    /// the next larger epoch starts (or `log_end` for the latest epoch).
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> (i32, i64) {
        match self.entries.last() {
            None => UNDEFINED,
            Some(&(latest, _)) if epoch >= latest => (latest, log_end),
            Some(_) => {
                let next = self.entries.partition_point(|&(e, _)| e <= epoch);
                if next == 0 {
                    return UNDEFINED;
                }
                (self.entries[next - 1].0, self.entries[next].1)
            }
        }
    }

    /// Removes epochs that start at or after `offset` (log truncated there).
    pub fn truncate_from_end(&mut self, offset: i64) {
        self.entries.retain(|&(_, start)| start < offset);
    }

    /// Drops epochs wholly before the new log start `offset`, moving the
    /// start of the epoch that covers it up to `offset`.
    pub fn truncate_from_start(&mut self, offset: i64) {
        let before = self.entries.partition_point(|&(_, start)| start <= offset);
        if before == 0 {
            return;
        }
        let covering = self.entries[before - 1].0;
        self.entries.drain(..before);
        self.entries.insert(0, (covering, offset));
    }

    /// Kafka's checkpoint text: version 0, count, then "epoch offset" lines.
    pub fn encode(&self) -> String {
        let mut out = format!("0\n{}\n", self.entries.len());
        for (epoch, offset) in &self.entries {
            out.push_str(&format!("{epoch} {offset}\n"));
        }
        out
    }

    /// Parses a checkpoint; `None` when it is malformed.
    pub fn decode(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()?.trim() != "0" {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        let mut cache = Self::default();
        for line in lines.by_ref().take(count.min(1 << 20)) {
            let mut parts = line.split_whitespace();
            let epoch: i32 = parts.next()?.parse().ok()?;
            let offset: i64 = parts.next()?.parse().ok()?;
            if let Some(&(last_epoch, last_offset)) = cache.entries.last() {
                if epoch <= last_epoch || offset < last_offset {
                    return None;
                }
            }
            cache.entries.push((epoch, offset));
        }
        (cache.entries.len() == count).then_some(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assign_lookup_and_truncate() {
        let mut cache = LeaderEpochCache::default();
        assert_eq!(cache.end_offset_for(0, 0), UNDEFINED);
        assert!(cache.assign(1, 0));
        assert!(!cache.assign(1, 5));
        assert!(cache.assign(3, 10));
        assert!(cache.assign(4, 20));
        assert_eq!(cache.end_offset_for(4, 30), (4, 30));
        assert_eq!(cache.end_offset_for(3, 30), (3, 20));
        assert_eq!(cache.end_offset_for(2, 30), (1, 10));
        assert_eq!(cache.end_offset_for(0, 30), UNDEFINED);
        let decoded = LeaderEpochCache::decode(&cache.encode()).expect("round trip");
        assert_eq!(decoded, cache);
        cache.truncate_from_end(15);
        assert_eq!(cache.entries(), &[(1, 0), (3, 10)]);
        cache.truncate_from_start(12);
        assert_eq!(cache.entries(), &[(3, 12)]);
        assert!(LeaderEpochCache::decode("0\n2\n1 0\n").is_none());
        assert!(LeaderEpochCache::decode("0\n2\n3 0\n1 5\n").is_none());
    }
}
