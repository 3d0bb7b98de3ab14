//! A small load generator on librdkafka (the rdkafka crate) for the
//! single-node baseline: produce N messages of S bytes to P partitions with
//! the given acks and linger, then consume them all back with assign, and
//! print throughput. Usage:
//! `shardline-loadgen <bootstrap> <topic> <partitions> <messages> <bytes> <acks> <linger_ms>`

use std::time::{Duration, Instant};

use futures::executor::block_on;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

fn arg<T: std::str::FromStr>(args: &[String], index: usize, name: &str) -> T {
    args.get(index).and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("missing or bad argument <{name}>"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bootstrap: String = arg(&args, 0, "bootstrap");
    let topic: String = arg(&args, 1, "topic");
    let partitions: i32 = arg(&args, 2, "partitions");
    let messages: usize = arg(&args, 3, "messages");
    let bytes: usize = arg(&args, 4, "bytes");
    let acks: String = arg(&args, 5, "acks");
    let linger: String = arg(&args, 6, "linger_ms");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", &acks)
        .set("linger.ms", &linger)
        .set("batch.size", "1000000")
        .set("enable.idempotence", "false")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("producer");
    let payload = vec![b'x'; bytes];
    let start = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    for i in 0..messages {
        let partition = (i % partitions as usize) as i32;
        loop {
            let record = FutureRecord::<(), _>::to(&topic).partition(partition).payload(&payload);
            match producer.send_result(record) {
                Ok(future) => {
                    in_flight.push_back(future);
                    break;
                }
                Err(_) => {
                    let oldest = in_flight.pop_front().expect("queue full with nothing in flight");
                    block_on(oldest).expect("delivery").expect("delivered");
                }
            }
        }
        if in_flight.len() > 200_000 {
            let oldest = in_flight.pop_front().expect("in flight");
            block_on(oldest).expect("delivery").expect("delivered");
        }
    }
    for future in in_flight {
        block_on(future).expect("delivery").expect("delivered");
    }
    let produce_secs = start.elapsed().as_secs_f64();
    let total_mb = (messages * bytes) as f64 / 1e6;
    println!(
        "produce: {messages} messages, {total_mb:.1} MB in {produce_secs:.2} s = {:.1} MB/s, {:.0} msg/s",
        total_mb / produce_secs,
        messages as f64 / produce_secs
    );
    let consumer = shardline_bench::load::assigned_consumer(&bootstrap, &topic, partitions);
    let start = Instant::now();
    let mut consumed = 0usize;
    let deadline = start + Duration::from_secs(600);
    while consumed < messages && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            consumed += usize::from(message.payload().is_some());
        }
    }
    let consume_secs = start.elapsed().as_secs_f64();
    println!(
        "consume: {consumed} messages in {consume_secs:.2} s = {:.1} MB/s",
        (consumed * bytes) as f64 / 1e6 / consume_secs
    );
}
