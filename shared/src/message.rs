//! The message as it travels: the validated send request, and the queue message body
//! that the edge writes to SQS and the worker reads back (DESIGN §4).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Default priority when a request gives none; 1 is the most urgent, 10 the least.
pub const DEFAULT_PRIORITY: u8 = 5;

/// Who a send request is for: one fan, or the same content to many (a mass message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    One(String),
    Many(Vec<String>),
}

impl Recipients {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Recipients::One(r) => std::slice::from_ref(r),
            Recipients::Many(rs) => rs,
        }
    }

    pub fn is_mass(&self) -> bool {
        matches!(self, Recipients::Many(_))
    }
}

/// A `POST /send` body that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct SendRequest {
    pub recipients: Recipients,
    pub content: String,
    pub priority: u8,
    pub media_urls: Vec<String>,
    pub metadata: Map<String, Value>,
    /// When to send (Unix ms); `None` for now (also when `sendAt` was in the past).
    pub send_at_ms: Option<u64>,
}

impl SendRequest {
    /// The queue message for one recipient of this request.
    pub fn to_queue_message(&self, id: String, creator_id: &str, recipient_id: &str, accepted_at: &str) -> QueueMessage {
        QueueMessage {
            id,
            creator_id: creator_id.to_owned(),
            recipient_id: recipient_id.to_owned(),
            content: self.content.clone(),
            media_urls: self.media_urls.clone(),
            priority: self.priority,
            metadata: self.metadata.clone(),
            accepted_at: accepted_at.to_owned(),
            generation: 0,
            send_at: self.send_at_ms.map(crate::time::rfc3339_ms),
            campaign_id: None,
        }
    }
}

/// The SQS message body: one message to one fan, as accepted by the edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueMessage {
    /// UUIDv7, also the ledger sort key and the gateway's idempotency key.
    pub id: String,
    /// The account (creator) that sends it.
    pub creator_id: String,
    pub recipient_id: String,
    pub content: String,
    #[serde(default)]
    pub media_urls: Vec<String>,
    pub priority: u8,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// RFC 3339 time the edge accepted it.
    pub accepted_at: String,
    /// 0 when first sent, +1 on each retry from the edge: a retried message keeps its id,
    /// so (`id`, `generation`) is what tells a new attempt from a duplicate delivery.
    #[serde(default)]
    pub generation: u32,
    /// RFC 3339 (UTC) time before which it must not be sent; absent = as soon as the
    /// account's limit allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<String>,
    /// The campaign it belongs to, when it is one recipient's message of a mass message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
}

impl QueueMessage {
    /// When it may be sent first (Unix ms), if it was scheduled.
    pub fn send_at_ms(&self) -> Option<u64> {
        self.send_at.as_deref().and_then(crate::time::parse_rfc3339_ms)
    }
}

/// An account's sends held or released (`POST /account/pause` / `resume`), told to the
/// worker through the send queue, since the edge cannot reach the schedule in Redis.
/// `at_ms` orders them: SQS may hand them over late, out of order or twice, and a
/// control older than the last one applied to the account is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountControl {
    pub control: Hold,
    pub creator_id: String,
    pub at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hold {
    Pause,
    Resume,
}

/// What the worker reads from the send queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Message(QueueMessage),
    Control(AccountControl),
    Campaign(crate::campaign::CampaignRef),
}

impl Incoming {
    /// Parses a queue message body. Messages are read straight into their type (the
    /// ingest path's common case, one pass); only a body that is not a message is read
    /// again as a campaign or a control, and if it is none, the message's error is the
    /// one told.
    pub fn parse(body: &str) -> Result<Self, serde_json::Error> {
        match serde_json::from_str::<QueueMessage>(body) {
            Ok(m) => Ok(Incoming::Message(m)),
            Err(e) => serde_json::from_str::<crate::campaign::CampaignRef>(body)
                .map(Incoming::Campaign)
                .or_else(|_| serde_json::from_str::<AccountControl>(body).map(Incoming::Control))
                .map_err(|_| e),
        }
    }
}

/// The message attributes set on every SQS message (DESIGN §4).
pub const MESSAGE_TYPE: &str = "onlyfans";
