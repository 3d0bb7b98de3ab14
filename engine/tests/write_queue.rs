//! The writer keeps several chunk writes in flight (a deeper disk queue),
//! and retires them in file order: a write that completes before an
//! earlier one never makes the log count the earlier one's bytes as
//! written. On the fault disk, whose writes can be held and released one
//! by one, like a device completing them out of order.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use shardline_engine::log::MAX_WRITES_IN_FLIGHT;
use shardline_engine::storage::fault_disk::{FaultConfig, FaultDisk};
use shardline_engine::{Log, LogConfig};

/// Lets the shard's other tasks (the writer, the write tasks) run.
async fn settle() {
    for _ in 0..20 {
        compio::runtime::time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn writes_overlap_and_written_never_passes_an_unfinished_one() {
    compio::runtime::Runtime::new().expect("runtime").block_on(async {
        let disk = FaultDisk::new(5, FaultConfig::default());
        let config =
            LogConfig { segment_bytes: 1 << 20, chunk_bytes: 16 * 1024, max_pending_chunks: 8, ..small_config() };
        let log =
            Log::open(disk.clone(), Path::new("/data/w-0"), options(config.clone(), 1 << 20), 0).await.expect("open");
        disk.hold_writes();
        // Five batches of about 16.5 KiB: five full chunks and a partial one.
        let mut appended = Vec::new();
        for seed in 0..5 {
            let batch = seeded_batch(seed, 16, 1000, 1_000);
            appended.push(batch.to_vec());
            log.append(batch, 1, 0).await.expect("append");
        }
        let log_end = log.offsets().log_end;
        for _ in 0..1000 {
            if disk.held_writes() >= MAX_WRITES_IN_FLIGHT {
                break;
            }
            compio::runtime::time::sleep(Duration::from_millis(1)).await;
        }
        settle().await;
        assert_eq!(disk.held_writes(), MAX_WRITES_IN_FLIGHT, "several writes in flight, never more than the bound");
        const { assert!(MAX_WRITES_IN_FLIGHT > 1, "a queue deeper than one write") };
        assert_eq!(log.offsets().written, 0);

        // Every write after the oldest completes: none of it counts yet.
        for _ in 1..MAX_WRITES_IN_FLIGHT {
            assert!(disk.release_held_write(1), "a later write to release");
            settle().await;
        }
        assert_eq!(log.offsets().written, 0, "nothing is written while the first write is unfinished");
        assert!(disk.held_writes() <= MAX_WRITES_IN_FLIGHT);

        // The oldest completes: everything before the next unfinished one counts.
        assert!(disk.release_held_write(0));
        settle().await;
        assert!(log.offsets().written > 0, "the completed run is written");
        disk.release_writes();
        log.flush().await.expect("flush");
        assert_eq!(log.offsets().written, log_end);

        // On disk, after a process crash, are exactly the batches appended
        // (no batch cache: the reads go to the file).
        drop(log);
        let reopened =
            Log::open(disk.crash_process(), Path::new("/data/w-0"), options(config, 0), 0).await.expect("reopen");
        assert_eq!(reopened.offsets().log_end, log_end);
        let read = reopened.read(0, 1 << 20, i64::MAX).await.expect("read");
        let got: Vec<Vec<u8>> = split_batches(&read.batches).into_iter().map(|(_, b)| b).collect();
        assert_eq!(got.len(), appended.len());
        for (got, want) in got.iter().zip(&appended) {
            assert_eq!(payload(got), payload(want), "the bytes on disk are the batches appended");
        }
    });
}

#[test]
fn a_write_that_rewrites_a_partial_page_waits_for_the_one_before() {
    compio::runtime::Runtime::new().expect("runtime").block_on(async {
        let disk = FaultDisk::new(6, FaultConfig::default());
        let config = LogConfig { segment_bytes: 1 << 20, ..small_config() };
        let dir = Path::new("/data/p-0");
        let log = Log::open(disk.clone(), dir, options(config.clone(), 1 << 20), 0).await.expect("open");
        disk.hold_writes();
        // Two small batches: each is written padded to its page, the second
        // rewriting the first's partial last page.
        let first = seeded_batch(1, 3, 200, 1_000);
        let second = seeded_batch(2, 3, 200, 1_000);
        let appended = [first.to_vec(), second.to_vec()];
        log.append(first, 1, 0).await.expect("append");
        settle().await;
        assert_eq!(disk.held_writes(), 1, "the first batch's write is in flight");
        log.append(second, 1, 0).await.expect("append");
        settle().await;
        assert_eq!(disk.held_writes(), 1, "the second waits: it rewrites the page the first is writing");
        assert!(disk.release_held_write(0));
        settle().await;
        assert_eq!(disk.held_writes(), 1, "now the second is in flight");
        disk.release_writes();
        log.flush().await.expect("flush");
        drop(log);
        let reopened = Log::open(disk.crash_process(), dir, options(config, 0), 0).await.expect("reopen");
        let read = reopened.read(0, 1 << 20, i64::MAX).await.expect("read");
        let got: Vec<Vec<u8>> = split_batches(&read.batches).into_iter().map(|(_, b)| b).collect();
        assert_eq!(got.len(), 2);
        for (got, want) in got.iter().zip(&appended) {
            assert_eq!(payload(got), payload(want));
        }
    });
}
