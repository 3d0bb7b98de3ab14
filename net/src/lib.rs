//! Shardline's Kafka protocol edge and the services behind it, on top of
//! the shard-per-core engine. Layers, top down (each imports only those
//! below it):
//!
//! - [`server`]: startup and shutdown, listeners, connections and framing,
//!   the shards' background timers (runtime glue);
//! - [`api`]: per-API handlers: decode, call a service, encode; typed
//!   errors become Kafka error codes through [`errors`];
//! - [`cluster`]: this node in the cluster: the controller core (the
//!   metadata quorum on its own thread) and the broker's membership and
//!   view of the committed metadata;
//! - [`route`]: reaching the shard that owns a partition or a coordinator
//!   (per-shard scatter over the mesh);
//! - [`shard`]: what one shard owns and what all share;
//! - [`groups`] and [`txn`]: the group and transaction coordinators
//!   (sans-IO state machines and the services that drive them), and what
//!   they share ([`coordinators`], [`record_codec`]);
//! - [`registry`], [`fetch_sessions`], [`topics`], [`producer_ids`],
//!   [`config`], [`config_catalog`]: the per-shard partition registry and
//!   the broker's metadata and settings (and how they are described under
//!   Kafka's names).
//!
//! A connection lives on the shard that accepted it; partition work goes
//! to the owning shard.

#![deny(missing_docs)]

pub mod api;
pub mod cluster;
pub mod config;
pub mod config_catalog;
pub mod coordinators;
pub mod errors;
pub mod fetch_sessions;
pub mod groups;
pub mod placement;
pub mod producer_ids;
pub mod record_codec;
pub mod registry;
pub mod route;
pub mod server;
pub mod shard;
pub mod topics;
pub mod txn;

pub use config::BrokerConfig;
pub use server::broker::Broker;
pub use server::controller_node::ControllerNode;
