//! Fetch responses as gather lists: the frame size, the response header and
//! every field but the records are encoded into small buffers, and each
//! partition's records follow as the `Bytes` the reads returned (batch
//! cache or file), so the record bytes are never copied in user space on
//! their way to the socket (`sendmsg` with one iovec per segment). Records
//! still in a resident segment file go as a [`Segment::File`], which the
//! connection splices from the page cache to the socket.
//!
//! Each partition's fields are encoded by kafka-protocol (with null records,
//! spliced); the few fields around them (counts, topic names, the top-level
//! fields) follow the `FetchResponse` schema (v4–12) with the shared field
//! encoders. A property test checks that the gathered bytes equal
//! kafka-protocol's encoding of the same response.
//! Runs on the shard of the connection.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{FetchResponse, ResponseHeader};
use kafka_protocol::protocol::Encodable;
use shardline_engine::log::FileRange;

use crate::record_codec::{put_compact_string, put_string, put_uvarint};

/// A record segment shorter than this is copied next to the fields around
/// it: an iovec costs more than copying a few hundred bytes.
pub const SHARE_AT_LEAST: usize = 1024;

/// At most this many segments are shared per response; the rest are
/// copied, so a response never needs more iovecs than `sendmsg` takes
/// (`IOV_MAX` is 1024).
pub const MAX_SHARED_SEGMENTS: usize = 256;

/// One piece of a response frame: bytes in memory, or whole batches in a
/// segment file's resident pages, sent with `splice`.
#[derive(Debug, Clone)]
pub enum Segment {
    /// Bytes in memory (encoded fields, or batches from the batch cache or
    /// a copying read).
    Bytes(Bytes),
    /// Whole batches in a segment file, resident in the page cache.
    File(FileRange),
}

impl Segment {
    /// Bytes this segment adds to the frame.
    pub fn len(&self) -> usize {
        match self {
            Segment::Bytes(bytes) => bytes.len(),
            Segment::File(range) => range.len,
        }
    }

    /// Whether it adds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Bytes> for Segment {
    fn from(bytes: Bytes) -> Self {
        Segment::Bytes(bytes)
    }
}

/// A fetch response whose records are kept as segments: `records[i]` holds
/// the records of the `i`-th partition of `response` (counting across
/// topics in order), whose own `records` field is ignored.
#[derive(Debug, Default)]
pub struct FetchReply {
    /// Every field of the response except the records.
    pub response: FetchResponse,
    /// Each partition's records, as whole batches in log order.
    pub records: Vec<Vec<Segment>>,
}

/// Why a fetch response could not be encoded: a bug in the broker (a
/// field kafka-protocol refuses, or lists that do not match), never the
/// client's fault.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the fetch response: {0}")]
pub struct EncodeFailure(String);

fn failure(error: impl std::fmt::Display) -> EncodeFailure {
    EncodeFailure(error.to_string())
}

macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(EncodeFailure(format!($($message)+)));
        }
    };
}

/// A response frame as it goes to the socket: size prefix included, in
/// order; the segments' concatenation is the frame.
pub type FrameSegments = Vec<Segment>;

/// Builds a frame from small encoded pieces and shared record segments.
struct Gather {
    /// The first piece, which holds the size prefix filled in last.
    first: Option<BytesMut>,
    segments: Vec<Segment>,
    pending: BytesMut,
    shared: usize,
    len: usize,
}

impl Gather {
    fn new() -> Self {
        let mut pending = BytesMut::with_capacity(512);
        pending.extend_from_slice(&[0u8; 4]);
        Self { first: None, segments: Vec::new(), pending, shared: 0, len: 0 }
    }

    fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let piece = self.pending.split();
        self.len += piece.len();
        match self.first {
            None => self.first = Some(piece),
            Some(_) => self.segments.push(Segment::Bytes(piece.freeze())),
        }
    }

    /// Appends `records`: a file range as itself; bytes shared when large
    /// and the iovec budget allows, copied otherwise.
    fn put_records(&mut self, records: &Segment) {
        let records = match records {
            Segment::Bytes(bytes) => bytes,
            Segment::File(range) => {
                self.flush_pending();
                self.len += range.len;
                self.segments.push(Segment::File(range.clone()));
                return;
            }
        };
        if records.len() < SHARE_AT_LEAST || self.shared >= MAX_SHARED_SEGMENTS {
            self.pending.extend_from_slice(records);
            return;
        }
        self.flush_pending();
        self.len += records.len();
        self.segments.push(Segment::Bytes(records.clone()));
        self.shared += 1;
    }

    fn finish(mut self) -> Result<FrameSegments, EncodeFailure> {
        self.flush_pending();
        let mut first = self.first.take().ok_or_else(|| failure("an empty frame"))?;
        let size = i32::try_from(self.len - 4).map_err(|_| failure(format!("a response of {} bytes", self.len)))?;
        first[..4].copy_from_slice(&size.to_be_bytes());
        let mut out = Vec::with_capacity(1 + self.segments.len());
        out.push(Segment::Bytes(first.freeze()));
        out.append(&mut self.segments);
        debug_assert_eq!(out.iter().map(Segment::len).sum::<usize>(), self.len, "the size prefix counts every segment");
        Ok(out)
    }
}

/// Encodes `count` as an array length (compact from v12).
fn put_array_len(buf: &mut BytesMut, count: usize, flexible: bool) -> Result<(), EncodeFailure> {
    if flexible {
        put_uvarint(buf, u32::try_from(count + 1).map_err(failure)?);
    } else {
        buf.put_i32(i32::try_from(count).map_err(failure)?);
    }
    Ok(())
}

/// The bytes a null `records` field takes, and the partition's tagged-field
/// trailer after it (one zero count from v12).
fn null_records_and_trailer(version: i16) -> (usize, usize) {
    if version >= 12 {
        (1, 1)
    } else {
        (4, 0)
    }
}

/// Encodes one partition: its fields through kafka-protocol with null
/// records, then the records spliced in before the trailer.
fn put_partition(
    gather: &mut Gather,
    partition: &PartitionData,
    records: &[Segment],
    version: i16,
) -> Result<(), EncodeFailure> {
    let flexible = version >= 12;
    let mut fields = partition.clone();
    fields.records = None;
    let mut encoded = BytesMut::with_capacity(64);
    fields.encode(&mut encoded, version).map_err(failure)?;
    let (null_len, trailer_len) = null_records_and_trailer(version);
    ensure!(
        !flexible
            || (partition.unknown_tagged_fields.is_empty()
                && partition.diverging_epoch == Default::default()
                && partition.current_leader == Default::default()
                && partition.snapshot_id == Default::default()),
        "a gathered fetch partition carries no tagged fields"
    );
    let head_len = encoded.len() - null_len - trailer_len;
    let trailer = encoded.split_off(head_len + null_len);
    encoded.truncate(head_len);
    gather.pending.extend_from_slice(&encoded);
    let total: usize = records.iter().map(Segment::len).sum();
    if flexible {
        put_uvarint(&mut gather.pending, u32::try_from(total + 1).map_err(failure)?);
    } else {
        gather.pending.put_i32(i32::try_from(total).map_err(failure)?);
    }
    for segment in records {
        gather.put_records(segment);
    }
    gather.pending.extend_from_slice(&trailer);
    Ok(())
}

/// Encodes `reply` as a response frame to `correlation_id`, at `version`
/// (4–12) with response header `header_version`.
pub fn encode_fetch_reply(
    correlation_id: i32,
    header_version: i16,
    reply: &FetchReply,
    version: i16,
) -> Result<FrameSegments, EncodeFailure> {
    ensure!((4..=12).contains(&version), "gathered fetch encoding covers v4-12, not v{version}");
    let response = &reply.response;
    let flexible = version >= 12;
    let mut gather = Gather::new();
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header.encode(&mut gather.pending, header_version).map_err(failure)?;
    gather.pending.put_i32(response.throttle_time_ms);
    if version >= 7 {
        gather.pending.put_i16(response.error_code);
        gather.pending.put_i32(response.session_id);
    } else {
        ensure!(response.error_code == 0 && response.session_id == 0, "no top-level error or session before v7");
    }
    put_array_len(&mut gather.pending, response.responses.len(), flexible)?;
    let mut records = reply.records.iter();
    for topic in &response.responses {
        if flexible {
            put_compact_string(&mut gather.pending, Some(topic.topic.0.as_str()));
        } else {
            put_string(&mut gather.pending, topic.topic.0.as_str());
        }
        put_array_len(&mut gather.pending, topic.partitions.len(), flexible)?;
        for partition in &topic.partitions {
            let segments = records.next().ok_or_else(|| failure("fewer record lists than partitions"))?;
            put_partition(&mut gather, partition, segments, version)?;
        }
        if flexible {
            ensure!(topic.unknown_tagged_fields.is_empty(), "a gathered fetch topic carries no tagged fields");
            put_uvarint(&mut gather.pending, 0);
        }
    }
    ensure!(records.next().is_none(), "more record lists than partitions");
    if flexible {
        ensure!(
            response.unknown_tagged_fields.is_empty() && response.node_endpoints.is_empty(),
            "a gathered fetch response carries no tagged fields"
        );
        put_uvarint(&mut gather.pending, 0);
    }
    gather.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse};
    use kafka_protocol::messages::{ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    /// The bytes a segment stands for.
    fn segment_bytes(segment: &Segment) -> Vec<u8> {
        match segment {
            Segment::Bytes(bytes) => bytes.to_vec(),
            Segment::File(range) => {
                use std::os::unix::fs::FileExt;
                let mut out = vec![0u8; range.len];
                range.file.read_exact_at(&mut out, range.position).expect("read the range");
                out
            }
        }
    }

    fn gathered(frame: &FrameSegments) -> Vec<u8> {
        frame.iter().flat_map(segment_bytes).collect()
    }

    /// kafka-protocol's encoding of the same frame, records concatenated.
    fn reference(correlation_id: i32, reply: &FetchReply, version: i16) -> Vec<u8> {
        let mut response = reply.response.clone();
        let mut records = reply.records.iter();
        for topic in &mut response.responses {
            for partition in &mut topic.partitions {
                let segments = records.next().expect("a list per partition");
                partition.records = Some(segments.iter().flat_map(segment_bytes).collect::<Vec<u8>>().into());
            }
        }
        let header_version = if version >= 12 { 1 } else { 0 };
        let mut body = BytesMut::new();
        let mut header = ResponseHeader::default();
        header.correlation_id = correlation_id;
        header.encode(&mut body, header_version).expect("header");
        response.encode(&mut body, version).expect("body");
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        frame
    }

    fn reply_strategy() -> impl Strategy<Value = FetchReply> {
        let segment = prop_oneof![
            (0usize..64).prop_map(|n| Segment::Bytes(Bytes::from(vec![7u8; n]))),
            (SHARE_AT_LEAST..SHARE_AT_LEAST * 3)
                .prop_map(|n| Segment::Bytes(Bytes::from((0..n).map(|b| b as u8).collect::<Vec<_>>()))),
        ];
        let partition = (
            any::<i32>(),
            any::<i16>(),
            any::<i64>(),
            any::<i64>(),
            proptest::option::of(proptest::collection::vec((any::<i64>(), any::<i64>()), 0..3)),
            proptest::collection::vec(segment, 0..4),
        );
        let topic = ("[a-z]{1,12}", proptest::collection::vec(partition, 0..4));
        (any::<i32>(), any::<i16>(), 0i32..1000, proptest::collection::vec(topic, 0..4)).prop_map(
            |(session_id, error_code, throttle, topics)| {
                let mut reply = FetchReply::default();
                reply.response.session_id = session_id;
                reply.response.error_code = error_code;
                reply.response.throttle_time_ms = throttle;
                for (name, partitions) in topics {
                    let mut topic = FetchableTopicResponse::default();
                    topic.topic = TopicName(StrBytes::from_string(name));
                    for (index, error, high, lso, aborted, segments) in partitions {
                        let mut p = PartitionData::default();
                        p.partition_index = index;
                        p.error_code = error;
                        p.high_watermark = high;
                        p.last_stable_offset = lso;
                        p.log_start_offset = high.wrapping_sub(lso);
                        p.aborted_transactions = aborted.map(|list| {
                            list.into_iter()
                                .map(|(producer_id, first_offset)| {
                                    let mut a = AbortedTransaction::default();
                                    a.producer_id = ProducerId(producer_id);
                                    a.first_offset = first_offset;
                                    a
                                })
                                .collect()
                        });
                        topic.partitions.push(p);
                        reply.records.push(segments);
                    }
                    reply.response.responses.push(topic);
                }
                reply
            },
        )
    }

    proptest! {
        #[test]
        fn gathered_bytes_equal_kafka_protocols_encoding(reply in reply_strategy(),
                                                         version in 4i16..=12,
                                                         correlation_id in any::<i32>()) {
            let mut reply = reply;
            if version < 7 {
                reply.response.session_id = 0;
                reply.response.error_code = 0;
            }
            let header_version = if version >= 12 { 1 } else { 0 };
            let frame = encode_fetch_reply(correlation_id, header_version, &reply, version).expect("encodes");
            prop_assert_eq!(gathered(&frame), reference(correlation_id, &reply, version));
        }
    }

    #[test]
    fn large_records_are_shared_not_copied() {
        let big = Bytes::from(vec![1u8; 64 * 1024]);
        let mut reply = FetchReply::default();
        let mut topic = FetchableTopicResponse::default();
        topic.topic = TopicName(StrBytes::from_static_str("t"));
        topic.partitions.push(PartitionData::default());
        reply.response.responses.push(topic);
        reply.records.push(vec![big.clone().into(), big.clone().into()]);
        let frame = encode_fetch_reply(1, 1, &reply, 12).expect("encodes");
        let shared = frame.iter().filter(|s| matches!(s, Segment::Bytes(b) if b.as_ptr() == big.as_ptr())).count();
        assert_eq!(shared, 2, "both batches go out from the cache's own buffer");
    }

    #[test]
    fn shared_segments_are_bounded() {
        let mut reply = FetchReply::default();
        let mut topic = FetchableTopicResponse::default();
        topic.topic = TopicName(StrBytes::from_static_str("t"));
        for index in 0..(MAX_SHARED_SEGMENTS as i32 + 50) {
            let mut p = PartitionData::default();
            p.partition_index = index;
            topic.partitions.push(p);
            reply.records.push(vec![Bytes::from(vec![3u8; SHARE_AT_LEAST]).into()]);
        }
        reply.response.responses.push(topic);
        let frame = encode_fetch_reply(1, 1, &reply, 12).expect("encodes");
        assert!(frame.len() <= 2 * MAX_SHARED_SEGMENTS + 2, "{} segments", frame.len());
        assert_eq!(gathered(&frame), reference(1, &reply, 12));
    }

    #[test]
    fn file_ranges_go_out_as_themselves_between_the_fields() {
        use std::io::Write;
        let mut temp = tempfile::NamedTempFile::new().expect("temp file");
        let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        temp.write_all(&content).expect("write");
        let file = std::sync::Arc::new(std::fs::File::open(temp.path()).expect("open"));
        let range =
            |position: u64, len: usize| Segment::File(FileRange { file: file.clone(), position, len, next_offset: 0 });
        for version in [4i16, 11, 12] {
            let mut reply = FetchReply::default();
            let mut topic = FetchableTopicResponse::default();
            topic.topic = TopicName(StrBytes::from_static_str("t"));
            for index in 0..3 {
                let mut p = PartitionData::default();
                p.partition_index = index;
                p.high_watermark = 7;
                topic.partitions.push(p);
            }
            reply.records.push(vec![range(100, 30_000)]);
            reply.records.push(vec![Bytes::from(vec![9u8; 10]).into(), range(50_000, 20_000)]);
            reply.records.push(Vec::new());
            reply.response.responses.push(topic);
            let header_version = if version >= 12 { 1 } else { 0 };
            let frame = encode_fetch_reply(3, header_version, &reply, version).expect("encodes");
            let files = frame.iter().filter(|s| matches!(s, Segment::File(_))).count();
            assert_eq!(files, 2, "each range is its own segment");
            assert_eq!(gathered(&frame), reference(3, &reply, version), "v{version}");
        }
    }
}
