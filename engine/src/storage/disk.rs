//! The storage seam: every byte the log reads or writes goes through
//! [`Disk`] and [`DiskFile`]. [`RealDisk`] is io_uring through compio with
//! O_DIRECT appends; `fault_disk::FaultDisk` is the fault-injecting one the
//! crash tests use. Both are used from one shard's thread only.

use std::io;
use std::path::{Path, PathBuf};

use compio::buf::{BufResult, IoBuf};
use compio::io::{AsyncReadAt, AsyncWriteAt};

use crate::storage::aligned::AlignedBuf;
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
    /// Writes all of `buf` at `position` (page-cache files).
    async fn write_all_at(&self, buf: Vec<u8>, position: u64) -> BufResult<(), Vec<u8>>;
    /// Reads up to `len` bytes at `position`; fewer only at end of file.
    async fn read_at(&self, len: usize, position: u64) -> io::Result<Vec<u8>>;
    /// fdatasync.
    async fn sync_data(&self) -> io::Result<()>;
    /// Reserves space up to `len` bytes (fallocate, keeping the size).
    async fn allocate(&self, len: u64) -> io::Result<()>;
    /// Truncates or extends to `len` bytes.
    async fn set_len(&self, len: u64) -> io::Result<()>;
    /// Current size in bytes.
    async fn len(&self) -> io::Result<u64>;
}

/// The production disk: compio files on io_uring.
#[derive(Debug, Clone, Default)]
pub struct RealDisk;

/// A compio file opened by [`RealDisk`].
#[derive(Debug)]
pub struct RealFile {
    file: compio::fs::File,
    path: PathBuf,
}

async fn write_all<B: IoBuf>(file: &compio::fs::File, buf: B, position: u64) -> BufResult<(), B> {
    use compio::buf::IntoInner;
    let total = buf.buf_len();
    let mut done = 0usize;
    let mut buf = buf;
    while done < total {
        let mut writer = file;
        let BufResult(result, slice) = writer.write_at(buf.slice(done..), position + done as u64).await;
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

impl Disk for RealDisk {
    type File = RealFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<RealFile> {
        let mut options = compio::fs::OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWrite => options.read(true).write(true).create(true),
            OpenMode::DirectWrite => options.write(true).create(true).custom_flags(libc::O_DIRECT),
        };
        let file = options.open(path).await?;
        if sync_ledger::is_installed() {
            sync_ledger::opened(path, file.metadata().await?.len());
        }
        Ok(RealFile { file, path: path.to_path_buf() })
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

impl DiskFile for RealFile {
    async fn write_aligned(&self, buf: AlignedBuf, position: u64) -> BufResult<(), AlignedBuf> {
        debug_assert_eq!(position % crate::storage::aligned::PAGE_BYTES as u64, 0);
        write_all(&self.file, buf, position).await
    }

    async fn write_all_at(&self, buf: Vec<u8>, position: u64) -> BufResult<(), Vec<u8>> {
        write_all(&self.file, buf, position).await
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
        // What the fdatasync covers: every write completed before it starts.
        let len = self.file.metadata().await?.len();
        self.file.sync_data().await?;
        sync_ledger::synced(&self.path, len);
        Ok(())
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let path = self.path.clone();
        // fallocate has no io_uring opcode in compio; it is a short metadata
        // operation done once per segment, kept off the shard's thread.
        compio::runtime::spawn_blocking(move || {
            // SAFETY: fd stays open: `self` is borrowed until this completes.
            let rc = unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, len as libc::off_t) };
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
        self.file.set_len(len).await
    }

    async fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata().await?.len())
    }
}
