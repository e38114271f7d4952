//! The SQS send queue: writing an accepted message, a campaign's reference or an
//! account control (`SendMessage`: a mass message is one campaign, so one call), and
//! reading the queue's depth (`GetQueueAttributes`).

use serde::Serialize;
use serde_json::{json, Value};
use shared::api::QueueState;
use shared::campaign::CampaignRef;
use shared::message::QueueMessage;
use shared::queue::{AccountControl, CancelNotice, MESSAGE_TYPE};

use crate::aws::AwsError;
use crate::platform::Platform;
use crate::services::Ctx;

/// One message as `SendMessage` takes it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Entry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_url: Option<&'a str>,
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

/// An SQS entry with the attributes every message carries (docs/design.md §4).
fn entry_of(message_body: String, creator_id: &str, priority: u8) -> Entry<'_> {
    Entry {
        queue_url: None,
        message_body,
        message_attributes: Attributes {
            creator_id: Attribute { data_type: "String", string_value: creator_id.into() },
            priority: Attribute { data_type: "Number", string_value: priority.to_string().into() },
            message_type: Attribute { data_type: "String", string_value: MESSAGE_TYPE.into() },
        },
    }
}

/// Sends one message to the queue.
pub async fn enqueue<P: Platform>(ctx: &Ctx<'_, P>, message: &QueueMessage) -> Result<(), AwsError> {
    send(ctx, entry(message)).await
}

/// Sends a campaign (or its cancel) to the worker: only its id, whatever its size; the
/// worker reads the campaign from its ledger item.
pub async fn campaign<P: Platform>(ctx: &Ctx<'_, P>, campaign: &CampaignRef, priority: u8) -> Result<(), AwsError> {
    send(ctx, entry_of(serde_json::to_string(campaign).expect("a campaign reference always serializes"), &campaign.creator_id, priority)).await
}

/// Tells the worker a message was canceled, so that it takes it off the schedule.
pub async fn canceled<P: Platform>(ctx: &Ctx<'_, P>, message: &QueueMessage) -> Result<(), AwsError> {
    let notice = CancelNotice { canceled: message.clone() };
    // Priority 0: ahead of any message, as account controls.
    send(ctx, entry_of(serde_json::to_string(&notice).expect("a cancel notice always serializes"), &message.creator_id, 0)).await
}

/// Sends an account control (pause, resume) to the worker through the queue.
pub async fn control<P: Platform>(ctx: &Ctx<'_, P>, control: &AccountControl) -> Result<(), AwsError> {
    // Priority 0: ahead of any message (priorities are 1 to 10).
    send(ctx, entry_of(serde_json::to_string(control).expect("a control always serializes"), &control.creator_id, 0)).await
}

/// Asks the worker to send a webhook endpoint its test event.
pub async fn webhook_test<P: Platform>(ctx: &Ctx<'_, P>, test: &shared::webhook::TestEvent) -> Result<(), AwsError> {
    let notice = shared::queue::WebhookTestNotice { webhook_test: test.clone() };
    // Priority 0: ahead of any message, as account controls.
    send(ctx, entry_of(serde_json::to_string(&notice).expect("a test notice always serializes"), &test.creator_id, 0)).await
}

async fn send<P: Platform>(ctx: &Ctx<'_, P>, entry: Entry<'_>) -> Result<(), AwsError> {
    ctx.sqs("SendMessage", &Entry { queue_url: Some(&ctx.config().queue_url), ..entry }).await.map(drop)
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
