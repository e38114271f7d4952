//! The OnlyFansAPI.com adapter (`GATEWAY_KIND=onlyfansapi`; docs.onlyfansapi.com, "Send
//! Message"): `POST {GATEWAY_URL}/api/{account}/chats/{chat_id}/messages` with the API
//! key as bearer token and `{"text", "mediaFiles", "previews", "price"}`; the account is the vendor's account
//! id (`PUT /account/vendor`, the account id itself by default: [`super::accounts`])
//! and the chat the recipient id.
//!
//! Exactly once at the vendor: every attempt of a message carries the same
//! `Idempotency-Key` ([`idempotency_key`]: its id, and its generation after a retry of
//! a failed message, which is a new send), so an attempt whose answer was lost (a
//! timeout, a 5xx, a worker killed mid-call, a duplicate after a Redis loss) is answered
//! by the vendor with the first attempt's result instead of sending again.
//!
//! What each answer means ([`classify`]): 2xx sent; 429 the limit reached (its wait from
//! `Retry-After`, an RFC 9457 problem's `retryAfterSec`, or `X-RateLimit-Reset`); 401 and
//! 403 the account's connection lost (the account is held, nothing fails); 400, 404, 409
//! and 422 failed for good with the vendor's reason; 408, 5xx and no answer unknown
//! (tried again with the same key), unless the vendor says `request_outcome: not_sent`.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use shared::message::QueueMessage;

use super::accounts::VendorAccounts;
use super::{encode, parse_retry_after, Delivery, Gateway, MAX_RETRY_AFTER};

/// The vendor's gateway.
#[derive(Debug, Clone)]
pub struct OnlyFansApiGateway {
    client: reqwest::Client,
    base: String,
    api_key: String,
    timeout: Duration,
    accounts: VendorAccounts,
}

impl OnlyFansApiGateway {
    pub fn new(base: String, api_key: String, timeout: Duration, accounts: VendorAccounts) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(256).build()?;
        Ok(Self { client, base: base.trim_end_matches('/').to_owned(), api_key, timeout, accounts })
    }

    fn url(&self, vendor_account: &str, m: &QueueMessage) -> String {
        format!("{}/api/{}/chats/{}/messages", self.base, encode(vendor_account), encode(&m.recipient_id))
    }
}

/// The key every attempt of this generation of `m` carries: a retried failed message
/// (generation above 0) is a new message to the vendor, whose replay of the first
/// generation's key would answer its old failure.
pub fn idempotency_key(m: &QueueMessage) -> String {
    match m.generation {
        0 => m.id.clone(),
        g => format!("{}.{g}", m.id),
    }
}

impl Gateway for OnlyFansApiGateway {
    /// The account's vendor id, read while the message waits for its slot.
    async fn prepare(&self, m: &QueueMessage) -> anyhow::Result<()> {
        self.accounts.prepare(&m.creator_id).await
    }

    async fn deliver(&self, m: &QueueMessage) -> Delivery {
        // Kept by `prepare` moments ago: read again only if that was not called.
        let vendor_account = match self.accounts.of(&m.creator_id).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), account = %m.creator_id, "the account's vendor id not read: not sent, tried again");
                return Delivery::Retry { reason: "the account's vendor id could not be read from the ledger".into() };
            }
        };
        let request = self.client.post(self.url(&vendor_account, m)).bearer_auth(&self.api_key).header("idempotency-key", idempotency_key(m)).json(&body(m));
        match request.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let (retry_after, reset) = (header("retry-after"), header("x-ratelimit-reset"));
                let answer: Value = r.json().await.unwrap_or(Value::Null);
                classify(status, retry_after.as_deref(), reset.as_deref(), &answer, SystemTime::now())
            }
            Err(e) if e.is_timeout() => {
                tracing::warn!(message_id = %m.id, timeout_ms = self.timeout.as_millis() as u64, "vendor timed out: tried again with the same idempotency key");
                Delivery::Unknown { reason: "vendor timed out".into() }
            }
            // The error's text may carry the URL; say only what kind of failure it was.
            Err(e) if e.is_connect() => Delivery::Retry { reason: "vendor unreachable".into() },
            Err(_) => Delivery::Unknown { reason: "vendor request failed".into() },
        }
    }
}

/// The request's body: the text, and the vendor's media (its ids, then `mediaUrls` as
/// given), previews and price when the message has them.
fn body(m: &QueueMessage) -> Value {
    let mut body = json!({ "text": m.content });
    let media = m.vendor_media.as_ref();
    let files: Vec<&String> = media.map(|v| v.media_ids.iter()).into_iter().flatten().chain(&m.media_urls).collect();
    if !files.is_empty() {
        body["mediaFiles"] = json!(files);
    }
    if let Some(v) = media {
        if !v.preview_ids.is_empty() {
            body["previews"] = json!(v.preview_ids);
        }
        if v.price > 0 {
            body["price"] = json!(v.price);
        }
    }
    body
}

/// What the vendor's answer means: its status, `Retry-After`, `X-RateLimit-Reset` (seconds
/// to wait, or an epoch time) and JSON body, seen at `now`.
pub fn classify(status: u16, retry_after: Option<&str>, reset: Option<&str>, body: &Value, now: SystemTime) -> Delivery {
    let said = vendor_reason(body);
    let reason = |what: &str| match &said {
        Some(s) => format!("vendor answered {status} ({what}): {s}"),
        None => format!("vendor answered {status} ({what})"),
    };
    match status {
        // The vendor's id of the message (`data.id`), kept in the ledger.
        200..=299 => {
            Delivery::Sent { gateway_id: body.pointer("/data/id").filter(|v| !v.is_null()).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)) }
        }
        429 => {
            let wait = retry_after
                .and_then(|v| parse_retry_after(v, now))
                .or_else(|| body.get("retryAfterSec").and_then(Value::as_u64).map(Duration::from_secs))
                .or_else(|| reset.and_then(|v| reset_wait(v, now)))
                .map(|w| w.min(MAX_RETRY_AFTER));
            Delivery::RateLimited { reason: reason("rate limited"), retry_after: wait }
        }
        401 | 403 => Delivery::AccountRefused { reason: reason("the account's connection or API key was refused") },
        _ if body.get("request_outcome").and_then(Value::as_str) == Some("not_sent") => Delivery::Retry { reason: reason("not sent") },
        408 | 500..=599 => Delivery::Unknown { reason: reason("may have been sent") },
        _ => Delivery::Failed { reason: reason("refused") },
    }
}

/// The vendor's own words: `error`, `message`, or an RFC 9457 problem's `detail`/`title`
/// (cut short: it goes into the ledger and `GET /failed`).
fn vendor_reason(body: &Value) -> Option<String> {
    let text = ["error", "message", "detail", "title"].iter().find_map(|k| body.get(*k).and_then(Value::as_str))?;
    Some(text.chars().take(200).collect())
}

/// `X-RateLimit-Reset`: seconds to wait, or (when larger than a day's) the epoch second
/// the limit resets at.
fn reset_wait(value: &str, now: SystemTime) -> Option<Duration> {
    let n: u64 = value.trim().parse().ok()?;
    if n <= 86_400 {
        return Some(Duration::from_secs(n));
    }
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(n);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn answers_as_the_vendor_documents_them() {
        let now = at(1_800_000_000);
        let none = Value::Null;
        assert_eq!(classify(200, None, None, &json!({"data": {"id": 123}}), now), Delivery::Sent { gateway_id: Some("123".into()) });
        let limited = |ra: Option<&str>, reset: Option<&str>, body: &Value| match classify(429, ra, reset, body, now) {
            Delivery::RateLimited { retry_after, .. } => retry_after,
            other => panic!("{other:?}"),
        };
        assert_eq!(limited(Some("12"), None, &none), Some(Duration::from_secs(12)));
        assert_eq!(limited(None, None, &json!({"type": "about:blank", "retryAfterSec": 30})), Some(Duration::from_secs(30)));
        assert_eq!(limited(None, Some("1800000045"), &none), Some(Duration::from_secs(45)), "an epoch reset");
        assert_eq!(limited(None, Some("5"), &none), Some(Duration::from_secs(5)), "seconds to wait");
        assert_eq!(limited(None, None, &none), None);
        let refused = classify(401, None, None, &json!({"error": "Unauthorized. Please provide a valid API key."}), now);
        assert!(matches!(&refused, Delivery::AccountRefused { reason } if reason.contains("Unauthorized")), "{refused:?}");
        let bad = classify(422, None, None, &json!({"message": "The media files field is required when price is not 0."}), now);
        assert!(matches!(&bad, Delivery::Failed { reason } if reason.contains("media files")), "{bad:?}");
        assert!(matches!(classify(404, None, None, &none, now), Delivery::Failed { .. }));
        // A 5xx proves nothing: it may have been sent; tried again with the same key.
        assert!(matches!(classify(502, None, None, &none, now), Delivery::Unknown { .. }));
        assert!(matches!(classify(500, None, None, &json!({"request_outcome": "not_sent"}), now), Delivery::Retry { .. }));
    }

    #[test]
    fn each_generation_has_its_own_key_and_every_attempt_the_same() {
        let m: QueueMessage = serde_json::from_value(json!({
            "id": "018bcfe5-6800-7fff-bfff-ffffffffffff", "creatorId": "acct 1", "recipientId": "fan/1",
            "content": "hi", "priority": 5, "acceptedAt": "2026-11-25T00:00:00.000Z"
        }))
        .unwrap();
        assert_eq!(idempotency_key(&m), m.id);
        let retried = QueueMessage { generation: 2, ..m.clone() };
        assert_eq!(idempotency_key(&retried), format!("{}.2", m.id));
        let g = OnlyFansApiGateway::new("https://app.onlyfansapi.com/".into(), "k".into(), Duration::from_secs(1), VendorAccounts::default()).unwrap();
        assert_eq!(g.url("acct 1", &m), "https://app.onlyfansapi.com/api/acct%201/chats/fan%2F1/messages");
    }
}
