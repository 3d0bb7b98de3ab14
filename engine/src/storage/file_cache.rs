//! A shard's open-file budget: [`CachedDisk`] wraps a [`Disk`] so that its
//! files are handles ([`CachedFile`]) holding no descriptor of their own.
//! A handle gets a descriptor from the shard's cache when an operation
//! needs one, reopening the file (never creating it) after the cache closed
//! it; the cache keeps at most `limit` descriptors, closing the least
//! recently used first, and [`CachedDisk::close_idle`] closes the ones no
//! operation used since its previous call. So a shard with ten thousand
//! partitions holds descriptors for the ones in use, not four per partition.
//!
//! An operation in flight keeps its descriptor open until it completes,
//! even when the cache dropped it meanwhile, so the count can pass the
//! limit by the operations in flight. fdatasync on a reopened descriptor
//! covers the file's data written through an earlier one (it syncs the
//! file, not the descriptor; an unreported writeback error is reported to
//! a descriptor opened after it).
//!
//! One cache per shard, used from that shard's thread only (`Rc`, no locks).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use compio::buf::BufResult;

use crate::storage::aligned::AlignedBuf;
use crate::storage::disk::{Disk, DiskFile, OpenMode};

/// The open descriptors of one shard. See the module documentation.
struct FileCache<D: Disk> {
    limit: usize,
    next_id: u64,
    next_tick: u64,
    open: HashMap<u64, OpenEntry<D>>,
    /// Least recently used first: tick → handle id.
    by_use: BTreeMap<u64, u64>,
    /// Files opened or reopened so far (for tests and metrics).
    opens: u64,
}

struct OpenEntry<D: Disk> {
    file: Rc<D::File>,
    tick: u64,
    used_since_sweep: bool,
}

impl<D: Disk> FileCache<D> {
    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }

    /// The open file of handle `id`, marked as just used.
    fn touch(&mut self, id: u64) -> Option<Rc<D::File>> {
        let tick = self.tick();
        let entry = self.open.get_mut(&id)?;
        self.by_use.remove(&entry.tick);
        entry.tick = tick;
        entry.used_since_sweep = true;
        self.by_use.insert(tick, id);
        Some(entry.file.clone())
    }

    /// Keeps `file` open for handle `id`, closing the least recently used
    /// descriptors beyond the limit.
    fn insert(&mut self, id: u64, file: Rc<D::File>) {
        self.forget(id);
        self.opens += 1;
        let tick = self.tick();
        self.open.insert(id, OpenEntry { file, tick, used_since_sweep: true });
        self.by_use.insert(tick, id);
        while self.open.len() > self.limit {
            let Some((_, oldest)) = self.by_use.pop_first() else { break };
            self.open.remove(&oldest);
        }
        debug_assert_eq!(self.open.len(), self.by_use.len());
        assert!(self.open.len() <= self.limit, "the cache keeps at most its limit of descriptors");
    }

    /// Closes handle `id`'s descriptor (when no operation holds it).
    fn forget(&mut self, id: u64) {
        if let Some(entry) = self.open.remove(&id) {
            self.by_use.remove(&entry.tick);
        }
    }

    fn close_idle(&mut self) -> usize {
        let idle: Vec<u64> = self.open.iter().filter(|(_, e)| !e.used_since_sweep).map(|(id, _)| *id).collect();
        for id in &idle {
            self.forget(*id);
        }
        for entry in self.open.values_mut() {
            entry.used_since_sweep = false;
        }
        idle.len()
    }
}

/// A [`Disk`] whose files share one shard's descriptor budget. See the
/// module documentation. Clones share the cache.
pub struct CachedDisk<D: Disk> {
    disk: D,
    cache: Rc<RefCell<FileCache<D>>>,
}

impl<D: Disk> Clone for CachedDisk<D> {
    fn clone(&self) -> Self {
        Self { disk: self.disk.clone(), cache: self.cache.clone() }
    }
}

impl<D: Disk> std::fmt::Debug for CachedDisk<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cache = self.cache.borrow();
        f.debug_struct("CachedDisk").field("limit", &cache.limit).field("open", &cache.open.len()).finish()
    }
}

impl<D: Disk> CachedDisk<D> {
    /// `disk` with at most `limit` (≥ 1) descriptors kept open.
    pub fn new(disk: D, limit: usize) -> Self {
        assert!(limit >= 1, "a file cache keeps at least one descriptor");
        let cache =
            FileCache { limit, next_id: 0, next_tick: 0, open: HashMap::new(), by_use: BTreeMap::new(), opens: 0 };
        Self { disk, cache: Rc::new(RefCell::new(cache)) }
    }

    /// Descriptors the cache holds open now.
    pub fn open_count(&self) -> usize {
        self.cache.borrow().open.len()
    }

    /// Files opened or reopened so far.
    pub fn opens(&self) -> u64 {
        self.cache.borrow().opens
    }

    /// Closes every descriptor that no operation used since the previous
    /// call; returns how many. Called periodically by the shard.
    pub fn close_idle(&self) -> usize {
        self.cache.borrow_mut().close_idle()
    }

    fn handle(&self, file: D::File, path: &Path, mode: OpenMode) -> CachedFile<D> {
        let mut cache = self.cache.borrow_mut();
        let id = cache.next_id;
        cache.next_id += 1;
        cache.insert(id, Rc::new(file));
        CachedFile { id, path: path.to_path_buf(), mode, disk: self.disk.clone(), cache: self.cache.clone() }
    }
}

impl<D: Disk> Disk for CachedDisk<D> {
    type File = CachedFile<D>;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<CachedFile<D>> {
        let file = self.disk.open(path, mode).await?;
        Ok(self.handle(file, path, mode))
    }

    async fn reopen(&self, path: &Path, mode: OpenMode) -> io::Result<CachedFile<D>> {
        let file = self.disk.reopen(path, mode).await?;
        Ok(self.handle(file, path, mode))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.disk.create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.disk.list_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        self.disk.exists(path)
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.disk.remove_file(path).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.disk.rename(from, to).await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.disk.sync_dir(path).await
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.disk.remove_dir_all(path).await
    }
}

/// A file of a [`CachedDisk`]: its path and mode, and a descriptor only
/// while the shard's cache keeps one. Dropping the handle closes it.
pub struct CachedFile<D: Disk> {
    id: u64,
    path: PathBuf,
    mode: OpenMode,
    disk: D,
    cache: Rc<RefCell<FileCache<D>>>,
}

impl<D: Disk> std::fmt::Debug for CachedFile<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedFile").field("path", &self.path).field("mode", &self.mode).finish()
    }
}

impl<D: Disk> Drop for CachedFile<D> {
    fn drop(&mut self) {
        self.release_descriptor();
    }
}

impl<D: Disk> CachedFile<D> {
    /// The open file: the cached descriptor, or the file reopened (never
    /// created: a file removed meanwhile is an error, not a new empty one).
    async fn file(&self) -> io::Result<Rc<D::File>> {
        if let Some(file) = self.cache.borrow_mut().touch(self.id) {
            return Ok(file);
        }
        let file = Rc::new(self.disk.reopen(&self.path, self.mode).await?);
        self.cache.borrow_mut().insert(self.id, file.clone());
        Ok(file)
    }
}

impl<D: Disk> DiskFile for CachedFile<D> {
    async fn write_aligned(&self, buf: AlignedBuf, position: u64) -> BufResult<(), AlignedBuf> {
        match self.file().await {
            Ok(file) => file.write_aligned(buf, position).await,
            Err(error) => BufResult(Err(error), buf),
        }
    }

    async fn write_aligned_after_partial_page(&self, buf: AlignedBuf, position: u64) -> BufResult<(), AlignedBuf> {
        match self.file().await {
            Ok(file) => file.write_aligned_after_partial_page(buf, position).await,
            Err(error) => BufResult(Err(error), buf),
        }
    }

    async fn write_all_at(&self, buf: Vec<u8>, position: u64) -> BufResult<(), Vec<u8>> {
        match self.file().await {
            Ok(file) => file.write_all_at(buf, position).await,
            Err(error) => BufResult(Err(error), buf),
        }
    }

    async fn read_at(&self, len: usize, position: u64) -> io::Result<Vec<u8>> {
        self.file().await?.read_at(len, position).await
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.file().await?.sync_data().await
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        self.file().await?.allocate(len).await
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        self.file().await?.set_len(len).await
    }

    async fn len(&self) -> io::Result<u64> {
        self.file().await?.len().await
    }

    /// Only while the cache holds the descriptor: a closed one means the
    /// caller takes the copying read (which reopens the file).
    fn kernel_file(&self) -> Option<std::sync::Arc<std::fs::File>> {
        self.cache.borrow_mut().touch(self.id)?.kernel_file()
    }

    fn release_descriptor(&self) {
        if let Ok(mut cache) = self.cache.try_borrow_mut() {
            cache.forget(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fault_disk::{FaultConfig, FaultDisk};

    fn disk(limit: usize) -> (CachedDisk<FaultDisk>, PathBuf) {
        let fault = FaultDisk::new(1, FaultConfig::default());
        let dir = PathBuf::from("/d");
        fault.create_dir_all(&dir).expect("dir");
        (CachedDisk::new(fault, limit), dir)
    }

    #[compio::test]
    async fn keeps_at_most_the_limit_open_and_reopens_what_it_closed() {
        let (disk, dir) = disk(2);
        let mut files = Vec::new();
        for i in 0..5u8 {
            let file = disk.open(&dir.join(format!("f{i}")), OpenMode::ReadWrite).await.expect("open");
            let BufResult(written, _) = file.write_all_at(vec![i; 10], 0).await;
            written.expect("write");
            files.push(file);
            assert!(disk.open_count() <= 2, "{} open", disk.open_count());
        }
        assert_eq!(disk.opens(), 5);
        // The first three were closed; reading them reopens each.
        for (i, file) in files.iter().enumerate() {
            assert_eq!(file.read_at(10, 0).await.expect("read"), vec![i as u8; 10]);
            assert!(disk.open_count() <= 2);
        }
        assert_eq!(disk.opens(), 10, "with room for two, each read in turn closed one of the two it needs next");
        drop(files);
        assert_eq!(disk.open_count(), 0, "dropping a handle closes its descriptor");
    }

    #[compio::test]
    async fn the_most_recently_used_stay_open() {
        let (disk, dir) = disk(2);
        let a = disk.open(&dir.join("a"), OpenMode::ReadWrite).await.expect("a");
        let b = disk.open(&dir.join("b"), OpenMode::ReadWrite).await.expect("b");
        a.len().await.expect("use a");
        let _c = disk.open(&dir.join("c"), OpenMode::ReadWrite).await.expect("c");
        let opens = disk.opens();
        a.len().await.expect("a is still open");
        assert_eq!(disk.opens(), opens, "a was used after b: b was closed, not a");
        b.len().await.expect("b reopens");
        assert_eq!(disk.opens(), opens + 1);
    }

    #[compio::test]
    async fn a_removed_file_is_not_recreated_by_a_reopen() {
        let (disk, dir) = disk(1);
        let path = dir.join("segment");
        let file = disk.open(&path, OpenMode::DirectWrite).await.expect("open");
        let _other = disk.open(&dir.join("other"), OpenMode::ReadWrite).await.expect("other");
        disk.remove_file(&path).await.expect("remove");
        let error = file.len().await.expect_err("the file is gone");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(!disk.exists(&path), "the reopen created nothing");
    }

    #[compio::test]
    async fn a_released_descriptor_closes_at_once_and_reopens_on_use() {
        let (disk, dir) = disk(10);
        let file = disk.open(&dir.join("f"), OpenMode::ReadWrite).await.expect("open");
        let BufResult(written, _) = file.write_all_at(vec![7; 10], 0).await;
        written.expect("write");
        file.release_descriptor();
        assert_eq!(disk.open_count(), 0, "released: closed without waiting for a sweep");
        assert_eq!(file.read_at(10, 0).await.expect("read"), vec![7; 10]);
        assert_eq!(disk.open_count(), 1);
        assert_eq!(disk.opens(), 2);
    }

    #[compio::test]
    async fn idle_descriptors_close_after_two_sweeps_without_use() {
        let (disk, dir) = disk(10);
        let busy = disk.open(&dir.join("busy"), OpenMode::ReadWrite).await.expect("busy");
        let _idle = disk.open(&dir.join("idle"), OpenMode::ReadWrite).await.expect("idle");
        assert_eq!(disk.close_idle(), 0, "both were used since the last sweep");
        busy.len().await.expect("use");
        assert_eq!(disk.close_idle(), 1, "the unused one closes");
        assert_eq!(disk.open_count(), 1);
        assert_eq!(disk.close_idle(), 1, "then the other, once unused");
        assert_eq!(disk.open_count(), 0);
        busy.len().await.expect("reopened on use");
        assert_eq!(disk.open_count(), 1);
    }
}
