//! The values of the records a KIP-848 group keeps in `__consumer_offsets`,
//! in Kafka's flexible (tagged-field) layouts, version 0 of each:
//! ConsumerGroupMetadataValue (the group epoch), ConsumerGroupMemberMetadataValue
//! (a member's subscription and client), ConsumerGroupTargetAssignmentMetadataValue
//! (the target's epoch), ConsumerGroupTargetAssignmentMemberValue (one
//! member's target) and ConsumerGroupCurrentMemberAssignmentValue (what a
//! member owns and must revoke). Keys are in `groups::records`. Pure
//! functions, run on the shard of the group's coordinator; decoding checks
//! every length against the bytes present and skips tagged fields it does
//! not know.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::record_codec::{put_compact_string, put_uvarint, RecordReader};

/// Partitions by (topic id, partition).
pub type Partitions = BTreeSet<(Uuid, i32)>;

/// ConsumerGroupMetadataValue: the group epoch and the hash of the topics
/// the group subscribes to (tagged field 0, KIP-1101), so a restart does
/// not mistake unchanged metadata for a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupEpochValue {
    /// Group epoch.
    pub epoch: i32,
    /// Hash of the subscribed topics' ids and partition counts (0: none).
    pub metadata_hash: i64,
}

/// ConsumerGroupMemberMetadataValue: who a member is and what it
/// subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberMetadataValue {
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Rack.
    pub rack_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Subscribed topic names.
    pub subscribed_names: Vec<String>,
    /// Subscribed topic regex.
    pub subscribed_regex: Option<String>,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// The server assignor it asked for.
    pub server_assignor: Option<String>,
}

/// Kafka's MemberState, as ConsumerGroupCurrentMemberAssignmentValue
/// stores it.
pub mod member_state {
    /// At the target.
    pub const STABLE: i8 = 0;
    /// Must revoke partitions before moving to the next epoch.
    pub const UNREVOKED_PARTITIONS: i8 = 1;
    /// At the target's epoch, waiting for partitions others still own.
    pub const UNRELEASED_PARTITIONS: i8 = 2;
}

/// The member epoch Kafka stores for a static member that left for a
/// restart (LEAVE_GROUP_STATIC_MEMBER_EPOCH).
pub const LEFT_TEMPORARILY_EPOCH: i32 = -2;

/// ConsumerGroupCurrentMemberAssignmentValue: a member's epoch and what it
/// owns. A static member that left for a restart is stored with
/// [`LEFT_TEMPORARILY_EPOCH`] as its epoch and its real epoch as the
/// previous one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CurrentAssignmentValue {
    /// Member epoch.
    pub member_epoch: i32,
    /// Previous member epoch.
    pub previous_member_epoch: i32,
    /// A [`member_state`] value.
    pub state: i8,
    /// Partitions it owns.
    pub assigned: Partitions,
    /// Partitions it must revoke.
    pub revoking: Partitions,
}

fn put_partitions(out: &mut BytesMut, partitions: &Partitions) {
    let mut by_topic: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        by_topic.entry(*topic).or_default().push(*partition);
    }
    put_uvarint(out, by_topic.len() as u32 + 1);
    for (topic, partitions) in by_topic {
        out.put_slice(topic.as_bytes());
        put_uvarint(out, partitions.len() as u32 + 1);
        for p in partitions {
            out.put_i32(p);
        }
        put_uvarint(out, 0);
    }
}

fn value(build: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    build(&mut out);
    out.freeze()
}

/// The bytes of a ConsumerGroupMetadataValue.
pub fn encode_group_epoch(v: &GroupEpochValue) -> Bytes {
    value(|out| {
        out.put_i32(v.epoch);
        // One tagged field: MetadataHash (tag 0, 8 bytes).
        put_uvarint(out, 1);
        put_uvarint(out, 0);
        put_uvarint(out, 8);
        out.put_i64(v.metadata_hash);
    })
}

/// The bytes of a ConsumerGroupMemberMetadataValue.
pub fn encode_member(v: &MemberMetadataValue) -> Bytes {
    value(|out| {
        put_compact_string(out, v.instance_id.as_deref());
        put_compact_string(out, v.rack_id.as_deref());
        put_compact_string(out, Some(&v.client_id));
        put_compact_string(out, Some(&v.client_host));
        put_uvarint(out, v.subscribed_names.len() as u32 + 1);
        for name in &v.subscribed_names {
            put_compact_string(out, Some(name));
        }
        put_compact_string(out, v.subscribed_regex.as_deref());
        out.put_i32(v.rebalance_timeout_ms);
        put_compact_string(out, v.server_assignor.as_deref());
        put_uvarint(out, 0);
    })
}

/// The bytes of a ConsumerGroupTargetAssignmentMetadataValue.
pub fn encode_target_epoch(epoch: i32) -> Bytes {
    value(|out| {
        out.put_i32(epoch);
        put_uvarint(out, 0);
    })
}

/// The bytes of a ConsumerGroupTargetAssignmentMemberValue.
pub fn encode_target(partitions: &Partitions) -> Bytes {
    value(|out| {
        put_partitions(out, partitions);
        put_uvarint(out, 0);
    })
}

/// The bytes of a ConsumerGroupCurrentMemberAssignmentValue.
pub fn encode_current(v: &CurrentAssignmentValue) -> Bytes {
    value(|out| {
        out.put_i32(v.member_epoch);
        out.put_i32(v.previous_member_epoch);
        out.put_i8(v.state);
        put_partitions(out, &v.assigned);
        put_partitions(out, &v.revoking);
        put_uvarint(out, 0);
    })
}

/// A []TopicPartitions array: topic ids, each with its partitions.
fn read_partitions(r: &mut RecordReader<'_>) -> Option<Partitions> {
    let topics = r.compact_len(17)??;
    let mut out = Partitions::new();
    for _ in 0..topics {
        let topic = r.uuid()?;
        let count = r.compact_len(4)?.unwrap_or(0);
        for _ in 0..count {
            out.insert((topic, r.i32()?));
        }
        r.tagged()?;
    }
    Some(out)
}

/// A reader past the value's version, which must be 0.
fn version_zero(bytes: &[u8]) -> Option<RecordReader<'_>> {
    let mut r = RecordReader::new(bytes);
    (r.i16()? == 0).then_some(r)
}

/// A ConsumerGroupMetadataValue. A value without tagged fields (as this
/// broker wrote before it kept the hash) reads with hash 0.
pub fn decode_group_epoch(bytes: &[u8]) -> Option<GroupEpochValue> {
    let mut r = version_zero(bytes)?;
    let epoch = r.i32()?;
    let mut metadata_hash = 0;
    if r.remaining() > 0 {
        if let Some(hash) = r.tagged()?.get(&0) {
            metadata_hash = RecordReader::new(hash).i64()?;
        }
    }
    Some(GroupEpochValue { epoch, metadata_hash })
}

/// A ConsumerGroupMemberMetadataValue.
pub fn decode_member(bytes: &[u8]) -> Option<MemberMetadataValue> {
    let mut r = version_zero(bytes)?;
    let instance_id = r.compact_nullable_string()?;
    let rack_id = r.compact_nullable_string()?;
    let client_id = r.compact_string()?;
    let client_host = r.compact_string()?;
    let names = r.compact_len(1)?.unwrap_or(0);
    let mut subscribed_names = Vec::new();
    for _ in 0..names {
        subscribed_names.push(r.compact_string()?);
    }
    let subscribed_regex = r.compact_nullable_string()?;
    let rebalance_timeout_ms = r.i32()?;
    let server_assignor = r.compact_nullable_string()?;
    r.tagged()?;
    Some(MemberMetadataValue {
        instance_id,
        rack_id,
        client_id,
        client_host,
        subscribed_names,
        subscribed_regex,
        rebalance_timeout_ms,
        server_assignor,
    })
}

/// A ConsumerGroupTargetAssignmentMetadataValue's epoch.
pub fn decode_target_epoch(bytes: &[u8]) -> Option<i32> {
    let mut r = version_zero(bytes)?;
    let epoch = r.i32()?;
    r.tagged()?;
    Some(epoch)
}

/// A ConsumerGroupTargetAssignmentMemberValue's partitions.
pub fn decode_target(bytes: &[u8]) -> Option<Partitions> {
    let mut r = version_zero(bytes)?;
    let partitions = read_partitions(&mut r)?;
    r.tagged()?;
    Some(partitions)
}

/// A ConsumerGroupCurrentMemberAssignmentValue.
pub fn decode_current(bytes: &[u8]) -> Option<CurrentAssignmentValue> {
    let mut r = version_zero(bytes)?;
    let member_epoch = r.i32()?;
    let previous_member_epoch = r.i32()?;
    let state = r.i8()?;
    let assigned = read_partitions(&mut r)?;
    let revoking = read_partitions(&mut r)?;
    r.tagged()?;
    Some(CurrentAssignmentValue { member_epoch, previous_member_epoch, state, assigned, revoking })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partitions() -> Partitions {
        [(Uuid::from_u128(1), 0), (Uuid::from_u128(1), 3), (Uuid::from_u128(9), 2)].into_iter().collect()
    }

    #[test]
    fn values_round_trip() {
        let epoch = GroupEpochValue { epoch: 7, metadata_hash: -42 };
        assert_eq!(decode_group_epoch(&encode_group_epoch(&epoch)), Some(epoch));
        let member = MemberMetadataValue {
            instance_id: Some("i".into()),
            rack_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            subscribed_names: vec!["a".into(), "b".into()],
            subscribed_regex: Some("x.*".into()),
            rebalance_timeout_ms: 300_000,
            server_assignor: Some("uniform".into()),
        };
        assert_eq!(decode_member(&encode_member(&member)), Some(member));
        assert_eq!(decode_target_epoch(&encode_target_epoch(5)), Some(5));
        assert_eq!(decode_target(&encode_target(&partitions())), Some(partitions()));
        let current = CurrentAssignmentValue {
            member_epoch: 5,
            previous_member_epoch: 4,
            state: member_state::UNREVOKED_PARTITIONS,
            assigned: partitions(),
            revoking: [(Uuid::from_u128(3), 1)].into_iter().collect(),
        };
        assert_eq!(decode_current(&encode_current(&current)), Some(current));
    }

    #[test]
    fn the_layouts_are_kafkas() {
        // ConsumerGroupTargetAssignmentMetadataValue v0: version, epoch,
        // an empty tagged-field section.
        assert_eq!(&encode_target_epoch(3)[..], &[0, 0, 0, 0, 0, 3, 0]);
        // A target of one topic, one partition: compact array of 1 (2),
        // the uuid, compact int32 array of 1 (2), the partition, the
        // struct's tags (0), the value's tags (0).
        let one: Partitions = [(Uuid::from_u128(0x0102), 7)].into_iter().collect();
        let mut expected = vec![0, 0, 2];
        expected.extend_from_slice(Uuid::from_u128(0x0102).as_bytes());
        expected.extend_from_slice(&[2, 0, 0, 0, 7, 0, 0]);
        assert_eq!(&encode_target(&one)[..], &expected[..]);
        // An epoch record written before the hash was kept still reads.
        assert_eq!(decode_group_epoch(&[0, 0, 0, 0, 0, 9]), Some(GroupEpochValue { epoch: 9, metadata_hash: 0 }));
    }

    #[test]
    fn truncated_or_lying_values_are_rejected() {
        let current = encode_current(&CurrentAssignmentValue {
            member_epoch: 1,
            previous_member_epoch: 0,
            state: 0,
            assigned: partitions(),
            revoking: Partitions::new(),
        });
        for cut in 0..current.len() {
            assert_eq!(decode_current(&current[..cut]), None, "cut at {cut}");
        }
        // A topic count far beyond the bytes present is refused before any
        // allocation.
        let mut lying = vec![0, 0];
        lying.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
        assert_eq!(decode_target(&lying), None);
        assert_eq!(decode_target(&[0, 1, 1, 0]), None, "version 1 is not a layout this broker knows");
    }
}
