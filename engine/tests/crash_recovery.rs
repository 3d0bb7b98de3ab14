//! Crash tests on the fault-injecting disk: seeded, reproducible power
//! losses at random points (unsynced writes lost or torn at 4 KiB), fsync
//! errors, corrupt indexes. After every recovery, everything acknowledged as
//! durable is readable with the same bytes, nothing that was never appended
//! appears, and offsets strictly increase.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use rand::{Rng, SeedableRng};
use shardline_engine::storage::fault_disk::{FaultConfig, FaultDisk};
use shardline_engine::{Disk, Log, LogError};

const DIR: &str = "/data/crash-0";

/// Seeds per test; `SHARDLINE_CRASH_SEEDS` raises it for soak runs.
fn seed_count(default: u64) -> u64 {
    std::env::var("SHARDLINE_CRASH_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Reads every batch from the log start to the log end.
async fn read_all<D: Disk>(log: &Log<D>) -> Vec<(i64, Vec<u8>)> {
    let offsets = log.offsets();
    let mut out = Vec::new();
    let mut offset = offsets.log_start;
    while offset < offsets.log_end {
        let result = log.read(offset, 64 * 1024, i64::MAX).await.expect("read");
        let batches = split_batches(&result.batches);
        assert!(
            !batches.is_empty(),
            "no progress reading at {offset} of {offsets:?} segments {:?}",
            log.segment_bases()
        );
        for (base, bytes) in batches {
            let header = shardline_engine::format::batch::parse_header(&bytes).expect("header");
            offset = header.next_offset();
            out.push((base, bytes));
        }
    }
    out
}

/// Asserts `stored` holds exactly the payloads `sent`, in order, batch `i`
/// at offset `i * records_per_batch`.
fn assert_read_back(stored: &[(i64, Vec<u8>)], sent: &[Vec<u8>], records_per_batch: i64) {
    assert_eq!(stored.len(), sent.len());
    for ((offset, bytes), (i, expected)) in stored.iter().zip(sent.iter().enumerate()) {
        assert_eq!(*offset, records_per_batch * i as i64);
        assert_eq!(payload(bytes), &expected[..]);
    }
}

/// One seeded run: several lives, each appending with a random mix of
/// waits and ending in a power loss at a random step.
async fn crash_run(seed: u64, faults: FaultConfig) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut disk = FaultDisk::new(seed, FaultConfig::default());
    let mut history: HashMap<i64, Vec<Vec<u8>>> = HashMap::new();
    let mut durable: Vec<(i64, Vec<u8>)> = Vec::new();
    for life in 0..4 {
        let log = Log::open(disk.clone(), Path::new(DIR), options(small_config(), 32 * 1024), 0).await.expect("open");
        let stored = read_all(&log).await;
        check_after_recovery(seed, life, &stored, &history, &durable);
        disk.set_faults(faults);
        let steps = rng.gen_range(1..60);
        for _ in 0..steps {
            let records = rng.gen_range(1..8);
            let value_bytes = rng.gen_range(0..4000);
            let batch = seeded_batch(rng.gen(), records, value_bytes, 1_000);
            let sent = batch.to_vec();
            let info = match log.append(batch, life, 0).await {
                Ok(info) => info,
                Err(LogError::Poisoned(_)) => break,
                Err(other) => panic!("seed {seed}: append: {other}"),
            };
            history.entry(info.base_offset).or_default().push(payload(&sent).to_vec());
            let wait = rng.gen_range(0..4);
            if wait == 0 && log.wait_durable(info.last_offset + 1).await.is_ok() {
                durable.push((info.base_offset, payload(&sent).to_vec()));
            } else if wait == 1 {
                let _ = log.wait_written(info.last_offset + 1).await;
            }
        }
        disk = disk.crash();
        drop(log);
    }
    let log = Log::open(disk.clone(), Path::new(DIR), options(small_config(), 32 * 1024), 0).await.expect("open");
    let stored = read_all(&log).await;
    check_after_recovery(seed, 99, &stored, &history, &durable);
}

fn check_after_recovery(
    seed: u64,
    life: i32,
    stored: &[(i64, Vec<u8>)],
    history: &HashMap<i64, Vec<Vec<u8>>>,
    durable: &[(i64, Vec<u8>)],
) {
    let by_offset: HashMap<i64, &[u8]> = stored.iter().map(|(o, b)| (*o, payload(b))).collect();
    for pair in stored.windows(2) {
        assert!(pair[0].0 < pair[1].0, "seed {seed} life {life}: offsets must strictly increase");
    }
    for (offset, bytes) in stored {
        let appended = history.get(offset).is_some_and(|versions| versions.iter().any(|v| v == payload(bytes)));
        assert!(appended, "seed {seed} life {life}: batch at {offset} was never appended there");
    }
    for (offset, bytes) in durable {
        assert_eq!(
            by_offset.get(offset).copied(),
            Some(&bytes[..]),
            "seed {seed} life {life}: durable batch at {offset} lost"
        );
    }
}

#[compio::test]
async fn acknowledged_durable_batches_survive_random_power_losses() {
    for seed in 0..seed_count(150) {
        crash_run(seed, FaultConfig::default()).await;
    }
}

#[compio::test]
async fn power_losses_with_failing_writes_and_fsyncs() {
    let faults = FaultConfig { sync_failure_one_in: Some(25), write_failure_one_in: Some(40) };
    for seed in 1000..1000 + seed_count(100) {
        crash_run(seed, faults).await;
    }
}

#[compio::test]
async fn fsync_error_poisons_the_partition() {
    let disk = FaultDisk::new(1, FaultConfig::default());
    let log = Log::open(disk.clone(), Path::new(DIR), options(small_config(), 32 * 1024), 0).await.expect("open");
    let info = log.append(seeded_batch(1, 2, 10, 0), 0, 0).await.expect("append");
    log.wait_durable(info.last_offset + 1).await.expect("first sync works");
    disk.set_faults(FaultConfig { sync_failure_one_in: Some(1), write_failure_one_in: None });
    let info = log.append(seeded_batch(2, 2, 10, 0), 0, 0).await.expect("append before the failure");
    let waited = log.wait_durable(info.last_offset + 1).await;
    assert!(matches!(waited, Err(LogError::Poisoned(_))), "{waited:?}");
    assert!(log.is_poisoned());
    let refused = log.append(seeded_batch(3, 2, 10, 0), 0, 0).await;
    assert!(matches!(refused, Err(LogError::Poisoned(_))), "appends refused after a failed fsync");
    assert!(matches!(log.flush().await, Err(LogError::Poisoned(_))), "never silently retried");
    // Reopening (after the operator fixes the disk) recovers what is on disk.
    let disk = disk.crash();
    let log = Log::open(disk, Path::new(DIR), options(small_config(), 32 * 1024), 0).await.expect("reopen");
    assert!(log.offsets().log_end >= 2);
    assert!(!log.is_poisoned());
}

#[compio::test]
async fn corrupt_and_missing_indexes_are_rebuilt() {
    let disk = FaultDisk::new(3, FaultConfig::default());
    let dir = Path::new(DIR);
    let log = Log::open(disk.clone(), dir, options(small_config(), 1024), 0).await.expect("open");
    let mut sent = Vec::new();
    for seed in 0..120u64 {
        let batch = seeded_batch(seed, 2, 1500, 1_000 + seed as i64);
        sent.push(payload(&batch).to_vec());
        log.append(batch, 0, 0).await.expect("append");
    }
    log.flush().await.expect("flush");
    let bases = log.segment_bases();
    assert!(bases.len() >= 3, "{bases:?}");
    log.close().await.expect("close");
    drop(log);
    // Garbage in one sealed index, another sealed index missing, and a torn
    // active segment index.
    let (index_0, time_0) =
        (dir.join(format!("{:020}.index", bases[0])), dir.join(format!("{:020}.timeindex", bases[0])));
    disk.overwrite(&index_0, vec![0xAB; 21]);
    disk.overwrite(&time_0, vec![0xCD; 24]);
    disk.remove_file(&dir.join(format!("{:020}.index", bases[1]))).await.expect("remove");
    disk.remove_file(&dir.join(format!("{:020}.timeindex", bases[1]))).await.expect("remove");
    let active_index = dir.join(format!("{:020}.index", bases[bases.len() - 1]));
    disk.overwrite(&active_index, vec![0x7F; 16]);
    let log = Log::open(disk.clone(), dir, options(small_config(), 1024), 0).await.expect("reopen");
    let stored = read_all(&log).await;
    assert_read_back(&stored, &sent, 2);
    assert_eq!(log.offset_for_timestamp(1_000 + 5, i64::MAX).await.expect("lookup"), Some((9, 1_005)));
    let rebuilt = disk.contents(&index_0).expect("index rewritten");
    assert_eq!(rebuilt.len() % 8, 0, "rebuilt offset index is well formed");
}

#[compio::test]
async fn torn_tail_is_truncated_at_the_first_invalid_byte() {
    let disk = FaultDisk::new(5, FaultConfig::default());
    let dir = Path::new(DIR);
    let log = Log::open(disk.clone(), dir, options(small_config(), 1024), 0).await.expect("open");
    for seed in 0..10u64 {
        log.append(seeded_batch(seed, 1, 300, 0), 0, 0).await.expect("append");
    }
    log.flush().await.expect("flush");
    let base = *log.segment_bases().last().expect("segment");
    drop(log);
    let path = dir.join(format!("{base:020}.log"));
    let mut bytes = disk.contents(&path).expect("segment");
    let batch_bytes = seeded_batch(0, 1, 300, 0).len();
    // Flip a byte inside the last batch: recovery keeps exactly 9 batches.
    bytes[9 * batch_bytes + 100] ^= 0xFF;
    disk.overwrite(&path, bytes);
    let log = Log::open(disk.clone(), dir, options(small_config(), 1024), 0).await.expect("reopen");
    assert_eq!(log.offsets().log_end, 9);
    let recovered = disk.contents(&path).expect("segment");
    assert!(recovered.len() >= 9 * batch_bytes);
    // Cut there; what follows is the reservation made again, zeros.
    assert!(recovered[9 * batch_bytes..].iter().all(|b| *b == 0), "truncated at the first invalid byte");
    let info = log.append(seeded_batch(42, 1, 300, 0), 0, 0).await.expect("append after recovery");
    assert_eq!(info.base_offset, 9, "offsets continue from the recovered end");
}

#[compio::test]
async fn space_is_reserved_at_the_first_write_not_when_the_partition_is_made() {
    let disk = FaultDisk::new(13, FaultConfig::default());
    let dir = Path::new(DIR);
    let log = Log::open(disk.clone(), dir, options(small_config(), 1024), 0).await.expect("open");
    let path = dir.join(format!("{:020}.log", 0));
    assert_eq!(disk.contents(&path).expect("segment").len(), 0, "an empty partition reserves nothing");
    let batch = seeded_batch(1, 1, 300, 0);
    let sent = batch.to_vec();
    log.append(batch, 0, 0).await.expect("append");
    log.flush().await.expect("flush");
    let file = disk.contents(&path).expect("segment");
    assert!(file.len() > sent.len(), "the first write reserved space inside the file's size");
    assert_eq!(payload(&file[..sent.len()]), payload(&sent), "the batch (offsets and epoch stamped) leads the file");
    assert!(file[sent.len()..].iter().all(|b| *b == 0));
}

#[compio::test]
async fn a_sealed_segment_still_holding_its_reservation_is_complete_not_torn() {
    let disk = FaultDisk::new(11, FaultConfig::default());
    let dir = Path::new(DIR);
    let log = Log::open(disk.clone(), dir, options(small_config(), 1024), 0).await.expect("open");
    let mut sent = Vec::new();
    for seed in 0..60u64 {
        let batch = seeded_batch(seed, 1, 3000, 0);
        sent.push(payload(&batch).to_vec());
        log.append(batch, 0, 0).await.expect("append");
    }
    log.flush().await.expect("flush");
    let bases = log.segment_bases();
    assert!(bases.len() >= 3, "rolled: {bases:?}");
    drop(log);
    // A crash after a roll, before the seal trimmed the reservation: the
    // sealed segment's data is followed by zeros, and it lies past the
    // recovery point, so recovery scans it.
    let sealed = dir.join(format!("{:020}.log", bases[1]));
    let mut bytes = disk.contents(&sealed).expect("sealed segment");
    let data_len = bytes.len();
    bytes.resize(data_len + 3 * 4096, 0);
    disk.overwrite(&sealed, bytes);
    disk.overwrite(&dir.join("recovery-point"), b"0".to_vec());
    let log = Log::open(disk.clone(), dir, options(small_config(), 1024), 0).await.expect("reopen");
    assert_eq!(log.segment_bases(), bases, "no segment dropped");
    let stored = read_all(&log).await;
    assert_read_back(&stored, &sent, 1);
    assert_eq!(disk.contents(&sealed).expect("sealed segment").len(), data_len, "trimmed to its data");
}

#[compio::test]
async fn clean_reopen_of_many_segments_scans_none_of_them() {
    let disk = FaultDisk::new(9, FaultConfig::default());
    let dir = Path::new(DIR);
    let log = Log::open(disk.clone(), dir, options(small_config(), 1024), 0).await.expect("open");
    for seed in 0..400u64 {
        log.append(seeded_batch(seed, 4, 1000, 0), 0, 0).await.expect("append");
    }
    log.close().await.expect("close");
    let segments = log.segment_bases().len();
    let total = log.size_bytes();
    drop(log);
    assert!(segments > 20, "{segments}");
    let before = disk.bytes_read();
    let log = Log::open(disk.clone(), dir, options(small_config(), 1024), 0).await.expect("reopen");
    let read = disk.bytes_read() - before;
    assert_eq!(log.offsets().log_end, 1600);
    assert!(read < total / 10, "clean reopen read {read} of {total} bytes");
}
