//! Controller-to-controller traffic on the controller listener: Raft
//! messages to the other voters, and controller requests a node forwards
//! to the active controller (with their answers), in bounded frames after
//! a handshake that checks both sides belong to one cluster with one voter
//! set. Plain threads with blocking sockets beside the controller core:
//! one accepting, one reading each inbound connection, and per other
//! voter one writing and one reading its outbound connection. What they
//! receive goes to the core as [`CoreInput`].
//!
//! A frame is `[length u32 BE][kind u8][body]`, the length counting the
//! kind and body and at most [`MAX_FRAME_BYTES`]; a longer or unknown
//! frame closes the connection. The body is protobuf for Raft messages,
//! JSON otherwise.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use serde::{Deserialize, Serialize};
use shardline_replication::controller::requests::ControllerRequest;
use shardline_replication::node::Voter;

use super::messages::{raft_id, ControllerAnswer, CoreInput};

/// The largest frame (a snapshot of a large image travels in one).
pub const MAX_FRAME_BYTES: usize = 256 << 20;
/// Frames waiting for one voter's connection; more are dropped (Raft
/// sends again) and the voter reported unreachable.
const OUTBOUND_QUEUE: usize = 4096;
/// Connect and write timeout to a voter.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// An inbound connection silent this long is closed (voters heartbeat
/// every few hundred milliseconds).
const INBOUND_IDLE: Duration = Duration::from_secs(30);
/// Pause before connecting to a voter again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

const KIND_HELLO: u8 = 1;
const KIND_REFUSED: u8 = 2;
const KIND_RAFT: u8 = 3;
const KIND_REQUEST: u8 = 4;
const KIND_ANSWER: u8 = 5;

/// What each side says first: a connection between nodes of different
/// clusters, or with different voters, is refused with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The cluster id.
    pub cluster_id: String,
    /// The node's id.
    pub node_id: i32,
    /// The voters, in canonical form (`id@host:port` sorted by id).
    pub voters: String,
}

impl Hello {
    /// Why `peer` may not talk to `self`, if it may not.
    pub fn mismatch(&self, peer: &Hello) -> Option<String> {
        if peer.node_id < 0 {
            return Some(format!("node id {} is negative", peer.node_id));
        }
        if peer.cluster_id != self.cluster_id {
            return Some(format!(
                "node {} belongs to cluster {} and node {} to cluster {}",
                peer.node_id, peer.cluster_id, self.node_id, self.cluster_id
            ));
        }
        if peer.voters != self.voters {
            return Some(format!(
                "the controller quorum voters disagree: node {} has {} and node {} has {}",
                peer.node_id, peer.voters, self.node_id, self.voters
            ));
        }
        None
    }
}

/// The canonical form of a voter set.
pub fn canonical_voters(voters: &[Voter]) -> String {
    let mut sorted: Vec<&Voter> = voters.iter().collect();
    sorted.sort_by_key(|v| v.id);
    sorted.iter().map(|v| format!("{}@{}:{}", v.id, v.host, v.port)).collect::<Vec<_>>().join(",")
}

#[derive(Serialize, Deserialize)]
struct RequestFrame {
    id: u64,
    request: ControllerRequest,
}

#[derive(Serialize, Deserialize)]
struct AnswerFrame {
    id: u64,
    reply: shardline_replication::controller::requests::ControllerReply,
    offset: u64,
}

fn write_frame(stream: &mut impl Write, kind: u8, body: &[u8]) -> std::io::Result<()> {
    let length = u32::try_from(body.len() + 1).ok().filter(|l| *l as usize <= MAX_FRAME_BYTES);
    let length = length.ok_or_else(|| std::io::Error::other("frame too large"))?;
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.push(kind);
    frame.extend_from_slice(body);
    stream.write_all(&frame)
}

/// Reads one frame; the body's buffer grows with the bytes that arrive,
/// never from the length alone.
fn read_frame(stream: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header)?;
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if length == 0 || length > MAX_FRAME_BYTES {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {length} bytes")));
    }
    let mut body = Vec::with_capacity((length - 1).min(64 << 10));
    stream.take(length as u64 - 1).read_to_end(&mut body)?;
    if body.len() != length - 1 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok((header[4], body))
}

fn invalid(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// Writes an answer to a forwarded request on the connection it came in on.
pub fn answer_remote(link: &Mutex<TcpStream>, id: u64, answer: ControllerAnswer) {
    let frame = AnswerFrame { id, reply: answer.reply, offset: answer.offset };
    let Ok(body) = serde_json::to_vec(&frame) else { return };
    let mut stream = link.lock().unwrap_or_else(|p| p.into_inner());
    // A failed write closes the connection: the forwarding node times out
    // its request and its caller retries.
    if write_frame(&mut *stream, KIND_ANSWER, &body).is_err() {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// Binds the controller listener and accepts voters' connections on a
/// thread of its own.
pub fn listen(address: &str, hello: Hello, inputs: Sender<CoreInput>, stopped: Arc<AtomicBool>) -> std::io::Result<()> {
    let listener = TcpListener::bind(address).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "the controller listener {address} of node {} cannot bind ({e}): is another node with this id running?",
                hello.node_id
            ),
        )
    })?;
    std::thread::Builder::new().name("controller-accept".into()).spawn(move || {
        for stream in listener.incoming() {
            if stopped.load(Ordering::Acquire) {
                return;
            }
            let Ok(stream) = stream else { continue };
            let (hello, inputs) = (hello.clone(), inputs.clone());
            let _ = std::thread::Builder::new()
                .name("controller-in".into())
                .spawn(move || serve_inbound(stream, &hello, &inputs));
        }
    })?;
    Ok(())
}

/// One inbound connection: the handshake, then Raft messages and
/// forwarded requests until it closes.
fn serve_inbound(mut stream: TcpStream, hello: &Hello, inputs: &Sender<CoreInput>) {
    let _ = stream.set_read_timeout(Some(INBOUND_IDLE));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let peer = match read_frame(&mut stream) {
        Ok((KIND_HELLO, body)) => match serde_json::from_slice::<Hello>(&body) {
            Ok(peer) => peer,
            Err(_) => return,
        },
        _ => return,
    };
    if let Some(reason) = hello.mismatch(&peer) {
        tracing::error!(peer = peer.node_id, %reason, "refused a controller connection");
        let _ = write_frame(&mut stream, KIND_REFUSED, reason.as_bytes());
        return;
    }
    let Ok(body) = serde_json::to_vec(hello) else { return };
    if write_frame(&mut stream, KIND_HELLO, &body).is_err() {
        return;
    }
    let Ok(writer) = stream.try_clone() else { return };
    let link = Arc::new(Mutex::new(writer));
    let peer_raft_id = raft_id(peer.node_id);
    loop {
        let input = match read_frame(&mut stream) {
            Ok((KIND_RAFT, body)) => match Message::parse_from_bytes(&body) {
                Ok(message) if message.from == peer_raft_id => CoreInput::Peer(message),
                _ => break,
            },
            Ok((KIND_REQUEST, body)) => match serde_json::from_slice::<RequestFrame>(&body) {
                Ok(frame) => CoreInput::Remote { request: frame.request, link: link.clone(), id: frame.id },
                Err(_) => break,
            },
            _ => break,
        };
        if inputs.send(input).is_err() {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// What goes out to one voter.
#[derive(Debug)]
pub enum Outbound {
    /// A Raft message.
    Raft(Message),
    /// A request forwarded to it as the active controller.
    Request {
        /// The forwarding node's handle for the answer.
        forward_id: u64,
        /// The request.
        request: ControllerRequest,
    },
}

/// The outbound connections to the other voters.
#[derive(Debug, Default)]
pub struct PeerLinks {
    links: std::collections::BTreeMap<u64, SyncSender<Outbound>>,
}

impl PeerLinks {
    /// Starts a connection thread to each voter but `hello`'s node.
    pub fn start(voters: &[Voter], hello: &Hello, inputs: &Sender<CoreInput>, stopped: &Arc<AtomicBool>) -> PeerLinks {
        let mut links = std::collections::BTreeMap::new();
        for voter in voters.iter().filter(|v| v.id != hello.node_id) {
            let (tx, rx) = std::sync::mpsc::sync_channel(OUTBOUND_QUEUE);
            let (voter, hello, inputs, stopped) = (voter.clone(), hello.clone(), inputs.clone(), stopped.clone());
            let id = raft_id(voter.id);
            let spawned = std::thread::Builder::new()
                .name(format!("controller-to-{}", voter.id))
                .spawn(move || run_outbound(&voter, &hello, &rx, &inputs, &stopped));
            if spawned.is_ok() {
                links.insert(id, tx);
            }
        }
        PeerLinks { links }
    }

    /// Queues a frame for voter `to` (a raft id); false when it cannot be
    /// queued (unknown voter, queue full).
    pub fn send(&self, to: u64, outbound: Outbound) -> bool {
        let Some(link) = self.links.get(&to) else { return false };
        match link.try_send(outbound) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Connects to `voter`, shakes hands, and writes what is queued for it
/// until the node stops, connecting again after a failure.
fn run_outbound(
    voter: &Voter,
    hello: &Hello,
    rx: &Receiver<Outbound>,
    inputs: &Sender<CoreInput>,
    stopped: &AtomicBool,
) {
    let to = raft_id(voter.id);
    let mut failures = 0u64;
    while !stopped.load(Ordering::Acquire) {
        match connect(voter, hello, inputs) {
            Ok(stream) => {
                failures = 0;
                write_until_failure(stream, to, rx, inputs, stopped);
            }
            Err(error) => {
                if failures.is_multiple_of(50) {
                    tracing::debug!(voter = voter.id, %error, "cannot reach a controller voter");
                }
                failures += 1;
            }
        }
        let _ = inputs.send(CoreInput::Unreachable(to));
        // Frames queued while disconnected are stale: Raft sends again.
        while let Ok(outbound) = rx.try_recv() {
            fail_outbound(to, outbound, inputs);
        }
        std::thread::sleep(RECONNECT_PAUSE);
    }
}

/// Tells the core a frame did not go out.
fn fail_outbound(to: u64, outbound: Outbound, inputs: &Sender<CoreInput>) {
    match outbound {
        Outbound::Raft(message) if message.get_msg_type() == MessageType::MsgSnapshot => {
            let _ = inputs.send(CoreInput::SnapshotSent { voter: to, delivered: false });
        }
        Outbound::Raft(_) => {}
        Outbound::Request { forward_id, .. } => {
            let answer = ControllerAnswer::not_controller();
            let _ = inputs.send(CoreInput::ForwardAnswer { forward_id, answer });
        }
    }
}

fn connect(voter: &Voter, hello: &Hello, inputs: &Sender<CoreInput>) -> std::io::Result<TcpStream> {
    let address = (voter.host.as_str(), voter.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| invalid(format!("{} resolves to nothing", voter.host)))?;
    let mut stream = TcpStream::connect_timeout(&address, IO_TIMEOUT)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    write_frame(&mut stream, KIND_HELLO, &serde_json::to_vec(hello).map_err(invalid)?)?;
    match read_frame(&mut stream)? {
        (KIND_HELLO, body) => {
            let peer: Hello = serde_json::from_slice(&body).map_err(invalid)?;
            if let Some(reason) = hello.mismatch(&peer) {
                return Err(invalid(reason));
            }
            if peer.node_id != voter.id {
                return Err(invalid(format!(
                    "{}:{} is node {}, not voter {}",
                    voter.host, voter.port, peer.node_id, voter.id
                )));
            }
        }
        (KIND_REFUSED, body) => {
            let reason = String::from_utf8_lossy(&body).into_owned();
            let _ = inputs.send(CoreInput::Refused(reason.clone()));
            return Err(invalid(reason));
        }
        (kind, _) => return Err(invalid(format!("unexpected frame {kind} in the handshake"))),
    }
    // Answers to forwarded requests may take a while: no read timeout.
    stream.set_read_timeout(None)?;
    Ok(stream)
}

/// Writes queued frames; a reader thread beside it takes the answers to
/// forwarded requests. Returns when the connection fails or the node stops.
fn write_until_failure(
    mut stream: TcpStream,
    to: u64,
    rx: &Receiver<Outbound>,
    inputs: &Sender<CoreInput>,
    stopped: &AtomicBool,
) {
    let Ok(mut reader) = stream.try_clone() else { return };
    let answers = inputs.clone();
    let reading = std::thread::Builder::new().name("controller-answers".into()).spawn(move || {
        while let Ok((KIND_ANSWER, body)) = read_frame(&mut reader) {
            let Ok(frame) = serde_json::from_slice::<AnswerFrame>(&body) else { break };
            let answer = ControllerAnswer { reply: frame.reply, offset: frame.offset };
            if answers.send(CoreInput::ForwardAnswer { forward_id: frame.id, answer }).is_err() {
                break;
            }
        }
    });
    loop {
        if stopped.load(Ordering::Acquire) {
            break;
        }
        let outbound = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(outbound) => outbound,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let (kind, body, snapshot) = match &outbound {
            Outbound::Raft(message) => {
                let Ok(body) = message.write_to_bytes() else { continue };
                (KIND_RAFT, body, message.get_msg_type() == MessageType::MsgSnapshot)
            }
            Outbound::Request { forward_id, request } => {
                let frame = RequestFrame { id: *forward_id, request: request.clone() };
                let Ok(body) = serde_json::to_vec(&frame) else { continue };
                (KIND_REQUEST, body, false)
            }
        };
        if write_frame(&mut stream, kind, &body).is_err() {
            fail_outbound(to, outbound, inputs);
            break;
        }
        if snapshot {
            let _ = inputs.send(CoreInput::SnapshotSent { voter: to, delivered: true });
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    if let Ok(reading) = reading {
        let _ = reading.join();
    }
    // Forwards on this connection get no answer now: the core answers
    // them when it hears the voter is unreachable.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_or_cut_ones_are_refused() {
        let mut bytes = Vec::new();
        write_frame(&mut bytes, KIND_RAFT, b"hello").expect("writes");
        let (kind, body) = read_frame(&mut bytes.as_slice()).expect("reads");
        assert_eq!((kind, body.as_slice()), (KIND_RAFT, b"hello".as_slice()));
        let mut huge = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec();
        huge.push(KIND_RAFT);
        assert_eq!(read_frame(&mut huge.as_slice()).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        let cut = &bytes[..bytes.len() - 2];
        assert!(read_frame(&mut &cut[..]).is_err());
        let mut empty = 0u32.to_be_bytes().to_vec();
        empty.push(0);
        assert!(read_frame(&mut empty.as_slice()).is_err());
    }

    #[test]
    fn a_peer_of_another_cluster_or_voter_set_is_refused_by_name() {
        let voters = shardline_replication::node::parse_voters("2@b:9093,1@a:9093").unwrap();
        let ours = Hello { cluster_id: "c1".into(), node_id: 1, voters: canonical_voters(&voters) };
        assert_eq!(ours.voters, "1@a:9093,2@b:9093");
        let same = Hello { node_id: 2, ..ours.clone() };
        assert_eq!(ours.mismatch(&same), None);
        let other_cluster = Hello { cluster_id: "c2".into(), ..same.clone() };
        assert!(ours.mismatch(&other_cluster).unwrap().contains("cluster c2"));
        let negative = Hello { node_id: -4, ..same.clone() };
        assert!(ours.mismatch(&negative).unwrap().contains("negative"));
        let other_voters = Hello { voters: "1@a:9093,2@b:9093,3@c:9093".into(), ..same };
        assert!(ours.mismatch(&other_voters).unwrap().contains("voters disagree"));
    }
}
