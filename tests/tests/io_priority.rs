//! `io_priority` sets the I/O priority of every shard thread (which
//! io_uring gives the shard's reads and writes), and a value that is not a
//! priority keeps the broker from starting.

use std::process::{Command, Stdio};

use shardline_tests::{broker_binary, Broker};

/// (thread name, ioprio value) of every thread of `pid`.
fn thread_priorities(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task list") {
        let entry = entry.expect("task");
        let tid: i64 = entry.file_name().to_string_lossy().parse().expect("tid");
        let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default().trim().to_string();
        // SAFETY: a plain query of another thread's I/O priority (who 1 =
        // IOPRIO_WHO_PROCESS, which takes a thread id).
        let value = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, tid) };
        out.push((name, value));
    }
    out
}

#[test]
fn every_shard_thread_runs_at_the_configured_priority() {
    let broker = Broker::start(&["--shards", "2", "--set", "io_priority=best-effort:2"]);
    let best_effort_2 = (2 << 13) | 2;
    let shards: Vec<(String, i64)> =
        thread_priorities(broker.pid()).into_iter().filter(|(name, _)| name.starts_with("shard-")).collect();
    assert_eq!(shards.len(), 2, "two shard threads: {shards:?}");
    for (name, value) in &shards {
        assert_eq!(*value, best_effort_2, "{name} runs at best-effort level 2");
    }
}

#[test]
fn a_bad_priority_keeps_the_broker_from_starting() {
    let temp = tempfile::tempdir().expect("temp dir");
    let output = Command::new(broker_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(temp.path().join("data"))
        .args(["--set", "io_priority=realtime:9"])
        .stdout(Stdio::null())
        .output()
        .expect("run the broker");
    assert!(!output.status.success(), "refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("io_priority"), "names the setting: {stderr}");
}
