//! Bad input on raw sockets: truncated frames, a 2 GiB length prefix,
//! unknown API keys, random bytes, a request whose array count claims more
//! elements than bytes remain. Each closes only its own connection; the
//! broker stays up, its memory stays bounded, and a normal client still
//! works afterwards.

use std::time::Duration;

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

#[test]
fn malformed_frames_close_only_their_connection() {
    let mut broker = Broker::start(&["--shards", "2"]);
    let rss_before = broker.rss_kib();
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
    drop(c);
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
    // Random garbage, seeded.
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for _ in 0..200 {
        let mut c = RawClient::connect(&broker.address);
        let len = rng.gen_range(1..512);
        let garbage: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let _ = c.send_raw(&garbage);
    }
    // Random bodies behind valid-looking headers of every supported API.
    for _ in 0..300 {
        let mut c = RawClient::connect(&broker.address);
        let (key, version) =
            [(0i16, 9i16), (1, 12), (2, 7), (3, 12), (18, 4), (19, 7), (20, 5), (0, 3), (1, 4), (3, 0)]
                [rng.gen_range(0..10)];
        let mut body = header(key, version, 1);
        body.extend((0..rng.gen_range(0..256)).map(|_| rng.gen::<u8>()));
        let _ = c.send_raw(&framed(&body));
        let _ = c.read_frame();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(broker.is_running(), "the broker survives bad input");
    let rss_after = broker.rss_kib();
    assert!(rss_after < rss_before + 200 * 1024, "memory stayed bounded: {rss_before} KiB -> {rss_after} KiB");
    let _: ApiVersionsResponse = healthy.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let client: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &broker.address).create().expect("client");
    let metadata = client.fetch_metadata(None, Duration::from_secs(10)).expect("a normal client still works");
    assert_eq!(metadata.brokers().len(), 1);
}
