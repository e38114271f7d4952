//! The ledger (DESIGN §5) as the worker writes it: the item of a message it takes from
//! SQS (when the edge's write did not land), and each outcome, with conditions so that
//! a late duplicate can never turn `sent` into anything else. Layout: `shared::ledger`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
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

    /// Adds newly scheduled messages to their accounts' backlog counters (one update per
    /// account): the backlog counts what the worker has taken on, and `record` takes it
    /// off again, so both ends of the count live in one place.
    pub async fn add_to_backlog(&self, added: &HashMap<&str, i64>) -> anyhow::Result<()> {
        self.count(added.len());
        let updates = added.iter().map(|(account, k)| {
            self.client
                .update_item()
                .table_name(&self.table)
                .key(PK, s(*account))
                .key(SK, s(SUMMARY_SK))
                .update_expression("ADD queued :q")
                .expression_attribute_values(":q", n(k))
                .send()
        });
        for r in join_all(updates).await {
            r?;
        }
        Ok(())
    }

    /// Records outcomes, concurrently, then the per-account summary counters (one
    /// update per account). A condition that fails means the item moved on (a late
    /// duplicate, or a newer generation): nothing to do.
    pub async fn record(&self, records: &[Record]) -> anyhow::Result<()> {
        self.count(records.len());
        let updates = records.iter().map(|r| self.update_one(r));
        for result in join_all(updates).await {
            match result {
                Ok(_) => {}
                Err(e) if is_condition_failure(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut per_account: HashMap<&str, (i64, i64, Option<u64>)> = HashMap::new();
        for r in records {
            let e = per_account.entry(r.message.creator_id.as_str()).or_default();
            match &r.outcome {
                Outcome::Sent { at } => {
                    e.0 += 1;
                    e.2 = e.2.max(shared::time::parse_rfc3339_ms(at));
                }
                Outcome::Failed { .. } => e.1 += 1,
                Outcome::Retrying { .. } => {}
            }
        }
        let per_account: Vec<_> = per_account.into_iter().filter(|(_, (sent, failed, _))| sent + failed > 0).collect();
        self.count(per_account.len());
        let summaries = per_account.into_iter().map(|(account, (sent, failed, last))| {
            let mut u = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(PK, s(account))
                .key(SK, s(SUMMARY_SK))
                .expression_attribute_values(":q", n(-(sent + failed)))
                .expression_attribute_values(":s", n(sent))
                .expression_attribute_values(":f", n(failed));
            u = match last {
                Some(t) => u.update_expression("ADD queued :q, sent :s, failed :f SET lastSentAtMs = :t").expression_attribute_values(":t", n(t)),
                None => u.update_expression("ADD queued :q, sent :s, failed :f"),
            };
            u.send()
        });
        for r in join_all(summaries).await {
            r?;
        }
        Ok(())
    }

    async fn update_one(&self, r: &Record) -> Result<(), aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>> {
        let m = &r.message;
        let base = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(&m.creator_id))
            .key(SK, s(&m.id))
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":gen", n(m.generation))
            .expression_attribute_values(":attempts", n(r.attempts))
            .expression_attribute_values(":sent", s("sent"));
        // Only an existing item (never a partial one), of the current generation, and
        // never once sent.
        let guard = "attribute_exists(messageId) AND (attribute_not_exists(generation) OR generation = :gen) AND #st <> :sent";
        let update = match &r.outcome {
            Outcome::Sent { at } => base
                .update_expression("SET #st = :sent, sentAt = :at, attempts = :attempts REMOVE failedKey")
                .expression_attribute_values(":at", s(at))
                .condition_expression(guard),
            Outcome::Retrying { error } => base
                .update_expression("SET attempts = :attempts, lastError = :err")
                .expression_attribute_values(":err", s(error))
                .condition_expression(guard),
            Outcome::Failed { at, error } => base
                .update_expression("SET #st = :failed, failedAt = :at, lastError = :err, attempts = :attempts, failedKey = :fk")
                .expression_attribute_values(":failed", s("failed"))
                .expression_attribute_values(":at", s(at))
                .expression_attribute_values(":err", s(error))
                .expression_attribute_values(":fk", s(ledger::failed_key(at, &m.id)))
                .condition_expression(guard),
        };
        update.send().await.map(drop)
    }
}

fn is_condition_failure<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: std::fmt::Debug + aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}
