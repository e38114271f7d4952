//! The message as it travels: the validated send request, and the message the edge
//! writes to SQS and the worker reads back (the other bodies of the queue: [`crate::queue`]).

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
    pub vendor_media: Option<VendorMedia>,
}

/// What the vendor attaches to a message (OnlyFansAPI's `mediaFiles`, `previews` and
/// `price`): media by the vendor's ids (`ofapi_media_…`) or the creator's vault ids
/// (digits), those of them shown before purchase, and the price in whole USD (0 free,
/// or 3–200; a paid message has media). Stored once per campaign, like the content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VendorMedia {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preview_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub price: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
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
            vendor_media: self.vendor_media.clone(),
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
    /// Media and price for the vendor, when it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_media: Option<VendorMedia>,
}

impl QueueMessage {
    /// When it may be sent first (Unix ms), if it was scheduled.
    pub fn send_at_ms(&self) -> Option<u64> {
        self.send_at.as_deref().and_then(crate::time::parse_rfc3339_ms)
    }
}
