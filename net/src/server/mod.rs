//! The running broker: startup and shutdown ([`broker`]), the connections
//! and their bounded framing ([`connection`], [`frame`]), and the
//! background timers of every shard ([`timers`]). The runtime glue between
//! the protocol edge (`api`) and the compio executors; nothing below it
//! imports it.

pub mod broker;
pub mod connection;
pub mod frame;
pub mod timers;
