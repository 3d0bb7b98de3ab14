//! Shardline's replication and control plane, sans-IO (ARCHITECTURE rule
//! 2): every state machine here takes time and input as arguments and
//! returns what to do, so the same code runs under the compio reactors
//! and in the deterministic simulator.
//!
//! - [`metadata`]: the records of the cluster metadata log and the
//!   immutable image they build, which brokers publish to their shards.
//! - [`controller`]: the active controller's logic over the quorum:
//!   registration, leases and fencing, placement, elections, topics.
//! - [`node`]: roles, voters and the data directory's identity.
//! - [`quorum`]: the controller quorum's consensus (raft-rs) over the
//!   metadata log, with its on-disk format and recovery.

pub mod controller;
pub mod metadata;
pub mod node;
pub mod quorum;

pub use protobuf;
/// raft-rs, for drivers that carry its messages (encoding and decoding
/// with the protobuf codec).
pub use raft;
