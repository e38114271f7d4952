//! `GET /failed?limit=&cursor=`: this account's failed messages, newest first.

use futures_util::future::join;
use shared::api::FailedPage;
use shared::error::FieldError;

use crate::error::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::ledger::{self, Cursor};
use crate::platform::Platform;
use crate::services::Ctx;

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

pub async fn failed<P: Platform>(ctx: &Ctx<'_, P>, request: &ApiRequest, account: &str) -> Result<ApiResponse, ApiError> {
    let mut bad = Vec::new();
    let limit = match request.query_param("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<u32>() {
            Ok(l) if (1..=MAX_LIMIT).contains(&l) => l,
            _ => {
                bad.push(FieldError::new("limit", format!("must be a whole number from 1 to {MAX_LIMIT}")));
                DEFAULT_LIMIT
            }
        },
    };
    let cursor = match request.query_param("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Cursor::decode(&c, account).or_else(|| {
            bad.push(FieldError::new("cursor", "is not a cursor returned by this API"));
            None
        }),
    };
    if !bad.is_empty() {
        return Err(ApiError::invalid(bad));
    }
    let (page, summary) = join(ledger::failed_page(ctx, account, limit, cursor.as_ref()), ledger::summary(ctx, account)).await;
    let (items, next) = page?;
    let failed_messages: Vec<_> = items.into_iter().map(Into::into).collect();
    // The summary counter is an estimate; never report fewer than this page shows.
    let total = summary?.failed.max(failed_messages.len() as u64);
    Ok(ApiResponse::json(200, &FailedPage { failed_messages, total, next_cursor: next.map(|c| c.encode(account)) }))
}
