//! `GET /campaigns/{id}`, `GET /campaigns?limit=&cursor=` and `DELETE /campaigns/{id}`:
//! follow a mass message and stop it. Progress is the campaign item's counters, which
//! the worker moves with each message's outcome.

use shared::campaign::{CampaignPage, CampaignRef};
use shared::error::ErrorCode;

use super::{message_id, now_rfc3339, page_params};
use crate::error::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::ledger::{self, CancelRefused};
use crate::platform::Platform;
use crate::queue;
use crate::services::Ctx;

pub async fn campaign<P: Platform>(ctx: &Ctx<'_, P>, id: &str, account: &str) -> Result<ApiResponse, ApiError> {
    let item = ledger::get_campaign(ctx, account, message_id(id)?).await?.ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    Ok(ApiResponse::json(200, &item.view(ctx.p.now_ms(), ctx.config().rate)))
}

pub async fn list<P: Platform>(ctx: &Ctx<'_, P>, request: &ApiRequest, account: &str) -> Result<ApiResponse, ApiError> {
    let (limit, cursor) = page_params(request, account)?;
    let (items, next) = ledger::campaign_page(ctx, account, limit, cursor.as_ref()).await?;
    let now_ms = ctx.p.now_ms();
    let campaigns = items.iter().map(|c| c.view(now_ms, ctx.config().rate)).collect();
    Ok(ApiResponse::json(200, &CampaignPage { campaigns, next_cursor: next.map(|c| c.encode(account)) }))
}

/// Marks the campaign canceled in the ledger (the truth: from then on none of its
/// messages is claimed for sending but one whose claim had begun:
/// `machine::CAMPAIGN_NOT_CANCELED`), then tells the worker, which takes what waits off
/// the schedule and marks each message. Should that notice fail, the cancel stands all
/// the same (as a message's, `message::cancel`): the worker's first claim of one of its
/// messages is refused and takes the rest off the schedule (`worker-native/src/cancel.rs`);
/// a repeated cancel tells the worker again.
pub async fn cancel<P: Platform>(ctx: &Ctx<'_, P>, id: &str, account: &str) -> Result<ApiResponse, ApiError> {
    let item = match ledger::cancel_campaign(ctx, account, message_id(id)?, &now_rfc3339(ctx)).await {
        Ok(item) => item,
        Err(CancelRefused::Completed) => {
            return Err(ApiError::new(ErrorCode::NotCancelable).with_message("Every message of this campaign is sent, failed or canceled already"))
        }
        Err(CancelRefused::Aws(e)) => return Err(e.into()),
        Err(_) => return Err(ApiError::new(ErrorCode::NotFound)),
    };
    let reference = CampaignRef { campaign: item.campaign.id.clone(), creator_id: account.to_owned(), cancel: true };
    // Priority 0: ahead of any message, as account controls.
    if let Err(e) = queue::campaign(ctx, &reference, 0).await {
        ctx.p.log_error(&format!("campaign cancel notice not queued: {e}"));
    }
    Ok(ApiResponse::json(200, &item.view(ctx.p.now_ms(), ctx.config().rate)))
}
