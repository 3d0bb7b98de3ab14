//! Append/read round trips against a simple in-memory model, with rolls,
//! reopen, truncation and retention, on the fault disk (no faults) and on
//! the real disk.

mod common;

use std::path::Path;

use common::*;
use proptest::prelude::*;
use shardline_engine::storage::fault_disk::{FaultConfig, FaultDisk};
use shardline_engine::{Disk, Log, LogError, RealDisk};

#[derive(Debug, Clone)]
enum Op {
    Append { seed: u64, records: usize, value_bytes: usize },
    Read { pick: usize, max_bytes: usize },
    Reopen,
    Truncate { pick: usize },
    DeleteRecords { pick: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u64>(), 1usize..20, 0usize..3000).prop_map(|(seed, records, value_bytes)| Op::Append { seed, records, value_bytes }),
        3 => (any::<usize>(), 1usize..20_000).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        1 => Just(Op::Reopen),
        1 => any::<usize>().prop_map(|pick| Op::Truncate { pick }),
        1 => any::<usize>().prop_map(|pick| Op::DeleteRecords { pick }),
    ]
}

/// The model: every batch in the log, in order, as (base offset, bytes).
#[derive(Default)]
struct Model {
    batches: Vec<(i64, i64, Vec<u8>)>,
    log_start: i64,
    log_end: i64,
}

impl Model {
    fn offset_at(&self, pick: usize) -> i64 {
        if self.log_end == self.log_start {
            return self.log_end;
        }
        self.log_start + (pick % (self.log_end - self.log_start + 1) as usize) as i64
    }
}

async fn check_read<D: Disk>(log: &Log<D>, model: &Model, offset: i64, max_bytes: usize) {
    let result = log.read(offset, max_bytes, i64::MAX).await.expect("read in range");
    // The socket read returns the same bytes, resident or not.
    let for_socket = log.read_resident(offset, max_bytes, i64::MAX).await.expect("socket read in range");
    assert_eq!(result_bytes(&for_socket), result_bytes(&result), "read_resident at {offset} max {max_bytes}");
    if let Some(range) = &for_socket.resident {
        let last = split_batches(std::slice::from_ref(&bytes::Bytes::from(result_bytes(&result))));
        let next = last.last().map(|(base, bytes)| {
            let header = shardline_engine::format::batch::parse_header(bytes).expect("a batch");
            assert_eq!(*base, header.base_offset);
            header.next_offset()
        });
        assert_eq!(Some(range.next_offset), next, "the range's next offset");
    }
    let got = split_batches(&result.batches);
    let expected: Vec<&(i64, i64, Vec<u8>)> = model.batches.iter().filter(|(_, next, _)| *next > offset).collect();
    if expected.is_empty() {
        assert!(got.is_empty());
        return;
    }
    assert!(!got.is_empty(), "read at {offset} returned nothing");
    let mut total = 0;
    for (i, (base, bytes)) in got.iter().enumerate() {
        let (want_base, _, want_bytes) = expected[i];
        assert_eq!(base, want_base);
        assert_eq!(payload(bytes), payload(want_bytes));
        total += bytes.len();
        if i > 0 {
            assert!(total <= max_bytes, "only the first batch may exceed max_bytes");
        }
    }
}

async fn run_ops<D: Disk>(disk: D, dir: &Path, ops: Vec<Op>) {
    let config = small_config();
    let mut log = Log::open(disk.clone(), dir, options(config.clone(), 32 * 1024), 0).await.expect("open");
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append { seed, records, value_bytes } => {
                let batch = seeded_batch(seed, records, value_bytes, 1_000 + (seed % 1000) as i64);
                let bytes = batch.to_vec();
                let info = log.append(batch, 3, 0).await.expect("append");
                assert_eq!(info.base_offset, model.log_end);
                assert_eq!(info.last_offset, model.log_end + records as i64 - 1);
                model.batches.push((info.base_offset, info.last_offset + 1, bytes));
                model.log_end = info.last_offset + 1;
                log.wait_durable(model.log_end).await.expect("durable");
            }
            Op::Read { pick, max_bytes } => {
                let offset = model.offset_at(pick);
                check_read(&log, &model, offset, max_bytes).await;
            }
            Op::Reopen => {
                log.close().await.expect("close");
                drop(log);
                log = Log::open(disk.clone(), dir, options(config.clone(), 32 * 1024), 0).await.expect("reopen");
                assert_eq!(log.offsets().log_end, model.log_end);
                assert_eq!(log.offsets().log_start, model.log_start);
            }
            Op::Truncate { pick } => {
                let offset = model.offset_at(pick);
                let new_end = log.truncate_to(offset).await.expect("truncate");
                model.batches.retain(|(_, next, _)| *next <= offset);
                let expected_end = if offset >= model.log_end {
                    model.log_end
                } else {
                    model.batches.last().map_or(offset, |b| b.1.max(offset.min(b.1)))
                };
                assert!(new_end <= offset.max(model.log_start) || offset >= model.log_end);
                let _ = expected_end;
                model.log_end = new_end;
                model.batches.retain(|(_, next, _)| *next <= new_end);
            }
            Op::DeleteRecords { pick } => {
                let offset = model.offset_at(pick);
                match log.delete_records(offset).await {
                    Ok(start) => {
                        model.log_start = model.log_start.max(offset);
                        assert_eq!(start, model.log_start);
                        model.batches.retain(|(_, next, _)| *next > model.log_start);
                    }
                    Err(LogError::OffsetOutOfRange { .. }) => assert!(offset > log.offsets().high_watermark),
                    Err(other) => panic!("delete records: {other}"),
                }
            }
        }
        let offsets = log.offsets();
        assert_eq!(offsets.log_end, model.log_end);
        assert_eq!(offsets.high_watermark, model.log_end, "single replica: HW follows durable LEO");
        if model.log_start < model.log_end {
            let below = log.read(model.log_start - 1, 100, i64::MAX).await;
            assert!(model.log_start == 0 || matches!(below, Err(LogError::OffsetOutOfRange { .. })));
        }
    }
    for offset in model.log_start..model.log_end.min(model.log_start + 50) {
        check_read(&log, &model, offset, 1).await;
    }
    log.close().await.expect("final close");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn operations_match_model_on_fault_disk(ops in proptest::collection::vec(op(), 1..80)) {
        let runtime = compio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let disk = FaultDisk::new(7, FaultConfig::default());
            run_ops(disk, Path::new("/data/t-0"), ops).await;
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn operations_match_model_on_real_disk(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = compio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        runtime.block_on(async {
            run_ops(RealDisk, &dir.path().join("t-0"), ops).await;
        });
    }
}

#[compio::test]
async fn rolls_segments_and_reads_across_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("roll-0");
    let log = Log::open(RealDisk, &path, options(small_config(), 16 * 1024), 0).await.expect("open");
    let mut expected = Vec::new();
    for seed in 0..200u64 {
        let batch = seeded_batch(seed, 3, 1000, 10_000 + seed as i64 * 10);
        expected.push(batch.to_vec());
        log.append(batch, 0, 0).await.expect("append");
    }
    log.flush().await.expect("flush");
    assert!(log.segment_bases().len() > 5, "small segments roll: {:?}", log.segment_bases());
    let mut offset = 0;
    let mut seen = 0;
    while seen < expected.len() {
        let result = log.read(offset, 8 * 1024, i64::MAX).await.expect("read");
        for (base, bytes) in split_batches(&result.batches) {
            assert_eq!(base, offset);
            assert_eq!(payload(&bytes), payload(&expected[seen]));
            offset += 3;
            seen += 1;
        }
    }
    // Lookup by timestamp: batch `seed` has records at 10_000 + 10*seed + {0,1,2}.
    assert_eq!(log.offset_for_timestamp(10_000 + 10 * 50 + 1, i64::MAX).await.expect("lookup"), Some((151, 10_501)));
    assert_eq!(log.offset_for_timestamp(0, i64::MAX).await.expect("lookup"), Some((0, 10_000)));
    assert_eq!(log.offset_for_timestamp(99_999, i64::MAX).await.expect("lookup"), None);
    assert_eq!(log.max_timestamp(), Some((597, 10_000 + 1990 + 2)).map(|(_, ts)| (597, ts)));
    log.close().await.expect("close");
    // Clean reopen keeps everything and can read the oldest segment.
    let log = Log::open(RealDisk, &path, options(small_config(), 16 * 1024), 0).await.expect("reopen");
    assert_eq!(log.offsets().log_end, 600);
    let first = log.read(0, 1, i64::MAX).await.expect("read");
    assert_eq!(payload(&split_batches(&first.batches)[0].1), payload(&expected[0]));
    log.close().await.expect("close");
}
