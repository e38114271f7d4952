//! The ledger (DESIGN §5) as the worker writes it: the item of a message it takes from
//! SQS (when the edge's write did not land), and each outcome, with conditions so that
//! a late duplicate can never turn `sent` into anything else. Layout: `shared::ledger`.
//!
//! The per-account summary counters move only in the same transaction as the item
//! transition they count (`queued` + 1 when a message is first scheduled, - 1 and
//! `sent` or `failed` + 1 at its outcome), so they cannot drift from the items.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, KeysAndAttributes, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use futures::future::join_all;
use serde_json::Value;
use shared::campaign::{self, CampaignItem};
use shared::ledger::{self, LedgerItem, MessageStatus, PK, SK, SUMMARY_SK};
use shared::message::QueueMessage;

/// A finished attempt to record.
#[derive(Debug, Clone)]
pub enum Outcome {
    Sent {
        at: String,
    },
    /// Will be tried again; `attempts` so far.
    Retrying {
        error: String,
    },
    Failed {
        at: String,
        error: String,
    },
}

/// One message's outcome.
#[derive(Debug, Clone)]
pub struct Record {
    pub message: QueueMessage,
    pub attempts: u32,
    pub outcome: Outcome,
}

#[derive(Clone)]
pub struct Ledger {
    client: Client,
    table: String,
    ttl_days: u64,
    /// DynamoDB calls made (for `/stats` and the ingest-cost benchmark).
    calls: Arc<AtomicU64>,
}

/// DynamoDB JSON (as `shared::ledger` writes it) to SDK attribute values.
pub fn to_attr(v: &Value) -> AttributeValue {
    match v {
        Value::Object(m) if m.contains_key("S") => AttributeValue::S(m["S"].as_str().unwrap_or_default().to_owned()),
        Value::Object(m) if m.contains_key("N") => AttributeValue::N(m["N"].as_str().unwrap_or_default().to_owned()),
        Value::Object(m) if m.contains_key("L") => AttributeValue::L(m["L"].as_array().map(|l| l.iter().map(to_attr).collect()).unwrap_or_default()),
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
        _ => Value::Null,
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

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl Ledger {
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table, ttl_days: ledger::DEFAULT_TTL_DAYS, calls: Arc::default() }
    }

    /// DynamoDB calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn count(&self, n: usize) {
        self.calls.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Writes the items of messages the edge accepted but whose item is missing (its
    /// write failed): one `BatchGetItem` for up to 100, then a conditional put of each
    /// missing one. Returns the number written, and the positions of the messages the
    /// ledger shows finished (sent, failed or canceled at this generation or a later
    /// one): late duplicate deliveries, which must not be scheduled again.
    pub async fn ensure_items(&self, messages: &[QueueMessage]) -> anyhow::Result<(usize, Vec<usize>)> {
        let mut written = 0;
        let mut finished = Vec::new();
        for (chunk_at, chunk) in messages.chunks(100).enumerate() {
            let mut keys = KeysAndAttributes::builder()
                .projection_expression("#pk, #sk, #st, generation")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_names("#st", "status")
                .consistent_read(true);
            for m in chunk {
                keys = keys.keys(HashMap::from([(PK.to_owned(), s(&m.creator_id)), (SK.to_owned(), s(&m.id))]));
            }
            let mut request = HashMap::from([(self.table.clone(), keys.build()?)]);
            let mut present = HashMap::new();
            for _ in 0..5 {
                self.count(1);
                let answer = self.client.batch_get_item().set_request_items(Some(request)).send().await?;
                for item in answer.responses().and_then(|r| r.get(&self.table)).into_iter().flatten() {
                    if let (Some(AttributeValue::S(c)), Some(AttributeValue::S(id))) = (item.get(PK), item.get(SK)) {
                        let status = item.get("status").and_then(|v| v.as_s().ok()).and_then(|s| MessageStatus::parse(s));
                        let generation = item.get("generation").and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
                        present.insert((c.clone(), id.clone()), (status, generation));
                    }
                }
                match answer.unprocessed_keys().filter(|u| !u.is_empty()) {
                    Some(u) => request = u.clone(),
                    None => break,
                }
            }
            for (i, m) in chunk.iter().enumerate() {
                let done = matches!(present.get(&(m.creator_id.clone(), m.id.clone())), Some((Some(MessageStatus::Sent | MessageStatus::Failed | MessageStatus::Canceled), g)) if *g >= m.generation);
                if done {
                    finished.push(chunk_at * 100 + i);
                }
            }
            let missing: Vec<&QueueMessage> = chunk.iter().filter(|m| !present.contains_key(&(m.creator_id.clone(), m.id.clone()))).collect();
            self.count(missing.len());
            let expires = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + self.ttl_days * 86_400;
            let puts = missing.iter().map(|m| {
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item_map(&LedgerItem::queued((*m).clone(), expires).to_item())))
                    .condition_expression("attribute_not_exists(messageId)")
                    .send()
            });
            for r in join_all(puts).await {
                match r {
                    Ok(_) => written += 1,
                    Err(e) if is_condition_failure(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok((written, finished))
    }

    /// Whether the table answers (a read of a key that never exists).
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.count(1);
        self.client.get_item().table_name(&self.table).key(PK, s("#ping")).key(SK, s(SUMMARY_SK)).send().await?;
        Ok(())
    }

    /// Counts messages into their accounts' backlog (the summary's `queued`), once per
    /// message and generation: each item is marked `countedGen` in the same
    /// transaction that adds to the counter, so a redelivery, a retry of this call or
    /// a duplicate after a lease expiry never counts twice. Returns how many counted.
    pub async fn count_scheduled(&self, messages: &[QueueMessage]) -> anyhow::Result<usize> {
        let mut changes = Vec::with_capacity(messages.len());
        for m in messages {
            let update = self
                .item_update(m)
                .update_expression("SET countedGen = :gen")
                .condition_expression("attribute_exists(messageId) AND (attribute_not_exists(countedGen) OR countedGen < :gen)")
                .build()?;
            changes.push(Change::new(m, update, Delta { queued: 1, ..Delta::default() }));
        }
        Ok(self.apply_by_account(changes, false).await?.len())
    }

    /// A campaign's item (consistent read); `None` when it does not exist (the edge
    /// removed it because it could not be queued, or it expired).
    pub async fn campaign(&self, creator: &str, id: &str) -> anyhow::Result<Option<CampaignItem>> {
        self.count(1);
        let key = campaign::item_key(creator, id);
        let answer = self.client.get_item().table_name(&self.table).set_key(Some(item_map(&key))).consistent_read(true).send().await?;
        Ok(answer.item().map(from_attrs).as_ref().and_then(CampaignItem::from_item))
    }

    /// Whether the ledger knows the schedule named `prefix` (it has run before): a
    /// schedule it does not know is new, not lost, and is recorded now.
    pub async fn schedule_known(&self, prefix: &str) -> anyhow::Result<bool> {
        self.count(1);
        let sort_key = format!("{}{prefix}", ledger::SCHEDULE_SK_PREFIX);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, s(ledger::SCHEDULE_PK))
            .item(SK, s(sort_key))
            .item("createdAt", s(shared::time::rfc3339_ms(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64)))
            .condition_expression("attribute_not_exists(messageId)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(false),
            Err(e) if is_condition_failure(&e) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// A page of the waiting index's `shard`: the messages waiting there (queued,
    /// scheduled, being sent or between attempts) with the attempts they have made, and
    /// where the next page starts.
    pub async fn waiting_page(
        &self,
        shard: &str,
        start: Option<HashMap<String, AttributeValue>>,
    ) -> anyhow::Result<(Vec<(QueueMessage, u32)>, Option<HashMap<String, AttributeValue>>)> {
        self.count(1);
        let answer = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(ledger::WAITING_INDEX)
            .key_condition_expression("#ws = :ws")
            .expression_attribute_names("#ws", ledger::WAIT_SHARD)
            .expression_attribute_values(":ws", s(shard))
            .set_exclusive_start_key(start)
            .send()
            .await?;
        let messages = answer.items().iter().filter_map(|i| LedgerItem::from_item(&from_attrs(i))).map(|i| (i.message, i.attempts)).collect();
        Ok((messages, answer.last_evaluated_key().cloned()))
    }

    /// Marks a campaign as put on the schedule.
    pub async fn campaign_scheduled(&self, c: &CampaignItem) -> anyhow::Result<()> {
        self.count(1);
        let key = item_map(&campaign::item_key(&c.campaign.creator_id, &c.campaign.id));
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET scheduled = :t")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .send()
            .await?;
        Ok(())
    }

    /// Writes the items of a campaign's messages, each counted into the account's
    /// backlog and the campaign's `fanned` in the same transaction, and only while the
    /// campaign is not canceled. An item already there (a redelivery, or a message
    /// canceled before the worker got to it) is left as it is. Returns how many were
    /// written, or `None` when the campaign was canceled first.
    pub async fn fan_out(&self, campaign: &CampaignItem) -> anyhow::Result<Option<usize>> {
        let expires = campaign.expires_at;
        let messages: Vec<QueueMessage> = campaign.campaign.messages().collect();
        let mut changes = Vec::with_capacity(messages.len());
        for m in &messages {
            let mut item = LedgerItem::queued(m.clone(), expires).to_item();
            item["countedGen"] = ledger::n(0);
            let obj = item.as_object().expect("an item is an object");
            let mut update = Update::builder().table_name(&self.table).key(PK, s(&m.creator_id)).key(SK, s(&m.id));
            let mut sets = Vec::new();
            for (i, (name, value)) in obj.iter().filter(|(k, _)| *k != PK && *k != SK).enumerate() {
                sets.push(format!("#a{i} = :a{i}"));
                update = update.expression_attribute_names(format!("#a{i}"), name).expression_attribute_values(format!(":a{i}"), to_attr(value));
            }
            let update = update.update_expression(format!("SET {}", sets.join(", "))).condition_expression("attribute_not_exists(messageId)").build()?;
            changes.push(Change::new(m, update, Delta { queued: 1, fanned: 1, ..Delta::default() }));
        }
        let applied = self.apply_by_account(changes, true).await?;
        Ok((applied.canceled_campaigns.is_empty()).then_some(applied.len()))
    }

    /// Marks every waiting message of a canceled campaign `canceled` (one not waiting,
    /// claimed or done, is left as it is), each counted out of the account's backlog and
    /// into the campaign's `canceled` in the same transaction. Returns how many.
    pub async fn cancel_waiting(&self, campaign: &CampaignItem, at: &str) -> anyhow::Result<usize> {
        let mut changes = Vec::with_capacity(campaign.campaign.recipients.len());
        let messages: Vec<QueueMessage> = campaign.campaign.messages().collect();
        for m in &messages {
            let update = self
                .item_update(m)
                .update_expression("SET #st = :canceled, canceledAt = :at REMOVE waitShard")
                .condition_expression("#st = :queued AND generation = :gen")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":queued", s("queued"))
                .expression_attribute_values(":canceled", s("canceled"))
                .expression_attribute_values(":at", s(at))
                .build()?;
            changes.push(Change::new(m, update, Delta { queued: -1, canceled: 1, ..Delta::default() }));
        }
        Ok(self.apply_by_account(changes, false).await?.len())
    }

    /// Claims messages about to be handed to the gateway (`queued → sending`), a
    /// campaign's only while it is not canceled. Returns the positions (in `messages`)
    /// of those claimed: one not claimed was canceled (or its campaign was), or is done
    /// already (its outcome recorded by a worker that died before the schedule heard
    /// of it), and must not be sent. A cancel needs the item `queued`, so a message is
    /// never both sent and canceled.
    pub async fn claim(&self, messages: &[&QueueMessage]) -> anyhow::Result<Vec<usize>> {
        let mut changes = Vec::with_capacity(messages.len());
        for m in messages {
            let update = self
                .item_update(m)
                .update_expression("SET #st = :sending")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":queued", s("queued"))
                .expression_attribute_values(":sending", s("sending"))
                .condition_expression("attribute_exists(messageId) AND (attribute_not_exists(generation) OR generation = :gen) AND #st IN (:queued, :sending)")
                .build()?;
            changes.push(Change::new(m, update, Delta::default()));
        }
        Ok(self.apply_by_account(changes, true).await?.positions)
    }

    /// Records outcomes: each item's transition and the summary counters it moves, in
    /// one transaction per account, so that the counters change only with transitions
    /// that really happened. A condition that fails means the item moved on (a late
    /// duplicate, or a newer generation): that record is dropped and the others go
    /// through. Safe to call again with the same records after an error: what was
    /// applied is refused by its condition the second time, so it is counted once.
    pub async fn record(&self, records: &[Record]) -> anyhow::Result<usize> {
        let mut changes = Vec::with_capacity(records.len());
        for r in records {
            let (update, delta) = self.outcome_update(r)?;
            changes.push(Change::new(&r.message, update, delta));
        }
        Ok(self.apply_by_account(changes, false).await?.len())
    }

    /// Applies item changes in one transaction per account, all accounts at once:
    /// transactions of different accounts never touch the same summary item, so they
    /// do not conflict. With `guard`, a campaign's changes apply only while it is not
    /// canceled.
    async fn apply_by_account(&self, changes: Vec<Change>, guard: bool) -> anyhow::Result<Applied> {
        let mut by_account: HashMap<String, Vec<(usize, Change)>> = HashMap::new();
        for (i, change) in changes.into_iter().enumerate() {
            by_account.entry(change.account.clone()).or_default().push((i, change));
        }
        let applied = join_all(by_account.into_iter().map(|(account, changes)| self.apply_with_summary(account, changes, guard))).await;
        let mut all = Applied::default();
        for a in applied {
            let a = a?;
            all.positions.extend(a.positions);
            all.canceled_campaigns.extend(a.canceled_campaigns);
        }
        all.positions.sort_unstable();
        Ok(all)
    }

    fn item_update(&self, m: &QueueMessage) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
        Update::builder().table_name(&self.table).key(PK, s(&m.creator_id)).key(SK, s(&m.id)).expression_attribute_values(":gen", n(m.generation))
    }

    fn outcome_update(&self, r: &Record) -> anyhow::Result<(Update, Delta)> {
        let m = &r.message;
        let base = self
            .item_update(m)
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":attempts", n(r.attempts))
            .expression_attribute_values(":queued", s("queued"))
            .expression_attribute_values(":sending", s("sending"))
            // Only an existing item (never a partial one), of the current generation,
            // claimed (or `queued`, when sent without a claim: no ledger then): an
            // outcome moves it once.
            .condition_expression("attribute_exists(messageId) AND (attribute_not_exists(generation) OR generation = :gen) AND #st IN (:queued, :sending)");
        let (update, delta) = match &r.outcome {
            Outcome::Sent { at } => (
                base.update_expression("SET #st = :sent, sentAt = :at, attempts = :attempts REMOVE failedKey, waitShard")
                    .expression_attribute_values(":sent", s("sent"))
                    .expression_attribute_values(":at", s(at)),
                Delta { queued: -1, sent: 1, last_sent_ms: shared::time::parse_rfc3339_ms(at), ..Delta::default() },
            ),
            // Back to `queued` between attempts: it may be canceled until the next claim.
            Outcome::Retrying { error } => (
                base.update_expression("SET attempts = :attempts, lastError = :err, #st = :queued").expression_attribute_values(":err", s(error)),
                Delta::default(),
            ),
            Outcome::Failed { at, error } => (
                base.update_expression("SET #st = :failed, failedAt = :at, lastError = :err, attempts = :attempts, failedKey = :fk REMOVE waitShard")
                    .expression_attribute_values(":failed", s("failed"))
                    .expression_attribute_values(":at", s(at))
                    .expression_attribute_values(":err", s(error))
                    .expression_attribute_values(":fk", s(ledger::failed_key(at, &m.id))),
                Delta { queued: -1, failed: 1, ..Delta::default() },
            ),
        };
        Ok((update.build()?, delta))
    }

    /// Applies item changes of one account together with the change of its summary
    /// counters and of each campaign's they add up to, as transactions of at most 100
    /// writes. An item whose condition fails is dropped (with its delta) and the rest
    /// applied again; so are all of a campaign's when its guard fails (it was
    /// canceled); a transaction that conflicts with another is tried again.
    async fn apply_with_summary(&self, account: String, changes: Vec<(usize, Change)>, guard: bool) -> anyhow::Result<Applied> {
        let mut applied = Applied::default();
        let mut changes = changes.into_iter().peekable();
        while changes.peek().is_some() {
            // Room for the summary and each campaign's counters.
            let mut live: Vec<(usize, Change)> = Vec::new();
            let mut campaigns: Vec<String> = Vec::new();
            while let Some((_, next)) = changes.peek() {
                let new_campaign = next.campaign.as_ref().filter(|c| !campaigns.contains(c));
                if live.len() + campaigns.len() + usize::from(new_campaign.is_some()) + 1 >= MAX_TRANSACTION_WRITES {
                    break;
                }
                if let Some(c) = new_campaign {
                    campaigns.push(c.clone());
                }
                live.extend(changes.next());
            }
            let mut conflicts = 0u32;
            while !live.is_empty() {
                let total = live.iter().fold(Delta::default(), |acc, (_, c)| acc.plus(&c.delta));
                let mut items: Vec<TransactWriteItem> = live.iter().map(|(_, c)| TransactWriteItem::builder().update(c.update.clone()).build()).collect();
                let counters_at = items.len();
                let mut counted: Vec<&str> = Vec::new();
                for (_, c) in &live {
                    let Some(id) = c.campaign.as_deref().filter(|id| !counted.contains(id)) else { continue };
                    counted.push(id);
                    let delta = live.iter().filter(|(_, o)| o.campaign.as_deref() == Some(id)).fold(Delta::default(), |acc, (_, o)| acc.plus(&o.delta));
                    items.extend(self.campaign_update(&account, id, &delta, guard)?);
                }
                if let Some(summary) = self.summary_update(&account, &total)? {
                    items.push(TransactWriteItem::builder().update(summary).build());
                }
                self.count(1);
                match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
                    Ok(_) => {
                        applied.positions.extend(live.iter().map(|(i, _)| *i));
                        break;
                    }
                    Err(e) => {
                        let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() else { return Err(e.into()) };
                        let refused: Vec<usize> =
                            c.cancellation_reasons().iter().enumerate().filter(|(_, r)| r.code() == Some("ConditionalCheckFailed")).map(|(i, _)| i).collect();
                        if refused.is_empty() {
                            // Nothing was refused: another transaction on the summary
                            // item got in the way (or DynamoDB throttled). Again, shortly.
                            conflicts += 1;
                            anyhow::ensure!(conflicts <= 10, "ledger transactions kept conflicting for account {account}");
                            tokio::time::sleep(std::time::Duration::from_millis(rand::random_range(10..50) * u64::from(conflicts))).await;
                        }
                        // A refused campaign guard: that campaign was canceled.
                        let canceled: Vec<String> = refused
                            .iter()
                            .filter(|&&i| i >= counters_at && i - counters_at < counted.len())
                            .map(|&i| counted[i - counters_at].to_owned())
                            .collect();
                        let mut i = 0;
                        live.retain(|(_, c)| {
                            let keep = !refused.contains(&i) && !c.campaign.as_ref().is_some_and(|id| canceled.contains(id));
                            i += 1;
                            keep
                        });
                        applied.canceled_campaigns.extend(canceled);
                    }
                }
            }
        }
        Ok(applied)
    }

    /// The change of a campaign's counters, guarded (applied only while the campaign is
    /// not canceled) when asked: a condition check alone when nothing counts.
    fn campaign_update(&self, account: &str, id: &str, d: &Delta, guard: bool) -> anyhow::Result<Option<TransactWriteItem>> {
        let key = item_map(&campaign::item_key(account, id));
        let counts = [("sent", d.sent), ("failed", d.failed), ("canceled", d.canceled), ("fanned", d.fanned)];
        if counts.iter().all(|(_, v)| *v == 0) {
            if !guard {
                return Ok(None);
            }
            let check =
                ConditionCheck::builder().table_name(&self.table).set_key(Some(key)).condition_expression("attribute_not_exists(canceledAt)").build()?;
            return Ok(Some(TransactWriteItem::builder().condition_check(check).build()));
        }
        let mut u = Update::builder().table_name(&self.table).set_key(Some(key));
        let mut adds = Vec::new();
        for (name, v) in counts.into_iter().filter(|(_, v)| *v != 0) {
            adds.push(format!("{name} :{name}"));
            u = u.expression_attribute_values(format!(":{name}"), n(v));
        }
        u = u.update_expression(format!("ADD {}", adds.join(", ")));
        if guard {
            u = u.condition_expression("attribute_not_exists(canceledAt)");
        }
        Ok(Some(TransactWriteItem::builder().update(u.build()?).build()))
    }

    fn summary_update(&self, account: &str, d: &Delta) -> anyhow::Result<Option<Update>> {
        if d.queued == 0 && d.sent == 0 && d.failed == 0 {
            return Ok(None);
        }
        let u = Update::builder()
            .table_name(&self.table)
            .key(PK, s(account))
            .key(SK, s(SUMMARY_SK))
            .expression_attribute_values(":q", n(d.queued))
            .expression_attribute_values(":s", n(d.sent))
            .expression_attribute_values(":f", n(d.failed));
        let u = match d.last_sent_ms {
            Some(t) => u.update_expression("ADD queued :q, sent :s, failed :f SET lastSentAtMs = :t").expression_attribute_values(":t", n(t)),
            None => u.update_expression("ADD queued :q, sent :s, failed :f"),
        };
        Ok(Some(u.build()?))
    }
}

/// DynamoDB's limit of writes in one transaction.
const MAX_TRANSACTION_WRITES: usize = 100;

/// What an item change does to its account's summary counters (`queued`, `sent`,
/// `failed`) and its campaign's (`sent`, `failed`, `canceled`, `fanned`).
#[derive(Debug, Default, Clone, Copy)]
struct Delta {
    queued: i64,
    sent: i64,
    failed: i64,
    canceled: i64,
    fanned: i64,
    last_sent_ms: Option<u64>,
}

impl Delta {
    fn plus(self, o: &Delta) -> Delta {
        Delta {
            queued: self.queued + o.queued,
            sent: self.sent + o.sent,
            failed: self.failed + o.failed,
            canceled: self.canceled + o.canceled,
            fanned: self.fanned + o.fanned,
            last_sent_ms: self.last_sent_ms.max(o.last_sent_ms),
        }
    }
}

/// One item's change, and whose counters it moves.
struct Change {
    account: String,
    campaign: Option<String>,
    update: Update,
    delta: Delta,
}

impl Change {
    fn new(m: &QueueMessage, update: Update, delta: Delta) -> Self {
        Change { account: m.creator_id.clone(), campaign: m.campaign_id.clone(), update, delta }
    }
}

/// What a set of changes did: the positions of those applied, and the campaigns whose
/// guard refused them.
#[derive(Debug, Default)]
struct Applied {
    positions: Vec<usize>,
    canceled_campaigns: Vec<String>,
}

impl Applied {
    fn len(&self) -> usize {
        self.positions.len()
    }
}

fn is_condition_failure<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: std::fmt::Debug + aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}
