//! Connections and the resources they may hold, over raw sockets:
//! `max_connections` (new connections wait until one closes),
//! `max_connections_per_ip` and its overrides (one more is closed),
//! `connections_max_idle_ms`, the small cap on a connection's first request,
//! and request buffers that grow with the bytes that arrive rather than the
//! size a frame declares.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use shardline_engine::format::batch::build::simple_batch;
use shardline_tests::{Broker, RawClient};

fn api_versions(client: &mut RawClient) {
    let response: ApiVersionsResponse = client.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(response.error_code, 0);
}

/// Connects until the broker answers ApiVersions (a place frees only once
/// the broker has seen the close of an earlier connection), at most 5 s.
fn connect_when_admitted(address: &str) -> RawClient {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut client = RawClient::connect(address);
        client.send_request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        if client.read_frame().is_some() {
            return client;
        }
        assert!(Instant::now() < deadline, "no place freed within 5 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn produce_request(topic: &str, value_bytes: usize) -> ProduceRequest {
    let mut partition = PartitionProduceData::default();
    partition.index = 0;
    partition.records = Some(Bytes::from(simple_batch(1_000, 1, value_bytes)));
    let mut data = TopicProduceData::default();
    data.name = TopicName(StrBytes::from_string(topic.into()));
    data.partition_data = vec![partition];
    let mut request = ProduceRequest::default();
    request.acks = 1;
    request.timeout_ms = 10_000;
    request.topic_data = vec![data];
    request
}

#[test]
fn one_connection_over_an_address_limit_is_closed() {
    // The override for 127.0.0.1 (where the test connects from) wins over the default.
    let broker = Broker::start(&[
        "--shards",
        "1",
        "--set",
        "max_connections_per_ip=100",
        "--set",
        "max_connections_per_ip_overrides=127.0.0.1:3",
    ]);
    let mut open: Vec<RawClient> = (0..3).map(|_| RawClient::connect(&broker.address)).collect();
    for client in &mut open {
        api_versions(client);
    }
    let mut extra = RawClient::connect(&broker.address);
    assert!(extra.is_closed(), "a fourth connection from the address is closed");
    for client in &mut open {
        api_versions(client);
    }
    open.pop();
    let mut again = connect_when_admitted(&broker.address);
    api_versions(&mut again);
}

#[test]
fn at_max_connections_a_new_one_waits_for_a_close() {
    let broker = Broker::start(&["--shards", "1", "--set", "max_connections=2"]);
    let mut first = RawClient::connect(&broker.address);
    let mut second = RawClient::connect(&broker.address);
    api_versions(&mut first);
    api_versions(&mut second);
    // The third is left in the listen backlog: connected, but unanswered.
    let mut third = RawClient::connect(&broker.address);
    third.send_request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    third.set_read_timeout(Duration::from_secs(1));
    assert!(third.is_silent(), "the broker does not serve a connection over max_connections");
    api_versions(&mut second);
    drop(first);
    third.set_read_timeout(RawClient::READ_TIMEOUT);
    let answer: ApiVersionsResponse = third.read_response(3);
    assert_eq!(answer.error_code, 0, "once a connection closed, the waiting one is served");
}

#[test]
fn idle_connections_are_closed() {
    let broker = Broker::start(&["--shards", "1", "--set", "connections_max_idle_ms=1000"]);
    let mut idle = RawClient::connect(&broker.address);
    api_versions(&mut idle);
    let mut stalled = RawClient::connect(&broker.address);
    stalled.send_raw(&100i32.to_be_bytes()).expect("a frame that never completes");
    let mut busy = RawClient::connect(&broker.address);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2_500) {
        api_versions(&mut busy);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(idle.is_closed(), "a connection silent past connections_max_idle_ms is closed");
    assert!(stalled.is_closed(), "so is one that stalls mid-frame");
    api_versions(&mut busy);
}

#[test]
fn a_connections_first_request_is_small_until_one_is_answered() {
    let broker = Broker::start(&["--shards", "1"]);
    let mut setup = RawClient::connect(&broker.address);
    let mut metadata = MetadataRequest::default();
    let mut topic = MetadataRequestTopic::default();
    topic.name = Some(TopicName(StrBytes::from_static_str("big-first")));
    metadata.topics = Some(vec![topic]);
    metadata.allow_auto_topic_creation = true;
    let created: MetadataResponse = setup.call(ApiKey::Metadata, 12, &metadata);
    assert_eq!(created.topics[0].error_code, 0, "the topic is auto-created");
    let request = produce_request("big-first", 600 * 1024);
    let mut cold = RawClient::connect(&broker.address);
    // The broker closes on the frame's size, so the rest of the write may be
    // reset; either way the connection must be closed.
    if let Err(error) = cold.try_send_request(ApiKey::Produce, 9, &request) {
        assert!(shardline_tests::is_reset(&error), "{error}");
    }
    assert!(cold.is_closed(), "a 600 KiB first request is refused (the cap is 512 KiB)");
    let mut warm = RawClient::connect(&broker.address);
    api_versions(&mut warm);
    warm.send_request(ApiKey::Produce, 9, &request);
    let answer: ProduceResponse = warm.read_response(9);
    let partition = &answer.responses[0].partition_responses[0];
    assert_eq!((partition.error_code, partition.base_offset), (0, 0), "after ApiVersions the same produce lands");
}

#[test]
fn request_buffers_grow_with_the_bytes_that_arrive() {
    // Each connection declares a frame of almost socket_request_max_bytes
    // (100 MiB) and sends 64 KiB of it. Reserved up front that would be
    // 6.4 GiB of address space; grown as bytes arrive, about 128 KiB each.
    let mut broker = Broker::start(&["--shards", "1"]);
    let mut warm: Vec<RawClient> = (0..64).map(|_| RawClient::connect(&broker.address)).collect();
    for client in &mut warm {
        api_versions(client);
    }
    let before = broker.vm_size_kib();
    let declared = (100 << 20) - 1i32;
    for client in &mut warm {
        let mut partial = declared.to_be_bytes().to_vec();
        partial.extend(std::iter::repeat_n(0u8, 64 * 1024));
        client.send_raw(&partial).expect("send");
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = broker.vm_size_kib();
    assert!(after < before + 256 * 1024, "address space grew {before} KiB -> {after} KiB for 4 MiB received");
    let mut other = RawClient::connect(&broker.address);
    api_versions(&mut other);
    drop(warm);
    assert!(broker.is_running());
}
