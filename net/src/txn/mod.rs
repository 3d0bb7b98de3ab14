//! Transactions: the transaction coordinator of each `__transaction_state`
//! partition. A transactional id lives on the shard owning partition
//! `hash(id) % 50` of `__transaction_state`.
//!
//! - [`coordinator`]: the sans-IO state of one partition's transactional ids
//!   (Kafka's statuses and errors);
//! - [`records`]: Kafka's key and value layouts in `__transaction_state`;
//! - [`service`]: the driver: loads, persists, completes, times out;
//! - [`markers`]: writing commit and abort markers on a shard's partitions;
//! - [`verify`]: checking a transaction's first batch on a partition with
//!   the coordinator (KIP-890 part 1).

pub mod coordinator;
pub mod markers;
pub mod records;
pub mod service;
pub mod verify;

/// The internal topic holding transaction metadata.
pub const TXN_TOPIC: &str = "__transaction_state";
