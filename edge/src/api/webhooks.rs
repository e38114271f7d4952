//! `POST /webhooks`, `GET /webhooks`, `DELETE /webhooks/{id}`,
//! `POST /webhooks/{id}/rotate`, `POST /webhooks/{id}/enable` and
//! `POST /webhooks/{id}/test`: the account's webhook endpoints (`shared::webhook`);
//! `GET /webhooks/{id}/deliveries` and `POST /webhooks/{id}/deliveries/{eventId}/redeliver`:
//! what became of the events sent to one (the delivery log), and one sent again.
//! A new secret is shown once, in the answer that made it; a rotated-out secret goes on
//! signing beside the new one for `ROTATION_GRACE_MS`, so a receiver can move to the
//! new one without a delivery failing its check.

use shared::error::ErrorCode;
use shared::webhook::{self, Endpoint, EndpointList, EndpointWithSecret, Secret, TestEvent, TestQueued, MAX_ENDPOINTS, ROTATION_GRACE_MS, SECRET_BYTES};

use super::now_rfc3339;
use crate::error::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::ledger;
use crate::platform::Platform;
use crate::queue;
use crate::services::Ctx;

pub async fn create<P: Platform>(ctx: &Ctx<'_, P>, request: &ApiRequest, account: &str) -> Result<ApiResponse, ApiError> {
    let (_, body) = super::json_body(ctx, request).await?;
    let new = webhook::validate_endpoint(body, ctx.config().webhook_loopback).map_err(ApiError::invalid)?;
    // Counted, then written: two requests at once may make one endpoint more than the
    // limit, which bounds the work an account makes per event, not a guarantee.
    if ledger::endpoints(ctx, account).await?.len() >= MAX_ENDPOINTS {
        return Err(ApiError::new(ErrorCode::WebhookLimitReached)
            .with_message(format!("This account has {MAX_ENDPOINTS} webhook endpoints, as many as it may: delete one first")));
    }
    let now_ms = ctx.p.now_ms();
    let endpoint = Endpoint {
        id: webhook::endpoint_id(now_ms, random(ctx)),
        url: new.url,
        events: new.events,
        created_at: now_rfc3339(ctx),
        secret: new_secret(ctx),
        previous: None,
        disabled: None,
    };
    ledger::put_endpoint(ctx, account, &endpoint).await?;
    Ok(ApiResponse::json(201, &EndpointWithSecret { endpoint: endpoint.view(now_ms), secret: endpoint.secret.reveal() }))
}

pub async fn list<P: Platform>(ctx: &Ctx<'_, P>, account: &str) -> Result<ApiResponse, ApiError> {
    let now_ms = ctx.p.now_ms();
    let endpoints = ledger::endpoints(ctx, account).await?.iter().map(|e| e.view(now_ms)).collect();
    Ok(ApiResponse::json(200, &EndpointList { endpoints }))
}

pub async fn delete<P: Platform>(ctx: &Ctx<'_, P>, id: &str, account: &str) -> Result<ApiResponse, ApiError> {
    if !ledger::delete_endpoint(ctx, account, endpoint_id(id)?).await? {
        return Err(ApiError::new(ErrorCode::NotFound));
    }
    Ok(ApiResponse::empty(204))
}

/// A new secret; the current one signs beside it until the grace ends (one rotated out
/// before is dropped: two rotations within the grace leave the last two secrets).
pub async fn rotate<P: Platform>(ctx: &Ctx<'_, P>, id: &str, account: &str) -> Result<ApiResponse, ApiError> {
    let id = endpoint_id(id)?;
    // Two rotations at once: the second is applied on what the first left.
    for _ in 0..3 {
        let was = ledger::endpoint(ctx, account, id).await?.ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
        let now_ms = ctx.p.now_ms();
        let updated = Endpoint { secret: new_secret(ctx), previous: Some((was.secret.clone(), now_ms + ROTATION_GRACE_MS)), ..was.clone() };
        if ledger::replace_endpoint(ctx, account, &was, &updated).await? {
            return Ok(ApiResponse::json(200, &EndpointWithSecret { endpoint: updated.view(now_ms), secret: updated.secret.reveal() }));
        }
    }
    Err(ApiError { log: Some("webhook secret rotations kept colliding".into()), ..ApiError::new(ErrorCode::UpstreamUnavailable) })
}

/// Delivers events to an endpoint its receiver said was gone (a 410) again.
pub async fn enable<P: Platform>(ctx: &Ctx<'_, P>, id: &str, account: &str) -> Result<ApiResponse, ApiError> {
    let endpoint = ledger::enable_endpoint(ctx, account, endpoint_id(id)?).await?.ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    Ok(ApiResponse::json(200, &endpoint.view(ctx.p.now_ms())))
}

/// Queues a test event for this endpoint (`webhook.test`, data `{"endpointId"}`): the
/// worker signs and sends it as any event, so a tenant can check its receiver.
pub async fn test<P: Platform>(ctx: &Ctx<'_, P>, id: &str, account: &str) -> Result<ApiResponse, ApiError> {
    let id = endpoint_id(id)?;
    ledger::endpoint(ctx, account, id).await?.ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    let now_ms = ctx.p.now_ms();
    let test = TestEvent { creator_id: account.to_owned(), endpoint_id: id.to_owned(), event_id: webhook::event_id(now_ms, random(ctx)), at_ms: now_ms };
    queue::webhook_test(ctx, &test).await?;
    Ok(ApiResponse::json(202, &TestQueued { event_id: test.event_id }))
}

/// The deliveries to this endpoint, newest first: each event's state, attempts, last
/// answer and next attempt.
pub async fn deliveries<P: Platform>(ctx: &Ctx<'_, P>, id: &str, account: &str, limit: u32) -> Result<ApiResponse, ApiError> {
    let id = endpoint_id(id)?;
    ledger::endpoint(ctx, account, id).await?.ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    let deliveries = ledger::deliveries(ctx, account, id, limit as usize).await?;
    Ok(ApiResponse::json(200, &serde_json::json!({"deliveries": deliveries})))
}

/// Sends an event to this endpoint again (one it was for: delivered, failed or given
/// up): a worker's next sweep delivers it, with its id unchanged.
pub async fn redeliver<P: Platform>(ctx: &Ctx<'_, P>, id: &str, event_id: &str, account: &str) -> Result<ApiResponse, ApiError> {
    let id = endpoint_id(id)?;
    ledger::endpoint(ctx, account, id).await?.ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    if !ledger::redeliver(ctx, account, id, event_id, ctx.p.now_ms()).await? {
        return Err(ApiError::new(ErrorCode::NotFound).with_message(format!("No event {event_id} was sent to endpoint {id}")));
    }
    Ok(ApiResponse::json(202, &serde_json::json!({"eventId": event_id, "state": webhook::DeliveryState::Redelivering})))
}

fn new_secret<P: Platform>(ctx: &Ctx<'_, P>) -> Secret {
    Secret::from_bytes(random::<P, SECRET_BYTES>(ctx))
}

/// `N` random bytes (a secret, or the random part of an id).
fn random<P: Platform, const N: usize>(ctx: &Ctx<'_, P>) -> [u8; N] {
    let mut bytes = [0u8; N];
    ctx.p.fill_random(&mut bytes);
    bytes
}

/// A 404 for ids that cannot be endpoint ids: they never reach the ledger.
fn endpoint_id(id: &str) -> Result<&str, ApiError> {
    if webhook::is_endpoint_id(id) {
        Ok(id)
    } else {
        Err(ApiError::new(ErrorCode::NotFound))
    }
}
