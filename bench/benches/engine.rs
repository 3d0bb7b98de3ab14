//! Criterion benchmarks of the partition log on the real disk (O_DIRECT,
//! io_uring): append throughput for 1 KiB and 16 KiB batches with group
//! commit (many producers, acks=all), with one fdatasync per batch (one
//! producer, acks=all), and written-only (acks=1); and read throughput from
//! the files (cache off) and from the batch cache.
//!
//! Run with `bash bench/engine-bench.sh` to get fio's O_DIRECT sequential
//! write speed on the same disk beside these numbers.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardline_bench::{batch_of, open_log, produce, Ack};

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var("SHARDLINE_BENCH_DIR").unwrap_or_else(|_| "target/bench-data".into());
    std::fs::create_dir_all(&base).expect("bench dir");
    tempfile::tempdir_in(base).expect("tempdir")
}

fn appends(c: &mut Criterion) {
    let runtime = compio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("append");
    group.sample_size(10).measurement_time(Duration::from_secs(6)).warm_up_time(Duration::from_secs(1));
    for (size_name, size, batches) in [("1KiB", 1024usize, 32_768usize), ("16KiB", 16 * 1024, 4_096)] {
        let template = batch_of(size);
        group.throughput(Throughput::Bytes((batches * template.len()) as u64));
        let modes = [
            ("group_commit_64_producers", 64usize, Ack::Durable, batches),
            ("group_commit_512_producers", 512, Ack::Durable, batches),
            ("written_only_64_producers", 64, Ack::Written, batches),
            ("fsync_per_batch_1_producer", 1, Ack::Durable, batches / 32),
        ];
        for (mode, producers, ack, count) in modes {
            group.throughput(Throughput::Bytes((count * template.len()) as u64));
            group.bench_function(BenchmarkId::new(mode, size_name), |b| {
                b.iter_custom(|iterations| {
                    runtime.block_on(async {
                        let dir = bench_dir();
                        let log = open_log(&dir.path().join("bench-0"), 64 << 20).await;
                        let start = Instant::now();
                        for _ in 0..iterations {
                            produce(&log, &template, count, producers, ack).await;
                        }
                        let elapsed = start.elapsed();
                        log.close().await.expect("close");
                        elapsed
                    })
                })
            });
        }
    }
    group.finish();
}

fn reads(c: &mut Criterion) {
    let runtime = compio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("read");
    group.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    let template = batch_of(16 * 1024);
    let batches = 8_192usize; // 128 MiB
    for (name, cache_bytes) in [("from_files", 0usize), ("from_cache", 256 << 20)] {
        let dir = bench_dir();
        let log = runtime.block_on(async {
            let log = open_log(&dir.path().join("read-0"), cache_bytes).await;
            produce(&log, &template, batches, 64, Ack::Durable).await;
            log
        });
        let end = log.offsets().log_end;
        group.throughput(Throughput::Bytes((batches * template.len()) as u64));
        group.bench_function(BenchmarkId::new(name, "1MiB_fetches"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut offset = 0;
                    let mut bytes = 0usize;
                    while offset < end {
                        let result = log.read(offset, 1 << 20, end).await.expect("read");
                        bytes += result.total_bytes();
                        assert!(!result.batches.is_empty(), "reads make progress");
                        offset = next_offset_after(&result.batches);
                    }
                    bytes
                })
            })
        });
        runtime.block_on(async { log.close().await.expect("close") });
    }
    group.finish();
}

/// Offset after the last batch of a read result.
fn next_offset_after(chunks: &[bytes::Bytes]) -> i64 {
    let mut next = 0;
    for chunk in chunks {
        for (_, header) in shardline_engine::format::batch::BatchIter::new(chunk) {
            next = header.next_offset();
        }
    }
    next
}

criterion_group!(benches, appends, reads);
criterion_main!(benches);
