//! `Idempotency-Key` on `POST /send`: the same key from the same account gets the first
//! answer back and queues nothing more, for `IDEMPOTENCY_TTL_HOURS` (24 h by default).
//!
//! A request first claims the key with a conditional `PutItem` in the account's ledger
//! partition (sort key `#idem#<key>`), so two concurrent requests cannot both queue;
//! the winner stores its answer on the claim when done, or drops the claim when it
//! queued nothing, so the client may try again.

use serde_json::json;
use sha2::{Digest, Sha256};
use shared::error::FieldError;
use shared::ledger::{key, n, s, IDEMPOTENCY_SK_PREFIX};

use crate::aws::AwsError;
use crate::platform::Platform;
use crate::services::Ctx;

const MAX_KEY_BYTES: usize = 255;

/// What a claim found.
#[derive(Debug)]
pub enum Claim {
    /// The key is ours: go on and queue.
    New,
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
    let expires = ctx.p.now_ms() / 1000 + ctx.config().idempotency_ttl_hours * 3600;
    // Tells our own claim apart when the put's answer is lost and it is tried again.
    let token = crate::ledger::request_token(ctx);
    let mut item = key(account, &sort_key(idempotency_key));
    item["state"] = s("pending");
    item["claimToken"] = s(&token);
    item["requestHash"] = s(&hash);
    item["ttl"] = n(expires);
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
        Ok(_) => return Ok(Claim::New),
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
    if text("claimToken") == token {
        return Ok(Claim::New);
    }
    if text("requestHash") != hash {
        return Ok(Claim::Mismatch);
    }
    match (text("state"), existing.get("responseStatus").and_then(|v| v.get("N")).and_then(|v| v.as_str()).and_then(|v| v.parse().ok())) {
        ("done", Some(status)) => Ok(Claim::Replay(status, text("response").to_owned())),
        _ => Ok(Claim::InProgress),
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

/// Drops the claim of a request that queued nothing.
pub async fn release<P: Platform>(ctx: &Ctx<'_, P>, account: &str, idempotency_key: &str) -> Result<(), AwsError> {
    let body = json!({"TableName": ctx.config().ledger_table, "Key": key(account, &sort_key(idempotency_key))});
    ctx.dynamodb("DeleteItem", &body).await.map(drop)
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
