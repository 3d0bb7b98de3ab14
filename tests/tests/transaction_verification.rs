//! KIP-890 part 1 on the wire (raw client, exact error codes): a
//! transactional batch for a partition the producer never added to its
//! transaction, and one sent after its transaction was aborted, are
//! refused with INVALID_TXN_STATE, so neither leaves a transaction hanging
//! (the last stable offset reaches the high watermark).

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use shardline_engine::format::batch::build::{set_producer, simple_batch};
use shardline_engine::format::batch::ATTR_TRANSACTIONAL;
use shardline_tests::{Broker, RawClient};

const TXN: &str = "tx-verify";

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn txn_batch(producer_id: i64, epoch: i16, sequence: i32) -> Bytes {
    let mut batch = simple_batch(1_000, 2, 10);
    set_producer(&mut batch, producer_id, epoch, sequence, ATTR_TRANSACTIONAL);
    Bytes::from(batch)
}

fn produce(client: &mut RawClient, partition: i32, records: Bytes) -> i16 {
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = name("v");
    t.partition_data = vec![p];
    let mut request = ProduceRequest::default();
    request.transactional_id = Some(TransactionalId(StrBytes::from_static_str(TXN)));
    request.acks = -1;
    request.timeout_ms = 10_000;
    request.topic_data = vec![t];
    let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
    response.responses[0].partition_responses[0].error_code
}

fn latest(client: &mut RawClient, partition: i32, isolation: i8) -> i64 {
    list_offset(client, partition, -1, isolation)
}

fn by_timestamp(client: &mut RawClient, timestamp: i64, isolation: i8) -> i64 {
    list_offset(client, 0, timestamp, isolation)
}

fn list_offset(client: &mut RawClient, partition: i32, timestamp: i64, isolation: i8) -> i64 {
    client.list_offset("v", partition, timestamp, isolation).offset
}

#[test]
fn batches_outside_the_open_transaction_are_refused() {
    let broker = Broker::start(&["--set", "auto_create_topics_enable=false"]);
    let mut client = RawClient::connect(&broker.address);
    let mut topic = CreatableTopic::default();
    topic.name = name("v");
    topic.num_partitions = 2;
    topic.replication_factor = 1;
    let mut create = CreateTopicsRequest::default();
    create.topics = vec![topic];
    create.timeout_ms = 10_000;
    let created: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &create);
    assert_eq!(created.topics[0].error_code, 0);

    let mut init = InitProducerIdRequest::default();
    init.transactional_id = Some(TransactionalId(StrBytes::from_static_str(TXN)));
    init.transaction_timeout_ms = 60_000;
    init.producer_id = ProducerId(-1);
    init.producer_epoch = -1;
    let initialized: InitProducerIdResponse = client.call(ApiKey::InitProducerId, 4, &init);
    assert_eq!(initialized.error_code, 0);
    let (producer_id, epoch) = (initialized.producer_id.0, initialized.producer_epoch);

    let mut add = AddPartitionsToTxnRequest::default();
    add.v3_and_below_transactional_id = TransactionalId(StrBytes::from_static_str(TXN));
    add.v3_and_below_producer_id = ProducerId(producer_id);
    add.v3_and_below_producer_epoch = epoch;
    let mut added = AddPartitionsToTxnTopic::default();
    added.name = name("v");
    added.partitions = vec![0];
    add.v3_and_below_topics = vec![added];
    let response: AddPartitionsToTxnResponse = client.call(ApiKey::AddPartitionsToTxn, 3, &add);
    assert_eq!(response.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, 0);

    assert_eq!(produce(&mut client, 0, txn_batch(producer_id, epoch, 0)), 0, "the added partition takes the batch");
    assert_eq!(
        produce(&mut client, 1, txn_batch(producer_id, epoch, 0)),
        ResponseError::InvalidTxnState.code(),
        "partition 1 was never added to the transaction"
    );
    assert_eq!(produce(&mut client, 0, txn_batch(producer_id, epoch, 2)), 0, "more of the open transaction");
    // Lookups by timestamp see only what the isolation level may read.
    assert_eq!(by_timestamp(&mut client, 1_000, 0), 0, "read_uncommitted finds the open transaction's record");
    assert_eq!(by_timestamp(&mut client, 1_000, 1), -1, "read_committed does not look past the LSO");
    assert_eq!(by_timestamp(&mut client, -3, 1), -1, "nor does the max timestamp lookup");

    let mut end = EndTxnRequest::default();
    end.transactional_id = TransactionalId(StrBytes::from_static_str(TXN));
    end.producer_id = ProducerId(producer_id);
    end.producer_epoch = epoch;
    end.committed = false;
    let ended: EndTxnResponse = client.call(ApiKey::EndTxn, 3, &end);
    assert_eq!(ended.error_code, 0);
    assert_eq!(
        produce(&mut client, 0, txn_batch(producer_id, epoch, 4)),
        ResponseError::InvalidTxnState.code(),
        "a batch after its transaction was aborted"
    );
    for partition in [0, 1] {
        let (stable, high) = (latest(&mut client, partition, 1), latest(&mut client, partition, 0));
        assert_eq!(stable, high, "partition {partition}: nothing hangs (LSO {stable}, HW {high})");
    }
    assert_eq!(latest(&mut client, 1, 0), 0, "nothing was written to partition 1");
}
