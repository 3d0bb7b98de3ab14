//! InitProducerId (v0–4) for idempotent producers: a fresh producer id,
//! epoch 0, unique across restarts (`crate::producer_ids`). As in Kafka, a
//! producer without a transactional id that asks again (KIP-360 epoch bump
//! after an error) gets a new id. Transactional ids need a transaction
//! coordinator, which this broker does not have yet: such a request is
//! refused (and FindCoordinator refuses key type 1), never faked.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::Context;

/// Handles InitProducerId.
pub fn handle(context: &Context, request: InitProducerIdRequest, _version: i16) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if request.transactional_id.as_ref().is_some_and(|id| !id.is_empty()) {
        response.error_code = ResponseError::InvalidRequest.code();
        return response;
    }
    match context.shared.producer_ids.allocate() {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(error) => {
            tracing::error!(%error, "allocating a producer id");
            response.error_code = ResponseError::CoordinatorNotAvailable.code();
        }
    }
    response
}
