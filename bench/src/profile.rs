//! Where the broker's time goes: samples the broker process with `perf`
//! (cpu-clock, so it works on VMs without hardware counters) while a
//! workload runs, and sums the samples into symbols and coarse categories
//! (memory copies, kernel networking, disk, CRC, ...). Runs beside the load
//! generator, outside the broker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde::{Deserialize, Serialize};

/// One symbol's or category's share of the samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share {
    /// Symbol or category name.
    pub name: String,
    /// Percent of all samples.
    pub percent: f64,
}

/// A profile of the broker over one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Coarse categories, largest first.
    pub categories: Vec<Share>,
    /// The heaviest symbols, largest first.
    pub top_symbols: Vec<Share>,
}

/// A `perf record` attached to a process; `finish` stops it and reads it.
pub struct Recording {
    child: Child,
    data: PathBuf,
}

/// Starts sampling `pid`, or None when perf is missing or not permitted.
pub fn start(pid: u32) -> Option<Recording> {
    let data = std::env::temp_dir().join(format!("shardline-bench-perf-{pid}-{}.data", std::process::id()));
    let child = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", "999", "-p", &pid.to_string(), "-o"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Recording { child, data })
}

impl Recording {
    /// Stops sampling and summarises the samples.
    pub fn finish(mut self) -> Option<Profile> {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let stopped = self.child.wait().ok()?;
        let profile = if stopped.success() || stopped.code().is_none() { summarise(&self.data) } else { None };
        let _ = std::fs::remove_file(&self.data);
        profile
    }
}

fn summarise(data: &Path) -> Option<Profile> {
    let output = Command::new("perf")
        .args(["report", "--no-children", "--sort", "sym", "--stdio", "--percent-limit", "0.2", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let symbols = parse_report(&text);
    if symbols.is_empty() {
        return None;
    }
    Some(Profile { categories: categorise(&symbols), top_symbols: symbols.into_iter().take(15).collect() })
}

/// Parses `perf report --sort sym --stdio` lines such as
/// `    21.03%  [.] __memmove_avx_unaligned_erms`; kernel symbols keep `[k]`.
pub fn parse_report(text: &str) -> Vec<Share> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let (percent, rest) = line.trim().split_once('%')?;
            let percent: f64 = percent.trim().parse().ok()?;
            let rest = rest.trim();
            let name = if let Some(sym) = rest.strip_prefix("[k]") {
                format!("[k] {}", sym.trim())
            } else {
                rest.strip_prefix("[.]").unwrap_or(rest).trim().to_string()
            };
            Some(Share { name, percent })
        })
        .collect()
}

/// The category a symbol belongs to.
pub fn category(symbol: &str) -> &'static str {
    let s = symbol.to_ascii_lowercase();
    let kernel = s.starts_with("[k]");
    let has = |needles: &[&str]| needles.iter().any(|n| s.contains(n));
    if has(&["memcpy", "memmove", "copy_user", "copyout", "copyin", "rep_movs", "copy_to_iter", "copy_from_iter"]) {
        if kernel {
            "kernel copies (socket and page cache)"
        } else {
            "user-space memory copies"
        }
    } else if has(&["crc32"]) {
        "CRC32C"
    } else if has(&["lz4", "zstd", "snappy", "snap::", "inflate", "deflate", "zlib"]) {
        "compression"
    } else if kernel && has(&["tcp", "skb", "sock", "inet", "ip_", "net_", "loopback", "napi", "__dev_queue"]) {
        "kernel networking"
    } else if kernel
        && has(&["ext4", "blk", "bio", "virtio", "nvme", "iomap", "jbd2", "dio", "fsync", "sync", "gup_", "iowrite"])
    {
        "kernel disk I/O"
    } else if kernel
        && has(&[
            "io_uring",
            "io_",
            "futex",
            "schedule",
            "switch",
            "wake",
            "epoll",
            "syscall",
            "entry",
            "spin_unlock",
            "softirq",
        ])
    {
        "kernel scheduling, syscalls, io_uring"
    } else if kernel {
        "kernel other"
    } else if has(&["malloc", "free", "alloc", "realloc", "mi_", "je_"]) {
        "allocation"
    } else if has(&["kafka_protocol", "encode", "decode"]) {
        "protocol encode/decode"
    } else {
        "broker other"
    }
}

fn categorise(symbols: &[Share]) -> Vec<Share> {
    let mut totals: Vec<Share> = Vec::new();
    for s in symbols {
        let name = category(&s.name);
        match totals.iter_mut().find(|t| t.name == name) {
            Some(t) => t.percent += s.percent,
            None => totals.push(Share { name: name.into(), percent: s.percent }),
        }
    }
    totals.sort_by(|a, b| b.percent.total_cmp(&a.percent));
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_categorises_perf_output() {
        let text = "# Samples: 10K\n#\n    21.03%  [.] __memmove_avx_unaligned_erms\n     9.50%  [k] copy_user_enhanced_fast_string\n     5.00%  [.] crc32c::hw_x86_64::crc32c\n     4.00%  [k] tcp_sendmsg_locked\n";
        let shares = parse_report(text);
        assert_eq!(shares.len(), 4);
        assert_eq!(shares[0].name, "__memmove_avx_unaligned_erms");
        assert_eq!(category(&shares[1].name), "kernel copies (socket and page cache)");
        let cats = categorise(&shares);
        assert_eq!(cats[0].name, "user-space memory copies");
        assert!((cats[0].percent - 21.03).abs() < 1e-9);
        assert!(cats.iter().any(|c| c.name == "CRC32C"));
        assert!(cats.iter().any(|c| c.name == "kernel networking"));
    }
}
