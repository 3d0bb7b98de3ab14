//! The running broker: startup and shutdown ([`broker`]; a node that is
//! only a controller in [`controller_node`]), the connections,
//! their admission and their bounded framing ([`connection`], [`limits`],
//! [`frame`], [`log_limit`]; [`splice`] for zero-copy sends of resident
//! file ranges), and the background timers of every shard
//! ([`timers`]). The runtime glue between
//! the protocol edge (`api`) and the compio executors; nothing below it
//! imports it.

pub mod broker;
pub mod connection;
pub mod controller_node;
pub mod frame;
pub mod limits;
pub mod log_limit;
pub mod splice;
pub mod timers;
