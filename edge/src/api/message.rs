//! `GET /{id}`: one message of this account and where it is; `DELETE /{id}`: cancel it
//! while it is queued or scheduled.

use shared::api::{MessageView, RetryAccepted};
use shared::error::ErrorCode;

use super::message_id;
use crate::error::ApiError;
use crate::http::ApiResponse;
use crate::ledger::{self, CancelRefused};
use crate::platform::Platform;
use crate::queue;
use crate::services::Ctx;

/// A message of a campaign that the worker has not fanned out yet has no item: it is
/// read from its campaign's (its id names the campaign).
pub async fn message<P: Platform>(ctx: &Ctx<'_, P>, id: &str, account: &str) -> Result<ApiResponse, ApiError> {
    let id = message_id(id)?;
    let item = match ledger::get(ctx, account, id).await? {
        Some(item) => item,
        None => {
            let (campaign_id, index) = shared::campaign::campaign_of(id).ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
            let campaign = ledger::get_whole_campaign(ctx, account, &campaign_id).await?;
            campaign.and_then(|c| c.pending_item(index as usize)).ok_or_else(|| ApiError::new(ErrorCode::NotFound))?
        }
    };
    Ok(ApiResponse::json(200, &MessageView::at(item, ctx.p.now_ms())))
}

/// Cancels in the ledger (the truth: from then on the message cannot be claimed), then
/// tells the worker, which takes it off the schedule so that it neither waits there nor
/// costs its account a slot. Should that notice fail, the worker finds the message
/// canceled when it claims it, and gives its slot back.
pub async fn cancel<P: Platform>(ctx: &Ctx<'_, P>, id: &str, account: &str) -> Result<ApiResponse, ApiError> {
    let id = message_id(id)?;
    match ledger::cancel(ctx, account, id, ctx.p.now_ms()).await {
        Ok(item) => {
            if let Err(e) = queue::canceled(ctx, &item.message).await {
                ctx.p.log_error(&format!("cancel notice not queued: {e}"));
            }
            Ok(ApiResponse::json(200, &RetryAccepted { success: true, message_id: item.message.id, status: item.status }))
        }
        Err(CancelRefused::NotQueued(status)) => Err(ApiError::new(ErrorCode::NotCancelable)
            .with_message(format!("Only a queued or scheduled message can be canceled; this one is {}", status.as_str()))),
        Err(CancelRefused::MaybeSent) => Err(ApiError::new(ErrorCode::NotCancelable)
            .with_message("An attempt to send this message got no answer: it may have been delivered, so it is sent until that is known")),
        Err(CancelRefused::Aws(e)) => Err(e.into()),
        Err(_) => Err(ApiError::new(ErrorCode::NotFound)),
    }
}
