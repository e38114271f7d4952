//! The ledger in DynamoDB, as the edge uses it: writing accepted messages, reading one
//! message or a page of failed ones, moving a failed message back to `queued` exactly
//! once, and the per-account summary counters. Item layout: `shared::ledger`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use futures_util::future::join_all;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared::campaign::{self, CampaignItem};
use shared::ledger::{self, key, n, s, LedgerItem, MessageStatus, Summary, FAILED_INDEX, FAILED_KEY, PK, SK, SUMMARY_SK};
use shared::message::{AccountControl, Hold};

use crate::aws::AwsError;
use crate::platform::Platform;
use crate::services::Ctx;

/// Why a retry was refused.
#[derive(Debug, thiserror::Error)]
pub enum RetryRefused {
    #[error("no such message")]
    NotFound,
    #[error("message is {0:?}, not failed")]
    NotFailed(MessageStatus),
    #[error(transparent)]
    Aws(#[from] AwsError),
}

fn table<'a, P: Platform>(ctx: &'a Ctx<'_, P>) -> &'a str {
    &ctx.config().ledger_table
}

/// Writes a newly accepted message's item, unless it is there already (a keyed
/// request taken over: its first attempt wrote it, and the worker may have moved it
/// on since).
pub async fn put_new<P: Platform>(ctx: &Ctx<'_, P>, item: &LedgerItem) -> Result<(), AwsError> {
    put_if_absent(ctx, &item.to_item()).await
}

/// Writes a newly accepted campaign's item (the same way).
pub async fn put_campaign<P: Platform>(ctx: &Ctx<'_, P>, item: &CampaignItem) -> Result<(), AwsError> {
    put_if_absent(ctx, &item.to_item()).await
}

/// Puts an item unless one with its key exists (then it is written already).
async fn put_if_absent<P: Platform>(ctx: &Ctx<'_, P>, item: &impl serde::Serialize) -> Result<(), AwsError> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct PutItem<'a, I> {
        table_name: &'a str,
        item: &'a I,
        condition_expression: &'static str,
    }
    let body = PutItem { table_name: table(ctx), item, condition_expression: "attribute_not_exists(messageId)" };
    match ctx.dynamodb("PutItem", &body).await {
        Ok(_) | Err(AwsError::ConditionFailed { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the item of a campaign that could not be queued (nobody else knows its id).
pub async fn delete_campaign<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, campaign_id: &str) -> Result<(), AwsError> {
    let body = json!({"TableName": table(ctx), "Key": campaign::item_key(creator, campaign_id)});
    ctx.dynamodb("DeleteItem", &body).await.map(drop)
}

/// One campaign of this account (another account's is simply not found).
pub async fn get_campaign<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, campaign_id: &str) -> Result<Option<CampaignItem>, AwsError> {
    let answer = ctx.dynamodb("GetItem", &json!({"TableName": table(ctx), "Key": campaign::item_key(creator, campaign_id), "ConsistentRead": true})).await?;
    Ok(answer.get("Item").and_then(CampaignItem::from_item))
}

/// A page of this account's campaigns, newest first (their ids are time-ordered), and
/// where the next starts. The recipient lists are not read.
pub async fn campaign_page<P: Platform>(
    ctx: &Ctx<'_, P>,
    creator: &str,
    limit: u32,
    cursor: Option<&Cursor>,
) -> Result<(Vec<CampaignItem>, Option<Cursor>), AwsError> {
    let mut body = json!({
        "TableName": table(ctx),
        "KeyConditionExpression": "#pk = :c AND begins_with(#sk, :prefix)",
        "ProjectionExpression": "#pk, #sk, campaignId, #total, sent, failed, canceled, fanned, canceledAt, priority, acceptedAt, sendAt, #ttl",
        "ExpressionAttributeNames": {"#pk": PK, "#sk": SK, "#total": "total", "#ttl": ledger::TTL_ATTR},
        "ExpressionAttributeValues": {":c": s(creator), ":prefix": s(campaign::CAMPAIGN_SK_PREFIX)},
        "ScanIndexForward": false,
        "Limit": limit + 1,
    });
    if let Some(c) = cursor {
        body["ExclusiveStartKey"] = json!({PK: s(creator), SK: s(&c.index_key)});
    }
    let answer = ctx.dynamodb("Query", &body).await?;
    let mut items: Vec<CampaignItem> = answer.get("Items").and_then(Value::as_array).into_iter().flatten().filter_map(CampaignItem::from_item).collect();
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next =
        more.then(|| items.last()).flatten().map(|last| Cursor { message_id: last.campaign.id.clone(), index_key: campaign::sort_key(&last.campaign.id) });
    Ok((items, next))
}

/// Deletes the items of new messages whose queueing failed (best effort), each only
/// while it is still `queued` at generation 0: an edge write never moves an item that
/// the worker has moved on (an SQS answer can be lost after the message was queued).
pub async fn delete_unqueued<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, ids: &[&str]) -> Result<(), AwsError> {
    let deletes = ids.iter().map(|id| {
        let body = json!({
            "TableName": table(ctx),
            "Key": key(creator, id),
            "ConditionExpression": "#st = :queued AND generation = :zero",
            "ExpressionAttributeNames": {"#st": "status"},
            "ExpressionAttributeValues": {":queued": s("queued"), ":zero": n(0)},
        });
        async move {
            match ctx.dynamodb("DeleteItem", &body).await {
                Ok(_) | Err(AwsError::ConditionFailed { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
    });
    join_all(deletes).await.into_iter().collect()
}

/// Adds to an account's count of failed messages. (The backlog counter is the
/// worker's: it adds what it schedules and takes off each outcome.)
pub async fn add_failed<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, failed: i64) -> Result<(), AwsError> {
    let body = json!({
        "TableName": table(ctx),
        "Key": key(creator, SUMMARY_SK),
        "UpdateExpression": "ADD failed :f",
        "ExpressionAttributeValues": {":f": n(failed)},
    });
    ctx.dynamodb("UpdateItem", &body).await.map(drop)
}

pub async fn summary<P: Platform>(ctx: &Ctx<'_, P>, creator: &str) -> Result<Summary, AwsError> {
    let answer = ctx.dynamodb("GetItem", &json!({"TableName": table(ctx), "Key": key(creator, SUMMARY_SK)})).await?;
    Ok(Summary::from_item(answer.get("Item")))
}

/// Sets the account's `paused` flag on its summary item, unless a newer control set it
/// already (its time is kept with it).
pub async fn set_paused<P: Platform>(ctx: &Ctx<'_, P>, control: &AccountControl) -> Result<(), AwsError> {
    let body = json!({
        "TableName": table(ctx),
        "Key": key(&control.creator_id, SUMMARY_SK),
        "UpdateExpression": "SET paused = :p, holdAtMs = :at",
        "ConditionExpression": "attribute_not_exists(holdAtMs) OR holdAtMs < :at",
        "ExpressionAttributeValues": {":p": {"BOOL": control.control == Hold::Pause}, ":at": n(control.at_ms)},
    });
    match ctx.dynamodb("UpdateItem", &body).await {
        // A newer control got there first: it stands.
        Ok(_) | Err(AwsError::ConditionFailed { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// One message of this account; `None` when it does not exist (or is another account's:
/// the key includes the account, so another account's id simply is not found).
pub async fn get<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, id: &str) -> Result<Option<LedgerItem>, AwsError> {
    let answer = ctx.dynamodb("GetItem", &json!({"TableName": table(ctx), "Key": key(creator, id), "ConsistentRead": true})).await?;
    Ok(answer.get("Item").and_then(LedgerItem::from_item))
}

/// Where a page of `GET /failed` or `GET /campaigns` ends: the id of its last item
/// and that item's key in what is paged (the failed index's key, or the campaign's
/// sort key), minus the account (which always comes from the token), plus a tag of the
/// account, so that a cursor handed to another account is refused instead of paging
/// its list from an arbitrary place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    message_id: String,
    index_key: String,
}

impl Cursor {
    fn account_tag(account: &str) -> String {
        hex::encode(&Sha256::digest(format!("failed-cursor\n{account}"))[..8])
    }

    pub fn encode(&self, account: &str) -> String {
        B64.encode(format!("{}\n{}\n{}", self.message_id, self.index_key, Self::account_tag(account)))
    }

    /// The cursor, if `s` is one this API returned to `account`.
    pub fn decode(s: &str, account: &str) -> Option<Self> {
        let raw = String::from_utf8(B64.decode(s).ok()?).ok()?;
        let mut parts = raw.split('\n');
        let (message_id, index_key, tag) = (parts.next()?, parts.next()?, parts.next()?);
        (parts.next().is_none() && shared::id::is_message_id(message_id) && index_key.ends_with(message_id) && tag == Self::account_tag(account))
            .then(|| Cursor { message_id: message_id.to_owned(), index_key: index_key.to_owned() })
    }
}

/// A page of this account's failed messages, newest first, and where the next page
/// starts: only when there is one (one item more than the page is read, so that a list
/// whose length is a multiple of `limit` does not end with a cursor to an empty page).
pub async fn failed_page<P: Platform>(
    ctx: &Ctx<'_, P>,
    creator: &str,
    limit: u32,
    cursor: Option<&Cursor>,
) -> Result<(Vec<LedgerItem>, Option<Cursor>), AwsError> {
    let mut body = json!({
        "TableName": table(ctx),
        "IndexName": FAILED_INDEX,
        "KeyConditionExpression": "#pk = :c",
        "ExpressionAttributeNames": {"#pk": PK},
        "ExpressionAttributeValues": {":c": s(creator)},
        "ScanIndexForward": false,
        "Limit": limit + 1,
    });
    if let Some(c) = cursor {
        body["ExclusiveStartKey"] = json!({PK: s(creator), SK: s(&c.message_id), FAILED_KEY: s(&c.index_key)});
    }
    let answer = ctx.dynamodb("Query", &body).await?;
    let mut items: Vec<LedgerItem> = answer.get("Items").and_then(Value::as_array).into_iter().flatten().filter_map(LedgerItem::from_item).collect();
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next = more.then(|| items.last()).flatten().and_then(|last| {
        let failed_at = last.failed_at.as_deref()?;
        Some(Cursor { message_id: last.message.id.clone(), index_key: ledger::failed_key(failed_at, &last.message.id) })
    });
    Ok((items, next))
}

/// Why a cancel was refused.
#[derive(Debug, thiserror::Error)]
pub enum CancelRefused {
    #[error("no such message or campaign")]
    NotFound,
    #[error("message is {0:?}")]
    NotQueued(MessageStatus),
    #[error("every message of the campaign is sent, failed or canceled")]
    Completed,
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// Moves a queued (or scheduled) message to `canceled`, and answers with it. The
/// worker claims an item (`queued → sending`) before it hands the message to the
/// gateway, so exactly one of the two wins, whatever the timing. The account's backlog
/// counter counts the message once the worker has (`countedGen` = its generation):
/// then it is taken back in the same transaction; otherwise `countedGen` is set with
/// the cancel, so that the worker never counts it. A campaign's message that the
/// worker has not written yet is written `canceled` (the worker's own write then finds
/// it there and leaves it). A condition that fails (the worker moved meanwhile) reads
/// again. Canceling a canceled message answers as the first cancel did.
pub async fn cancel<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, id: &str, now: &str) -> Result<LedgerItem, CancelRefused> {
    for _ in 0..5 {
        let answer = ctx.dynamodb("GetItem", &json!({"TableName": table(ctx), "Key": key(creator, id), "ConsistentRead": true})).await?;
        let Some(found) = answer.get("Item") else {
            match cancel_unwritten(ctx, creator, id, now).await? {
                Some(item) => return Ok(item),
                None => continue, // the worker wrote it meanwhile
            }
        };
        let mut item = LedgerItem::from_item(found).ok_or(CancelRefused::NotFound)?;
        match item.status {
            MessageStatus::Canceled => return Ok(item),
            MessageStatus::Queued => {}
            other => return Err(CancelRefused::NotQueued(other)),
        }
        let generation = item.message.generation;
        let counted = found.get("countedGen").and_then(|v| v.get("N")?.as_str()?.parse::<u32>().ok()) == Some(generation);
        let mut update = json!({
            "TableName": table(ctx),
            "Key": key(creator, id),
            "UpdateExpression": "SET #st = :canceled, canceledAt = :now, countedGen = :gen REMOVE waitShard",
            "ExpressionAttributeNames": {"#st": "status"},
            "ExpressionAttributeValues": {":queued": s("queued"), ":canceled": s("canceled"), ":now": s(now), ":gen": n(generation)},
        });
        update["ConditionExpression"] =
            json!(if counted { "#st = :queued AND countedGen = :gen" } else { "#st = :queued AND (attribute_not_exists(countedGen) OR countedGen < :gen)" });
        let mut writes = vec![json!({"Update": update})];
        if counted {
            writes.push(json!({"Update": {
                "TableName": table(ctx),
                "Key": key(creator, SUMMARY_SK),
                "UpdateExpression": "ADD queued :minus",
                "ExpressionAttributeValues": {":minus": n(-1)},
            }}));
        }
        if let Some(campaign_id) = &item.message.campaign_id {
            writes.push(count_canceled(ctx, creator, campaign_id));
        }
        match ctx.dynamodb("TransactWriteItems", &json!({"TransactItems": writes})).await {
            Ok(_) => {
                item.status = MessageStatus::Canceled;
                return Ok(item);
            }
            Err(AwsError::ConditionFailed { .. }) => continue, // the worker moved it: look again
            Err(e) => return Err(e.into()),
        }
    }
    Err(AwsError::Unavailable { service: "dynamodb", status: 409, kind: "CancelKeptConflicting".into() }.into())
}

/// A campaign counts one more canceled message.
fn count_canceled<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, campaign_id: &str) -> Value {
    json!({"Update": {
        "TableName": table(ctx),
        "Key": campaign::item_key(creator, campaign_id),
        "UpdateExpression": "ADD canceled :one",
        "ExpressionAttributeValues": {":one": n(1)},
    }})
}

/// Cancels a message that has no item: one of a campaign the worker has not fanned
/// out yet (its item is written `canceled`). `None` when the worker wrote it meanwhile.
async fn cancel_unwritten<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, id: &str, now: &str) -> Result<Option<LedgerItem>, CancelRefused> {
    let (campaign_id, index) = campaign::campaign_of(id).ok_or(CancelRefused::NotFound)?;
    let found = get_campaign(ctx, creator, &campaign_id).await?.ok_or(CancelRefused::NotFound)?;
    let mut item = found.pending_item(index as usize).ok_or(CancelRefused::NotFound)?;
    if item.status == MessageStatus::Canceled {
        return Ok(Some(item)); // canceled with its campaign
    }
    item.status = MessageStatus::Canceled;
    let mut written = item.to_item();
    written["canceledAt"] = s(now);
    written["countedGen"] = n(0);
    let put = json!({"Put": {"TableName": table(ctx), "Item": written, "ConditionExpression": "attribute_not_exists(messageId)"}});
    match ctx.dynamodb("TransactWriteItems", &json!({"TransactItems": [put, count_canceled(ctx, creator, &campaign_id)]})).await {
        Ok(_) => Ok(Some(item)),
        Err(AwsError::ConditionFailed { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Marks a campaign canceled (the worker then takes what waits off the schedule and
/// marks each message `canceled`), and answers with it. A canceled campaign answers
/// as the first cancel did; a completed one is refused.
pub async fn cancel_campaign<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, campaign_id: &str, now: &str) -> Result<CampaignItem, CancelRefused> {
    let mut item = get_campaign(ctx, creator, campaign_id).await?.ok_or(CancelRefused::NotFound)?;
    if item.canceled_at.is_some() {
        return Ok(item);
    }
    if item.waiting() == 0 {
        return Err(CancelRefused::Completed);
    }
    let body = json!({
        "TableName": table(ctx),
        "Key": campaign::item_key(creator, campaign_id),
        "UpdateExpression": "SET canceledAt = :now",
        "ConditionExpression": "attribute_not_exists(canceledAt)",
        "ExpressionAttributeValues": {":now": s(now)},
    });
    match ctx.dynamodb("UpdateItem", &body).await {
        Ok(_) | Err(AwsError::ConditionFailed { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    item.canceled_at = Some(now.to_owned());
    Ok(item)
}

/// A failed message just moved back to `queued`: the item as it was, and as it is now.
#[derive(Debug, Clone)]
pub struct Requeued {
    pub before: LedgerItem,
    pub after: LedgerItem,
}

/// Moves a failed message back to `queued` (attempts reset, generation + 1). The
/// condition on `status` makes concurrent retries of one message succeed exactly once.
/// The old item comes back with the answer, so nothing is read beforehand. The write
/// stores a token of this request: when its answer is lost and the call is tried
/// again, the refusal that follows shows our own token, so the retry goes on instead
/// of answering 409 with the message queued in the ledger and never in SQS.
pub async fn requeue_failed<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, id: &str, now: &str) -> Result<Requeued, RetryRefused> {
    let token = request_token(ctx);
    let body = json!({
        "TableName": table(ctx),
        "Key": key(creator, id),
        "ConditionExpression": "#st = :failed",
        "UpdateExpression": "SET #st = :queued, attempts = :zero, retriedAt = :now, retryToken = :token, previousAttempts = attempts, generation = if_not_exists(generation, :zero) + :one, waitShard = :ws REMOVE failedKey",
        "ExpressionAttributeNames": {"#st": "status"},
        "ExpressionAttributeValues": {":failed": s("failed"), ":queued": s("queued"), ":zero": n(0), ":one": n(1), ":now": s(now), ":token": s(&token), ":ws": s(ledger::wait_shard(id))},
        "ReturnValues": "ALL_OLD",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    });
    match ctx.dynamodb("UpdateItem", &body).await {
        Ok(answer) => {
            let before = answer.get("Attributes").and_then(LedgerItem::from_item).ok_or(RetryRefused::NotFound)?;
            let mut after = before.clone();
            after.status = MessageStatus::Queued;
            after.attempts = 0;
            after.message.generation += 1;
            Ok(Requeued { before, after })
        }
        Err(AwsError::ConditionFailed { item: Some(item) }) if ledger::text(&item, "retryToken") == Some(token.as_str()) => {
            // Our own write, committed the first time: the item as it is now is `after`.
            let after = LedgerItem::from_item(&item).ok_or(RetryRefused::NotFound)?;
            let mut before = after.clone();
            before.status = MessageStatus::Failed;
            before.attempts = item.get("previousAttempts").and_then(|v| v.get("N")?.as_str()?.parse().ok()).unwrap_or(0);
            before.message.generation = after.message.generation.saturating_sub(1);
            Ok(Requeued { before, after })
        }
        Err(AwsError::ConditionFailed { item }) => {
            let existing = match item {
                Some(item) => LedgerItem::from_item(&item),
                None => get(ctx, creator, id).await?,
            };
            Err(existing.map_or(RetryRefused::NotFound, |i| RetryRefused::NotFailed(i.status)))
        }
        Err(e) => Err(e.into()),
    }
}

/// A random token that marks a conditional write as this request's.
pub fn request_token<P: Platform>(ctx: &Ctx<'_, P>) -> String {
    let mut random = [0u8; 16];
    ctx.p.fill_random(&mut random);
    hex::encode(random)
}

/// Records `failed` (its `failedAt`, `lastError`, `attempts`) on a message that is
/// `queued` at `generation`, unless something moved it on meanwhile. Used when a
/// message could not be queued: a retry whose SQS write failed goes back to failed, a
/// newly accepted one shows in `GET /failed`; either way it can be retried.
pub async fn mark_failed<P: Platform>(ctx: &Ctx<'_, P>, failed: &LedgerItem, generation: u32) -> Result<(), AwsError> {
    let m = &failed.message;
    let failed_at = failed.failed_at.clone().unwrap_or_else(|| m.accepted_at.clone());
    let mut values = json!({
        ":queued": s("queued"), ":failed": s("failed"), ":gen": n(generation), ":at": s(&failed_at),
        ":fk": s(ledger::failed_key(&failed_at, &m.id)), ":attempts": n(failed.attempts),
    });
    let mut update = String::from("SET #st = :failed, failedAt = :at, failedKey = :fk, attempts = :attempts");
    if let Some(error) = &failed.last_error {
        values[":err"] = s(error);
        update.push_str(", lastError = :err");
    }
    let body = json!({
        "TableName": table(ctx),
        "Key": key(&m.creator_id, &m.id),
        "ConditionExpression": "#st = :queued AND generation = :gen",
        "UpdateExpression": format!("{update} REMOVE waitShard"),
        "ExpressionAttributeNames": {"#st": "status"},
        "ExpressionAttributeValues": values,
    });
    ctx.dynamodb("UpdateItem", &body).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_rejects_garbage() {
        let id = "018bcfe5-6800-7fff-bfff-ffffffffffff";
        let c = Cursor { message_id: id.into(), index_key: format!("2026-11-25T06:00:00.000Z#{id}") };
        assert_eq!(Cursor::decode(&c.encode("creator-1"), "creator-1"), Some(c.clone()));
        assert_eq!(Cursor::decode(&c.encode("creator-1"), "creator-2"), None, "another account's cursor");
        assert_eq!(Cursor::decode("not base64!", "creator-1"), None);
        assert_eq!(Cursor::decode(&B64.encode("#summary\nx"), "creator-1"), None);
    }
}
