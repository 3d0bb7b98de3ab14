//! Producer-state snapshots of a partition (`<offset>.producer-snapshot`
//! in its directory): written at clean close (at the log end) and
//! periodically (at the durable offset, so a crash never leaves a snapshot
//! beyond the recovered log), and loaded at open followed by a replay of
//! the batches after the snapshot. Runs on the partition's shard; file work
//! goes to the blocking pool.

use std::path::{Path, PathBuf};

use shardline_engine::batch::BatchIter;
use shardline_engine::producer_state::ProducerState;
use shardline_engine::{Log, LogResult, RealDisk};

const SUFFIX: &str = ".producer-snapshot";
/// Snapshots kept per partition (the newest ones).
const KEEP: usize = 2;

fn path_of(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}{SUFFIX}"))
}

/// Snapshot offsets present in `dir`, newest first.
fn list(dir: &Path) -> Vec<i64> {
    let mut offsets: Vec<i64> = std::fs::read_dir(dir)
        .map(|entries| {
            entries.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(SUFFIX)?.parse().ok()).collect()
        })
        .unwrap_or_default();
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    offsets
}

/// Writes a snapshot of `state` at `offset` and removes older ones beyond
/// the newest [`KEEP`].
pub async fn write(dir: PathBuf, offset: i64, state: ProducerState) -> std::io::Result<()> {
    compio::runtime::spawn_blocking(move || {
        let path = path_of(&dir, offset);
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, state.encode())?;
        std::fs::rename(&temp, &path)?;
        for old in list(&dir).into_iter().skip(KEEP) {
            let _ = std::fs::remove_file(path_of(&dir, old));
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|_| Err(std::io::Error::other("snapshot task failed")))
}

/// The producer state of `log`: the newest readable snapshot at or below
/// the log end, then every batch after it. Returns it with the snapshot's
/// offset (the log start when there was none).
pub async fn load(log: &Log<RealDisk>) -> LogResult<(ProducerState, i64)> {
    let dir = log.dir().to_path_buf();
    let offsets = log.offsets();
    let snapshot = compio::runtime::spawn_blocking(move || {
        list(&dir).into_iter().filter(|o| *o <= offsets.log_end).find_map(|offset| {
            let bytes = std::fs::read(path_of(&dir, offset)).ok()?;
            Some((ProducerState::decode(&bytes)?, offset))
        })
    })
    .await
    .unwrap_or(None);
    let (mut state, from) = snapshot.unwrap_or_else(|| (ProducerState::default(), offsets.log_start));
    let mut offset = from.max(offsets.log_start);
    while offset < offsets.log_end {
        let read = log.read(offset, 4 << 20, offsets.log_end).await?;
        if read.batches.is_empty() {
            break;
        }
        for chunk in &read.batches {
            for (at, header) in BatchIter::new(chunk) {
                state.replay(&header, &chunk[at..at + header.total_bytes()]);
                offset = offset.max(header.next_offset());
            }
        }
    }
    Ok((state, from))
}
