//! `shardline groups list|describe`: an operator's view of consumer groups
//! and their lag, fetched from a running broker over the Kafka protocol
//! (as kafka-consumer-groups.sh does): ListGroups, DescribeGroups or
//! ConsumerGroupDescribe, OffsetFetch and ListOffsets. A blocking client on
//! the calling thread; not part of the broker's cores.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// Largest response this client accepts.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A connection to one broker.
pub struct AdminConnection {
    stream: TcpStream,
    correlation: i32,
}

/// One row of `groups describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagRow {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Committed offset, if any.
    pub committed: Option<i64>,
    /// Log end offset (high watermark).
    pub log_end: i64,
    /// Member consuming it, with host and client id.
    pub member: Option<(String, String, String)>,
}

impl LagRow {
    /// Lag: log end minus committed (None without a commit).
    pub fn lag(&self) -> Option<i64> {
        self.committed.map(|c| (self.log_end - c).max(0))
    }
}

impl AdminConnection {
    /// Connects to `bootstrap` (host:port).
    pub fn connect(bootstrap: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(bootstrap)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(AdminConnection { stream, correlation: 0 })
    }

    /// Sends `request` at `version` and reads its response.
    pub fn call<R: Request>(&mut self, request: &R, version: i16) -> std::io::Result<R::Response> {
        self.correlation += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = self.correlation;
        header.client_id = Some(StrBytes::from_static_str("shardline-groups"));
        let mut out = BytesMut::new();
        out.extend_from_slice(&[0; 4]);
        header.encode(&mut out, R::header_version(version)).map_err(bad)?;
        request.encode(&mut out, version).map_err(bad)?;
        let size = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&out)?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = i32::from_be_bytes(size);
        if size < 4 || size as usize > MAX_RESPONSE_BYTES {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("response size {size}")));
        }
        let mut body = vec![0u8; size as usize];
        self.stream.read_exact(&mut body)?;
        let mut body = bytes::Bytes::from(body);
        let response_header = ResponseHeader::decode(&mut body, R::Response::header_version(version)).map_err(bad)?;
        if response_header.correlation_id != self.correlation {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "correlation id mismatch"));
        }
        R::Response::decode(&mut body, version).map_err(bad)
    }
}

fn bad<E: std::fmt::Display>(e: E) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

fn error(message: String) -> std::io::Error {
    std::io::Error::other(message)
}

/// Groups with their state and type: (id, state, type, protocol type).
pub fn list_groups(bootstrap: &str) -> std::io::Result<Vec<(String, String, String, String)>> {
    let mut conn = AdminConnection::connect(bootstrap)?;
    let response = conn.call(&ListGroupsRequest::default(), 5)?;
    if response.error_code != 0 {
        return Err(error(format!("ListGroups failed with error {}", response.error_code)));
    }
    let mut groups: Vec<_> = response
        .groups
        .into_iter()
        .map(|g| {
            (g.group_id.to_string(), g.group_state.to_string(), g.group_type.to_string(), g.protocol_type.to_string())
        })
        .collect();
    groups.sort();
    Ok(groups)
}

/// Topic partitions in a classic consumer-protocol assignment (version,
/// topics [name, partitions[]], user data).
pub fn decode_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    let mut buf = bytes;
    if buf.remaining() < 6 {
        return out;
    }
    buf.get_i16();
    let topics = buf.get_i32();
    for _ in 0..topics.max(0) {
        if buf.remaining() < 2 {
            break;
        }
        let len = buf.get_i16();
        if len < 0 || buf.remaining() < len as usize + 4 {
            break;
        }
        let name = String::from_utf8_lossy(&buf[..len as usize]).into_owned();
        buf.advance(len as usize);
        let count = buf.get_i32();
        for _ in 0..count.max(0) {
            if buf.remaining() < 4 {
                return out;
            }
            out.push((name.clone(), buf.get_i32()));
        }
    }
    out
}

/// State, members' partitions and per-partition lag of `group`.
pub fn describe_group(bootstrap: &str, group: &str) -> std::io::Result<(String, Vec<LagRow>)> {
    let mut conn = AdminConnection::connect(bootstrap)?;
    let mut owners: BTreeMap<(String, i32), (String, String, String)> = BTreeMap::new();
    let mut state = String::from("Dead");
    let mut describe = DescribeGroupsRequest::default();
    describe.groups = vec![GroupId(StrBytes::from_string(group.to_string()))];
    let described = conn.call(&describe, 5)?;
    if let Some(g) = described.groups.first() {
        if g.error_code != 0 {
            return Err(error(format!("DescribeGroups failed with error {}", g.error_code)));
        }
        state = g.group_state.to_string();
        for m in &g.members {
            for tp in decode_assignment(&m.member_assignment) {
                owners.insert(tp, (m.member_id.to_string(), m.client_host.to_string(), m.client_id.to_string()));
            }
        }
    }
    let mut consumer = ConsumerGroupDescribeRequest::default();
    consumer.group_ids = vec![GroupId(StrBytes::from_string(group.to_string()))];
    if let Ok(response) = conn.call(&consumer, 1) {
        if let Some(g) = response.groups.first().filter(|g| g.error_code == 0) {
            state = g.group_state.to_string();
            for m in &g.members {
                for tp in &m.assignment.topic_partitions {
                    for p in &tp.partitions {
                        owners.insert(
                            (tp.topic_name.to_string(), *p),
                            (m.member_id.to_string(), m.client_host.to_string(), m.client_id.to_string()),
                        );
                    }
                }
            }
        }
    }
    let mut fetch = OffsetFetchRequest::default();
    let mut asked = OffsetFetchRequestGroup::default();
    asked.group_id = GroupId(StrBytes::from_string(group.to_string()));
    asked.topics = None;
    asked.member_epoch = -1;
    fetch.groups = vec![asked];
    let fetched = conn.call(&fetch, 8)?;
    let mut committed: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for g in fetched.groups {
        if g.error_code != 0 {
            return Err(error(format!("OffsetFetch failed with error {}", g.error_code)));
        }
        for t in g.topics {
            for p in t.partitions {
                if p.error_code == 0 && p.committed_offset >= 0 {
                    committed.insert((t.name.to_string(), p.partition_index), p.committed_offset);
                }
            }
        }
    }
    let partitions: Vec<(String, i32)> =
        committed.keys().chain(owners.keys()).cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in &partitions {
        by_topic.entry(t.clone()).or_default().push(*p);
    }
    let mut list = ListOffsetsRequest::default();
    list.replica_id = BrokerId(-1);
    list.topics = by_topic
        .iter()
        .map(|(t, ps)| {
            let mut topic = ListOffsetsTopic::default();
            topic.name = TopicName(StrBytes::from_string(t.clone()));
            topic.partitions = ps
                .iter()
                .map(|p| {
                    let mut lp = ListOffsetsPartition::default();
                    lp.partition_index = *p;
                    lp.timestamp = -1;
                    lp
                })
                .collect();
            topic
        })
        .collect();
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    if !list.topics.is_empty() {
        for t in conn.call(&list, 5)?.topics {
            for p in t.partitions {
                ends.insert((t.name.to_string(), p.partition_index), p.offset);
            }
        }
    }
    let rows = partitions
        .into_iter()
        .map(|tp| LagRow {
            committed: committed.get(&tp).copied(),
            log_end: ends.get(&tp).copied().unwrap_or(-1),
            member: owners.get(&tp).cloned(),
            topic: tp.0,
            partition: tp.1,
        })
        .collect();
    Ok((state, rows))
}

/// The `groups describe` table, as kafka-consumer-groups.sh prints it.
pub fn format_describe(group: &str, state: &str, rows: &[LagRow]) -> String {
    let mut out = format!("Consumer group '{group}' ({state})\n\n");
    out.push_str(&format!(
        "{:<24} {:<24} {:>9} {:>15} {:>15} {:>8} {:<40} {:<16} {}\n",
        "GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"
    ));
    for row in rows {
        let dash = || "-".to_string();
        let (member, host, client) = row.member.clone().unwrap_or_else(|| (dash(), dash(), dash()));
        out.push_str(&format!(
            "{:<24} {:<24} {:>9} {:>15} {:>15} {:>8} {:<40} {:<16} {}\n",
            group,
            row.topic,
            row.partition,
            row.committed.map_or_else(dash, |c| c.to_string()),
            row.log_end,
            row.lag().map_or_else(dash, |l| l.to_string()),
            member,
            host,
            client
        ));
    }
    out
}
