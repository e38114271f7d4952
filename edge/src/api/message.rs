//! `GET /{id}`: one message of this account and where it is.

use shared::api::MessageView;
use shared::error::ErrorCode;

use super::message_id;
use crate::error::ApiError;
use crate::http::ApiResponse;
use crate::ledger;
use crate::platform::Platform;
use crate::services::Ctx;

pub async fn message<P: Platform>(ctx: &Ctx<'_, P>, id: &str, account: &str) -> Result<ApiResponse, ApiError> {
    let item = ledger::get(ctx, account, message_id(id)?).await?.ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    Ok(ApiResponse::json(200, &MessageView::at(item, ctx.p.now_ms())))
}
