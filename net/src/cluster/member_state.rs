//! This broker's standing with the controller (its registration's epoch,
//! whether it is fenced, whether it serves clients yet), written by the
//! membership task on shard 0 ([`member`](super::member)) and read by any
//! shard.

use std::sync::atomic::{AtomicBool, AtomicI64};

/// This broker's standing with the controller, read by any shard.
#[derive(Debug)]
pub struct MemberState {
    /// The epoch of the current registration (-1 before it is registered).
    pub broker_epoch: AtomicI64,
    /// Whether the controller has this broker fenced.
    pub fenced: AtomicBool,
    /// This process's incarnation.
    pub incarnation_id: uuid::Uuid,
    /// Set once the broker was first unfenced: its listeners accept
    /// clients from then on (connections wait in the backlog before).
    pub serving: AtomicBool,
}

impl Default for MemberState {
    fn default() -> Self {
        MemberState {
            broker_epoch: AtomicI64::new(-1),
            fenced: AtomicBool::new(true),
            incarnation_id: uuid::Uuid::new_v4(),
            serving: AtomicBool::new(false),
        }
    }
}
