//! A fault-injecting disk behind the same [`Disk`] interface as the real one:
//! a test seam, not a mock of behaviour. File contents live in memory as a
//! durable image plus the operations issued since the last fdatasync.
//!
//! [`FaultDisk::crash`] returns the disk as a machine would find it after a
//! power loss: every synced byte, plus a seeded random subset of the unsynced
//! operations, the last kept write possibly torn at a 4 KiB boundary;
//! [`FaultDisk::crash_process`] as it is after kill -9 (every issued write
//! kept).
//! Directory operations (create, rename, remove) are treated as durable at
//! once. fdatasync and writes can be made to fail with EIO, reads of files
//! under a directory can be held (a disk that does not answer) until
//! released, and O_DIRECT writes can be held and released one by one (a
//! device completing them out of order). Used from one thread; cloning shares the same disk.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use compio::buf::BufResult;

use crate::runtime::event::LocalEvent;
use crate::storage::aligned::{AlignedBuf, PAGE_BYTES};
use crate::storage::disk::{Disk, DiskFile, OpenMode};

/// What the fault disk injects, each as "one in N" chances per operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultConfig {
    /// fdatasync fails with EIO once in this many calls.
    pub sync_failure_one_in: Option<u32>,
    /// A write fails with EIO once in this many calls.
    pub write_failure_one_in: Option<u32>,
}

#[derive(Debug, Clone)]
enum PendingOp {
    Write { position: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<PendingOp>,
}

fn apply(image: &mut Vec<u8>, op: &PendingOp) {
    match op {
        PendingOp::Write { position, bytes } => {
            let end = *position as usize + bytes.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*position as usize..end].copy_from_slice(bytes);
        }
        PendingOp::SetLen(len) => image.resize(*len as usize, 0),
    }
}

#[derive(Debug, Default)]
struct State {
    names: BTreeMap<PathBuf, usize>,
    dirs: Vec<PathBuf>,
    inodes: Vec<Inode>,
    rng: u64,
    faults: FaultConfig,
    syncs: u64,
    writes: u64,
    bytes_read: u64,
    /// Reads of files under this directory wait until released.
    hold_reads_under: Option<PathBuf>,
    /// Reads waiting now.
    held_reads: u64,
    /// Writes wait until released one by one.
    hold_writes: bool,
    /// Tickets of the writes waiting now, oldest first.
    held_writes: Vec<u64>,
    /// Tickets released but not yet resumed.
    released_writes: Vec<u64>,
    next_write_ticket: u64,
}

impl State {
    fn next_random(&mut self) -> u64 {
        // xorshift64*: reproducible from the seed.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn one_in(&mut self, n: Option<u32>) -> bool {
        match n {
            Some(n) if n > 0 => self.next_random().is_multiple_of(u64::from(n)),
            _ => false,
        }
    }
}

/// The fault-injecting disk. See the module documentation.
#[derive(Debug, Clone)]
pub struct FaultDisk {
    state: Rc<RefCell<State>>,
    /// Wakes held reads when the hold changes.
    holds_changed: Rc<LocalEvent>,
}

/// A file of a [`FaultDisk`].
#[derive(Debug)]
pub struct FaultFile {
    state: Rc<RefCell<State>>,
    holds_changed: Rc<LocalEvent>,
    inode: usize,
    /// The name it was opened by.
    path: PathBuf,
}

impl FaultDisk {
    /// An empty disk whose random choices follow `seed`.
    pub fn new(seed: u64, faults: FaultConfig) -> Self {
        let state = State { rng: seed | 1, faults, ..State::default() };
        Self { state: Rc::new(RefCell::new(state)), holds_changed: Rc::default() }
    }

    /// From now on, reads of files opened under `dir` wait (a disk that
    /// does not answer) until [`release_reads`](Self::release_reads).
    pub fn hold_reads_under(&self, dir: &Path) {
        self.state.borrow_mut().hold_reads_under = Some(dir.to_path_buf());
    }

    /// Lets every held read, and later ones, go on.
    pub fn release_reads(&self) {
        self.state.borrow_mut().hold_reads_under = None;
        self.holds_changed.notify_all();
    }

    /// Reads waiting on a hold now.
    pub fn held_reads(&self) -> u64 {
        self.state.borrow().held_reads
    }

    /// From now on, every data write waits (issued but not done) until
    /// released with [`release_held_write`](Self::release_held_write) or
    /// [`release_writes`](Self::release_writes).
    pub fn hold_writes(&self) {
        self.state.borrow_mut().hold_writes = true;
    }

    /// Writes waiting on the hold now.
    pub fn held_writes(&self) -> usize {
        self.state.borrow().held_writes.len()
    }

    /// Lets the `index`-th oldest held write complete (the others keep
    /// waiting); false when there is none.
    pub fn release_held_write(&self, index: usize) -> bool {
        let mut state = self.state.borrow_mut();
        if index >= state.held_writes.len() {
            return false;
        }
        let ticket = state.held_writes.remove(index);
        state.released_writes.push(ticket);
        drop(state);
        self.holds_changed.notify_all();
        true
    }

    /// Ends the hold: every held write, and later ones, go on.
    pub fn release_writes(&self) {
        let mut state = self.state.borrow_mut();
        state.hold_writes = false;
        let held = std::mem::take(&mut state.held_writes);
        state.released_writes.extend(held);
        drop(state);
        self.holds_changed.notify_all();
    }

    /// Changes the injected faults from now on.
    pub fn set_faults(&self, faults: FaultConfig) {
        self.state.borrow_mut().faults = faults;
    }

    /// Number of successful fdatasync calls so far.
    pub fn sync_count(&self) -> u64 {
        self.state.borrow().syncs
    }

    /// Bytes read through this disk so far.
    pub fn bytes_read(&self) -> u64 {
        self.state.borrow().bytes_read
    }

    /// The disk after a power loss now. Handles to the old disk stay usable
    /// but no longer affect the new one.
    pub fn crash(&self) -> FaultDisk {
        let mut old = self.state.borrow_mut();
        let mut inodes = Vec::with_capacity(old.inodes.len());
        for index in 0..old.inodes.len() {
            let pending = old.inodes[index].pending.clone();
            let mut image = old.inodes[index].durable.clone();
            for op in &pending {
                match old.next_random() % 4 {
                    0 => {} // lost
                    1 => {
                        // torn: only some leading pages reached the media
                        if let PendingOp::Write { position, bytes } = op {
                            let pages = bytes.len().div_ceil(PAGE_BYTES);
                            let kept = (old.next_random() as usize % (pages + 1)) * PAGE_BYTES;
                            let kept = kept.min(bytes.len());
                            let torn = PendingOp::Write { position: *position, bytes: bytes[..kept].to_vec() };
                            apply(&mut image, &torn);
                        }
                    }
                    _ => apply(&mut image, op),
                }
            }
            inodes.push(Inode { current: image.clone(), durable: image, pending: Vec::new() });
        }
        Self::successor(&mut old, inodes)
    }

    /// The disk that follows a crash of `old`: the same names, these file
    /// images, no faults.
    fn successor(old: &mut State, inodes: Vec<Inode>) -> FaultDisk {
        let state = State {
            names: old.names.clone(),
            dirs: old.dirs.clone(),
            inodes,
            rng: old.next_random() | 1,
            faults: FaultConfig::default(),
            syncs: 0,
            writes: 0,
            bytes_read: 0,
            hold_reads_under: None,
            held_reads: 0,
            hold_writes: false,
            held_writes: Vec::new(),
            released_writes: Vec::new(),
            next_write_ticket: 0,
        };
        FaultDisk { state: Rc::new(RefCell::new(state)), holds_changed: Rc::default() }
    }

    /// The disk after the process was killed (kill -9) now: every write
    /// issued so far survives, synced or not, as it would in the page
    /// cache. Handles to the old disk stay usable but no longer affect the
    /// new one.
    pub fn crash_process(&self) -> FaultDisk {
        let mut old = self.state.borrow_mut();
        let inodes = old
            .inodes
            .iter()
            .map(|inode| Inode { current: inode.current.clone(), durable: inode.current.clone(), pending: Vec::new() })
            .collect();
        Self::successor(&mut old, inodes)
    }

    /// The current (page cache) content of a file, for tests.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.borrow();
        state.names.get(path).map(|&i| state.inodes[i].current.clone())
    }

    /// Replaces a file's content durably, for corruption tests.
    pub fn overwrite(&self, path: &Path, bytes: Vec<u8>) {
        let mut state = self.state.borrow_mut();
        if let Some(&i) = state.names.get(path) {
            state.inodes[i] = Inode { current: bytes.clone(), durable: bytes, pending: Vec::new() };
        }
    }
}

impl Disk for FaultDisk {
    type File = FaultFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FaultFile> {
        let mut state = self.state.borrow_mut();
        let inode = match state.names.get(path) {
            Some(&inode) => inode,
            None if mode == OpenMode::Read => return Err(io::ErrorKind::NotFound.into()),
            None => {
                let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
                if !state.dirs.contains(&parent) {
                    return Err(io::ErrorKind::NotFound.into());
                }
                state.inodes.push(Inode::default());
                let inode = state.inodes.len() - 1;
                state.names.insert(path.to_path_buf(), inode);
                inode
            }
        };
        Ok(FaultFile {
            state: self.state.clone(),
            holds_changed: self.holds_changed.clone(),
            inode,
            path: path.to_path_buf(),
        })
    }

    async fn reopen(&self, path: &Path, mode: OpenMode) -> io::Result<FaultFile> {
        if !self.state.borrow().names.contains_key(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        self.open(path, mode).await
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        for ancestor in path.ancestors() {
            if !state.dirs.iter().any(|d| d == ancestor) {
                state.dirs.push(ancestor.to_path_buf());
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = self.state.borrow();
        if !state.dirs.iter().any(|d| d == path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let files = state.names.keys().filter(|p| p.parent() == Some(path));
        let dirs = state.dirs.iter().filter(|p| p.parent() == Some(path));
        Ok(files.chain(dirs).filter_map(|p| p.file_name()?.to_str().map(str::to_string)).collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.state.borrow();
        state.names.contains_key(path) || state.dirs.iter().any(|d| d == path)
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        match self.state.borrow_mut().names.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let inode = state.names.remove(from).ok_or(io::ErrorKind::NotFound)?;
        state.names.insert(to.to_path_buf(), inode);
        Ok(())
    }

    async fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.names.retain(|name, _| !name.starts_with(path));
        state.dirs.retain(|dir| !dir.starts_with(path));
        Ok(())
    }
}

impl FaultFile {
    fn is_held(&self) -> bool {
        let state = self.state.borrow();
        state.hold_reads_under.as_ref().is_some_and(|dir| self.path.starts_with(dir))
    }

    /// Waits while writes are held, until this one is released.
    async fn wait_for_write_release(&self) {
        let ticket = {
            let mut state = self.state.borrow_mut();
            if !state.hold_writes {
                return;
            }
            let ticket = state.next_write_ticket;
            state.next_write_ticket += 1;
            state.held_writes.push(ticket);
            ticket
        };
        loop {
            let listen = self.holds_changed.listen();
            {
                let mut state = self.state.borrow_mut();
                if let Some(at) = state.released_writes.iter().position(|t| *t == ticket) {
                    state.released_writes.swap_remove(at);
                    return;
                }
            }
            listen.await;
        }
    }

    async fn wait_while_held(&self) {
        if !self.is_held() {
            return;
        }
        self.state.borrow_mut().held_reads += 1;
        while self.is_held() {
            self.holds_changed.listen().await;
        }
        self.state.borrow_mut().held_reads -= 1;
    }

    fn issue(&self, op: PendingOp) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        if matches!(op, PendingOp::Write { .. }) {
            let faults = state.faults;
            if state.one_in(faults.write_failure_one_in) {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            state.writes += 1;
        }
        let inode = &mut state.inodes[self.inode];
        apply(&mut inode.current, &op);
        inode.pending.push(op);
        Ok(())
    }
}

impl DiskFile for FaultFile {
    async fn write_aligned(&self, buf: AlignedBuf, position: u64) -> BufResult<(), AlignedBuf> {
        assert_eq!(position % PAGE_BYTES as u64, 0, "O_DIRECT position must be aligned");
        assert_eq!(buf.len() % PAGE_BYTES, 0, "O_DIRECT length must be aligned");
        self.wait_for_write_release().await;
        let op = PendingOp::Write { position, bytes: buf.as_slice().to_vec() };
        BufResult(self.issue(op), buf)
    }

    async fn write_aligned_after_partial_page(&self, buf: AlignedBuf, position: u64) -> BufResult<(), AlignedBuf> {
        if buf.len() <= PAGE_BYTES {
            return self.write_aligned(buf, position).await;
        }
        assert_eq!(position % PAGE_BYTES as u64, 0, "O_DIRECT position must be aligned");
        assert_eq!(buf.len() % PAGE_BYTES, 0, "O_DIRECT length must be aligned");
        self.wait_for_write_release().await;
        // Two writes, as the real disk issues them; a power loss may keep
        // either without the other.
        let (first_page, rest) = buf.as_slice().split_at(PAGE_BYTES);
        let rest = PendingOp::Write { position: position + PAGE_BYTES as u64, bytes: rest.to_vec() };
        let first_page = PendingOp::Write { position, bytes: first_page.to_vec() };
        BufResult(self.issue(rest).and_then(|()| self.issue(first_page)), buf)
    }

    async fn write_all_at(&self, buf: Vec<u8>, position: u64) -> BufResult<(), Vec<u8>> {
        let op = PendingOp::Write { position, bytes: buf.clone() };
        BufResult(self.issue(op), buf)
    }

    async fn read_at(&self, len: usize, position: u64) -> io::Result<Vec<u8>> {
        self.wait_while_held().await;
        let mut state = self.state.borrow_mut();
        let current = &state.inodes[self.inode].current;
        let start = (position as usize).min(current.len());
        let end = (start + len).min(current.len());
        let bytes = current[start..end].to_vec();
        state.bytes_read += bytes.len() as u64;
        Ok(bytes)
    }

    async fn sync_data(&self) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let faults = state.faults;
        if state.one_in(faults.sync_failure_one_in) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        state.syncs += 1;
        let inode = &mut state.inodes[self.inode];
        for op in std::mem::take(&mut inode.pending) {
            apply(&mut inode.durable, &op);
        }
        Ok(())
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        // The size grows (zeros), as fallocate's does; it is metadata that a
        // power loss may drop like any unsynced operation.
        let current = self.state.borrow().inodes[self.inode].current.len() as u64;
        if len > current {
            self.issue(PendingOp::SetLen(len))?;
        }
        Ok(())
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        self.issue(PendingOp::SetLen(len))
    }

    async fn len(&self) -> io::Result<u64> {
        Ok(self.state.borrow().inodes[self.inode].current.len() as u64)
    }
}
