//! The control plane's figures on a 3-node cluster of real processes on
//! loopback (127.0.0.1–3, each node broker and controller, default
//! settings): how long metadata writes stop after kill -9 of the active
//! controller, how long until a killed broker is fenced and its
//! partitions show offline to clients, and how long a committed change
//! takes to reach every broker; optionally, many partitions created and
//! listed everywhere. Speaks the Kafka protocol over plain
//! sockets (CreateTopics, Metadata, DescribeQuorum), so each step is
//! timed from the client's side.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DescribeQuorumRequest, DescribeQuorumResponse, MetadataRequest,
    MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use serde::Serialize;

/// One request and its response over a fresh connection, bounded by
/// `timeout`; `None` when the node does not answer in time.
fn call<Req, Resp>(address: &str, key: ApiKey, version: i16, request: &Req, timeout: Duration) -> Option<Resp>
where
    Req: Encodable + HeaderVersion,
    Resp: Decodable + HeaderVersion,
{
    let mut stream = TcpStream::connect_timeout(&address.parse().ok()?, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = 1;
    header.client_id = Some(StrBytes::from_static_str("shardline-bench"));
    let mut body = BytesMut::new();
    header.encode(&mut body, Req::header_version(version)).ok()?;
    request.encode(&mut body, version).ok()?;
    let mut frame = BytesMut::with_capacity(body.len() + 4);
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).ok()?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let size = i32::from_be_bytes(size).clamp(0, 64 << 20) as usize;
    let mut answer = vec![0u8; size];
    stream.read_exact(&mut answer).ok()?;
    let mut answer = bytes::Bytes::from(answer);
    ResponseHeader::decode(&mut answer, Resp::header_version(version)).ok()?;
    let response = Resp::decode(&mut answer, version).ok()?;
    (!answer.has_remaining()).then_some(response)
}

/// One node of the cluster.
struct Node {
    id: usize,
    address: String,
    args: Vec<String>,
    binary: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("node log");
        let mut child = Command::new(&self.binary)
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start shardline");
        let stdout = child.stdout.take().expect("stdout");
        self.child = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(120)).expect("the node did not start");
        assert!(line.contains("listening"), "node {}: {line}", self.id);
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The figures of one run.
#[derive(Debug, Serialize)]
pub struct ClusterFigures {
    /// Seconds from kill -9 of the active controller until a CreateTopics
    /// through a survivor succeeds, one per kill.
    pub controller_failover_s: Vec<f64>,
    /// Seconds from kill -9 of a broker (not the controller) until every
    /// survivor's Metadata shows it gone and its partitions offline.
    pub fencing_s: Vec<f64>,
    /// Seconds from a CreateTopics answer until every broker's Metadata
    /// lists the topic.
    pub propagation_s: Vec<f64>,
    /// The scale phase, when asked for.
    pub scale: Option<ScaleFigures>,
}

/// Many partitions created on the cluster (`--scale-partitions`).
#[derive(Debug, Serialize)]
pub struct ScaleFigures {
    /// Partitions created, in topics of [`SCALE_PARTITIONS_PER_TOPIC`].
    pub partitions: usize,
    /// Seconds for every CreateTopics (each of
    /// [`SCALE_TOPICS_PER_REQUEST`] topics, one after another) to answer.
    pub create_s: f64,
    /// Seconds from the last answer until every broker's Metadata lists
    /// every partition with its leader.
    pub listed_everywhere_s: f64,
    /// Each node's RSS in KiB before and after (its partitions' own
    /// memory included).
    pub rss_kib_before: Vec<u64>,
    /// See `rss_kib_before`.
    pub rss_kib_after: Vec<u64>,
}

/// Partitions per topic of the scale phase.
pub const SCALE_PARTITIONS_PER_TOPIC: usize = 1000;
/// Topics per CreateTopics of the scale phase.
pub const SCALE_TOPICS_PER_REQUEST: usize = 5;

fn metadata(address: &str) -> Option<MetadataResponse> {
    let mut request = MetadataRequest::default();
    request.topics = None;
    call(address, ApiKey::Metadata, 12, &request, Duration::from_secs(2))
}

fn create_topic(address: &str, name: &str, partitions: i32, timeout: Duration) -> Option<i16> {
    create_topics(address, &[name.to_string()], partitions, timeout)?.first().copied()
}

/// CreateTopics of `names`, each with `partitions`: each topic's error.
fn create_topics(address: &str, names: &[String], partitions: i32, timeout: Duration) -> Option<Vec<i16>> {
    let mut request = CreateTopicsRequest::default();
    request.topics = names
        .iter()
        .map(|name| {
            let mut topic = CreatableTopic::default();
            topic.name = TopicName(StrBytes::from_string(name.clone()));
            topic.num_partitions = partitions;
            topic.replication_factor = 1;
            topic
        })
        .collect();
    request.timeout_ms = timeout.as_millis() as i32;
    let response: CreateTopicsResponse = call(address, ApiKey::CreateTopics, 7, &request, timeout)?;
    Some(response.topics.iter().map(|t| t.error_code).collect())
}

fn rss_kib(node: &Node) -> u64 {
    let Some(child) = &node.child else { return 0 };
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Creates `partitions` partitions through node 1 and waits until every
/// broker lists them all with leaders.
fn scale(nodes: &[Node], partitions: usize) -> ScaleFigures {
    let rss_kib_before = nodes.iter().map(rss_kib).collect();
    let topics = partitions.div_ceil(SCALE_PARTITIONS_PER_TOPIC);
    let names: Vec<String> = (0..topics).map(|t| format!("scale-{t}")).collect();
    let started = Instant::now();
    for request in names.chunks(SCALE_TOPICS_PER_REQUEST) {
        let codes =
            create_topics(&nodes[0].address, request, SCALE_PARTITIONS_PER_TOPIC as i32, Duration::from_secs(300));
        assert!(codes.as_ref().is_some_and(|c| c.iter().all(|c| *c == 0)), "CreateTopics of {request:?}: {codes:?}");
    }
    let create_s = started.elapsed().as_secs_f64();
    let expected = topics * SCALE_PARTITIONS_PER_TOPIC;
    let listed = wait("every broker lists every partition", Duration::from_secs(600), || {
        nodes.iter().all(|n| {
            metadata(&n.address).is_some_and(|m| {
                let led = m
                    .topics
                    .iter()
                    .filter(|t| t.name.as_ref().is_some_and(|n| n.0.starts_with("scale-")))
                    .flat_map(|t| &t.partitions)
                    .filter(|p| p.leader_id.0 > 0)
                    .count();
                led == expected
            })
        })
    });
    ScaleFigures {
        partitions: expected,
        create_s,
        listed_everywhere_s: listed.as_secs_f64(),
        rss_kib_before,
        rss_kib_after: nodes.iter().map(rss_kib).collect(),
    }
}

/// The active controller as `address` reports it, with the high watermark
/// and whether every voter holds it.
fn quorum(address: &str) -> Option<(i32, bool)> {
    let mut partition = PartitionData::default();
    partition.partition_index = 0;
    let mut topic = TopicData::default();
    topic.topic_name = TopicName(StrBytes::from_static_str("__cluster_metadata"));
    topic.partitions = vec![partition];
    let mut request = DescribeQuorumRequest::default();
    request.topics = vec![topic];
    let response: DescribeQuorumResponse = call(address, ApiKey::DescribeQuorum, 2, &request, Duration::from_secs(2))?;
    let p = response.topics.first()?.partitions.first()?;
    if p.error_code != 0 {
        return None;
    }
    let caught_up =
        p.current_voters.len() == 3 && p.current_voters.iter().all(|v| v.log_end_offset >= p.high_watermark);
    Some((p.leader_id.0, caught_up))
}

/// Waits (bounded) until `check` holds; the time it took.
fn wait(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

fn listed_everywhere(nodes: &[Node], topic: &str) -> bool {
    nodes.iter().filter(|n| n.child.is_some()).all(|n| {
        metadata(&n.address)
            .is_some_and(|m| m.topics.iter().any(|t| t.name.as_ref().is_some_and(|x| x.0.as_str() == topic)))
    })
}

/// Runs the cluster benchmark with `binary`: `kills` controller kills and
/// fencings, `changes` propagation samples, then `scale_partitions`
/// partitions created (none when 0). Nodes' data and logs go under `dir`.
pub fn run(binary: &Path, dir: &Path, kills: usize, changes: usize, scale_partitions: usize) -> ClusterFigures {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("bench dir");
    let port = |host: &str| {
        let listener = std::net::TcpListener::bind((host, 0)).expect("free port");
        listener.local_addr().expect("addr").port()
    };
    let controller_ports: Vec<u16> = (1..=3).map(|i| port(&format!("127.0.0.{i}"))).collect();
    let voters: Vec<String> =
        controller_ports.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.{}:{p}", i + 1, i + 1)).collect();
    let voters = voters.join(",");
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| {
            let address = format!("127.0.0.{id}:{}", port(&format!("127.0.0.{id}")));
            let data = dir.join(format!("node{id}"));
            let args = vec![
                "serve".into(),
                "--listen".into(),
                address.clone(),
                "--data-dir".into(),
                data.display().to_string(),
                "--shards".into(),
                "1".into(),
                "--set".into(),
                format!("node_id={id}"),
                "--set".into(),
                format!("controller_quorum_voters={voters}"),
            ];
            Node {
                id,
                address,
                args,
                binary: binary.to_path_buf(),
                log: dir.join(format!("node{id}.log")),
                child: None,
            }
        })
        .collect();
    std::thread::scope(|scope| {
        for node in nodes.iter_mut() {
            scope.spawn(move || node.launch());
        }
    });
    let mut figures = ClusterFigures {
        controller_failover_s: Vec::new(),
        fencing_s: Vec::new(),
        propagation_s: Vec::new(),
        scale: None,
    };
    // A topic with partitions on every broker, so each fencing has some.
    assert_eq!(create_topic(&nodes[0].address, "spread", 12, Duration::from_secs(30)), Some(0));
    for i in 0..changes {
        let asked = &nodes[i % 3].address;
        let name = format!("propagation-{i}");
        assert_eq!(create_topic(asked, &name, 1, Duration::from_secs(30)), Some(0));
        let took = wait("a topic reaches every broker", Duration::from_secs(30), || listed_everywhere(&nodes, &name));
        figures.propagation_s.push(took.as_secs_f64());
    }
    let mut created = 0usize;
    for kill in 0..kills {
        let settled = || nodes.iter().all(|n| quorum(&n.address).is_some_and(|(l, caught_up)| l > 0 && caught_up));
        wait("every voter holds the log", Duration::from_secs(60), settled);
        let leader = quorum(&nodes[0].address).expect("quorum").0 as usize;
        let survivor = if leader == 1 { 2 } else { 1 };
        nodes[leader - 1].kill9();
        let killed_at = Instant::now();
        loop {
            assert!(killed_at.elapsed() < Duration::from_secs(60), "no metadata writes 60 s after the kill");
            created += 1;
            let name = format!("failover-{created}");
            let code = create_topic(&nodes[survivor - 1].address, &name, 1, Duration::from_secs(2));
            if code == Some(0) || code == Some(36) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        figures.controller_failover_s.push(killed_at.elapsed().as_secs_f64());
        eprintln!("kill {kill}: controller {leader}: writes again after {:.2} s", killed_at.elapsed().as_secs_f64());
        nodes[leader - 1].launch();
    }
    for kill in 0..kills.min(5) {
        let settled = || nodes.iter().all(|n| quorum(&n.address).is_some_and(|(l, caught_up)| l > 0 && caught_up));
        wait("every voter holds the log", Duration::from_secs(60), settled);
        let leader = quorum(&nodes[0].address).expect("quorum").0 as usize;
        let victim = (1..=3).find(|i| *i != leader).expect("a non-controller broker");
        nodes[victim - 1].kill9();
        let killed_at = Instant::now();
        let offline_everywhere = || {
            nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                metadata(&n.address).is_some_and(|m| {
                    let gone = !m.brokers.iter().any(|b| b.node_id.0 == victim as i32);
                    let offline = m.topics.iter().flat_map(|t| &t.partitions).all(|p| p.leader_id.0 != victim as i32);
                    gone && offline
                })
            })
        };
        wait("the killed broker is fenced", Duration::from_secs(60), offline_everywhere);
        figures.fencing_s.push(killed_at.elapsed().as_secs_f64());
        eprintln!(
            "fencing {kill}: broker {victim}: offline everywhere after {:.2} s",
            killed_at.elapsed().as_secs_f64()
        );
        nodes[victim - 1].launch();
    }
    if scale_partitions > 0 {
        let settled = || nodes.iter().all(|n| quorum(&n.address).is_some_and(|(l, caught_up)| l > 0 && caught_up));
        wait("every voter holds the log", Duration::from_secs(60), settled);
        let figures_of_scale = scale(&nodes, scale_partitions);
        eprintln!("scale: {figures_of_scale:?}");
        figures.scale = Some(figures_of_scale);
    }
    for node in &mut nodes {
        node.kill9();
    }
    figures
}
