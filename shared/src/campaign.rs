//! Campaigns: a mass message (`recipientIds`) is one campaign, stored once. The edge
//! writes its two ledger items and one small queue message naming it, whatever the
//! number of recipients; the worker fans it out into per-recipient ledger items and
//! schedule entries.
//!
//! The two items split what changes from what does not, because DynamoDB bills every
//! write on the whole item it touches: the *head* (`#campaign#{id}`) is small and holds
//! what moves (the counters every outcome adds to, the cancel flag every claim checks);
//! the *body* (`#body#{id}`) holds what is written once and only read (content, media,
//! metadata, the recipient list), tens of KB for a large campaign. So a message's claim
//! and outcome cost the same at 100 recipients as at 10,000. The messages' own items
//! carry no content either ([`crate::ledger::LedgerItem`]): readers take it from the body.
//!
//! A campaign's message ids are derived from its id, not stored: message `i` is the
//! campaign id with its last six hex digits replaced by `i` (the campaign's own id has
//! `ffffff` there). So the edge can answer with every message id before the worker has
//! written any of them, `GET /{id}` finds the campaign of an id it does not know yet,
//! and ids within a campaign sort in request order.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::ledger::{self, key, n, s, Body, BodyItem, LedgerItem, MessageStatus, PK, SK, TTL_ATTR};
use crate::message::{QueueMessage, SendRequest, VendorMedia};
use crate::rate::RateLimit;

/// Sort-key prefix of campaign heads (then the campaign id, so newest sort last).
pub const CAMPAIGN_SK_PREFIX: &str = "#campaign#";

/// The index digits of a campaign's own id: no message has them.
const OWN_INDEX: &str = "ffffff";

/// The id of a campaign accepted at `accepted_ms`, from 8 random bytes.
pub fn campaign_id(accepted_ms: u64, seed: [u8; 8]) -> String {
    let mut id = crate::id::uuid_v7(accepted_ms, u16::from_be_bytes([seed[5], seed[6]]), seed);
    id.replace_range(30.., OWN_INDEX);
    id
}

/// The id of message `index` of a campaign.
pub fn message_id(campaign_id: &str, index: u32) -> String {
    format!("{}{index:06x}", messages_prefix(campaign_id))
}

/// The campaign a message id would belong to, and its index there (any message id
/// has a candidate: whether that campaign exists is the ledger's to say).
pub fn campaign_of(message_id: &str) -> Option<(String, u32)> {
    if !crate::id::is_message_id(message_id) || message_id.ends_with(OWN_INDEX) {
        return None;
    }
    let index = u32::from_str_radix(&message_id[30..], 16).ok()?;
    Some((format!("{}{OWN_INDEX}", &message_id[..30]), index))
}

/// The ledger sort key of a campaign's head.
pub fn sort_key(campaign_id: &str) -> String {
    format!("{CAMPAIGN_SK_PREFIX}{campaign_id}")
}

/// What the sort keys of a campaign's messages begin with (and no other item's).
pub fn messages_prefix(campaign_id: &str) -> &str {
    &campaign_id[..campaign_id.len().min(30)]
}

/// The waiting index's shard of a campaign's head, while messages of it wait: one of
/// [`WAIT_SHARDS`] by the last digit of what its id shares with its messages' (random;
/// the id itself ends in `ffffff`).
pub fn wait_shard(campaign_id: &str) -> String {
    format!("c{}", messages_prefix(campaign_id).chars().last().unwrap_or('0'))
}

/// The waiting index's shards of campaign heads, apart from the messages' (`w0`-`wf`),
/// so that the heads can be looked at without reading every waiting message.
pub const WAIT_SHARDS: [&str; 16] = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", "ca", "cb", "cc", "cd", "ce", "cf"];

/// What a queue message names when it carries a campaign: the worker reads the rest
/// from the campaign's ledger item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CampaignRef {
    pub campaign: String,
    pub creator_id: String,
    /// Set when the campaign was canceled: the worker takes what waits off the
    /// schedule and marks it `canceled`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
}

/// A campaign: the content every recipient gets, and who they are.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    pub id: String,
    pub creator_id: String,
    pub recipients: Vec<String>,
    pub content: String,
    pub media_urls: Vec<String>,
    pub priority: u8,
    pub metadata: Map<String, Value>,
    /// RFC 3339 time the edge accepted it.
    pub accepted_at: String,
    pub send_at: Option<String>,
    pub vendor_media: Option<VendorMedia>,
}

impl Campaign {
    pub fn new(send: &SendRequest, id: String, creator_id: &str, accepted_at: &str) -> Self {
        Campaign {
            id,
            creator_id: creator_id.to_owned(),
            recipients: send.recipients.as_slice().to_vec(),
            content: send.content.clone(),
            media_urls: send.media_urls.clone(),
            priority: send.priority,
            metadata: send.metadata.clone(),
            accepted_at: accepted_at.to_owned(),
            send_at: send.send_at_ms.map(crate::time::rfc3339_ms),
            vendor_media: send.vendor_media.clone(),
        }
    }

    /// What every message of it says (its body, as a message read without it is filled).
    pub fn body(&self) -> Body {
        Body { content: self.content.clone(), media_urls: self.media_urls.clone(), metadata: self.metadata.clone(), vendor_media: self.vendor_media.clone() }
    }

    /// Message `index` (to `recipients[index]`).
    pub fn message(&self, index: usize) -> QueueMessage {
        QueueMessage {
            id: message_id(&self.id, index as u32),
            creator_id: self.creator_id.clone(),
            recipient_id: self.recipients[index].clone(),
            content: self.content.clone(),
            media_urls: self.media_urls.clone(),
            priority: self.priority,
            metadata: self.metadata.clone(),
            accepted_at: self.accepted_at.clone(),
            generation: 0,
            send_at: self.send_at.clone(),
            campaign_id: Some(self.id.clone()),
            vendor_media: self.vendor_media.clone(),
        }
    }

    /// Every message of the campaign, in order.
    pub fn messages(&self) -> impl Iterator<Item = QueueMessage> + '_ {
        (0..self.recipients.len()).map(|i| self.message(i))
    }

    /// The message as a template for all of them: no id or recipient (the schedule
    /// stores it once per campaign and each recipient's id and recipient beside it).
    pub fn template(&self) -> QueueMessage {
        QueueMessage { id: String::new(), recipient_id: String::new(), ..self.message(0) }
    }
}

/// A campaign's ledger items: the campaign, and counters of its messages' outcomes
/// that the worker moves in the same transactions as the items they count.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignItem {
    /// Its recipient list, content, media and metadata are empty when only the head
    /// was read (a listing, a view, a cancel).
    pub campaign: Campaign,
    pub total: u64,
    pub sent: u64,
    pub failed: u64,
    pub canceled: u64,
    /// Messages the worker has written items for.
    pub fanned: u64,
    /// Set once the worker has put it on the schedule: a later delivery of its queue
    /// message is a duplicate.
    pub scheduled: bool,
    pub canceled_at: Option<String>,
    /// When the head may expire (outcomes push it on).
    pub expires_at: u64,
    /// When the body may expire: it is never written again, so it is given, from the
    /// start, until [`body_expiry`] after the campaign's estimated end.
    pub body_expires_at: u64,
}

/// When a campaign's body may expire: `ttl_days` after the campaign would end at `rate`
/// from `start_ms`, plus the time its messages could take again with every retry
/// (each waits its turn in the account's queue anew). A campaign held (paused) longer
/// than that loses its content: its messages are then failed, not sent empty.
pub fn body_expiry(start_ms: u64, recipients: u64, rate: RateLimit, ttl_days: u64) -> u64 {
    let duration = rate.offset_ms(recipients.saturating_mul(2), rate.default_margin_ms());
    crate::ledger::expiry(start_ms.saturating_add(duration), ttl_days)
}

impl CampaignItem {
    pub fn new(campaign: Campaign, expires_at: u64, body_expires_at: u64) -> Self {
        CampaignItem {
            total: campaign.recipients.len() as u64,
            campaign,
            sent: 0,
            failed: 0,
            canceled: 0,
            fanned: 0,
            scheduled: false,
            canceled_at: None,
            expires_at,
            body_expires_at,
        }
    }

    /// Messages not yet sent, failed or canceled.
    pub fn waiting(&self) -> u64 {
        self.total.saturating_sub(self.sent + self.failed + self.canceled)
    }

    /// The head and the body in DynamoDB JSON (each written once, by the edge; the
    /// worker then moves the head's counters).
    pub fn to_items(&self) -> [Value; 2] {
        let c = &self.campaign;
        let mut head = json!({
            PK: s(&c.creator_id),
            SK: s(sort_key(&c.id)),
            "campaignId": s(&c.id),
            "total": n(self.total),
            "priority": n(c.priority),
            "acceptedAt": s(&c.accepted_at),
            TTL_ATTR: n(self.expires_at),
        });
        if let Some(at) = &c.send_at {
            head["sendAt"] = s(at);
        }
        let mut body = BodyItem {
            creator_id: &c.creator_id,
            body_id: &c.id,
            content: &c.content,
            media_urls: &c.media_urls,
            metadata: &c.metadata,
            vendor_media: c.vendor_media.as_ref(),
            expires_at: self.body_expires_at,
        }
        .to_item();
        body["recipients"] = s(serde_json::to_string(&c.recipients).expect("strings serialize"));
        [head, body]
    }

    /// The campaign from its head alone (the body's fields empty).
    pub fn from_item(head: &Value) -> Option<Self> {
        Self::from_items(head, None)
    }

    /// The campaign from its head and, when read, its body; `None` when the head is not
    /// a campaign's.
    pub fn from_items(head: &Value, body: Option<&Value>) -> Option<Self> {
        // The message fields read as a ledger item does; the campaign's own come after.
        let mut as_message = head.clone();
        for (name, v) in [(SK, s(ledger::text(head, "campaignId")?)), ("recipientId", s("")), ("status", s("queued"))] {
            as_message[name] = v;
        }
        let mut m = LedgerItem::from_item(&as_message)?.message;
        if let Some(b) = body.and_then(Body::from_item) {
            b.fill(&mut m);
        }
        let recipients: Vec<String> = match body.and_then(|b| ledger::text(b, "recipients")) {
            Some(list) => serde_json::from_str(list).ok()?,
            None => Vec::new(),
        };
        let count = |item: &Value, name: &str| item.get(name).and_then(|v| v.get("N")?.as_str()?.parse::<i64>().ok()).unwrap_or(0).max(0) as u64;
        Some(CampaignItem {
            campaign: Campaign {
                id: m.id,
                creator_id: m.creator_id,
                recipients,
                content: m.content,
                media_urls: m.media_urls,
                priority: m.priority,
                metadata: m.metadata,
                accepted_at: m.accepted_at,
                send_at: m.send_at,
                vendor_media: m.vendor_media,
            },
            total: count(head, "total"),
            sent: count(head, "sent"),
            failed: count(head, "failed"),
            canceled: count(head, "canceled"),
            fanned: count(head, "fanned"),
            scheduled: head.get("scheduled").and_then(|v| v.get("BOOL")).and_then(Value::as_bool).unwrap_or(false),
            canceled_at: ledger::text(head, "canceledAt").map(str::to_owned),
            expires_at: count(head, TTL_ATTR),
            body_expires_at: body.map_or(0, |b| count(b, TTL_ATTR)),
        })
    }

    /// Message `index` as the ledger shows it before the worker wrote its own item (a
    /// canceled campaign's is canceled: the worker will never write it).
    pub fn pending_item(&self, index: usize) -> Option<LedgerItem> {
        (index < self.campaign.recipients.len()).then(|| {
            let mut item = LedgerItem::queued(self.campaign.message(index));
            if self.canceled_at.is_some() {
                item.status = MessageStatus::Canceled;
            }
            item
        })
    }

    /// Its messages that have no item: not fanned out yet, or, once it is canceled, never.
    pub fn unwritten(&self) -> u64 {
        self.total.saturating_sub(self.fanned)
    }

    /// Its messages canceled: each one's item says so, and once it is canceled those
    /// that have none count as canceled too (they will never be written).
    pub fn canceled_count(&self) -> u64 {
        if self.canceled_at.is_some() {
            self.canceled + self.unwritten()
        } else {
            self.canceled
        }
    }

    /// Its messages not yet sent, failed or canceled (being sent among them).
    pub fn queued_count(&self) -> u64 {
        self.total.saturating_sub(self.sent + self.failed + self.canceled_count())
    }

    /// The campaign as `GET /campaigns/{id}` shows it at `now_ms`, its completion
    /// estimated at the account's rate from `sendAt` or now.
    pub fn view(&self, now_ms: u64, rate: RateLimit) -> CampaignView {
        let waiting = self.waiting();
        let send_at_ms = self.campaign.send_at.as_deref().and_then(crate::time::parse_rfc3339_ms);
        let status = if self.canceled_at.is_some() {
            // Canceled: what was under way may still finish; the rest is canceled.
            CampaignStatus::Canceled
        } else if waiting == 0 {
            CampaignStatus::Completed
        } else if send_at_ms.is_some_and(|at| at > now_ms) && self.sent + self.failed == 0 {
            CampaignStatus::Scheduled
        } else {
            CampaignStatus::Sending
        };
        let estimate = (status == CampaignStatus::Sending || status == CampaignStatus::Scheduled)
            .then(|| crate::time::rfc3339_ms(send_at_ms.unwrap_or(0).max(now_ms) + rate.offset_ms(waiting.saturating_sub(1), rate.default_margin_ms())));
        // Each count is of items ([`Self::canceled_count`]); those it still waits for
        // (being sent among them) count as queued until the worker has marked or sent each.
        CampaignView {
            campaign_id: self.campaign.id.clone(),
            status,
            total: self.total,
            queued: self.queued_count(),
            sent: self.sent,
            failed: self.failed,
            canceled: self.canceled_count(),
            created_at: self.campaign.accepted_at.clone(),
            send_at: self.campaign.send_at.clone(),
            estimated_completion_time: estimate,
        }
    }
}

/// The primary key of a campaign's head.
pub fn item_key(creator_id: &str, campaign_id: &str) -> Value {
    key(creator_id, &sort_key(campaign_id))
}

/// The primary key of a campaign's body.
pub fn body_key(creator_id: &str, campaign_id: &str) -> Value {
    ledger::body_key(creator_id, campaign_id)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CampaignStatus {
    Scheduled,
    Sending,
    Completed,
    Canceled,
}

/// `GET /campaigns/{id}`, and each entry of `GET /campaigns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CampaignView {
    pub campaign_id: String,
    pub status: CampaignStatus,
    pub total: u64,
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
    pub canceled: u64,
    pub created_at: String,
    pub send_at: Option<String>,
    pub estimated_completion_time: Option<String>,
}

/// `GET /campaigns`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CampaignPage {
    pub campaigns: Vec<CampaignView>,
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign(n: usize) -> Campaign {
        Campaign {
            id: campaign_id(1_700_000_000_000, [7; 8]),
            creator_id: "creator-1".into(),
            recipients: (0..n).map(|i| format!("fan-{i}")).collect(),
            content: "Hello".into(),
            media_urls: vec!["https://cdn.example.com/a.jpg".into()],
            priority: 3,
            metadata: Map::new(),
            accepted_at: "2023-11-14T22:13:20.000Z".into(),
            send_at: None,
            vendor_media: None,
        }
    }

    #[test]
    fn message_ids_derive_from_the_campaign_and_back() {
        let c = campaign(10_000);
        assert!(crate::id::is_message_id(&c.id) && c.id.ends_with("ffffff"));
        let ids: Vec<String> = (0..10_000).map(|i| c.message(i).id).collect();
        assert!(ids.iter().all(|id| crate::id::is_message_id(id)));
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids sort in request order");
        assert_eq!(campaign_of(&ids[9_999]), Some((c.id.clone(), 9_999)));
        assert_eq!(campaign_of(&c.id), None, "a campaign's own id is no message of it");
        assert_ne!(campaign_id(1_700_000_000_000, [8; 8]), c.id);
    }

    #[test]
    fn item_round_trips_and_counts_add_up() {
        let mut item = CampaignItem::new(campaign(5), 1_800_000_000, 1_900_000_000);
        let [head, body] = item.to_items();
        assert_eq!(CampaignItem::from_items(&head, Some(&body)), Some(item.clone()));
        assert!(head.get("content").is_none() && head.get("recipients").is_none(), "the head is small: every outcome rewrites it");
        let bare = CampaignItem::from_item(&head).unwrap();
        assert!(bare.campaign.recipients.is_empty() && bare.campaign.content.is_empty() && bare.total == 5);
        let rate = RateLimit { max: 10, window_ms: 60_000 };
        let now = 1_700_000_000_000;
        let v = item.view(now, rate);
        assert_eq!((v.status, v.total, v.queued), (CampaignStatus::Sending, 5, 5));
        assert_eq!(v.estimated_completion_time.as_deref(), Some("2023-11-14T22:13:44.000Z"));
        item.sent = 3;
        item.failed = 1;
        item.canceled = 1;
        assert_eq!(item.view(now, rate).status, CampaignStatus::Completed);
        item.canceled = 0;
        item.fanned = 5;
        item.canceled_at = Some("x".into());
        let v = item.view(now, rate);
        assert_eq!((v.status, v.queued, v.canceled), (CampaignStatus::Canceled, 1, 0), "one message waits: perhaps under way, not canceled yet");
        item.fanned = 4;
        let v = item.view(now, rate);
        assert_eq!((v.queued, v.canceled), (0, 1), "one never written: canceled with its campaign");
        assert_eq!(item.pending_item(4).map(|i| i.status), Some(MessageStatus::Canceled));
        assert_eq!(item.pending_item(5), None);
    }
}
