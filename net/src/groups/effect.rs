//! What the group state machines ask their driver to do, and the delayed
//! answers they hand back: a JoinGroup or SyncGroup reply for a request that
//! has been waiting (identified by its [`Token`]), or a record to write to
//! the group's `__consumer_offsets` partition. Pure data; the driver
//! (`groups::service`) carries the effects out on the coordinator's shard.

use bytes::Bytes;
use kafka_protocol::ResponseError;

use crate::groups::records::GroupValue;

/// Identifies a waiting request; the driver maps it to the reply channel.
pub type Token = u64;

/// One member as the leader sees it in the JoinGroup response.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinReply {
    /// Error.
    pub error: Option<ResponseError>,
    /// Generation.
    pub generation: i32,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Chosen protocol.
    pub protocol_name: Option<String>,
    /// Leader member id.
    pub leader: String,
    /// The member's id.
    pub member_id: String,
    /// v9: the leader skips assigning.
    pub skip_assignment: bool,
    /// Members (leader only).
    pub members: Vec<JoinMember>,
}

impl JoinReply {
    /// A refusal of `member_id`'s join.
    pub fn error(error: ResponseError, member_id: &str) -> Self {
        JoinReply {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            skip_assignment: false,
            members: Vec::new(),
        }
    }
}

/// A SyncGroup answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncReply {
    /// Error.
    pub error: Option<ResponseError>,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Protocol name.
    pub protocol_name: Option<String>,
    /// The member's assignment.
    pub assignment: Bytes,
}

impl SyncReply {
    /// A refusal.
    pub fn error(error: ResponseError) -> Self {
        SyncReply { error: Some(error), protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

/// What the driver must do after a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Answer a waiting JoinGroup.
    Join(Token, JoinReply),
    /// Answer a waiting SyncGroup.
    Sync(Token, SyncReply),
    /// Write this classic group's metadata record.
    PersistGroup(GroupValue),
}
