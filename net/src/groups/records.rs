//! The records the group coordinator keeps in `__consumer_offsets`, in
//! Kafka's own key and value layouts (so Kafka's tools could read them):
//! offset commits (key version 1, value version 3), classic group metadata
//! with its members and their assignments (key version 2, value version 3)
//! and, for KIP-848 groups, the group epoch (key 3), each member's
//! metadata (key 5), the target assignment's epoch (key 6) and each
//! member's target (key 7) and current assignment (key 8), whose values
//! are in `groups::consumer_records`. A null value is a tombstone. Pure
//! functions; decoding checks every length against the bytes present.

use bytes::{BufMut, Bytes, BytesMut};

use crate::groups::consumer_records::{
    self as consumer, CurrentAssignmentValue, GroupEpochValue, MemberMetadataValue, Partitions,
};
use crate::record_codec::{put_bytes, put_nullable_string, put_string, RecordReader};

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    /// Next offset to consume.
    pub offset: i64,
    /// Leader epoch of the committed record, or -1.
    pub leader_epoch: i32,
    /// Client metadata string.
    pub metadata: String,
    /// When it was committed (ms since the epoch).
    pub commit_timestamp: i64,
}

/// One member in a classic group's metadata record (Kafka's MemberMetadata).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberValue {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Its subscription: the metadata it gave for the chosen protocol.
    pub subscription: Bytes,
    /// Its assignment from the leader.
    pub assignment: Bytes,
}

/// What a classic group's metadata record keeps: generation, protocol,
/// leader and every member with its assignment, so a stable group survives
/// a restart without a rebalance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupValue {
    /// "consumer", "connect", ...
    pub protocol_type: String,
    /// Generation.
    pub generation: i32,
    /// Chosen protocol (assignor).
    pub protocol: Option<String>,
    /// Leader member id.
    pub leader: Option<String>,
    /// When the state last changed (ms).
    pub state_timestamp: i64,
    /// The members (none once the group is empty).
    pub members: Vec<MemberValue>,
}

/// One decoded record of `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    /// An offset commit, or its deletion (None).
    Offset {
        /// Group id.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The offset, or None to delete it.
        value: Option<OffsetValue>,
    },
    /// A classic group's metadata, or the group's deletion (None).
    Group {
        /// Group id.
        group: String,
        /// Metadata, or None to delete the group.
        value: Option<GroupValue>,
    },
    /// A KIP-848 group's epoch, or the group's deletion (None).
    ConsumerGroupEpoch {
        /// Group id.
        group: String,
        /// Epoch and metadata hash, or None to delete the group.
        value: Option<GroupEpochValue>,
    },
    /// A KIP-848 member's metadata, or its removal (None).
    ConsumerMember {
        /// Group id.
        group: String,
        /// Member id.
        member: String,
        /// Metadata, or None: the member left.
        value: Option<MemberMetadataValue>,
    },
    /// The epoch of a KIP-848 group's target assignment (None: deleted).
    ConsumerTargetEpoch {
        /// Group id.
        group: String,
        /// Assignment epoch.
        epoch: Option<i32>,
    },
    /// A KIP-848 member's target assignment (None: deleted).
    ConsumerTarget {
        /// Group id.
        group: String,
        /// Member id.
        member: String,
        /// Its target partitions.
        partitions: Option<Partitions>,
    },
    /// A KIP-848 member's current assignment (None: deleted).
    ConsumerAssignment {
        /// Group id.
        group: String,
        /// Member id.
        member: String,
        /// Its epochs and partitions.
        value: Option<CurrentAssignmentValue>,
    },
}

fn member_key(key: &mut BytesMut, version: i16, group: &str, member: &str) {
    key.put_i16(version);
    put_string(key, group);
    put_string(key, member);
}

/// Key and value bytes of `record`.
pub fn encode(record: &OffsetsRecord) -> (Bytes, Option<Bytes>) {
    let mut key = BytesMut::new();
    let value = match record {
        OffsetsRecord::Offset { group, topic, partition, value } => {
            key.put_i16(1);
            put_string(&mut key, group);
            put_string(&mut key, topic);
            key.put_i32(*partition);
            value.as_ref().map(|v| {
                let mut out = BytesMut::new();
                out.put_i16(3);
                out.put_i64(v.offset);
                out.put_i32(v.leader_epoch);
                put_string(&mut out, &v.metadata);
                out.put_i64(v.commit_timestamp);
                out.freeze()
            })
        }
        OffsetsRecord::Group { group, value } => {
            key.put_i16(2);
            put_string(&mut key, group);
            value.as_ref().map(|v| {
                let mut out = BytesMut::new();
                out.put_i16(3);
                put_string(&mut out, &v.protocol_type);
                out.put_i32(v.generation);
                put_nullable_string(&mut out, v.protocol.as_deref());
                put_nullable_string(&mut out, v.leader.as_deref());
                out.put_i64(v.state_timestamp);
                out.put_i32(v.members.len() as i32);
                for m in &v.members {
                    put_string(&mut out, &m.member_id);
                    put_nullable_string(&mut out, m.instance_id.as_deref());
                    put_string(&mut out, &m.client_id);
                    put_string(&mut out, &m.client_host);
                    out.put_i32(m.rebalance_timeout_ms);
                    out.put_i32(m.session_timeout_ms);
                    put_bytes(&mut out, &m.subscription);
                    put_bytes(&mut out, &m.assignment);
                }
                out.freeze()
            })
        }
        OffsetsRecord::ConsumerGroupEpoch { group, value } => {
            key.put_i16(3);
            put_string(&mut key, group);
            value.as_ref().map(consumer::encode_group_epoch)
        }
        OffsetsRecord::ConsumerMember { group, member, value } => {
            member_key(&mut key, 5, group, member);
            value.as_ref().map(consumer::encode_member)
        }
        OffsetsRecord::ConsumerTargetEpoch { group, epoch } => {
            key.put_i16(6);
            put_string(&mut key, group);
            epoch.map(consumer::encode_target_epoch)
        }
        OffsetsRecord::ConsumerTarget { group, member, partitions } => {
            member_key(&mut key, 7, group, member);
            partitions.as_ref().map(consumer::encode_target)
        }
        OffsetsRecord::ConsumerAssignment { group, member, value } => {
            member_key(&mut key, 8, group, member);
            value.as_ref().map(consumer::encode_current)
        }
    };
    (key.freeze(), value)
}

/// A classic group's members, in value `version`'s layout. Each member
/// counted must be there.
fn read_members(r: &mut RecordReader<'_>, version: i16) -> Option<Vec<MemberValue>> {
    // A version 0 member takes at least its five lengths and a timeout.
    let count = r.count(18)?;
    let mut members = Vec::new();
    for _ in 0..count {
        let member_id = r.string()?;
        let instance_id = if version >= 3 { r.nullable_string()? } else { None };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        members.push(MemberValue {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Some(members)
}

/// A tombstone (Some(None)), a decoded value, or None when the value does
/// not decode.
fn value_or_tombstone<T>(value: Option<&[u8]>, decode: fn(&[u8]) -> Option<T>) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(bytes) => decode(bytes).map(Some),
    }
}

/// Decodes a record; None for layouts this broker does not keep.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<OffsetsRecord> {
    let mut k = RecordReader::new(key);
    match k.i16()? {
        0 | 1 => {
            let (group, topic, partition) = (k.string()?, k.string()?, k.i32()?);
            let value = match value {
                None => None,
                Some(v) => {
                    let mut r = RecordReader::new(v);
                    let version = r.i16()?;
                    let offset = r.i64()?;
                    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
                    let metadata = r.string()?;
                    let commit_timestamp = r.i64()?;
                    Some(OffsetValue { offset, leader_epoch, metadata, commit_timestamp })
                }
            };
            Some(OffsetsRecord::Offset { group, topic, partition, value })
        }
        2 => {
            let group = k.string()?;
            let value = match value {
                None => None,
                Some(v) => {
                    let mut r = RecordReader::new(v);
                    let version = r.i16()?;
                    let protocol_type = r.string()?;
                    let generation = r.i32()?;
                    let protocol = r.nullable_string()?;
                    let leader = r.nullable_string()?;
                    let state_timestamp = if version >= 2 { r.i64()? } else { -1 };
                    let members = read_members(&mut r, version)?;
                    Some(GroupValue { protocol_type, generation, protocol, leader, state_timestamp, members })
                }
            };
            Some(OffsetsRecord::Group { group, value })
        }
        3 => {
            let group = k.string()?;
            Some(OffsetsRecord::ConsumerGroupEpoch {
                group,
                value: value_or_tombstone(value, consumer::decode_group_epoch)?,
            })
        }
        5 => {
            let (group, member) = (k.string()?, k.string()?);
            Some(OffsetsRecord::ConsumerMember {
                group,
                member,
                value: value_or_tombstone(value, consumer::decode_member)?,
            })
        }
        6 => {
            let group = k.string()?;
            Some(OffsetsRecord::ConsumerTargetEpoch {
                group,
                epoch: value_or_tombstone(value, consumer::decode_target_epoch)?,
            })
        }
        7 => {
            let (group, member) = (k.string()?, k.string()?);
            let partitions = value_or_tombstone(value, consumer::decode_target)?;
            Some(OffsetsRecord::ConsumerTarget { group, member, partitions })
        }
        8 => {
            let (group, member) = (k.string()?, k.string()?);
            let value = value_or_tombstone(value, consumer::decode_current)?;
            Some(OffsetsRecord::ConsumerAssignment { group, member, value })
        }
        _ => None,
    }
}

/// The group a record belongs to.
pub fn group_of(record: &OffsetsRecord) -> &str {
    match record {
        OffsetsRecord::Offset { group, .. }
        | OffsetsRecord::Group { group, .. }
        | OffsetsRecord::ConsumerGroupEpoch { group, .. }
        | OffsetsRecord::ConsumerMember { group, .. }
        | OffsetsRecord::ConsumerTargetEpoch { group, .. }
        | OffsetsRecord::ConsumerTarget { group, .. }
        | OffsetsRecord::ConsumerAssignment { group, .. } => group,
    }
}

/// Kafka's choice of `__consumer_offsets` partition for a group:
/// `abs(groupId.hashCode()) % partitions` with Java's String hash.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut hash: i32 = 0;
    for unit in group.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(unit as i32);
    }
    // Kafka's Utils.abs maps i32::MIN to 0.
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let records = [
            OffsetsRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: Some(OffsetValue { offset: 42, leader_epoch: 7, metadata: "m".into(), commit_timestamp: 99 }),
            },
            OffsetsRecord::Offset { group: "g".into(), topic: "t".into(), partition: 3, value: None },
            OffsetsRecord::Group {
                group: "g".into(),
                value: Some(GroupValue {
                    protocol_type: "consumer".into(),
                    generation: 5,
                    protocol: Some("range".into()),
                    leader: Some("m1".into()),
                    state_timestamp: 1,
                    members: vec![MemberValue {
                        member_id: "m1".into(),
                        instance_id: Some("static-1".into()),
                        client_id: "c".into(),
                        client_host: "/127.0.0.1".into(),
                        rebalance_timeout_ms: 300_000,
                        session_timeout_ms: 45_000,
                        subscription: Bytes::from_static(b"sub"),
                        assignment: Bytes::from_static(b"assigned"),
                    }],
                }),
            },
            OffsetsRecord::ConsumerGroupEpoch {
                group: "g".into(),
                value: Some(GroupEpochValue { epoch: 9, metadata_hash: 3 }),
            },
            OffsetsRecord::ConsumerGroupEpoch { group: "g".into(), value: None },
            OffsetsRecord::ConsumerMember {
                group: "g".into(),
                member: "m".into(),
                value: Some(MemberMetadataValue { client_id: "c".into(), ..Default::default() }),
            },
            OffsetsRecord::ConsumerMember { group: "g".into(), member: "m".into(), value: None },
            OffsetsRecord::ConsumerTargetEpoch { group: "g".into(), epoch: Some(4) },
            OffsetsRecord::ConsumerTarget {
                group: "g".into(),
                member: "m".into(),
                partitions: Some([(uuid::Uuid::from_u128(5), 1)].into_iter().collect()),
            },
            OffsetsRecord::ConsumerTarget { group: "g".into(), member: "m".into(), partitions: None },
            OffsetsRecord::ConsumerAssignment {
                group: "g".into(),
                member: "m".into(),
                value: Some(CurrentAssignmentValue { member_epoch: 4, ..Default::default() }),
            },
            OffsetsRecord::ConsumerAssignment { group: "g".into(), member: "m".into(), value: None },
        ];
        for record in records {
            let (key, value) = encode(&record);
            assert_eq!(decode(&key, value.as_deref()), Some(record));
        }
    }

    #[test]
    fn truncated_records_are_rejected() {
        let (key, value) = encode(&OffsetsRecord::Offset {
            group: "group".into(),
            topic: "t".into(),
            partition: 0,
            value: Some(OffsetValue { offset: 1, leader_epoch: -1, metadata: String::new(), commit_timestamp: 0 }),
        });
        for cut in 0..key.len() {
            assert_eq!(decode(&key[..cut], value.as_deref()), None);
        }
        let value = value.unwrap();
        for cut in 0..value.len() {
            assert_eq!(decode(&key, Some(&value[..cut])), None);
        }
    }

    #[test]
    fn partition_matches_java_string_hash() {
        // "my-group".hashCode() = -1906497762 in Java; 1906497762 % 50 = 12.
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(partition_for("", 50), 0);
    }
}
