//! Shardline's per-core storage engine. Its layers, bottom up:
//!
//! - [`format`]: Kafka's record batch format (magic 2), records and
//!   compression codecs. Pure functions over bytes.
//! - [`storage`]: the [`storage::disk::Disk`] seam: io_uring files through
//!   compio with O_DIRECT appends ([`storage::disk::RealDisk`]), and the
//!   fault-injecting [`storage::fault_disk::FaultDisk`] of the crash tests
//!   and the simulator.
//! - [`log`]: one partition's segment log: Kafka-named segments and indexes,
//!   O_DIRECT appends with group-commit fdatasync, reads from the per-shard
//!   batch cache or the files, recovery after a crash, retention, truncation.
//! - [`partition`]: the Kafka-free partition on top of its log: leader and
//!   follower appends, idempotent producer state, transactions (open and
//!   aborted, last stable offset), markers, the high watermark policy,
//!   producer snapshots. Typed errors; time and the leader epoch come in as
//!   arguments.
//! - [`runtime`]: the shard pool (one pinned executor per core), the mesh
//!   between shards, the clock and background task spawning.
//!
//! Every partition is owned by exactly one shard and touched by no other.

#![deny(missing_docs)]

pub mod format;
pub mod log;
pub mod partition;
pub mod runtime;
pub mod storage;

pub use format::batch::InvalidBatch;
pub use log::config::LogConfig;
pub use log::error::{LogError, LogResult};
pub use log::offsets::{HighWatermarkPolicy, PartitionOffsets};
pub use log::{AppendInfo, Log, LogOptions, ReadResult};
pub use storage::disk::{Disk, DiskFile, RealDisk};
