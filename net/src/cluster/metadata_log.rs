//! The metadata log's files, `<data_dir>/__cluster_metadata-0/log` and
//! `snapshot` beside it: read back at start (a torn tail cut off), and
//! written as the quorum asks ([`QuorumAction::AppendLog`] appended and
//! fdatasync'ed; [`QuorumAction::ReplaceSnapshot`] written aside, fsynced
//! and renamed, snapshot first). Blocking file IO on the controller core's
//! own thread, never on a shard. The bytes are the quorum's
//! ([`log_codec`]); this module only puts them on disk.
//!
//! [`QuorumAction::AppendLog`]: shardline_replication::quorum::QuorumAction::AppendLog
//! [`QuorumAction::ReplaceSnapshot`]: shardline_replication::quorum::QuorumAction::ReplaceSnapshot

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use shardline_replication::quorum::log_codec::{self, RecoveredLog};

/// The metadata log's directory under a data directory.
pub fn metadata_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("__cluster_metadata-0")
}

/// The open metadata log. See the module documentation.
#[derive(Debug)]
pub struct MetadataLogFiles {
    dir: PathBuf,
    log: File,
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, fsynced,
/// renamed over the old one.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
}

impl MetadataLogFiles {
    /// Opens (creating when new) the metadata log under `data_dir` and
    /// reads back what it holds. A torn tail is cut off before anything is
    /// appended; a damaged snapshot or a gap in the log is an error that
    /// stops the start (nothing is changed).
    pub fn open(data_dir: &Path) -> std::io::Result<(MetadataLogFiles, RecoveredLog)> {
        let dir = metadata_dir(data_dir);
        let created = !dir.exists();
        std::fs::create_dir_all(&dir)?;
        if created {
            fsync_dir(data_dir)?;
        }
        let damaged = |e: log_codec::LogError| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", dir.display()))
        };
        let snapshot = match std::fs::read(dir.join("snapshot")) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let log_path = dir.join("log");
        let log_bytes = match std::fs::read(&log_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let recovered = log_codec::recover(snapshot.as_deref(), &log_bytes).map_err(damaged)?;
        let log = OpenOptions::new().create(true).append(true).open(&log_path)?;
        if recovered.valid_log_bytes < log_bytes.len() {
            tracing::warn!(
                log = %log_path.display(),
                valid = recovered.valid_log_bytes,
                length = log_bytes.len(),
                "cutting a torn tail off the metadata log"
            );
            log.set_len(recovered.valid_log_bytes as u64)?;
            log.sync_all()?;
        }
        if created {
            fsync_dir(&dir)?;
        }
        Ok((MetadataLogFiles { dir, log }, recovered))
    }

    /// Appends frames and makes them durable before returning.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.log.write_all(bytes)?;
        self.log.sync_data()
    }

    /// Replaces the snapshot, then the log, each atomically. A crash
    /// between the two leaves the new snapshot with the old log, which
    /// recovery reads correctly (entries the snapshot covers are dropped).
    pub fn replace(&mut self, snapshot: &[u8], log: &[u8]) -> std::io::Result<()> {
        replace_file(&self.dir, "snapshot", snapshot)?;
        fsync_dir(&self.dir)?;
        replace_file(&self.dir, "log", log)?;
        fsync_dir(&self.dir)?;
        self.log = OpenOptions::new().append(true).open(self.dir.join("log"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, HardState};

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8; 10].into(), ..Entry::default() }
    }

    #[test]
    fn appends_survive_a_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut files, recovered) = MetadataLogFiles::open(dir.path()).expect("opens");
        assert!(recovered.entries.is_empty() && recovered.snapshot.is_none());
        let mut bytes = Vec::new();
        log_codec::entry_frame(&entry(1, 1), &mut bytes);
        log_codec::entry_frame(&entry(2, 1), &mut bytes);
        log_codec::hard_state_frame(&HardState { term: 1, vote: 1, commit: 2, ..HardState::default() }, &mut bytes);
        files.append(&bytes).expect("appends");
        drop(files);
        // A torn frame at the end, as a crash mid-write leaves it.
        let log = metadata_dir(dir.path()).join("log");
        let mut torn = Vec::new();
        log_codec::entry_frame(&entry(3, 1), &mut torn);
        OpenOptions::new().append(true).open(&log).unwrap().write_all(&torn[..torn.len() - 3]).unwrap();
        let (mut files, recovered) = MetadataLogFiles::open(dir.path()).expect("reopens");
        assert_eq!(recovered.entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(recovered.hard_state.term, 1);
        assert_eq!(std::fs::metadata(&log).unwrap().len() as usize, bytes.len(), "the torn tail is cut");
        let mut more = Vec::new();
        log_codec::entry_frame(&entry(3, 2), &mut more);
        files.append(&more).expect("appends after the cut");
        drop(files);
        let (_, recovered) = MetadataLogFiles::open(dir.path()).expect("reopens");
        assert_eq!(
            recovered.entries.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
            vec![(1, 1), (2, 1), (3, 2)]
        );
    }

    #[test]
    fn a_damaged_log_stops_the_start_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut files, _) = MetadataLogFiles::open(dir.path()).expect("opens");
        let mut bytes = Vec::new();
        log_codec::entry_frame(&entry(1, 1), &mut bytes);
        log_codec::entry_frame(&entry(3, 1), &mut bytes);
        files.append(&bytes).expect("appends");
        drop(files);
        let error = MetadataLogFiles::open(dir.path()).expect_err("a gap is refused");
        assert!(error.to_string().contains("skips"), "{error}");
        let log = metadata_dir(dir.path()).join("log");
        assert_eq!(std::fs::metadata(log).unwrap().len() as usize, bytes.len());
    }
}
