//! One client connection, on the shard that accepted it: read a bounded
//! frame, decode header and body (kafka-protocol, patched never to size
//! allocations from wire lengths), handle, answer in order. Like Kafka, one
//! request per connection is handled at a time. A malformed frame closes
//! this connection only, logged once (within the shard's [`LogLimit`]). A
//! connection's first request may be at most [`FIRST_REQUEST_MAX_BYTES`]:
//! until a peer has had one well-formed request answered (normally its
//! ApiVersions), it cannot make the broker take in a large frame.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use compio::net::TcpStream;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use shardline_engine::runtime::mesh::Mesh;

use crate::api::fetch_encode::{encode_fetch_reply, FrameSegments, Segment};
use crate::api::{self, Context};
use crate::server::frame::{read_frame, write_frame, FrameError, FrameLimits};
use crate::server::limits::ConnectionSlot;
use crate::server::log_limit::LogLimit;
use crate::shard::{BrokerShared, ShardState};

/// Why a connection is closed without an answer.
#[derive(Debug, thiserror::Error)]
enum Malformed {
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("unsupported version {1} of {0:?}")]
    UnsupportedVersion(ApiKey, i16),
    #[error("cannot decode request: {0}")]
    Decode(String),
    #[error("an acks=0 produce failed")]
    AcksZeroFailed,
}

/// Largest request a connection may send before it has had one answered.
pub const FIRST_REQUEST_MAX_BYTES: usize = 512 * 1024;

/// Where a connection runs: its peer, its shard, its admission.
pub struct ConnectionContext {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Broker-wide state.
    pub shared: Arc<BrokerShared>,
    /// The accepting shard's state.
    pub state: Rc<ShardState>,
    /// The shard mesh.
    pub mesh: Mesh<ShardState>,
    /// This connection's place in the connection limits (freed on return).
    pub slot: ConnectionSlot,
    /// The shard's bound on "closing connection" lines.
    pub bad_connection_log: Rc<LogLimit>,
}

/// Serves `stream` until the peer closes or idles, a frame is malformed, or
/// the broker shuts down.
pub async fn serve_connection(mut stream: TcpStream, connection: ConnectionContext) {
    let ConnectionContext { peer, shared, state, mesh, slot: _slot, bad_connection_log } = connection;
    let context = Context { shared: shared.clone(), state: state.clone(), mesh, peer };
    let idle = Duration::from_millis(u64::try_from(shared.config.connections_max_idle_ms).unwrap_or(u64::MAX));
    let closing = |why: &str, error: &dyn std::fmt::Display| {
        if let Some(suppressed) = bad_connection_log.admit(state.clock.now_ms()) {
            tracing::warn!(%peer, %error, suppressed, "closing connection: {why}");
        }
    };
    let mut answered_one = false;
    let mut pipe = None;
    loop {
        if state.shutting_down.get() {
            return;
        }
        let max_bytes = if answered_one {
            shared.config.socket_request_max_bytes
        } else {
            shared.config.socket_request_max_bytes.min(FIRST_REQUEST_MAX_BYTES)
        };
        let frame = match read_frame(&mut stream, FrameLimits { max_bytes, idle }, &*state.clock).await {
            Ok(frame) => frame,
            Err(FrameError::Closed) => return,
            Err(FrameError::Idle(idle)) => {
                tracing::debug!(%peer, ?idle, "closing idle connection");
                return;
            }
            Err(error) => {
                closing("bad frame", &error);
                return;
            }
        };
        state.in_flight.set(state.in_flight.get() + 1);
        let outcome = handle_frame(&context, frame).await;
        state.in_flight.set(state.in_flight.get() - 1);
        if state.in_flight.get() == 0 {
            state.idle.notify_all();
        }
        match outcome {
            Ok(Some(response)) => {
                if let Err(error) = write_frame(&mut stream, response, &mut pipe).await {
                    tracing::debug!(%peer, %error, "write failed");
                    return;
                }
                answered_one = true;
            }
            Ok(None) => answered_one = true,
            Err(error) => {
                closing("malformed request", &error);
                return;
            }
        }
    }
}

/// Decodes, handles and encodes one request; `None` when no response is due
/// (acks=0 produce).
async fn handle_frame(context: &Context, frame: Bytes) -> Result<Option<FrameSegments>, Malformed> {
    let mut peek = &frame[..];
    let api_key = peek.get_i16();
    let version = peek.get_i16();
    let correlation_id = peek.get_i32();
    let key = ApiKey::try_from(api_key).map_err(|_| Malformed::UnknownApi(api_key))?;
    if !api::is_supported(key, version) {
        if key == ApiKey::ApiVersions {
            // KIP-511: answer in the v0 layout so the client retries lower.
            return Ok(Some(vec![Segment::Bytes(api::unsupported_api_versions(correlation_id).freeze())]));
        }
        return Err(Malformed::UnsupportedVersion(key, version));
    }
    let mut body = frame.clone();
    let header_version = key.request_header_version(version);
    let mut header = RequestHeader::decode(&mut body, header_version).map_err(|e| Malformed::Decode(e.to_string()))?;
    let request = RequestKind::decode(key, &mut body, version).map_err(|e| Malformed::Decode(e.to_string()))?;
    // The handler may take the frame's bytes back (Produce): only the
    // request itself keeps views of it.
    drop(body);
    header.client_id = header.client_id.map(|id| StrBytes::from_string(id.to_string()));
    let response = match api::handle(context, &header, request, frame).await {
        api::Answer::Respond(response) => response,
        api::Answer::Fetch(reply) => {
            let header_version = key.response_header_version(version);
            return match encode_fetch_reply(header.correlation_id, header_version, &reply, version) {
                Ok(frame) => Ok(Some(frame)),
                Err(error) => {
                    tracing::error!(version, %error, "cannot encode fetch response");
                    Err(Malformed::Decode(error.to_string()))
                }
            };
        }
        api::Answer::Silent => return Ok(None),
        api::Answer::Close => return Err(Malformed::AcksZeroFailed),
    };
    let mut out = BytesMut::with_capacity(256);
    out.extend_from_slice(&[0u8; 4]);
    let response_header = {
        let mut h = ResponseHeader::default();
        h.correlation_id = header.correlation_id;
        h
    };
    let encoded = response_header
        .encode(&mut out, key.response_header_version(version))
        .and_then(|_| response.encode(&mut out, version));
    if let Err(error) = encoded {
        // Our own response failed to encode: a bug, never the client's fault.
        tracing::error!(?key, version, %error, "cannot encode response");
        return Err(Malformed::Decode(format!("response encoding failed: {error}")));
    }
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(Some(vec![Segment::Bytes(out.freeze())]))
}
