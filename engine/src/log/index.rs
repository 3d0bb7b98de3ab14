//! Sparse per-segment indexes in Kafka's fixed-width on-disk format.
//!
//! `<base>.index`: 8-byte entries (relative offset u32, file position u32),
//! big-endian. `<base>.timeindex`: 12-byte entries (timestamp i64, relative
//! offset u32). Both are hints: a lookup gives a position at or before the
//! target and the caller scans forward, so a missing tail is harmless and a
//! corrupt file is detected on load and rebuilt. Pure data, owned by the
//! segment on the partition's shard.

/// Size of one offset index entry on disk.
pub const OFFSET_ENTRY_BYTES: usize = 8;
/// Size of one time index entry on disk.
pub const TIME_ENTRY_BYTES: usize = 12;

/// Why an index file was rejected on load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt index: {0}")]
pub struct CorruptIndex(pub &'static str);

/// Offset → file position entries of one segment, batch base offsets only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetIndex {
    base_offset: i64,
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// Bytes of memory its entries take.
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(u32, u32)>()
    }

    /// An empty index for the segment starting at `base_offset`.
    pub fn new(base_offset: i64) -> Self {
        Self { base_offset, entries: Vec::new() }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last entry as (offset, position).
    pub fn last(&self) -> Option<(i64, u64)> {
        self.entries.last().map(|&(rel, pos)| (self.base_offset + i64::from(rel), u64::from(pos)))
    }

    /// Records that the batch with base `offset` starts at `position`.
    pub fn append(&mut self, offset: i64, position: u64) {
        let relative = offset - self.base_offset;
        assert!(relative >= 0 && relative <= i64::from(u32::MAX));
        assert!(position <= u64::from(u32::MAX));
        if let Some(&(last_rel, last_pos)) = self.entries.last() {
            assert!(relative as u32 > last_rel && position as u32 > last_pos);
        }
        self.entries.push((relative as u32, position as u32));
    }

    /// The indexed (offset, position) at or before `target`, or the segment
    /// start when none is.
    pub fn lookup(&self, target: i64) -> (i64, u64) {
        let relative = target - self.base_offset;
        if relative < 0 {
            return (self.base_offset, 0);
        }
        let relative = relative.min(i64::from(u32::MAX)) as u32;
        let count = self.entries.partition_point(|&(rel, _)| rel <= relative);
        match count {
            0 => (self.base_offset, 0),
            n => {
                let (rel, pos) = self.entries[n - 1];
                (self.base_offset + i64::from(rel), u64::from(pos))
            }
        }
    }

    /// Drops entries for batches at or after `offset`.
    pub fn truncate_to_offset(&mut self, offset: i64) {
        let keep = self.entries.partition_point(|&(rel, _)| self.base_offset + i64::from(rel) < offset);
        self.entries.truncate(keep);
    }

    /// How many entries, from the first, point below `offset`.
    pub fn count_below(&self, offset: i64) -> usize {
        self.entries.partition_point(|&(rel, _)| self.base_offset + i64::from(rel) < offset)
    }

    /// Kafka's on-disk bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_range(0, self.entries.len())
    }

    /// On-disk bytes of entries `from..to`.
    pub fn encode_range(&self, from: usize, to: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(to.saturating_sub(from) * OFFSET_ENTRY_BYTES);
        for &(rel, pos) in &self.entries[from..to] {
            out.extend_from_slice(&rel.to_be_bytes());
            out.extend_from_slice(&pos.to_be_bytes());
        }
        out
    }

    /// Loads an index file, checking that entries strictly increase and stay
    /// inside the segment (`segment_bytes` long). Trailing zero entries from a
    /// preallocated file end the index.
    pub fn decode(base_offset: i64, bytes: &[u8], segment_bytes: u64) -> Result<Self, CorruptIndex> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_BYTES) {
            return Err(CorruptIndex("offset index size is not a multiple of 8"));
        }
        let mut index = Self::new(base_offset);
        for entry in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
            let rel = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
            let pos = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]);
            if rel == 0 && pos == 0 && !index.entries.is_empty() {
                break;
            }
            if u64::from(pos) >= segment_bytes.max(1) {
                return Err(CorruptIndex("offset index position beyond the segment"));
            }
            if let Some(&(last_rel, last_pos)) = index.entries.last() {
                if rel <= last_rel || pos <= last_pos {
                    return Err(CorruptIndex("offset index entries do not increase"));
                }
            }
            index.entries.push((rel, pos));
        }
        Ok(index)
    }
}

/// Timestamp → offset entries of one segment: each entry says that no batch
/// before `offset` has a timestamp above `timestamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeIndex {
    base_offset: i64,
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Bytes of memory its entries take.
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(i64, u32)>()
    }

    /// An empty time index for the segment starting at `base_offset`.
    pub fn new(base_offset: i64) -> Self {
        Self { base_offset, entries: Vec::new() }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The newest entry as (timestamp, offset).
    pub fn last(&self) -> Option<(i64, i64)> {
        self.entries.last().map(|&(ts, rel)| (ts, self.base_offset + i64::from(rel)))
    }

    /// Adds an entry when `timestamp` is newer than the last one.
    pub fn maybe_append(&mut self, timestamp: i64, offset: i64) {
        let relative = offset - self.base_offset;
        assert!(relative >= 0 && relative <= i64::from(u32::MAX));
        match self.entries.last() {
            Some(&(last_ts, last_rel)) if timestamp <= last_ts || relative as u32 <= last_rel => {}
            _ => self.entries.push((timestamp, relative as u32)),
        }
    }

    /// The offset to start scanning from for the first batch with a
    /// timestamp at or after `target`.
    pub fn lookup(&self, target: i64) -> i64 {
        let count = self.entries.partition_point(|&(ts, _)| ts < target);
        match count {
            0 => self.base_offset,
            n => self.base_offset + i64::from(self.entries[n - 1].1),
        }
    }

    /// Drops entries pointing at or after `offset`.
    pub fn truncate_to_offset(&mut self, offset: i64) {
        let keep = self.entries.partition_point(|&(_, rel)| self.base_offset + i64::from(rel) < offset);
        self.entries.truncate(keep);
    }

    /// How many entries, from the first, point below `offset`.
    pub fn count_below(&self, offset: i64) -> usize {
        self.entries.partition_point(|&(_, rel)| self.base_offset + i64::from(rel) < offset)
    }

    /// Kafka's on-disk bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_range(0, self.entries.len())
    }

    /// On-disk bytes of entries `from..to`.
    pub fn encode_range(&self, from: usize, to: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(to.saturating_sub(from) * TIME_ENTRY_BYTES);
        for &(ts, rel) in &self.entries[from..to] {
            out.extend_from_slice(&ts.to_be_bytes());
            out.extend_from_slice(&rel.to_be_bytes());
        }
        out
    }

    /// Loads a time index file, checking that timestamps and offsets increase.
    pub fn decode(base_offset: i64, bytes: &[u8]) -> Result<Self, CorruptIndex> {
        if !bytes.len().is_multiple_of(TIME_ENTRY_BYTES) {
            return Err(CorruptIndex("time index size is not a multiple of 12"));
        }
        let mut index = Self::new(base_offset);
        for entry in bytes.chunks_exact(TIME_ENTRY_BYTES) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&entry[..8]);
            let ts = i64::from_be_bytes(ts);
            let rel = u32::from_be_bytes([entry[8], entry[9], entry[10], entry[11]]);
            if ts == 0 && rel == 0 && !index.entries.is_empty() {
                break;
            }
            if let Some(&(last_ts, last_rel)) = index.entries.last() {
                if ts <= last_ts || rel <= last_rel {
                    return Err(CorruptIndex("time index entries do not increase"));
                }
            }
            index.entries.push((ts, rel));
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn offset_lookup_matches_linear_scan(gaps in proptest::collection::vec((1i64..50, 1u64..5000), 0..200),
                                             target in 0i64..12_000) {
            let base = 100;
            let mut index = OffsetIndex::new(base);
            let (mut offset, mut position) = (base, 0u64);
            let mut model = vec![];
            for (offset_gap, position_gap) in gaps {
                offset += offset_gap;
                position += position_gap;
                index.append(offset, position);
                model.push((offset, position));
            }
            let expected = model.iter().rev().find(|(o, _)| *o <= target).copied().unwrap_or((base, 0));
            prop_assert_eq!(index.lookup(target), expected);
            let decoded = OffsetIndex::decode(base, &index.encode(), position + 1).expect("decodes");
            prop_assert_eq!(&decoded, &index);
            index.truncate_to_offset(target);
            prop_assert!(index.last().is_none_or(|(o, _)| o < target));
        }
    }

    #[test]
    fn corrupt_offset_index_is_rejected() {
        let mut index = OffsetIndex::new(0);
        index.append(5, 100);
        index.append(9, 200);
        let mut bytes = index.encode();
        assert!(OffsetIndex::decode(0, &bytes[..7], 1000).is_err());
        assert!(OffsetIndex::decode(0, &bytes, 150).is_err());
        bytes[8..12].copy_from_slice(&1u32.to_be_bytes());
        assert!(OffsetIndex::decode(0, &bytes, 1000).is_err());
        let mut padded = index.encode();
        padded.extend_from_slice(&[0u8; 16]);
        assert_eq!(OffsetIndex::decode(0, &padded, 1000).expect("zero tail").len(), 2);
    }

    #[test]
    fn time_index_lookup_and_truncate() {
        let mut index = TimeIndex::new(10);
        index.maybe_append(1_000, 10);
        index.maybe_append(900, 12); // older: skipped
        index.maybe_append(2_000, 20);
        index.maybe_append(3_000, 30);
        assert_eq!(index.len(), 3);
        assert_eq!(index.lookup(500), 10);
        assert_eq!(index.lookup(1_500), 10);
        assert_eq!(index.lookup(2_500), 20);
        assert_eq!(index.lookup(9_999), 30);
        assert_eq!(TimeIndex::decode(10, &index.encode()).expect("decodes"), index);
        index.truncate_to_offset(20);
        assert_eq!(index.last(), Some((1_000, 10)));
    }
}
