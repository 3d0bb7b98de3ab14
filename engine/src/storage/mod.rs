//! The storage seam: every byte the engine reads or writes goes through the
//! [`disk::Disk`] trait. [`disk::RealDisk`] is io_uring through compio with
//! O_DIRECT appends into page-aligned [`aligned::AlignedBuf`]s;
//! [`fault_disk::FaultDisk`] keeps files in memory and loses, tears or fails
//! writes on demand for the crash tests and the simulator;
//! [`file_cache`] keeps a shard's open descriptors within a budget;
//! [`sync_ledger`] lets power-loss tests of the real broker cut files back to
//! what was fdatasynced; [`page_cache`] asks what the kernel holds of a
//! file without waiting for the disk; [`priority_write`] gives appends
//! their own I/O priority.

pub mod aligned;
pub mod disk;
pub mod fault_disk;
pub mod file_cache;
pub mod page_cache;
pub mod priority_write;
pub mod small_files;
pub mod sync_ledger;
