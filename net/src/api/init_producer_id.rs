//! InitProducerId (v0–4). Idempotent producers get a fresh producer id,
//! epoch 0, unique across restarts (`crate::producer_ids`: this shard's
//! block of ids, refilled from the allocating shard); as in Kafka, a
//! producer without a transactional id that asks again (KIP-360 epoch bump
//! after an error) gets a new id. A transactional id goes to its
//! transaction coordinator (`super::transactions`).

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::Context;
use crate::route::ControllerProducerIds;
use crate::txn::service::ProducerIdSource;

/// Handles InitProducerId.
pub async fn handle(context: &Context, request: InitProducerIdRequest, version: i16) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if let Some(id) = request.transactional_id.as_ref().filter(|id| !id.is_empty()) {
        let expected =
            (version >= 3 && request.producer_id.0 >= 0).then_some((request.producer_id.0, request.producer_epoch));
        let result =
            super::transactions::init_transactional(context, id.to_string(), request.transaction_timeout_ms, expected)
                .await;
        match result {
            Ok((producer_id, epoch)) => {
                response.producer_id = ProducerId(producer_id);
                response.producer_epoch = epoch;
            }
            Err(error) => {
                // Before v4 a fenced producer is told INVALID_PRODUCER_EPOCH.
                let error = if error == ResponseError::ProducerFenced && version < 4 {
                    ResponseError::InvalidProducerEpoch
                } else {
                    error
                };
                response.error_code = error.code();
            }
        }
        return response;
    }
    let ids = ControllerProducerIds { state: context.state.clone(), shared: context.shared.clone() };
    match ids.allocate().await {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(error) => response.error_code = error.code(),
    }
    response
}
