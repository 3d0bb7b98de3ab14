//! A small committed metadata image for the handlers' unit tests.

use shardline_replication::metadata::image::{MetadataImage, NO_LEADER};
use shardline_replication::metadata::records::{Endpoint, MetadataRecord, RecordBatch};
use uuid::Uuid;

/// Brokers 1 (live) and 2 (fenced); topics "a" (3 partitions, led by
/// 1, 2 and nobody) and "b" (2 partitions, led by 1).
pub fn image() -> MetadataImage {
    let mut records = Vec::new();
    for (broker_id, fenced) in [(1, false), (2, true)] {
        records.push(MetadataRecord::RegisterBroker {
            broker_id,
            incarnation_id: Uuid::from_u128(broker_id as u128),
            broker_epoch: 1,
            endpoints: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9090 + broker_id as u16,
                security_protocol: "PLAINTEXT".into(),
            }],
            rack: None,
            fenced,
            registered_offset: None,
        });
    }
    for (name, leaders) in [("a", vec![1, 2, NO_LEADER]), ("b", vec![1, 1])] {
        let topic_id = Uuid::from_u128(u128::from(name.as_bytes()[0]));
        records.push(MetadataRecord::Topic { name: name.into(), topic_id });
        for (partition, leader) in leaders.into_iter().enumerate() {
            let replicas = if leader == NO_LEADER { vec![2] } else { vec![leader] };
            records.push(MetadataRecord::Partition {
                topic_id,
                partition: partition as i32,
                isr: replicas.clone(),
                elr: vec![],
                replicas,
                leader,
                leader_epoch: 3,
                partition_epoch: 4,
            });
        }
    }
    MetadataImage::default().applied(1, &RecordBatch::of(records)).expect("a valid image")
}
