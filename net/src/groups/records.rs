//! The records the group coordinator keeps in `__consumer_offsets`, in
//! Kafka's own key and value layouts (so Kafka's tools could read them):
//! offset commits (key version 1, value version 3), classic group metadata
//! with its members and their assignments (key version 2, value version 3)
//! and, for KIP-848 groups, the group epoch (key version 3, value version
//! 0). A null value is a tombstone. Pure
//! functions; decoding checks every length against the bytes present.

use bytes::{BufMut, Bytes, BytesMut};

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
        /// Epoch, or None to delete the group.
        epoch: Option<i32>,
    },
}

fn put_string(out: &mut BytesMut, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    out.put_i16(bytes.len() as i16);
    out.put_slice(bytes);
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_i32(bytes.len() as i32);
    out.put_slice(bytes);
}

fn put_nullable_string(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.put_i16(-1),
    }
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
        OffsetsRecord::ConsumerGroupEpoch { group, epoch } => {
            key.put_i16(3);
            put_string(&mut key, group);
            epoch.map(|e| {
                let mut out = BytesMut::new();
                out.put_i16(0);
                out.put_i32(e);
                out.freeze()
            })
        }
    };
    (key.freeze(), value)
}

/// A bounds-checked reader over one key or value.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn nullable_string(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        Some(Some(String::from_utf8(self.take(len as usize)?.to_vec()).ok()?))
    }
    fn string(&mut self) -> Option<String> {
        self.nullable_string()?
    }
    fn bytes(&mut self) -> Option<Bytes> {
        let len = usize::try_from(self.i32()?).ok()?;
        Some(Bytes::copy_from_slice(self.take(len)?))
    }
    /// A classic group's members, in value `version`'s layout. The count
    /// read off the wire only bounds the loop; each member must be there.
    fn members(&mut self, version: i16) -> Option<Vec<MemberValue>> {
        let count = self.i32()?;
        let mut members = Vec::new();
        for _ in 0..count.max(0) {
            let member_id = self.string()?;
            let instance_id = if version >= 3 { self.nullable_string()? } else { None };
            let client_id = self.string()?;
            let client_host = self.string()?;
            let rebalance_timeout_ms = if version >= 1 { self.i32()? } else { -1 };
            let session_timeout_ms = self.i32()?;
            let subscription = self.bytes()?;
            let assignment = self.bytes()?;
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
}

/// Decodes a record; None for layouts this broker does not keep.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<OffsetsRecord> {
    let mut k = Reader(key);
    match k.i16()? {
        0 | 1 => {
            let (group, topic, partition) = (k.string()?, k.string()?, k.i32()?);
            let value = match value {
                None => None,
                Some(v) => {
                    let mut r = Reader(v);
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
                    let mut r = Reader(v);
                    let version = r.i16()?;
                    let protocol_type = r.string()?;
                    let generation = r.i32()?;
                    let protocol = r.nullable_string()?;
                    let leader = r.nullable_string()?;
                    let state_timestamp = if version >= 2 { r.i64()? } else { -1 };
                    let members = r.members(version)?;
                    Some(GroupValue { protocol_type, generation, protocol, leader, state_timestamp, members })
                }
            };
            Some(OffsetsRecord::Group { group, value })
        }
        3 => {
            let group = k.string()?;
            let epoch = match value {
                None => None,
                Some(v) => {
                    let mut r = Reader(v);
                    r.i16()?;
                    Some(r.i32()?)
                }
            };
            Some(OffsetsRecord::ConsumerGroupEpoch { group, epoch })
        }
        _ => None,
    }
}

/// The group a record belongs to.
pub fn group_of(record: &OffsetsRecord) -> &str {
    match record {
        OffsetsRecord::Offset { group, .. }
        | OffsetsRecord::Group { group, .. }
        | OffsetsRecord::ConsumerGroupEpoch { group, .. } => group,
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
            OffsetsRecord::ConsumerGroupEpoch { group: "g".into(), epoch: Some(9) },
            OffsetsRecord::ConsumerGroupEpoch { group: "g".into(), epoch: None },
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
