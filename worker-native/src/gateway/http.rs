//! Our gateway's HTTP protocol (`GATEWAY_KIND=http`): `POST` to a URL template with
//! `{accountId}` and `{recipientId}`, a bearer token, the message id as
//! `Idempotency-Key`, and the body `{"messageId", "accountId", "recipientId", "content",
//! "mediaUrls", "metadata"}`, and `vendorMedia` (`{"mediaIds", "previewIds", "price"}`)
//! when the message has it. 2xx = sent; 429 = the account waits, then tries again; 5xx =
//! try again later; no answer (a timeout) = unknown: tried again, never canceled
//! meanwhile; any other 4xx = failed for good. A 429's `Retry-After` (seconds or an HTTP
//! date) pauses the account; it is capped at [`MAX_RETRY_AFTER`] so that a gateway's
//! typo cannot park an account for days.

use std::time::{Duration, SystemTime};

use serde_json::json;
use shared::message::QueueMessage;

use super::{encode, parse_retry_after, Delivery, Gateway};

/// The HTTP gateway.
#[derive(Debug, Clone)]
pub struct HttpGateway {
    client: reqwest::Client,
    url_template: String,
    token: Option<String>,
    timeout: Duration,
}

impl HttpGateway {
    pub fn new(url_template: String, token: Option<String>, timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(256).build()?;
        Ok(Self { client, url_template, token, timeout })
    }

    fn url(&self, m: &QueueMessage) -> String {
        self.url_template.replace("{accountId}", &encode(&m.creator_id)).replace("{recipientId}", &encode(&m.recipient_id))
    }
}

impl Gateway for HttpGateway {
    async fn deliver(&self, m: &QueueMessage) -> Delivery {
        let mut body = json!({
            "messageId": m.id, "accountId": m.creator_id, "recipientId": m.recipient_id,
            "content": m.content, "mediaUrls": m.media_urls, "metadata": m.metadata,
        });
        if let Some(media) = &m.vendor_media {
            body["vendorMedia"] = json!(media);
        }
        let mut request = self.client.post(self.url(m)).header("idempotency-key", &m.id).json(&body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(r) => classify(r.status().as_u16(), r.headers().get("retry-after").and_then(|v| v.to_str().ok()), SystemTime::now()),
            Err(e) if e.is_timeout() => {
                // It may have arrived: the next attempt may be a second copy (the
                // documented bound: one per timeout).
                tracing::warn!(message_id = %m.id, timeout_ms = self.timeout.as_millis() as u64, "gateway timed out: the message is tried again (it may have arrived)");
                Delivery::Unknown { reason: "gateway timed out".into() }
            }
            // The error's text may carry the URL; say only what kind of failure it was.
            Err(e) if e.is_connect() => Delivery::Retry { reason: "gateway unreachable".into() },
            Err(_) => Delivery::Unknown { reason: "gateway request failed".into() },
        }
    }
}

/// The outcome of a gateway answer with this status (and `Retry-After`), seen at `now`.
pub fn classify(status: u16, retry_after: Option<&str>, now: SystemTime) -> Delivery {
    match status {
        200..=299 => Delivery::Sent { gateway_id: None },
        429 => Delivery::RateLimited { reason: "gateway answered 429 (rate limited)".into(), retry_after: retry_after.and_then(|v| parse_retry_after(v, now)) },
        500..=599 | 408 => Delivery::Retry { reason: format!("gateway answered {status}") },
        _ => Delivery::Failed { reason: format!("gateway answered {status}") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::MAX_RETRY_AFTER;

    #[test]
    fn statuses() {
        let now = SystemTime::now();
        assert_eq!(classify(202, None, now), Delivery::Sent { gateway_id: None });
        assert!(matches!(classify(503, None, now), Delivery::Retry { .. }));
        assert_eq!(
            classify(429, Some("7"), now),
            Delivery::RateLimited { reason: "gateway answered 429 (rate limited)".into(), retry_after: Some(Duration::from_secs(7)) }
        );
        assert_eq!(classify(400, None, now), Delivery::Failed { reason: "gateway answered 400".into() });
        assert_eq!(classify(404, None, now), Delivery::Failed { reason: "gateway answered 404".into() });
    }

    /// A `Retry-After` may be an HTTP date (it must not be ignored), and a huge value is
    /// capped (a gateway's typo must not park an account for days).
    #[test]
    fn retry_after_as_a_date_and_capped() {
        let now = httpdate::parse_http_date("Tue, 01 Dec 2026 22:00:00 GMT").unwrap();
        let after = |v: &str| match classify(429, Some(v), now) {
            Delivery::RateLimited { retry_after, .. } => retry_after,
            other => panic!("{other:?}"),
        };
        assert_eq!(after("Tue, 01 Dec 2026 22:00:02 GMT"), Some(Duration::from_secs(2)));
        assert_eq!(after("Tue, 01 Dec 2026 21:59:00 GMT"), Some(Duration::ZERO), "a date in the past: no wait");
        assert_eq!(after("99999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(after("Fri, 01 Jan 2100 00:00:00 GMT"), Some(MAX_RETRY_AFTER));
        assert_eq!(after("soon"), None);
    }

    #[test]
    fn url_template_encodes_ids() {
        let g = HttpGateway::new("http://gw/accounts/{accountId}/messages/{recipientId}".into(), None, Duration::from_secs(1)).unwrap();
        let m: QueueMessage = serde_json::from_value(
            json!({"id": "x", "creatorId": "a b", "recipientId": "fan/1", "content": "c", "priority": 5, "acceptedAt": "2026-11-25T00:00:00Z"}),
        )
        .unwrap();
        assert_eq!(g.url(&m), "http://gw/accounts/a%20b/messages/fan%2F1");
    }
}
