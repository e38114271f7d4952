//! `gateway-stub`: a local stand-in for the delivery gateway, for tests and the local
//! run. It serves the HTTP gateway's protocol (any `POST` path; the body names the
//! message), records every delivery, and can be told to fail.
//!
//! - `POST /...` with `{"messageId", "accountId", "recipientId", ...}`: a delivery;
//!   answers 202, or the status of a matching failure rule;
//! - `GET /deliveries`: `[{"messageId", "accountId", "recipientId", "receivedAt",
//!   "path", "authorization", "body", "delayMs"}]` (`receivedAt` RFC 3339 with
//!   milliseconds; `authorization` the header as received; `body` the request's JSON;
//!   `delayMs` how long the answer was held), in arrival order; `?account=` keeps one
//!   account's;
//! - `POST /_control/failures` `{"recipientPattern", "status", "count", "retryAfter",
//!   "delayMs"}`: the next `count` deliveries (all when absent) to recipients containing
//!   the pattern (`*` = any) answer `status` (a 2xx status is a delivery, recorded when
//!   it arrives), with `Retry-After: retryAfter` (seconds, or a string sent as is, such
//!   as an HTTP date), after holding the answer `delayMs`; `DELETE /_control/failures`
//!   clears the rules;
//! - `GET /refused`: the deliveries answered with a failure status (the same fields,
//!   and `status` and `retryAfter`), in arrival order; `?account=` as above;
//! - `DELETE /deliveries`: forgets what was recorded.
//!
//! With `--protocol onlyfansapi` it stands in for OnlyFansAPI.com's send endpoint
//! instead (docs.onlyfansapi.com, "Send Message"), as documented:
//! `POST /api/{account}/chats/{chat_id}/messages` with `Authorization: Bearer KEY` and
//! `{"text", "price", "mediaFiles", ...}`; 401 for another key; 422 for a price outside
//! 0 or 3–200, or a paid message without `mediaFiles`; an `Idempotency-Key` seen before
//! answers its first result again (a 2xx or 4xx answer, not a 429 or 5xx) and records
//! nothing new (a first attempt whose answer the caller gave up on included); with `--key-limit N`, N sends a minute per key
//! (rolling; `--key-window MS` for another window than 60 s, so that tests run
//! quickly), counted down in `_meta._rate_limits.remaining_minute`, then 429 with
//! `Retry-After`. A delivery is recorded with the key as `messageId`, the account and
//! the chat as `accountId` and `recipientId`; the failure rules apply (by chat id).
//!
//! Usage: `gateway-stub [--port PORT] [--protocol http|onlyfansapi] [--api-key KEY]
//! [--key-limit N [--key-window MS]]` (port 9090 by default; 0 = any free port, printed; key `stub-key`).

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FailureRule {
    recipient_pattern: String,
    status: u16,
    count: Option<u64>,
    retry_after: Option<Value>,
    delay_ms: Option<u64>,
}

#[derive(Default)]
struct Stub {
    deliveries: Vec<Value>,
    /// Deliveries answered with a failure, for inspection.
    refused: Vec<Value>,
    rules: Vec<FailureRule>,
    vendor: Vendor,
}

/// What the OnlyFansAPI stand-in keeps.
#[derive(Default)]
struct Vendor {
    api_key: String,
    /// Sends allowed per key in any `key_window` (60 s unless told), when limited.
    key_limit: Option<usize>,
    key_window: std::time::Duration,
    /// When each send of the last window came.
    recent: std::collections::VecDeque<std::time::Instant>,
    /// The first answer to each idempotency key.
    answers: std::collections::HashMap<String, (StatusCode, Value)>,
    next_id: u64,
}

type Shared = Arc<Mutex<Stub>>;

/// What a failure rule tells the stub to answer.
struct Told {
    status: StatusCode,
    retry_after: Option<axum::http::HeaderValue>,
    delay_ms: u64,
}

impl Stub {
    /// The first rule that matches `recipient` and is not used up, counted down: what to
    /// answer. Both protocols' handlers take their failures here.
    fn take_rule(&mut self, recipient: &str) -> Option<Told> {
        let rule = self.rules.iter_mut().find(|r| (r.recipient_pattern == "*" || recipient.contains(&r.recipient_pattern)) && r.count != Some(0))?;
        if let Some(c) = rule.count.as_mut() {
            *c -= 1;
        }
        let retry_after = match &rule.retry_after {
            Some(Value::String(text)) => text.parse().ok(),
            Some(other) => other.to_string().parse().ok(),
            None => None,
        };
        Some(Told { status: StatusCode::from_u16(rule.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), retry_after, delay_ms: rule.delay_ms.unwrap_or(0) })
    }
}

/// `?account=`: one account's records only.
#[derive(Debug, Deserialize)]
struct Filter {
    account: Option<String>,
}

impl Filter {
    fn keep(&self, records: &[Value]) -> Value {
        let kept = records.iter().filter(|r| self.account.as_deref().is_none_or(|a| r["accountId"] == a)).cloned();
        Value::Array(kept.collect())
    }
}

fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    shared::time::rfc3339_ms(ms)
}

async fn deliver(State(stub): State<Shared>, uri: Uri, headers: HeaderMap, Json(body): Json<Value>) -> impl IntoResponse {
    let received_at = now_rfc3339();
    let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (message_id, account_id, recipient_id) = (text("messageId"), text("accountId"), text("recipientId"));
    if message_id.is_empty() || headers.get("idempotency-key").and_then(|v| v.to_str().ok()) != Some(message_id.as_str()) {
        return (StatusCode::BAD_REQUEST, HeaderMap::new(), Json(json!({"error": "messageId and a matching Idempotency-Key are required"})));
    }
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut record = json!({
        "messageId": message_id, "accountId": account_id, "recipientId": recipient_id, "receivedAt": received_at,
        "path": uri.path(), "authorization": authorization, "body": body,
    });
    let (status, headers, delay) = {
        let mut guard = stub.lock().expect("stub lock");
        let s = &mut *guard;
        let Told { status, retry_after, delay_ms } =
            s.take_rule(&recipient_id).unwrap_or(Told { status: StatusCode::ACCEPTED, retry_after: None, delay_ms: 0 });
        let mut h = HeaderMap::new();
        if let Some(v) = retry_after {
            record["retryAfter"] = json!(v.to_str().unwrap_or_default());
            h.insert("retry-after", v);
        }
        record["delayMs"] = json!(delay_ms);
        // Recorded on arrival: a caller that gives up on a held answer has still
        // reached the gateway, as with a real one.
        if status.is_success() {
            s.deliveries.push(record);
        } else {
            record["status"] = json!(status.as_u16());
            s.refused.push(record);
        }
        (status, h, std::time::Duration::from_millis(delay_ms))
    };
    tokio::time::sleep(delay).await;
    let body = if status.is_success() { json!({"accepted": true}) } else { json!({"error": format!("told to fail with {}", status.as_u16())}) };
    (status, headers, Json(body))
}

/// `POST /api/{account}/chats/{chat_id}/messages` as OnlyFansAPI answers it.
async fn vendor_send(
    State(stub): State<Shared>,
    axum::extract::Path((account, chat)): axum::extract::Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> impl IntoResponse {
    let received_at = now_rfc3339();
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (authorization, key) = (header("authorization"), header("idempotency-key"));
    let (status, answer_headers, answer, delay) = {
        let mut guard = stub.lock().expect("stub lock");
        let s = &mut *guard;
        if authorization.as_deref() != Some(format!("Bearer {}", s.vendor.api_key).as_str()) {
            let answer = json!({"error": "Unauthorized. Please provide a valid API key."});
            return (StatusCode::UNAUTHORIZED, HeaderMap::new(), Json(answer));
        }
        if let Some((status, answer)) = key.as_ref().and_then(|k| s.vendor.answers.get(k)) {
            return (*status, HeaderMap::new(), Json(answer.clone()));
        }
        let now = std::time::Instant::now();
        let window = s.vendor.key_window;
        while s.vendor.recent.front().is_some_and(|t| now.duration_since(*t) >= window) {
            s.vendor.recent.pop_front();
        }
        let mut h = HeaderMap::new();
        let price = body.get("price").and_then(Value::as_i64).unwrap_or(0);
        let media = body.get("mediaFiles").and_then(Value::as_array).map_or(0, Vec::len);
        let text = body.get("text").and_then(Value::as_str).unwrap_or_default();
        let (status, answer, delay_ms) = if let Some(full) = s.vendor.key_limit.filter(|l| s.vendor.recent.len() >= *l) {
            let wait = window.saturating_sub(now.duration_since(s.vendor.recent[0])).as_secs_f64().ceil().max(1.0) as u64;
            h.insert("retry-after", wait.into());
            (StatusCode::TOO_MANY_REQUESTS, json!({"error": format!("Too Many Attempts. {full} requests a minute.")}), 0)
        } else if text.is_empty() {
            (StatusCode::UNPROCESSABLE_ENTITY, json!({"message": "The text field is required.", "errors": {"text": ["The text field is required."]}}), 0)
        } else if price != 0 && !(3..=200).contains(&price) {
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"message": "The price must be 0 or between 3 and 200.", "errors": {"price": ["The price must be 0 or between 3 and 200."]}}),
                0,
            )
        } else if price != 0 && media == 0 {
            let error = "The media files field is required when price is not 0.";
            (StatusCode::UNPROCESSABLE_ENTITY, json!({"message": error, "errors": {"mediaFiles": [error]}}), 0)
        } else if let Some(Told { status, retry_after, delay_ms }) = s.take_rule(&chat) {
            if let Some(v) = retry_after {
                h.insert("retry-after", v);
            }
            (status, json!({"error": format!("told to fail with {}", status.as_u16())}), delay_ms)
        } else {
            (StatusCode::OK, Value::Null, 0)
        };
        let mut record = json!({
            "messageId": key.clone().unwrap_or_default(), "accountId": account, "recipientId": chat, "receivedAt": received_at,
            "path": uri.path(), "authorization": authorization, "body": body, "delayMs": delay_ms,
        });
        let answer = if status.is_success() {
            s.vendor.recent.push_back(now);
            s.vendor.next_id += 1;
            let remaining = s.vendor.key_limit.map(|l| l.saturating_sub(s.vendor.recent.len()));
            s.deliveries.push(record);
            json!({
                "data": {"id": s.vendor.next_id, "queueId": null, "isFree": price == 0, "price": price, "createdAt": received_at},
                "_meta": {"_credits": {"used": 1}, "_rate_limits": {
                    "limit_minute": s.vendor.key_limit, "remaining_minute": remaining, "limit_day": null, "remaining_day": null}},
            })
        } else {
            record["status"] = json!(status.as_u16());
            s.refused.push(record);
            answer
        };
        // Kept for replays: a result (2xx, or a 4xx refusal); neither a rate limit nor a
        // server error, which a retry of the same key may get past.
        if let (Some(k), true) = (key, status.as_u16() < 500 && status != StatusCode::TOO_MANY_REQUESTS) {
            s.vendor.answers.insert(k, (status, answer.clone()));
        }
        (status, h, answer, std::time::Duration::from_millis(delay_ms))
    };
    tokio::time::sleep(delay).await;
    (status, answer_headers, Json(answer))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut port = 9090u16;
    let mut vendor = false;
    let mut api_key = "stub-key".to_owned();
    let mut key_limit = None;
    let mut key_window = std::time::Duration::from_secs(60);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).ok_or_else(|| anyhow::anyhow!("--port needs a number"))?,
            "--protocol" => match args.next().as_deref() {
                Some("http") => vendor = false,
                Some("onlyfansapi") => vendor = true,
                other => anyhow::bail!("--protocol: http or onlyfansapi, not {other:?}"),
            },
            "--api-key" => api_key = args.next().ok_or_else(|| anyhow::anyhow!("--api-key needs a key"))?,
            "--key-limit" => key_limit = Some(args.next().and_then(|p| p.parse().ok()).ok_or_else(|| anyhow::anyhow!("--key-limit needs a number"))?),
            "--key-window" => {
                let ms = args.next().and_then(|p| p.parse().ok()).filter(|ms| *ms > 0).ok_or_else(|| anyhow::anyhow!("--key-window needs a number of ms"))?;
                key_window = std::time::Duration::from_millis(ms);
            }
            "--help" | "-h" => {
                println!("gateway-stub [--port PORT] [--protocol http|onlyfansapi] [--api-key KEY] [--key-limit N [--key-window MS]]: a local stand-in delivery gateway (or OnlyFansAPI.com) that records deliveries (see the source's doc for the protocol)");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let stub: Shared = Arc::new(Mutex::new(Stub { vendor: Vendor { api_key, key_limit, key_window, ..Vendor::default() }, ..Stub::default() }));
    let app = Router::new()
        .route("/deliveries", get(|State(s): State<Shared>, Query(q): Query<Filter>| async move { Json(q.keep(&s.lock().expect("stub lock").deliveries)) }))
        .route(
            "/deliveries",
            delete(|State(s): State<Shared>| async move {
                s.lock().expect("stub lock").deliveries.clear();
                StatusCode::NO_CONTENT
            }),
        )
        .route("/refused", get(|State(s): State<Shared>, Query(q): Query<Filter>| async move { Json(q.keep(&s.lock().expect("stub lock").refused)) }))
        .route(
            "/_control/failures",
            post(|State(s): State<Shared>, Json(rule): Json<FailureRule>| async move {
                s.lock().expect("stub lock").rules.push(rule);
                StatusCode::NO_CONTENT
            })
            .delete(|State(s): State<Shared>| async move {
                s.lock().expect("stub lock").rules.clear();
                StatusCode::NO_CONTENT
            }),
        );
    let app = if vendor { app.route("/api/{account}/chats/{chat}/messages", post(vendor_send)) } else { app.fallback(post(deliver)) }.with_state(stub);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| anyhow::anyhow!("port {port}: {e}"))?;
    println!("gateway-stub listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
