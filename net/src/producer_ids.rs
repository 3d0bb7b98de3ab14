//! Producer ids for idempotent and transactional producers
//! (InitProducerId): unique across the cluster and its restarts.
//!
//! As in Kafka (KIP-730), the active controller hands brokers blocks of
//! ids, committed to the metadata log before they are used (the broker's
//! source is `route::ControllerProducerIds`). Every shard keeps a
//! [`ProducerIdPool`]: ids from its current block, and a new block asked
//! for when it runs out. [`ProducerIdBlocks`] is a file-backed block
//! allocator (the end of each block persisted atomically and durably
//! through the [`Disk`] seam before it is handed out): the simulator's,
//! and where a data directory from before the metadata log kept its next
//! id, which the metadata log's bootstrap takes over
//! ([`legacy_next_id`]).

use std::cell::Cell;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use shardline_engine::storage::small_files::{read_whole, write_file_atomically};
use shardline_engine::Disk;

/// Ids per block.
pub const BLOCK: i64 = 1000;

const FILE_NAME: &str = "producer-ids";

/// A range of ids, `start..end`.
pub type IdBlock = (i64, i64);

/// Why no producer id could be had.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    /// Persisting the next block failed.
    #[error("persisting the producer id block: {0}")]
    Io(#[from] std::io::Error),
    /// The shard handing out blocks is not reachable.
    #[error("the producer id allocator is not reachable")]
    Unreachable,
}

/// The block allocator (shard 0). See the module documentation.
pub struct ProducerIdBlocks<D: Disk> {
    disk: D,
    dir: PathBuf,
    /// Start of the next block to hand out (= end of the last persisted one).
    next: Cell<i64>,
    /// Serializes persists: each block's end is durable before the next.
    persisting: futures::lock::Mutex<()>,
}

impl<D: Disk> ProducerIdBlocks<D> {
    /// Opens the allocator stored at `<data_dir>/__shardline/producer-ids`
    /// (the end of the last block handed out, as text).
    pub async fn open(disk: D, data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("__shardline");
        disk.create_dir_all(&dir)?;
        let next = match read_whole(&disk, &dir.join(FILE_NAME)).await? {
            None => 0,
            Some(bytes) => String::from_utf8_lossy(&bytes).trim().parse::<i64>().map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", dir.join(FILE_NAME).display()))
            })?,
        };
        assert!(next >= 0, "producer ids are not negative");
        Ok(ProducerIdBlocks { disk, dir, next: Cell::new(next), persisting: futures::lock::Mutex::new(()) })
    }

    /// The next block, persisted before it is returned.
    pub async fn next_block(&self) -> std::io::Result<IdBlock> {
        let _serial = self.persisting.lock().await;
        let start = self.next.get();
        let end = start + BLOCK;
        write_file_atomically(&self.disk, &self.dir, FILE_NAME, format!("{end}\n").into_bytes()).await?;
        self.next.set(end);
        debug_assert!(self.next.get() > start);
        Ok((start, end))
    }
}

/// The next producer id a data directory from before the metadata log
/// recorded (`__shardline/producer-ids`), 0 when it has none: the
/// metadata log starts handing out ids after it.
pub fn legacy_next_id(data_dir: &Path) -> std::io::Result<i64> {
    let path = data_dir.join("__shardline").join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<i64>()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Where a shard's pool gets a new block from (the mesh to shard 0 on the
/// broker; the allocator itself in the simulator).
pub type BlockRequest<'a> = Pin<Box<dyn Future<Output = Result<IdBlock, ProducerIdError>> + 'a>>;

/// One shard's ids. See the module documentation.
#[derive(Debug, Default)]
pub struct ProducerIdPool {
    block: Cell<IdBlock>,
}

impl ProducerIdPool {
    /// A fresh producer id; `refill` fetches a new block when this one is
    /// used up.
    pub async fn allocate(&self, refill: impl FnOnce() -> BlockRequest<'static>) -> Result<i64, ProducerIdError> {
        if let Some(id) = self.take() {
            return Ok(id);
        }
        let block = refill().await?;
        assert!(block.0 < block.1, "a block holds ids");
        // A concurrent refill may have landed meanwhile: the newer block
        // wins and the rest of the other is never used (ids stay unique).
        self.block.set(block);
        self.take().ok_or(ProducerIdError::Unreachable)
    }

    fn take(&self) -> Option<i64> {
        let (next, end) = self.block.get();
        (next < end).then(|| {
            self.block.set((next + 1, end));
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_engine::storage::fault_disk::{FaultConfig, FaultDisk};

    #[test]
    fn blocks_are_unique_across_restarts_and_power_loss() {
        compio::runtime::Runtime::new().expect("runtime").block_on(async {
            let disk = FaultDisk::new(1, FaultConfig::default());
            let blocks = ProducerIdBlocks::open(disk.clone(), Path::new("/data")).await.expect("open");
            assert_eq!(blocks.next_block().await.expect("block"), (0, BLOCK));
            assert_eq!(blocks.next_block().await.expect("block"), (BLOCK, 2 * BLOCK));
            let pool = ProducerIdPool::default();
            let refill = || -> BlockRequest<'static> { Box::pin(async { Ok((5, 7)) }) };
            assert_eq!(pool.allocate(refill).await.expect("id"), 5);
            assert_eq!(pool.allocate(refill).await.expect("id"), 6);
            let crashed = disk.crash();
            let again = ProducerIdBlocks::open(crashed, Path::new("/data")).await.expect("reopen");
            assert_eq!(again.next_block().await.expect("block").0, 2 * BLOCK, "a restart continues after the blocks");
        });
    }
}
