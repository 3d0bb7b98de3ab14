//! Criterion micro-benchmarks of the per-request hot paths: batch
//! validation with CRC32C, in-place offset assignment, Produce request
//! decoding (kafka-protocol, bounded), and Fetch response assembly and
//! encoding with 1 MiB of batches.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchResponse, ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use shardline_engine::format::batch::{assign_offsets, build::simple_batch, validate_batch};

fn batches(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch");
    group.measurement_time(Duration::from_secs(3));
    for (name, records, value) in [("1KiB", 1usize, 960usize), ("16KiB", 16, 1000), ("1MiB", 64, 16_300)] {
        let batch = simple_batch(0, records, value);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_with_input(BenchmarkId::new("validate_crc32c", name), &batch, |b, batch| {
            b.iter(|| validate_batch(std::hint::black_box(batch), true).expect("valid"))
        });
        let mut owned = batch.clone();
        group.bench_function(BenchmarkId::new("assign_offsets", name), |b| {
            let mut next = 0i64;
            b.iter(|| {
                assign_offsets(&mut owned, next, 3);
                next += records as i64;
            })
        });
    }
    group.finish();
}

fn produce_request(partitions: i32, batch: &[u8]) -> Bytes {
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 30_000;
    let mut topic = TopicProduceData::default();
    topic.name = TopicName(StrBytes::from_static_str("bench-topic"));
    topic.partition_data = (0..partitions)
        .map(|index| {
            let mut p = PartitionProduceData::default();
            p.index = index;
            p.records = Some(Bytes::copy_from_slice(batch));
            p
        })
        .collect();
    request.topic_data = vec![topic];
    let mut out = BytesMut::new();
    request.encode(&mut out, 9).expect("encode");
    out.freeze()
}

fn protocol(c: &mut Criterion) {
    let mut group = c.benchmark_group("protocol");
    group.measurement_time(Duration::from_secs(3));
    let batch = simple_batch(0, 16, 1000);
    for partitions in [1, 16] {
        let frame = produce_request(partitions, &batch);
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(BenchmarkId::new("decode_produce_v9", partitions), &frame, |b, frame| {
            b.iter(|| {
                let mut bytes = frame.clone();
                ProduceRequest::decode(&mut bytes, 9).expect("decode")
            })
        });
    }
    let records = Bytes::from(vec![7u8; 1 << 20]);
    group.throughput(Throughput::Bytes(records.len() as u64 * 4));
    group.bench_function("assemble_and_encode_fetch_v12_4x1MiB", |b| {
        b.iter(|| {
            let mut response = FetchResponse::default();
            let mut topic = FetchableTopicResponse::default();
            topic.topic = TopicName(StrBytes::from_static_str("bench-topic"));
            topic.partitions = (0..4)
                .map(|index| {
                    let mut p = PartitionData::default();
                    p.partition_index = index;
                    p.high_watermark = 1_000;
                    p.last_stable_offset = 1_000;
                    p.records = Some(records.clone());
                    p
                })
                .collect();
            response.responses = vec![topic];
            let mut out = BytesMut::with_capacity(4 << 20);
            response.encode(&mut out, 12).expect("encode");
            out
        })
    });
    group.finish();
}

criterion_group!(hot_paths, batches, protocol);
criterion_main!(hot_paths);
