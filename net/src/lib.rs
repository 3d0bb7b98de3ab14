//! Shardline's Kafka wire protocol: bounded framing, ApiVersions
//! negotiation, per-API handlers and the connection lifecycle, on top of the
//! shard-per-core engine. A connection lives on the shard that accepted it;
//! partition work is forwarded over the mesh to the owning shard.

#![deny(missing_docs)]

pub mod api;
pub mod broker;
pub mod config;
pub mod connection;
pub mod fetch_sessions;
pub mod frame;
pub mod group_admin;
pub mod groups;
pub mod partitions;
pub mod producer_ids;
pub mod topics;
pub mod txn;

pub use broker::Broker;
pub use config::BrokerConfig;
