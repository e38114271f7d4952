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
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use futures::future::join_all;
use serde_json::Value;
use shared::ledger::{self, LedgerItem, PK, SK, SUMMARY_SK};
use shared::message::QueueMessage;

/// A finished attempt to record.
#[derive(Debug, Clone)]
pub enum Outcome {
    Sent { at: String },
    /// Will be tried again; `attempts` so far.
    Retrying { error: String },
    Failed { at: String, error: String },
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
    /// missing one. Returns the number written.
    pub async fn ensure_items(&self, messages: &[QueueMessage]) -> anyhow::Result<usize> {
        let mut written = 0;
        for chunk in messages.chunks(100) {
            let mut keys = KeysAndAttributes::builder().projection_expression("#pk, #sk").expression_attribute_names("#pk", PK).expression_attribute_names("#sk", SK);
            for m in chunk {
                keys = keys.keys(HashMap::from([(PK.to_owned(), s(&m.creator_id)), (SK.to_owned(), s(&m.id))]));
            }
            let mut request = HashMap::from([(self.table.clone(), keys.build()?)]);
            let mut present = std::collections::HashSet::new();
            for _ in 0..5 {
                self.count(1);
                let answer = self.client.batch_get_item().set_request_items(Some(request)).send().await?;
                for item in answer.responses().and_then(|r| r.get(&self.table)).into_iter().flatten() {
                    if let (Some(AttributeValue::S(c)), Some(AttributeValue::S(id))) = (item.get(PK), item.get(SK)) {
                        present.insert((c.clone(), id.clone()));
                    }
                }
                match answer.unprocessed_keys().filter(|u| !u.is_empty()) {
                    Some(u) => request = u.clone(),
                    None => break,
                }
            }
            let missing: Vec<&QueueMessage> = chunk.iter().filter(|m| !present.contains(&(m.creator_id.clone(), m.id.clone()))).collect();
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
        Ok(written)
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
            changes.push((m.creator_id.as_str(), update, Delta { queued: 1, ..Delta::default() }));
        }
        self.apply_by_account(changes).await
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
            changes.push((r.message.creator_id.as_str(), update, delta));
        }
        self.apply_by_account(changes).await
    }

    /// Applies (account, item change, delta) in one transaction per account, all
    /// accounts at once: transactions of different accounts never touch the same
    /// summary item, so they do not conflict. Returns how many items changed.
    async fn apply_by_account(&self, changes: Vec<(&str, Update, Delta)>) -> anyhow::Result<usize> {
        let mut by_account: HashMap<&str, Vec<(Update, Delta)>> = HashMap::new();
        for (account, update, delta) in changes {
            by_account.entry(account).or_default().push((update, delta));
        }
        let applied = join_all(by_account.into_iter().map(|(account, changes)| self.apply_with_summary(account, changes))).await;
        applied.into_iter().sum()
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
            // Only an existing item (never a partial one), of the current generation,
            // still waiting: an outcome moves it once.
            .condition_expression("attribute_exists(messageId) AND (attribute_not_exists(generation) OR generation = :gen) AND #st = :queued");
        let (update, delta) = match &r.outcome {
            Outcome::Sent { at } => (
                base.update_expression("SET #st = :sent, sentAt = :at, attempts = :attempts REMOVE failedKey")
                    .expression_attribute_values(":sent", s("sent"))
                    .expression_attribute_values(":at", s(at)),
                Delta { queued: -1, sent: 1, failed: 0, last_sent_ms: shared::time::parse_rfc3339_ms(at) },
            ),
            Outcome::Retrying { error } => {
                (base.update_expression("SET attempts = :attempts, lastError = :err").expression_attribute_values(":err", s(error)), Delta::default())
            }
            Outcome::Failed { at, error } => (
                base.update_expression("SET #st = :failed, failedAt = :at, lastError = :err, attempts = :attempts, failedKey = :fk")
                    .expression_attribute_values(":failed", s("failed"))
                    .expression_attribute_values(":at", s(at))
                    .expression_attribute_values(":err", s(error))
                    .expression_attribute_values(":fk", s(ledger::failed_key(at, &m.id))),
                Delta { queued: -1, sent: 0, failed: 1, last_sent_ms: None },
            ),
        };
        Ok((update.build()?, delta))
    }

    /// Applies item changes of one account together with the change of its summary
    /// counters they add up to, as transactions of at most 100 writes. An item whose
    /// condition fails is dropped (with its delta) and the rest applied again; a
    /// transaction that conflicts with another is tried again. Returns how many items
    /// changed.
    async fn apply_with_summary(&self, account: &str, changes: Vec<(Update, Delta)>) -> anyhow::Result<usize> {
        let mut applied = 0;
        let mut changes = changes.into_iter().peekable();
        while changes.peek().is_some() {
            let mut live: Vec<(Update, Delta)> = changes.by_ref().take(MAX_TRANSACTION_WRITES - 1).collect();
            let mut conflicts = 0u32;
            while !live.is_empty() {
                let total = live.iter().fold(Delta::default(), |acc, (_, d)| acc.plus(d));
                let mut items: Vec<TransactWriteItem> = live.iter().map(|(u, _)| TransactWriteItem::builder().update(u.clone()).build()).collect();
                if let Some(summary) = self.summary_update(account, &total)? {
                    items.push(TransactWriteItem::builder().update(summary).build());
                }
                self.count(1);
                match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
                    Ok(_) => {
                        applied += live.len();
                        break;
                    }
                    Err(e) => {
                        let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() else { return Err(e.into()) };
                        let refused: Vec<usize> = c
                            .cancellation_reasons()
                            .iter()
                            .enumerate()
                            .filter(|(i, r)| *i < live.len() && r.code() == Some("ConditionalCheckFailed"))
                            .map(|(i, _)| i)
                            .collect();
                        if refused.is_empty() {
                            // Nothing was refused: another transaction on the summary
                            // item got in the way (or DynamoDB throttled). Again, shortly.
                            conflicts += 1;
                            anyhow::ensure!(conflicts <= 10, "ledger transactions kept conflicting for account {account}");
                            tokio::time::sleep(std::time::Duration::from_millis(rand::random_range(10..50) * u64::from(conflicts))).await;
                        }
                        for i in refused.into_iter().rev() {
                            live.remove(i);
                        }
                    }
                }
            }
        }
        Ok(applied)
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

/// What an item change does to its account's summary counters.
#[derive(Debug, Default, Clone, Copy)]
struct Delta {
    queued: i64,
    sent: i64,
    failed: i64,
    last_sent_ms: Option<u64>,
}

impl Delta {
    fn plus(self, o: &Delta) -> Delta {
        Delta { queued: self.queued + o.queued, sent: self.sent + o.sent, failed: self.failed + o.failed, last_sent_ms: self.last_sent_ms.max(o.last_sent_ms) }
    }
}

fn is_condition_failure<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: std::fmt::Debug + aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}
