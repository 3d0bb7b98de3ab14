//! The simulated clients and the operations they send. Each client keeps
//! what a real client would (its producer id, epoch and next sequence, its
//! open transaction, its group membership) and has at most one operation
//! in flight. An operation is an async task over the node's services; its
//! [`OpResult`] is applied to the client and the model when it completes.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use shardline_engine::format::batch::build::{batch, set_producer, TestRecord};
use shardline_engine::format::batch::ATTR_TRANSACTIONAL;
use shardline_engine::partition::{AppendOrigin, Appended, Durability, PartitionError};
use shardline_net::groups::classic::Join;
use shardline_net::groups::consumer::{Heartbeat, HeartbeatReply, TopicsView};
use shardline_net::groups::coordinator::CommitAsked;
use shardline_net::groups::effect::{JoinReply, SyncReply};
use shardline_net::groups::records::partition_for;
use shardline_net::groups::service::{CommitAsk, SyncAsk};
use shardline_net::txn::service::ProducerIdSource;
use shardline_net::txn::verify::append_client_batch;

use crate::sim::node::{SimNode, DATA_PARTITIONS, DATA_TOPIC, INTERNAL_PARTITIONS};
use crate::sim::rng::SimRng;

/// A transactional producer's `transaction.timeout.ms` in the simulation.
pub const TXN_TIMEOUT_MS: i32 = 8_000;

/// A batch a producer sent and may send again.
#[derive(Debug, Clone)]
pub struct SentBatch {
    /// Partition.
    pub partition: i32,
    /// Its bytes as built (base offset 0).
    pub bytes: Vec<u8>,
    /// Its first sequence (-1 for a plain producer).
    pub sequence: i32,
    /// Records in it.
    pub records: i32,
    /// The offset it was acknowledged at, once it was.
    pub acked_at: Option<i64>,
}

/// What a client is.
#[derive(Debug, Clone)]
pub enum Client {
    /// Plain batches, acks=1 or acks=all.
    Plain,
    /// An idempotent producer (acks=all) on one partition.
    Idempotent {
        /// Its producer id, once it has one.
        producer_id: Option<i64>,
        /// The partition it writes.
        partition: i32,
        /// The next sequence.
        next_sequence: i32,
        /// Its last batch.
        last: Option<SentBatch>,
        /// Sent and not answered (a crash or an error came first): sent again next.
        unanswered: Option<SentBatch>,
    },
    /// A transactional producer.
    Transactional {
        /// Its transactional id.
        id: String,
        /// Its producer id and epoch, once initialized.
        producer: Option<(i64, i16)>,
        /// Its open transaction (index into the model's transactions).
        txn: Option<usize>,
        /// Partitions added to the open transaction.
        added: BTreeSet<(String, i32)>,
        /// Next sequence per data partition for this epoch.
        sequences: BTreeMap<i32, i32>,
        /// EndTxn was sent (commit or abort) and not yet answered with
        /// success: like a Kafka client, it sends it again and nothing else.
        ending: Option<bool>,
    },
    /// Commits offsets of one group (simple commits: no membership).
    Committer {
        /// Group id.
        group: String,
    },
    /// A member of a classic group.
    ClassicMember {
        /// Group id.
        group: String,
        /// Member id ("" before the first join).
        member_id: String,
        /// Generation, once joined.
        generation: Option<i32>,
        /// Whether it leads and must sync assignments.
        leader_of: Vec<String>,
        /// Whether SyncGroup is still due for the generation.
        needs_sync: bool,
    },
    /// A member of a KIP-848 group.
    ConsumerMember {
        /// Group id.
        group: String,
        /// Member id.
        member_id: String,
        /// Member epoch (0 to join).
        epoch: i32,
        /// Partitions it owns.
        owned: BTreeSet<(uuid::Uuid, i32)>,
    },
}

/// An operation, as sent.
#[derive(Debug, Clone)]
pub enum Op {
    /// Append a batch and wait as asked (`None`: acks=0).
    Append {
        /// The batch.
        batch: SentBatch,
        /// What the ack waits for.
        durability: Option<Durability>,
    },
    /// InitProducerId without a transactional id.
    InitProducerId,
    /// InitProducerId with one.
    InitTransactional,
    /// AddPartitionsToTxn (or AddOffsetsToTxn).
    AddToTxn {
        /// Partitions to add.
        partitions: Vec<(String, i32)>,
    },
    /// A transactional batch (the partition was added).
    ProduceInTxn {
        /// The batch.
        batch: SentBatch,
    },
    /// TxnOffsetCommit.
    CommitInTxn {
        /// Group.
        group: String,
        /// Data partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
    /// EndTxn.
    EndTxn {
        /// Commit or abort.
        commit: bool,
    },
    /// OffsetCommit (simple).
    Commit {
        /// Data partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
    /// JoinGroup.
    Join,
    /// SyncGroup (the leader gives every member one assignment).
    Sync,
    /// Heartbeat.
    Heartbeat,
    /// LeaveGroup.
    Leave,
    /// ConsumerGroupHeartbeat (`leave`: epoch -1).
    ConsumerHeartbeat {
        /// Leave the group.
        leave: bool,
    },
}

/// What an operation answered.
#[derive(Debug, Clone)]
pub enum OpResult {
    /// Appended at these offsets.
    Appended(Appended),
    /// A fresh producer id.
    ProducerId(i64),
    /// A transactional producer's id and epoch.
    Transactional(i64, i16),
    /// Done.
    Done,
    /// Per-partition error codes of a commit.
    Committed(Vec<i16>),
    /// A JoinGroup answer.
    Joined(JoinReply),
    /// A SyncGroup answer.
    Synced(SyncReply),
    /// A KIP-848 heartbeat answer.
    Beat(HeartbeatReply),
    /// Failed with a Kafka error.
    Refused(ResponseError),
    /// Refused by the partition: the batch's sequence does not follow.
    OutOfOrder(String),
    /// Failed in the partition layer otherwise.
    Failed(String),
}

/// A data batch from client `client`'s `counter`-th send: 1 to 4 records.
pub fn data_batch(rng: &mut SimRng, client: usize, counter: u64, now_ms: i64) -> (Vec<u8>, i32) {
    let count = rng.between(1, 4) as usize;
    let records: Vec<TestRecord> = (0..count)
        .map(|i| {
            let mut value = format!("c{client}-n{counter}-r{i}-").into_bytes();
            let pad = rng.below(120) as usize;
            value.extend((0..pad).map(|b| (b as u8) ^ (counter as u8)));
            TestRecord {
                key: Some(format!("k{}", rng.below(8)).into_bytes()),
                value: Some(value),
                timestamp_delta: i as i64,
            }
        })
        .collect();
    (batch(now_ms, &records), count as i32)
}

/// `bytes` as producer (id, epoch)'s batch from `sequence`.
pub fn as_producer(mut bytes: Vec<u8>, producer_id: i64, epoch: i16, sequence: i32, transactional: bool) -> Vec<u8> {
    let attributes = if transactional { ATTR_TRANSACTIONAL } else { 0 };
    set_producer(&mut bytes, producer_id, epoch, sequence, attributes);
    bytes
}

/// The `__consumer_offsets` partition of `group`.
pub fn offsets_partition(group: &str) -> i32 {
    partition_for(group, INTERNAL_PARTITIONS)
}

/// The topic KIP-848 members subscribe to.
fn topics_view() -> TopicsView {
    [(DATA_TOPIC.to_string(), (uuid::Uuid::from_u128(0xda7a), DATA_PARTITIONS))].into_iter().collect()
}

fn no_regex(_: &str, _: &str) -> bool {
    false
}

/// Runs `op` of `client` against `node`.
pub async fn run(node: Rc<SimNode>, client: Client, op: Op) -> OpResult {
    match (op, client) {
        (Op::Append { batch, durability }, _) => append(&node, batch, durability, AppendOrigin::Client).await,
        (Op::ProduceInTxn { batch }, Client::Transactional { id, .. }) => produce_in_txn(&node, batch, &id).await,
        (Op::InitProducerId, _) => match node.ids().allocate().await {
            Ok(id) => OpResult::ProducerId(id),
            Err(error) => OpResult::Refused(error),
        },
        (Op::InitTransactional, Client::Transactional { id, .. }) => {
            let (ids, markers) = (node.ids(), node.markers());
            match node.txns.init_producer(node.txn_coordinator(&id), &id, TXN_TIMEOUT_MS, None, &ids, &markers).await {
                Ok((producer_id, epoch)) => OpResult::Transactional(producer_id, epoch),
                Err(error) => OpResult::Refused(error),
            }
        }
        (Op::AddToTxn { partitions }, Client::Transactional { id, producer: Some((pid, epoch)), .. }) => {
            done(node.txns.add_partitions(node.txn_coordinator(&id), &id, pid, epoch, &partitions, true).await)
        }
        (Op::EndTxn { commit }, Client::Transactional { id, producer: Some((pid, epoch)), .. }) => {
            let markers = node.markers();
            done(node.txns.end(node.txn_coordinator(&id), &id, pid, epoch, commit, true, &markers).await)
        }
        (Op::CommitInTxn { group, partition, offset }, Client::Transactional { producer: Some(producer), .. }) => {
            commit(&node, &group, partition, offset, Some(producer)).await
        }
        (Op::Commit { partition, offset }, Client::Committer { group }) => {
            commit(&node, &group, partition, offset, None).await
        }
        (
            op @ (Op::Join | Op::Sync | Op::Heartbeat | Op::Leave),
            Client::ClassicMember { group, member_id, generation, leader_of, .. },
        ) => classic(&node, op, &group, member_id, generation, leader_of).await,
        (Op::ConsumerHeartbeat { leave }, Client::ConsumerMember { group, member_id, epoch, owned }) => {
            let heartbeat = Heartbeat {
                member_id,
                member_epoch: if leave { -1 } else { epoch },
                rebalance_timeout_ms: 5_000,
                subscribed_topic_names: (epoch == 0).then(|| vec![DATA_TOPIC.to_string()]),
                owned: Some(owned),
                client_id: "sim".into(),
                client_host: "/sim".into(),
                ..Heartbeat::default()
            };
            let at = node.offsets_coordinator(&group);
            match node.groups.consumer_heartbeat(at, &group, heartbeat, &topics_view(), &no_regex).await {
                Ok(reply) => OpResult::Beat(reply),
                Err(error) => OpResult::Refused(error),
            }
        }
        (op, client) => OpResult::Failed(format!("no such operation {op:?} for {client:?}")),
    }
}

fn done(result: Result<(), ResponseError>) -> OpResult {
    match result {
        Ok(()) => OpResult::Done,
        Err(error) => OpResult::Refused(error),
    }
}

async fn append(node: &SimNode, batch: SentBatch, durability: Option<Durability>, origin: AppendOrigin) -> OpResult {
    let Some(replica) = node.replica(DATA_TOPIC, batch.partition) else {
        return OpResult::Failed("no partition".into());
    };
    let now = node.now_ms();
    let appended = match replica.partition.append_as_leader(BytesMut::from(&batch.bytes[..]), origin, 0, now).await {
        Ok(appended) => appended,
        Err(error @ PartitionError::OutOfOrderSequence { .. }) => return OpResult::OutOfOrder(error.to_string()),
        Err(error) => return OpResult::Failed(error.to_string()),
    };
    if let Some(durability) = durability {
        if let Err(error) = replica.partition.wait_until(appended.end_offset(), durability).await {
            return OpResult::Failed(error.to_string());
        }
    }
    OpResult::Appended(appended)
}

/// A transactional batch through the produce path's verification with the
/// coordinator (KIP-890 part 1), acknowledged once durable.
async fn produce_in_txn(node: &SimNode, batch: SentBatch, transactional_id: &str) -> OpResult {
    let Some(replica) = node.replica(DATA_TOPIC, batch.partition) else {
        return OpResult::Failed("no partition".into());
    };
    let records = BytesMut::from(&batch.bytes[..]);
    let verifier = node.verifier();
    let now = node.now_ms();
    let appended = match append_client_batch(
        &replica,
        DATA_TOPIC,
        batch.partition,
        records,
        Some(transactional_id),
        &verifier,
        now,
    )
    .await
    .map_err(|error| error.code)
    {
        Ok(appended) => appended,
        Err(ResponseError::OutOfOrderSequenceNumber) => return OpResult::OutOfOrder("out of order".into()),
        Err(error) => return OpResult::Refused(error),
    };
    match replica.partition.wait_until(appended.end_offset(), Durability::Durable).await {
        Ok(()) => OpResult::Appended(appended),
        Err(error) => OpResult::Failed(error.to_string()),
    }
}

async fn commit(node: &SimNode, group: &str, partition: i32, offset: i64, txn: Option<(i64, i16)>) -> OpResult {
    let ask = CommitAsk {
        group_id: group.to_string(),
        member_id: String::new(),
        instance_id: None,
        generation: -1,
        check_member: txn.is_none(),
        consumer_groups_allowed: true,
        offsets: vec![(
            DATA_TOPIC.to_string(),
            vec![CommitAsked { partition, offset, leader_epoch: -1, metadata: Some("sim".into()) }],
        )],
    };
    let exists = |topic: &str, p: i32| topic == DATA_TOPIC && (0..DATA_PARTITIONS).contains(&p);
    match node.groups.commit_offsets(node.offsets_coordinator(group), ask, txn, &exists).await {
        Ok(codes) => OpResult::Committed(codes.into_iter().flatten().collect()),
        Err(error) => OpResult::Refused(error),
    }
}

async fn classic(
    node: &SimNode,
    op: Op,
    group: &str,
    member_id: String,
    generation: Option<i32>,
    members: Vec<String>,
) -> OpResult {
    let at = node.offsets_coordinator(group);
    let generation = generation.unwrap_or(-1);
    match op {
        Op::Join => {
            let join = Join {
                token: 0,
                member_id,
                instance_id: None,
                client_id: "sim".into(),
                client_host: "/sim".into(),
                session_timeout_ms: 6_000,
                rebalance_timeout_ms: 3_000,
                protocol_type: "consumer".into(),
                protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
                require_known_member_id: true,
                supports_skip_assignment: false,
            };
            match node.groups.join(at, group, join).await {
                Ok(reply) => OpResult::Joined(reply),
                Err(error) => OpResult::Refused(error),
            }
        }
        Op::Sync => {
            let assignments = members.iter().map(|m| (m.clone(), Bytes::from(format!("assigned-{m}")))).collect();
            let ask = SyncAsk {
                member_id,
                instance_id: None,
                generation,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                assignments,
            };
            match node.groups.sync(at, group, ask).await {
                Ok(reply) => OpResult::Synced(reply),
                Err(error) => OpResult::Refused(error),
            }
        }
        Op::Heartbeat => done(node.groups.heartbeat(at, group, &member_id, None, generation).await),
        _ => match node.groups.leave(at, group, &[(member_id, None)]).await {
            Ok(errors) => errors.into_iter().flatten().next().map_or(OpResult::Done, OpResult::Refused),
            Err(error) => OpResult::Refused(error),
        },
    }
}
