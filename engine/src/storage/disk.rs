//! The storage seam: every byte the log reads or writes goes through
//! [`Disk`] and [`DiskFile`]. [`RealDisk`] is io_uring through compio with
//! O_DIRECT appends; `fault_disk::FaultDisk` is the fault-injecting one the
//! crash tests use. Both are used from one shard's thread only.

use std::io;
use std::path::{Path, PathBuf};

use compio::buf::{BufResult, IoBuf};
use compio::io::{AsyncReadAt, AsyncWriteAt};

use crate::storage::aligned::{AlignedBuf, PAGE_BYTES};
use crate::storage::priority_write::{append_priority, PriorityWriteAt};
use crate::storage::sync_ledger;

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only, through the page cache.
    Read,
    /// Read and write through the page cache, created when missing.
    ReadWrite,
    /// Write with O_DIRECT (page-aligned buffers and positions), created when missing.
    DirectWrite,
}

/// A directory and file namespace. Metadata operations are durable once the
/// directory is synced with [`Disk::sync_dir`].
#[allow(async_fn_in_trait)]
pub trait Disk: Clone + std::fmt::Debug + 'static {
    /// An open file.
    type File: DiskFile;

    /// Opens `path`.
    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Self::File>;
    /// Opens an existing `path` again, as `mode` but never creating it (a
    /// file removed meanwhile is `NotFound`): how a file cache gets back a
    /// descriptor it closed.
    async fn reopen(&self, path: &Path, mode: OpenMode) -> io::Result<Self::File>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// Removes a file.
    async fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames a file.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it; a missing one is not an
    /// error.
    async fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
}

/// An open file with positional, ownership-passing I/O.
#[allow(async_fn_in_trait)]
#[allow(clippy::len_without_is_empty)]
pub trait DiskFile: std::fmt::Debug + 'static {
    /// Writes all of an aligned buffer at `position` (O_DIRECT files).
    async fn write_aligned(&self, buf: AlignedBuf, position: u64) -> BufResult<(), AlignedBuf>;
    /// [`write_aligned`](Self::write_aligned) for a buffer whose first page
    /// rewrites the partial last page of an earlier write, followed by new
    /// pages. The real disk writes that page and the rest as two writes in
    /// flight at once: on ext4 a direct write covering both a written block
    /// and unwritten (preallocated) ones cannot be submitted without
    /// blocking, so io_uring would hand every such write to an io-wq thread.
    async fn write_aligned_after_partial_page(&self, buf: AlignedBuf, position: u64) -> BufResult<(), AlignedBuf> {
        self.write_aligned(buf, position).await
    }
    /// Writes all of `buf` at `position` (page-cache files).
    async fn write_all_at(&self, buf: Vec<u8>, position: u64) -> BufResult<(), Vec<u8>>;
    /// Reads up to `len` bytes at `position`; fewer only at end of file.
    async fn read_at(&self, len: usize, position: u64) -> io::Result<Vec<u8>>;
    /// fdatasync.
    async fn sync_data(&self) -> io::Result<()>;
    /// Reserves space up to `len` bytes and extends the file to that size
    /// (fallocate; never shrinks). The reserved bytes read as zeros. Direct
    /// writes inside the file's size go to io_uring without blocking; past
    /// it (a size-keeping reservation) ext4 refuses non-blocking submission.
    async fn allocate(&self, len: u64) -> io::Result<()>;
    /// Truncates or extends to `len` bytes.
    async fn set_len(&self, len: u64) -> io::Result<()>;
    /// Current size in bytes.
    async fn len(&self) -> io::Result<u64>;
    /// The kernel file behind a page-cache read file, for zero-copy sends
    /// (`splice`) and residency checks; `None` for files only a process's
    /// memory holds (the fault disk) or that are not opened for reads.
    fn kernel_file(&self) -> Option<std::sync::Arc<std::fs::File>> {
        None
    }
    /// Says the file will not be used for a while: a file of a shard's
    /// descriptor budget closes its descriptor now (an operation in flight
    /// keeps it until done) and reopens the file on its next use. Other
    /// files ignore it.
    fn release_descriptor(&self) {}
}

/// The production disk: compio files on io_uring.
#[derive(Debug, Clone, Default)]
pub struct RealDisk;

/// A compio file opened by [`RealDisk`].
#[derive(Debug)]
pub struct RealFile {
    file: compio::fs::File,
    path: PathBuf,
    mode: OpenMode,
    /// A duplicate of the descriptor as a std file, made on first use by
    /// [`DiskFile::kernel_file`]; shared with the sends in flight, so a
    /// segment removed meanwhile stays readable until they finish.
    kernel: std::cell::OnceCell<Option<std::sync::Arc<std::fs::File>>>,
}

async fn write_all<B: IoBuf>(file: &compio::fs::File, buf: B, position: u64) -> BufResult<(), B> {
    write_all_with_priority(file, buf, position, 0).await
}

/// Writes all of `buf` at `position`, each write's SQE carrying `ioprio`
/// (0: the thread's own priority).
async fn write_all_with_priority<B: IoBuf>(
    file: &compio::fs::File,
    buf: B,
    position: u64,
    ioprio: u16,
) -> BufResult<(), B> {
    use compio::buf::IntoInner;
    use compio::driver::ToSharedFd;
    let total = buf.buf_len();
    let mut done = 0usize;
    let mut buf = buf;
    while done < total {
        let at = position + done as u64;
        let BufResult(result, slice) = if ioprio == 0 {
            let mut writer = file;
            writer.write_at(buf.slice(done..), at).await
        } else {
            let op = PriorityWriteAt::new(file.to_shared_fd(), at, buf.slice(done..), ioprio);
            let BufResult(result, op) = compio::runtime::submit(op).await;
            BufResult(result, op.into_inner())
        };
        buf = slice.into_inner();
        match result {
            Ok(0) => return BufResult(Err(io::ErrorKind::WriteZero.into()), buf),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return BufResult(Err(e), buf),
        }
    }
    BufResult(Ok(()), buf)
}

/// Opens `path` as `mode`, creating it when missing if `create` (and the
/// mode writes).
async fn open_real(path: &Path, mode: OpenMode, create: bool) -> io::Result<RealFile> {
    let mut options = compio::fs::OpenOptions::new();
    match mode {
        OpenMode::Read => options.read(true),
        OpenMode::ReadWrite => options.read(true).write(true).create(create),
        OpenMode::DirectWrite => options.write(true).create(create).custom_flags(libc::O_DIRECT),
    };
    let file = options.open(path).await?;
    if sync_ledger::is_installed() {
        sync_ledger::opened(path, file.metadata().await?.len());
    }
    Ok(RealFile { file, path: path.to_path_buf(), mode, kernel: std::cell::OnceCell::new() })
}

impl Disk for RealDisk {
    type File = RealFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<RealFile> {
        open_real(path, mode, true).await
    }

    async fn reopen(&self, path: &Path, mode: OpenMode) -> io::Result<RealFile> {
        open_real(path, mode, false).await
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        compio::fs::remove_file(path).await?;
        sync_ledger::removed(path);
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        compio::fs::rename(from, to).await?;
        sync_ledger::renamed(from, to);
        Ok(())
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let dir = compio::fs::OpenOptions::new().read(true).open(path).await?;
        dir.sync_all().await
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let owned = path.to_path_buf();
        // A recursive walk of metadata calls: kept off the shard's thread.
        compio::runtime::spawn_blocking(move || match std::fs::remove_dir_all(&owned) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .unwrap_or_else(|_| Err(io::Error::other("remove task failed")))?;
        sync_ledger::removed_dir(path);
        Ok(())
    }
}

impl RealFile {
    /// Tells the sync ledger (when installed) where the data written so far
    /// ends.
    fn note_written(&self, result: &io::Result<()>, end: u64) {
        if result.is_ok() {
            sync_ledger::wrote(&self.path, end);
        }
    }
}

impl DiskFile for RealFile {
    async fn write_aligned(&self, buf: AlignedBuf, position: u64) -> BufResult<(), AlignedBuf> {
        debug_assert_eq!(position % PAGE_BYTES as u64, 0);
        let len = buf.len() as u64;
        let written = write_all_with_priority(&self.file, buf, position, append_priority()).await;
        self.note_written(&written.0, position + len);
        written
    }

    async fn write_aligned_after_partial_page(&self, buf: AlignedBuf, position: u64) -> BufResult<(), AlignedBuf> {
        use compio::buf::IntoInner;
        debug_assert_eq!(position % PAGE_BYTES as u64, 0);
        if buf.len() <= PAGE_BYTES {
            return self.write_aligned(buf, position).await;
        }
        let len = buf.len() as u64;
        let mut first_page = AlignedBuf::new(PAGE_BYTES);
        first_page.push(&buf.as_slice()[..PAGE_BYTES]);
        let ioprio = append_priority();
        let (first, rest) = futures::join!(
            write_all_with_priority(&self.file, first_page, position, ioprio),
            write_all_with_priority(&self.file, buf.slice(PAGE_BYTES..), position + PAGE_BYTES as u64, ioprio),
        );
        let result = first.0.and(rest.0);
        self.note_written(&result, position + len);
        BufResult(result, rest.1.into_inner())
    }

    async fn write_all_at(&self, buf: Vec<u8>, position: u64) -> BufResult<(), Vec<u8>> {
        let len = buf.len() as u64;
        let written = write_all(&self.file, buf, position).await;
        self.note_written(&written.0, position + len);
        written
    }

    async fn read_at(&self, len: usize, position: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let want = len - out.len();
            let chunk = Vec::with_capacity(want);
            let BufResult(result, chunk) = self.file.read_at(chunk, position + out.len() as u64).await;
            match result {
                Ok(0) => break,
                Ok(_) => out.extend_from_slice(&chunk),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn sync_data(&self) -> io::Result<()> {
        if !sync_ledger::is_installed() {
            return self.file.sync_data().await;
        }
        // What the fdatasync covers: every write completed before it starts
        // (not the reservation past them, which holds no data).
        let len = match sync_ledger::data_end(&self.path) {
            Some(end) => end,
            None => self.file.metadata().await?.len(),
        };
        self.file.sync_data().await?;
        sync_ledger::synced(&self.path, len);
        Ok(())
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let path = self.path.clone();
        // fallocate has no io_uring opcode in compio; it is a short metadata
        // operation done a few times per segment, kept off the shard's thread.
        compio::runtime::spawn_blocking(move || {
            // SAFETY: fd stays open: `self` is borrowed until this completes.
            // Mode 0: the size grows to `len` (never shrinks).
            let rc = unsafe { libc::fallocate(fd, 0, 0, len as libc::off_t) };
            if rc == 0 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                // Filesystems without fallocate (tmpfs on old kernels, some
                // overlays) still work, just without preallocation.
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
                    tracing::debug!(path = %path.display(), "fallocate not supported");
                    Ok(())
                }
                _ => Err(error),
            }
        })
        .await
        .unwrap_or_else(|_| Err(io::Error::other("fallocate task panicked")))
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len).await?;
        sync_ledger::resized(&self.path, len);
        Ok(())
    }

    async fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata().await?.len())
    }

    fn kernel_file(&self) -> Option<std::sync::Arc<std::fs::File>> {
        use std::os::fd::{AsRawFd, BorrowedFd};
        if self.mode != OpenMode::Read {
            return None;
        }
        self.kernel
            .get_or_init(|| {
                // SAFETY: the descriptor is open while `self` is borrowed;
                // the duplicate owns its own descriptor.
                let borrowed = unsafe { BorrowedFd::borrow_raw(self.file.as_raw_fd()) };
                match borrowed.try_clone_to_owned() {
                    Ok(owned) => Some(std::sync::Arc::new(std::fs::File::from(owned))),
                    Err(error) => {
                        tracing::debug!(path = %self.path.display(), %error, "cannot duplicate a read descriptor");
                        None
                    }
                }
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[compio::test]
    async fn a_write_after_a_partial_page_lands_whole_inside_the_reservation() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("segment.log");
        let file = RealDisk.open(&path, OpenMode::DirectWrite).await.expect("open");
        file.allocate(1 << 20).await.expect("allocate");
        assert_eq!(file.len().await.expect("len"), 1 << 20, "the reservation is inside the size");
        let mut first = AlignedBuf::new(PAGE_BYTES);
        first.push(&[1u8; 100]);
        first.pad_to_page();
        let BufResult(result, _) = file.write_aligned(first, 0).await;
        result.expect("first write");
        let mut second = AlignedBuf::new(3 * PAGE_BYTES);
        second.push(&[1u8; 100]);
        second.push(&[2u8; 2 * PAGE_BYTES + 50]);
        second.pad_to_page();
        let BufResult(result, _) = file.write_aligned_after_partial_page(second, 0).await;
        result.expect("second write");
        let bytes = std::fs::read(&path).expect("read back");
        assert_eq!(bytes.len(), 1 << 20);
        assert!(bytes[..100].iter().all(|b| *b == 1));
        assert!(bytes[100..100 + 2 * PAGE_BYTES + 50].iter().all(|b| *b == 2));
        assert!(bytes[100 + 2 * PAGE_BYTES + 50..].iter().all(|b| *b == 0));
    }

    #[compio::test]
    async fn appends_carry_the_append_priority_to_the_kernel() {
        use crate::storage::priority_write::set_append_priority;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("segment.log");
        let file = RealDisk.open(&path, OpenMode::DirectWrite).await.expect("open");
        let page = |byte: u8| {
            let mut buf = AlignedBuf::new(PAGE_BYTES);
            buf.push(&[byte; PAGE_BYTES]);
            buf
        };
        // Class 7 does not exist: the kernel refuses the SQE, which shows
        // the field reaches it.
        set_append_priority(7 << 13);
        let BufResult(refused, _) = file.write_aligned(page(1), 0).await;
        assert_eq!(refused.map_err(|e| e.raw_os_error()), Err(Some(libc::EINVAL)), "an invalid priority is refused");
        // Best effort, level 0: written.
        set_append_priority(crate::runtime::io_priority::IoPriority::BestEffort(0).encoded());
        let BufResult(written, _) = file.write_aligned(page(2), 0).await;
        set_append_priority(0);
        written.expect("a valid priority writes");
        let bytes = std::fs::read(&path).expect("read back");
        assert_eq!(bytes, vec![2u8; PAGE_BYTES]);
    }
}
