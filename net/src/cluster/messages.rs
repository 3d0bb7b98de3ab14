//! What flows into the controller core and out of it: its inputs (local
//! requests, and what the transport receives from other voters), its
//! answers, and the mapping between Kafka node ids and raft ids. Shared by
//! the core ([`controller_core`](super::controller_core)) and the
//! transport ([`transport`](super::transport)).

use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use futures::channel::oneshot;
use raft::eraftpb::Message;
use shardline_replication::controller::requests::{ControllerError, ControllerReply, ControllerRequest};

/// The raft id of a Kafka node id (raft-rs reserves 0). Node ids are
/// never negative: the configuration and the voter list refuse them, and
/// the transport refuses a peer that says otherwise.
pub fn raft_id(node_id: i32) -> u64 {
    debug_assert!(node_id >= 0, "node ids are not negative: {node_id}");
    u64::from(node_id.unsigned_abs()) + 1
}

/// The Kafka node id of a raft id (`-1` for none).
pub fn node_of_raft(raft_id: u64) -> i32 {
    if raft_id == 0 {
        -1
    } else {
        i32::try_from(raft_id - 1).unwrap_or(-1)
    }
}

/// A reply and the metadata offset it holds at.
#[derive(Debug, Clone)]
pub struct ControllerAnswer {
    /// The reply.
    pub reply: ControllerReply,
    /// The offset of the active controller's image when it replied: the
    /// change it reports is in every image from there on.
    pub offset: u64,
}

impl ControllerAnswer {
    /// "Not the controller, leader unknown": the caller retries.
    pub fn not_controller() -> ControllerAnswer {
        ControllerAnswer { reply: ControllerReply::Refused(ControllerError::NotController { leader: 0 }), offset: 0 }
    }
}

/// An input of the controller core.
#[derive(Debug)]
pub enum CoreInput {
    /// A request from this node's shards.
    Local(ControllerRequest, oneshot::Sender<ControllerAnswer>),
    /// A Raft message from another voter.
    Peer(Message),
    /// A request forwarded by another node, answered on its connection.
    Remote {
        /// The request.
        request: ControllerRequest,
        /// The connection it came in on, for the answer.
        link: Arc<Mutex<TcpStream>>,
        /// The forwarding node's handle for it.
        id: u64,
    },
    /// The answer to a request this node forwarded.
    ForwardAnswer {
        /// This node's handle for the forward.
        forward_id: u64,
        /// The active controller's answer.
        answer: ControllerAnswer,
    },
    /// The connection to a voter failed: raft probes it again, and the
    /// requests forwarded to it are answered.
    Unreachable(u64),
    /// Whether a snapshot reached a voter.
    SnapshotSent {
        /// The voter's raft id.
        voter: u64,
        /// Whether its connection took the whole snapshot.
        delivered: bool,
    },
    /// A voter refused this node's handshake, with the reason.
    Refused(String),
    /// Stop the core.
    Stop,
}
