//! The records the group coordinator keeps in `__consumer_offsets`, in
//! Kafka's own key and value layouts (so Kafka's tools could read them):
//! offset commits (key version 1, value version 3), classic group metadata
//! (key version 2, value version 3) and, for KIP-848 groups, the group epoch
//! (key version 3, value version 0). A null value is a tombstone. Pure
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

/// What a classic group's metadata record keeps (members rejoin after a
/// restart; the generation and protocol survive it).
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
                out.put_i32(0); // members: they rejoin after a restart
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
                    Some(GroupValue { protocol_type, generation, protocol, leader, state_timestamp })
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
                    leader: None,
                    state_timestamp: 1,
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
