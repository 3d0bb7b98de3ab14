//! Consumer groups through librdkafka (rdkafka): the classic protocol and
//! KIP-848, committed offsets surviving a restart, two groups on one topic,
//! and the `shardline groups` lag CLI.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use shardline_tests::{broker_binary, Broker, RawClient};

/// Group settings that keep tests short: no initial rebalance delay.
const FAST_GROUPS: &[&str] = &["--set", "group_initial_rebalance_delay_ms=0"];

fn create_topic(address: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", address).create().expect("admin");
    let results = block_on(admin.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .expect("create topics");
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}

fn produce(address: &str, topic: &str, count: usize, prefix: &str) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("enable.idempotence", "false")
        .set("linger.ms", "1")
        .create()
        .expect("producer");
    let sends: Vec<_> = (0..count)
        .map(|i| {
            let key = format!("k{i}");
            let value = format!("{prefix}-{i}");
            producer.send_result(FutureRecord::to(topic).key(&key).payload(&value)).expect("queue")
        })
        .collect();
    for send in sends {
        block_on(send).expect("delivery").expect("acked");
    }
}

fn consumer(address: &str, group: &str, protocol: &str) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", address)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("group.protocol", protocol);
    if protocol == "classic" {
        // The classic leader notices new partitions on a metadata refresh.
        config
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .set("topic.metadata.refresh.interval.ms", "1000");
    }
    config.create().expect("consumer")
}

/// Polls every consumer until `total` messages arrived in all or the
/// deadline passes; returns what each received.
fn poll_until(consumers: &[&BaseConsumer], total: usize, within: Duration) -> Vec<Vec<String>> {
    poll_prefix(consumers, "", total, within)
}

/// Like `poll_until`, counting (and keeping) only values starting with
/// `prefix` (uncommitted older messages may be delivered again after a
/// rebalance).
fn poll_prefix(consumers: &[&BaseConsumer], prefix: &str, total: usize, within: Duration) -> Vec<Vec<String>> {
    let mut received = vec![Vec::new(); consumers.len()];
    let deadline = Instant::now() + within;
    while received.iter().map(Vec::len).sum::<usize>() < total && Instant::now() < deadline {
        for (i, c) in consumers.iter().enumerate() {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(20)) {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                if value.starts_with(prefix) {
                    received[i].push(value);
                }
            }
        }
    }
    received
}

fn assignment_sizes(consumers: &[&BaseConsumer]) -> Vec<usize> {
    consumers.iter().map(|c| c.assignment().map(|a| a.count()).unwrap_or(0)).collect()
}

/// Polls (delivering nothing new) until the consumers own `expected`
/// partitions in total, spread evenly (within one).
fn settle(consumers: &[&BaseConsumer], expected: usize, within: Duration) -> Vec<usize> {
    let deadline = Instant::now() + within;
    loop {
        for c in consumers {
            let _ = c.poll(Duration::from_millis(20));
        }
        let sizes = assignment_sizes(consumers);
        // Balanced, as both assignors end: KIP-848 moves a partition in two
        // steps (revoked by one member, then assigned to another), so a
        // count of [3, 1, 2] on the way is not the end.
        let balanced = sizes.iter().max().zip(sizes.iter().min()).is_some_and(|(max, min)| max - min <= 1);
        if sizes.iter().sum::<usize>() == expected && balanced || Instant::now() > deadline {
            return sizes;
        }
    }
}

fn single_partition_one_active_member(protocol: &str) {
    let broker = Broker::start(FAST_GROUPS);
    create_topic(&broker.address, "one", 1);
    let group = format!("one-{protocol}");
    let members: Vec<BaseConsumer> = (0..3).map(|_| consumer(&broker.address, &group, protocol)).collect();
    for m in &members {
        m.subscribe(&["one"]).expect("subscribe");
    }
    let refs: Vec<&BaseConsumer> = members.iter().collect();
    // Let the group form (Stable, all three members, the partition
    // assigned) before producing: otherwise a late joiner's rebalance could
    // move the partition mid-way.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for c in &refs {
            let _ = c.poll(Duration::from_millis(20));
        }
        let stable = refs[0]
            .fetch_group_list(Some(&group), Duration::from_secs(5))
            .ok()
            .and_then(|list| list.groups().first().map(|g| g.state() == "Stable" && g.members().len() == 3))
            .unwrap_or(false);
        if stable && assignment_sizes(&refs).iter().sum::<usize>() == 1 || Instant::now() > deadline {
            break;
        }
    }
    produce(&broker.address, "one", 200, "m");
    let received = poll_until(&refs, 200, Duration::from_secs(60));
    let active: Vec<usize> = received.iter().map(Vec::len).filter(|&n| n > 0).collect();
    assert_eq!(
        active,
        vec![200],
        "exactly one member consumes everything: {:?}",
        received.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let unique: HashSet<&String> = received.iter().flatten().collect();
    assert_eq!(unique.len(), 200);
}

#[test]
fn classic_one_partition_three_consumers() {
    single_partition_one_active_member("classic");
}

#[test]
fn kip848_one_partition_three_consumers() {
    single_partition_one_active_member("consumer");
}

fn six_partitions_spread_and_grow(protocol: &str) {
    let broker = Broker::start(FAST_GROUPS);
    create_topic(&broker.address, "six", 6);
    let group = format!("six-{protocol}");
    let members: Vec<BaseConsumer> = (0..3).map(|_| consumer(&broker.address, &group, protocol)).collect();
    for m in &members {
        m.subscribe(&["six"]).expect("subscribe");
    }
    let refs: Vec<&BaseConsumer> = members.iter().collect();
    let sizes = settle(&refs, 6, Duration::from_secs(60));
    assert_eq!(sizes, vec![2, 2, 2], "each member owns two partitions");
    produce(&broker.address, "six", 300, "a");
    let received = poll_until(&refs, 300, Duration::from_secs(60));
    let all: Vec<&String> = received.iter().flatten().collect();
    assert_eq!(all.len(), 300);
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 300, "no duplicates");

    // CreatePartitions: the group rebalances onto the new partitions.
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &broker.address).create().expect("admin");
    let grown = block_on(admin.create_partitions(&[NewPartitions::new("six", 9)], &AdminOptions::new())).expect("grow");
    assert!(grown.iter().all(|r| r.is_ok()), "{grown:?}");
    let sizes = settle(&refs, 9, Duration::from_secs(90));
    assert_eq!(sizes.iter().sum::<usize>(), 9, "the group covers the new partitions: {sizes:?}");
    produce(&broker.address, "six", 90, "b");
    let received = poll_prefix(&refs, "b-", 90, Duration::from_secs(60));
    let unique: HashSet<&String> = received.iter().flatten().collect();
    assert_eq!(unique.len(), 90, "every new message, on old and new partitions");
}

#[test]
fn classic_six_partitions_three_consumers() {
    six_partitions_spread_and_grow("classic");
}

#[test]
fn kip848_six_partitions_three_consumers() {
    six_partitions_spread_and_grow("consumer");
}

#[test]
fn two_groups_each_get_every_message() {
    let broker = Broker::start(FAST_GROUPS);
    create_topic(&broker.address, "shared", 3);
    produce(&broker.address, "shared", 150, "s");
    for (group, protocol) in [("g-a", "classic"), ("g-b", "consumer")] {
        let c = consumer(&broker.address, group, protocol);
        c.subscribe(&["shared"]).expect("subscribe");
        let received = poll_until(&[&c], 150, Duration::from_secs(60));
        assert_eq!(received[0].iter().collect::<BTreeSet<_>>().len(), 150, "group {group}");
    }
}

#[test]
fn committed_offsets_survive_a_restart_and_show_as_lag() {
    let mut broker = Broker::start(FAST_GROUPS);
    create_topic(&broker.address, "resume", 2);
    produce(&broker.address, "resume", 100, "r");
    {
        let c = consumer(&broker.address, "resumer", "classic");
        c.subscribe(&["resume"]).expect("subscribe");
        let received = poll_until(&[&c], 60, Duration::from_secs(60));
        assert!(received[0].len() >= 60);
        c.commit_consumer_state(CommitMode::Sync).expect("commit");
        let committed = c.committed(Duration::from_secs(10)).expect("committed");
        let total: i64 = committed.elements().iter().filter_map(|e| e.offset().to_raw()).filter(|o| *o >= 0).sum();
        assert_eq!(total as usize, received[0].len());
    }
    // The lag CLI sees the committed offsets against the log end.
    let describe = |address: &str| {
        let out = Command::new(broker_binary())
            .args(["groups", "--bootstrap-server", address, "describe", "resumer"])
            .output()
            .expect("groups describe");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let lag_of = |table: &str| -> BTreeMap<i32, (i64, i64, i64)> {
        table
            .lines()
            .filter(|l| l.starts_with("resumer "))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[2].parse().unwrap(), (f[3].parse().unwrap(), f[4].parse().unwrap(), f[5].parse().unwrap()))
            })
            .collect()
    };
    let before = lag_of(&describe(&broker.address));
    assert_eq!(before.len(), 2, "{before:?}");
    assert_eq!(before.values().map(|(_, end, _)| end).sum::<i64>(), 100);
    let lag: i64 = before.values().map(|(_, _, lag)| lag).sum();
    assert_eq!(before.values().map(|(c, e, l)| e - c - l).sum::<i64>(), 0);

    let listed = Command::new(broker_binary())
        .args(["groups", "--bootstrap-server", &broker.address, "list"])
        .output()
        .expect("list");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("resumer"));

    broker.stop();
    broker.restart();
    let after = lag_of(&describe(&broker.address));
    assert_eq!(before, after, "committed offsets survive a restart");
    let c = consumer(&broker.address, "resumer", "classic");
    c.subscribe(&["resume"]).expect("subscribe");
    let rest = poll_until(&[&c], lag as usize, Duration::from_secs(60));
    assert_eq!(rest[0].len(), lag as usize, "the consumer resumes from the committed offsets");
    // Nothing more arrives: no message was delivered twice.
    let extra = poll_until(&[&c], 1, Duration::from_secs(2));
    assert!(extra[0].is_empty(), "{:?}", extra[0]);
}

/// Counts the assignments and revocations a consumer goes through.
#[derive(Default)]
struct Rebalances {
    assigned: std::sync::atomic::AtomicUsize,
    revoked: std::sync::atomic::AtomicUsize,
}

impl rdkafka::client::ClientContext for Rebalances {}

impl rdkafka::consumer::ConsumerContext for Rebalances {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        use std::sync::atomic::Ordering::SeqCst;
        match rebalance {
            rdkafka::consumer::Rebalance::Assign(_) => self.assigned.fetch_add(1, SeqCst),
            rdkafka::consumer::Rebalance::Revoke(_) => self.revoked.fetch_add(1, SeqCst),
            rdkafka::consumer::Rebalance::Error(_) => 0,
        };
    }
}

/// A KIP-848 group as ConsumerGroupDescribe shows it: the group epoch and
/// each member's (id, epoch), as the broker knows them.
fn describe_kip848(address: &str, group: &str) -> (i32, Vec<(String, i32)>) {
    use kafka_protocol::messages::{ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, GroupId};
    use kafka_protocol::protocol::StrBytes;
    let mut raw = RawClient::connect(address);
    let mut request = ConsumerGroupDescribeRequest::default();
    request.group_ids = vec![GroupId(StrBytes::from_string(group.into()))];
    let response: ConsumerGroupDescribeResponse = raw.call(ApiKey::ConsumerGroupDescribe, 0, &request);
    let described = &response.groups[0];
    assert_eq!(described.error_code, 0, "{described:?}");
    let members = described.members.iter().map(|m| (m.member_id.to_string(), m.member_epoch)).collect();
    (described.group_epoch, members)
}

fn stable_group_survives_a_broker_kill(protocol: &str, instance_id: Option<&str>) {
    use std::sync::atomic::Ordering::SeqCst;
    let mut broker = Broker::start(FAST_GROUPS);
    let topic = format!("stable-{protocol}-{}", instance_id.unwrap_or("dynamic"));
    let group = format!("{topic}-group");
    create_topic(&broker.address, &topic, 4);
    if protocol == "consumer" {
        // History the group's records must keep: a member that came and
        // went moves the epoch past where a group started afresh would be.
        let passing = consumer(&broker.address, &group, protocol);
        passing.subscribe(&[&topic]).expect("subscribe");
        assert_eq!(settle(&[&passing], 4, Duration::from_secs(30)), vec![4]);
        drop(passing);
    }
    produce(&broker.address, &topic, 40, "before");
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &broker.address)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("group.protocol", protocol)
        .set("reconnect.backoff.max.ms", "200");
    if protocol == "classic" {
        // A KIP-848 group's timeouts are the broker's.
        config.set("session.timeout.ms", "30000").set("heartbeat.interval.ms", "500");
    }
    if let Some(instance) = instance_id {
        config.set("group.instance.id", instance);
    }
    let c: BaseConsumer<Rebalances> = config.create_with_context(Rebalances::default()).expect("consumer");
    c.subscribe(&[&topic]).expect("subscribe");
    let poll = |prefix: &str, want: usize| {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < want && Instant::now() < deadline {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                assert!(value.starts_with(prefix), "{value} delivered again after the restart");
                got.push(value);
            }
        }
        got
    };
    assert_eq!(poll("before", 40).len(), 40);
    c.commit_consumer_state(CommitMode::Sync).expect("commit");
    let assignment = c.assignment().expect("assignment");
    assert_eq!(assignment.count(), 4);
    let rebalances = (c.context().assigned.load(SeqCst), c.context().revoked.load(SeqCst));
    let described = (protocol == "consumer").then(|| describe_kip848(&broker.address, &group));

    broker.kill9();
    broker.restart();
    produce(&broker.address, &topic, 40, "after");
    let after = poll("after", 40);
    assert_eq!(after.len(), 40, "the consumer carried on after the restart");
    // A few more heartbeats at the restored generation.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        assert!(c.poll(Duration::from_millis(50)).is_none(), "nothing is delivered twice");
    }
    assert_eq!(
        (c.context().assigned.load(SeqCst), c.context().revoked.load(SeqCst)),
        rebalances,
        "the group came back stable: no revocation, no new assignment"
    );
    assert_eq!(c.assignment().expect("assignment"), assignment, "the member keeps its partitions");
    if let Some(before) = described {
        assert!(before.0 > 2, "the group has history: epoch {}", before.0);
        assert_eq!(
            describe_kip848(&broker.address, &group),
            before,
            "the group came back at its epoch, with the same member at the same member epoch"
        );
    }
}

#[test]
fn a_stable_group_survives_a_broker_kill_without_a_rebalance() {
    stable_group_survives_a_broker_kill("classic", None);
}

#[test]
fn a_static_member_keeps_its_assignment_across_a_broker_kill() {
    stable_group_survives_a_broker_kill("classic", Some("static-1"));
}

#[test]
fn a_kip848_group_survives_a_broker_kill_without_a_rebalance() {
    stable_group_survives_a_broker_kill("consumer", None);
}

#[test]
fn a_kip848_static_member_keeps_its_assignment_across_a_broker_kill() {
    stable_group_survives_a_broker_kill("consumer", Some("static-848"));
}
