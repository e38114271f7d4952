//! The delivery gateway: what actually sends a message to OnlyFans, one module per
//! protocol: [`http`] (ours), [`onlyfansapi`] (OnlyFansAPI.com's, `GATEWAY_KIND`);
//! [`accounts`] maps an account to its id at the vendor; [`DryRunGateway`] only logs, for trying the worker without any OnlyFans integration
//! (and for benchmarks, as a no-op). Here: what a delivery can come to ([`Delivery`]),
//! which both protocols' answers are read into, and `Retry-After`.

#![allow(async_fn_in_trait)]

pub mod accounts;
pub mod http;
pub mod onlyfansapi;

use std::time::{Duration, SystemTime};

use shared::message::QueueMessage;

pub use http::{classify, HttpGateway};

/// What a delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Taken, with the id the gateway gave the message, if it gave one (the vendor's).
    Sent { gateway_id: Option<String> },
    /// A passing failure the gateway answered (5xx, 408) or a connection never made: not
    /// delivered; tried again.
    Retry { reason: String },
    /// The gateway's rate limit (429): not delivered; the account waits `retry_after`
    /// (when the gateway said).
    RateLimited { reason: String, retry_after: Option<Duration> },
    /// No answer (a timeout, a connection lost once the request was on its way): it may
    /// have arrived. Tried again, and never canceled meanwhile: a cancel would report a
    /// message the fan may have received.
    Unknown { reason: String },
    /// Will not succeed by trying again.
    Failed { reason: String },
    /// The account's credentials were refused (a vendor's 401/403: its connection to
    /// OnlyFans lost, or the API key): not delivered, and nothing of that account can be
    /// until someone fixes it. The account is held (as a pause through the API, with this
    /// reason shown by `GET /status`); the message uses no attempt and waits.
    AccountRefused { reason: String },
}

pub trait Gateway: Send + Sync + 'static {
    /// What a delivery needs read beforehand, done while the message waits for its slot
    /// (so that nothing slow stands between the slot and the request); an error gives
    /// the message back unsent, no attempt used.
    fn prepare(&self, _message: &QueueMessage) -> impl std::future::Future<Output = anyhow::Result<()>> + Send {
        std::future::ready(Ok(()))
    }

    fn deliver(&self, message: &QueueMessage) -> impl std::future::Future<Output = Delivery> + Send;
}

/// Logs each message instead of sending it.
#[derive(Debug, Default, Clone)]
pub struct DryRunGateway;

impl Gateway for DryRunGateway {
    async fn deliver(&self, m: &QueueMessage) -> Delivery {
        tracing::debug!(message_id = %m.id, account = %m.creator_id, recipient = %m.recipient_id, "dry run: not sent");
        Delivery::Sent { gateway_id: None }
    }
}

/// The longest pause a 429's `Retry-After` may ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A `Retry-After` value (RFC 9110 §10.2.3): delay seconds or an HTTP date, seen at
/// `now`; capped at [`MAX_RETRY_AFTER`]; a date in the past means no wait.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value).ok()?.duration_since(now).unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Percent-encodes everything but the unreserved characters (RFC 3986): a path segment, or a URL's password.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
