//! Test support: the real `shardline` binary started as a child process on
//! a free loopback port with its own data directory, a minimal raw Kafka
//! protocol client for requests no client library sends (bad input, exact
//! error codes), and the deterministic simulator ([`sim`]). Used by the
//! tests in `tests/tests/`.

pub mod sim;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

/// Path of the broker binary the tests run: `SHARDLINE_BIN` (the test
/// command builds it from the tree first), else the workspace's
/// `target/debug/shardline`, built from the tree under test once per test
/// process (cargo does nothing when it is current), so a test never runs a
/// binary left from an earlier build.
pub fn broker_binary() -> PathBuf {
    if let Ok(path) = std::env::var("SHARDLINE_BIN") {
        return PathBuf::from(path);
    }
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            let status = Command::new(env!("CARGO"))
                .args(["build", "--bin", "shardline"])
                .current_dir(&root)
                .status()
                .expect("cargo build");
            assert!(status.success(), "building the broker failed");
            root.join("target/debug/shardline")
        })
        .clone()
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A broker child process. Killed (SIGKILL) on drop if still running.
pub struct Broker {
    child: Option<Child>,
    /// `127.0.0.1:<port>`.
    pub address: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    args: Vec<String>,
    _temp: Option<tempfile::TempDir>,
    /// What the broker wrote to stderr, once it has exited.
    pub stderr_path: PathBuf,
}

impl Broker {
    /// Starts a broker with a fresh data directory and `extra` arguments.
    pub fn start(extra: &[&str]) -> Broker {
        let temp = tempfile::tempdir().expect("tempdir");
        let data_dir = temp.path().join("data");
        let mut broker = Broker::start_in(&data_dir, free_port(), extra);
        broker._temp = Some(temp);
        broker
    }

    /// Starts a broker with a fresh data directory that records its sync
    /// ledger, for [`Broker::power_loss`].
    pub fn start_with_sync_ledger(extra: &[&str]) -> Broker {
        let temp = tempfile::tempdir().expect("tempdir");
        let data_dir = temp.path().join("data");
        let ledger = format!("test_sync_ledger={}", data_dir.with_extension("sync-ledger").display());
        let mut args = extra.to_vec();
        args.extend(["--set", ledger.as_str()]);
        let mut broker = Broker::start_in(&data_dir, free_port(), &args);
        broker._temp = Some(temp);
        broker
    }

    /// kill -9, then a power cut: every data file is cut back to what was
    /// fdatasynced (from the sync ledger the broker recorded). Returns how
    /// many files lost bytes.
    pub fn power_loss(&mut self) -> usize {
        self.kill9();
        let ledger = self.data_dir.with_extension("sync-ledger");
        shardline_engine::storage::sync_ledger::lose_unsynced_writes(&ledger).expect("apply the sync ledger")
    }

    /// Starts a broker on `port` with `data_dir` (kept between restarts).
    pub fn start_in(data_dir: &Path, port: u16, extra: &[&str]) -> Broker {
        Broker::start_on("127.0.0.1", data_dir, port, extra)
    }

    /// Starts a broker listening on `host`:`port` (any address of
    /// 127.0.0.0/8) with `data_dir`.
    pub fn start_on(host: &str, data_dir: &Path, port: u16, extra: &[&str]) -> Broker {
        let address = format!("{host}:{port}");
        let mut args = vec![
            "serve".to_string(),
            "--listen".into(),
            address.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let stderr_path = data_dir.with_extension(format!("stderr-{port}-{}", std::process::id()));
        let mut broker =
            Broker { child: None, address, data_dir: data_dir.to_path_buf(), args, _temp: None, stderr_path };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        if let Err(error) = self.try_launch() {
            panic!("{error}");
        }
    }

    fn try_launch(&mut self) -> Result<(), String> {
        if let Some(parent) = self.data_dir.parent() {
            std::fs::create_dir_all(parent).expect("data parent");
        }
        let stderr =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.stderr_path).expect("stderr file");
        let mut child = Command::new(broker_binary())
            .args(&self.args)
            .env("RUST_LOG", std::env::var("SHARDLINE_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn shardline");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            for _ in lines {}
        });
        let line = match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("broker did not start: {}", self.stderr()));
            }
        };
        if !line.contains("listening") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("unexpected first line {line:?}: {}", self.stderr()));
        }
        self.child = Some(child);
        Ok(())
    }

    /// The broker's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Resident memory of the broker in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Virtual memory of the broker in KiB (from /proc): what it has
    /// reserved, touched or not.
    pub fn vm_size_kib(&self) -> u64 {
        self.status_kib("VmSize:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("broker /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "broker did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same broker again (same port, data and arguments).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill it first");
        // A client reconnecting to a test port (from the ephemeral range)
        // while the broker is down can connect to itself and hold the port
        // for a moment: retry, bounded.
        for _ in 0..40 {
            match self.try_launch() {
                Ok(()) => return,
                Err(error) if error.contains("Address already in use") => {
                    std::thread::sleep(Duration::from_millis(250))
                }
                Err(error) => panic!("{error}"),
            }
        }
        panic!("the port stayed in use: {}", self.stderr());
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// Whether `error` is the peer closing (a reset), not a timeout.
pub fn is_reset(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe)
}

/// A blocking raw Kafka connection: frames requests with kafka-protocol
/// and reads framed responses.
pub struct RawClient {
    stream: TcpStream,
    correlation_id: i32,
}

impl RawClient {
    /// How long a read waits for the broker before the helper says it
    /// neither answered nor closed: far above any answer time of a
    /// request that does not long-poll.
    pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

    /// Connects with [`Self::READ_TIMEOUT`] read and write timeouts.
    pub fn connect(address: &str) -> RawClient {
        let stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(Self::READ_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(Self::READ_TIMEOUT)).expect("timeout");
        RawClient { stream, correlation_id: 0 }
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one response frame (without its size); `None` when the broker
    /// closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).ok()?;
        let size = i32::from_be_bytes(size);
        assert!((0..=100 << 20).contains(&size), "response size {size}");
        let mut body = vec![0u8; size as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    /// Whether the broker closed this connection: the next read returns
    /// EOF or a reset. Bytes from the broker, or nothing within
    /// [`Self::READ_TIMEOUT`] (a broker that hangs), are not "closed".
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => is_reset(&error),
        }
    }

    /// Closes the write side, then reads (discarding whatever the broker
    /// still answers) until the broker closes too. `true` on EOF or reset,
    /// `false` when the broker neither sent nor closed within
    /// [`Self::READ_TIMEOUT`], or sent more than 100 MiB.
    pub fn closes_after_sending(&mut self) -> bool {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let mut buffer = vec![0u8; 64 * 1024];
        let mut received = 0usize;
        while received < 100 << 20 {
            match self.stream.read(&mut buffer) {
                Ok(0) => return true,
                Ok(n) => received += n,
                Err(error) => return is_reset(&error),
            }
        }
        false
    }

    /// ListOffsets v7 for one partition of `topic`, as a consumer asks
    /// (replica id -1) at `isolation` (0 read_uncommitted, 1
    /// read_committed); `timestamp` -1 is the latest offset, -2 the
    /// earliest. Returns the partition's answer.
    pub fn list_offset(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
        isolation: i8,
    ) -> kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse {
        use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
        use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, ListOffsetsResponse, TopicName};
        let mut p = ListOffsetsPartition::default();
        p.partition_index = partition;
        p.timestamp = timestamp;
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.to_string()));
        t.partitions = vec![p];
        let mut request = ListOffsetsRequest::default();
        request.replica_id = BrokerId(-1);
        request.isolation_level = isolation;
        request.topics = vec![t];
        let mut response: ListOffsetsResponse = self.call(ApiKey::ListOffsets, 7, &request);
        assert_eq!(response.topics.len(), 1, "one topic answered");
        assert_eq!(response.topics[0].partitions.len(), 1, "one partition answered");
        response.topics.remove(0).partitions.remove(0)
    }

    /// CreateTopics v7 for one topic of `partitions` partitions
    /// (replication factor 1); asserts it was created.
    pub fn create_topic(&mut self, topic: &str, partitions: i32) {
        assert_eq!(self.try_create_topic(topic, partitions), 0, "create {topic}");
    }

    /// CreateTopics v7 for one topic of `partitions` partitions
    /// (replication factor 1); the topic's error code.
    pub fn try_create_topic(&mut self, topic: &str, partitions: i32) -> i16 {
        use kafka_protocol::messages::create_topics_request::CreatableTopic;
        use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
        let mut creatable = CreatableTopic::default();
        creatable.name = TopicName(StrBytes::from_string(topic.to_string()));
        creatable.num_partitions = partitions;
        creatable.replication_factor = 1;
        let mut request = CreateTopicsRequest::default();
        request.topics = vec![creatable];
        request.timeout_ms = 30_000;
        let response: CreateTopicsResponse = self.call(ApiKey::CreateTopics, 7, &request);
        response.topics[0].error_code
    }

    /// Sends `request` as `version` and decodes the response.
    pub fn call<Req, Resp>(&mut self, key: ApiKey, version: i16, request: &Req) -> Resp
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        self.send_request(key, version, request);
        self.read_response(version)
    }

    /// Sends `request` as `version` without waiting for the answer.
    pub fn send_request<Req>(&mut self, key: ApiKey, version: i16, request: &Req)
    where
        Req: Encodable + HeaderVersion,
    {
        self.try_send_request(key, version, request).expect("send");
    }

    /// Like [`Self::send_request`], but hands back the write error, for a
    /// request the broker may refuse by closing the connection mid-send.
    pub fn try_send_request<Req>(&mut self, key: ApiKey, version: i16, request: &Req) -> std::io::Result<()>
    where
        Req: Encodable + HeaderVersion,
    {
        self.correlation_id += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = self.correlation_id;
        header.client_id = Some(StrBytes::from_static_str("raw-test"));
        let mut body = BytesMut::new();
        header.encode(&mut body, Req::header_version(version)).expect("encode header");
        request.encode(&mut body, version).expect("encode request");
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        self.send_raw(&frame)
    }

    /// Reads and decodes the answer to the last request sent.
    pub fn read_response<Resp>(&mut self, version: i16) -> Resp
    where
        Resp: Decodable + HeaderVersion,
    {
        let mut response = self.read_frame().expect("response frame");
        let header = ResponseHeader::decode(&mut response, Resp::header_version(version)).expect("response header");
        assert_eq!(header.correlation_id, self.correlation_id);
        let decoded = Resp::decode(&mut response, version).expect("decode response");
        assert_eq!(response.remaining(), 0, "trailing bytes in response");
        decoded
    }

    /// Sets how long reads wait (for tests that check the broker stays silent).
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).expect("timeout");
    }

    /// Whether a read finds nothing to read within the read timeout (the
    /// connection is open and the broker is silent).
    pub fn is_silent(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Err(error) => matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            Ok(0 | 1) => false,
            Ok(n) => unreachable!("read {n} bytes into one"),
        }
    }
}

/// InitProducerId v4 without a transactional id: the producer id given.
pub fn init_producer_id(client: &mut RawClient) -> i64 {
    use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
    let mut request = InitProducerIdRequest::default();
    request.transaction_timeout_ms = 60_000;
    request.producer_id = kafka_protocol::messages::ProducerId(-1);
    request.producer_epoch = -1;
    let response: InitProducerIdResponse = client.call(ApiKey::InitProducerId, 4, &request);
    assert_eq!(response.error_code, 0, "InitProducerId");
    response.producer_id.0
}

/// An acks=all Produce request of `records` (a record batch) to
/// `partition` of `topic`, waiting up to 10 s.
pub fn produce_request(topic: &str, partition: i32, records: Vec<u8>) -> kafka_protocol::messages::ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(Bytes::from(records));
    let mut t = TopicProduceData::default();
    t.name = kafka_protocol::messages::TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![p];
    let mut request = kafka_protocol::messages::ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 10_000;
    request.topic_data = vec![t];
    request
}
