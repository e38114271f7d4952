//! The status machine of a message's ledger item, and the counters its transitions
//! move: the one place that says who may move a message from which status to which,
//! under what condition. The edge and the worker only send these writes.
//!
//! | from              | to         | transition          | by     | when |
//! |-------------------|------------|---------------------|--------|------|
//! | (none)            | `queued`   | put new             | edge   | `POST /send` (a single message) |
//! | (none)            | `queued`   | fan out             | worker | a campaign's messages, while it is not canceled |
//! | (none)            | `canceled` | cancel unwritten    | edge   | `DELETE /{id}` of a campaign's message not fanned out yet |
//! | `queued`          | `queued`   | count scheduled     | worker | once per generation, when the schedule takes it in |
//! | `queued`          | `sending`  | claim               | worker | before the gateway, a campaign's only while it is not canceled (its head read just before: [`CAMPAIGN_NOT_CANCELED`]), unless maybe sent (no cancel reaches it) |
//! | `sending`         | `sending`  | claim               | worker | again by the same holder (the first claim's answer was lost) |
//! | `sending`         | `sending`  | take over           | worker | once another holder's claim has expired (its worker died), its campaign canceled since or not (the cancel did not cancel it); marked maybe sent: that holder may have sent it |
//! | `sending`         | `queued`   | unclaim             | worker | claimed, then not sent (a 429 met meanwhile, a stall, a late claim, shutdown) |
//! | `queued`/`sending`| `queued`   | record retrying     | worker | a passing failure, tried again after a backoff |
//! | `queued`/`sending`| `sent`     | record sent         | worker | the gateway took it |
//! | `queued`/`sending`| `failed`   | record failed       | worker | refused for good, or out of attempts |
//! | `queued`          | `canceled` | cancel              | edge   | `DELETE /{id}`, unless maybe sent |
//! | `queued`          | `canceled` | cancel waiting      | worker | a canceled campaign's messages, unless maybe sent |
//! | `failed`          | `queued`   | requeue failed      | edge   | `POST /{id}/retry`: a new generation |
//! | `queued`          | `failed`   | mark failed         | edge   | a retry whose queue write failed goes back, while no worker counted it (then the retry went through) |
//! | `queued`          | (deleted)  | delete unqueued     | edge   | a new message whose queue write failed |
//!
//! So only the worker's claim moves a message out of `queued` towards the gateway, and
//! a cancel needs it still `queued`: a message is sent or canceled, never both. A
//! message whose attempt got no answer (a timeout) may have reached the fan: it carries
//! `maybeSent` and is never canceled; it is tried until it is sent or fails. A claim
//! is a lease (`claimedUntil`, on Redis's clock, and `claimedBy`): a second claim waits
//! until it has expired, so that a message the schedule hands out twice (a Redis loss,
//! a failover) is not sent twice while its first delivery is under way.
//!
//! A message keeps no expiry while it waits (`ttl` is removed): it expires
//! `LEDGER_TTL_DAYS` after it finished (sent, failed or canceled).
//!
//! A campaign's item is put by the edge, taken by the worker for its fan-out
//! ([`start_fan_out`]: into the waiting index, for its messages), marked scheduled,
//! canceled once ([`cancel_campaign`]), and out of the index once nothing of it waits
//! ([`campaign_rested`]); the edge deletes it when its queue write failed only while no
//! worker took it ([`DELETE_UNQUEUED_CAMPAIGN`]).
//!
//! The account's summary counters (`queued`, `sent`, `failed`) and its campaign's
//! (`sent`, `failed`, `canceled`, `fanned`) move only in the same transaction as the
//! transition they count ([`Counts`]), so duplicates and retried writes cannot make
//! them drift. A campaign's `fanned` counts its messages that have an item.

use serde_json::{json, Map, Value};

use super::{n, s, WAIT_SHARD};

/// One conditional write of one item: the condition it needs, what it changes, the
/// names and values both use, and what it does to the counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// `ConditionExpression`.
    pub condition: &'static str,
    /// `UpdateExpression`.
    pub update: String,
    /// `ExpressionAttributeNames`.
    pub names: Vec<(&'static str, &'static str)>,
    /// `ExpressionAttributeValues`, in DynamoDB JSON.
    pub values: Vec<(&'static str, Value)>,
    pub counts: Counts,
}

impl Write {
    /// An `UpdateItem` body (the JSON protocol the edge speaks) for the item at `key`.
    pub fn to_update_item(&self, table: &str, key: Value) -> Value {
        let mut body = json!({
            "TableName": table,
            "Key": key,
            "UpdateExpression": self.update,
        });
        if !self.condition.is_empty() {
            body["ConditionExpression"] = json!(self.condition);
        }
        if !self.names.is_empty() {
            body["ExpressionAttributeNames"] = Value::Object(self.names.iter().map(|(k, v)| (k.to_string(), json!(v))).collect());
        }
        if !self.values.is_empty() {
            body["ExpressionAttributeValues"] = Value::Object(self.values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Map<_, _>>());
        }
        body
    }
}

/// What a transition does to the counters of its message's account (`queued`, `sent`,
/// `failed`) and campaign (`sent`, `failed`, `canceled`, `fanned`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub queued: i64,
    pub sent: i64,
    pub failed: i64,
    pub canceled: i64,
    pub fanned: i64,
    /// The latest send it records (ms), for the summary's `lastSentAtMs`.
    pub last_sent_ms: Option<u64>,
}

impl Counts {
    pub fn plus(self, o: &Counts) -> Counts {
        Counts {
            queued: self.queued + o.queued,
            sent: self.sent + o.sent,
            failed: self.failed + o.failed,
            canceled: self.canceled + o.canceled,
            fanned: self.fanned + o.fanned,
            last_sent_ms: self.last_sent_ms.max(o.last_sent_ms),
        }
    }

    /// Whether it moves the account's summary.
    pub fn moves_summary(&self) -> bool {
        self.queued != 0 || self.sent != 0 || self.failed != 0
    }

    /// Whether it moves a campaign's counters.
    pub fn moves_campaign(&self) -> bool {
        self.sent != 0 || self.failed != 0 || self.canceled != 0 || self.fanned != 0
    }

    /// The account's summary update: `ADD` of its counters, and the last send.
    pub fn summary_update(&self) -> (String, Vec<(&'static str, Value)>) {
        let mut values = vec![(":q", n(self.queued)), (":s", n(self.sent)), (":f", n(self.failed))];
        let mut update = String::from("ADD queued :q, sent :s, failed :f");
        if let Some(t) = self.last_sent_ms {
            update.push_str(" SET lastSentAtMs = :t");
            values.push((":t", n(t)));
        }
        (update, values)
    }

    /// The campaign's update: `ADD` of the counters that move. Its expiry is not moved: a
    /// campaign fanned out has none until nothing of it waits ([`campaign_rested`]).
    pub fn campaign_update(&self) -> (String, Vec<(&'static str, Value)>) {
        let mut adds = Vec::new();
        let mut values = Vec::new();
        for (name, value, v) in
            [("sent", ":sent", self.sent), ("failed", ":failed", self.failed), ("canceled", ":canceled", self.canceled), ("fanned", ":fanned", self.fanned)]
        {
            if v != 0 {
                adds.push(format!("{name} {value}"));
                values.push((value, n(v)));
            }
        }
        (format!("ADD {}", adds.join(", ")), values)
    }
}

/// The condition a campaign's guard puts on the campaign item: a fan-out's counter
/// update carries it. A claim, which moves no counter, reads the head (consistently)
/// just before it instead of checking it in a transaction (the check alone costs two
/// write units and makes the claim a transaction billed twice): a cancel answered
/// before that read holds the message back; one landing between the read and the
/// claim does not, and the message goes out as one already claimed would. That gap is
/// within the claim's lead (at most 1 s: a claim answered after its slot is given
/// back unsent), unless its worker dies once the claim is written (then it is taken
/// over, as any claim is). What the cancel's answer counts as canceled (the messages
/// not fanned out, `CampaignItem::view`) is never claimed: the
/// fan-out keeps the condition.
pub const CAMPAIGN_NOT_CANCELED: &str = "attribute_not_exists(canceledAt)";

/// `DELETE /campaigns/{id}`: the campaign is canceled, once (from then on none of its
/// messages is fanned out, and none is claimed whose claim had not begun:
/// [`CAMPAIGN_NOT_CANCELED`]).
pub fn cancel_campaign(at: &str) -> Write {
    write(CAMPAIGN_NOT_CANCELED, "SET canceledAt = :now".into(), vec![(":now", s(at))], Counts::default())
}

/// The worker takes a campaign to fan it out, once its item is there (`fanOutAt`): from
/// then on the edge no longer deletes it as unqueued ([`DELETE_UNQUEUED_CAMPAIGN`]).
/// Whichever of the two comes first wins, so a campaign whose queue answer the edge
/// lost is either fanned out and reported accepted, or deleted and never fanned out.
/// The head enters the waiting index: it stands there for its messages, whose items
/// are not in it (a rebuild reads them from the head), until nothing of it waits
/// ([`campaign_rested`]), in its shard `wait_shard` (`shared::campaign::wait_shard`).
/// Meanwhile it has no expiry, as a waiting message has none: a head gone would take
/// its waiting messages out of a rebuild's reach.
pub fn start_fan_out(at: &str, wait_shard: &str) -> Write {
    write(
        CAMPAIGN_EXISTS,
        format!("SET fanOutAt = if_not_exists(fanOutAt, :now), {WAIT_SHARD} = :ws REMOVE #ttl"),
        vec![(":now", s(at)), (":ws", s(wait_shard))],
        Counts::default(),
    )
}

/// A campaign head found in the waiting index with nothing of it waiting leaves it, and
/// expires `ttl` (epoch seconds: `LEDGER_TTL_DAYS` from now). A message of it retried
/// later waits in the index on its own item.
pub fn campaign_rested(ttl: u64) -> Write {
    write(CAMPAIGN_EXISTS, format!("SET #ttl = :ttl REMOVE {WAIT_SHARD}"), vec![(":ttl", n(ttl))], Counts::default())
}

/// The campaign is on the schedule: a later delivery of its queue message is a duplicate.
pub fn campaign_scheduled() -> Write {
    write(CAMPAIGN_EXISTS, "SET scheduled = :t".into(), vec![(":t", json!({"BOOL": true}))], Counts::default())
}

/// A write to a campaign's item needs the item: never a bare item of counters made by
/// an update after it was deleted.
pub const CAMPAIGN_EXISTS: &str = "attribute_exists(campaignId)";

/// A campaign whose queue write failed is deleted only while no worker took it (the
/// queue may have taken it and lost the answer: [`start_fan_out`]); refused, it was
/// taken.
pub const DELETE_UNQUEUED_CAMPAIGN: &str = "attribute_not_exists(fanOutAt)";

/// A new item is written only where none is (a keyed request taken over, a duplicate
/// fan-out: the first write stands, and the worker may have moved it on since).
pub const PUT_NEW: &str = "attribute_not_exists(messageId)";

/// A new message whose queue write failed is deleted only while no worker took it (the
/// queue may have taken it and lost the answer: a worker counts what it takes,
/// [`count_scheduled`]); refused, it was taken.
pub const DELETE_UNQUEUED: &str = "attribute_not_exists(countedGen)";

fn write(condition: &'static str, update: String, values: Vec<(&'static str, Value)>, counts: Counts) -> Write {
    let mut names = Vec::new();
    if condition.contains("#st") || update.contains("#st") {
        names.push(("#st", "status"));
    }
    if update.contains("#ttl") {
        names.push(("#ttl", super::TTL_ATTR));
    }
    Write { condition, update, names, values, counts }
}

/// Counts a generation of a message into its account's backlog, once: the item is
/// marked `countedGen`. A retried generation (above 0) leaves `failed` in the same step.
pub fn count_scheduled(generation: u32) -> Write {
    let counts = Counts { queued: 1, failed: -i64::from(generation > 0), ..Counts::default() };
    write(
        "attribute_exists(messageId) AND (attribute_not_exists(countedGen) OR countedGen < :gen)",
        "SET countedGen = :gen".into(),
        vec![(":gen", n(generation))],
        counts,
    )
}

/// Claims a message for the gateway (`queued → sending`): a lease until `until_ms` (Redis
/// time) held by `by`. Again by the same holder (its first claim's answer was lost).
pub fn claim(generation: u32, until_ms: u64, by: &str) -> Write {
    write(
        "attribute_exists(messageId) AND generation = :gen AND (#st = :queued OR (#st = :sending AND claimedBy = :by))",
        "SET #st = :sending, claimedUntil = :until, claimedBy = :by".into(),
        vec![(":gen", n(generation)), (":queued", s("queued")), (":sending", s("sending")), (":until", n(until_ms)), (":by", s(by))],
        Counts::default(),
    )
}

/// Takes over the claim of a holder that did not finish (its worker died or stalled:
/// the claim expired before `now_ms`). That holder may have handed the message to the
/// gateway: it is marked [`MAYBE_SENT`], so that no cancel passes it from now on, even
/// if this holder gives it back unsent.
pub fn take_over(generation: u32, now_ms: u64, until_ms: u64, by: &str) -> Write {
    write(
        "attribute_exists(messageId) AND generation = :gen AND #st = :sending AND claimedBy <> :by AND (attribute_not_exists(claimedUntil) OR claimedUntil < :now)",
        "SET #st = :sending, claimedUntil = :until, claimedBy = :by, maybeSent = :t".into(),
        vec![(":gen", n(generation)), (":sending", s("sending")), (":now", n(now_ms)), (":until", n(until_ms)), (":by", s(by)), (":t", json!({"BOOL": true}))],
        Counts::default(),
    )
}

/// Gives a claimed message back unsent (`sending → queued`), if the claim is still `by`'s.
pub fn unclaim(generation: u32, by: &str) -> Write {
    write(
        "#st = :sending AND generation = :gen AND claimedBy = :by",
        "SET #st = :queued REMOVE claimedUntil, claimedBy".into(),
        vec![(":gen", n(generation)), (":sending", s("sending")), (":queued", s("queued")), (":by", s(by))],
        Counts::default(),
    )
}

/// What every outcome needs: an existing item of this generation, waiting or claimed
/// (`queued` too: sent without a claim when the worker runs without the ledger's claim).
const OUTCOME: &str = "attribute_exists(messageId) AND generation = :gen AND #st IN (:queued, :sending)";

/// The values an outcome's condition (`OUTCOME`) reads, the generation and the statuses
/// it may come from, and then its own.
fn outcome_values<const N: usize>(generation: u32, own: [(&'static str, Value); N]) -> Vec<(&'static str, Value)> {
    let mut values = vec![(":gen", n(generation)), (":queued", s("queued")), (":sending", s("sending"))];
    values.extend(own);
    values
}

/// The gateway took it (and gave it `gateway_id`, when it did: the vendor's id).
pub fn record_sent(generation: u32, at: &str, attempts: u32, gateway_id: Option<&str>, ttl: u64) -> Write {
    let mut values = outcome_values(generation, [(":sent", s("sent")), (":at", s(at)), (":attempts", n(attempts)), (":ttl", n(ttl))]);
    let mut update = String::from("SET #st = :sent, sentAt = :at, attempts = :attempts, #ttl = :ttl");
    if let Some(id) = gateway_id {
        update.push_str(&format!(", {GATEWAY_ID} = :gid"));
        values.push((":gid", s(id)));
    }
    update.push_str(" REMOVE failedKey, waitShard, claimedUntil, claimedBy");
    write(OUTCOME, update, values, Counts { queued: -1, sent: 1, last_sent_ms: crate::time::parse_rfc3339_ms(at), ..Counts::default() })
}

/// The attribute holding the gateway's id of a sent message.
pub const GATEWAY_ID: &str = "gatewayMessageId";

/// A passing failure: back to `queued` between attempts (it may be canceled until the
/// next claim, unless an attempt got no answer: then it may have been sent, and is
/// marked [`MAYBE_SENT`], which no cancel passes).
pub fn record_retrying(generation: u32, attempts: u32, error: &str, maybe_sent: bool) -> Write {
    let mut values = outcome_values(generation, [(":attempts", n(attempts)), (":err", s(error))]);
    let mut update = String::from("SET attempts = :attempts, lastError = :err, #st = :queued");
    if maybe_sent {
        update.push_str(", maybeSent = :t");
        values.push((":t", json!({"BOOL": true})));
    }
    update.push_str(" REMOVE claimedUntil, claimedBy");
    write(OUTCOME, update, values, Counts::default())
}

/// The attribute a message carries once an attempt got no answer (it may have been sent).
pub const MAYBE_SENT: &str = "maybeSent";

/// Failed for good: listed by `GET /failed` (the sparse index's key) until retried.
pub fn record_failed(message_id: &str, generation: u32, at: &str, error: &str, attempts: u32, ttl: u64) -> Write {
    write(
        OUTCOME,
        "SET #st = :failed, failedAt = :at, lastError = :err, attempts = :attempts, failedKey = :fk, #ttl = :ttl REMOVE waitShard, claimedUntil, claimedBy"
            .into(),
        outcome_values(
            generation,
            [
                (":failed", s("failed")),
                (":at", s(at)),
                (":err", s(error)),
                (":attempts", n(attempts)),
                (":fk", s(super::failed_key(at, message_id))),
                (":ttl", n(ttl)),
            ],
        ),
        Counts { queued: -1, failed: 1, ..Counts::default() },
    )
}

/// `DELETE /{id}`: a queued message is canceled. `counted`: the worker has counted this
/// generation into the backlog (`countedGen`), which the cancel takes back; otherwise
/// the cancel marks it counted, so that the worker never counts it (and a retried
/// generation leaves `failed`, as counting it would have).
pub fn cancel(generation: u32, counted: bool, at: &str, ttl: u64) -> Write {
    let (condition, counts) = if counted {
        (
            "#st = :queued AND generation = :gen AND countedGen = :gen AND attribute_not_exists(maybeSent)",
            Counts { queued: -1, canceled: 1, ..Counts::default() },
        )
    } else {
        (
            "#st = :queued AND generation = :gen AND (attribute_not_exists(countedGen) OR countedGen < :gen) AND attribute_not_exists(maybeSent)",
            Counts { canceled: 1, failed: -i64::from(generation > 0), ..Counts::default() },
        )
    };
    write(
        condition,
        "SET #st = :canceled, canceledAt = :at, countedGen = :gen, #ttl = :ttl REMOVE waitShard".into(),
        vec![(":queued", s("queued")), (":canceled", s("canceled")), (":at", s(at)), (":gen", n(generation)), (":ttl", n(ttl))],
        counts,
    )
}

/// A canceled campaign's waiting message is canceled by the worker (one it has counted).
pub fn cancel_waiting(generation: u32, at: &str, ttl: u64) -> Write {
    write(
        "#st = :queued AND generation = :gen AND countedGen = :gen AND attribute_not_exists(maybeSent)",
        "SET #st = :canceled, canceledAt = :at, #ttl = :ttl REMOVE waitShard".into(),
        vec![(":queued", s("queued")), (":canceled", s("canceled")), (":at", s(at)), (":gen", n(generation)), (":ttl", n(ttl))],
        Counts { queued: -1, canceled: 1, ..Counts::default() },
    )
}

/// The counts of a campaign's message the edge writes `canceled` before the worker
/// fanned it out ([`PUT_NEW`]): it has an item now, canceled.
pub const CANCEL_UNWRITTEN: Counts = Counts { queued: 0, sent: 0, failed: 0, canceled: 1, fanned: 1, last_sent_ms: None };

/// The counts of a campaign's message the worker fans out ([`PUT_NEW`], `countedGen` 0).
pub const FAN_OUT: Counts = Counts { queued: 1, sent: 0, failed: 0, canceled: 0, fanned: 1, last_sent_ms: None };

/// `POST /{id}/retry`: a failed message back to `queued` as a new generation, exactly
/// once (the condition), marked with this request's `token` (a lost answer tried again
/// recognises its own write). The counters move when the worker counts the generation.
pub fn requeue_failed(message_id: &str, now: &str, token: &str) -> Write {
    write(
        "#st = :failed",
        "SET #st = :queued, attempts = :zero, retriedAt = :now, retryToken = :token, previousAttempts = attempts, generation = if_not_exists(generation, :zero) + :one, waitShard = :ws REMOVE failedKey, #ttl".into(),
        vec![
            (":failed", s("failed")),
            (":queued", s("queued")),
            (":zero", n(0)),
            (":one", n(1)),
            (":now", s(now)),
            (":token", s(token)),
            (":ws", s(super::wait_shard(message_id))),
        ],
        Counts::default(),
    )
}

/// A retry whose queue write failed goes back to `failed` as it was, while no worker
/// counted its generation ([`count_scheduled`]): nothing to take back. It is marked
/// counted, so that a queue copy that got through after all (only the queue's answer
/// was lost) is never counted into the backlog of a message that waits for nothing.
/// Refused, a worker took it (the retry went through), unless the item carries this
/// undo's own mark ([`UNDONE_GEN`]: its first answer was lost).
pub fn mark_failed(message_id: &str, generation: u32, failed_at: &str, attempts: u32, error: Option<&str>, ttl: u64) -> Write {
    let mut update = String::from("SET #st = :failed, failedAt = :at, failedKey = :fk, attempts = :attempts, #ttl = :ttl");
    let mut values = vec![
        (":queued", s("queued")),
        (":failed", s("failed")),
        (":gen", n(generation)),
        (":at", s(failed_at)),
        (":fk", s(super::failed_key(failed_at, message_id))),
        (":attempts", n(attempts)),
        (":ttl", n(ttl)),
    ];
    if let Some(error) = error {
        update.push_str(", lastError = :err");
        values.push((":err", s(error)));
    }
    update.push_str(&format!(", countedGen = :gen, {UNDONE_GEN} = :gen REMOVE {WAIT_SHARD}"));
    write("#st = :queued AND generation = :gen AND (attribute_not_exists(countedGen) OR countedGen < :gen)", update, values, Counts::default())
}

/// The generation whose retry [`mark_failed`] undid.
pub const UNDONE_GEN: &str = "undoneGen";

/// An account held or released (`POST /account/pause|resume`): its summary's `paused`,
/// ordered by the control's time (`holdAtMs`): an older control never overrides a newer
/// one, and the same one written twice (by the edge once it is queued, by the worker
/// when it applies it) passes. A held account is in the waiting index, so that a
/// rebuild of the schedule holds it again. A hold the worker makes itself (the
/// vendor refused the account's credentials) says why (`holdReason`, shown by
/// `GET /status`); a user's pause or resume clears it.
pub fn set_hold(paused: bool, at_ms: u64, account: &str, reason: Option<&str>) -> Write {
    let (update, mut values) = match (paused, reason) {
        (true, Some(why)) => (
            format!("SET paused = :p, holdAtMs = :at, {WAIT_SHARD} = :ws, {HOLD_REASON} = :why"),
            vec![(":ws", s(super::account_wait_shard(account))), (":why", s(why))],
        ),
        (true, None) => {
            (format!("SET paused = :p, holdAtMs = :at, {WAIT_SHARD} = :ws REMOVE {HOLD_REASON}"), vec![(":ws", s(super::account_wait_shard(account)))])
        }
        (false, _) => (format!("SET paused = :p, holdAtMs = :at REMOVE {WAIT_SHARD}, {HOLD_REASON}"), vec![]),
    };
    values.extend([(":p", json!({"BOOL": paused})), (":at", n(at_ms))]);
    write("attribute_not_exists(holdAtMs) OR holdAtMs <= :at", update, values, Counts::default())
}

/// Why the worker held an account itself (see [`set_hold`]).
pub const HOLD_REASON: &str = "holdReason";

/// The account's id at the delivery vendor (`PUT /account/vendor`), on its summary.
pub const VENDOR_ACCOUNT: &str = "vendorAccountId";

/// Sets the account's id at the vendor, or clears it (`None`: the account id itself is
/// used). A setting, not a transition: no condition, and the latest write stands.
pub fn set_vendor_account(id: Option<&str>) -> Write {
    match id {
        Some(id) => write("", format!("SET {VENDOR_ACCOUNT} = :va"), vec![(":va", s(id))], Counts::default()),
        None => write("", format!("REMOVE {VENDOR_ACCOUNT}"), vec![], Counts::default()),
    }
}

/// What a 429 adds to its account's summary update: until when it is paused, and the
/// summary in the waiting index, so that a rebuild of the schedule keeps the pause.
pub fn rate_limited(account: &str, until_ms: u64) -> (String, Vec<(&'static str, Value)>) {
    (format!("pauseUntilMs = :pu, {WAIT_SHARD} = :ws"), vec![(":pu", n(until_ms)), (":ws", s(super::account_wait_shard(account)))])
}

/// What the sends an outcome records add to its account's summary update: each send's
/// time (ms) under its key (`RateLimit::recent_send_key`, from its slot), for the
/// window meter of `GET /status`. Top-level attributes ([`RECENT_SEND_PREFIX`] and the
/// key), not a map: a map's entry cannot be set in the same write that would create
/// the map. Moved only with the outcome it belongs to, like the counters. Two sends
/// on one key (a burst) keep the later: one write may not set a path twice.
pub fn recorded_sends(sends: &[(u64, u64)]) -> (String, Vec<(String, Value)>) {
    let mut latest = std::collections::BTreeMap::new();
    for &(key, at) in sends {
        let kept = latest.entry(key).or_insert(at);
        *kept = (*kept).max(at);
    }
    let sets: Vec<String> = latest.keys().map(|key| format!("{RECENT_SEND_PREFIX}{key} = :{RECENT_SEND_PREFIX}{key}")).collect();
    (sets.join(", "), latest.iter().map(|(key, at)| (format!(":{RECENT_SEND_PREFIX}{key}"), n(at))).collect())
}

/// The summary's attributes holding its last sends (`recent7`: the send under key 7).
pub const RECENT_SEND_PREFIX: &str = "recent";

/// A summary found in the waiting index that holds nothing any more (released, its 429
/// pause over) leaves it.
pub fn account_rested(now_ms: u64) -> Write {
    write(
        "(attribute_not_exists(paused) OR paused = :f) AND (attribute_not_exists(pauseUntilMs) OR pauseUntilMs < :now)",
        format!("REMOVE {WAIT_SHARD}"),
        vec![(":f", json!({"BOOL": false})), (":now", n(now_ms))],
        Counts::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name and value a write carries is used by its expressions, and every one
    /// they use is carried (DynamoDB refuses either mistake).
    #[test]
    fn expressions_and_their_names_and_values_agree() {
        let all = [
            count_scheduled(1),
            claim(0, 2, "w"),
            take_over(0, 1, 2, "w"),
            unclaim(0, "w"),
            record_sent(0, "2026-12-05T00:00:00.000Z", 1, None, 9),
            record_sent(0, "2026-12-05T00:00:00.000Z", 1, Some("42"), 9),
            record_retrying(0, 1, "503", false),
            record_retrying(0, 1, "timed out", true),
            record_failed("id", 0, "2026-12-05T00:00:00.000Z", "400", 1, 9),
            cancel(0, true, "t", 9),
            cancel(1, false, "t", 9),
            cancel_waiting(0, "t", 9),
            requeue_failed("id", "t", "token"),
            mark_failed("id", 1, "t", 2, Some("e"), 9),
            mark_failed("id", 1, "t", 2, None, 9),
            set_hold(true, 5, "a", None),
            set_hold(true, 5, "a", Some("401")),
            set_hold(false, 5, "a", None),
            account_rested(5),
            cancel_campaign("t"),
            start_fan_out("t", "c1"),
            campaign_rested(9),
            campaign_scheduled(),
        ];
        for w in all {
            let text = format!("{} {}", w.condition, w.update);
            let used: std::collections::BTreeSet<&str> =
                text.split(|c: char| !(c.is_alphanumeric() || c == ':' || c == '#' || c == '_')).filter(|t| t.starts_with(':') || t.starts_with('#')).collect();
            let carried: std::collections::BTreeSet<&str> = w.names.iter().map(|(k, _)| *k).chain(w.values.iter().map(|(k, _)| *k)).collect();
            assert_eq!(used, carried, "{w:?}");
        }
    }

    #[test]
    fn counts_of_the_transitions() {
        assert_eq!(count_scheduled(0).counts, Counts { queued: 1, ..Counts::default() });
        assert_eq!(count_scheduled(2).counts, Counts { queued: 1, failed: -1, ..Counts::default() }, "a retried generation leaves failed");
        assert_eq!(cancel(1, false, "t", 0).counts.failed, -1);
        assert_eq!(record_sent(0, "2026-12-05T00:00:00.000Z", 1, None, 0).counts.last_sent_ms, Some(1_796_428_800_000));
        let (update, values) = Counts { sent: 2, canceled: -1, ..Counts::default() }.campaign_update();
        assert_eq!(update, "ADD sent :sent, canceled :canceled");
        assert_eq!(values.len(), 2);
    }
}
