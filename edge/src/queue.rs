//! The SQS send queue: writing accepted messages (`SendMessage`, `SendMessageBatch` in
//! chunks of 10, sent concurrently) and reading its depth (`GetQueueAttributes`).

use futures_util::future::join_all;
use serde::Serialize;
use serde_json::{json, Value};
use shared::api::QueueState;
use shared::message::{AccountControl, QueueMessage, MESSAGE_TYPE};

use crate::aws::AwsError;
use crate::platform::Platform;
use crate::services::Ctx;

/// Entries per `SendMessageBatch` (SQS's maximum).
const BATCH: usize = 10;
/// Rounds of re-sending the entries a batch reported as failed for a passing reason.
const BATCH_ROUNDS: usize = 3;

/// One message as SQS takes it (`SendMessage`'s body, or a `SendMessageBatch` entry).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Entry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    message_body: String,
    message_attributes: Attributes<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Attributes<'a> {
    creator_id: Attribute<'a>,
    priority: Attribute<'a>,
    message_type: Attribute<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Attribute<'a> {
    data_type: &'static str,
    string_value: std::borrow::Cow<'a, str>,
}

fn entry(m: &QueueMessage) -> Entry<'_> {
    entry_of(serde_json::to_string(m).expect("a queue message always serializes"), &m.creator_id, m.priority)
}

/// An SQS entry with the attributes every message carries (DESIGN §4).
fn entry_of(message_body: String, creator_id: &str, priority: u8) -> Entry<'_> {
    Entry {
        queue_url: None,
        id: None,
        message_body,
        message_attributes: Attributes {
            creator_id: Attribute { data_type: "String", string_value: creator_id.into() },
            priority: Attribute { data_type: "Number", string_value: priority.to_string().into() },
            message_type: Attribute { data_type: "String", string_value: MESSAGE_TYPE.into() },
        },
    }
}

/// Sends `messages` to the queue; returns, per message and in order, whether SQS took it.
pub async fn enqueue<P: Platform>(ctx: &Ctx<'_, P>, messages: &[&QueueMessage]) -> Vec<Result<(), AwsError>> {
    let queue_url = &ctx.config().queue_url;
    if let [one] = messages {
        let body = Entry { queue_url: Some(queue_url), ..entry(one) };
        return vec![ctx.sqs("SendMessage", &body).await.map(drop)];
    }
    let chunks = join_all(messages.chunks(BATCH).map(|chunk| send_batch(ctx, queue_url, chunk))).await;
    chunks.into_iter().flatten().collect()
}

async fn send_batch<P: Platform>(ctx: &Ctx<'_, P>, queue_url: &str, chunk: &[&QueueMessage]) -> Vec<Result<(), AwsError>> {
    let mut outcome: Vec<Option<Result<(), AwsError>>> = (0..chunk.len()).map(|_| None).collect();
    for _ in 0..BATCH_ROUNDS {
        let pending: Vec<usize> = (0..chunk.len()).filter(|&i| outcome[i].is_none()).collect();
        if pending.is_empty() {
            break;
        }
        let entries: Vec<Entry> = pending.iter().map(|&i| Entry { id: Some(i.to_string()), ..entry(chunk[i]) }).collect();
        let answer = match ctx.sqs("SendMessageBatch", &json!({"QueueUrl": queue_url, "Entries": entries})).await {
            Ok(a) => a,
            Err(e) => {
                for &i in &pending {
                    outcome[i] = Some(Err(e.clone()));
                }
                return outcome.into_iter().map(Option::unwrap).collect();
            }
        };
        let index = |v: &Value| v.get("Id").and_then(Value::as_str).and_then(|s| s.parse::<usize>().ok()).filter(|&i| i < chunk.len());
        for ok in answer.get("Successful").and_then(Value::as_array).into_iter().flatten() {
            if let Some(i) = index(ok) {
                outcome[i] = Some(Ok(()));
            }
        }
        for failed in answer.get("Failed").and_then(Value::as_array).into_iter().flatten() {
            let Some(i) = index(failed) else { continue };
            if failed.get("SenderFault").and_then(Value::as_bool) == Some(true) {
                let kind = failed.get("Code").and_then(Value::as_str).unwrap_or("Unknown").to_owned();
                outcome[i] = Some(Err(AwsError::Refused { service: "sqs", status: 400, kind }));
            }
        }
    }
    outcome
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(AwsError::Unavailable { service: "sqs", status: 500, kind: "BatchEntryFailed".into() })))
        .collect()
}

/// Sends an account control (pause, resume) to the worker through the queue.
pub async fn control<P: Platform>(ctx: &Ctx<'_, P>, control: &AccountControl) -> Result<(), AwsError> {
    // Priority 0: ahead of any message (priorities are 1 to 10).
    let body = entry_of(serde_json::to_string(control).expect("a control always serializes"), &control.creator_id, 0);
    ctx.sqs("SendMessage", &Entry { queue_url: Some(&ctx.config().queue_url), ..body }).await.map(drop)
}

/// Depth, in-flight and dead-letter counts, as SQS approximates them.
pub async fn queue_state<P: Platform>(ctx: &Ctx<'_, P>) -> Result<QueueState, AwsError> {
    let attributes = |url: &str| {
        let body = json!({"QueueUrl": url, "AttributeNames": ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]});
        async move { ctx.sqs("GetQueueAttributes", &body).await }
    };
    let count = |v: &Value, name: &str| v.pointer(&format!("/Attributes/{name}")).and_then(Value::as_str).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let main = attributes(&ctx.config().queue_url);
    let (main, dlq) = match &ctx.config().dlq_url {
        Some(dlq) => {
            let (m, d) = futures_util::future::join(main, attributes(dlq)).await;
            (m?, Some(d?))
        }
        None => (main.await?, None),
    };
    let depth = count(&main, "ApproximateNumberOfMessages") + count(&main, "ApproximateNumberOfMessagesDelayed");
    let in_flight = count(&main, "ApproximateNumberOfMessagesNotVisible");
    let dlq_count = dlq.map_or(0, |d| count(&d, "ApproximateNumberOfMessages"));
    Ok(QueueState { depth, in_flight, dlq_count, total: depth + in_flight + dlq_count })
}
