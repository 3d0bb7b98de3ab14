//! What an idle partition costs: its tail gives its buffers back to the
//! shard's pool and keeps one page, its disk reservation past the data is
//! given back, and many logs share one shard's descriptor budget
//! (`CachedDisk`) without losing or mixing up a byte. On the fault disk.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use shardline_engine::storage::aligned::{page_ceil, PAGE_BYTES};
use shardline_engine::storage::disk::{Disk, DiskFile, OpenMode};
use shardline_engine::storage::fault_disk::{FaultConfig, FaultDisk};
use shardline_engine::storage::file_cache::CachedDisk;
use shardline_engine::{Log, LogConfig};

/// Lets the shard's other tasks (the writer, the write tasks) run.
async fn settle() {
    for _ in 0..20 {
        compio::runtime::time::sleep(Duration::from_millis(1)).await;
    }
}

fn config() -> LogConfig {
    LogConfig { segment_bytes: 1 << 20, preallocate: true, ..small_config() }
}

async fn file_len<D: Disk>(disk: &D, dir: &Path) -> u64 {
    let path = dir.join(format!("{:020}.log", 0));
    disk.open(&path, OpenMode::Read).await.expect("segment").len().await.expect("len")
}

async fn read_everything<D: Disk>(log: &Log<D>) -> Vec<(i64, Vec<u8>)> {
    let end = log.offsets().log_end;
    let read = log.read(0, 64 << 20, end).await.expect("read");
    split_batches(&read.batches)
}

#[test]
fn an_idle_log_keeps_one_page_of_tail_and_gives_back_its_reservation() {
    compio::runtime::Runtime::new().expect("runtime").block_on(async {
        let disk = FaultDisk::new(11, FaultConfig::default());
        let dir = PathBuf::from("/data/idle-0");
        let log = Log::open(disk.clone(), &dir, options(config(), 0), 0).await.expect("open");
        let mut sent = Vec::new();
        let batch = seeded_batch(1, 1, 100, 1_000);
        sent.push(batch.to_vec());
        let info = log.append(batch, 1, 0).await.expect("append");
        log.wait_durable(info.last_offset + 1).await.expect("durable");
        settle().await;
        assert_eq!(log.tail_buffer_bytes(), PAGE_BYTES, "an idle tail keeps its partial last page only");

        // A burst takes full chunks; once written they go back.
        for seed in 2..40 {
            let batch = seeded_batch(seed, 8, 1000, 1_000);
            sent.push(batch.to_vec());
            log.append(batch, 1, 0).await.expect("append");
        }
        assert!(log.tail_buffer_bytes() > PAGE_BYTES, "a burst is buffered in chunks");
        log.wait_durable(log.offsets().log_end).await.expect("durable");
        settle().await;
        assert_eq!(log.tail_buffer_bytes(), PAGE_BYTES, "after the burst the tail is one page again");

        let size = log.size_bytes();
        let reserved = file_len(&disk, &dir).await;
        assert!(reserved > page_ceil(size), "space is reserved past the data ({reserved} for {size})");
        log.release_if_idle();
        settle().await;
        assert_eq!(file_len(&disk, &dir).await, reserved, "appended since the last call: nothing is given back");
        log.release_if_idle();
        settle().await;
        assert_eq!(file_len(&disk, &dir).await, page_ceil(size), "idle: cut to the page after the data");

        // Appends go on after the cut, and everything survives a reopen.
        let batch = seeded_batch(99, 3, 500, 1_000);
        sent.push(batch.to_vec());
        let info = log.append(batch, 1, 0).await.expect("append after the cut");
        log.wait_durable(info.last_offset + 1).await.expect("durable");
        let check = |got: Vec<(i64, Vec<u8>)>| {
            assert_eq!(got.len(), sent.len());
            for ((_, got), want) in got.iter().zip(&sent) {
                assert_eq!(payload(got), payload(want));
            }
        };
        check(read_everything(&log).await);
        log.close().await.expect("close");
        drop(log);
        let reopened = Log::open(disk.clone(), &dir, options(config(), 0), 0).await.expect("reopen");
        check(read_everything(&reopened).await);
    });
}

#[test]
fn an_idle_log_writes_its_index_and_holds_no_descriptor() {
    compio::runtime::Runtime::new().expect("runtime").block_on(async {
        let fault = FaultDisk::new(14, FaultConfig::default());
        let disk = CachedDisk::new(fault.clone(), 100);
        let dir = PathBuf::from("/data/settled-0");
        let log = Log::open(disk.clone(), &dir, options(config(), 0), 0).await.expect("open");
        // A few index entries (one per KiB here): fewer than are written
        // at once, so the index file stays as it was until the log idles.
        let mut sent = Vec::new();
        for seed in 0..4 {
            let batch = seeded_batch(seed, 2, 1_500, 1_000);
            sent.push(batch.to_vec());
            log.append(batch, 1, 0).await.expect("append");
        }
        log.wait_durable(log.offsets().log_end).await.expect("durable");
        settle().await;
        let index_path = dir.join(format!("{:020}.index", 0));
        let index_len =
            || async { fault.open(&index_path, OpenMode::Read).await.expect("index").len().await.expect("len") };
        assert_eq!(index_len().await, 0, "a few entries are not written at every sync");

        // The shard's sweep: first call after the appends, then idle.
        for _ in 0..2 {
            log.release_if_idle();
            settle().await;
            disk.close_idle();
        }
        assert!(index_len().await > 0, "an idle log writes its index entries");
        assert_eq!(disk.open_count(), 0, "an idle log holds no descriptor after two sweeps");

        // Written on again, read back, and whole after a reopen.
        let batch = seeded_batch(9, 2, 700, 1_000);
        sent.push(batch.to_vec());
        let info = log.append(batch, 1, 0).await.expect("append after idling");
        log.wait_durable(info.last_offset + 1).await.expect("durable");
        let got = read_everything(&log).await;
        assert_eq!(got.len(), sent.len());
        for ((_, got), want) in got.iter().zip(&sent) {
            assert_eq!(payload(got), payload(want));
        }
        log.close().await.expect("close");
        drop(log);
        let reopened = Log::open(fault.clone(), &dir, options(config(), 0), 0).await.expect("reopen");
        assert_eq!(read_everything(&reopened).await.len(), sent.len());
    });
}

#[test]
fn logs_share_one_descriptor_budget() {
    const LOGS: usize = 12;
    const LIMIT: usize = 5;
    compio::runtime::Runtime::new().expect("runtime").block_on(async {
        let fault = FaultDisk::new(12, FaultConfig::default());
        let disk = CachedDisk::new(fault.clone(), LIMIT);
        let dir = |i: usize| PathBuf::from(format!("/data/shared-{i}"));
        let mut logs = Vec::new();
        for i in 0..LOGS {
            logs.push(Log::open(disk.clone(), &dir(i), options(config(), 0), 0).await.expect("open"));
            assert!(disk.open_count() <= LIMIT);
        }
        for round in 0..3u64 {
            for (i, log) in logs.iter().enumerate() {
                let info = log.append(seeded_batch(round * 100 + i as u64, 4, 300, 1_000), 1, 0).await.expect("append");
                log.wait_durable(info.last_offset + 1).await.expect("durable");
            }
        }
        settle().await;
        assert!(disk.open_count() <= LIMIT, "{} open, more than {LIMIT}", disk.open_count());
        assert!(disk.opens() > (LOGS * 4) as u64, "descriptors were closed and reopened");
        for (i, log) in logs.iter().enumerate() {
            let got = read_everything(log).await;
            let want: Vec<Vec<u8>> =
                (0..3u64).map(|r| seeded_batch(r * 100 + i as u64, 4, 300, 1_000).to_vec()).collect();
            assert_eq!(got.len(), 3, "log {i}");
            for ((_, got), want) in got.iter().zip(&want) {
                assert_eq!(payload(got), payload(want), "log {i}");
            }
        }
        for log in &logs {
            log.close().await.expect("close");
        }
        drop(logs);
        assert_eq!(disk.open_count(), 0, "closed logs hold no descriptor");
        // The files are whole on the disk underneath.
        for i in 0..LOGS {
            let log = Log::open(fault.clone(), &dir(i), options(config(), 0), 0).await.expect("reopen");
            assert_eq!(read_everything(&log).await.len(), 3, "log {i} after reopening");
        }
    });
}

#[test]
fn sealed_indexes_stay_within_the_shard_budget_and_reads_stay_right() {
    use shardline_engine::log::index_budget::IndexBudget;
    compio::runtime::Runtime::new().expect("runtime").block_on(async {
        let disk = FaultDisk::new(13, FaultConfig::default());
        let dir = PathBuf::from("/data/indexed-0");
        // 64 KiB segments of about 23 batches: each sealed segment's
        // indexes take more than the budget alone.
        let config = LogConfig { segment_bytes: 64 * 1024, ..small_config() };
        let budget = IndexBudget::shared(300);
        let mut opts = options(config.clone(), 0);
        opts.indexes = budget.clone();
        let log = Log::open(disk.clone(), &dir, opts, 0).await.expect("open");
        let mut sent = Vec::new();
        for seed in 0..120 {
            let batch = seeded_batch(seed, 3, 900, 1_000);
            sent.push(batch.to_vec());
            log.append(batch, 1, 0).await.expect("append");
        }
        log.wait_durable(log.offsets().log_end).await.expect("durable");
        settle().await;
        assert!(log.segment_bases().len() >= 4, "several sealed segments");
        // Every batch, one read each, from every segment in turn (twice:
        // the second pass reloads what the budget dropped).
        let end = log.offsets().log_end;
        for pass in 0..2 {
            for (i, want) in sent.iter().enumerate() {
                let offset = 3 * i as i64 + 1;
                let read = log.read(offset, 1, end).await.expect("read");
                let got = split_batches(&read.batches);
                assert_eq!(got.len(), 1, "pass {pass}: batch {i}");
                assert_eq!(payload(&got[0].1), payload(want), "pass {pass}: batch {i}");
                let loaded = budget.borrow().loaded_count();
                assert!(loaded <= 1, "pass {pass}: {loaded} sealed segments' indexes loaded, over the budget");
            }
        }
        assert!(budget.borrow().used_bytes() > 300, "sealed indexes were loaded and counted");
        log.close().await.expect("close");
        assert_eq!(budget.borrow().used_bytes(), 0, "a closed log's indexes are no longer counted");
    });
}
