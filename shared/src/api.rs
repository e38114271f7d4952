//! The JSON bodies the edge answers with (docs/design.md §3). Field names are `camelCase` and
//! are a contract with existing clients.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ledger::{LedgerItem, MessageStatus};

/// `POST /send` with one recipient: 202.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendAccepted {
    pub success: bool,
    pub message_id: String,
    pub status: MessageStatus,
    pub queue_position: u64,
    pub estimated_send_time: String,
}

/// One recipient's entry in a mass message's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MassEntry {
    pub recipient_id: String,
    pub message_id: String,
    /// `queued`, or `scheduled` when the campaign has a `sendAt` ahead.
    pub status: MessageStatus,
    pub queue_position: u64,
    pub estimated_send_time: String,
}

/// `POST /send` with `recipientIds`: 202, one entry per recipient in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MassAccepted {
    pub success: bool,
    /// The campaign the mass message became: follow it at `GET /campaigns/{id}`.
    pub campaign_id: String,
    pub status: MessageStatus,
    pub count: usize,
    pub messages: Vec<MassEntry>,
}

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub queue: QueueState,
    pub processing: Processing,
    pub account: AccountState,
    pub health: Health,
    pub timestamp: String,
}

/// The SQS queue as a whole (approximate, as SQS reports it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueState {
    pub depth: u64,
    pub in_flight: u64,
    pub dlq_count: u64,
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Processing {
    /// Seconds until this account's backlog is sent at its rate.
    pub estimated_time_seconds: u64,
    pub rate_limit: String,
    pub last_processed_at: Option<String>,
}

/// This account's own counters (from its ledger summary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountState {
    pub backlog: u64,
    pub sent: u64,
    pub failed: u64,
    /// Sends held by `POST /account/pause` until `POST /account/resume`, or by the
    /// worker when the gateway refused the account's credentials.
    pub paused: bool,
    /// Why the worker held it (the gateway's refusal), until resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<String>,
    /// Its id at the delivery vendor (`PUT /account/vendor`), when not the account id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_account_id: Option<String>,
    /// Until when the gateway asked it to wait (a 429's `Retry-After`), while it lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited_until: Option<String>,
    /// Its rolling window now: the sends in it against the limit, and the last sends.
    pub window: SendWindow,
}

/// An account's rolling window (`GET /status`), from the sends its outcomes recorded
/// (sent, or failed for good after reaching the gateway), on the schedule's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendWindow {
    /// At most this many sends in any rolling window of `window_ms`.
    pub limit: u32,
    pub window_ms: u64,
    /// Sends in the window ending now.
    pub sent_in_window: u64,
    /// When the next send may go by the limit and a 429's wait (now, or later); `None`
    /// while the account is paused (nothing goes until it is resumed).
    pub next_send_at: Option<String>,
    /// The times of the last sends, oldest first (two windows' worth and two more).
    pub recent_sends: Vec<String>,
}

/// `PUT /account/vendor`: 200, the account's id at the vendor now (`null`: the account
/// id itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VendorAccount {
    pub vendor_account_id: Option<String>,
}

/// `POST /account/pause` and `POST /account/resume`: 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountHeld {
    pub success: bool,
    pub paused: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub message: String,
}

/// `GET /failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedPage {
    pub failed_messages: Vec<FailedMessage>,
    /// This account's failed messages in all (from its summary).
    pub total: u64,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedMessage {
    pub id: String,
    pub recipient_id: String,
    pub content: String,
    pub failed_at: Option<String>,
    pub error: Option<String>,
    pub attempts: u32,
}

impl From<LedgerItem> for FailedMessage {
    fn from(item: LedgerItem) -> Self {
        let m = item.message;
        FailedMessage { id: m.id, recipient_id: m.recipient_id, content: m.content, failed_at: item.failed_at, error: item.last_error, attempts: item.attempts }
    }
}

/// `POST /{id}/retry` and `DELETE /{id}`: 200, the message's new status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryAccepted {
    pub success: bool,
    pub message_id: String,
    pub status: MessageStatus,
}

/// `GET /{id}`: one message and where it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub id: String,
    pub recipient_id: String,
    pub content: String,
    pub priority: u8,
    pub media_urls: Vec<String>,
    pub metadata: Map<String, Value>,
    pub status: MessageStatus,
    pub attempts: u32,
    pub accepted_at: String,
    pub sent_at: Option<String>,
    pub failed_at: Option<String>,
    pub last_error: Option<String>,
    /// When it was scheduled for, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<String>,
    /// The campaign it belongs to, if it was one recipient of a mass message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    /// The vendor's media and price, if it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_media: Option<crate::message::VendorMedia>,
    /// The gateway's id of the sent message, when it gave one (the vendor's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_message_id: Option<String>,
}

impl MessageView {
    /// The message as seen at `now_ms`: a queued message whose `sendAt` is ahead is
    /// `scheduled`.
    pub fn at(item: LedgerItem, now_ms: u64) -> Self {
        let ahead = item.message.send_at_ms().is_some_and(|at| at > now_ms);
        let status = if item.status == MessageStatus::Queued && ahead { MessageStatus::Scheduled } else { item.status };
        let m = item.message;
        MessageView {
            send_at: m.send_at,
            campaign_id: m.campaign_id,
            vendor_media: m.vendor_media,
            gateway_message_id: item.gateway_id,
            id: m.id,
            recipient_id: m.recipient_id,
            content: m.content,
            priority: m.priority,
            media_urls: m.media_urls,
            metadata: m.metadata,
            status,
            attempts: item.attempts,
            accepted_at: m.accepted_at,
            sent_at: item.sent_at,
            failed_at: item.failed_at,
            last_error: item.last_error,
        }
    }
}
