//! What travels in the send queue (SQS), from the edge to the worker: a message, a
//! campaign's reference (or its cancel), an account's hold or release, the notice of
//! a canceled message, and a webhook endpoint's test event. The edge cannot reach the schedule in Redis: everything the
//! worker must apply to it comes this way, in order of each body's own time where it
//! matters (SQS may hand a body over late, out of order or twice).

use serde::{Deserialize, Serialize};

use crate::campaign::CampaignRef;
use crate::message::QueueMessage;
use crate::webhook::TestEvent;

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

/// A message canceled by its user (`DELETE /{id}`, after the ledger's cancel): the
/// worker takes it off the schedule, so that it neither waits there until its slot
/// nor costs one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelNotice {
    pub canceled: QueueMessage,
}

/// What the worker reads from the send queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Message(QueueMessage),
    Control(AccountControl),
    Campaign(CampaignRef),
    Canceled(QueueMessage),
    /// A test event for one webhook endpoint.
    WebhookTest(TestEvent),
}

/// How a test event travels: `{"webhookTest": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookTestNotice {
    pub webhook_test: TestEvent,
}

impl Incoming {
    /// Parses a queue message body. Messages are read straight into their type (the
    /// ingest path's common case, one pass); only a body that is not a message is read
    /// again as a campaign or a control, and if it is none, the message's error is the
    /// one told.
    pub fn parse(body: &str) -> Result<Self, serde_json::Error> {
        match serde_json::from_str::<QueueMessage>(body) {
            Ok(m) => Ok(Incoming::Message(m)),
            Err(e) => serde_json::from_str::<CampaignRef>(body)
                .map(Incoming::Campaign)
                .or_else(|_| serde_json::from_str::<AccountControl>(body).map(Incoming::Control))
                .or_else(|_| serde_json::from_str::<CancelNotice>(body).map(|n| Incoming::Canceled(n.canceled)))
                .or_else(|_| serde_json::from_str::<WebhookTestNotice>(body).map(|n| Incoming::WebhookTest(n.webhook_test)))
                .map_err(|_| e),
        }
    }
}

/// The `messageType` attribute of every SQS message the edge writes.
pub const MESSAGE_TYPE: &str = "onlyfans";
