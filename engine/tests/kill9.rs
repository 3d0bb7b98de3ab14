//! A real kill -9: a child process appends with fdatasync and reports each
//! durable offset; the parent SIGKILLs it mid-stream, reopens the log, and
//! every reported offset is there with the same bytes. Three rounds on the
//! same directory, so recovery of an already recovered log is covered too.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use shardline_engine::format::batch::build::deterministic_batch;
use shardline_engine::{Log, RealDisk};

/// A `durable <offset> <producer> <seq>` line of the appender.
fn parse_report(line: &str) -> Option<(i64, u64, u64)> {
    let mut parts = line.split_whitespace();
    if parts.next() != Some("durable") {
        return None;
    }
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Runs the appender until it has reported `reports` durable batches (or
/// 20 s), then kills it with SIGKILL. Returns (base offset, producer, seq).
fn run_and_kill(dir: &std::path::Path, first_seq: u64, reports: usize) -> Vec<(i64, u64, u64)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash_appender"))
        .arg(dir)
        .arg(first_seq.to_string())
        .arg("30")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn appender");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut reported = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while reported.len() < reports && Instant::now() < deadline {
        let Ok(line) = receiver.recv_timeout(Duration::from_millis(100)) else { continue };
        reported.extend(parse_report(&line));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    // Lines written before the kill may still be in the pipe: they count too.
    while let Ok(line) = receiver.recv_timeout(Duration::from_millis(200)) {
        reported.extend(parse_report(&line));
    }
    assert!(reported.len() >= reports / 2, "appender reported only {} batches", reported.len());
    reported
}

#[compio::test]
async fn every_reported_durable_batch_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kill-0");
    let mut all_reported = Vec::new();
    for round in 0..3u64 {
        all_reported.extend(run_and_kill(&path, round * 1_000_000, 1500));
        let log = Log::open(RealDisk, &path, options(small_config(), 1 << 20), 0).await.expect("reopen after kill -9");
        let end = log.offsets().log_end;
        for (offset, producer, seq) in &all_reported {
            assert!(*offset < end, "round {round}: reported offset {offset} beyond recovered end {end}");
            let read = log.read(*offset, 1, i64::MAX).await.expect("read");
            let batches = split_batches(&read.batches);
            let (base, bytes) = batches.first().expect("a batch at a reported offset");
            assert_eq!(base, offset, "round {round}");
            assert_eq!(
                payload(bytes),
                payload(&deterministic_batch(*producer, *seq)),
                "round {round}: bytes at {offset}"
            );
        }
        log.close().await.expect("close");
    }
}
