//! `POST /account/pause` and `POST /account/resume`: hold or release every send of this
//! account; `PUT /account/vendor`: its id at the delivery vendor.
//!
//! Pause and resume: The worker applies it to the schedule when it reads the control from the
//! send queue (the edge cannot reach Redis); the summary item keeps the flag that
//! `GET /status` shows. Both carry the time of the request, so that an older control
//! never overrides a newer one, whatever order they arrive in.
//!
//! The control is queued first: a flag is set only for a control that will reach the
//! worker. The worker sets the same flag when it applies the control, so a flag write
//! that fails here is mended there.

use shared::api::{AccountHeld, VendorAccount};
use shared::queue::{AccountControl, Hold};

use crate::error::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::ledger;
use crate::platform::Platform;
use crate::queue;
use crate::services::Ctx;

pub async fn hold<P: Platform>(ctx: &Ctx<'_, P>, account: &str, hold: Hold) -> Result<ApiResponse, ApiError> {
    let control = AccountControl { control: hold, creator_id: account.to_owned(), at_ms: ctx.p.now_ms() };
    queue::control(ctx, &control).await?;
    if let Err(e) = ledger::set_paused(ctx, &control).await {
        // Queued: the worker sets the flag when it applies the control.
        ctx.p.log_error(&format!("paused flag not written yet: {e}"));
    }
    Ok(ApiResponse::json(200, &AccountHeld { success: true, paused: hold == Hold::Pause }))
}

/// Sets (or with `null` clears) the account's id at the vendor, read by the worker's
/// vendor adapter for the URL of each send (within its cache's life,
/// `worker-native/src/gateway/accounts.rs`); nothing else changes.
pub async fn vendor<P: Platform>(ctx: &Ctx<'_, P>, request: &ApiRequest, account: &str) -> Result<ApiResponse, ApiError> {
    let (_, body) = super::json_body(ctx, request).await?;
    let id = shared::validation::validate_vendor_account(body).map_err(ApiError::invalid)?;
    ledger::set_vendor_account(ctx, account, id.as_deref()).await?;
    Ok(ApiResponse::json(200, &VendorAccount { vendor_account_id: id }))
}
