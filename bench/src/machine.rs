//! The machine state a run starts from, and where its processes run: wait
//! for the page cache's writeback to finish (so one broker's run does not
//! measure the dirty pages the other left behind), drop a data directory's
//! pages from the page cache (a backlog that must be read from the disk),
//! and pin processes to CPU sets. Runs in the harness, outside the brokers.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Dirty plus writeback memory below which the page cache counts as
/// settled: a run starts with at most this much writeback ahead of it.
pub const SETTLED_MIB: f64 = 64.0;

/// The page cache as a run found it, from `/proc/meminfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PageCacheState {
    /// Dirty pages not yet being written.
    pub dirty_mib: f64,
    /// Pages being written back.
    pub writeback_mib: f64,
    /// Page cache size.
    pub cached_mib: f64,
    /// Seconds the harness waited for writeback before the run.
    pub waited_s: f64,
    /// Whether dirty + writeback fell below [`SETTLED_MIB`] within the wait.
    pub settled: bool,
}

fn meminfo_mib(field: &str) -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The page cache now.
pub fn page_cache_now() -> PageCacheState {
    PageCacheState {
        dirty_mib: meminfo_mib("Dirty"),
        writeback_mib: meminfo_mib("Writeback"),
        cached_mib: meminfo_mib("Cached"),
        waited_s: 0.0,
        settled: false,
    }
}

/// Starts writeback of everything dirty (`sync`), then waits, at most
/// `limit`, until dirty + writeback memory is below [`SETTLED_MIB`].
pub fn settle_writeback(limit: Duration) -> PageCacheState {
    let started = Instant::now();
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    loop {
        let mut state = page_cache_now();
        state.waited_s = started.elapsed().as_secs_f64();
        state.settled = state.dirty_mib + state.writeback_mib < SETTLED_MIB;
        if state.settled || started.elapsed() >= limit {
            return state;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes back and drops from the page cache every file under `dir`
/// (`fdatasync`, then `posix_fadvise(DONTNEED)`), so reading them goes to
/// the disk. Returns the bytes dropped.
pub fn drop_from_page_cache(dir: &Path) -> u64 {
    use std::os::fd::AsRawFd;
    let mut dropped = 0;
    let mut pending = vec![dir.to_path_buf()];
    let mut visited = 0usize;
    while let Some(path) = pending.pop() {
        visited += 1;
        if visited > 1_000_000 {
            break;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
        } else if meta.is_file() {
            if let Ok(file) = std::fs::File::open(&path) {
                let _ = file.sync_data();
                // SAFETY: advising the kernel about a file descriptor we own.
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
                dropped += meta.len();
            }
        }
    }
    dropped
}

/// Parses a CPU list as `taskset -c` takes it ("0", "0-3", "0,2-3").
pub fn parse_cpu_list(list: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (from, to) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |v: &str| v.parse::<usize>().map_err(|_| format!("bad CPU {v:?} in {list:?}"));
        let (from, to) = (parse(from)?, parse(to)?);
        if from > to || to >= 1024 {
            return Err(format!("bad CPU range {part:?} in {list:?}"));
        }
        cpus.extend(from..=to);
    }
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        return Err(format!("empty CPU list {list:?}"));
    }
    Ok(cpus)
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect()
    }
}

/// Pins the calling thread, and every thread it starts afterwards, to `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus.iter().filter(|&&cpu| cpu < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Formats CPUs as a `taskset -c` list.
pub fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_as_taskset_reads_them() {
        assert_eq!(parse_cpu_list("0"), Ok(vec![0]));
        assert_eq!(parse_cpu_list("0-2,5,1"), Ok(vec![0, 1, 2, 5]));
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert_eq!(cpu_list(&[0, 2]), "0,2");
    }

    #[test]
    fn the_page_cache_is_read_from_meminfo() {
        let state = page_cache_now();
        assert!(state.cached_mib > 0.0, "{state:?}");
    }
}
