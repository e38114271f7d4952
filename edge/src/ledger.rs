//! The ledger in DynamoDB, as the edge uses it: writing accepted messages, reading one
//! message or a page of failed ones, moving a failed message back to `queued` exactly
//! once, the per-account summary counters, and the account's webhook endpoints. Item
//! layout: `shared::ledger`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use futures_util::future::{join, join_all};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared::campaign::{self, CampaignItem};
use shared::ledger::machine;
use shared::ledger::{self, key, n, s, Body, BodyItem, LedgerItem, MessageStatus, Summary, FAILED_INDEX, FAILED_KEY, PK, SK, SUMMARY_SK};
use shared::queue::{AccountControl, Hold};
use shared::webhook::{self, Endpoint};

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

/// Writes a newly accepted message's item and its body, each unless it is there already
/// (a keyed request taken over: its first attempt wrote them, and the worker may have
/// moved the item on since). Two plain writes at once, not a transaction: a
/// transaction bills each write twice (the 2 KB body 6 units rather than 3), for one
/// subrequest less. Should one of them fail, the worker writes what is missing when it
/// takes the message from the queue (`ensure_items`).
pub async fn put_new<P: Platform>(ctx: &Ctx<'_, P>, item: &LedgerItem, body_expires_at: u64) -> Result<(), AwsError> {
    let body = BodyItem::of(&item.message, body_expires_at);
    let (body, item) = join(put_if_absent(ctx, &body), put_if_absent(ctx, item)).await;
    body.and(item)
}

/// Writes a newly accepted campaign's items (the same way, each unless it is there):
/// its body first, so that a head found always has its body. Two plain writes, not a
/// transaction: the body is tens of KB, and a transaction would bill it twice.
pub async fn put_campaign<P: Platform>(ctx: &Ctx<'_, P>, item: &CampaignItem) -> Result<(), AwsError> {
    let [head, body] = item.to_items();
    put_if_absent(ctx, &body).await?;
    put_if_absent(ctx, &head).await
}

/// A put of a new item, only where none is, serialized straight to the request body
/// (the send path builds no JSON tree).
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct PutItem<'a, I> {
    table_name: &'a str,
    item: &'a I,
    condition_expression: &'static str,
}

impl<'a, I> PutItem<'a, I> {
    fn new<P: Platform>(ctx: &'a Ctx<'_, P>, item: &'a I) -> Self {
        PutItem { table_name: table(ctx), item, condition_expression: machine::PUT_NEW }
    }
}

/// Puts an item unless one with its key exists (then it is written already).
async fn put_if_absent<P: Platform>(ctx: &Ctx<'_, P>, item: &impl serde::Serialize) -> Result<(), AwsError> {
    let body = PutItem::new(ctx, item);
    match ctx.dynamodb("PutItem", &body).await {
        Ok(_) | Err(AwsError::ConditionFailed { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// One campaign of this account, its head only (another account's is simply not
/// found).
pub async fn get_campaign<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, campaign_id: &str) -> Result<Option<CampaignItem>, AwsError> {
    let answer = ctx.dynamodb("GetItem", &json!({"TableName": table(ctx), "Key": campaign::item_key(creator, campaign_id), "ConsistentRead": true})).await?;
    Ok(answer.get("Item").and_then(CampaignItem::from_item))
}

/// One campaign of this account with its body (recipients, content).
pub async fn get_whole_campaign<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, campaign_id: &str) -> Result<Option<CampaignItem>, AwsError> {
    let (head, body) = join(
        ctx.dynamodb("GetItem", &json!({"TableName": table(ctx), "Key": campaign::item_key(creator, campaign_id), "ConsistentRead": true})),
        body(ctx, creator, campaign_id),
    )
    .await;
    let (head, body) = (head?, body?);
    Ok(head.get("Item").and_then(|h| CampaignItem::from_items(h, body.as_ref())))
}

/// A body item (a message's or a campaign's), as stored.
async fn body<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, body_id: &str) -> Result<Option<Value>, AwsError> {
    let mut answer = ctx.dynamodb("GetItem", &json!({"TableName": table(ctx), "Key": ledger::body_key(creator, body_id), "ConsistentRead": true})).await?;
    Ok(answer.get_mut("Item").map(Value::take))
}

/// Fills `items` (read without content) from their bodies, each body read once.
async fn fill_from_bodies<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, items: &mut [LedgerItem]) -> Result<(), AwsError> {
    let mut ids: Vec<String> = items.iter().filter_map(|i| i.body_to_fill().map(str::to_owned)).collect();
    ids.sort_unstable();
    ids.dedup();
    let bodies = join_all(ids.iter().map(|id| body(ctx, creator, id))).await;
    for (id, found) in ids.iter().zip(bodies) {
        let Some(found) = found?.as_ref().and_then(Body::from_item) else { continue };
        for item in items.iter_mut().filter(|i| i.body_to_fill() == Some(id.as_str())) {
            found.fill(&mut item.message);
        }
    }
    Ok(())
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

/// Removes the item of a message whose queue write failed, unless a worker took it:
/// then the queue had it and only its answer was lost (`true`: it is accepted).
pub async fn delete_unqueued<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, id: &str) -> Result<bool, AwsError> {
    delete_unless_taken(ctx, key(creator, id), machine::DELETE_UNQUEUED).await
}

/// The same for a campaign's head (`machine::DELETE_UNQUEUED_CAMPAIGN`), then its body.
pub async fn delete_unqueued_campaign<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, campaign_id: &str) -> Result<bool, AwsError> {
    let taken = delete_unless_taken(ctx, campaign::item_key(creator, campaign_id), machine::DELETE_UNQUEUED_CAMPAIGN).await?;
    if !taken {
        // Without its head nothing reads it; should this fail, its TTL removes it.
        if let Err(e) = ctx.dynamodb("DeleteItem", &json!({"TableName": table(ctx), "Key": campaign::body_key(creator, campaign_id)})).await {
            ctx.p.log_error(&format!("the body of a campaign not queued was not deleted: {e}"));
        }
    }
    Ok(taken)
}

async fn delete_unless_taken<P: Platform>(ctx: &Ctx<'_, P>, key: Value, condition: &str) -> Result<bool, AwsError> {
    refused(ctx.dynamodb("DeleteItem", &json!({"TableName": table(ctx), "Key": key, "ConditionExpression": condition})).await)
}

/// Whether a conditional write was refused by its condition (`true`) or applied.
fn refused(answer: Result<Value, AwsError>) -> Result<bool, AwsError> {
    match answer {
        Ok(_) => Ok(false),
        Err(AwsError::ConditionFailed { .. }) => Ok(true),
        Err(e) => Err(e),
    }
}

pub async fn summary<P: Platform>(ctx: &Ctx<'_, P>, creator: &str) -> Result<Summary, AwsError> {
    let answer = ctx.dynamodb("GetItem", &json!({"TableName": table(ctx), "Key": key(creator, SUMMARY_SK)})).await?;
    Ok(Summary::from_item(answer.get("Item")))
}

/// Sets the account's `paused` flag on its summary item (`machine::set_hold`), unless a
/// newer control set it already.
pub async fn set_paused<P: Platform>(ctx: &Ctx<'_, P>, control: &AccountControl) -> Result<(), AwsError> {
    let write = machine::set_hold(control.control == Hold::Pause, control.at_ms, &control.creator_id, None);
    match ctx.dynamodb("UpdateItem", &write.to_update_item(table(ctx), key(&control.creator_id, SUMMARY_SK))).await {
        // A newer control got there first: it stands.
        Ok(_) | Err(AwsError::ConditionFailed { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets (or clears) the account's id at the delivery vendor on its summary.
pub async fn set_vendor_account<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, id: Option<&str>) -> Result<(), AwsError> {
    ctx.dynamodb("UpdateItem", &machine::set_vendor_account(id).to_update_item(table(ctx), key(creator, SUMMARY_SK))).await.map(drop)
}

/// One message of this account; `None` when it does not exist (or is another account's:
/// the key includes the account, so another account's id simply is not found).
pub async fn get<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, id: &str) -> Result<Option<LedgerItem>, AwsError> {
    let answer = ctx.dynamodb("GetItem", &json!({"TableName": table(ctx), "Key": key(creator, id), "ConsistentRead": true})).await?;
    let Some(item) = answer.get("Item").and_then(LedgerItem::from_item) else { return Ok(None) };
    let mut items = [item];
    fill_from_bodies(ctx, creator, &mut items).await?;
    let [item] = items;
    Ok(Some(item))
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
    fill_from_bodies(ctx, creator, &mut items).await?;
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
    #[error("an attempt got no answer: it may have been sent")]
    MaybeSent,
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// Moves a queued (or scheduled) message to `canceled` (`machine::cancel`), and answers
/// with it. The worker claims an item (`queued → sending`) before it hands the message
/// to the gateway, so exactly one of the two wins, whatever the timing. The counters it
/// moves (the account's backlog once the worker counted the message, the campaign's
/// canceled) go in the same transaction. A campaign's message that the worker has not
/// written yet is written `canceled` (the worker's own write then finds it there and
/// leaves it). A condition that fails (the worker moved meanwhile) reads again.
/// Canceling a canceled message answers as the first cancel did.
pub async fn cancel<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, id: &str, now_ms: u64) -> Result<LedgerItem, CancelRefused> {
    let (now, ttl) = (shared::time::rfc3339_ms(now_ms), ledger::expiry(now_ms, ctx.config().ledger_ttl_days));
    let hooked = endpoints(ctx, creator).await?;
    // `message.canceled`, written with the cancel for the endpoints that asked for it;
    // no worker holds it: a worker's sweep delivers it (`WEBHOOK_SWEEP_INTERVAL`).
    let told = |m: &shared::message::QueueMessage, attempts: u32| {
        let pending = webhook::Pending::new(creator, webhook::message_event(m, "message.canceled", &now, attempts, None), &hooked)?;
        Some(json!({"Put": {"TableName": table(ctx), "Item": pending.to_item(now_ms, "edge", now_ms), "ConditionExpression": machine::PUT_NEW}}))
    };
    for _ in 0..5 {
        let answer = ctx.dynamodb("GetItem", &json!({"TableName": table(ctx), "Key": key(creator, id), "ConsistentRead": true})).await?;
        let Some(found) = answer.get("Item") else {
            match cancel_unwritten(ctx, creator, id, &now, ttl, told).await? {
                Some(item) => return Ok(item),
                None => continue, // the worker wrote it meanwhile
            }
        };
        let mut item = LedgerItem::from_item(found).ok_or(CancelRefused::NotFound)?;
        match item.status {
            MessageStatus::Canceled => return Ok(item),
            MessageStatus::Queued if found.get(machine::MAYBE_SENT).is_some() => return Err(CancelRefused::MaybeSent),
            MessageStatus::Queued => {}
            other => return Err(CancelRefused::NotQueued(other)),
        }
        let generation = item.message.generation;
        let counted = ledger::number(found, "countedGen") == Some(u64::from(generation));
        let write = machine::cancel(generation, counted, &now, ttl);
        let mut writes = vec![json!({"Update": write.to_update_item(table(ctx), key(creator, id))})];
        writes.extend(counters(ctx, creator, item.message.campaign_id.as_deref(), &write.counts));
        writes.extend(told(&item.message, item.attempts));
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

/// The updates of the counters a transition moves: its account's summary and its
/// campaign's, as transaction items.
fn counters<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, campaign_id: Option<&str>, counts: &machine::Counts) -> Vec<Value> {
    let mut writes = Vec::new();
    let object = |values: Vec<(&str, Value)>| Value::Object(values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
    if counts.moves_summary() {
        let (update, values) = counts.summary_update();
        writes.push(json!({"Update": {"TableName": table(ctx), "Key": key(creator, SUMMARY_SK), "UpdateExpression": update, "ExpressionAttributeValues": object(values)}}));
    }
    if let Some(id) = campaign_id.filter(|_| counts.moves_campaign()) {
        let (update, values) = counts.campaign_update();
        writes.push(json!({"Update": {
            "TableName": table(ctx),
            "Key": campaign::item_key(creator, id),
            "UpdateExpression": update,
            "ExpressionAttributeValues": object(values),
        }}));
    }
    writes
}

/// Cancels a message that has no item: one of a campaign the worker has not fanned
/// out yet (its item is written `canceled`). `None` when the worker wrote it meanwhile.
async fn cancel_unwritten<P: Platform>(
    ctx: &Ctx<'_, P>,
    creator: &str,
    id: &str,
    now: &str,
    ttl: u64,
    told: impl Fn(&shared::message::QueueMessage, u32) -> Option<Value>,
) -> Result<Option<LedgerItem>, CancelRefused> {
    let (campaign_id, index) = campaign::campaign_of(id).ok_or(CancelRefused::NotFound)?;
    let found = get_whole_campaign(ctx, creator, &campaign_id).await?.ok_or(CancelRefused::NotFound)?;
    let mut item = found.pending_item(index as usize).ok_or(CancelRefused::NotFound)?;
    if item.status == MessageStatus::Canceled {
        return Ok(Some(item)); // canceled with its campaign
    }
    item.status = MessageStatus::Canceled;
    item.expires_at = Some(ttl);
    let mut written = item.to_item();
    written["canceledAt"] = s(now);
    written["countedGen"] = n(0);
    let mut writes = vec![json!({"Put": {"TableName": table(ctx), "Item": written, "ConditionExpression": machine::PUT_NEW}})];
    writes.extend(counters(ctx, creator, Some(&campaign_id), &machine::CANCEL_UNWRITTEN));
    writes.extend(told(&item.message, 0));
    match ctx.dynamodb("TransactWriteItems", &json!({"TransactItems": writes})).await {
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
    let body = machine::cancel_campaign(now).to_update_item(table(ctx), campaign::item_key(creator, campaign_id));
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
    let own = |item: &Value| ledger::text(item, "retryToken") == Some(token.as_str());
    let mut body = machine::requeue_failed(id, now, &token).to_update_item(table(ctx), key(creator, id));
    body["ReturnValues"] = json!("ALL_OLD");
    body["ReturnValuesOnConditionCheckFailure"] = json!("ALL_OLD");
    match ctx.dynamodb("UpdateItem", &body).await {
        Ok(answer) => {
            let before = answer.get("Attributes").and_then(LedgerItem::from_item).ok_or(RetryRefused::NotFound)?;
            let mut after = before.clone();
            after.status = MessageStatus::Queued;
            after.attempts = 0;
            after.message.generation += 1;
            with_bodies(ctx, creator, Requeued { before, after }).await
        }
        Err(AwsError::ConditionFailed { item: Some(item) }) if own(&item) => requeued_by_us(ctx, creator, &item).await,
        Err(AwsError::ConditionFailed { item }) => {
            let existing = match item {
                Some(item) => LedgerItem::from_item(&item),
                None => get(ctx, creator, id).await?,
            };
            Err(existing.map_or(RetryRefused::NotFound, |i| RetryRefused::NotFailed(i.status)))
        }
        // Every answer lost (the write may have landed, and a message `queued` that no
        // queue holds would wait for ever): the item says whether it did.
        Err(e @ (AwsError::Unreachable { .. } | AwsError::Unavailable { .. } | AwsError::BadResponse { .. })) => {
            match ctx.dynamodb("GetItem", &json!({"TableName": table(ctx), "Key": key(creator, id), "ConsistentRead": true})).await {
                Ok(answer) if answer.get("Item").is_some_and(own) => requeued_by_us(ctx, creator, &answer["Item"]).await,
                _ => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// A retry's own write, committed (its answer lost, or tried again): the item as it is
/// now is `after`, and `before` is read back from what the write kept of it.
async fn requeued_by_us<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, item: &Value) -> Result<Requeued, RetryRefused> {
    let after = LedgerItem::from_item(item).ok_or(RetryRefused::NotFound)?;
    let mut before = after.clone();
    before.status = MessageStatus::Failed;
    before.attempts = item.get("previousAttempts").and_then(|v| v.get("N")?.as_str()?.parse().ok()).unwrap_or(0);
    before.message.generation = after.message.generation.saturating_sub(1);
    with_bodies(ctx, creator, Requeued { before, after }).await
}

/// A requeued campaign message goes back to the queue whole: its content from the body.
async fn with_bodies<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, r: Requeued) -> Result<Requeued, RetryRefused> {
    let mut items = [r.before, r.after];
    fill_from_bodies(ctx, creator, &mut items).await?;
    let [before, after] = items;
    Ok(Requeued { before, after })
}

/// A random token that marks a conditional write as this request's.
pub fn request_token<P: Platform>(ctx: &Ctx<'_, P>) -> String {
    let mut random = [0u8; 16];
    ctx.p.fill_random(&mut random);
    hex::encode(random)
}

/// Records `failed` (its `failedAt`, `lastError`, `attempts`) on a message that is
/// `queued` at `generation`, unless a worker took it or something else moved it on
/// meanwhile (`machine::mark_failed`; `true`: refused): a retry whose SQS write failed
/// goes back to failed, and can be retried again.
pub async fn mark_failed<P: Platform>(ctx: &Ctx<'_, P>, failed: &LedgerItem, generation: u32) -> Result<bool, AwsError> {
    let m = &failed.message;
    let failed_at = failed.failed_at.clone().unwrap_or_else(|| m.accepted_at.clone());
    let ttl = ledger::expiry(ctx.p.now_ms(), ctx.config().ledger_ttl_days);
    let write = machine::mark_failed(&m.id, generation, &failed_at, failed.attempts, failed.last_error.as_deref(), ttl);
    let mut body = write.to_update_item(table(ctx), key(&m.creator_id, &m.id));
    body["ReturnValuesOnConditionCheckFailure"] = json!("ALL_OLD");
    match ctx.dynamodb("UpdateItem", &body).await {
        Ok(_) => Ok(false),
        // Refused by its own write, applied the first time (its answer lost): undone.
        Err(AwsError::ConditionFailed { item: Some(old) }) if ledger::number(&old, machine::UNDONE_GEN) == Some(u64::from(generation)) => Ok(false),
        Err(AwsError::ConditionFailed { .. }) => Ok(true),
        Err(e) => Err(e),
    }
}

// ---- webhook endpoints (`shared::webhook`): a few small items per account, read whole.

/// Every endpoint of this account, oldest first (their ids are time-ordered).
pub async fn endpoints<P: Platform>(ctx: &Ctx<'_, P>, creator: &str) -> Result<Vec<Endpoint>, AwsError> {
    let answer = ctx
        .dynamodb(
            "Query",
            &json!({
                "TableName": table(ctx),
                "KeyConditionExpression": "#pk = :c AND begins_with(#sk, :prefix)",
                "ExpressionAttributeNames": {"#pk": PK, "#sk": SK},
                "ExpressionAttributeValues": {":c": s(creator), ":prefix": s(webhook::ENDPOINT_SK_PREFIX)},
                "ConsistentRead": true,
            }),
        )
        .await?;
    Ok(answer.get("Items").and_then(Value::as_array).into_iter().flatten().filter_map(Endpoint::from_item).collect())
}

/// How many pages (1 MB each) of an account's events a delivery log reads at most.
const LOG_PAGES: usize = 4;

/// The deliveries to one endpoint among the account's events (each kept
/// `webhook::EVENT_TTL_MS`; at most `LOG_PAGES` of them read), newest first, at most
/// `limit`.
pub async fn deliveries<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, endpoint_id: &str, limit: usize) -> Result<Vec<webhook::DeliveryView>, AwsError> {
    let mut found = Vec::new();
    let mut start: Option<Value> = None;
    for _ in 0..LOG_PAGES {
        let mut body = json!({
            "TableName": table(ctx),
            "KeyConditionExpression": "#pk = :c AND begins_with(#sk, :prefix)",
            "FilterExpression": webhook::SENT_TO,
            "ExpressionAttributeNames": {"#pk": PK, "#sk": SK, "#log": webhook::log_attribute(endpoint_id)},
            "ExpressionAttributeValues": {":c": s(creator), ":prefix": s(webhook::EVENT_SK_PREFIX), ":ep": s(endpoint_id)},
        });
        if let Some(key) = start.take() {
            body["ExclusiveStartKey"] = key;
        }
        let answer = ctx.dynamodb("Query", &body).await?;
        found.extend(answer.get("Items").and_then(Value::as_array).into_iter().flatten().filter_map(|i| webhook::DeliveryView::from_item(i, endpoint_id)));
        match answer.get("LastEvaluatedKey") {
            Some(key) => start = Some(key.clone()),
            None => break,
        }
    }
    found.sort_by(|a, b| b.timestamp.cmp(&a.timestamp));
    found.truncate(limit);
    Ok(found)
}

/// Asks for an event again for one endpoint it was for (`webhook::REDELIVER`): `false`
/// when the account has no such event for it.
pub async fn redeliver<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, endpoint_id: &str, event_id: &str, now_ms: u64) -> Result<bool, AwsError> {
    let log = webhook::Delivery { state: webhook::DeliveryState::Redelivering, attempts: 0, last_attempt_at: None, last_answer: None, next_attempt_at: None };
    let answer = ctx
        .dynamodb(
            "UpdateItem",
            &json!({
                "TableName": table(ctx),
                "Key": key(creator, &format!("{}{event_id}", webhook::EVENT_SK_PREFIX)),
                "UpdateExpression": webhook::REDELIVER,
                "ConditionExpression": format!("{} AND {}", webhook::EVENT_EXISTS, webhook::SENT_TO),
                "ExpressionAttributeNames": {"#log": webhook::log_attribute(endpoint_id), "#ttl": ledger::TTL_ATTR},
                "ExpressionAttributeValues": {
                    ":ttl": n((now_ms + webhook::EVENT_TTL_MS) / 1000),
                    ":e": {"SS": [endpoint_id]},
                    ":ep": s(endpoint_id),
                    ":ws": s(webhook::event_shard(event_id)),
                    ":zero": n(0),
                    ":d": log.to_attr(),
                },
            }),
        )
        .await;
    match answer {
        Ok(_) => Ok(true),
        Err(AwsError::ConditionFailed { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One endpoint of this account (another account's is simply not found).
pub async fn endpoint<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, id: &str) -> Result<Option<Endpoint>, AwsError> {
    let answer = ctx.dynamodb("GetItem", &json!({"TableName": table(ctx), "Key": webhook::endpoint_key(creator, id), "ConsistentRead": true})).await?;
    Ok(answer.get("Item").and_then(Endpoint::from_item))
}

/// Writes a new endpoint (its id is new: the condition only guards against a clash).
pub async fn put_endpoint<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, endpoint: &Endpoint) -> Result<(), AwsError> {
    let item = endpoint.to_item(creator);
    ctx.dynamodb("PutItem", &PutItem::new(ctx, &item)).await.map(drop)
}

/// Replaces an endpoint's item with `updated` only while it is as `was` read it (its
/// secret, and disabled or not): of two rotations at once one wins and the other is
/// refused (`false`), and a worker's disabling meanwhile (a 410) is not undone.
pub async fn replace_endpoint<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, was: &Endpoint, updated: &Endpoint) -> Result<bool, AwsError> {
    let mut values = json!({":was": s(was.secret.reveal())});
    let condition = match &was.disabled {
        Some(d) => {
            values[":d"] = s(d.at.as_str());
            "secret = :was AND disabledAt = :d"
        }
        None => "secret = :was AND attribute_not_exists(disabledAt)",
    };
    let answer = ctx
        .dynamodb(
            "PutItem",
            &json!({
                "TableName": table(ctx),
                "Item": updated.to_item(creator),
                "ConditionExpression": condition,
                "ExpressionAttributeValues": values,
            }),
        )
        .await;
    refused(answer).map(|r| !r)
}

/// Clears an endpoint's `disabled`; the endpoint as it is now (`None`: there is none).
pub async fn enable_endpoint<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, id: &str) -> Result<Option<Endpoint>, AwsError> {
    let answer = ctx
        .dynamodb(
            "UpdateItem",
            &json!({
                "TableName": table(ctx),
                "Key": webhook::endpoint_key(creator, id),
                "UpdateExpression": webhook::ENABLE,
                "ConditionExpression": webhook::ENDPOINT_EXISTS,
                "ReturnValues": "ALL_NEW",
            }),
        )
        .await;
    match answer {
        Ok(a) => Ok(a.get("Attributes").and_then(Endpoint::from_item)),
        Err(AwsError::ConditionFailed { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes an endpoint; `false` when there was none.
pub async fn delete_endpoint<P: Platform>(ctx: &Ctx<'_, P>, creator: &str, id: &str) -> Result<bool, AwsError> {
    let answer = ctx
        .dynamodb(
            "DeleteItem",
            &json!({"TableName": table(ctx), "Key": webhook::endpoint_key(creator, id), "ConditionExpression": "attribute_exists(#sk)", "ExpressionAttributeNames": {"#sk": SK}}),
        )
        .await;
    refused(answer).map(|r| !r)
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
