//! The log's read paths give the same bytes whichever way they go: from
//! the batch cache, from a segment file whose pages are resident (a file
//! range for splice), or from a cold file (an asynchronous read), with the
//! first batch whole when it exceeds `max_bytes`. And a cold read that the
//! disk does not answer leaves the other partitions of the shard readable.

mod common;

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use common::*;
use shardline_engine::storage::fault_disk::{FaultConfig, FaultDisk};
use shardline_engine::storage::page_cache;
use shardline_engine::{Disk, Log, LogConfig, RealDisk};

/// Records per batch and bytes per record: batches of about 20 KiB, above
/// the splice minimums.
const RECORDS: usize = 20;
const VALUE_BYTES: usize = 1000;
const BATCHES: u64 = 12;

fn config() -> LogConfig {
    LogConfig { segment_bytes: 1 << 20, ..small_config() }
}

async fn filled_log<D: Disk>(disk: D, dir: &Path, cache_bytes: usize) -> Log<D> {
    let log = Log::open(disk, dir, options(config(), cache_bytes), 0).await.expect("open");
    for seed in 0..BATCHES {
        log.append(seeded_batch(seed, RECORDS, VALUE_BYTES, 1_000), 1, 0).await.expect("append");
    }
    log.flush().await.expect("flush");
    log
}

fn segment_file(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    assert_eq!(logs.len(), 1, "one segment");
    logs.remove(0)
}

/// Whether this kernel and filesystem report residency (cachestat) at all.
fn residency_is_reported(dir: &Path) -> bool {
    let path = dir.join("probe");
    std::fs::write(&path, vec![1u8; 8192]).expect("probe file");
    let file = std::fs::File::open(&path).expect("open probe");
    page_cache::is_resident(&file, 0, 8192)
}

#[test]
fn cached_resident_and_cold_reads_return_the_same_bytes() {
    compio::runtime::Runtime::new().expect("runtime").block_on(async {
        let temp = tempfile::tempdir().expect("temp dir");
        if !residency_is_reported(temp.path()) {
            eprintln!("skipped: cachestat(2) is not available here");
            return;
        }
        let dir = temp.path().join("t-0");
        // The cache keeps the last three batches only.
        let log = filled_log(RealDisk, &dir, 64 * 1024).await;
        let segment = std::fs::File::open(segment_file(&dir)).expect("open segment");
        // SAFETY: advice on an open descriptor.
        unsafe { libc::posix_fadvise(segment.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };

        // Cold: the socket read copies (asynchronously), like a plain read.
        let cold = log.read_resident(0, 50_000, i64::MAX).await.expect("cold read");
        assert!(cold.resident.is_none(), "cold pages are read, not spliced");
        assert!(!cold.batches.is_empty());
        let copied = log.read(0, 50_000, i64::MAX).await.expect("copying read");
        assert_eq!(result_bytes(&cold), result_bytes(&copied));

        // Resident now (the reads above went through the page cache).
        let resident = log.read_resident(0, 50_000, i64::MAX).await.expect("resident read");
        let range = resident.resident.as_ref().expect("resident pages go as a file range");
        assert!(resident.batches.is_empty());
        assert_eq!(range.next_offset, 2 * RECORDS as i64, "two whole batches fit 50,000 bytes");
        assert_eq!(result_bytes(&resident), result_bytes(&copied), "byte-identical to the copying read");

        // Partial first batch: an offset inside a batch and a max_bytes below
        // its size give that batch whole.
        let inside = 2 * RECORDS as i64 + 5;
        let partial = log.read_resident(inside, 100, i64::MAX).await.expect("partial read");
        let range = partial.resident.as_ref().expect("resident");
        assert_eq!(range.next_offset, 3 * RECORDS as i64, "the one batch holding the offset");
        let copied = log.read(inside, 100, i64::MAX).await.expect("copying read");
        assert_eq!(result_bytes(&partial), result_bytes(&copied));
        assert!(range.len > 100, "the first batch is whole");

        // A read stopped by max_offset keeps to it on both paths.
        let bounded = log.read_resident(0, 1 << 20, 2 * RECORDS as i64).await.expect("bounded read");
        let copied = log.read(0, 1 << 20, 2 * RECORDS as i64).await.expect("copying read");
        assert_eq!(result_bytes(&bounded), result_bytes(&copied));
        assert_eq!(bounded.resident.as_ref().map(|r| r.next_offset), Some(2 * RECORDS as i64));

        // The newest batches come from the batch cache, never the file.
        let newest = (BATCHES as i64 - 1) * RECORDS as i64;
        let cached = log.read_resident(newest, 1 << 20, i64::MAX).await.expect("cached read");
        assert!(cached.resident.is_none() && !cached.batches.is_empty(), "served from the cache");
        let copied = log.read(newest, 1 << 20, i64::MAX).await.expect("copying read");
        assert_eq!(result_bytes(&cached), result_bytes(&copied));
    });
}

#[test]
fn a_held_cold_read_leaves_the_other_partitions_of_the_shard_readable() {
    compio::runtime::Runtime::new().expect("runtime").block_on(async {
        let disk = FaultDisk::new(3, FaultConfig::default());
        // No batch cache: every read goes to the disk.
        let slow = filled_log(disk.clone(), Path::new("/data/slow-0"), 0).await;
        let other = filled_log(disk.clone(), Path::new("/data/other-0"), 0).await;
        let expected = result_bytes(&slow.read(0, 50_000, i64::MAX).await.expect("read before the hold"));
        disk.hold_reads_under(Path::new("/data/slow-0"));
        let done = Rc::new(Cell::new(false));
        let held = {
            let (slow, done) = (slow.clone(), done.clone());
            compio::runtime::spawn(async move {
                let read = slow.read_resident(0, 50_000, i64::MAX).await.expect("held read");
                done.set(true);
                result_bytes(&read)
            })
        };
        for _ in 0..1000 {
            if disk.held_reads() > 0 {
                break;
            }
            compio::runtime::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(disk.held_reads(), 1, "the slow partition's read waits on the disk");
        for offset in [0, 3 * RECORDS as i64, 7 * RECORDS as i64] {
            let read = other.read_resident(offset, 50_000, i64::MAX).await.expect("other partition");
            assert!(!result_bytes(&read).is_empty(), "the other partition reads while the slow one waits");
        }
        assert!(!done.get(), "the held read is still waiting");
        disk.release_reads();
        let bytes = held.await.expect("held read task");
        assert!(done.get());
        assert_eq!(bytes, expected, "the held read completes with the right bytes");
        assert_eq!(disk.held_reads(), 0);
    });
}
