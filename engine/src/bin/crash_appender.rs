//! Test helper for the kill -9 test (engine/tests/kill9.rs): appends
//! deterministic batches to the partition log in `<dir>` from several
//! concurrent producers, waits for each to be durable (fdatasync'ed), and
//! prints `durable <base offset> <producer> <seq>` for it. Runs until killed,
//! or at most `<max seconds>`.

use std::io::Write;
use std::path::PathBuf;

use bytes::BytesMut;
use shardline_engine::format::batch::build::deterministic_batch;
use shardline_engine::log::cache::BatchCache;
use shardline_engine::runtime::clock::system_clock;
use shardline_engine::{HighWatermarkPolicy, Log, LogConfig, LogOptions, RealDisk};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: crash_appender <dir> <first seq> <max seconds>"));
    let first_seq: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let max_seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let runtime = compio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let config = LogConfig { segment_bytes: 256 * 1024, ..LogConfig::default() };
        let options = LogOptions {
            config,
            policy: HighWatermarkPolicy::Durable,
            cache: BatchCache::shared(1 << 20),
            cache_key: 0,
            indexes: shardline_engine::log::index_budget::IndexBudget::shared(64 << 20),
            clock: system_clock(),
        };
        let log = Log::open(RealDisk, &dir, options, 0).await.expect("open log");
        println!("ready {}", log.offsets().log_end);
        let clock = system_clock();
        let deadline_ms = clock.now_ms() + (max_seconds * 1000) as i64;
        let producers: Vec<_> = (0..4u64)
            .map(|producer| {
                let log = log.clone();
                compio::runtime::spawn(async move {
                    let mut seq = first_seq;
                    while system_clock().now_ms() < deadline_ms {
                        let batch = BytesMut::from(&deterministic_batch(producer, seq)[..]);
                        let info = log.append(batch, 0, 0).await.expect("append");
                        log.wait_durable(info.last_offset + 1).await.expect("durable");
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "durable {} {producer} {seq}", info.base_offset).expect("stdout");
                        out.flush().expect("flush");
                        seq += 1;
                    }
                })
            })
            .collect();
        for producer in producers {
            let _ = producer.await;
        }
    });
}
