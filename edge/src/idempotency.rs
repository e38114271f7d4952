//! `Idempotency-Key` on `POST /send`: the same key from the same account gets the first
//! answer back and queues nothing more, for `IDEMPOTENCY_TTL_HOURS` (24 h by default).
//!
//! A request first claims the key with a conditional `PutItem` in the account's ledger
//! partition (sort key `#idem#<key>`), so two concurrent requests cannot both queue;
//! the winner stores its answer on the claim when done, or lets go of it when it failed,
//! so that the client may try again (and gets the same message ids: it may have queued
//! them all the same).
//!
//! A claim left pending (its request was cancelled, or storing the answer failed) holds
//! the key for `IDEMPOTENCY_LEASE_SECONDS`; after that, a request with the same key and
//! body takes it over. It cannot know what the first one queued, so the messages of a
//! keyed request are derived from the claim ([`Origin`]): a takeover queues the very
//! same ids, which the worker drops as duplicates where they were already queued.

use serde_json::json;
use sha2::{Digest, Sha256};
use shared::error::FieldError;
use shared::ledger::{key, n, s, IDEMPOTENCY_SK_PREFIX};

use crate::aws::AwsError;
use crate::platform::Platform;
use crate::services::Ctx;

const MAX_KEY_BYTES: usize = 255;

/// What the messages of a keyed request are derived from: the time of the first claim
/// and a seed of (account, key), so every attempt of the request gets the same ids.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub at_ms: u64,
    pub seed: [u8; 8],
    /// Taken over from an earlier attempt, which may have written some of its messages.
    pub resumed: bool,
}

/// What a claim found.
#[derive(Debug)]
pub enum Claim {
    /// The key is ours: go on and queue, with message ids from this origin.
    New(Origin),
    /// A request with this key finished before: answer this (status, JSON body).
    Replay(u16, String),
    /// A request with this key is still being processed.
    InProgress,
    /// The key was used with a different request body.
    Mismatch,
}

/// Checks the header's value: 1 to 255 visible ASCII characters.
pub fn parse_key(header: Option<&str>) -> Result<Option<&str>, FieldError> {
    match header {
        None => Ok(None),
        Some(k) if !k.is_empty() && k.len() <= MAX_KEY_BYTES && k.bytes().all(|c| c.is_ascii_graphic()) => Ok(Some(k)),
        Some(_) => Err(FieldError::new("Idempotency-Key", "must be 1 to 255 visible ASCII characters")),
    }
}

fn sort_key(idempotency_key: &str) -> String {
    format!("{IDEMPOTENCY_SK_PREFIX}{idempotency_key}")
}

/// Claims `idempotency_key` for a request whose body is `body`.
pub async fn claim<P: Platform>(ctx: &Ctx<'_, P>, account: &str, idempotency_key: &str, body: &[u8]) -> Result<Claim, AwsError> {
    let hash = hex::encode(Sha256::digest(body));
    let now = ctx.p.now_ms();
    let expires = now / 1000 + ctx.config().idempotency_ttl_hours * 3600;
    let lease_until = now + ctx.config().idempotency_lease_seconds * 1000;
    let digest = Sha256::digest(format!("{account}\n{idempotency_key}"));
    let seed: [u8; 8] = std::array::from_fn(|i| digest[i]);
    // Tells our own claim apart when the put's answer is lost and it is tried again.
    let token = crate::ledger::request_token(ctx);
    let mut item = key(account, &sort_key(idempotency_key));
    item["state"] = s("pending");
    item["claimToken"] = s(&token);
    item["requestHash"] = s(&hash);
    item["ttl"] = n(expires);
    item["claimedAtMs"] = n(now);
    item["leaseUntilMs"] = n(lease_until);
    let put = json!({
        "TableName": ctx.config().ledger_table,
        "Item": item,
        // An expired record may linger until DynamoDB's TTL sweep removes it.
        "ConditionExpression": "attribute_not_exists(messageId) OR #ttl < :now",
        "ExpressionAttributeNames": {"#ttl": "ttl"},
        "ExpressionAttributeValues": {":now": n(ctx.p.now_ms() / 1000)},
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    });
    let existing = match ctx.dynamodb("PutItem", &put).await {
        Ok(_) => return Ok(Claim::New(Origin { at_ms: now, seed, resumed: false })),
        Err(AwsError::ConditionFailed { item: Some(item) }) => item,
        Err(AwsError::ConditionFailed { item: None }) => {
            let get = json!({"TableName": ctx.config().ledger_table, "Key": key(account, &sort_key(idempotency_key)), "ConsistentRead": true});
            match ctx.dynamodb("GetItem", &get).await?.get("Item") {
                Some(item) => item.clone(),
                None => return Ok(Claim::InProgress), // released meanwhile: let the client retry
            }
        }
        Err(e) => return Err(e),
    };
    let text = |name: &str| shared::ledger::text(&existing, name).unwrap_or_default();
    let number = |name: &str| existing.get(name).and_then(|v| v.get("N")?.as_str()?.parse::<u64>().ok());
    let origin = |resumed| Origin { at_ms: number("claimedAtMs").unwrap_or(now), seed, resumed };
    if text("claimToken") == token {
        return Ok(Claim::New(origin(false)));
    }
    if text("requestHash") != hash {
        return Ok(Claim::Mismatch);
    }
    match (text("state"), number("responseStatus")) {
        ("done", Some(status)) => Ok(Claim::Replay(status as u16, text("response").to_owned())),
        // A claim from before leases, or one whose lease ran out: its request is gone.
        ("pending", _) if number("leaseUntilMs").is_none_or(|until| until < now) => {
            let taken = take_over(ctx, account, idempotency_key, text("claimToken"), &token, lease_until).await?;
            Ok(if taken { Claim::New(origin(true)) } else { Claim::InProgress })
        }
        _ => Ok(Claim::InProgress),
    }
}

/// Takes over a pending claim whose lease ran out, unless another request just did
/// (the claim's token is compared). A lost answer shows our own token on the retry.
async fn take_over<P: Platform>(
    ctx: &Ctx<'_, P>,
    account: &str,
    idempotency_key: &str,
    old_token: &str,
    token: &str,
    lease_until: u64,
) -> Result<bool, AwsError> {
    let update = json!({
        "TableName": ctx.config().ledger_table,
        "Key": key(account, &sort_key(idempotency_key)),
        "ConditionExpression": "claimToken = :old",
        "UpdateExpression": "SET claimToken = :token, leaseUntilMs = :lease",
        "ExpressionAttributeValues": {":old": s(old_token), ":token": s(token), ":lease": n(lease_until)},
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    });
    match ctx.dynamodb("UpdateItem", &update).await {
        Ok(_) => Ok(true),
        Err(AwsError::ConditionFailed { item }) => Ok(item.as_ref().and_then(|i| shared::ledger::text(i, "claimToken")) == Some(token)),
        Err(e) => Err(e),
    }
}

/// Stores the answer on the claim.
pub async fn complete<P: Platform>(ctx: &Ctx<'_, P>, account: &str, idempotency_key: &str, status: u16, response: &str) -> Result<(), AwsError> {
    let body = json!({
        "TableName": ctx.config().ledger_table,
        "Key": key(account, &sort_key(idempotency_key)),
        "UpdateExpression": "SET #state = :done, #response = :r, responseStatus = :s",
        "ExpressionAttributeNames": {"#state": "state", "#response": "response"},
        "ExpressionAttributeValues": {":done": s("done"), ":r": s(response), ":s": n(status)},
    });
    ctx.dynamodb("UpdateItem", &body).await.map(drop)
}

/// Lets go of the claim of a request that failed: a request with the same key and body
/// takes it over at once, with the same origin and so the same message ids. The claim
/// is not dropped: a failed request may have queued its messages all the same (an SQS
/// answer lost after the write), and a retry under a new origin would queue them again
/// under new ids, sending each twice.
pub async fn release<P: Platform>(ctx: &Ctx<'_, P>, account: &str, idempotency_key: &str) -> Result<(), AwsError> {
    let body = json!({
        "TableName": ctx.config().ledger_table,
        "Key": key(account, &sort_key(idempotency_key)),
        "UpdateExpression": "SET leaseUntilMs = :zero",
        "ConditionExpression": "#state = :pending",
        "ExpressionAttributeNames": {"#state": "state"},
        "ExpressionAttributeValues": {":zero": n(0), ":pending": s("pending")},
    });
    match ctx.dynamodb("UpdateItem", &body).await {
        Ok(_) | Err(AwsError::ConditionFailed { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shape() {
        assert_eq!(parse_key(None), Ok(None));
        assert_eq!(parse_key(Some("order-42")), Ok(Some("order-42")));
        assert!(parse_key(Some("")).is_err());
        assert!(parse_key(Some("has space")).is_err());
        assert!(parse_key(Some(&"k".repeat(256))).is_err());
    }
}
