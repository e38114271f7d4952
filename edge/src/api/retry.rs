//! `POST /{id}/retry`: a failed message of this account goes back to the queue, once, as
//! a new generation. Its account's (and campaign's) `failed` counts drop when the worker
//! counts the new generation (`shared::ledger::machine::count_scheduled`).

use shared::api::RetryAccepted;
use shared::error::ErrorCode;
use shared::ledger::MessageStatus;

use super::{message_id, now_rfc3339, require_enabled, taken_anyway};
use crate::error::ApiError;
use crate::http::ApiResponse;
use crate::ledger::{self, RetryRefused};
use crate::platform::Platform;
use crate::queue;
use crate::services::Ctx;

pub async fn retry<P: Platform>(ctx: &Ctx<'_, P>, id: &str, account: &str) -> Result<ApiResponse, ApiError> {
    require_enabled(ctx)?;
    let id = message_id(id)?;
    let requeued = match ledger::requeue_failed(ctx, account, id, &now_rfc3339(ctx)).await {
        Ok(item) => item,
        Err(RetryRefused::NotFound) => return Err(ApiError::new(ErrorCode::NotFound)),
        Err(RetryRefused::NotFailed(status)) => {
            return Err(ApiError::new(ErrorCode::NotRetryable).with_message(format!("Only a failed message can be retried; this one is {}", status.as_str())))
        }
        Err(RetryRefused::Aws(e)) => return Err(e.into()),
    };
    let item = &requeued.after;
    if let Err(e) = queue::enqueue(ctx, &item.message).await {
        // Put it back as it was, so it stays visible and retryable; unless a worker took
        // it meanwhile: the queue had it and only its answer was lost.
        if !taken_anyway(ctx, &e, ledger::mark_failed(ctx, &requeued.before, item.message.generation).await) {
            return Err(e.into());
        }
    }
    Ok(ApiResponse::json(200, &RetryAccepted { success: true, message_id: item.message.id.clone(), status: MessageStatus::Queued }))
}
