//! Webhooks as Standard Webhooks 1.0 defines them (standardwebhooks.com): how a
//! delivery is signed, which endpoint URLs a tenant may register, and an endpoint as
//! the ledger keeps it and the API shows it. Pure rules: the worker signs and sends,
//! the edge registers.
//!
//! A delivery carries three headers: `webhook-id` (the event's id, the same on every
//! attempt, so a receiver can drop repeats), `webhook-timestamp` (Unix seconds of this
//! attempt) and `webhook-signature`: `v1,<base64 of HMAC-SHA256("{id}.{timestamp}.{body}")>`
//! keyed with the secret's bytes, one per secret, space-separated, so that while a
//! secret is rotated the old and the new both sign and a receiver holding either verifies.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::error::FieldError;
use crate::ledger;

/// What an endpoint's signing secret starts with, as the spec's libraries expect.
pub const SECRET_PREFIX: &str = "whsec_";

/// Bytes of a new secret (the spec asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// An endpoint's signing secret: its bytes, shown to the tenant as `whsec_<base64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    // Never printed: a secret in a log would let anyone sign as us.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// A secret of these (random) bytes.
    pub fn from_bytes(bytes: [u8; SECRET_BYTES]) -> Self {
        Self(bytes.to_vec())
    }

    /// Reads `whsec_<base64>` (the prefix may be left out, as the libraries allow).
    pub fn parse(text: &str) -> Result<Self, String> {
        let b64 = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let bytes = STANDARD.decode(b64).map_err(|_| format!("a secret is {SECRET_PREFIX} followed by base64"))?;
        if !(24..=64).contains(&bytes.len()) {
            return Err("a secret is 24 to 64 bytes".into());
        }
        Ok(Self(bytes))
    }

    /// `whsec_<base64>`: how the tenant sees it, once.
    pub fn reveal(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// `v1,<base64 HMAC-SHA256>` of one delivery attempt.
    fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header of one attempt: a signature per secret (the current
/// one first, then one being rotated out), space-separated.
pub fn signature(secrets: &[&Secret], id: &str, timestamp: u64, body: &[u8]) -> String {
    secrets.iter().map(|s| s.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// Whether `header` carries a valid signature of this attempt by `secret` (what a
/// receiver checks; compared in constant time).
pub fn verify(secret: &Secret, header: &str, id: &str, timestamp: u64, body: &[u8]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes a key of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    header.split(' ').filter_map(|s| s.strip_prefix("v1,")).filter_map(|b64| STANDARD.decode(b64).ok()).any(|sig| mac.clone().verify_slice(&sig).is_ok())
}

/// The longest endpoint URL accepted.
pub const MAX_URL_CHARS: usize = 2048;

/// Whether a tenant may register `url` as a webhook endpoint: `https` (plain `http` only
/// to a loopback host, and only when `allow_loopback`: a local run), no credentials in
/// it, and no host that reaches inside our network: a literal private, loopback,
/// link-local (the cloud's metadata service among them), shared or reserved address,
/// `localhost`, or a name under `.internal`, `.local` or `.localhost`. (A name that
/// resolves to such an address is refused by the worker when it delivers.) The reason
/// names what is wrong.
pub fn endpoint_url(url: &str, allow_loopback: bool) -> Result<(), String> {
    if url.len() > MAX_URL_CHARS {
        return Err(format!("must be at most {MAX_URL_CHARS} characters"));
    }
    let (scheme, rest) = url.split_once("://").ok_or("must be an absolute https URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not carry credentials (user:password@)".into());
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    }
    .to_ascii_lowercase();
    if host.is_empty() {
        return Err("must name a host".into());
    }
    let loopback = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            if ip.is_loopback() {
                true
            } else if !public(ip) {
                return Err(format!("must not point at a private, link-local or reserved address ({ip})"));
            } else {
                false
            }
        }
        Err(_) => {
            let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
            let tld = labels.last().copied().unwrap_or_default();
            // Numbers in other forms (2130706433, 0x7f.1) are addresses to some resolvers.
            let named = (tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_lowercase())) || tld.starts_with("xn--");
            if host == "localhost" || tld == "localhost" {
                true
            } else if !named || labels.iter().any(|l| l.is_empty() || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')) {
                return Err(format!("must name a host by a domain name or a public address, not {host:?}"));
            } else if ["internal", "local", "localdomain", "intranet", "corp", "home", "lan"].contains(&tld) {
                return Err(format!("must not point inside a network (.{tld})"));
            } else {
                false
            }
        }
    };
    match (scheme.to_ascii_lowercase().as_str(), loopback) {
        ("https", false) => Ok(()),
        ("https" | "http", true) if allow_loopback => Ok(()),
        (_, true) => Err("must not point at this machine (loopback)".into()),
        _ => Err("must be https".into()),
    }
}

/// Whether an address is reachable on the public internet (what a tenant's endpoint
/// may be): not private, loopback, link-local, shared (CGNAT), documentation,
/// multicast, unspecified or otherwise reserved; an IPv4 address inside IPv6 is judged
/// as IPv4.
pub fn public(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public(v4.into());
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local (AWS's metadata service is fd00:ec2::254)
                || (first & 0xffc0) == 0xfe80 // link-local
                || first == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || first == 0x0064 && v6.segments()[1] == 0xff9b) // NAT64 to IPv4 of any kind
        }
    }
}

/// The events an endpoint may ask for (`POST /webhooks`'s `events`; all of them when
/// left out).
pub const EVENTS: [&str; 7] =
    ["message.sent", "message.failed", "message.canceled", "campaign.completed", "campaign.canceled", "account.paused", "account.resumed"];

/// Endpoints one account may have: each event is signed and sent once per endpoint.
pub const MAX_ENDPOINTS: usize = 10;

/// How long a rotated-out secret still signs beside the new one (a receiver deploying
/// the new secret has a day to do it without a delivery failing verification).
pub const ROTATION_GRACE_MS: u64 = 24 * 3600 * 1000;

/// The sort key prefix of an endpoint's item, in its account's partition of the ledger.
pub const ENDPOINT_SK_PREFIX: &str = "#webhook#";

/// What an endpoint id starts with (the rest is a UUIDv7: ids sort by creation).
const ENDPOINT_ID_PREFIX: &str = "ep_";

/// The waiting index's shard every endpoint is in (its keys only: the index projects
/// nothing else of it), so that a worker learns which accounts have endpoints with one
/// query, and asks no account without one for its endpoints.
pub const ENDPOINTS_SHARD: &str = "h0";

/// A new endpoint's id.
pub fn endpoint_id(now_ms: u64, random: [u8; 8]) -> String {
    format!("{ENDPOINT_ID_PREFIX}{}", crate::id::uuid_v7(now_ms, 0, random))
}

/// Whether `id` has the shape of an endpoint id (anything else is a 404 before the ledger).
pub fn is_endpoint_id(id: &str) -> bool {
    id.strip_prefix(ENDPOINT_ID_PREFIX).is_some_and(crate::id::is_message_id)
}

/// The ledger key of an endpoint.
pub fn endpoint_key(account: &str, id: &str) -> Value {
    ledger::key(account, &format!("{ENDPOINT_SK_PREFIX}{id}"))
}

/// `POST /webhooks`: the endpoint asked for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEndpoint {
    pub url: String,
    pub events: Vec<String>,
}

/// Reads `{"url", "events"?}`, naming every bad field: `url` as `endpoint_url` allows it,
/// `events` a non-empty list of known events without repeats (all of them when left out).
pub fn validate_endpoint(body: Value, allow_loopback: bool) -> Result<NewEndpoint, Vec<FieldError>> {
    let Value::Object(mut obj) = body else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    let mut bad: Vec<FieldError> =
        obj.keys().filter(|k| !["url", "events"].contains(&k.as_str())).map(|k| FieldError::new(k.as_str(), "unknown field")).collect();
    let url = match obj.remove("url") {
        Some(Value::String(url)) => match endpoint_url(&url, allow_loopback) {
            Ok(()) => url,
            Err(why) => {
                bad.push(FieldError::new("url", why));
                String::new()
            }
        },
        Some(_) => {
            bad.push(FieldError::new("url", "must be a string"));
            String::new()
        }
        None => {
            bad.push(FieldError::new("url", "is required"));
            String::new()
        }
    };
    let events = match obj.remove("events") {
        None => EVENTS.iter().map(|e| (*e).to_owned()).collect(),
        Some(Value::Array(list)) if !list.is_empty() => {
            let mut events: Vec<String> = Vec::with_capacity(list.len());
            for (i, e) in list.into_iter().enumerate() {
                match e {
                    Value::String(e) if EVENTS.contains(&e.as_str()) && !events.contains(&e) => events.push(e),
                    Value::String(e) if events.contains(&e) => bad.push(FieldError::new(format!("events[{i}]"), "is listed twice")),
                    _ => bad.push(FieldError::new(format!("events[{i}]"), format!("must be one of {}", EVENTS.join(", ")))),
                }
            }
            events
        }
        Some(_) => {
            bad.push(FieldError::new("events", "must be a non-empty list of events (leave it out for all)"));
            Vec::new()
        }
    };
    if bad.is_empty() {
        Ok(NewEndpoint { url, events })
    } else {
        Err(bad)
    }
}

/// A registered endpoint, as the ledger keeps it: its signing secret, and while one is
/// rotated out, the old one and until when it still signs; whether its receiver said
/// it is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: String,
    pub secret: Secret,
    pub previous: Option<(Secret, u64)>,
    pub disabled: Option<Disabled>,
}

/// An endpoint its receiver answered 410 for: no event is delivered to it until its
/// tenant enables it again (`POST /webhooks/{id}/enable`); a test event still is, so
/// that the receiver can be checked first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disabled {
    /// When (RFC 3339).
    pub at: String,
    pub reason: String,
}

/// The update that disables an endpoint (`:at`, `:why`), only while it exists.
pub const DISABLE: &str = "SET disabledAt = :at, disabledReason = :why";
/// The update that enables it again.
pub const ENABLE: &str = "REMOVE disabledAt, disabledReason";
/// The condition of both: the endpoint is there (not deleted meanwhile).
pub const ENDPOINT_EXISTS: &str = "attribute_exists(messageId)";

impl Endpoint {
    /// Its ledger item (in its account's partition).
    pub fn to_item(&self, account: &str) -> Value {
        let mut item = endpoint_key(account, &self.id);
        item[ledger::WAIT_SHARD] = ledger::s(ENDPOINTS_SHARD);
        item["url"] = ledger::s(self.url.as_str());
        item["events"] = json!({"L": self.events.iter().map(|e| ledger::s(e.as_str())).collect::<Vec<_>>()});
        item["createdAt"] = ledger::s(self.created_at.as_str());
        item["secret"] = ledger::s(self.secret.reveal());
        if let Some((old, until)) = &self.previous {
            item["previousSecret"] = ledger::s(old.reveal());
            item["previousUntilMs"] = ledger::n(until);
        }
        if let Some(d) = &self.disabled {
            item["disabledAt"] = ledger::s(d.at.as_str());
            item["disabledReason"] = ledger::s(d.reason.as_str());
        }
        item
    }

    pub fn from_item(item: &Value) -> Option<Self> {
        let id = ledger::text(item, ledger::SK)?.strip_prefix(ENDPOINT_SK_PREFIX)?.to_owned();
        let events = item.get("events")?.get("L")?.as_array()?.iter().filter_map(|e| e.get("S")?.as_str().map(str::to_owned)).collect();
        let previous = match (ledger::text(item, "previousSecret"), ledger::number(item, "previousUntilMs")) {
            (Some(old), Some(until)) => Some((Secret::parse(old).ok()?, until)),
            _ => None,
        };
        Some(Endpoint {
            id,
            url: ledger::text(item, "url")?.to_owned(),
            events,
            created_at: ledger::text(item, "createdAt")?.to_owned(),
            secret: Secret::parse(ledger::text(item, "secret")?).ok()?,
            previous,
            disabled: ledger::text(item, "disabledAt")
                .map(|at| Disabled { at: at.to_owned(), reason: ledger::text(item, "disabledReason").unwrap_or_default().to_owned() }),
        })
    }

    /// The secrets that sign a delivery now: the current one first, then one rotated out
    /// less than `ROTATION_GRACE_MS` ago.
    pub fn signing_secrets(&self, now_ms: u64) -> Vec<&Secret> {
        std::iter::once(&self.secret).chain(self.still_signing(now_ms).map(|(s, _)| s)).collect()
    }

    /// The secret rotated out, and until when, while it still signs.
    fn still_signing(&self, now_ms: u64) -> Option<&(Secret, u64)> {
        self.previous.as_ref().filter(|(_, until)| *until > now_ms)
    }

    /// What the API shows of it (never a secret).
    pub fn view(&self, now_ms: u64) -> EndpointView {
        EndpointView {
            id: self.id.clone(),
            url: self.url.clone(),
            events: self.events.clone(),
            created_at: self.created_at.clone(),
            previous_secret_expires_at: self.still_signing(now_ms).map(|(_, until)| crate::time::rfc3339_ms(*until)),
            disabled: self.disabled.clone(),
        }
    }
}

/// An endpoint as `GET /webhooks` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: String,
    /// While a rotated-out secret still signs: until when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
    /// Since its receiver answered 410.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
}

/// `POST /webhooks` (201) and `POST /webhooks/{id}/rotate` (200): the endpoint and its
/// new secret, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    pub secret: String,
}

/// `GET /webhooks`: every endpoint of the account, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointList {
    pub endpoints: Vec<EndpointView>,
}

/// The event a tenant asks for to check its receiver (`POST /webhooks/{id}/test`): sent
/// to that endpoint only, whatever events it asked for.
pub const TEST_EVENT: &str = "webhook.test";

/// A new event's id (`webhook-id`: the same on every attempt, so a receiver drops
/// repeats); time-ordered.
pub fn event_id(now_ms: u64, random: [u8; 8]) -> String {
    format!("evt_{}", crate::id::uuid_v7(now_ms, 0, random))
}

/// What a delivery says: `{"type", "timestamp", "data"}` (ids and counts, never content).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Not in the body: it travels as `webhook-id`.
    #[serde(skip)]
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// When what it tells happened (RFC 3339).
    pub timestamp: String,
    pub data: Value,
}

impl Event {
    /// The event telling `what` happened (`kind`), its id `evt_<what>.<kind's last
    /// word>`: derived from what it tells, so that telling it twice is one event.
    fn of(what: &str, kind: &str, timestamp: String, data: Value) -> Self {
        let short = kind.rsplit('.').next().unwrap_or(kind);
        Event { id: format!("evt_{what}.{short}"), kind: kind.to_owned(), timestamp, data }
    }

    /// The body as sent and signed.
    pub fn body(&self) -> String {
        serde_json::to_string(self).expect("an event serializes")
    }
}

/// The attempts of a delivery (Standard Webhooks' schedule), each this long after the
/// one before failed: the first at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h,
/// 20 h, 24 h; after the tenth it is given up.
pub const RETRY_SCHEDULE_S: [u64; 10] = [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400];

/// How long after its `failures`-th failed attempt an event is tried again (`None`:
/// given up): the schedule's step divided by `compress` (tests run it in seconds), or a
/// receiver's `Retry-After` when that is longer.
pub fn retry_delay_ms(failures: u32, compress: u64, retry_after_ms: Option<u64>) -> Option<u64> {
    let step = RETRY_SCHEDULE_S.get(failures as usize)? * 1000 / compress.max(1);
    Some(step.max(retry_after_ms.unwrap_or(0)))
}

/// `POST /webhooks/{id}/test`, as the edge tells the worker through the send queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestEvent {
    pub creator_id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub at_ms: u64,
}

/// `POST /webhooks/{id}/test`: 202, the test event's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestQueued {
    pub event_id: String,
}

/// The sort key prefix of an event waiting to be delivered (an outbox item), in its
/// account's partition.
pub const EVENT_SK_PREFIX: &str = "#event#";

/// The waiting index's shards of events waiting to be delivered (apart from those of
/// the schedule's rebuild: `shared::ledger::WAIT_SHARDS`). Four: each worker's sweep
/// reads every one of them (a read unit's half each, found or not), and four index
/// partitions take thousands of events a second.
pub const EVENT_SHARDS: [&str; 4] = ["e0", "e1", "e2", "e3"];

/// How long an event nobody could be delivered to stays (past the retry schedule's
/// three days).
pub const EVENT_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// The event telling a message's outcome: `message.sent`, `message.canceled`, or
/// `message.failed` with its error (a failed message can always be retried:
/// `POST /{id}/retry`); `sentAt`, `canceledAt` or `failedAt` says when. Its id is the
/// outcome's own (message, generation, kind): recorded twice, it is the same event.
pub fn message_event(m: &crate::message::QueueMessage, kind: &str, at: &str, attempts: u32, error: Option<&str>) -> Event {
    let mut data = json!({"messageId": m.id, "recipientId": m.recipient_id, "attempts": attempts});
    if let Some(c) = &m.campaign_id {
        data["campaignId"] = json!(c);
    }
    let short = kind.rsplit('.').next().unwrap_or(kind);
    data[format!("{short}At")] = json!(at);
    if let Some(e) = error {
        data["error"] = json!(e);
        data["retryable"] = json!(true);
    }
    Event::of(&format!("{}.{}", m.id, m.generation), kind, at.to_owned(), data)
}

/// Why an account was paused (`account.paused`'s `reason`, machine-readable; a resume is
/// always its user's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseCause<'a> {
    /// `POST /account/pause` (or `/resume`).
    User,
    /// The vendor refused the account's credentials: held until its user resumes it
    /// (`detail` says what the vendor answered).
    CredentialsRefused(&'a str),
    /// A 429 asking for a long wait (at least [`LONG_RATE_LIMIT_MS`]): paused until then.
    /// `answer` names the attempt that got it (message, generation, attempt): the event
    /// is that outcome's, the same however often it is recorded.
    RateLimited { until_ms: u64, answer: &'a str },
}

/// The event telling that an account was paused or resumed (`account.paused`,
/// `account.resumed`). Its id is the control's own (account, time, kind), or the 429's
/// answer's: the same control applied twice is the same event.
pub fn account_event(account: &str, paused: bool, at_ms: u64, cause: PauseCause) -> Event {
    let kind = if paused { "account.paused" } else { "account.resumed" };
    let what = match cause {
        PauseCause::RateLimited { answer, .. } => format!("{account}.{answer}"),
        _ => format!("{account}.{at_ms}"),
    };
    let data = match cause {
        PauseCause::User => json!({"accountId": account, "reason": "user"}),
        PauseCause::CredentialsRefused(detail) => json!({"accountId": account, "reason": "credentials_refused", "detail": detail}),
        PauseCause::RateLimited { until_ms, .. } => {
            json!({"accountId": account, "reason": "rate_limited", "until": crate::time::rfc3339_ms(until_ms)})
        }
    };
    Event::of(&what, kind, crate::time::rfc3339_ms(at_ms), data)
}

/// A 429 whose `Retry-After` holds its account at least this long is told
/// (`account.paused`, reason `rate_limited`): a shorter one is the limit at work, not news.
pub const LONG_RATE_LIMIT_MS: u64 = 60_000;

/// The event telling that nothing of a campaign waits any more (`campaign.completed`,
/// or `campaign.canceled` when it was canceled), with its final counts; told once, when
/// its head leaves the waiting index (a retry of one of its messages later is told by
/// that message's own events).
pub fn campaign_event(head: &crate::campaign::CampaignItem, now_ms: u64) -> Event {
    let kind = if head.canceled_at.is_some() { "campaign.canceled" } else { "campaign.completed" };
    let id = &head.campaign.id;
    let data = json!({"campaignId": id, "total": head.total, "sent": head.sent, "failed": head.failed, "canceled": head.canceled_count()});
    Event::of(id, kind, crate::time::rfc3339_ms(now_ms), data)
}

/// The endpoints an event of `kind` goes to: those that asked for it and are not
/// disabled.
pub fn subscribed<'a>(endpoints: &'a [Endpoint], kind: &str) -> impl Iterator<Item = &'a Endpoint> + 'a {
    let kind = kind.to_owned();
    endpoints.iter().filter(move |e| e.disabled.is_none() && e.events.contains(&kind))
}

/// An event waiting to be delivered (the outbox): written with the outcome it tells
/// (one transaction: none is lost, none tells of an outcome not recorded), in the
/// waiting index until every endpoint it is for has it; then it expires.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub account: String,
    pub event: Event,
    /// The endpoints still to be delivered to.
    pub endpoints: Vec<String>,
}

impl Pending {
    /// The event for those of its account's `endpoints` that asked for its kind; `None`
    /// when none did (nothing to write).
    pub fn new(account: &str, event: Event, endpoints: &[Endpoint]) -> Option<Self> {
        let to: Vec<String> = subscribed(endpoints, &event.kind).map(|e| e.id.clone()).collect();
        (!to.is_empty()).then(|| Pending { account: account.to_owned(), event, endpoints: to })
    }

    pub fn key(&self) -> Value {
        ledger::key(&self.account, &format!("{EVENT_SK_PREFIX}{}", self.event.id))
    }

    /// Its item, leased to the worker that writes it (`holder`) until `lease_until_ms`.
    pub fn to_item(&self, now_ms: u64, holder: &str, lease_until_ms: u64) -> Value {
        let mut item = self.key();
        item[LEASE] = ledger::n(lease_until_ms);
        item[LEASED_BY] = ledger::s(holder);
        item["type"] = ledger::s(self.event.kind.as_str());
        item["timestamp"] = ledger::s(self.event.timestamp.as_str());
        item["data"] = ledger::s(self.event.data.to_string());
        item["endpoints"] = json!({"SS": self.endpoints});
        item[ledger::WAIT_SHARD] = ledger::s(event_shard(&self.event.id));
        item[ledger::TTL_ATTR] = ledger::n((now_ms + EVENT_TTL_MS) / 1000);
        item
    }

    pub fn from_item(item: &Value) -> Option<Self> {
        let id = ledger::text(item, ledger::SK)?.strip_prefix(EVENT_SK_PREFIX)?.to_owned();
        let endpoints = item.get("endpoints")?.get("SS")?.as_array()?.iter().filter_map(|e| e.as_str().map(str::to_owned)).collect();
        Some(Pending {
            account: ledger::text(item, ledger::PK)?.to_owned(),
            event: Event {
                id,
                kind: ledger::text(item, "type")?.to_owned(),
                timestamp: ledger::text(item, "timestamp")?.to_owned(),
                data: serde_json::from_str(ledger::text(item, "data")?).ok()?,
            },
            endpoints,
        })
    }
}

/// The waiting index's shard of an event (one of [`EVENT_SHARDS`], from its id).
pub fn event_shard(event_id: &str) -> &'static str {
    EVENT_SHARDS[usize::from(event_id.bytes().fold(0u8, |a, b| a.wrapping_add(b))) % EVENT_SHARDS.len()]
}

/// The delivery log: on an event's item, an attribute per endpoint (`log:<endpoint id>`)
/// holding its [`Delivery`], written with the lease's renewal before each retry and
/// with the endpoint's coming off the event: the log costs no write of its own.
pub fn log_attribute(endpoint_id: &str) -> String {
    format!("log:{endpoint_id}")
}

/// Where one endpoint's delivery of one event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not attempted yet.
    Pending,
    /// Failed; tried again at `nextAttemptAt`.
    Retrying,
    Delivered,
    /// Given up (the last attempt of the schedule failed, the receiver answered 410, or
    /// the endpoint was deleted or disabled meanwhile): `POST /webhooks/{id}/redeliver`.
    Failed,
    /// Asked for again (`POST /webhooks/{id}/redeliver`): a worker's next sweep delivers it.
    Redelivering,
}

/// One endpoint's delivery of one event, as the delivery log keeps it
/// (`GET /webhooks/{id}/deliveries`): never a receiver's body, never the URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub state: DeliveryState,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<String>,
    /// What the last attempt got: `delivered`, a status and its meaning, or why no
    /// answer came (a timeout, a refused connection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_answer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

impl Delivery {
    /// As stored in the log (a DynamoDB map).
    pub fn to_attr(&self) -> Value {
        // The state's name as the API spells it (serde's), stored as a string.
        let mut m = json!({"state": {"S": self.state}, "attempts": ledger::n(u64::from(self.attempts))});
        for (k, v) in [("lastAttemptAt", &self.last_attempt_at), ("lastAnswer", &self.last_answer), ("nextAttemptAt", &self.next_attempt_at)] {
            if let Some(v) = v {
                m[k] = ledger::s(v.as_str());
            }
        }
        json!({"M": m})
    }

    pub fn from_attr(v: &Value) -> Option<Self> {
        let m = v.get("M")?;
        let text = |k: &str| ledger::text(m, k).map(str::to_owned);
        Some(Delivery {
            state: serde_json::from_value(json!(ledger::text(m, "state")?)).ok()?,
            attempts: ledger::number(m, "attempts")? as u32,
            last_attempt_at: text("lastAttemptAt"),
            last_answer: text("lastAnswer"),
            next_attempt_at: text("nextAttemptAt"),
        })
    }
}

/// A line of `GET /webhooks/{id}/deliveries`: the event and its delivery to that endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: String,
    #[serde(flatten)]
    pub delivery: Delivery,
}

impl DeliveryView {
    /// The delivery to `endpoint` of the event stored as `item`, if it was for it.
    pub fn from_item(item: &Value, endpoint: &str) -> Option<Self> {
        let pending = Pending::from_item(item).or_else(|| Pending::from_item(&with_endpoints(item)))?;
        let logged = item.get(log_attribute(endpoint)).and_then(Delivery::from_attr);
        let delivery = match logged {
            Some(d) => d,
            None if pending.endpoints.iter().any(|e| e == endpoint) => {
                Delivery { state: DeliveryState::Pending, attempts: 0, last_attempt_at: None, last_answer: None, next_attempt_at: None }
            }
            None => return None,
        };
        Some(DeliveryView { event_id: pending.event.id, kind: pending.event.kind, timestamp: pending.event.timestamp, delivery })
    }
}

/// An event item whose endpoints have all had it (the set is gone), read as one with
/// none left.
fn with_endpoints(item: &Value) -> Value {
    let mut item = item.clone();
    item["endpoints"] = json!({"SS": []});
    item
}

/// The update that asks for an event again for one endpoint (`:e`, a string set of its
/// id; `#log` its [`log_attribute`], `:d` its [`Delivery`] as redelivering; `:ws` the
/// event's shard; `#ttl`, `:ttl` its expiry, [`EVENT_TTL_MS`] from now): back in the
/// waiting index, its lease over, so that a worker's next sweep delivers it.
pub const REDELIVER: &str = "ADD endpoints :e SET waitShard = :ws, leaseUntil = :zero, #log = :d, #ttl = :ttl";
/// Only an event that is there.
pub const EVENT_EXISTS: &str = "attribute_exists(messageId)";
/// An event that was sent to an endpoint (`#log` its [`log_attribute`], `:ep` its id):
/// logged for it, or still to be delivered to it.
pub const SENT_TO: &str = "(attribute_exists(#log) OR contains(endpoints, :ep))";

/// Until when a worker delivers an event (ms): another takes it over after that.
pub const LEASE: &str = "leaseUntil";
/// Which worker holds that lease (only it renews it).
pub const LEASED_BY: &str = "leasedBy";

/// The update that takes one endpoint (`:e`, a string set of its id) off an event once
/// it has it.
pub const DELIVERED_TO: &str = "DELETE endpoints :e";
/// Once every endpoint has it, an event leaves the waiting index (and stays until its
/// TTL: no delete, which costs the same and would need one more permission).
pub const DONE: &str = "REMOVE waitShard";
/// The condition of `DONE`: every endpoint has it (and it is still there: an update of
/// an item gone would make one).
pub const DELIVERED_TO_ALL: &str = "attribute_exists(messageId) AND attribute_not_exists(endpoints)";
/// The one write for an event's only endpoint (`:e` its id): off the event and out of
/// the waiting index at once (`DELIVERED_TO`, then `DONE`, in one update), while it is
/// the only one left.
pub const DELIVERED_TO_LAST: &str = "REMOVE endpoints, waitShard";
pub const ONLY_ENDPOINT_LEFT: &str = "size(endpoints) = :one AND contains(endpoints, :id)";

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification and its reference libraries.
    #[test]
    fn signs_as_the_specification_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let header = signature(&[&secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(&secret, &header, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#));
        assert!(!verify(&secret, &header, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, br#"{"test": 2432232314}"#), "another timestamp");
    }

    /// While a secret is rotated, both sign: a receiver with either verifies.
    #[test]
    fn both_secrets_sign_during_a_rotation() {
        let (old, new) = (Secret::from_bytes([1; SECRET_BYTES]), Secret::from_bytes([2; SECRET_BYTES]));
        let header = signature(&[&new, &old], "evt_1", 5, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(verify(&old, &header, "evt_1", 5, b"{}") && verify(&new, &header, "evt_1", 5, b"{}"));
        assert!(!verify(&Secret::from_bytes([3; SECRET_BYTES]), &header, "evt_1", 5, b"{}"));
    }

    #[test]
    fn a_secret_reads_back_and_is_never_printed() {
        let s = Secret::from_bytes([7; SECRET_BYTES]);
        assert_eq!(Secret::parse(&s.reveal()).unwrap(), s);
        assert!(s.reveal().starts_with(SECRET_PREFIX));
        assert_eq!(format!("{s:?}"), "Secret(…)");
        assert!(Secret::parse("whsec_c2hvcnQ=").is_err(), "too short");
        assert!(Secret::parse("whsec_***").is_err());
    }

    #[test]
    fn endpoints_that_reach_inside_are_refused() {
        for ok in [
            "https://crm.example.com/hooks",
            "https://crm.example.com:8443/a?b=c",
            "https://8.8.8.8/x",
            "https://[2606:4700::1]/x",
            "https://xn--bcher-kva.example/",
        ] {
            assert_eq!(endpoint_url(ok, false), Ok(()), "{ok}");
        }
        for bad in [
            "http://crm.example.com/hooks",
            "ftp://crm.example.com/",
            "crm.example.com/hooks",
            "https://user:pw@crm.example.com/",
            "https://10.0.0.5/",
            "https://172.20.1.1/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://[::1]/",
            "https://[fd00:ec2::254]/",
            "https://[fe80::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:10.1.2.3]/",
            "https://127.0.0.1/",
            "https://localhost/",
            "https://api.localhost/",
            "https://metadata.google.internal/",
            "https://printer.local/",
            "https://2130706433/",
            "https://0x7f000001/",
            "https:///nohost",
        ] {
            assert!(endpoint_url(bad, false).is_err(), "{bad}");
        }
        assert_eq!(endpoint_url("http://127.0.0.1:9000/hook", true), Ok(()), "a local run's receiver");
        assert_eq!(endpoint_url("http://localhost:9000/hook", true), Ok(()));
        assert!(endpoint_url("http://10.0.0.5/hook", true).is_err(), "loopback only, not any private address");
        assert!(endpoint_url("http://crm.example.com/hook", true).is_err(), "https elsewhere");
    }
    #[test]
    fn an_endpoint_request_is_read_or_every_bad_field_named() {
        use serde_json::json;
        let all = validate_endpoint(json!({"url": "https://crm.example.com/hooks"}), false).unwrap();
        assert_eq!(all.events.len(), EVENTS.len(), "every event when none is named");
        let some = validate_endpoint(json!({"url": "https://crm.example.com/h", "events": ["message.sent", "account.paused"]}), false).unwrap();
        assert_eq!(some.events, ["message.sent", "account.paused"]);
        let bad =
            validate_endpoint(json!({"url": "https://10.0.0.1/h", "events": ["message.sent", "message.sent", "message.lost"], "x": 1}), false).unwrap_err();
        let fields: Vec<&str> = bad.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["x", "url", "events[1]", "events[2]"], "{bad:?}");
        assert_eq!(validate_endpoint(json!({"events": []}), false).unwrap_err().len(), 2, "url required, events not empty");
        assert!(validate_endpoint(json!({"url": "http://127.0.0.1:9000/h"}), false).is_err());
        assert!(validate_endpoint(json!({"url": "http://127.0.0.1:9000/h"}), true).is_ok(), "a local run's receiver");
        assert!(validate_endpoint(json!(["https://crm.example.com/h"]), false).is_err());
    }

    /// An endpoint reads back from its item; a rotated-out secret signs beside the new
    /// one until its grace ends, then not.
    #[test]
    fn an_endpoint_reads_back_and_a_rotated_secret_signs_until_its_grace_ends() {
        assert!(is_endpoint_id(&endpoint_id(1_795_586_400_000, [3; 8])));
        assert!(!is_endpoint_id("ep_nope") && !is_endpoint_id(&crate::id::uuid_v7(1, 0, [0; 8])));
        let (old, new) = (Secret::from_bytes([1; SECRET_BYTES]), Secret::from_bytes([2; SECRET_BYTES]));
        let e = Endpoint {
            id: endpoint_id(1_795_586_400_000, [3; 8]),
            url: "https://crm.example.com/h".into(),
            events: vec!["message.sent".into()],
            created_at: "2026-12-07T12:00:00.000Z".into(),
            secret: new.clone(),
            previous: Some((old.clone(), 5_000)),
            disabled: Some(Disabled { at: "2026-12-07T12:01:00.000Z".into(), reason: "the receiver answered 410".into() }),
        };
        let item = e.to_item("acct-1");
        assert_eq!(Endpoint::from_item(&item), Some(e.clone()));
        assert_eq!(e.signing_secrets(4_999), [&new, &old]);
        assert_eq!(e.signing_secrets(5_000), [&new]);
        assert!(e.view(4_999).previous_secret_expires_at.is_some() && e.view(5_000).previous_secret_expires_at.is_none());
        let shown = serde_json::to_string(&e.view(0)).unwrap();
        assert!(!shown.contains(&new.reveal()) && !shown.contains(&old.reveal()), "no secret in a view: {shown}");
    }
    #[test]
    fn failures_are_tried_again_on_the_specifications_schedule_then_given_up() {
        assert_eq!(retry_delay_ms(1, 1, None), Some(5_000), "the first attempt went at once; the second 5 s after it failed");
        assert_eq!(retry_delay_ms(2, 1, None), Some(300_000));
        assert_eq!(retry_delay_ms(9, 1, None), Some(86_400_000));
        assert_eq!(retry_delay_ms(10, 1, None), None, "given up after the tenth attempt");
        assert_eq!(retry_delay_ms(2, 1000, None), Some(300), "compressed for tests");
        assert_eq!(retry_delay_ms(1, 1, Some(60_000)), Some(60_000), "a longer Retry-After is honoured");
        let e = Event { id: event_id(1, [0; 8]), kind: TEST_EVENT.into(), timestamp: "2026-12-07T12:00:00.000Z".into(), data: json!({"a": 1}) };
        assert_eq!(e.body(), r#"{"type":"webhook.test","timestamp":"2026-12-07T12:00:00.000Z","data":{"a":1}}"#);
    }
    /// An outcome's event: its id the outcome's own, its data ids and counts (never the
    /// content), and it reads back from its outbox item.
    #[test]
    fn an_outcome_event_is_small_stable_and_reads_back() {
        let m: crate::message::QueueMessage = serde_json::from_value(json!({
            "id": "01a2505e-d7f1-77bc-b67e-514e08000000", "creatorId": "acct", "recipientId": "fan-1", "content": "secret words",
            "priority": 5, "acceptedAt": "2026-12-07T11:59:00.000Z", "campaignId": "01a2505e-d7f1-77bc-b67e-514e08ffffff",
        }))
        .unwrap();
        let sent = message_event(&m, "message.sent", "2026-12-07T12:00:00.000Z", 1, None);
        assert_eq!(sent.id, message_event(&m, "message.sent", "2026-12-07T12:00:09.000Z", 1, None).id, "the same outcome, the same event");
        assert_ne!(sent.id, message_event(&crate::message::QueueMessage { generation: 1, ..m.clone() }, "message.sent", "t", 1, None).id);
        assert!(!sent.body().contains("secret words"));
        assert_eq!(sent.data["campaignId"], m.campaign_id.clone().unwrap());
        let failed = message_event(&m, "message.failed", "t", 3, Some("the gateway refused it (400)"));
        assert_eq!((failed.data["retryable"].as_bool(), failed.data["error"].as_str()), (Some(true), Some("the gateway refused it (400)")));
        let pending = Pending { account: "acct".into(), event: failed, endpoints: vec!["ep_1".into(), "ep_2".into()] };
        assert_eq!(Pending::from_item(&pending.to_item(0, "w1", 5)), Some(pending));
    }

    #[test]
    fn a_control_and_a_long_429_are_each_one_event() {
        let user = account_event("acct", true, 1_000, PauseCause::User);
        assert_eq!((user.id.as_str(), user.kind.as_str()), ("evt_acct.1000.paused", "account.paused"));
        assert_eq!(user.data, json!({"accountId": "acct", "reason": "user"}));
        assert_ne!(user.id, account_event("acct", false, 1_000, PauseCause::User).id, "a resume is another event");
        let answer = |a: &'static str| PauseCause::RateLimited { until_ms: 61_000, answer: a };
        let long = account_event("acct", true, 2_000, answer("m.0.1"));
        assert_eq!(long.id, account_event("acct", true, 9_000, answer("m.0.1")).id, "the same answer recorded twice");
        assert_ne!(long.id, account_event("acct", true, 2_000, answer("m.0.2")).id);
        assert_eq!(long.data["until"], json!("1970-01-01T00:01:01.000Z"));
    }

    #[test]
    fn a_campaign_ends_once_with_counts_that_add_up() {
        let campaign = crate::campaign::Campaign {
            id: "cmp".into(),
            creator_id: "acct".into(),
            recipients: (0..5).map(|i| format!("fan-{i}")).collect(),
            content: "Hello".into(),
            media_urls: vec![],
            priority: 3,
            metadata: Default::default(),
            accepted_at: "2026-12-07T00:00:00.000Z".into(),
            send_at: None,
            vendor_media: None,
        };
        let mut head = crate::campaign::CampaignItem::new(campaign, 0, 0);
        (head.sent, head.failed, head.fanned) = (3, 2, 5);
        let done = campaign_event(&head, 1_000);
        assert_eq!((done.id.as_str(), done.kind.as_str()), ("evt_cmp.completed", "campaign.completed"));
        assert_eq!(done.data, json!({"campaignId": "cmp", "total": 5, "sent": 3, "failed": 2, "canceled": 0}));
        assert_eq!(done.id, campaign_event(&head, 9_000).id, "seen done by two workers: one event");
        // Canceled after 2 sends with 2 fanned out: what was never written counts as canceled.
        (head.sent, head.failed, head.fanned, head.canceled_at) = (2, 0, 2, Some("t".into()));
        let canceled = campaign_event(&head, 1_000);
        assert_eq!((canceled.id.as_str(), &canceled.data["canceled"]), ("evt_cmp.canceled", &json!(3)));
    }
}
