//! What the page cache holds of a file, asked without waiting on the disk:
//! [`is_resident`] with `cachestat(2)` (Linux 6.5+; an older kernel says
//! "not resident", so the caller reads the copying way), and
//! [`read_resident`] with `preadv2(RWF_NOWAIT)`, which reads only bytes
//! already cached. Both are plain syscalls that never block on I/O, so the
//! shard that owns the file can call them inline (ARCHITECTURE rule 5).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `cachestat(2)`'s syscall number (the same on every Linux architecture).
const SYS_CACHESTAT: libc::c_long = 451;

/// The page size the residency count is made in.
const PAGE: u64 = 4096;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// Whether every page of `file` covering `len` bytes at `position` is in
/// the page cache now. False when unsure (no `cachestat`, an error).
pub fn is_resident(file: &File, position: u64, len: u64) -> bool {
    if len == 0 {
        return true;
    }
    let first_page = position / PAGE;
    let end_page = (position + len).div_ceil(PAGE);
    let range = CachestatRange { off: first_page * PAGE, len: (end_page - first_page) * PAGE };
    let mut stat = Cachestat::default();
    // SAFETY: both pointers are to live, correctly laid out structs; the fd
    // is open for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0u32,
        )
    };
    rc == 0 && stat.nr_cache >= end_page - first_page
}

/// Reads up to `len` bytes at `position` only if they are cached: `None`
/// when the read would wait for the disk. Fewer bytes at end of file.
pub fn read_resident(file: &File, position: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
    let mut buffer = vec![0u8; len];
    let mut done = 0usize;
    while done < len {
        let iov = libc::iovec { iov_base: buffer[done..].as_mut_ptr().cast(), iov_len: len - done };
        // SAFETY: the iovec points into `buffer`, which outlives the call.
        let rc = unsafe {
            libc::preadv2(file.as_raw_fd(), &iov, 1, (position + done as u64) as libc::off_t, libc::RWF_NOWAIT)
        };
        if rc < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::EAGAIN) => Ok(None),
                Some(libc::EINTR) => continue,
                // A kernel or filesystem without RWF_NOWAIT reads: unsure.
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => Ok(None),
                _ => Err(error),
            };
        }
        if rc == 0 {
            break;
        }
        done += rc as usize;
    }
    buffer.truncate(done);
    Ok(Some(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn drop_cache(file: &File) {
        // SAFETY: a plain advice call on an open fd.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }

    #[test]
    fn written_pages_are_resident_and_dropped_ones_are_not() {
        let mut temp = tempfile::NamedTempFile::new().expect("temp file");
        temp.write_all(&vec![5u8; 64 * 1024]).expect("write");
        temp.as_file().sync_all().expect("sync");
        let file = File::open(temp.path()).expect("open");
        let cached = read_resident(&file, 0, 64 * 1024).expect("read");
        if cached.is_none() && !is_resident(&file, 0, 4096) {
            // tmpfs or a kernel without either call: nothing to check.
            return;
        }
        assert!(is_resident(&file, 100, 20_000), "just written through the cache");
        assert_eq!(read_resident(&file, 60 * 1024, 8192).expect("read"), Some(vec![5u8; 4096]), "short at the end");
        drop_cache(&file);
        if is_resident(&file, 0, 64 * 1024) {
            // A filesystem that keeps its pages (tmpfs): nothing to check.
            return;
        }
        assert!(!is_resident(&file, 0, 1), "dropped");
        assert!(is_resident(&file, 0, 0), "an empty range is always there");
        // (A refused read may start readahead: residency is asked first.)
        assert_eq!(read_resident(&file, 0, 4096).expect("read"), None, "a cold read would wait");
    }
}
