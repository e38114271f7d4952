//! The ledger as the worker writes it: the item of a message it takes from SQS (when
//! the edge's write did not land), a campaign's items, each claim and each outcome, the
//! account holds it applies, and what a rebuild of the schedule reads back. Every write
//! is a transition of `shared::ledger::machine`, sent with its condition; the counters a
//! transition moves go in the same transaction, one per account.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use futures::future::join_all;
use serde_json::Value;
use shared::campaign::{self, CampaignItem};
use shared::ledger::machine::{self, Counts, Write};
use shared::ledger::{self, Body, BodyItem, LedgerItem, MessageStatus, Summary, PK, SK, SUMMARY_SK};
use shared::message::QueueMessage;
use shared::queue::{AccountControl, Hold};
use shared::rate::RateLimit;
use shared::webhook::{Delivery, PauseCause};

use crate::now_ms;
use crate::schedule::Payload;

/// Every call asks for the capacity it consumed (table and each index): what the
/// ledger costs is metered from the answers, not estimated (`bench/cost.sh`).
const METERED: ReturnConsumedCapacity = ReturnConsumedCapacity::Indexes;

/// A finished attempt to record.
#[derive(Debug, Clone)]
pub enum Outcome {
    Sent {
        at: String,
        /// The gateway's id of the message, if it gave one.
        gateway_id: Option<String>,
    },
    /// Will be tried again; `maybe_sent` once an attempt got no answer.
    Retrying {
        error: String,
        maybe_sent: bool,
    },
    /// The gateway's rate limit: tried again, and the account paused until `until_ms`.
    RateLimited {
        error: String,
        until_ms: u64,
    },
    Failed {
        at: String,
        error: String,
    },
    /// Claimed, then not handed to the gateway after all: back to `queued`.
    Released,
    /// Refused with its account's credentials: back to `queued`, its account held.
    Held {
        reason: String,
    },
}

/// One message's outcome.
#[derive(Debug, Clone)]
pub struct Record {
    pub message: QueueMessage,
    pub attempts: u32,
    pub outcome: Outcome,
    /// When it went to the gateway, if it did: the slot it was taken for and when it
    /// went (Redis time, ms), kept among its account's last sends (the slot says where:
    /// `RateLimit::recent_send_key`).
    pub went: Option<(u64, u64)>,
}

/// What a claim came to for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Ours until the lease we asked for: it may be sent.
    Claimed,
    /// Finished already (sent, failed, canceled, or a newer generation), or gone: never
    /// to be sent.
    Finished,
    /// Its campaign was canceled: it has been marked canceled now.
    CampaignCanceled,
    /// Another worker's claim holds it until then (Redis time, ms): its delivery may be
    /// under way.
    Held { until_ms: u64 },
}

/// What a count into the backlog left uncounted (positions in what it was given).
#[derive(Debug, Default)]
pub struct Uncounted {
    /// No item (the edge's write failed): counted once written.
    pub missing: Vec<usize>,
    /// Finished already: a late duplicate delivery.
    pub finished: Vec<usize>,
}

/// A message to claim: the slot it was taken for, and whether it may have been sent.
pub struct ToClaim<'a> {
    pub message: &'a QueueMessage,
    pub slot_ms: u64,
    pub maybe_sent: bool,
}

/// What the waiting index holds.
#[derive(Debug, Clone)]
pub enum Waiting {
    /// A message, as the schedule takes it back (the attempts it has made, whether it
    /// may have been sent).
    Message(Payload),
    /// An account's summary: it is held, or was paused by a 429.
    Account(String, Summary),
    /// A campaign's head, by account and id: messages of it may wait
    /// ([`Ledger::campaign_waiting`] reads them).
    Campaign(String, String),
}

#[derive(Clone)]
pub struct Ledger {
    client: Client,
    table: String,
    ttl_days: u64,
    /// Names this process's claims (`claimedBy`).
    owner: String,
    /// DynamoDB calls made (for `/stats` and the ingest-cost benchmark).
    calls: Arc<AtomicU64>,
    /// Where the webhook events of recorded outcomes go (`crate::events`); none: no
    /// events (benchmarks of the ledger alone).
    events: Option<Arc<crate::events::EventSink>>,
    /// The per-account limit, for where a send is kept among its account's last sends.
    rate: RateLimit,
}

/// DynamoDB JSON (as `shared::ledger` writes it) to SDK attribute values.
pub fn to_attr(v: &Value) -> AttributeValue {
    match v {
        Value::Object(m) if m.contains_key("S") => AttributeValue::S(m["S"].as_str().unwrap_or_default().to_owned()),
        Value::Object(m) if m.contains_key("N") => AttributeValue::N(m["N"].as_str().unwrap_or_default().to_owned()),
        Value::Object(m) if m.contains_key("BOOL") => AttributeValue::Bool(m["BOOL"].as_bool().unwrap_or_default()),
        Value::Object(m) if m.contains_key("L") => AttributeValue::L(m["L"].as_array().map(|l| l.iter().map(to_attr).collect()).unwrap_or_default()),
        Value::Object(m) if m.contains_key("SS") => {
            AttributeValue::Ss(m["SS"].as_array().map(|l| l.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default())
        }
        Value::Object(m) if m.contains_key("M") => {
            AttributeValue::M(m["M"].as_object().map(|o| o.iter().map(|(k, v)| (k.clone(), to_attr(v))).collect()).unwrap_or_default())
        }
        _ => AttributeValue::Null(true),
    }
}

/// SDK attribute values back to DynamoDB JSON (the form `shared::ledger` reads).
fn from_attr(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::S(s) => serde_json::json!({ "S": s }),
        AttributeValue::N(n) => serde_json::json!({ "N": n }),
        AttributeValue::Bool(b) => serde_json::json!({ "BOOL": b }),
        AttributeValue::L(l) => serde_json::json!({ "L": l.iter().map(from_attr).collect::<Vec<_>>() }),
        AttributeValue::Ss(l) => serde_json::json!({ "SS": l }),
        AttributeValue::M(m) => serde_json::json!({ "M": from_attrs(m) }),
        _ => Value::Null,
    }
}

/// An update's answer; `None` when its condition refused it.
fn applied<T>(answer: Result<T, aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>>) -> anyhow::Result<Option<T>> {
    match answer {
        Ok(a) => Ok(Some(a)),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn from_attrs(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(item.iter().map(|(k, v)| (k.clone(), from_attr(v))).collect())
}

fn item_map(v: &Value) -> HashMap<String, AttributeValue> {
    v.as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), to_attr(v))).collect()).unwrap_or_default()
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn key_of(creator: &str, sort_key: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_owned(), s(creator)), (SK.to_owned(), s(sort_key))])
}

/// A put of a new item, only where none is (`machine::PUT_NEW`).
fn put_new(table: &str, item: &Value) -> anyhow::Result<Put> {
    Ok(Put::builder()
        .table_name(table)
        .set_item(Some(item_map(item)))
        .condition_expression(machine::PUT_NEW)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()?)
}

/// A transition as an SDK update of the item at `key`; refused, it returns the item as
/// it was (so the caller knows why).
fn update_of(table: &str, key: HashMap<String, AttributeValue>, w: &Write) -> anyhow::Result<Update> {
    let mut u = Update::builder()
        .table_name(table)
        .set_key(Some(key))
        .update_expression(&w.update)
        // A setting's write has no condition (`machine::set_vendor_account`).
        .set_condition_expression((!w.condition.is_empty()).then(|| w.condition.to_owned()))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
    for (k, v) in &w.names {
        u = u.expression_attribute_names(*k, *v);
    }
    for (k, v) in &w.values {
        u = u.expression_attribute_values(*k, to_attr(v));
    }
    Ok(u.build()?)
}

impl Ledger {
    pub fn new(client: Client, table: String, ttl_days: u64, rate: RateLimit) -> Self {
        Self { client, table, ttl_days, owner: format!("{:016x}", rand::random::<u64>()), calls: Arc::default(), events: None, rate }
    }

    /// Records the webhook events of the outcomes it records, for the endpoints that
    /// asked for them, and hands them to `sink`.
    pub fn with_events(self, sink: Arc<crate::events::EventSink>) -> Self {
        Self { events: Some(sink), ..self }
    }

    /// DynamoDB calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn count(&self, n: usize) {
        self.calls.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// When what finishes now may expire.
    fn expiry(&self) -> u64 {
        ledger::expiry(now_ms(), self.ttl_days)
    }

    /// Writes the bodies of single messages the edge accepted but whose body is missing
    /// (the edge writes a body and its item apart; either write may have failed). The
    /// bodies are looked for with an eventually consistent `BatchGetItem` of up to 100
    /// (half a read unit each: the only read a single message costs the worker), and
    /// those it does not see again with a consistent one (a body written a moment ago
    /// may not have reached every replica yet: only the consistent read's "absent" is
    /// believed), then each one missing is put, conditionally.
    /// A campaign's messages share their campaign's body, written before it. Their
    /// items are [`Ledger::count_scheduled`]'s to find missing.
    pub async fn ensure_bodies(&self, messages: &[QueueMessage]) -> anyhow::Result<()> {
        let singles: Vec<&QueueMessage> = messages.iter().filter(|m| m.campaign_id.is_none()).collect();
        for chunk in singles.chunks(100) {
            let mut missing: Vec<&QueueMessage> = chunk.to_vec();
            for consistent in [false, true] {
                if missing.is_empty() {
                    break;
                }
                let mut keys = KeysAndAttributes::builder()
                    .projection_expression("#pk, #sk")
                    .expression_attribute_names("#pk", PK)
                    .expression_attribute_names("#sk", SK)
                    .consistent_read(consistent);
                for m in &missing {
                    keys = keys.keys(key_of(&m.creator_id, &ledger::body_sort_key(&m.id)));
                }
                let mut present = HashSet::new();
                for item in self.batch_get(keys.build()?).await? {
                    if let (Some(AttributeValue::S(c)), Some(AttributeValue::S(sk))) = (item.get(PK), item.get(SK)) {
                        present.insert((c.clone(), sk.clone()));
                    }
                }
                missing.retain(|m| !present.contains(&(m.creator_id.clone(), ledger::body_sort_key(&m.id))));
            }
            let puts = missing.iter().map(|m| async move {
                let start = m.send_at_ms().unwrap_or(0).max(now_ms());
                let body = BodyItem::of(m, ledger::single_body_expiry(start, self.ttl_days)).to_item();
                self.write_one(&Op::Put(put_new(&self.table, &body)?)).await
            });
            for r in join_all(puts).await {
                r?;
            }
        }
        Ok(())
    }

    /// Writes the items of messages whose item the edge could not write (conditional
    /// puts: one written meanwhile stands). Returns how many it wrote.
    pub async fn write_items(&self, messages: &[QueueMessage]) -> anyhow::Result<usize> {
        let puts = messages
            .iter()
            .map(|m| async move { anyhow::Ok(self.write_one(&Op::Put(put_new(&self.table, &LedgerItem::queued(m.clone()).to_item())?)).await?.is_none()) });
        let mut written = 0;
        for r in join_all(puts).await {
            written += usize::from(r?);
        }
        Ok(written)
    }

    /// Whether the table answers (a read of a key that never exists).
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.count(1);
        self.client.get_item().table_name(&self.table).key(PK, s("#ping")).key(SK, s(SUMMARY_SK)).return_consumed_capacity(METERED).send().await?;
        Ok(())
    }

    /// Accounts' summaries as they are now (consistent reads, 100 to a read, all at
    /// once: the waiting index, which a rebuild reads, may lag behind the table); an
    /// account without one is not in the answer.
    pub async fn summaries(&self, accounts: &[String]) -> anyhow::Result<HashMap<String, Summary>> {
        let reads = accounts.chunks(100).map(|chunk| async move {
            let mut keys = KeysAndAttributes::builder().consistent_read(true);
            for account in chunk {
                keys = keys.keys(key_of(account, SUMMARY_SK));
            }
            self.batch_get(keys.build()?).await
        });
        let mut found = HashMap::new();
        for items in join_all(reads).await {
            for item in items? {
                let item = from_attrs(&item);
                if let Some(account) = ledger::text(&item, PK) {
                    found.insert(account.to_owned(), Summary::from_item(Some(&item)));
                }
            }
        }
        Ok(found)
    }

    /// The account's id at the delivery vendor (`PUT /account/vendor`), when it has one:
    /// that attribute of its summary alone, eventually consistent (half a read unit).
    pub async fn vendor_account(&self, account: &str) -> anyhow::Result<Option<String>> {
        self.count(1);
        let answer = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_of(account, SUMMARY_SK)))
            .projection_expression("#va")
            .expression_attribute_names("#va", machine::VENDOR_ACCOUNT)
            .return_consumed_capacity(METERED)
            .send()
            .await?;
        Ok(answer.item().and_then(|i| i.get(machine::VENDOR_ACCOUNT)).and_then(|v| v.as_s().ok()).cloned())
    }

    /// Counts messages into their accounts' backlog, once per message and generation
    /// (`machine::count_scheduled`). Of those it did not count, it tells apart the ones
    /// whose item does not exist (yet) and the ones the ledger shows finished (sent,
    /// failed or canceled at this generation or a later one: late duplicate
    /// deliveries, which must not be scheduled again), from the items as they were.
    /// (One finished but never counted — a rebuild of the schedule sent it before its
    /// queue copy got here — is counted, as it must be, and not told: it is scheduled,
    /// and its claim, refused, gives its slot back. No item read for the rare case.)
    pub async fn count_scheduled(&self, messages: &[QueueMessage]) -> anyhow::Result<Uncounted> {
        let changes = messages.iter().map(|m| Change::write(m, machine::count_scheduled(m.generation))).collect();
        let mut uncounted = Uncounted::default();
        for (i, old) in self.apply_by_account(changes).await?.refused {
            let Some(old) = old else {
                uncounted.missing.push(i);
                continue;
            };
            // Read from the attributes themselves: an item the worker could not parse
            // whole is still told by its status.
            let status = ledger::text(&old, "status").and_then(MessageStatus::parse);
            let generation = ledger::number(&old, "generation").unwrap_or(0);
            if status.is_some_and(MessageStatus::is_final) && generation >= u64::from(messages[i].generation) {
                uncounted.finished.push(i);
            }
        }
        Ok(uncounted)
    }

    /// A campaign, head and body (consistent reads); `None` when it does not exist (the
    /// edge removed it because it could not be queued, or it expired).
    pub async fn campaign(&self, creator: &str, id: &str) -> anyhow::Result<Option<CampaignItem>> {
        let (head_key, body_key) = (campaign::item_key(creator, id), campaign::body_key(creator, id));
        let (head, body) = tokio::try_join!(self.get(&head_key), self.get(&body_key))?;
        Ok(head.and_then(|h| CampaignItem::from_items(&h, body.as_ref())))
    }

    /// Bodies by account and body id (`shared::ledger::body_id`), 100 to a read, all at
    /// once; one gone (expired) is not in the answer.
    pub async fn bodies(&self, ids: &[(String, String)]) -> anyhow::Result<HashMap<(String, String), Body>> {
        let reads = ids.chunks(100).map(|chunk| async move {
            let mut keys = KeysAndAttributes::builder().consistent_read(true);
            for (creator, id) in chunk {
                keys = keys.keys(item_map(&ledger::body_key(creator, id)));
            }
            self.batch_get(keys.build()?).await
        });
        let mut found = HashMap::new();
        for items in join_all(reads).await {
            for item in items? {
                let item = from_attrs(&item);
                let id = ledger::text(&item, SK).and_then(|sk| sk.strip_prefix(ledger::BODY_SK_PREFIX));
                if let (Some(creator), Some(id), Some(body)) = (ledger::text(&item, PK), id, Body::from_item(&item)) {
                    found.insert((creator.to_owned(), id.to_owned()), body);
                }
            }
        }
        Ok(found)
    }

    /// Up to 100 items by key (`BatchGetItem`), the keys DynamoDB left unprocessed asked
    /// again; an error if some stay unprocessed (a missing item must mean it is absent).
    async fn batch_get(&self, keys: KeysAndAttributes) -> anyhow::Result<Vec<HashMap<String, AttributeValue>>> {
        let mut request = HashMap::from([(self.table.clone(), keys)]);
        let mut items = Vec::new();
        for _ in 0..5 {
            self.count(1);
            let answer = self.client.batch_get_item().set_request_items(Some(request)).return_consumed_capacity(METERED).send().await?;
            items.extend(answer.responses().and_then(|r| r.get(&self.table)).into_iter().flatten().cloned());
            match answer.unprocessed_keys().filter(|u| !u.is_empty()) {
                Some(u) => request = u.clone(),
                None => return Ok(items),
            }
        }
        anyhow::bail!("the ledger left keys of a batch read unprocessed five times")
    }

    /// One item (consistent read), as stored.
    /// One webhook endpoint of this account (`None`: there is none, or it was deleted).
    pub async fn endpoint(&self, creator: &str, id: &str) -> anyhow::Result<Option<shared::webhook::Endpoint>> {
        Ok(self.get(&shared::webhook::endpoint_key(creator, id)).await?.as_ref().and_then(shared::webhook::Endpoint::from_item))
    }

    /// A query of one account's items whose sort key starts with `prefix`.
    fn prefix_query(&self, account: &str, prefix: &str) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(account))
            .expression_attribute_values(":prefix", s(prefix))
            .return_consumed_capacity(METERED)
    }

    /// A query of one shard of the waiting index, from `start`.
    fn shard_query(&self, shard: &str, start: Option<HashMap<String, AttributeValue>>) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .index_name(ledger::WAITING_INDEX)
            .key_condition_expression("#ws = :ws")
            .expression_attribute_names("#ws", ledger::WAIT_SHARD)
            .expression_attribute_values(":ws", s(shard))
            .set_exclusive_start_key(start)
            .return_consumed_capacity(METERED)
    }

    /// The account's webhook endpoints (`shared::webhook`): a few small items, one query;
    /// `consistent` or at half the read units (an endpoint just registered, or deleted,
    /// may be seen a moment later).
    pub async fn endpoints(&self, creator: &str, consistent: bool) -> anyhow::Result<Vec<shared::webhook::Endpoint>> {
        self.count(1);
        let answer = self.prefix_query(creator, shared::webhook::ENDPOINT_SK_PREFIX).consistent_read(consistent).send().await?;
        Ok(answer.items().iter().filter_map(|i| shared::webhook::Endpoint::from_item(&from_attrs(i))).collect())
    }

    /// A page of the waiting index's `shard` (keys only: its items' account and sort
    /// key), and where the next page starts: the events waiting for delivery
    /// (`shared::webhook::EVENT_SHARDS`), or the accounts' endpoints
    /// (`shared::webhook::ENDPOINTS_SHARD`).
    pub async fn keys_page(
        &self,
        shard: &str,
        start: Option<HashMap<String, AttributeValue>>,
    ) -> anyhow::Result<(Vec<(String, String)>, Option<HashMap<String, AttributeValue>>)> {
        self.count(1);
        let answer = self
            .shard_query(shard, start)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .projection_expression("#pk, #sk")
            .send()
            .await?;
        let keys = answer
            .items()
            .iter()
            .filter_map(|i| {
                let item = from_attrs(i);
                Some((ledger::text(&item, PK)?.to_owned(), ledger::text(&item, SK)?.to_owned()))
            })
            .collect();
        Ok((keys, answer.last_evaluated_key().cloned()))
    }

    /// Takes an event waiting for delivery until `until_ms`, unless another worker holds
    /// it (its lease not over at `now_ms`) or it was delivered meanwhile: the event then.
    pub async fn lease_event(&self, creator: &str, event_id: &str, now_ms: u64, until_ms: u64) -> anyhow::Result<Option<shared::webhook::Pending>> {
        let answer = self
            .event_update(creator, event_id)
            .update_expression(format!("SET {} = :until, {} = :me", shared::webhook::LEASE, shared::webhook::LEASED_BY))
            .condition_expression(format!("attribute_exists(endpoints) AND (attribute_not_exists({0}) OR {0} < :now)", shared::webhook::LEASE))
            .expression_attribute_values(":until", AttributeValue::N(until_ms.to_string()))
            .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()))
            .expression_attribute_values(":me", s(&self.owner))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        Ok(applied(answer)?.and_then(|a| a.attributes().map(from_attrs)).as_ref().and_then(shared::webhook::Pending::from_item))
    }

    /// Holds an event this worker delivers until `until_ms` (it waits to try again); an
    /// error when another worker took it over meanwhile.
    pub async fn renew_event_lease(&self, creator: &str, event_id: &str, until_ms: u64, endpoint_id: &str, log: &Delivery) -> anyhow::Result<()> {
        let answer = self
            .event_update(creator, event_id)
            .update_expression(format!("SET {} = :until, #log = :d", shared::webhook::LEASE))
            .condition_expression(format!("attribute_exists(endpoints) AND {} = :me", shared::webhook::LEASED_BY))
            .expression_attribute_values(":until", AttributeValue::N(until_ms.to_string()))
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_names("#log", shared::webhook::log_attribute(endpoint_id))
            .expression_attribute_values(":d", to_attr(&log.to_attr()))
            .send()
            .await;
        applied(answer)?.map(drop).ok_or_else(|| anyhow::anyhow!("the event is another worker's now (or delivered)"))
    }

    /// One endpoint has the event (or never will: gone, given up); with the last, the
    /// event leaves the waiting index (it expires later). `alone`: it was written for
    /// this endpoint only.
    pub async fn event_done_for(&self, creator: &str, event_id: &str, endpoint_id: &str, log: &Delivery, alone: bool) -> anyhow::Result<()> {
        // An event for one endpoint (the common case): one write, not two.
        if alone {
            let answer = self
                .event_update(creator, event_id)
                .update_expression(format!("{} SET #log = :d", shared::webhook::DELIVERED_TO_LAST))
                .condition_expression(shared::webhook::ONLY_ENDPOINT_LEFT)
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .expression_attribute_values(":id", s(endpoint_id))
                .expression_attribute_names("#log", shared::webhook::log_attribute(endpoint_id))
                .expression_attribute_values(":d", to_attr(&log.to_attr()))
                .send()
                .await;
            if applied(answer)?.is_some() {
                return Ok(());
            }
        }
        let answer = self
            .event_update(creator, event_id)
            .update_expression(format!("{} SET #log = :d", shared::webhook::DELIVERED_TO))
            .condition_expression("attribute_exists(endpoints)")
            .expression_attribute_values(":e", AttributeValue::Ss(vec![endpoint_id.to_owned()]))
            .expression_attribute_names("#log", shared::webhook::log_attribute(endpoint_id))
            .expression_attribute_values(":d", to_attr(&log.to_attr()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        let left = applied(answer)?.is_some_and(|a| a.attributes().is_some_and(|item| item.contains_key("endpoints")));
        if !left {
            let done = self
                .event_update(creator, event_id)
                .update_expression(shared::webhook::DONE)
                .condition_expression(shared::webhook::DELIVERED_TO_ALL)
                .send()
                .await;
            applied(done)?;
        }
        Ok(())
    }

    /// An update of one waiting event's item (`shared::webhook::Pending`).
    fn event_update(&self, creator: &str, event_id: &str) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.count(1);
        let key = ledger::key(creator, &format!("{}{event_id}", shared::webhook::EVENT_SK_PREFIX));
        self.client.update_item().table_name(&self.table).set_key(Some(item_map(&key))).return_consumed_capacity(METERED)
    }

    /// Marks an endpoint disabled (its receiver answered 410); nothing when it was
    /// deleted meanwhile.
    pub async fn disable_endpoint(&self, creator: &str, id: &str, why: &str) -> anyhow::Result<()> {
        self.count(1);
        let at = shared::time::rfc3339_ms(now_ms());
        let answer = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_map(&shared::webhook::endpoint_key(creator, id))))
            .update_expression(shared::webhook::DISABLE)
            .condition_expression(shared::webhook::ENDPOINT_EXISTS)
            .expression_attribute_values(":at", AttributeValue::S(at))
            .expression_attribute_values(":why", AttributeValue::S(why.to_owned()))
            .return_consumed_capacity(METERED)
            .send()
            .await;
        applied(answer).map(drop)
    }

    async fn get(&self, key: &Value) -> anyhow::Result<Option<Value>> {
        self.count(1);
        let answer =
            self.client.get_item().table_name(&self.table).set_key(Some(item_map(key))).consistent_read(true).return_consumed_capacity(METERED).send().await?;
        Ok(answer.item().map(from_attrs))
    }

    /// A page of the waiting index's `shard`: the messages waiting there (queued,
    /// scheduled, being sent or between attempts) with the attempts they have made, the
    /// accounts held or paused, and where the next page starts.
    pub async fn waiting_page(
        &self,
        shard: &str,
        start: Option<HashMap<String, AttributeValue>>,
    ) -> anyhow::Result<(Vec<Waiting>, Option<HashMap<String, AttributeValue>>)> {
        self.count(1);
        let answer = self.shard_query(shard, start).send().await?;
        let waiting = answer
            .items()
            .iter()
            .filter_map(|i| {
                let item = from_attrs(i);
                let (account, sort_key) = (ledger::text(&item, PK)?.to_owned(), ledger::text(&item, SK)?);
                if sort_key == SUMMARY_SK {
                    return Some(Waiting::Account(account, Summary::from_item(Some(&item))));
                }
                if let Some(id) = sort_key.strip_prefix(campaign::CAMPAIGN_SK_PREFIX) {
                    return Some(Waiting::Campaign(account, id.to_owned()));
                }
                let maybe_sent = item.get(machine::MAYBE_SENT).is_some();
                ledger::message_of(&item).map(|message| Waiting::Message(Payload { message, attempts: ledger::attempts_of(&item), maybe_sent }))
            })
            .collect();
        Ok((waiting, answer.last_evaluated_key().cloned()))
    }

    /// What waits of a campaign whose head is in the waiting index: each of its messages
    /// whose item is waiting (queued, being sent or between attempts), with the attempts
    /// it has made and its content, read by their common id prefix a page (1 MB) at a
    /// time, `page` called after each. `None` when nothing of it waits: the head then
    /// leaves the index ([`Ledger::rest_campaign`]'s rule).
    pub async fn campaign_waiting<F: std::future::Future<Output = anyhow::Result<()>>>(
        &self,
        account: &str,
        id: &str,
        mut page: impl FnMut(Vec<Payload>) -> F,
    ) -> anyhow::Result<Option<()>> {
        // Head and body at once (a rebuild races the campaigns' redeliveries: the
        // sooner it is done, the fewer copies of a message the schedule gets).
        let Some(c) = self.campaign(account, id).await? else { return Ok(None) };
        if self.rest_if_done(account, id, &c).await? {
            return Ok(None);
        }
        if c.body_expires_at == 0 {
            // Held past its body's expiry (`shared::campaign::body_expiry`): scheduled
            // without content, each fails at its turn (never sent empty).
            tracing::error!(campaign = %id, "a waiting campaign's content expired");
        }
        let body = c.campaign.body();
        let mut start = None;
        loop {
            self.count(1);
            let answer = self.prefix_query(account, campaign::messages_prefix(id)).consistent_read(true).set_exclusive_start_key(start).send().await?;
            let mut waiting = Vec::new();
            for item in answer.items().iter().map(from_attrs) {
                let Some(found) = LedgerItem::from_item(&item) else { continue };
                if matches!(found.status, MessageStatus::Queued | MessageStatus::Sending) {
                    let mut message = found.message;
                    body.fill(&mut message);
                    waiting.push(Payload { message, attempts: found.attempts, maybe_sent: item.get(machine::MAYBE_SENT).is_some() });
                }
            }
            page(waiting).await?;
            match answer.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => return Ok(Some(())),
            }
        }
    }

    /// Takes a campaign's head out of the waiting index when nothing of it waits; reads
    /// the head alone. Whether it did (or the head is gone).
    pub async fn rest_campaign(&self, account: &str, id: &str) -> anyhow::Result<bool> {
        match self.get(&campaign::item_key(account, id)).await?.as_ref().and_then(CampaignItem::from_item) {
            Some(head) => self.rest_if_done(account, id, &head).await,
            None => Ok(true),
        }
    }

    /// The rule, for a head already read: it leaves the waiting index when every message
    /// is sent, failed or canceled ([`CampaignItem::queued_count`]), from then on kept
    /// `LEDGER_TTL_DAYS` (`machine::campaign_rested`). Whether it did.
    async fn rest_if_done(&self, account: &str, id: &str, head: &CampaignItem) -> anyhow::Result<bool> {
        if head.queued_count() > 0 {
            return Ok(false);
        }
        // Leaving the index is when it is told (`campaign.completed` or `.canceled`):
        // once, however many workers see it done.
        let event = self.pending(account, || shared::webhook::campaign_event(head, now_ms())).await?;
        self.update_telling(account, &campaign::sort_key(id), &machine::campaign_rested(self.expiry()), event).await?;
        Ok(true)
    }

    /// The campaign heads in the waiting index, a page of one of its campaign shards
    /// (`shared::campaign::WAIT_SHARDS`, which hold heads alone) at a time, and where the next page starts.
    pub async fn campaign_heads_page(
        &self,
        shard: &str,
        start: Option<HashMap<String, AttributeValue>>,
    ) -> anyhow::Result<(Vec<(String, String)>, Option<HashMap<String, AttributeValue>>)> {
        let (waiting, next) = self.waiting_page(shard, start).await?;
        let heads = waiting.into_iter().filter_map(|w| if let Waiting::Campaign(account, id) = w { Some((account, id)) } else { None }).collect();
        Ok((heads, next))
    }

    /// Marks a campaign as put on the schedule.
    pub async fn campaign_scheduled(&self, c: &CampaignItem) -> anyhow::Result<()> {
        self.update_one(&c.campaign.creator_id, &campaign::sort_key(&c.campaign.id), &machine::campaign_scheduled()).await.map(drop)
    }

    /// Takes a campaign for its fan-out (`machine::start_fan_out`): `false` when its item
    /// is gone (the edge deleted it, its queue write having failed).
    pub async fn start_fan_out(&self, c: &CampaignItem) -> anyhow::Result<bool> {
        self.update_one(
            &c.campaign.creator_id,
            &campaign::sort_key(&c.campaign.id),
            &machine::start_fan_out(&shared::time::rfc3339_ms(now_ms()), &campaign::wait_shard(&c.campaign.id)),
        )
        .await
    }

    /// Writes the items of a campaign's messages, each counted into the account's
    /// backlog and the campaign's `fanned` in the same transaction, and only while the
    /// campaign is not canceled. An item already there (a redelivery, or a message
    /// canceled before the worker got to it) is left as it is. Returns how many were
    /// written, or `None` when the campaign was canceled first.
    pub async fn fan_out(&self, campaign: &CampaignItem) -> anyhow::Result<Option<usize>> {
        let mut changes = Vec::with_capacity(campaign.campaign.recipients.len());
        for m in campaign.campaign.messages() {
            let mut item = LedgerItem::queued(m.clone()).to_item();
            item["countedGen"] = ledger::n(0);
            let put = put_new(&self.table, &item)?;
            changes.push(Change {
                account: m.creator_id.clone(),
                campaign: m.campaign_id.clone(),
                op: Op::Put(put),
                counts: machine::FAN_OUT,
                pause: None,
                guarded: true,
                event: None,
                send: None,
            });
        }
        let applied = self.apply_by_account(changes).await?;
        Ok((applied.canceled_campaigns.is_empty()).then_some(applied.applied.len()))
    }

    /// Marks every waiting message of a canceled campaign `canceled` (one not waiting,
    /// claimed or done, is left as it is: a claimed one finishes or is given back and
    /// canceled when claimed again). Returns how many it canceled, and the positions of
    /// those still to be sent: claimed, or waiting after an attempt that may have been
    /// sent (no cancel reaches them; they stay on the schedule).
    pub async fn cancel_waiting(&self, campaign: &CampaignItem, at: &str) -> anyhow::Result<(usize, HashSet<usize>)> {
        let ttl = self.expiry();
        let changes = campaign.campaign.messages().map(|m| Change::write(&m, machine::cancel_waiting(m.generation, at, ttl))).collect();
        let applied = self.apply_by_account(changes).await?;
        let unfinished = |old: &Option<Value>| old.as_ref().is_some_and(|o| matches!(ledger::text(o, "status"), Some("queued" | "sending")));
        Ok((applied.applied.len(), applied.refused.iter().filter(|(_, old)| unfinished(old)).map(|(i, _)| *i).collect()))
    }

    /// Claims messages about to be handed to the gateway (`machine::claim`), each for
    /// `lease_ms` after its slot (Redis time, as `now_ms`); one whose holder's claim
    /// lapsed is taken over (`machine::take_over`: it may have been sent). A message
    /// whose campaign was canceled is canceled now. One verdict per message, in order.
    pub async fn claim(&self, messages: &[ToClaim<'_>], now_ms: u64, lease_ms: u64) -> anyhow::Result<Vec<Claim>> {
        let until = |c: &ToClaim| c.slot_ms + lease_ms;
        let claim = |c: &ToClaim| Change::write(c.message, machine::claim(c.message.generation, until(c), &self.owner));
        // One that may have been sent cannot be canceled any more: its campaign's cancel
        // does not hold it back.
        let changes = messages.iter().map(|c| if c.maybe_sent { claim(c) } else { claim(c).guarded() }).collect();
        let applied = self.apply_by_account(changes).await?;
        let mut verdicts = vec![Claim::Claimed; messages.len()];
        // Claimed again without their campaign's guard: taken over from a holder that did
        // not finish (`true`), or waiting after an attempt that may have reached the
        // gateway (`false`). Either may have been sent: no cancel holds it back.
        let mut again: Vec<(usize, bool)> = Vec::new();
        for (i, old) in &applied.refused {
            let m = messages[*i].message;
            if self.lapsed(old.as_ref(), m, now_ms) {
                again.push((*i, true));
                continue;
            }
            verdicts[*i] = match verdict(old.as_ref(), m, now_ms) {
                // Canceled with its campaign already, yet on the schedule again (a Redis
                // restored from an older snapshot): what else waits of that campaign
                // leaves it at once, not one refused claim at a time.
                Claim::Finished if m.campaign_id.as_ref().is_some_and(|c| applied.canceled_campaigns.contains(c)) => Claim::CampaignCanceled,
                other => other,
            };
        }
        if !applied.in_canceled_campaigns.is_empty() {
            let canceled: Vec<&QueueMessage> = applied.in_canceled_campaigns.iter().map(|&i| messages[i].message).collect();
            for (k, canceled) in self.cancel_messages(&canceled, now_ms).await?.into_iter().enumerate() {
                let i = applied.in_canceled_campaigns[k];
                let m = messages[i].message;
                match canceled {
                    None => verdicts[i] = Claim::CampaignCanceled,
                    Some(old) if self.lapsed(old.as_ref(), m, now_ms) => again.push((i, true)),
                    Some(old) if waiting_maybe_sent(old.as_ref(), m) => again.push((i, false)),
                    // Finished, its campaign known canceled: what else waits of it
                    // leaves the schedule at once (as above).
                    Some(old) => {
                        verdicts[i] = match verdict(old.as_ref(), m, now_ms) {
                            Claim::Finished => Claim::CampaignCanceled,
                            other => other,
                        }
                    }
                }
            }
        }
        // Refused for good, such a message would wait `queued` for ever, or be taken
        // again and again, each time spending its account's slot.
        if !again.is_empty() {
            let changes = again
                .iter()
                .map(|&(i, lapsed)| {
                    let c = &messages[i];
                    if lapsed {
                        Change::write(c.message, machine::take_over(c.message.generation, now_ms, until(c), &self.owner))
                    } else {
                        claim(c)
                    }
                })
                .collect();
            for (k, old) in self.apply_by_account(changes).await?.refused {
                let i = again[k].0;
                verdicts[i] = verdict(old.as_ref(), messages[i].message, now_ms);
            }
        }
        Ok(verdicts)
    }

    /// Whether the item (as it was) is this generation of `m`, claimed by another holder
    /// whose claim has expired (Redis time `now_ms`): it is taken over.
    fn lapsed(&self, old: Option<&Value>, m: &QueueMessage, now_ms: u64) -> bool {
        let Some(o) = old.filter(|_| being_sent(old, m)) else { return false };
        let expired = claimed_until(o).is_none_or(|until| until < now_ms);
        expired && ledger::text(o, "claimedBy") != Some(self.owner.as_str())
    }

    /// Cancels waiting messages now (their campaign was canceled): each is taken out of
    /// the backlog if it was counted into it, as `DELETE /{id}` does. For each, `None`
    /// when it was canceled, else the item as it was (being sent, or finished).
    async fn cancel_messages(&self, messages: &[&QueueMessage], now_ms: u64) -> anyhow::Result<Vec<Option<Option<Value>>>> {
        let (at, ttl) = (shared::time::rfc3339_ms(now_ms), self.expiry());
        let cancel = |which: &[usize], counted: bool| {
            let changes = which.iter().map(|&i| Change::write(messages[i], machine::cancel(messages[i].generation, counted, &at, ttl))).collect();
            self.apply_by_account(changes)
        };
        let mut result: Vec<Option<Option<Value>>> = vec![None; messages.len()];
        let all: Vec<usize> = (0..messages.len()).collect();
        // As counted into the backlog first; one not counted yet (a rebuild put it back
        // before its queue copy was counted) again, as such.
        let mut uncounted = Vec::new();
        for (i, old) in cancel(&all, true).await?.refused {
            let waiting_uncounted = old
                .as_ref()
                .is_some_and(|o| ledger::text(o, "status") == Some("queued") && ledger::number(o, "countedGen") < Some(u64::from(messages[i].generation)));
            if waiting_uncounted {
                uncounted.push(i);
            } else {
                result[i] = Some(old);
            }
        }
        if !uncounted.is_empty() {
            for (k, old) in cancel(&uncounted, false).await?.refused {
                result[uncounted[k]] = Some(old);
            }
        }
        Ok(result)
    }

    /// Records outcomes: each item's transition and the summary counters it moves, in
    /// one transaction per account, so that the counters change only with transitions
    /// that really happened. A condition that fails means the item moved on (a late
    /// duplicate, or a newer generation): that record is dropped and the others go
    /// through. Safe to call again with the same records after an error: what was
    /// applied is refused by its condition the second time, so it is counted once.
    pub async fn record(&self, records: &[Record]) -> anyhow::Result<usize> {
        /// The webhook event an outcome tells: its kind, time and error.
        fn told(r: &Record) -> Option<(&'static str, &str, Option<&str>)> {
            match &r.outcome {
                Outcome::Sent { at, .. } => Some(("message.sent", at.as_str(), None)),
                Outcome::Failed { at, error } => Some(("message.failed", at.as_str(), Some(error.as_str()))),
                _ => None,
            }
        }
        /// A 429 holding its account long enough to be told (`account.paused`).
        fn long_wait(r: &Record) -> bool {
            matches!(r.outcome, Outcome::RateLimited { until_ms, .. } if until_ms.saturating_sub(now_ms()) >= shared::webhook::LONG_RATE_LIMIT_MS)
        }
        let ttl = self.expiry();
        let mut changes = Vec::with_capacity(records.len());
        let endpoints = match &self.events {
            Some(sink) => {
                let accounts: Vec<&str> = records.iter().filter(|r| told(r).is_some() || long_wait(r)).map(|r| r.message.creator_id.as_str()).collect();
                sink.endpoints(&accounts, |a| async move { self.endpoints(&a, false).await }).await?
            }
            None => HashMap::new(),
        };
        for r in records {
            let m = &r.message;
            let hooked = endpoints.get(&m.creator_id);
            let mut event = told(r).and_then(|(kind, at, error)| {
                shared::webhook::Pending::new(&m.creator_id, shared::webhook::message_event(m, kind, at, r.attempts, error), hooked?)
            });
            let mut pause = None;
            let write = match &r.outcome {
                Outcome::Sent { at, gateway_id } => machine::record_sent(m.generation, at, r.attempts, gateway_id.as_deref(), ttl),
                Outcome::Retrying { error, maybe_sent } => machine::record_retrying(m.generation, r.attempts, error, *maybe_sent),
                Outcome::RateLimited { error, until_ms } => {
                    pause = Some(*until_ms);
                    // A long wait is told; the event's id is this outcome's (recorded
                    // twice, it is one event), so several at once may tell it each.
                    if long_wait(r) {
                        // The 429's own time (its `until`): a 429 uses no attempt, so the
                        // message's next long 429 is another event, the same one recorded
                        // twice is not.
                        let answer = format!("{}.{}.{until_ms}", m.id, m.generation);
                        let cause = shared::webhook::PauseCause::RateLimited { until_ms: *until_ms, answer: &answer };
                        let told = shared::webhook::account_event(&m.creator_id, true, now_ms(), cause);
                        event = hooked.and_then(|h| shared::webhook::Pending::new(&m.creator_id, told, h));
                    }
                    machine::record_retrying(m.generation, r.attempts, error, false)
                }
                Outcome::Failed { at, error } => machine::record_failed(&m.id, m.generation, at, error, r.attempts, ttl),
                Outcome::Released | Outcome::Held { .. } => machine::unclaim(m.generation, &self.owner),
            };
            // A send that reached the gateway (sent, or failed for good) is kept among
            // its account's last sends, for the window meter.
            let send = match (&r.outcome, r.went) {
                (Outcome::Sent { .. } | Outcome::Failed { .. }, Some((slot_ms, at_ms))) => Some((self.rate.recent_send_key(slot_ms), at_ms)),
                _ => None,
            };
            changes.push(Change { pause, event, send, ..Change::write(m, write) });
        }
        Ok(self.apply_by_account(changes).await?.applied.len())
    }

    /// Applies account controls to their summaries (`machine::set_hold`): returns those
    /// not overtaken by a newer control, which the schedule then applies.
    pub async fn apply_controls(&self, controls: &[AccountControl]) -> anyhow::Result<Vec<AccountControl>> {
        let writes = controls.iter().map(|c| async move {
            let paused = c.control == Hold::Pause;
            let w = machine::set_hold(paused, c.at_ms, &c.creator_id, None);
            let event = self.pending(&c.creator_id, || shared::webhook::account_event(&c.creator_id, paused, c.at_ms, PauseCause::User)).await?;
            Ok::<_, anyhow::Error>(self.update_telling(&c.creator_id, SUMMARY_SK, &w, event).await?.then(|| c.clone()))
        });
        Ok(join_all(writes).await.into_iter().collect::<anyhow::Result<Vec<_>>>()?.into_iter().flatten().collect())
    }

    /// Holds an account the worker found it cannot send for (`machine::set_hold` with
    /// its reason), as a pause made at `at_ms`: whether it applied (a newer control,
    /// such as the user's resume, wins).
    pub async fn hold(&self, account: &str, at_ms: u64, reason: &str) -> anyhow::Result<bool> {
        let event = self.pending(account, || shared::webhook::account_event(account, true, at_ms, PauseCause::CredentialsRefused(reason))).await?;
        self.update_telling(account, SUMMARY_SK, &machine::set_hold(true, at_ms, account, Some(reason)), event).await
    }

    /// An account's summary leaves the waiting index once it holds nothing any more.
    pub async fn account_rested(&self, account: &str) -> anyhow::Result<()> {
        self.update_one(account, SUMMARY_SK, &machine::account_rested(now_ms())).await.map(drop)
    }

    /// The event `tell` makes, for those of the account's endpoints that asked for its
    /// kind; `None` (and nothing asked of the ledger) for an account without endpoints.
    async fn pending(&self, account: &str, tell: impl FnOnce() -> shared::webhook::Event) -> anyhow::Result<Option<shared::webhook::Pending>> {
        let Some(sink) = &self.events else { return Ok(None) };
        let endpoints = sink.endpoints(&[account], |a| async move { self.endpoints(&a, false).await }).await?;
        Ok(endpoints.get(account).and_then(|e| shared::webhook::Pending::new(account, tell(), e)))
    }

    /// One transition of one item with the event that tells it, in one transaction
    /// (none without the other); without an event, a plain conditional write. Whether
    /// it applied: the event found written already means this very transition was
    /// applied and told before (a control applied twice), which counts as applied.
    async fn update_telling(&self, creator: &str, sort_key: &str, w: &Write, event: Option<shared::webhook::Pending>) -> anyhow::Result<bool> {
        let (Some(pending), Some(sink)) = (event, &self.events) else { return self.update_one(creator, sort_key, w).await };
        let now = now_ms();
        let items = vec![
            TransactWriteItem::builder().update(update_of(&self.table, key_of(creator, sort_key), w)?).build(),
            TransactWriteItem::builder().put(put_new(&self.table, &pending.to_item(now, &self.owner, now + sink.lease_ms))?).build(),
        ];
        for conflicts in 1..=10u64 {
            self.count(1);
            match self.client.transact_write_items().set_transact_items(Some(items.clone())).return_consumed_capacity(METERED).send().await {
                Ok(_) => {
                    sink.written(std::iter::once(pending));
                    return Ok(true);
                }
                Err(e) => {
                    let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() else { return Err(e.into()) };
                    let refused = |k: usize| c.cancellation_reasons().get(k).and_then(|r| r.code()) == Some("ConditionalCheckFailed");
                    match (refused(0), refused(1)) {
                        (true, _) => return Ok(false),
                        (false, true) => return Ok(true),
                        // Another transaction on the item (an outcome's, on the summary) got
                        // in the way: again, shortly, as `apply_with_summary` does.
                        _ => conflict_pause(conflicts).await,
                    }
                }
            }
        }
        anyhow::bail!("ledger transactions kept conflicting for account {creator}")
    }

    /// One transition of one item, outside a transaction: whether it applied (its
    /// condition held).
    async fn update_one(&self, creator: &str, sort_key: &str, w: &Write) -> anyhow::Result<bool> {
        Ok(self.write_one(&Op::Update(w.clone(), key_of(creator, sort_key))).await?.is_none())
    }

    /// One conditional write, outside a transaction: `None` when it applied, else the
    /// item as it was when its condition refused it.
    async fn write_one(&self, op: &Op) -> anyhow::Result<Option<Option<Value>>> {
        self.count(1);
        let refused = |item: Option<&HashMap<String, AttributeValue>>| Ok(Some(item.map(from_attrs)));
        match op {
            Op::Update(w, key) => {
                let mut u = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key.clone()))
                    .update_expression(&w.update)
                    .set_condition_expression((!w.condition.is_empty()).then(|| w.condition.to_owned()))
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                    .return_consumed_capacity(METERED);
                for (k, v) in &w.names {
                    u = u.expression_attribute_names(*k, *v);
                }
                for (k, v) in &w.values {
                    u = u.expression_attribute_values(*k, to_attr(v));
                }
                match u.send().await {
                    Ok(_) => Ok(None),
                    Err(e) => match e.as_service_error() {
                        Some(UpdateItemError::ConditionalCheckFailedException(f)) => refused(f.item()),
                        _ => Err(e.into()),
                    },
                }
            }
            Op::Put(p) => {
                let answer = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(p.item().clone()))
                    .set_condition_expression(p.condition_expression().map(str::to_owned))
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                    .return_consumed_capacity(METERED)
                    .send()
                    .await;
                match answer {
                    Ok(_) => Ok(None),
                    Err(e) => match e.as_service_error() {
                        Some(PutItemError::ConditionalCheckFailedException(f)) => refused(f.item()),
                        _ => Err(e.into()),
                    },
                }
            }
        }
    }

    /// Applies item changes in one transaction per account, all accounts at once:
    /// transactions of different accounts never touch the same summary item, so they
    /// do not conflict. A guarded change of a campaign's message applies only while it is not
    /// canceled.
    async fn apply_by_account(&self, changes: Vec<Change>) -> anyhow::Result<Applied> {
        let mut all = Applied::default();
        // A guard alone (a claim: no campaign counter moves with it) is a read of its
        // campaign's head, not a condition check in a transaction: the check would cost two write
        // units and make the claim a transaction billed twice (docs/design.md, the ledger).
        let canceled = self.canceled_campaigns(changes.iter().filter(|c| c.guard_alone())).await?;
        let mut by_account: HashMap<String, Vec<(usize, Change)>> = HashMap::new();
        for (i, mut change) in changes.into_iter().enumerate() {
            if change.guard_alone() {
                if change.campaign.as_ref().is_some_and(|id| canceled.contains(id)) {
                    all.in_canceled_campaigns.push(i);
                    continue;
                }
                change.guarded = false;
            }
            by_account.entry(change.account.clone()).or_default().push((i, change));
        }
        all.canceled_campaigns.extend(canceled);
        let applied = join_all(by_account.into_iter().map(|(account, changes)| self.apply_with_summary(account, changes))).await;
        for a in applied {
            let a = a?;
            all.applied.extend(a.applied);
            all.refused.extend(a.refused);
            all.in_canceled_campaigns.extend(a.in_canceled_campaigns);
            all.canceled_campaigns.extend(a.canceled_campaigns);
        }
        all.applied.sort_unstable();
        Ok(all)
    }

    /// Applies item changes of one account together with the change of its summary
    /// counters and of each campaign's they add up to, as transactions of at most 100
    /// writes. An item whose condition fails is dropped (with its counts) and the rest
    /// applied again; so are all of a campaign's when its guard fails (it was
    /// canceled); a transaction that conflicts with another is tried again.
    async fn apply_with_summary(&self, account: String, changes: Vec<(usize, Change)>) -> anyhow::Result<Applied> {
        let mut applied = Applied::default();
        let mut changes = changes.into_iter().peekable();
        while changes.peek().is_some() {
            // Room for the summary and each campaign's counters.
            let mut live: Vec<(usize, Change)> = Vec::new();
            let mut campaigns: Vec<String> = Vec::new();
            let mut events = 0;
            while let Some((_, next)) = changes.peek() {
                let new_campaign = next.campaign.as_ref().filter(|c| !campaigns.contains(c));
                let event = usize::from(next.event.is_some());
                if live.len() + events + event + campaigns.len() + usize::from(new_campaign.is_some()) + 1 >= MAX_TRANSACTION_WRITES {
                    break;
                }
                events += event;
                if let Some(c) = new_campaign {
                    campaigns.push(c.clone());
                }
                live.extend(changes.next());
            }
            if live.iter().all(|(_, c)| c.stands_alone()) {
                // Nothing moves with them: each is a conditional write of its own.
                self.apply_each(live, &mut applied).await?;
                continue;
            }
            let mut conflicts = 0u32;
            while !live.is_empty() {
                let total = live.iter().fold(Counts::default(), |acc, (_, c)| acc.plus(&c.counts));
                let pause = live.iter().filter_map(|(_, c)| c.pause).max();
                let mut items: Vec<TransactWriteItem> = live.iter().map(|(_, c)| c.transact_item(&self.table)).collect::<anyhow::Result<_>>()?;
                let counters_at = items.len();
                let mut counted: Vec<&str> = Vec::new();
                for (_, c) in &live {
                    let Some(id) = c.campaign.as_deref().filter(|id| !counted.contains(id)) else { continue };
                    counted.push(id);
                    let theirs = || live.iter().filter(|(_, o)| o.campaign.as_deref() == Some(id));
                    let counts = theirs().fold(Counts::default(), |acc, (_, o)| acc.plus(&o.counts));
                    let guard = theirs().any(|(_, o)| o.guarded);
                    items.extend(self.campaign_update(&account, id, &counts, guard)?);
                }
                let sends: Vec<(u64, u64)> = live.iter().filter_map(|(_, c)| c.send).collect();
                if let Some(summary) = self.summary_update(&account, &total, pause, &sends)? {
                    items.push(TransactWriteItem::builder().update(summary).build());
                }
                // Each outcome's webhook event with it (`crate::outbox`), leased to this
                // worker, which delivers it once the transaction is in.
                let events_at = items.len();
                let mut with_event: Vec<usize> = Vec::new();
                let now = now_ms();
                let lease_ms = self.events.as_ref().map_or(0, |sink| sink.lease_ms);
                for (k, (_, c)) in live.iter().enumerate() {
                    if let Some(event) = &c.event {
                        with_event.push(k);
                        items.push(TransactWriteItem::builder().put(put_new(&self.table, &event.to_item(now, &self.owner, now + lease_ms))?).build());
                    }
                }
                self.count(1);
                match self.client.transact_write_items().set_transact_items(Some(items)).return_consumed_capacity(METERED).send().await {
                    Ok(_) => {
                        applied.applied.extend(live.iter().map(|(i, _)| *i));
                        if let Some(sink) = &self.events {
                            sink.written(live.into_iter().filter_map(|(_, c)| c.event));
                        }
                        break;
                    }
                    Err(e) => {
                        let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() else { return Err(e.into()) };
                        let reasons = c.cancellation_reasons();
                        // An event refused (written already) stands for its outcome,
                        // recorded already: both are dropped.
                        let refused: Vec<usize> = reasons
                            .iter()
                            .enumerate()
                            .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                            .map(|(i, _)| if i >= events_at { with_event.get(i - events_at).copied().unwrap_or(i) } else { i })
                            .collect();
                        if refused.is_empty() {
                            // Nothing was refused: another transaction on the summary
                            // item got in the way (or DynamoDB throttled). Again, shortly.
                            conflicts += 1;
                            anyhow::ensure!(conflicts <= 10, "ledger transactions kept conflicting for account {account}");
                            conflict_pause(u64::from(conflicts)).await;
                        }
                        // A refused campaign guard: that campaign was canceled.
                        let canceled: Vec<String> = refused
                            .iter()
                            .filter(|&&i| i >= counters_at && i - counters_at < counted.len())
                            .map(|&i| counted[i - counters_at].to_owned())
                            .collect();
                        let mut kept = Vec::with_capacity(live.len());
                        for (k, (i, c)) in live.into_iter().enumerate() {
                            if refused.contains(&k) {
                                applied.refused.push((i, reasons.get(k).and_then(|r| r.item()).map(from_attrs)));
                            } else if c.guarded && c.campaign.as_ref().is_some_and(|id| canceled.contains(id)) {
                                applied.in_canceled_campaigns.push(i);
                            } else {
                                kept.push((i, c));
                            }
                        }
                        live = kept;
                        applied.canceled_campaigns.extend(canceled);
                    }
                }
            }
        }
        Ok(applied)
    }

    /// Which of the campaigns of these guarded changes are canceled: each head read once,
    /// consistently (a cancel answered before the read is seen), all at once.
    async fn canceled_campaigns<'c>(&self, guarded: impl Iterator<Item = &'c Change>) -> anyhow::Result<HashSet<String>> {
        let mut campaigns: Vec<(&str, &str)> = guarded.filter_map(|c| Some((c.account.as_str(), c.campaign.as_deref()?))).collect();
        campaigns.sort_unstable();
        campaigns.dedup();
        let heads = join_all(campaigns.iter().map(|(account, id)| async move { self.get(&campaign::item_key(account, id)).await })).await;
        let mut canceled = HashSet::new();
        for ((_, id), head) in campaigns.iter().zip(heads) {
            if head?.as_ref().and_then(CampaignItem::from_item).is_some_and(|c| c.canceled_at.is_some()) {
                canceled.insert((*id).to_owned());
            }
        }
        Ok(canceled)
    }

    /// Applies changes that move no counters and need no guard, each as a conditional
    /// write of its own, all at once: a transaction would bill each write twice for an
    /// atomicity nothing needs. One refused is recorded with the item as it was.
    async fn apply_each(&self, changes: Vec<(usize, Change)>, applied: &mut Applied) -> anyhow::Result<()> {
        let answers = join_all(changes.iter().map(|(_, c)| self.write_one(&c.op))).await;
        for ((i, _), answer) in changes.iter().zip(answers) {
            match answer? {
                None => applied.applied.push(*i),
                Some(old) => applied.refused.push((*i, old)),
            }
        }
        Ok(())
    }

    /// The change of a campaign's counters, guarded (applied only while the campaign is
    /// not canceled) when asked. A guard with no counter has been read before
    /// ([`Change::guard_alone`]): nothing to write.
    fn campaign_update(&self, account: &str, id: &str, counts: &Counts, guard: bool) -> anyhow::Result<Option<TransactWriteItem>> {
        let key = item_map(&campaign::item_key(account, id));
        if !counts.moves_campaign() {
            return Ok(None);
        }
        let (update, values) = counts.campaign_update();
        let mut u = Update::builder().table_name(&self.table).set_key(Some(key)).update_expression(update);
        for (k, v) in values {
            u = u.expression_attribute_values(k, to_attr(&v));
        }
        if guard {
            u = u.condition_expression(machine::CAMPAIGN_NOT_CANCELED);
        }
        Ok(Some(TransactWriteItem::builder().update(u.build()?).build()))
    }

    /// The account's summary update: its counters, and a 429's pause (kept where a
    /// rebuild of the schedule finds it).
    fn summary_update(&self, account: &str, counts: &Counts, pause_until_ms: Option<u64>, sends: &[(u64, u64)]) -> anyhow::Result<Option<Update>> {
        if !counts.moves_summary() && pause_until_ms.is_none() && sends.is_empty() {
            return Ok(None);
        }
        let (mut update, values) = counts.summary_update();
        let mut values: Vec<(String, Value)> = values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let mut set = |(sets, more): (String, Vec<(String, Value)>)| {
            if !sets.is_empty() {
                update.push_str(if update.contains(" SET ") { ", " } else { " SET " });
                update.push_str(&sets);
                values.extend(more);
            }
        };
        if let Some(until) = pause_until_ms {
            let (sets, more) = machine::rate_limited(account, until);
            set((sets, more.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
        }
        set(machine::recorded_sends(sends));
        let mut u = Update::builder().table_name(&self.table).set_key(Some(key_of(account, SUMMARY_SK))).update_expression(update);
        for (k, v) in values {
            u = u.expression_attribute_values(k, to_attr(&v));
        }
        Ok(Some(u.build()?))
    }
}

/// A pause before a transaction is tried again after conflicting with another on the
/// same item (a summary every outcome of the account updates): longer each time, and
/// jittered, so that two workers do not meet again.
async fn conflict_pause(conflicts: u64) {
    tokio::time::sleep(std::time::Duration::from_millis(rand::random_range(10..50) * conflicts)).await;
}

/// What a refused claim means, from the item as it was.
fn verdict(old: Option<&Value>, m: &QueueMessage, now_ms: u64) -> Claim {
    if being_sent(old, m) {
        let until = old.and_then(claimed_until).unwrap_or(now_ms);
        return Claim::Held { until_ms: until };
    }
    // Waiting again meanwhile (a take-over refused because its holder's late outcome or
    // release put it back): not finished; looked at again shortly.
    if at_generation(old, m, MessageStatus::Queued) {
        return Claim::Held { until_ms: now_ms };
    }
    Claim::Finished
}

/// Whether the item (as it was) is this generation of `m`, claimed (`sending`).
fn being_sent(old: Option<&Value>, m: &QueueMessage) -> bool {
    at_generation(old, m, MessageStatus::Sending)
}

/// Whether the item (as it was) is this generation of `m`, waiting after an attempt
/// that may have reached the gateway (`machine::MAYBE_SENT`): out of a cancel's reach.
fn waiting_maybe_sent(old: Option<&Value>, m: &QueueMessage) -> bool {
    old.is_some_and(|o| o.get(machine::MAYBE_SENT).is_some()) && at_generation(old, m, MessageStatus::Queued)
}

/// Whether the item (as it was) is this generation of `m`, in `status`.
fn at_generation(old: Option<&Value>, m: &QueueMessage, status: MessageStatus) -> bool {
    old.and_then(LedgerItem::from_item).is_some_and(|i| i.status == status && i.message.generation == m.generation)
}

/// When the item's claim ends (Redis time, ms), if it has one.
fn claimed_until(item: &Value) -> Option<u64> {
    ledger::number(item, "claimedUntil")
}

/// DynamoDB's limit of writes in one transaction.
const MAX_TRANSACTION_WRITES: usize = 100;

/// A write of one item.
enum Op {
    Update(Write, HashMap<String, AttributeValue>),
    Put(Put),
}

/// One item's change, and whose counters it moves.
struct Change {
    account: String,
    campaign: Option<String>,
    op: Op,
    counts: Counts,
    /// A 429's pause of the account, until (ms).
    pause: Option<u64>,
    /// Applies only while its campaign is not canceled (the campaign's guard).
    guarded: bool,
    /// The webhook event it tells, written with it.
    event: Option<shared::webhook::Pending>,
    /// The send it records, for its account's last sends: its key and time (ms).
    send: Option<(u64, u64)>,
}

impl Change {
    fn write(m: &QueueMessage, w: Write) -> Self {
        let counts = w.counts;
        Change {
            account: m.creator_id.clone(),
            campaign: m.campaign_id.clone(),
            op: Op::Update(w, key_of(&m.creator_id, &m.id)),
            counts,
            pause: None,
            guarded: false,
            event: None,
            send: None,
        }
    }

    /// Applies only while its campaign is not canceled; a single message has no guard
    /// (a one-item transaction would bill its write twice for nothing).
    fn guarded(self) -> Self {
        Change { guarded: self.campaign.is_some(), ..self }
    }

    /// Whether it is guarded and moves none of its campaign's counters (a claim): its
    /// guard is a read of the campaign's head before it, not a write beside it.
    fn guard_alone(&self) -> bool {
        self.guarded && !self.counts.moves_campaign()
    }

    /// Whether it needs no other write with it: no counters, no guard, no pause.
    fn stands_alone(&self) -> bool {
        !self.guarded && !self.counts.moves_summary() && !self.counts.moves_campaign() && self.pause.is_none() && self.event.is_none() && self.send.is_none()
    }

    fn transact_item(&self, table: &str) -> anyhow::Result<TransactWriteItem> {
        Ok(match &self.op {
            Op::Update(w, key) => TransactWriteItem::builder().update(update_of(table, key.clone(), w)?).build(),
            Op::Put(p) => TransactWriteItem::builder().put(p.clone()).build(),
        })
    }
}

/// What a set of changes did: the positions of those applied, those refused by their
/// condition (with the item as it was), those dropped because their campaign's guard
/// refused them, and those campaigns.
#[derive(Debug, Default)]
struct Applied {
    applied: Vec<usize>,
    refused: Vec<(usize, Option<Value>)>,
    in_canceled_campaigns: Vec<usize>,
    canceled_campaigns: Vec<String>,
}
