//! The metadata log's bytes on disk, sans-IO: the frames of the log file
//! (`<data_dir>/__cluster_metadata-0/log`: Raft entries and hard states)
//! and the snapshot file beside it, and recovery from both. The quorum
//! makes the bytes; the core that drives it appends and fdatasyncs them
//! before anything that depends on them is sent.
//!
//! A frame is `[body length u32 LE][crc32c u32 LE of kind and body][kind
//! u8][body]`, the body a protobuf `Entry` or `HardState`. The log only
//! grows: an entry at an index the file already has replaces that index
//! and everything after it (Raft truncation), so recovery replays frames in
//! order. The first frame that is cut short or fails its CRC ends the log
//! (a torn write at a crash); recovery says where, for the driver to cut.

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState, Snapshot};

use crate::metadata::records::MAX_BATCH_BYTES;

const HEADER_BYTES: usize = 9;
const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
/// A frame body may be one batch plus protobuf framing.
const MAX_BODY_BYTES: usize = MAX_BATCH_BYTES + 4096;
const SNAPSHOT_MAGIC: &[u8; 4] = b"SLMS";
const SNAPSHOT_FORMAT: u8 = 1;
/// A snapshot holds the whole image: a bigger bound than one batch.
const MAX_SNAPSHOT_BYTES: usize = 1 << 30;

/// What the log and snapshot files held.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RecoveredLog {
    /// The newest snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot's compaction point, in index order,
    /// without gaps.
    pub entries: Vec<Entry>,
    /// The last hard state written.
    pub hard_state: HardState,
    /// Bytes of the log file that hold whole, valid frames; the rest is a
    /// torn tail to cut before appending.
    pub valid_log_bytes: usize,
}

/// A metadata log that is damaged beyond a torn tail.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    /// The snapshot file does not decode.
    #[error("metadata snapshot is damaged: {0}")]
    Snapshot(String),
    /// Entries skip an index.
    #[error("metadata log skips from index {last} to {next}")]
    Gap { last: u64, next: u64 },
}

/// The frame of one entry.
pub fn entry_frame(entry: &Entry, out: &mut Vec<u8>) {
    let body = entry.write_to_bytes().expect("entries always encode");
    frame(KIND_ENTRY, &body, out);
}

/// The frame of a hard state.
pub fn hard_state_frame(hard_state: &HardState, out: &mut Vec<u8>) {
    let body = hard_state.write_to_bytes().expect("hard states always encode");
    frame(KIND_HARD_STATE, &body, out);
}

fn frame(kind: u8, body: &[u8], out: &mut Vec<u8>) {
    assert!(body.len() <= MAX_BODY_BYTES, "a metadata frame of {} bytes is over the limit", body.len());
    let mut crc = crc32c::crc32c(&[kind]);
    crc = crc32c::crc32c_append(crc, body);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(body);
}

/// The snapshot file's bytes.
pub fn snapshot_file(snapshot: &Snapshot) -> Vec<u8> {
    let body = snapshot.write_to_bytes().expect("snapshots always encode");
    let mut out = Vec::with_capacity(body.len() + 13);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.push(SNAPSHOT_FORMAT);
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn read_snapshot(bytes: &[u8]) -> Result<Snapshot, LogError> {
    let damaged = |why: &str| LogError::Snapshot(why.to_string());
    if bytes.len() < 13 || &bytes[..4] != SNAPSHOT_MAGIC {
        return Err(damaged("no snapshot header"));
    }
    if bytes[4] != SNAPSHOT_FORMAT {
        return Err(damaged("unknown snapshot format"));
    }
    let crc = u32::from_le_bytes(bytes[5..9].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(bytes[9..13].try_into().expect("4 bytes")) as usize;
    if len > MAX_SNAPSHOT_BYTES || bytes.len() != 13 + len {
        return Err(damaged("snapshot length does not match the file"));
    }
    let body = &bytes[13..];
    if crc32c::crc32c(body) != crc {
        return Err(damaged("snapshot checksum mismatch"));
    }
    Snapshot::parse_from_bytes(body).map_err(|e| LogError::Snapshot(e.to_string()))
}

/// Reads the snapshot file (if there is one) and the log file back.
pub fn recover(snapshot: Option<&[u8]>, log: &[u8]) -> Result<RecoveredLog, LogError> {
    let snapshot = snapshot.map(read_snapshot).transpose()?;
    let snapshot_index = snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
    let mut recovered = RecoveredLog { snapshot, ..RecoveredLog::default() };
    let mut at = 0usize;
    while let Some((kind, body, next)) = next_frame(log, at) {
        match kind {
            KIND_ENTRY => {
                let Ok(entry) = Entry::parse_from_bytes(body) else { break };
                place_entry(&mut recovered.entries, entry)?;
            }
            KIND_HARD_STATE => {
                let Ok(hard_state) = HardState::parse_from_bytes(body) else { break };
                recovered.hard_state = hard_state;
            }
            _ => break,
        }
        at = next;
    }
    recovered.valid_log_bytes = at;
    // Entries the snapshot covers stay only if they follow on from it.
    if let Some(first) = recovered.entries.first() {
        if first.index > snapshot_index + 1 {
            return Err(LogError::Gap { last: snapshot_index, next: first.index });
        }
    }
    if let Some(s) = &recovered.snapshot {
        let meta = s.get_metadata();
        // A log older than its snapshot (a crash between the snapshot's
        // rename and the log's) may hold a stale branch: its entries count
        // only if the log agrees with the snapshot at the snapshot's index.
        let at_snapshot = recovered.entries.iter().find(|e| e.index == meta.index);
        if at_snapshot.is_some_and(|e| e.term != meta.term) {
            recovered.entries.clear();
        }
        recovered.hard_state.term = recovered.hard_state.term.max(meta.term);
        recovered.hard_state.commit = recovered.hard_state.commit.max(meta.index);
    }
    Ok(recovered)
}

/// Puts an entry read back in its place: after the last, or replacing the
/// entry at its index and everything after.
fn place_entry(entries: &mut Vec<Entry>, entry: Entry) -> Result<(), LogError> {
    if let Some(first) = entries.first() {
        if entry.index < first.index {
            // A rewrite after compaction starts again from an earlier index.
            entries.clear();
        } else {
            let last = entries.last().expect("not empty").index;
            if entry.index > last + 1 {
                return Err(LogError::Gap { last, next: entry.index });
            }
            entries.truncate((entry.index - first.index) as usize);
        }
    }
    entries.push(entry);
    Ok(())
}

/// The frame at `at`: its kind, body and where the next one starts; none
/// when the bytes there are not a whole, valid frame.
fn next_frame(log: &[u8], at: usize) -> Option<(u8, &[u8], usize)> {
    let header = log.get(at..at + HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let kind = header[8];
    if len > MAX_BODY_BYTES {
        return None;
    }
    let body = log.get(at + HEADER_BYTES..at + HEADER_BYTES + len)?;
    let actual = crc32c::crc32c_append(crc32c::crc32c(&[kind]), body);
    (actual == crc).then_some((kind, body, at + HEADER_BYTES + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: format!("entry {index}").into_bytes().into(), ..Entry::default() }
    }

    #[test]
    fn an_entry_written_again_replaces_its_index_and_what_follows() {
        let mut log = Vec::new();
        for i in 1..=5 {
            entry_frame(&entry(i, 1), &mut log);
        }
        let hs = HardState { term: 2, commit: 3, ..HardState::default() };
        hard_state_frame(&hs, &mut log);
        entry_frame(&entry(4, 2), &mut log);
        let recovered = recover(None, &log).unwrap();
        let indexes: Vec<_> = recovered.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(indexes, vec![(1, 1), (2, 1), (3, 1), (4, 2)]);
        assert_eq!(recovered.hard_state, hs);
        assert_eq!(recovered.valid_log_bytes, log.len());
    }

    #[test]
    fn a_torn_tail_ends_the_log_where_the_last_whole_frame_ends() {
        let mut log = Vec::new();
        entry_frame(&entry(1, 1), &mut log);
        let whole = log.len();
        entry_frame(&entry(2, 1), &mut log);
        for cut in whole..log.len() {
            let recovered = recover(None, &log[..cut]).unwrap();
            assert_eq!((recovered.entries.len(), recovered.valid_log_bytes), (1, whole), "cut at {cut}");
        }
        let mut flipped = log.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(recover(None, &flipped).unwrap().entries.len(), 1);
    }

    #[test]
    fn a_log_older_than_its_snapshot_keeps_no_entries_of_a_stale_branch() {
        // Crash between the snapshot's rename and the log's: the log holds
        // entries of term 2 where the snapshot (index 3, term 4) has term 4.
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 3;
        snapshot.mut_metadata().term = 4;
        let mut log = Vec::new();
        for i in 1..=5 {
            entry_frame(&entry(i, 2), &mut log);
        }
        let recovered = recover(Some(&snapshot_file(&snapshot)), &log).unwrap();
        assert!(recovered.entries.is_empty(), "entries 4 and 5 of term 2 are not after a term-4 snapshot");
        snapshot.mut_metadata().term = 2;
        let recovered = recover(Some(&snapshot_file(&snapshot)), &log).unwrap();
        assert_eq!(recovered.entries.len(), 5, "a log that agrees at the snapshot keeps its entries");
    }

    #[test]
    fn a_snapshot_reads_back_and_a_damaged_one_is_an_error() {
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 9;
        snapshot.mut_metadata().term = 3;
        snapshot.data = b"records".to_vec().into();
        let file = snapshot_file(&snapshot);
        let mut log = Vec::new();
        entry_frame(&entry(8, 3), &mut log);
        entry_frame(&entry(9, 3), &mut log);
        entry_frame(&entry(10, 3), &mut log);
        let recovered = recover(Some(&file), &log).unwrap();
        assert_eq!(recovered.snapshot.as_ref(), Some(&snapshot));
        assert_eq!((recovered.hard_state.term, recovered.hard_state.commit), (3, 9));
        let mut bad = file.clone();
        bad[20] ^= 0xff;
        assert!(matches!(recover(Some(&bad), &log), Err(LogError::Snapshot(_))));
        let mut gap = Vec::new();
        entry_frame(&entry(12, 3), &mut gap);
        assert_eq!(recover(Some(&file), &gap), Err(LogError::Gap { last: 9, next: 12 }));
    }
}
