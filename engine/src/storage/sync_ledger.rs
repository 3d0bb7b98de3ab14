//! The sync ledger, a test mode of the real disk (`RealDisk`)
//! for power-loss tests of the real broker: when installed (the broker's
//! `test_sync_ledger` setting), every file's durable length is appended to a
//! ledger file as it changes: the length a file had when the ledger first
//! saw it opened (across broker runs: the ledger is kept until power is
//! lost), where its data ended when an fdatasync of it started (once that
//! fdatasync completes, before the caller hears of it), renames and
//! removals. Where data ends is tracked in memory from the opening length,
//! each completed write and each explicit resize; a reservation
//! (`fallocate`) grows the file but holds no data, so it does not count. After a kill -9, a test "loses power" by cutting each file back
//! to its last durable length ([`lose_unsynced_writes`]): what the page
//! cache held and no fdatasync covered is gone, as after a real power cut,
//! even if a broker restarted in between and read it back.
//!
//! Process-wide (every shard appends to the one ledger, a line per event
//! with O_APPEND); off, it costs one relaxed check per file operation.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The installed ledger: its file and the paths already seen this run.
struct Ledger {
    file: Mutex<LedgerState>,
}

struct LedgerState {
    out: File,
    seen: HashSet<PathBuf>,
    /// Where each file's data ends this run.
    data_ends: HashMap<PathBuf, u64>,
}

static LEDGER: OnceLock<Ledger> = OnceLock::new();

/// Starts recording into `path`, appending to what earlier runs recorded
/// since the last power loss. Once per process; a second call is an error.
pub fn install(path: &Path) -> io::Result<()> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    LEDGER
        .set(Ledger { file: Mutex::new(LedgerState { out, seen: HashSet::new(), data_ends: HashMap::new() }) })
        .map_err(|_| io::Error::other("the sync ledger is already installed"))
}

/// Whether a ledger is installed.
pub fn is_installed() -> bool {
    LEDGER.get().is_some()
}

fn record(line: impl FnOnce(&mut LedgerState) -> Option<String>) {
    let Some(ledger) = LEDGER.get() else { return };
    let mut state = ledger.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(line) = line(&mut state) {
        // A failed ledger write would make the power-loss test lie: stop.
        state.out.write_all(line.as_bytes()).expect("sync ledger write");
    }
}

/// A file was opened and is `len` bytes long: its durable length unless
/// the ledger already knows the file (it is new, or was on disk before the
/// ledger started).
pub fn opened(path: &Path, len: u64) {
    record(|state| {
        state.data_ends.entry(path.to_path_buf()).or_insert(len);
        state.seen.insert(path.to_path_buf()).then(|| format!("opened {len} {}\n", path.display()))
    });
}

/// A write that ends at `end` completed.
pub fn wrote(path: &Path, end: u64) {
    record(|state| {
        let data_end = state.data_ends.entry(path.to_path_buf()).or_insert(0);
        *data_end = (*data_end).max(end);
        None
    });
}

/// The file was truncated or extended to `len` (its data ends there).
pub fn resized(path: &Path, len: u64) {
    record(|state| {
        state.data_ends.insert(path.to_path_buf(), len);
        None
    });
}

/// Where the file's data ends now, when the ledger is installed and knows it.
pub fn data_end(path: &Path) -> Option<u64> {
    let ledger = LEDGER.get()?;
    let state = ledger.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    state.data_ends.get(path).copied()
}

/// An fdatasync that started when the file's data ended at `len` completed.
pub fn synced(path: &Path, len: u64) {
    record(|_| Some(format!("durable {len} {}\n", path.display())));
}

/// A file was renamed (its durable length goes with it).
pub fn renamed(from: &Path, to: &Path) {
    record(|state| {
        state.seen.insert(to.to_path_buf());
        match state.data_ends.remove(from) {
            Some(end) => state.data_ends.insert(to.to_path_buf(), end),
            None => state.data_ends.remove(to),
        };
        Some(format!("rename {}\0{}\n", from.display(), to.display()))
    });
}

/// A file was removed (a file created later at its path is new).
pub fn removed(path: &Path) {
    record(|state| {
        state.seen.remove(path);
        state.data_ends.remove(path);
        Some(format!("remove {}\n", path.display()))
    });
}

/// A directory and everything in it was removed.
pub fn removed_dir(path: &Path) {
    record(|state| {
        state.seen.retain(|seen_path| !seen_path.starts_with(path));
        state.data_ends.retain(|known, _| !known.starts_with(path));
        Some(format!("remove-dir {}\n", path.display()))
    });
}

/// Applies a ledger after the broker died: every file it names is cut to
/// its last durable length, and the ledger is removed (what is left is all
/// durable). Returns how many files lost bytes.
pub fn lose_unsynced_writes(ledger: &Path) -> io::Result<usize> {
    let text = std::fs::read_to_string(ledger)?;
    let mut durable: HashMap<PathBuf, u64> = HashMap::new();
    for line in text.lines() {
        let (kind, rest) = line.split_once(' ').ok_or_else(|| io::Error::other(format!("bad line {line:?}")))?;
        match kind {
            "durable" | "opened" => {
                let (len, path) = rest.split_once(' ').ok_or_else(|| io::Error::other(format!("bad {line:?}")))?;
                let len = len.parse().map_err(|_| io::Error::other(format!("bad length in {line:?}")))?;
                if kind == "durable" {
                    durable.insert(PathBuf::from(path), len);
                } else {
                    durable.entry(PathBuf::from(path)).or_insert(len);
                }
            }
            "rename" => {
                let (from, to) = rest.split_once('\0').ok_or_else(|| io::Error::other(format!("bad {line:?}")))?;
                match durable.remove(Path::new(from)) {
                    Some(len) => durable.insert(PathBuf::from(to), len),
                    None => durable.remove(Path::new(to)),
                };
            }
            "remove" => {
                durable.remove(Path::new(rest));
            }
            "remove-dir" => durable.retain(|path, _| !path.starts_with(rest)),
            _ => return Err(io::Error::other(format!("unknown ledger line {line:?}"))),
        }
    }
    let mut cut = 0;
    for (path, len) in durable {
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) else { continue };
        if file.metadata()?.len() > len {
            file.set_len(len)?;
            file.sync_all()?;
            cut += 1;
        }
    }
    std::fs::remove_file(ledger)?;
    Ok(cut)
}
