//! Small files written whole and read whole through the [`Disk`] seam:
//! checkpoints, producer snapshots, the producer id block. A write is
//! atomic and durable (temp file, fdatasync, rename, directory sync), so a
//! crash leaves either the old content or the new one.

use std::path::Path;

use crate::storage::disk::{Disk, DiskFile, OpenMode};

/// Largest file [`read_whole`] reads.
const SMALL_FILE_MAX_BYTES: u64 = 64 << 20;

/// Writes a small file atomically and durably: temp file, fdatasync, rename,
/// directory sync.
pub async fn write_file_atomically<D: Disk>(
    disk: &D,
    dir: &Path,
    name: &str,
    contents: Vec<u8>,
) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let file = disk.open(&tmp, OpenMode::ReadWrite).await?;
    let len = contents.len() as u64;
    let compio::buf::BufResult(result, _) = file.write_all_at(contents, 0).await;
    result?;
    file.set_len(len).await?;
    file.sync_data().await?;
    disk.rename(&tmp, &dir.join(name)).await?;
    disk.sync_dir(dir).await?;
    Ok(())
}

/// The whole content of `path`; `None` when it is missing or larger than
/// small files ever are.
pub async fn read_whole<D: Disk>(disk: &D, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    if !disk.exists(path) {
        return Ok(None);
    }
    let file = disk.open(path, OpenMode::Read).await?;
    let len = file.len().await?;
    if len > SMALL_FILE_MAX_BYTES {
        return Ok(None);
    }
    Ok(Some(file.read_at(len as usize, 0).await?))
}
