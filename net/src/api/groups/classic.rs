//! The classic group protocol's APIs: JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup.

use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::super::Context;
use super::{client_host, on_coordinator, s};
use crate::groups::classic::{ClassicGroup, Join};
use crate::groups::coordinator::Protocol;
use crate::groups::{self, wall_ms};

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
        on_coordinator(context, &group_id, move |state, partition, _| async move {
            let coordinator = groups::coordinator(&state, partition).await?;
            let token = state.groups.token();
            let rx = state.groups.wait_join(token);
            let effects = {
                let mut c = coordinator.borrow_mut();
                let limits = c.classic_limits;
                let group = c.group_or_create(&id, wall_ms());
                if let Protocol::Consumer(consumer) = &group.protocol {
                    // An empty KIP-848 group may turn classic, as in Kafka.
                    if !consumer.is_empty() {
                        return Err(ResponseError::InconsistentGroupProtocol);
                    }
                    let mut classic = ClassicGroup::new(limits);
                    classic.restore_generation(consumer.epoch());
                    group.protocol = Protocol::Classic(classic);
                }
                let Protocol::Classic(classic) = &mut group.protocol else { unreachable!("converted above") };
                let mut effects = Vec::new();
                let random = uuid::Uuid::new_v4().as_u64_pair().0;
                classic.join(Join { token, ..join }, state.groups.now(), random, &mut effects);
                if !classic.is_empty() {
                    group.empty_since_ms = None;
                }
                effects
            };
            groups::run_effects(&state, partition, &id, effects);
            rx.await.map_err(|_| ResponseError::CoordinatorNotAvailable)
        })
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
    let id = group_id.clone();
    let reply = on_coordinator(context, &group_id, move |state, partition, _| async move {
        let coordinator = groups::coordinator(&state, partition).await?;
        let token = state.groups.token();
        let rx = state.groups.wait_sync(token);
        let effects = {
            let mut c = coordinator.borrow_mut();
            let Some(group) = c.groups.get_mut(&id) else { return Err(ResponseError::UnknownMemberId) };
            let Protocol::Classic(classic) = &mut group.protocol else {
                return Err(ResponseError::InconsistentGroupProtocol);
            };
            let mut effects = Vec::new();
            let assignments =
                request.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect();
            classic.sync(
                token,
                &request.member_id,
                request.group_instance_id.as_deref(),
                request.generation_id,
                if version >= 5 { request.protocol_type.as_deref() } else { None },
                if version >= 5 { request.protocol_name.as_deref() } else { None },
                assignments,
                state.groups.now(),
                wall_ms(),
                &mut effects,
            );
            effects
        };
        groups::run_effects(&state, partition, &id, effects);
        rx.await.map_err(|_| ResponseError::CoordinatorNotAvailable)
    })
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
    let result = on_coordinator(context, &group_id, move |state, partition, _| async move {
        let coordinator = groups::coordinator(&state, partition).await?;
        let mut c = coordinator.borrow_mut();
        let Some(group) = c.groups.get_mut(&id) else { return Err(ResponseError::UnknownMemberId) };
        match &mut group.protocol {
            Protocol::Classic(classic) => classic.heartbeat(
                &request.member_id,
                request.group_instance_id.as_deref(),
                request.generation_id,
                state.groups.now(),
            ),
            Protocol::Consumer(_) => Err(ResponseError::UnknownMemberId),
        }
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
    let result = on_coordinator(context, &group_id, move |state, partition, _| async move {
        let coordinator = groups::coordinator(&state, partition).await?;
        let (results, effects) = {
            let mut c = coordinator.borrow_mut();
            let Some(group) = c.groups.get_mut(&id) else { return Err(ResponseError::UnknownMemberId) };
            let Protocol::Classic(classic) = &mut group.protocol else { return Err(ResponseError::UnknownMemberId) };
            let mut effects = Vec::new();
            let now = state.groups.now();
            let results: Vec<Option<ResponseError>> = list
                .iter()
                .map(|(member, instance)| classic.leave(member, instance.as_deref(), now, &mut effects).err())
                .collect();
            if classic.is_empty() && group.empty_since_ms.is_none() {
                group.empty_since_ms = Some(wall_ms());
            }
            (results, effects)
        };
        groups::run_effects(&state, partition, &id, effects);
        Ok(results)
    })
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
