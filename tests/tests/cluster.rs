//! A 3-node cluster of real processes on loopback (127.0.0.1–3), each
//! node broker and controller: it forms; a 12-partition topic spreads over
//! all three brokers, and librdkafka produces to and consumes from every
//! partition through any bootstrap broker; a partition led elsewhere is
//! refused with its leader named (KIP-951) and DescribeTopicPartitions
//! lists every partition; kill -9 of the active controller leads to a new
//! one and topic creation goes on; the killed broker is fenced and its
//! partitions show as offline until it rejoins, then serve again with
//! their data; group coordinators follow their partitions. And a node
//! whose voters disagree with the others' is refused at start, with the
//! reason.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeQuorumRequest, DescribeQuorumResponse,
    DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, ElectLeadersRequest, ElectLeadersResponse,
    MetadataRequest, MetadataResponse, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use shardline_tests::{free_port, Broker, RawClient};

struct Cluster {
    nodes: Vec<Broker>,
    _temp: tempfile::TempDir,
}

/// `controller_quorum_voters` for nodes 1..=count on 127.0.0.<id>.
fn voters(ports: &[u16]) -> String {
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("{}@127.0.0.{}:{port}", i + 1, i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

fn node_args(id: usize, voters: &str) -> Vec<String> {
    ["--shards", "1", "--set", &format!("node_id={id}"), "--set", &format!("controller_quorum_voters={voters}")]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Starts nodes 1..=count under `dir` at once (each waits for a quorum).
fn start_nodes(dir: &std::path::Path, count: usize, voters: &str) -> Vec<Broker> {
    start_nodes_with(dir, count, voters, &[])
}

/// As [`start_nodes`], the nodes in `controller_only` with
/// `process_roles=controller`.
fn start_nodes_with(dir: &std::path::Path, count: usize, voters: &str, controller_only: &[usize]) -> Vec<Broker> {
    std::thread::scope(|scope| {
        let starts: Vec<_> = (1..=count)
            .map(|id| {
                let dir = dir.join(format!("node{id}"));
                scope.spawn(move || {
                    let mut args = node_args(id, voters);
                    if controller_only.contains(&id) {
                        args.extend(["--set".to_string(), "process_roles=controller".to_string()]);
                    }
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    Broker::start_on(&format!("127.0.0.{id}"), &dir, free_port(), &args)
                })
            })
            .collect();
        starts.into_iter().map(|s| s.join().expect("node started")).collect()
    })
}

impl Cluster {
    /// Starts three nodes at once.
    fn start() -> Cluster {
        let temp = tempfile::tempdir().expect("tempdir");
        let controller_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nodes = start_nodes(temp.path(), 3, &voters(&controller_ports));
        Cluster { nodes, _temp: temp }
    }

    fn address(&self, id: i32) -> &str {
        &self.nodes[id as usize - 1].address
    }
}

/// A node's Metadata answer for every topic.
fn metadata(address: &str) -> MetadataResponse {
    let mut client = RawClient::connect(address);
    let mut request = MetadataRequest::default();
    request.topics = None;
    client.call(ApiKey::Metadata, 12, &request)
}

/// DescribeQuorum v2 for the metadata partition: (leader, epoch, high
/// watermark, each voter's id and log end).
fn quorum(address: &str) -> (i32, i32, i64, Vec<(i32, i64)>) {
    let mut partition = PartitionData::default();
    partition.partition_index = 0;
    let mut topic = TopicData::default();
    topic.topic_name = TopicName(StrBytes::from_static_str("__cluster_metadata"));
    topic.partitions = vec![partition];
    let mut request = DescribeQuorumRequest::default();
    request.topics = vec![topic];
    let response: DescribeQuorumResponse = RawClient::connect(address).call(ApiKey::DescribeQuorum, 2, &request);
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "{:?}", p.error_message);
    assert_eq!(response.nodes.len(), 3, "every voter's controller listener");
    let voters = p.current_voters.iter().map(|v| (v.replica_id.0, v.log_end_offset)).collect();
    (p.leader_id.0, p.leader_epoch, p.high_watermark, voters)
}

/// DescribeCluster v2 with fenced brokers: (id, fenced) of each.
fn described_brokers(address: &str) -> BTreeMap<i32, bool> {
    let mut request = DescribeClusterRequest::default();
    request.endpoint_type = 1;
    request.include_fenced_brokers = true;
    let response: DescribeClusterResponse = RawClient::connect(address).call(ApiKey::DescribeCluster, 2, &request);
    assert_eq!(response.error_code, 0);
    response.brokers.iter().map(|b| (b.broker_id.0, b.is_fenced)).collect()
}

/// Leader of each partition of `topic`, as `address` answers.
fn leaders(address: &str, topic: &str) -> Vec<i32> {
    let response = metadata(address);
    let t = response.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic));
    let mut partitions: Vec<(i32, i32)> =
        t.map(|t| t.partitions.iter().map(|p| (p.partition_index, p.leader_id.0)).collect()).unwrap_or_default();
    partitions.sort();
    partitions.into_iter().map(|(_, leader)| leader).collect()
}

/// DescribeTopicPartitions of `topic`: (leader, offline replicas) of each
/// partition, as `address` answers.
fn described_partitions(address: &str, topic: &str) -> Vec<(i32, Vec<i32>)> {
    let mut t = TopicRequest::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    let mut request = DescribeTopicPartitionsRequest::default();
    request.topics = vec![t];
    request.response_partition_limit = 2000;
    let response: DescribeTopicPartitionsResponse =
        RawClient::connect(address).call(ApiKey::DescribeTopicPartitions, 0, &request);
    assert_eq!(response.topics.len(), 1);
    let described = &response.topics[0];
    assert_eq!(described.error_code, 0);
    let ids = |nodes: &[BrokerId]| nodes.iter().map(|n| n.0).collect::<Vec<i32>>();
    described.partitions.iter().map(|p| (p.leader_id.0, ids(&p.offline_replicas))).collect()
}

/// CreatePartitions v3 growing `topic` to `count` on the replicas
/// `assignments` name: the topic's error code.
fn create_partitions(address: &str, topic: &str, count: i32, assignments: &[i32]) -> i16 {
    use kafka_protocol::messages::create_partitions_request::{CreatePartitionsAssignment, CreatePartitionsTopic};
    use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
    let mut t = CreatePartitionsTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.count = count;
    t.assignments = Some(
        assignments
            .iter()
            .map(|b| {
                let mut a = CreatePartitionsAssignment::default();
                a.broker_ids = vec![BrokerId(*b)];
                a
            })
            .collect(),
    );
    let mut request = CreatePartitionsRequest::default();
    request.topics = vec![t];
    request.timeout_ms = 30_000;
    let response: CreatePartitionsResponse = RawClient::connect(address).call(ApiKey::CreatePartitions, 3, &request);
    response.results[0].error_code
}

/// ElectLeaders v2 of `election_type` for `partitions` of `topic` (every
/// partition when None): (topic, partition) → error code of each result.
fn elect_leaders(
    address: &str,
    election_type: i8,
    partitions: Option<(&str, Vec<i32>)>,
) -> BTreeMap<(String, i32), i16> {
    let mut request = ElectLeadersRequest::default();
    request.election_type = election_type;
    request.timeout_ms = 30_000;
    request.topic_partitions = partitions.map(|(topic, partitions)| {
        let mut t = kafka_protocol::messages::elect_leaders_request::TopicPartitions::default();
        t.topic = TopicName(StrBytes::from_string(topic.to_string()));
        t.partitions = partitions;
        vec![t]
    });
    let response: ElectLeadersResponse = RawClient::connect(address).call(ApiKey::ElectLeaders, 2, &request);
    assert_eq!(response.error_code, 0);
    response
        .replica_election_results
        .iter()
        .flat_map(|t| t.partition_result.iter().map(|p| ((t.topic.0.to_string(), p.partition_id), p.error_code)))
        .collect()
}

/// Produce v11 of one record to `partition` of `topic` through `address`:
/// (error, current leader named, endpoints named as id → port).
fn produce_v11(address: &str, topic: &str, partition: i32) -> (i16, i32, BTreeMap<i32, i32>) {
    let records = shardline_engine::format::batch::build::simple_batch(1_700_000_000_000, 1, 10);
    let request = shardline_tests::produce_request(topic, partition, records);
    let response: ProduceResponse = RawClient::connect(address).call(ApiKey::Produce, 11, &request);
    let answered = &response.responses[0].partition_responses[0];
    let endpoints = response.node_endpoints.iter().map(|n| (n.node_id.0, n.port)).collect();
    (answered.error_code, answered.current_leader.leader_id.0, endpoints)
}

/// Waits (bounded) until `check` holds, returning how long it took.
fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

/// Reads `partitions` of `topic` from the beginning through `bootstrap`
/// until each has `per_partition` records: (partition, offset) → value.
fn read_all(bootstrap: &str, topic: &str, partitions: &[i32], per_partition: usize) -> BTreeMap<(i32, i64), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for &p in partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < partitions.len() * per_partition {
        assert!(Instant::now() < deadline, "read {} of {}", got.len(), partitions.len() * per_partition);
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.expect("consume");
        let value = String::from_utf8(message.payload().expect("payload").to_vec()).expect("utf8");
        got.insert((message.partition(), message.offset()), value);
    }
    got
}

#[test]
fn three_nodes_form_a_cluster_spread_partitions_and_survive_a_controller_kill() {
    let mut cluster = Cluster::start();
    let brokers: BTreeSet<i32> = metadata(cluster.address(1)).brokers.iter().map(|b| b.node_id.0).collect();
    assert_eq!(brokers, BTreeSet::from([1, 2, 3]), "every node registered and unfenced");

    // The quorum as the active controller sees it, asked of any node.
    let controller = metadata(cluster.address(1)).controller_id.0;
    for node in 1..=3 {
        wait_until("every voter holds the whole log", Duration::from_secs(10), || {
            let (leader, epoch, high_watermark, voters) = quorum(cluster.address(node));
            assert_eq!(leader, controller, "node {node} names the active controller");
            assert!(epoch >= 1 && high_watermark > 0);
            voters.len() == 3 && voters.iter().all(|(_, end)| *end >= high_watermark)
        });
    }
    assert_eq!(described_brokers(cluster.address(3)), BTreeMap::from([(1, false), (2, false), (3, false)]));

    // Producer ids come in blocks from the controller: unique across brokers.
    let ids: BTreeSet<i64> = (1..=3)
        .flat_map(|node| {
            let mut client = RawClient::connect(cluster.address(node));
            [shardline_tests::init_producer_id(&mut client), shardline_tests::init_producer_id(&mut client)]
        })
        .collect();
    assert_eq!(ids.len(), 6, "every broker hands out its own ids: {ids:?}");

    // Created through node 2 (forwarded to the active controller if it is not).
    RawClient::connect(cluster.address(2)).create_topic("spread", 12);
    let placed = leaders(cluster.address(2), "spread");
    assert_eq!(placed.len(), 12);
    for broker in 1..=3 {
        assert_eq!(placed.iter().filter(|l| **l == broker).count(), 4, "balanced over the brokers: {placed:?}");
    }
    // Every node applies the creation shortly after the answer (it follows
    // the committed log of its own quorum member).
    let spread = wait_until("every node answers the same leaders", Duration::from_secs(10), || {
        (1..=3).all(|node| leaders(cluster.address(node), "spread") == placed)
    });
    eprintln!("the creation reached every node {spread:?} after its answer");

    // One record to every partition through node 3 alone; read back through node 1.
    let producer = producer(cluster.address(3));
    futures::executor::block_on(async {
        for p in 0..12 {
            let value = format!("p{p}");
            producer
                .send(FutureRecord::<(), _>::to("spread").partition(p).payload(&value), Duration::from_secs(30))
                .await
                .expect("acknowledged");
        }
    });
    drop(producer);
    let all: Vec<i32> = (0..12).collect();
    let got = read_all(cluster.address(1), "spread", &all, 1);
    for p in 0..12 {
        assert_eq!(got.get(&(p, 0)).map(String::as_str), Some(format!("p{p}").as_str()));
    }
    // A partition on another broker is refused with NOT_LEADER_OR_FOLLOWER.
    let elsewhere = placed.iter().position(|l| *l != 1).expect("a partition off node 1") as i32;
    let refused = RawClient::connect(cluster.address(1)).list_offset("spread", elsewhere, -1, 0);
    assert_eq!(refused.error_code, kafka_protocol::ResponseError::NotLeaderOrFollower.code());
    // A produce there names the current leader and its endpoint (KIP-951).
    let leader = placed[elsewhere as usize];
    let leader_port: i32 = cluster.address(leader).rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let (code, named, endpoints) = produce_v11(cluster.address(1), "spread", elsewhere);
    assert_eq!(code, kafka_protocol::ResponseError::NotLeaderOrFollower.code());
    assert_eq!((named, endpoints), (leader, BTreeMap::from([(leader, leader_port)])));
    // DescribeTopicPartitions, as the Java admin client reads topics.
    let described: Vec<(i32, Vec<i32>)> = placed.iter().map(|l| (*l, vec![])).collect();
    assert_eq!(described_partitions(cluster.address(2), "spread"), described);
    // New partitions on the brokers the request assigns, through any node.
    RawClient::connect(cluster.address(1)).create_topic("grown", 1);
    let invalid = kafka_protocol::ResponseError::InvalidReplicaAssignment.code();
    assert_eq!(create_partitions(cluster.address(2), "grown", 3, &[3, 9]), invalid, "broker 9 is not registered");
    assert_eq!(create_partitions(cluster.address(2), "grown", 3, &[3]), invalid, "one assignment for two partitions");
    assert_eq!(create_partitions(cluster.address(2), "grown", 3, &[]), invalid, "an empty list assigns none");
    assert_eq!(create_partitions(cluster.address(2), "grown", 3, &[3, 2]), 0);
    wait_until("every node has the new partitions", Duration::from_secs(10), || {
        (1..=3).all(|node| leaders(cluster.address(node), "grown").get(1..) == Some(&[3, 2][..]))
    });

    // kill -9 of the active controller.
    assert!((1..=3).contains(&controller), "a live broker is named controller: {controller}");
    let survivor = if controller == 1 { 2 } else { 1 };
    cluster.nodes[controller as usize - 1].kill9();
    let took = wait_until("a topic is created after the controller's kill", Duration::from_secs(30), || {
        let mut client = RawClient::connect(cluster.address(survivor));
        // Already there: an earlier try was committed but not answered.
        let code = client.try_create_topic("after-failover", 3);
        code == 0 || code == kafka_protocol::ResponseError::TopicAlreadyExists.code()
    });
    eprintln!("metadata writes succeeded again {took:?} after the controller's kill -9");
    assert_ne!(metadata(cluster.address(survivor)).controller_id.0, controller, "a new controller");

    // The killed broker is fenced: gone from the brokers, its partitions offline.
    let was_led: Vec<i32> = (0..12).filter(|p| placed[*p as usize] == controller).collect();
    let fenced = wait_until("the killed broker is fenced", Duration::from_secs(30), || {
        let now = leaders(cluster.address(survivor), "spread");
        was_led.iter().all(|p| now[*p as usize] == -1)
    });
    eprintln!("the killed broker's partitions showed offline {fenced:?} after metadata writes resumed");
    let response = metadata(cluster.address(survivor));
    assert!(!response.brokers.iter().any(|b| b.node_id.0 == controller), "a fenced broker is not listed");
    assert_eq!(described_brokers(cluster.address(survivor)).get(&controller), Some(&true), "listed as fenced");
    let described: Vec<(i32, Vec<i32>)> = (0..12)
        .map(|p| if was_led.contains(&p) { (-1, vec![controller]) } else { (placed[p as usize], vec![]) })
        .collect();
    assert_eq!(described_partitions(cluster.address(survivor), "spread"), described, "offline while fenced");
    // Elections: the offline partitions' only replica is down; the others
    // are led by their preferred replica already.
    use kafka_protocol::ResponseError::{ElectionNotNeeded, EligibleLeadersNotAvailable, PreferredLeaderNotAvailable};
    let preferred = elect_leaders(cluster.address(survivor), 0, Some(("spread", (0..12).collect())));
    let expected: BTreeMap<(String, i32), i16> = (0..12)
        .map(|p| {
            let code = if was_led.contains(&p) { PreferredLeaderNotAvailable } else { ElectionNotNeeded };
            (("spread".to_string(), p), code.code())
        })
        .collect();
    assert_eq!(preferred, expected, "preferred elections");
    let unclean = elect_leaders(cluster.address(survivor), 1, Some(("spread", vec![was_led[0]])));
    assert_eq!(unclean, BTreeMap::from([(("spread".to_string(), was_led[0]), EligibleLeadersNotAvailable.code())]));
    // Every partition: those already led as asked are left out.
    let everywhere = elect_leaders(cluster.address(survivor), 0, None);
    let spread: Vec<i32> = everywhere.keys().filter(|(t, _)| t == "spread").map(|(_, p)| *p).collect();
    assert_eq!(spread, was_led, "only the partitions whose preferred leader is down: {everywhere:?}");
    assert!(everywhere.values().all(|c| *c == PreferredLeaderNotAvailable.code()), "{everywhere:?}");
    let (new_leader, _, _, _) = quorum(cluster.address(survivor));
    assert!(new_leader != controller && new_leader > 0, "the quorum's new leader: {new_leader}");
    let now = leaders(cluster.address(survivor), "spread");
    for p in 0..12 {
        if !was_led.contains(&p) {
            assert_eq!(now[p as usize], placed[p as usize], "partition {p} of a live broker keeps its leader");
        }
    }

    // It rejoins: its partitions are served again, with their data.
    cluster.nodes[controller as usize - 1].restart();
    wait_until("the restarted broker leads its partitions again", Duration::from_secs(30), || {
        leaders(cluster.address(survivor), "spread") == placed
    });
    let got = read_all(cluster.address(survivor), "spread", &was_led, 1);
    for p in &was_led {
        assert_eq!(got.get(&(*p, 0)).map(String::as_str), Some(format!("p{p}").as_str()));
    }

    // Group coordinators follow their partitions: a group commits and
    // reads back its offsets through any bootstrap broker.
    for (group, bootstrap) in [("g-one", 1), ("g-two", 2), ("g-three", 3)] {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.address(bootstrap))
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset("spread", 5, Offset::Offset(1)).expect("offset");
        consumer.commit(&offsets, rdkafka::consumer::CommitMode::Sync).expect("commit");
        let committed = consumer.committed_offsets(offsets, Duration::from_secs(20)).expect("committed");
        let offset = committed.find_partition("spread", 5).expect("partition").offset();
        assert_eq!(offset, Offset::Offset(1), "group {group}");
    }
}

#[test]
fn a_controller_only_node_votes_and_holds_no_partitions() {
    let temp = tempfile::tempdir().expect("tempdir");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = start_nodes_with(temp.path(), 3, &voters(&ports), &[3]);
    let (_, _, _, voters_seen) = quorum(&nodes[0].address);
    assert_eq!(voters_seen.iter().map(|(id, _)| *id).collect::<BTreeSet<i32>>(), BTreeSet::from([1, 2, 3]));
    assert_eq!(described_brokers(&nodes[1].address), BTreeMap::from([(1, false), (2, false)]), "node 3 is no broker");
    let brokers: BTreeSet<i32> = metadata(&nodes[0].address).brokers.iter().map(|b| b.node_id.0).collect();
    assert_eq!(brokers, BTreeSet::from([1, 2]));
    assert!(std::net::TcpStream::connect(&nodes[2].address).is_err(), "no client listener on a controller-only node");
    RawClient::connect(&nodes[0].address).create_topic("two-brokers", 4);
    wait_until("node 2 applies the creation", Duration::from_secs(10), || {
        leaders(&nodes[1].address, "two-brokers").len() == 4
    });
    let placed = leaders(&nodes[1].address, "two-brokers");
    assert_eq!(placed.iter().filter(|l| **l == 1).count(), 2, "{placed:?}");
    assert_eq!(placed.iter().filter(|l| **l == 2).count(), 2, "{placed:?}");
    let node3 = temp.path().join("node3");
    assert!(node3.join("__cluster_metadata-0").is_dir() && node3.join("meta.properties").is_file());
    assert!(!node3.join("two-brokers-0").exists(), "no partition on the controller-only node");

    // Its kill -9: the other two voters keep the quorum; it rejoins.
    nodes[2].kill9();
    wait_until("a topic is created with node 3 down", Duration::from_secs(30), || {
        let code = RawClient::connect(&nodes[1].address).try_create_topic("while-three-is-down", 2);
        code == 0 || code == kafka_protocol::ResponseError::TopicAlreadyExists.code()
    });
    nodes[2].restart();
    wait_until("node 3 holds the whole log again", Duration::from_secs(30), || {
        let (leader, _, high_watermark, voters) = quorum(&nodes[0].address);
        leader > 0 && voters.iter().all(|(_, end)| *end >= high_watermark)
    });
}

#[test]
fn a_node_whose_voters_disagree_is_refused_at_start_with_the_reason() {
    let temp = tempfile::tempdir().expect("tempdir");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let agreed = voters(&ports[..2]);
    let _nodes = start_nodes(temp.path(), 2, &agreed);
    // Node 3 names three voters where the others name two.
    let dir = temp.path().join("node3");
    let args = node_args(3, &voters(&ports));
    let output = std::process::Command::new(shardline_tests::broker_binary())
        .args(["serve", "--listen", &format!("127.0.0.3:{}", free_port()), "--data-dir"])
        .arg(&dir)
        .args(&args)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "refused: {stderr}");
    assert!(stderr.contains("another controller refused this node"), "{stderr}");
    assert!(stderr.contains("cluster") || stderr.contains("voters disagree"), "{stderr}");
}
