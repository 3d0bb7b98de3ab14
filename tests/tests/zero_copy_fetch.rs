//! Fetch responses are byte-identical whichever way their records travel:
//! spliced from resident segment pages, copied from a cold file, or shared
//! from the batch cache. Three brokers hold the same batches: one splices
//! (small batch cache, `fetch_splice` on), one copies (`fetch_splice`
//! off), one serves everything from a large batch cache. Raw Fetch v4 and
//! v12 frames, from offset 0 and from inside a batch with a partition max
//! below the batch size, cold and then resident, must match exactly. The
//! splicing broker opens its splice pipe (two more pipe descriptors) only
//! once pages are resident, and the copying broker never does.

use std::os::fd::AsRawFd;
use std::path::Path;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, FetchRequest, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use shardline_engine::format::batch::build::simple_batch;
use shardline_tests::{Broker, RawClient};

const TOPIC: &str = "zero-copy";
const BATCHES: usize = 30;
const RECORDS: usize = 20;
const VALUE_BYTES: usize = 1000;

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

fn fill(broker: &Broker) {
    let mut client = RawClient::connect(&broker.address);
    client.create_topic(TOPIC, 1);
    for i in 0..BATCHES {
        let mut p = PartitionProduceData::default();
        p.index = 0;
        p.records = Some(Bytes::from(simple_batch(1_000 + i as i64, RECORDS, VALUE_BYTES)));
        let mut data = TopicProduceData::default();
        data.name = topic_name();
        data.partition_data = vec![p];
        let mut request = ProduceRequest::default();
        request.acks = -1;
        request.timeout_ms = 30_000;
        request.topic_data = vec![data];
        let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    }
}

/// Drops the partition's segment pages from the page cache.
fn drop_pages(broker: &Broker) {
    let dir = broker.data_dir.join(format!("{TOPIC}-0"));
    for entry in std::fs::read_dir(&dir).expect("partition dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            let file = std::fs::File::open(&path).expect("segment");
            // SAFETY: advice on an open descriptor.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
}

fn pipes(broker: &Broker) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", broker.pid()))
        .expect("fd list")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count()
}

/// One raw Fetch frame (without its size prefix), sessionless.
fn fetch_frame(client: &mut RawClient, version: i16, offset: i64, partition_max: i32) -> Bytes {
    let mut partition = FetchPartition::default();
    partition.partition = 0;
    partition.fetch_offset = offset;
    partition.partition_max_bytes = partition_max;
    let mut topic = FetchTopic::default();
    topic.topic = topic_name();
    topic.partitions = vec![partition];
    let mut request = FetchRequest::default();
    request.max_wait_ms = 0;
    request.min_bytes = 1;
    request.max_bytes = 50 << 20;
    request.session_epoch = -1;
    request.topics = vec![topic];
    client.send_request(ApiKey::Fetch, version, &request);
    client.read_frame().expect("a fetch response")
}

/// The fetches compared, as (version, offset, partition max bytes).
const FETCHES: [(i16, i64, i32); 4] = [(12, 0, 100_000), (4, 0, 100_000), (12, 45, 100), (4, 400, 300_000)];

/// Asserts two frames are equal, naming the first difference (not printing
/// the frames).
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    let first_difference = got.iter().zip(want).position(|(a, b)| a != b);
    assert!(
        got == want,
        "{what}: {} bytes against {}, first difference at {first_difference:?}",
        got.len(),
        want.len()
    );
}

fn residency_is_reported(dir: &Path) -> bool {
    let path = dir.join("probe");
    std::fs::write(&path, vec![1u8; 8192]).expect("probe file");
    let file = std::fs::File::open(&path).expect("open probe");
    shardline_engine::storage::page_cache::is_resident(&file, 0, 8192)
}

#[test]
fn spliced_copied_and_cached_fetches_are_byte_identical() {
    let small_cache = "batch_cache_bytes=65536";
    let splicing = Broker::start(&["--shards", "1", "--set", small_cache]);
    let copying = Broker::start(&["--shards", "1", "--set", small_cache, "--set", "fetch_splice=false"]);
    let cached = Broker::start(&["--shards", "1"]);
    if !residency_is_reported(splicing.data_dir.parent().expect("temp dir")) {
        eprintln!("skipped: cachestat(2) is not available here");
        return;
    }
    let brokers = [&splicing, &copying, &cached];
    for broker in brokers {
        fill(broker);
        drop_pages(broker);
    }
    let mut clients: Vec<RawClient> = brokers.iter().map(|b| RawClient::connect(&b.address)).collect();
    let pipes_before: Vec<usize> = brokers.iter().map(|b| pipes(b)).collect();

    // Cold: the first fetch copies everywhere.
    let (version, offset, max) = FETCHES[0];
    let cold: Vec<Bytes> = clients.iter_mut().map(|c| fetch_frame(c, version, offset, max)).collect();
    assert!(cold[0].len() > 2 * RECORDS * VALUE_BYTES, "records came back");
    assert_same(&cold[0], &cold[2], "cold copy = cache");
    assert_same(&cold[1], &cold[2], "copying broker = cache");
    let pipes_cold: Vec<usize> = brokers.iter().map(|b| pipes(b)).collect();
    assert_eq!(pipes_cold, pipes_before, "nothing is spliced from cold pages");

    // Every fetch twice: after the first, the pages it read are resident.
    for round in 0..2 {
        for (version, offset, max) in FETCHES {
            let frames: Vec<Bytes> = clients.iter_mut().map(|c| fetch_frame(c, version, offset, max)).collect();
            let what = format!("round {round}: v{version} at {offset} max {max}");
            assert!(frames[2].len() > RECORDS * VALUE_BYTES, "{what}: records came back");
            assert_same(&frames[0], &frames[2], &format!("{what}: splicing broker = cache"));
            assert_same(&frames[1], &frames[2], &format!("{what}: copying broker = cache"));
        }
    }
    let pipes_after: Vec<usize> = brokers.iter().map(|b| pipes(b)).collect();
    assert_eq!(pipes_after[0], pipes_before[0] + 2, "the splicing broker spliced (its connection's pipe)");
    assert_eq!(pipes_after[1], pipes_before[1], "fetch_splice=false never splices");
    assert_eq!(pipes_after[2], pipes_before[2], "cached batches are never spliced");
}
