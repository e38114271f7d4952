//! `GET /failed?limit=&cursor=`: this account's failed messages, newest first.

use futures_util::future::join;
use shared::api::FailedPage;

use super::page_params;
use crate::error::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::ledger;
use crate::platform::Platform;
use crate::services::Ctx;

pub async fn failed<P: Platform>(ctx: &Ctx<'_, P>, request: &ApiRequest, account: &str) -> Result<ApiResponse, ApiError> {
    let (limit, cursor) = page_params(request, account)?;
    let (page, summary) = join(ledger::failed_page(ctx, account, limit, cursor.as_ref()), ledger::summary(ctx, account)).await;
    let (items, next) = page?;
    let failed_messages: Vec<_> = items.into_iter().map(Into::into).collect();
    // The summary counter is an estimate; never report fewer than this page shows.
    let total = summary?.failed.max(failed_messages.len() as u64);
    Ok(ApiResponse::json(200, &FailedPage { failed_messages, total, next_cursor: next.map(|c| c.encode(account)) }))
}
