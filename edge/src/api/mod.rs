//! Routing of `/api/onlyfans/messaging/*` and what every authenticated route shares:
//! the bearer token, the per-account API-call limit, the error JSON.

mod account;
mod campaigns;
mod failed;
mod message;
mod retry;
mod send;
mod status;
mod webhooks;

use shared::error::{ErrorCode, FieldError};

use crate::auth::bearer_token;
use crate::aws::AwsError;
use crate::cors;
use crate::error::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::ledger::Cursor;
use crate::platform::Platform;
use crate::services::{Ctx, Edge};

pub const BASE_PATH: &str = "/api/onlyfans/messaging";
/// The API's description (OpenAPI 3.1), served as is at `openapi.json`, no token needed:
/// the one source of truth the end-to-end tests check every answer against.
const OPENAPI: &str = include_str!("../../openapi.json");
/// Workers rate-limiting bindings: one for calls that queue, one for reads.
pub const SEND_LIMITER: &str = "SEND_RATE_LIMITER";
pub const READ_LIMITER: &str = "READ_RATE_LIMITER";
/// The period of both bindings (Cloudflare allows 10 or 60 s).
const LIMITER_PERIOD_SECONDS: u64 = 60;

/// Answers one request. `edge` is the isolate state, or the settings that are wrong.
pub async fn handle<P: Platform>(p: &P, edge: Result<&Edge, &[FieldError]>, request: ApiRequest) -> ApiResponse {
    let origins: &[String] = edge.map_or(&[], |e| &e.config.cors_origins);
    if cors::is_preflight(&request) {
        return cors::preflight(origins, &request);
    }
    let mut response = match route(p, edge, &request).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(detail) = &e.log {
                p.log_error(&format!("{} {}: {detail}", request.method, request.path));
            }
            e.into_response()
        }
    };
    cors::decorate(origins, &request, &mut response);
    response
}

async fn route<P: Platform>(p: &P, edge: Result<&Edge, &[FieldError]>, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let Some(rest) = request.path.strip_prefix(BASE_PATH).and_then(|r| r.strip_prefix('/')) else {
        return Err(ApiError::new(ErrorCode::NotFound));
    };
    let method = request.method.as_str();
    if let Some(page) = crate::console::asset(rest, method) {
        return Ok(page);
    }
    let rest = rest.trim_end_matches('/');
    if rest == "openapi.json" {
        allow(method, &["GET", "HEAD"])?;
        return Ok(ApiResponse::raw_json(200, OPENAPI.to_owned()));
    }
    if rest == "health" || rest == "test" {
        allow(method, &["GET", "HEAD"])?;
        return Ok(ApiResponse::json(200, &serde_json::json!({"status": "ok", "timestamp": shared::time::rfc3339_ms(p.now_ms())})));
    }
    let edge = edge.map_err(|bad| ApiError {
        details: bad.to_vec(),
        log: Some(format!("settings: {}", bad.iter().map(|f| format!("{} {}", f.field, f.message)).collect::<Vec<_>>().join("; "))),
        ..ApiError::new(ErrorCode::NotConfigured)
    })?;
    let ctx = Ctx { p, edge };
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["send"] => {
            allow(method, &["POST"])?;
            let account = authenticate(&ctx, request, SEND_LIMITER).await?;
            send::send(&ctx, request, &account).await
        }
        ["status"] => {
            allow(method, &["GET"])?;
            let account = authenticate(&ctx, request, READ_LIMITER).await?;
            status::status(&ctx, &account).await
        }
        ["failed"] => {
            allow(method, &["GET"])?;
            let account = authenticate(&ctx, request, READ_LIMITER).await?;
            failed::failed(&ctx, request, &account).await
        }
        ["account", action @ ("pause" | "resume")] => {
            allow(method, &["POST"])?;
            let account = authenticate(&ctx, request, SEND_LIMITER).await?;
            let hold = if *action == "pause" { shared::queue::Hold::Pause } else { shared::queue::Hold::Resume };
            account::hold(&ctx, &account, hold).await
        }
        ["account", "vendor"] => {
            allow(method, &["PUT"])?;
            let account = authenticate(&ctx, request, SEND_LIMITER).await?;
            account::vendor(&ctx, request, &account).await
        }
        ["campaigns"] => {
            allow(method, &["GET"])?;
            let account = authenticate(&ctx, request, READ_LIMITER).await?;
            campaigns::list(&ctx, request, &account).await
        }
        ["campaigns", id] if !id.is_empty() => {
            allow(method, &["GET", "DELETE"])?;
            let account = authenticate(&ctx, request, limiter_of(method)).await?;
            match method {
                "DELETE" => campaigns::cancel(&ctx, id, &account).await,
                _ => campaigns::campaign(&ctx, id, &account).await,
            }
        }
        ["webhooks"] => {
            allow(method, &["GET", "POST"])?;
            let account = authenticate(&ctx, request, limiter_of(method)).await?;
            match method {
                "POST" => webhooks::create(&ctx, request, &account).await,
                _ => webhooks::list(&ctx, &account).await,
            }
        }
        ["webhooks", id] if !id.is_empty() => {
            allow(method, &["DELETE"])?;
            let account = authenticate(&ctx, request, SEND_LIMITER).await?;
            webhooks::delete(&ctx, id, &account).await
        }
        ["webhooks", id, "deliveries"] => {
            allow(method, &["GET"])?;
            let account = authenticate(&ctx, request, READ_LIMITER).await?;
            let mut bad = Vec::new();
            let limit = limit_param(request, &mut bad);
            if !bad.is_empty() {
                return Err(ApiError::invalid(bad));
            }
            webhooks::deliveries(&ctx, id, &account, limit).await
        }
        ["webhooks", id, "deliveries", event, "redeliver"] => {
            allow(method, &["POST"])?;
            let account = authenticate(&ctx, request, SEND_LIMITER).await?;
            webhooks::redeliver(&ctx, id, event, &account).await
        }
        ["webhooks", id, action @ ("rotate" | "enable" | "test")] => {
            allow(method, &["POST"])?;
            let account = authenticate(&ctx, request, SEND_LIMITER).await?;
            match *action {
                "rotate" => webhooks::rotate(&ctx, id, &account).await,
                "enable" => webhooks::enable(&ctx, id, &account).await,
                _ => webhooks::test(&ctx, id, &account).await,
            }
        }
        [id, "retry"] => {
            allow(method, &["POST"])?;
            let account = authenticate(&ctx, request, SEND_LIMITER).await?;
            retry::retry(&ctx, id, &account).await
        }
        [id] if !id.is_empty() => {
            allow(method, &["GET", "DELETE"])?;
            let account = authenticate(&ctx, request, limiter_of(method)).await?;
            match method {
                "DELETE" => message::cancel(&ctx, id, &account).await,
                _ => message::message(&ctx, id, &account).await,
            }
        }
        _ => Err(ApiError::new(ErrorCode::NotFound)),
    }
}

/// Reads count against the read limiter; what changes something (a cancel) against
/// the send limiter.
fn limiter_of(method: &str) -> &'static str {
    if method == "GET" {
        READ_LIMITER
    } else {
        SEND_LIMITER
    }
}

fn allow(method: &str, allowed: &[&str]) -> Result<(), ApiError> {
    if allowed.contains(&method) {
        Ok(())
    } else {
        Err(ApiError { allow: Some(allowed.join(", ")), ..ApiError::new(ErrorCode::MethodNotAllowed) })
    }
}

/// The account the request acts for, once its token is verified and its API-call
/// budget allows one more call.
async fn authenticate<P: Platform>(ctx: &Ctx<'_, P>, request: &ApiRequest, limiter: &'static str) -> Result<String, ApiError> {
    let token = bearer_token(request.header("authorization"))?;
    let account = ctx.authenticate(token).await?;
    if ctx.config().api_call_limits && !ctx.p.allow_api_call(limiter, &account).await {
        return Err(ApiError { retry_after: Some(LIMITER_PERIOD_SECONDS), ..ApiError::new(ErrorCode::TooManyRequests) });
    }
    Ok(account)
}

/// 503 unless `RATE_LIMITER_ENABLED=true`: nothing is queued while the limiter is off.
fn require_enabled<P: Platform>(ctx: &Ctx<'_, P>) -> Result<(), ApiError> {
    if ctx.config().rate_limiter_enabled {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::RateLimiterDisabled))
    }
}

/// A request's JSON body: `application/json`, read only after the token was checked
/// (the caller's order) and only up to `MAX_BODY_BYTES`; with its raw bytes.
async fn json_body<P: Platform>(ctx: &Ctx<'_, P>, request: &ApiRequest) -> Result<(Vec<u8>, serde_json::Value), ApiError> {
    use shared::validation::MAX_BODY_BYTES;
    let content_type = request.header("content-type").unwrap_or_default().to_ascii_lowercase();
    if content_type.split(';').next().map(str::trim) != Some("application/json") {
        return Err(ApiError::new(ErrorCode::UnsupportedMediaType));
    }
    if request.declares_more_than(MAX_BODY_BYTES) {
        return Err(ApiError::new(ErrorCode::BodyTooLarge));
    }
    let raw = ctx
        .p
        .read_body(MAX_BODY_BYTES)
        .await
        .map_err(|e| ApiError { log: Some(format!("request body not read: {e}")), ..ApiError::new(ErrorCode::InvalidJson) })?
        .ok_or_else(|| ApiError::new(ErrorCode::BodyTooLarge))?;
    let body = serde_json::from_slice(&raw)
        .map_err(|_| ApiError { details: vec![FieldError::new("body", "must be valid JSON")], ..ApiError::new(ErrorCode::InvalidJson) })?;
    Ok((raw, body))
}

/// A 404 for ids that cannot be message ids: they never reach the ledger.
fn message_id(id: &str) -> Result<&str, ApiError> {
    if shared::id::is_message_id(id) {
        Ok(id)
    } else {
        Err(ApiError::new(ErrorCode::NotFound))
    }
}

const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

/// `limit` and `cursor` of a paged list (`GET /failed`, `GET /campaigns`), both
/// checked, every bad one named.
fn page_params(request: &ApiRequest, account: &str) -> Result<(u32, Option<Cursor>), ApiError> {
    let mut bad = Vec::new();
    let limit = limit_param(request, &mut bad);
    let cursor = match request.query_param("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Cursor::decode(&c, account).or_else(|| {
            bad.push(FieldError::new("cursor", "is not a cursor returned by this API"));
            None
        }),
    };
    if bad.is_empty() {
        Ok((limit, cursor))
    } else {
        Err(ApiError::invalid(bad))
    }
}

/// `?limit=`: a page's length (`DEFAULT_PAGE` when left out), or what is wrong with it.
fn limit_param(request: &ApiRequest, bad: &mut Vec<FieldError>) -> u32 {
    match request.query_param("limit") {
        None => DEFAULT_PAGE,
        Some(v) => match v.parse::<u32>() {
            Ok(l) if (1..=MAX_PAGE).contains(&l) => l,
            _ => {
                bad.push(FieldError::new("limit", format!("must be a whole number from 1 to {MAX_PAGE}")));
                DEFAULT_PAGE
            }
        },
    }
}

fn now_rfc3339<P: Platform>(ctx: &Ctx<'_, P>) -> String {
    shared::time::rfc3339_ms(ctx.p.now_ms())
}

/// After a failed queue write, what was written for it was undone (`Ok(false)`: the
/// request fails), or a worker had taken it: the queue had it and only its answer was
/// lost, so it is accepted. `undone` is the undo's answer (`Ok(true)`: refused, taken).
fn taken_anyway<P: Platform>(ctx: &Ctx<'_, P>, queue_error: &AwsError, undone: Result<bool, AwsError>) -> bool {
    match undone {
        Ok(taken) => {
            if taken {
                ctx.p.log_error(&format!("the queue's answer was lost, but a worker took the message: accepted ({queue_error})"));
            }
            taken
        }
        Err(e) => {
            ctx.p.log_error(&format!("could not undo the ledger write of an unqueued message: {e}"));
            false
        }
    }
}
