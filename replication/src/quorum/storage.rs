//! raft-rs's view of the metadata log: the entries after the compaction
//! point, the hard state, the configuration and the newest snapshot, in
//! memory. It mirrors the files exactly: the quorum changes it only
//! together with the bytes it hands the driver to write
//! ([`log_codec`](super::log_codec)), so what raft-rs reads here is what a
//! restart reads back. Owned by the quorum on the controller's core.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct MetadataStorage {
    hard_state: HardState,
    conf_state: ConfState,
    /// The newest snapshot (with the image's records), or an empty one.
    snapshot: Snapshot,
    /// Entries after `compacted_index`, in order.
    entries: Vec<Entry>,
    /// The entry before `entries[0]`; its term is kept for matching.
    compacted_index: u64,
    compacted_term: u64,
}

impl MetadataStorage {
    /// Storage for a quorum of `voters` holding what recovery read back:
    /// the snapshot, and the entries after it (those it covers are
    /// dropped).
    pub fn new(voters: &[u64], hard_state: HardState, snapshot: Option<Snapshot>, mut entries: Vec<Entry>) -> Self {
        let conf_state = ConfState { voters: voters.to_vec(), ..ConfState::default() };
        let snapshot = snapshot.unwrap_or_default();
        let (compacted_index, compacted_term) = (snapshot.get_metadata().index, snapshot.get_metadata().term);
        entries.retain(|e| e.index > compacted_index);
        if let Some(first) = entries.first() {
            assert_eq!(first.index, compacted_index + 1, "recovered entries follow on from the snapshot");
        }
        MetadataStorage { hard_state, conf_state, snapshot, entries, compacted_index, compacted_term }
    }

    /// The hard state as last set.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The newest snapshot (empty when there is none).
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Every entry kept (after the compaction point).
    pub fn entries_kept(&self) -> &[Entry] {
        &self.entries
    }

    /// Sets the hard state.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Records a commit index raft-rs reported.
    pub fn set_commit(&mut self, commit: u64) {
        assert!(commit <= self.last(), "commit {commit} past the last entry {}", self.last());
        self.hard_state.commit = commit;
    }

    /// Appends entries, replacing any at the same indexes and after.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(first.index > self.compacted_index, "append {} below the compaction point", first.index);
        assert!(first.index <= self.last() + 1, "append {} leaves a gap after {}", first.index, self.last());
        self.entries.truncate((first.index - self.compacted_index - 1) as usize);
        self.entries.extend_from_slice(entries);
    }

    /// Installs a snapshot received from the leader: everything before and
    /// at it is replaced.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        self.compacted_index = meta.index;
        self.compacted_term = meta.term;
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = meta.index;
        self.entries.clear();
        self.snapshot = snapshot;
    }

    /// Keeps `snapshot` as the newest and drops the entries before
    /// `compact_to` (which the snapshot covers).
    pub fn compact(&mut self, snapshot: Snapshot, compact_to: u64) {
        let index = snapshot.get_metadata().index;
        assert!(compact_to <= index && index <= self.hard_state.commit, "compact only what is committed");
        if compact_to > self.compacted_index {
            let term = self.term_of(compact_to).expect("the compaction point is kept");
            let drop = (compact_to - self.compacted_index) as usize;
            self.entries.drain(..drop);
            self.compacted_index = compact_to;
            self.compacted_term = term;
        }
        self.snapshot = snapshot;
    }

    fn last(&self) -> u64 {
        self.entries.last().map_or(self.compacted_index, |e| e.index)
    }

    /// The term of the entry at `index`, when it is kept.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.compacted_index {
            return Some(self.compacted_term);
        }
        if index < self.compacted_index || index > self.last() {
            return None;
        }
        Some(self.entries[(index - self.compacted_index - 1) as usize].term)
    }
}

impl Storage for MetadataStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.compacted_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(high <= self.last() + 1, "entries up to {high} past the last {}", self.last());
        let from = (low - self.compacted_index - 1) as usize;
        let to = (high - self.compacted_index - 1) as usize;
        let mut entries = self.entries[from..to].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index < self.compacted_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(index).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.compacted_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.get_metadata().index < request_index.max(self.compacted_index) {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        let mut snapshot = self.snapshot.clone();
        snapshot.mut_metadata().set_conf_state(self.conf_state.clone());
        Ok(snapshot)
    }
}
