//! Producer ids for idempotent producers (InitProducerId): unique over the
//! broker's lifetime, restarts included. Ids are handed out from blocks of
//! [`BLOCK`]; the end of the current block is persisted (write, fsync,
//! rename) before any id of it is used, so a restart continues after it.
//! Shared by every shard behind a mutex taken once per InitProducerId.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Ids reserved per persisted block.
pub const BLOCK: i64 = 1000;

/// The allocator. See the module documentation.
#[derive(Debug)]
pub struct ProducerIds {
    path: PathBuf,
    /// (next id, end of the persisted block).
    next: Mutex<(i64, i64)>,
}

impl ProducerIds {
    /// Opens the allocator stored at `<data_dir>/__shardline/producer-ids`.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join("__shardline").join("producer-ids");
        let start = match std::fs::read_to_string(&path) {
            Ok(text) => {
                text.trim().parse::<i64>().map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(ProducerIds { path, next: Mutex::new((start, start)) })
    }

    /// A fresh producer id.
    pub fn allocate(&self) -> std::io::Result<i64> {
        let mut guard = self.next.lock().map_err(|_| std::io::Error::other("producer id lock poisoned"))?;
        let (next, end) = *guard;
        if next >= end {
            self.persist(next + BLOCK)?;
            guard.1 = next + BLOCK;
        }
        guard.0 = next + 1;
        Ok(next)
    }

    fn persist(&self, end: i64) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(format!("{end}\n").as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ProducerIds::open(dir.path()).expect("open");
        let a: Vec<i64> = (0..3).map(|_| first.allocate().expect("id")).collect();
        assert_eq!(a, vec![0, 1, 2]);
        let again = ProducerIds::open(dir.path()).expect("reopen");
        let b = again.allocate().expect("id");
        assert!(b >= BLOCK, "a restart continues after the persisted block: {b}");
    }
}
