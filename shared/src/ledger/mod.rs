//! The ledger: one DynamoDB item per message, keyed by account and message id, plus one
//! summary item per account and one item per campaign. This module fixes the item
//! layout; [`machine`] the status machine and the counters its transitions move. The
//! edge and the worker do the I/O.
//!
//! Items are written in DynamoDB's JSON form (`{"S": ..}`, `{"N": ..}`), the form both
//! the JSON protocol and `serde_json` speak.

pub mod machine;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::message::{QueueMessage, VendorMedia};

/// Partition key: the account.
pub const PK: &str = "creatorId";
/// Sort key: the message id, or a reserved key below (never a UUID).
pub const SK: &str = "messageId";
/// Sort key of the per-account summary item (atomic counters).
pub const SUMMARY_SK: &str = "#summary";
/// Sort-key prefix of idempotency records.
pub const IDEMPOTENCY_SK_PREFIX: &str = "#idem#";
/// The sparse global secondary index of failed messages, newest first.
pub const FAILED_INDEX: &str = "failed-index";
/// Its sort key: `<failedAt>#<messageId>`, present only while `status` is `failed`.
pub const FAILED_KEY: &str = "failedKey";
/// The sparse global secondary index of what the schedule must know again after Redis
/// lost its data: every waiting single message (`queued`, scheduled, being sent or
/// between attempts), the head of every campaign with messages waiting (its messages'
/// own items are not in it: the head stands for them, and a rebuild reads them by their
/// common prefix; one retried is in it again), and the summary of every account held
/// (paused) or paused by a 429. What the worker reads to rebuild the schedule, without
/// scanning the table.
pub const WAITING_INDEX: &str = "waiting-index";
/// What it projects besides the keys (`deploy/template.yaml` declares it: a test checks
/// the two agree): what a rebuild reads, and nothing a claim, a count or a summary's
/// counter changes, so that those writes cost the index nothing (an index is written
/// only when its projection of the item changes).
pub const WAITING_INDEX_ATTRIBUTES: [&str; 11] =
    ["recipientId", "priority", "acceptedAt", "generation", "sendAt", "campaignId", "attempts", "maybeSent", "paused", "holdAtMs", "pauseUntilMs"];
/// Its partition key, present only while a message waits (or an account is held): one
/// of 16 shards ("w0" to "wf", a message id's last hex digit), so that its writes spread
/// and a recovery reads 16 partitions in parallel.
pub const WAIT_SHARD: &str = "waitShard";
/// The shards of the waiting index.
pub const WAIT_SHARDS: [&str; 16] = ["w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9", "wa", "wb", "wc", "wd", "we", "wf"];

/// The waiting index's shard of a message.
pub fn wait_shard(message_id: &str) -> String {
    format!("w{}", message_id.chars().last().unwrap_or('0'))
}

/// The waiting index's shard of an account's summary (while it is held or paused).
pub fn account_wait_shard(account: &str) -> String {
    let sum = account.bytes().fold(0u32, |acc, b| acc.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("w{:x}", sum % 16)
}

/// The TTL attribute (epoch seconds).
pub const TTL_ATTR: &str = "ttl";
/// How long an item is kept after its message finished, by default (`LEDGER_TTL_DAYS`).
pub const DEFAULT_TTL_DAYS: u64 = 30;

/// When an item finished at `now_ms` may expire (epoch seconds).
pub fn expiry(now_ms: u64, ttl_days: u64) -> u64 {
    now_ms / 1000 + ttl_days * 86_400
}

/// Where a message is in its life (the transitions: [`machine`]). `scheduled` is how
/// the API shows a queued message whose `sendAt` is still ahead; the ledger stores it as
/// `queued` with its `sendAt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Queued,
    Scheduled,
    Sending,
    Sent,
    Failed,
    Canceled,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Scheduled => "scheduled",
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Failed => "failed",
            MessageStatus::Canceled => "canceled",
        }
    }

    /// Sent, failed or canceled: nothing more happens to this generation (a failed
    /// message's retry is a new one).
    pub fn is_final(self) -> bool {
        matches!(self, MessageStatus::Sent | MessageStatus::Failed | MessageStatus::Canceled)
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => MessageStatus::Queued,
            "sending" => MessageStatus::Sending,
            "sent" => MessageStatus::Sent,
            "failed" => MessageStatus::Failed,
            "canceled" => MessageStatus::Canceled,
            _ => return None,
        })
    }
}

/// A string attribute.
pub fn s(v: impl Into<String>) -> Value {
    json!({ "S": v.into() })
}

/// A number attribute.
pub fn n(v: impl std::fmt::Display) -> Value {
    json!({ "N": v.to_string() })
}

/// A string attribute of an item, if present.
pub fn text<'a>(item: &'a Value, name: &str) -> Option<&'a str> {
    item.get(name)?.get("S")?.as_str()
}

/// The primary key of one item.
pub fn key(creator_id: &str, sort_key: &str) -> Value {
    json!({ PK: s(creator_id), SK: s(sort_key) })
}

/// The sort key of the failed index for a message that failed at `failed_at`.
pub fn failed_key(failed_at: &str, message_id: &str) -> String {
    format!("{failed_at}#{message_id}")
}

/// One message's ledger item. It carries no content, media or metadata: those are
/// written once, in a body item apart (`#body#<id>`: the message's own, or its
/// campaign's for every recipient, [`crate::campaign`]), and a reader that shows or
/// sends the message fills them from there ([`LedgerItem::body_to_fill`]). The item the
/// worker rewrites at each step stays small, so each of its writes costs one unit
/// whatever the content's size.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerItem {
    pub message: QueueMessage,
    pub status: MessageStatus,
    pub attempts: u32,
    pub sent_at: Option<String>,
    pub failed_at: Option<String>,
    pub last_error: Option<String>,
    /// Epoch seconds after which DynamoDB may delete the item: none while it waits.
    pub expires_at: Option<u64>,
    /// The gateway's id of the sent message, when it gave one (the vendor's).
    pub gateway_id: Option<String>,
}

impl LedgerItem {
    /// The item of a message just accepted (no expiry while it waits).
    pub fn queued(message: QueueMessage) -> Self {
        Self { message, status: MessageStatus::Queued, attempts: 0, sent_at: None, failed_at: None, last_error: None, expires_at: None, gateway_id: None }
    }

    /// The item in DynamoDB JSON as a value (its [`Serialize`] form); empty optional
    /// fields are left out.
    pub fn to_item(&self) -> Value {
        serde_json::to_value(self).expect("a ledger item always serializes")
    }

    /// The id of the body this message's content is in (its campaign's, or its own),
    /// when it was read without it.
    pub fn body_to_fill(&self) -> Option<&str> {
        self.message.content.is_empty().then(|| body_id(&self.message))
    }

    /// Reads an item back; `None` when it is not a well-formed message item.
    pub fn from_item(item: &Value) -> Option<Self> {
        let text = |name: &str| text(item, name).map(str::to_owned);
        Some(Self {
            message: message_of(item)?,
            status: MessageStatus::parse(&text("status")?)?,
            attempts: attempts_of(item),
            sent_at: text("sentAt"),
            failed_at: text("failedAt"),
            last_error: text("lastError"),
            expires_at: number(item, TTL_ATTR),
            gateway_id: text(machine::GATEWAY_ID),
        })
    }
}

/// A whole-number attribute of an item, if present.
pub fn number(item: &Value, name: &str) -> Option<u64> {
    item.get(name)?.get("N")?.as_str()?.parse::<u64>().ok()
}

/// The message an item (or its row in the waiting index, which projects only what a
/// rebuild needs: [`WAITING_INDEX_ATTRIBUTES`]) holds; `None` when it is not a
/// well-formed message item.
pub fn message_of(item: &Value) -> Option<QueueMessage> {
    let text = |name: &str| text(item, name).map(str::to_owned);
    // None of these here (but in an item written before bodies were apart): see
    // `body_to_fill`.
    let Body { content, media_urls, metadata, vendor_media } = Body::from_item(item).unwrap_or_default();
    Some(QueueMessage {
        id: text(SK)?,
        creator_id: text(PK)?,
        recipient_id: text("recipientId")?,
        content,
        media_urls,
        priority: u8::try_from(number(item, "priority")?).ok()?,
        metadata,
        accepted_at: text("acceptedAt")?,
        generation: number(item, "generation").unwrap_or(0) as u32,
        send_at: text("sendAt"),
        campaign_id: text("campaignId"),
        vendor_media,
    })
}

/// The attempts a message item records.
pub fn attempts_of(item: &Value) -> u32 {
    number(item, "attempts").unwrap_or(0) as u32
}

/// What a message says, as an item stores it: a single message's item, or a campaign's
/// body for all its messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Body {
    pub content: String,
    pub media_urls: Vec<String>,
    pub metadata: Map<String, Value>,
    pub vendor_media: Option<VendorMedia>,
}

/// Sort-key prefix of body items (apart from the `#campaign#` heads, so that listing
/// heads never reads them).
pub const BODY_SK_PREFIX: &str = "#body#";

/// The id of the body a message's content is in: its campaign's, or its own.
pub fn body_id(m: &QueueMessage) -> &str {
    m.campaign_id.as_deref().unwrap_or(&m.id)
}

/// The sort key of a body item.
pub fn body_sort_key(body_id: &str) -> String {
    format!("{BODY_SK_PREFIX}{body_id}")
}

/// The primary key of a body item.
pub fn body_key(creator_id: &str, body_id: &str) -> Value {
    key(creator_id, &body_sort_key(body_id))
}

/// When a single message's body may expire: it is never written again, so from the
/// start it is given `ttl_days` for the message's wait (a held account's included) and
/// `ttl_days` more, as its item gets once it finished. (A campaign's: `campaign::body_expiry`.)
pub fn single_body_expiry(start_ms: u64, ttl_days: u64) -> u64 {
    expiry(start_ms, ttl_days.saturating_mul(2))
}

impl Body {
    /// Reads it from an item; `None` when the item has no content.
    pub fn from_item(item: &Value) -> Option<Self> {
        let media_urls = match item.get("mediaUrls").and_then(|v| v.get("L")) {
            Some(Value::Array(l)) => l.iter().filter_map(|v| v.get("S")?.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        };
        let metadata = match text(item, "metadata").map(serde_json::from_str) {
            Some(Ok(Value::Object(m))) => m,
            _ => Map::new(),
        };
        let vendor_media = text(item, VENDOR_MEDIA).and_then(|v| serde_json::from_str(v).ok());
        Some(Body { content: text(item, "content")?.to_owned(), media_urls, metadata, vendor_media })
    }

    /// Gives it to a message read without it ([`LedgerItem::body_to_fill`]).
    pub fn fill(&self, m: &mut QueueMessage) {
        m.content.clone_from(&self.content);
        m.media_urls.clone_from(&self.media_urls);
        m.metadata.clone_from(&self.metadata);
        m.vendor_media.clone_from(&self.vendor_media);
    }
}

/// A body item as written: serialized straight to the request body (the edge writes a
/// single message's on every send, and builds no JSON tree for it).
pub struct BodyItem<'a> {
    pub creator_id: &'a str,
    pub body_id: &'a str,
    pub content: &'a str,
    pub media_urls: &'a [String],
    pub metadata: &'a Map<String, Value>,
    pub vendor_media: Option<&'a VendorMedia>,
    pub expires_at: u64,
}

/// The body's attribute holding its [`VendorMedia`] (JSON), when it has any.
const VENDOR_MEDIA: &str = "vendorMedia";

impl<'a> BodyItem<'a> {
    /// A single message's own body.
    pub fn of(m: &'a QueueMessage, expires_at: u64) -> Self {
        BodyItem {
            creator_id: &m.creator_id,
            body_id: &m.id,
            content: &m.content,
            media_urls: &m.media_urls,
            metadata: &m.metadata,
            vendor_media: m.vendor_media.as_ref(),
            expires_at,
        }
    }

    /// In DynamoDB JSON as a value.
    pub fn to_item(&self) -> Value {
        serde_json::to_value(self).expect("a body item always serializes")
    }
}

impl Serialize for BodyItem<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut item = ser.serialize_map(None)?;
        item.serialize_entry(PK, &Str(self.creator_id))?;
        item.serialize_entry(SK, &Str(&body_sort_key(self.body_id)))?;
        item.serialize_entry("content", &Str(self.content))?;
        item.serialize_entry(TTL_ATTR, &Num(self.expires_at))?;
        if !self.media_urls.is_empty() {
            item.serialize_entry("mediaUrls", &StrList(self.media_urls))?;
        }
        if !self.metadata.is_empty() {
            item.serialize_entry("metadata", &Str(&serde_json::to_string(self.metadata).expect("a JSON map serializes")))?;
        }
        if let Some(media) = self.vendor_media {
            item.serialize_entry(VENDOR_MEDIA, &Str(&serde_json::to_string(media).expect("vendor media serializes")))?;
        }
        item.end()
    }
}

/// DynamoDB attribute values, written straight to the request body: a send builds no
/// intermediate JSON tree (it showed in the edge's CPU profile).
struct Str<'a>(&'a str);
struct Num(u64);
struct StrList<'a>(&'a [String]);

impl Serialize for Str<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(Some(1))?;
        m.serialize_entry("S", self.0)?;
        m.end()
    }
}

impl Serialize for StrList<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let list: Vec<Str> = self.0.iter().map(|v| Str(v)).collect();
        let mut m = ser.serialize_map(Some(1))?;
        m.serialize_entry("L", &list)?;
        m.end()
    }
}

impl Serialize for Num {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(Some(1))?;
        m.serialize_entry("N", &self.0.to_string())?;
        m.end()
    }
}

/// The item in DynamoDB JSON.
impl Serialize for LedgerItem {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let m = &self.message;
        let mut item = ser.serialize_map(None)?;
        item.serialize_entry(PK, &Str(&m.creator_id))?;
        item.serialize_entry(SK, &Str(&m.id))?;
        item.serialize_entry("status", &Str(self.status.as_str()))?;
        item.serialize_entry("attempts", &Num(self.attempts.into()))?;
        item.serialize_entry("generation", &Num(m.generation.into()))?;
        item.serialize_entry("recipientId", &Str(&m.recipient_id))?;
        item.serialize_entry("priority", &Num(m.priority.into()))?;
        item.serialize_entry("acceptedAt", &Str(&m.accepted_at))?;
        if let Some(ttl) = self.expires_at {
            item.serialize_entry(TTL_ATTR, &Num(ttl))?;
        }

        for (name, v) in [
            ("campaignId", &m.campaign_id),
            ("sendAt", &m.send_at),
            ("sentAt", &self.sent_at),
            ("failedAt", &self.failed_at),
            ("lastError", &self.last_error),
            (machine::GATEWAY_ID, &self.gateway_id),
        ] {
            if let Some(v) = v {
                item.serialize_entry(name, &Str(v))?;
            }
        }
        if let (MessageStatus::Failed, Some(at)) = (self.status, &self.failed_at) {
            item.serialize_entry(FAILED_KEY, &Str(&failed_key(at, &m.id)))?;
        }
        // A campaign's message waits in the index through its campaign's head.
        if self.status == MessageStatus::Queued && m.campaign_id.is_none() {
            item.serialize_entry(WAIT_SHARD, &Str(&wait_shard(&m.id)))?;
        }
        item.end()
    }
}

/// An account's summary item: its counters (moved only with the transitions they count,
/// [`machine`]), its last send, and whether it is held or paused by the gateway (kept in
/// the waiting index meanwhile, so that a rebuild of the schedule holds it again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages accepted and not yet finished (queued or sending).
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
    pub last_sent_at_ms: Option<u64>,
    /// Set on `POST /account/pause` (by the edge once the control is queued, and by the
    /// worker when it applies it), cleared on resume.
    pub paused: bool,
    /// When the control that set `paused` was made (ms): an older one never overrides it.
    pub hold_at_ms: Option<u64>,
    /// Until when (ms) the gateway asked this account to pause (a 429's `Retry-After`).
    pub rate_limited_until_ms: Option<u64>,
    /// Why the worker held it, when it did (the vendor refused its credentials).
    pub hold_reason: Option<String>,
    /// The account's id at the delivery vendor, when it is not the account id itself.
    pub vendor_account_id: Option<String>,
    /// The times (ms) of its last sends, oldest first (`machine::recorded_sends`).
    pub recent_sends: Vec<u64>,
}

impl Summary {
    /// Reads the summary from an item (or its absence); counters never go below zero.
    pub fn from_item(item: Option<&Value>) -> Self {
        let Some(item) = item else { return Self::default() };
        let num = |name: &str| -> Option<i64> { item.get(name)?.get("N")?.as_str()?.parse().ok() };
        let count = |name: &str| num(name).unwrap_or(0).max(0) as u64;
        Summary {
            queued: count("queued"),
            sent: count("sent"),
            failed: count("failed"),
            last_sent_at_ms: num("lastSentAtMs").map(|v| v.max(0) as u64),
            paused: item.get("paused").and_then(|v| v.get("BOOL")).and_then(Value::as_bool).unwrap_or(false),
            hold_at_ms: num("holdAtMs").map(|v| v.max(0) as u64),
            rate_limited_until_ms: num("pauseUntilMs").map(|v| v.max(0) as u64),
            hold_reason: text(item, machine::HOLD_REASON).map(str::to_owned),
            vendor_account_id: text(item, machine::VENDOR_ACCOUNT).map(str::to_owned),
            recent_sends: recent_sends(item),
        }
    }
}

/// A summary's last sends (`recent<k>` attributes: [`machine::recorded_sends`]), oldest first.
fn recent_sends(item: &Value) -> Vec<u64> {
    let mut sends: Vec<u64> = item
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.strip_prefix(machine::RECENT_SEND_PREFIX).is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit())))
        .filter_map(|(_, value)| value.get("N")?.as_str()?.parse::<u64>().ok())
        .collect();
    sends.sort_unstable();
    sends
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The template's waiting index projects what the rebuild reads, no more.
    #[test]
    fn the_template_projects_the_waiting_index_attributes() {
        let template = include_str!("../../../deploy/template.yaml");
        let index = &template[template.find("IndexName: waiting-index").expect("the waiting index")..];
        let line = index.lines().find(|l| l.contains("NonKeyAttributes")).expect("an INCLUDE projection");
        let listed: Vec<&str> = line[line.find('[').unwrap() + 1..line.find(']').unwrap()].split(',').map(str::trim).collect();
        assert_eq!(listed, WAITING_INDEX_ATTRIBUTES);
    }

    fn message() -> QueueMessage {
        let mut metadata = Map::new();
        metadata.insert("campaign".into(), json!("spring"));
        QueueMessage {
            id: "018bcfe5-6800-7fff-bfff-ffffffffffff".into(),
            creator_id: "creator-1".into(),
            recipient_id: "fan-1".into(),
            content: "Hello".into(),
            media_urls: vec!["https://cdn.example.com/a.jpg".into()],
            priority: 2,
            metadata,
            accepted_at: "2026-11-25T06:00:00.000Z".into(),
            generation: 1,
            send_at: Some("2026-11-25T07:00:00.000Z".into()),
            campaign_id: Some("018bcfe5-6800-7fff-bfff-ffffffffffff".into()),
            vendor_media: None,
        }
    }

    /// The message as its item alone reads back: without what its body holds.
    fn without_body(mut item: LedgerItem) -> LedgerItem {
        Body::default().fill(&mut item.message);
        item
    }

    #[test]
    fn item_round_trips() {
        let mut m = message();
        m.campaign_id = None;
        let mut item = LedgerItem::queued(m);
        assert_eq!(LedgerItem::from_item(&item.to_item()), Some(without_body(item.clone())));
        assert!(item.to_item().get(TTL_ATTR).is_none(), "a waiting message does not expire");
        item.expires_at = Some(1_800_000_000);
        item.status = MessageStatus::Failed;
        item.failed_at = Some("2026-11-25T06:01:00.000Z".into());
        item.last_error = Some("gateway answered 400".into());
        let json = item.to_item();
        assert!(json.get(WAIT_SHARD).is_none(), "a failed item is not waiting");
        assert_eq!(json[FAILED_KEY]["S"], "2026-11-25T06:01:00.000Z#018bcfe5-6800-7fff-bfff-ffffffffffff");
        assert_eq!(LedgerItem::from_item(&json), Some(without_body(item)));
    }

    #[test]
    fn an_item_carries_no_content_and_names_its_body() {
        for campaign in [true, false] {
            let mut m = message();
            m.id = "018bcfe5-6800-7fff-bfff-000000000001".into();
            if !campaign {
                m.campaign_id = None;
            }
            let json = LedgerItem::queued(m.clone()).to_item();
            for absent in ["content", "mediaUrls", "metadata"] {
                assert!(json.get(absent).is_none(), "{absent} is in the body");
            }
            let mut read = LedgerItem::from_item(&json).unwrap();
            let body = if campaign { "018bcfe5-6800-7fff-bfff-ffffffffffff" } else { "018bcfe5-6800-7fff-bfff-000000000001" };
            assert_eq!(read.body_to_fill(), Some(body));
            let mut own = m.clone();
            own.id = body.into();
            let stored = BodyItem::of(&own, 1_800_000_000).to_item();
            assert_eq!(stored["messageId"]["S"], format!("#body#{body}"));
            assert_eq!(stored["metadata"]["S"], r#"{"campaign":"spring"}"#);
            Body::from_item(&stored).unwrap().fill(&mut read.message);
            assert_eq!(read.body_to_fill(), None);
            assert_eq!(read.message, m);
        }
    }

    #[test]
    fn failed_key_only_while_failed_and_optional_fields_left_out() {
        let mut m = message();
        m.media_urls.clear();
        m.metadata.clear();
        let of_campaign = LedgerItem::queued(m.clone()).to_item();
        assert!(of_campaign.get(WAIT_SHARD).is_none(), "a campaign's message waits in the waiting index through its head");
        let json = LedgerItem::queued(QueueMessage { campaign_id: None, ..m }).to_item();
        assert_eq!(json[WAIT_SHARD]["S"], "wf", "a queued single message is in the waiting index");
        for absent in [FAILED_KEY, "mediaUrls", "metadata", "sentAt", "failedAt", "lastError"] {
            assert!(json.get(absent).is_none(), "{absent} should be absent");
        }
    }

    #[test]
    fn summary_reads_counters_and_clamps_drift() {
        let item = json!({"queued": {"N": "-1"}, "sent": {"N": "7"}, "lastSentAtMs": {"N": "1000"}, "paused": {"BOOL": true}});
        assert_eq!(Summary::from_item(Some(&item)), Summary { queued: 0, sent: 7, failed: 0, last_sent_at_ms: Some(1000), paused: true, ..Summary::default() });
        assert_eq!(Summary::from_item(None), Summary::default());
    }

    /// The sends an outcome records are read back, and nothing else named like them.
    #[test]
    fn summary_reads_the_sends_its_outcomes_recorded() {
        let (update, values) = machine::recorded_sends(&[(4, 6000), (3, 1000), (4, 7000)]);
        assert_eq!(update, "recent3 = :recent3, recent4 = :recent4");
        let mut item = json!({"recentish": {"N": "5"}, "recent": {"N": "6"}});
        for (name, value) in values {
            item[&name[1..]] = value;
        }
        let mut sends = Summary::from_item(Some(&item)).recent_sends;
        sends.sort_unstable();
        assert_eq!(sends, [1000, 7000]);
    }
}
