//! One segment of a partition log: `<base>.log` with its `<base>.index` and
//! `<base>.timeindex`, named as Kafka names them (base offset, 20 digits).
//! Owned by the partition's log on its shard.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::format::batch::BatchHeader;
use crate::log::index::{OffsetIndex, TimeIndex};
use crate::storage::disk::Disk;

/// File name extension of segment data.
pub const LOG_SUFFIX: &str = "log";
/// File name extension of the offset index.
pub const INDEX_SUFFIX: &str = "index";
/// File name extension of the time index.
pub const TIME_INDEX_SUFFIX: &str = "timeindex";

/// `<dir>/<base offset, 20 digits>.<suffix>`.
pub fn segment_file(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}"))
}

/// The base offset of a segment data file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// One segment's metadata, read handle and (once loaded) indexes.
#[derive(Debug)]
pub struct Segment<D: Disk> {
    /// Offset of the first batch (also the file name).
    pub base_offset: i64,
    /// Offset after the last batch appended to this segment.
    pub next_offset: i64,
    /// Bytes of batches appended (the logical size, whether written or not).
    pub size: u64,
    /// Largest batch max timestamp seen, -1 when none.
    pub max_timestamp: i64,
    /// Base offset of the batch carrying `max_timestamp`.
    pub offset_of_max_timestamp: i64,
    /// Wall time when the segment was created (for `segment.ms`).
    pub created_ms: i64,
    /// Page-cache read handle of the data file.
    pub read_file: Rc<D::File>,
    /// Offset index, `None` until first needed for a sealed segment.
    pub index: Option<OffsetIndex>,
    /// Time index, `None` until first needed for a sealed segment.
    pub time_index: Option<TimeIndex>,
    /// Bytes appended since the last index entry.
    pub bytes_since_index: u64,
    /// Offset index entries already written to the index file.
    pub persisted_index_entries: usize,
    /// Time index entries already written to the time index file.
    pub persisted_time_entries: usize,
}

impl<D: Disk> Segment<D> {
    /// A segment with loaded (possibly empty) indexes.
    pub fn new(base_offset: i64, read_file: Rc<D::File>, created_ms: i64) -> Self {
        Self {
            base_offset,
            next_offset: base_offset,
            size: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            created_ms,
            read_file,
            index: Some(OffsetIndex::new(base_offset)),
            time_index: Some(TimeIndex::new(base_offset)),
            bytes_since_index: 0,
            persisted_index_entries: 0,
            persisted_time_entries: 0,
        }
    }

    /// Path of this segment's file with `suffix`.
    pub fn path(&self, dir: &Path, suffix: &str) -> PathBuf {
        segment_file(dir, self.base_offset, suffix)
    }

    /// Whether no batch was appended.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Accounts a batch appended at `position` (the segment's current size),
    /// adding sparse index entries every `index_interval_bytes`.
    pub fn record_batch(&mut self, header: &BatchHeader, position: u64, index_interval_bytes: u64) {
        assert_eq!(position, self.size, "batches are appended at the end");
        assert!(header.base_offset >= self.next_offset, "offsets increase");
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        if self.size > 0 && self.bytes_since_index >= index_interval_bytes {
            if let Some(index) = self.index.as_mut() {
                index.append(header.base_offset, position);
            }
            if let Some(time_index) = self.time_index.as_mut() {
                time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += header.total_bytes() as u64;
        self.size += header.total_bytes() as u64;
        self.next_offset = header.next_offset();
    }

    /// Adds the final time index entry (the segment's max timestamp), as
    /// Kafka does when a segment is rolled or closed.
    pub fn finish_time_index(&mut self) {
        if self.max_timestamp >= 0 {
            if let Some(time_index) = self.time_index.as_mut() {
                time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let path = segment_file(Path::new("/d"), 42, LOG_SUFFIX);
        assert_eq!(path, Path::new("/d/00000000000000000042.log"));
        assert_eq!(parse_segment_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("00000000000000000042.index"), None);
    }
}
