//! Bad input on raw sockets: truncated frames, a 2 GiB length prefix,
//! unknown API keys, random bytes, a request whose array count claims more
//! elements than bytes remain. Each closes only its own connection (EOF or
//! reset, seen well within the helper's read timeout: a broker that hangs
//! fails), the broker keeps answering, its memory stays within what it is
//! configured to hold, a normal client still works afterwards, and the
//! "closing connection" lines stay bounded.

use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use shardline_tests::{Broker, RawClient};

fn header(key: i16, version: i16, correlation: i32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&key.to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&correlation.to_be_bytes());
    out.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    out
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// The broker's memory settings in this test: request frames and the
/// per-shard batch cache, small so that the bound below is tight.
const SHARDS: u64 = 2;
const REQUEST_MAX_BYTES: u64 = 1 << 20;
const BATCH_CACHE_BYTES: u64 = 4 << 20;

#[test]
fn malformed_frames_close_only_their_connection() {
    let mut broker = Broker::start(&[
        "--shards",
        &SHARDS.to_string(),
        "--set",
        &format!("socket_request_max_bytes={REQUEST_MAX_BYTES}"),
        "--set",
        &format!("batch_cache_bytes={BATCH_CACHE_BYTES}"),
    ]);
    let rss_before = broker.rss_kib();
    let flood_started = Instant::now();
    // A healthy connection that must survive everything below.
    let mut healthy = RawClient::connect(&broker.address);
    let _: ApiVersionsResponse = healthy.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());

    // 2 GiB length prefix.
    let mut c = RawClient::connect(&broker.address);
    c.send_raw(&0x7fff_ffffu32.to_be_bytes()).expect("send");
    assert!(c.is_closed(), "oversized frame closes the connection");
    // Negative length.
    let mut c = RawClient::connect(&broker.address);
    c.send_raw(&(-5i32).to_be_bytes()).expect("send");
    assert!(c.is_closed());
    // Unknown API key.
    let mut c = RawClient::connect(&broker.address);
    c.send_raw(&framed(&header(999, 0, 1))).expect("send");
    assert!(c.is_closed(), "unknown API key closes the connection");
    // Known API, unsupported version (not ApiVersions).
    let mut c = RawClient::connect(&broker.address);
    c.send_raw(&framed(&header(0, 99, 1))).expect("send");
    assert!(c.is_closed());
    // Truncated frame: claims 100 bytes, sends 10, then closes its write side.
    let mut c = RawClient::connect(&broker.address);
    let mut partial = 100i32.to_be_bytes().to_vec();
    partial.extend_from_slice(&header(18, 0, 1));
    c.send_raw(&partial).expect("send");
    assert!(c.closes_after_sending(), "a frame cut short closes the connection");
    // Metadata v1 whose topic array claims 2^31-1 entries in 4 bytes.
    let mut c = RawClient::connect(&broker.address);
    let mut body = header(3, 1, 7);
    body.extend_from_slice(&i32::MAX.to_be_bytes());
    c.send_raw(&framed(&body)).expect("send");
    assert!(c.is_closed(), "an impossible array count is a malformed request");
    // Produce v9 (flexible) with a compact string claiming ~4 GiB.
    let mut c = RawClient::connect(&broker.address);
    let mut body = Vec::new();
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&9i16.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes());
    body.push(0); // header tagged fields
    body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // transactional id length
    c.send_raw(&framed(&body)).expect("send");
    assert!(c.is_closed());
    // Random garbage, seeded: whatever it decodes to, the connection ends
    // (answered or not) once the peer stops sending, and nothing else is hurt.
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for round in 0..200 {
        let mut c = RawClient::connect(&broker.address);
        let len = rng.gen_range(1..512);
        let garbage: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let _ = c.send_raw(&garbage);
        assert!(c.closes_after_sending(), "garbage round {round}: the broker neither closed nor finished");
        let _: ApiVersionsResponse = healthy.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    }
    // Random bodies behind valid-looking headers of every supported API.
    for round in 0..300 {
        let mut c = RawClient::connect(&broker.address);
        let (key, version) =
            [(0i16, 9i16), (1, 12), (2, 7), (3, 12), (18, 4), (19, 7), (20, 5), (0, 3), (1, 4), (3, 0)]
                [rng.gen_range(0..10)];
        let mut body = header(key, version, 1);
        body.extend((0..rng.gen_range(0..256)).map(|_| rng.gen::<u8>()));
        let _ = c.send_raw(&framed(&body));
        assert!(c.closes_after_sending(), "random body round {round} ({key} v{version}): no answer and no close");
        let _: ApiVersionsResponse = healthy.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    }
    assert!(broker.is_running(), "the broker survives bad input");
    // What the broker holds for bad connections is bounded by its settings:
    // each shard's batch cache, plus at most one request frame per open
    // connection (here one at a time, with the body buffer's doubling), plus
    // 32 MiB for the allocator's arenas and the connections' task stacks.
    let rss_after = broker.rss_kib();
    let bound_kib = (SHARDS * BATCH_CACHE_BYTES + 2 * 2 * REQUEST_MAX_BYTES + (32 << 20)) / 1024;
    assert!(
        rss_after < rss_before + bound_kib,
        "memory stayed within the configured bound: {rss_before} KiB -> {rss_after} KiB (bound +{bound_kib} KiB)"
    );
    let _: ApiVersionsResponse = healthy.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let client: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &broker.address).create().expect("client");
    let metadata = client.fetch_metadata(None, Duration::from_secs(10)).expect("a normal client still works");
    assert_eq!(metadata.brokers().len(), 1);
    // Some 500 connections closed for bad input: each shard logged at most
    // ten lines per ten-second window of them. Once a window has passed, the
    // next bad connections' lines say how many were left out.
    let windows = flood_started.elapsed().as_secs() / 10 + 2;
    std::thread::sleep(Duration::from_secs(11).saturating_sub(flood_started.elapsed()));
    for _ in 0..4 {
        let mut c = RawClient::connect(&broker.address);
        c.send_raw(&(-5i32).to_be_bytes()).expect("send");
        assert!(c.is_closed());
    }
    std::thread::sleep(Duration::from_millis(200));
    let log = broker.stderr();
    let closing: Vec<&str> = log.lines().filter(|l| l.contains("closing connection")).collect();
    let bound = SHARDS as usize * 10 * windows as usize;
    assert!(closing.len() <= bound, "closing-connection lines are rate-limited: {} > {bound}", closing.len());
    let reported: u64 = closing
        .iter()
        .filter_map(|l| l.split("suppressed=").nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(reported > 0, "the lines left out are counted: {closing:?}");
}
