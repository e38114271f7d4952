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
//! Usage: `gateway-stub [--port PORT]` (default 9090; 0 = any free port, printed).

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
}

type Shared = Arc<Mutex<Stub>>;

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
        let rule = s.rules.iter_mut().find(|r| (r.recipient_pattern == "*" || recipient_id.contains(&r.recipient_pattern)) && r.count != Some(0));
        let (status, retry_after, delay_ms) = match rule {
            Some(rule) => {
                if let Some(c) = rule.count.as_mut() {
                    *c -= 1;
                }
                (StatusCode::from_u16(rule.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), rule.retry_after.clone(), rule.delay_ms.unwrap_or(0))
            }
            None => (StatusCode::ACCEPTED, None, 0),
        };
        let mut h = HeaderMap::new();
        let value: Option<axum::http::HeaderValue> = match retry_after {
            Some(Value::String(text)) => text.parse().ok(),
            Some(other) => other.to_string().parse().ok(),
            None => None,
        };
        if let Some(v) = value {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut port = 9090u16;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).ok_or_else(|| anyhow::anyhow!("--port needs a number"))?,
            "--help" | "-h" => {
                println!("gateway-stub [--port PORT]: a local stand-in delivery gateway that records deliveries (see the source's doc for the protocol)");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let stub: Shared = Arc::default();
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
        )
        .fallback(post(deliver))
        .with_state(stub);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| anyhow::anyhow!("port {port}: {e}"))?;
    println!("gateway-stub listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
