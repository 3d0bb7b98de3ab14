//! Shardline's per-core storage engine: the partition log.
//!
//! Every partition lives in a [`log::Log`] owned by exactly one shard (core):
//! Kafka-format segments (`<base>.log`, `.index`, `.timeindex`), O_DIRECT
//! appends through compio with group-commit fdatasync, reads from the
//! per-shard [`cache::BatchCache`] or the files, crash recovery, retention
//! and truncation. All I/O goes through the [`disk::Disk`] seam so the
//! fault-injecting [`fault_disk::FaultDisk`] can stand in for the real disk.
//! The byte-level pieces (batch format, indexes, tail buffer, offsets,
//! epoch cache) are synchronous and I/O free.

#![deny(missing_docs)]

pub mod aligned;
pub mod batch;
pub mod cache;
pub mod compression;
pub mod config;
pub mod disk;
pub mod epoch_cache;
pub mod error;
pub mod event;
pub mod fault_disk;
pub mod index;
pub mod log;
mod maintenance;
mod open;
pub mod producer_state;
mod read;
pub mod records;
pub mod scan;
pub mod segment;
pub mod shard;
pub mod state;
pub mod tail;
mod writer;

pub use config::LogConfig;
pub use disk::{Disk, DiskFile, RealDisk};
pub use error::{InvalidBatch, LogError, LogResult};
pub use log::{AppendInfo, Log, LogOptions, ReadResult};
pub use state::{HighWatermarkPolicy, PartitionOffsets};
