//! The classic group protocol's APIs: JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup.

use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::super::Context;
use super::{client_host, on_coordinator, s};
use crate::groups::classic::Join;
use crate::groups::service::SyncAsk;

/// JoinGroup: waits until the rebalance completes.
pub async fn join_group(
    context: &Context,
    header: &RequestHeader,
    request: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    let group_id = request.group_id.0.to_string();
    let join = Join {
        token: 0,
        member_id: request.member_id.to_string(),
        instance_id: if version >= 5 { request.group_instance_id.as_ref().map(|i| i.to_string()) } else { None },
        client_id: header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        client_host: client_host(context),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 { request.rebalance_timeout_ms } else { request.session_timeout_ms },
        protocol_type: request.protocol_type.to_string(),
        protocols: request.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let reply = if group_id.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        let id = group_id.clone();
        on_coordinator(context, &group_id, move |state, at, _| async move { state.groups.join(at, &id, join).await })
            .await
            .and_then(|r| r)
    };
    let mut response = JoinGroupResponse::default();
    match reply {
        Ok(reply) => {
            response.error_code = reply.error.map_or(0, |e| e.code());
            response.generation_id = reply.generation;
            if version >= 7 {
                response.protocol_type = reply.protocol_type.map(s);
            }
            response.protocol_name = reply.protocol_name.map(s);
            if version < 7 && response.protocol_name.is_none() {
                response.protocol_name = Some(s(""));
            }
            response.leader = s(reply.leader);
            response.member_id = s(reply.member_id);
            if version >= 9 {
                response.skip_assignment = reply.skip_assignment;
            }
            response.members = reply
                .members
                .into_iter()
                .map(|m| {
                    let mut member = join_group_response::JoinGroupResponseMember::default();
                    member.member_id = s(m.member_id);
                    if version >= 5 {
                        member.group_instance_id = m.instance_id.map(s);
                    }
                    member.metadata = m.metadata;
                    member
                })
                .collect();
        }
        Err(error) => {
            response.error_code = error.code();
            response.generation_id = -1;
            response.member_id = request.member_id.clone();
            if version < 7 {
                response.protocol_name = Some(s(""));
            }
        }
    }
    response
}

/// SyncGroup: followers wait for the leader's assignment.
pub async fn sync_group(context: &Context, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let group_id = request.group_id.0.to_string();
    let ask = SyncAsk {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        generation: request.generation_id,
        protocol_type: if version >= 5 { request.protocol_type.as_ref().map(|t| t.to_string()) } else { None },
        protocol_name: if version >= 5 { request.protocol_name.as_ref().map(|n| n.to_string()) } else { None },
        assignments: request.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect(),
    };
    let id = group_id.clone();
    let reply =
        on_coordinator(context, &group_id, move |state, at, _| async move { state.groups.sync(at, &id, ask).await })
            .await
            .and_then(|r| r);
    let mut response = SyncGroupResponse::default();
    match reply {
        Ok(reply) => {
            response.error_code = reply.error.map_or(0, |e| e.code());
            if version >= 5 && reply.error.is_none() {
                response.protocol_type = reply.protocol_type.map(s);
                response.protocol_name = reply.protocol_name.map(s);
            }
            response.assignment = reply.assignment;
        }
        Err(error) => response.error_code = error.code(),
    }
    response
}

/// Heartbeat.
pub async fn heartbeat(context: &Context, request: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let id = group_id.clone();
    let result = on_coordinator(context, &group_id, move |state, at, _| async move {
        let instance = request.group_instance_id.as_deref();
        state.groups.heartbeat(at, &id, &request.member_id, instance, request.generation_id).await
    })
    .await
    .and_then(|r| r);
    let mut response = HeartbeatResponse::default();
    response.error_code = result.err().map_or(0, |e| e.code());
    response
}

/// LeaveGroup (v3+: several members, by member or instance id).
pub async fn leave_group(context: &Context, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group_id = request.group_id.0.to_string();
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|i| i.to_string())))
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let id = group_id.clone();
    let list = leaving.clone();
    let result =
        on_coordinator(context, &group_id, move |state, at, _| async move { state.groups.leave(at, &id, &list).await })
            .await
            .and_then(|r| r);
    let mut response = LeaveGroupResponse::default();
    match result {
        Ok(results) if version >= 3 => {
            response.members = leaving
                .into_iter()
                .zip(results)
                .map(|((member, instance), error)| {
                    let mut m = leave_group_response::MemberResponse::default();
                    m.member_id = s(member);
                    m.group_instance_id = instance.map(s);
                    m.error_code = error.map_or(0, |e| e.code());
                    m
                })
                .collect();
        }
        Ok(results) => response.error_code = results.first().copied().flatten().map_or(0, |e| e.code()),
        Err(error) => response.error_code = error.code(),
    }
    response
}
