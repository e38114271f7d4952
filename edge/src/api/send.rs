//! `POST /send`: validate, then write each message to SQS and its ledger item
//! concurrently, and answer with its place in the account's backlog (see [`crate::position`]).

use futures_util::future::{join, join3};
use shared::api::{MassAccepted, MassEntry, SendAccepted};
use shared::error::{ErrorCode, FieldError};
use shared::ledger::{LedgerItem, MessageStatus, Summary};
use shared::message::{QueueMessage, SendRequest};
use shared::validation::{validate_send, MAX_BODY_BYTES};

use super::{now_rfc3339, require_enabled};
use crate::aws::AwsError;
use crate::error::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::idempotency::{self, Claim, Origin};
use crate::platform::Platform;
use crate::services::Ctx;
use crate::{ledger, queue};

/// `lastError` of a message the queue would not take.
const UNQUEUED: &str = "could not be queued: the queue was unavailable";

pub async fn send<P: Platform>(ctx: &Ctx<'_, P>, request: &ApiRequest, account: &str) -> Result<ApiResponse, ApiError> {
    require_enabled(ctx)?;
    let content_type = request.header("content-type").unwrap_or_default().to_ascii_lowercase();
    if content_type.split(';').next().map(str::trim) != Some("application/json") {
        return Err(ApiError::new(ErrorCode::UnsupportedMediaType));
    }
    // Read only now, after the token was checked, and only up to the limit.
    if request.declares_more_than(MAX_BODY_BYTES) {
        return Err(ApiError::new(ErrorCode::BodyTooLarge));
    }
    let raw = ctx
        .p
        .read_body(MAX_BODY_BYTES)
        .await
        .map_err(|e| ApiError { log: Some(format!("request body not read: {e}")), ..ApiError::new(ErrorCode::InvalidJson) })?
        .ok_or_else(|| ApiError::new(ErrorCode::BodyTooLarge))?;
    let idempotency_key = idempotency::parse_key(request.header("idempotency-key")).map_err(|e| ApiError::invalid(vec![e]))?;
    let body = serde_json::from_slice(&raw)
        .map_err(|_| ApiError { details: vec![FieldError::new("body", "must be valid JSON")], ..ApiError::new(ErrorCode::InvalidJson) })?;
    let send = validate_send(body, ctx.p.now_ms()).map_err(ApiError::invalid)?;

    let Some(key) = idempotency_key else {
        return accept(ctx, account, &send, None).await;
    };
    let origin = match idempotency::claim(ctx, account, key, &raw).await? {
        Claim::New(origin) => origin,
        Claim::Replay(status, body) => {
            let mut replay = ApiResponse::raw_json(status, body);
            replay.headers.push(("idempotent-replayed", "true".into()));
            return Ok(replay);
        }
        Claim::InProgress => return Err(ApiError::new(ErrorCode::IdempotencyKeyInUse)),
        Claim::Mismatch => return Err(ApiError::new(ErrorCode::IdempotencyKeyReused)),
    };
    let result = accept(ctx, account, &send, Some(origin)).await;
    let bookkeeping = match &result {
        Ok(response) => idempotency::complete(ctx, account, key, response.status, &response.body).await,
        Err(_) => idempotency::release(ctx, account, key).await,
    };
    if let Err(e) = bookkeeping {
        ctx.p.log_error(&format!("idempotency record not updated: {e}"));
    }
    result
}

/// Queues the messages of a valid request; a keyed request's ids and acceptance time
/// come from its claim (`origin`), so that every attempt of it queues the same ids.
async fn accept<P: Platform>(ctx: &Ctx<'_, P>, account: &str, send: &SendRequest, origin: Option<Origin>) -> Result<ApiResponse, ApiError> {
    let now_ms = ctx.p.now_ms();
    let accepted_ms = origin.map_or(now_ms, |o| o.at_ms);
    let accepted_at = shared::time::rfc3339_ms(accepted_ms);
    let expires_at = now_ms / 1000 + ctx.config().ledger_ttl_days * 86_400;
    let recipients = send.recipients.as_slice();
    // Each message lives in its ledger item; the queue is sent the same messages.
    let items: Vec<LedgerItem> = recipients
        .iter()
        .enumerate()
        .map(|(seq, recipient)| {
            let random = origin.map_or_else(
                || {
                    let mut random = [0u8; 8];
                    ctx.p.fill_random(&mut random);
                    random
                },
                |o| o.seed,
            );
            LedgerItem::queued(send.to_queue_message(shared::id::uuid_v7(accepted_ms, seq as u16, random), account, recipient, &accepted_at), expires_at)
        })
        .collect();
    let messages: Vec<&QueueMessage> = items.iter().map(|i| &i.message).collect();

    let resumed = origin.is_some_and(|o| o.resumed);
    let (queued, written, summary) = if let [_] = items.as_slice() {
        // One message: its item is a conditional put, which never overwrites what the
        // worker wrote, so both writes go at once.
        join3(queue::enqueue(ctx, &messages), ledger::put_new(ctx, &items, resumed), backlog(ctx, account, 1, now_ms)).await
    } else {
        // Batch writes carry no condition: written after the worker took a message,
        // recorded its outcome and wrote it, they would move it back to `queued`. So the
        // items go first, and a message reaches the queue only once its item is there.
        let (written, summary) = join(ledger::put_new(ctx, &items, resumed), backlog(ctx, account, items.len() as u64, now_ms)).await;
        (queue::enqueue(ctx, &messages).await, written, summary)
    };

    let unqueued: Vec<usize> = (0..messages.len()).filter(|&i| queued[i].is_err()).collect();
    if let Err(e) = &written {
        // The worker writes the item again when it takes the message from the queue.
        ctx.p.log_error(&format!("ledger items not written for {} message(s): {e}", messages.len()));
    }
    ctx.edge.positions.release(account, unqueued.len() as u64);
    if unqueued.len() == messages.len() {
        if written.is_ok() {
            undo(ctx, account, &messages).await;
        }
        let first_error = queued.into_iter().find_map(Result::err).expect("at least one message");
        return Err(first_error.into());
    }
    if !unqueued.is_empty() {
        mark_unqueued(ctx, account, &items, &unqueued, written.is_ok()).await;
    }

    let (ahead, last_sent) = match summary {
        Ok(s) => (s.queued, s.last_sent_at_ms),
        Err(e) => {
            ctx.p.log_error(&format!("summary not read: {e}"));
            (0, None)
        }
    };
    let first_position = ahead + 1;
    let rate = ctx.config().rate;
    // Scheduled messages wait for `sendAt`, then go at the account's rate like others.
    let accepted = if send.send_at_ms.is_some() { MessageStatus::Scheduled } else { MessageStatus::Queued };
    let mut entries = items.into_iter().zip(queued).enumerate().map(|(i, (item, outcome))| {
        let position = first_position + i as u64;
        let estimate = rate.estimated_send_ms(position, last_sent, now_ms);
        let estimate = send.send_at_ms.map_or(estimate, |at| estimate.max(at + i as u64 * rate.spacing_ms()));
        MassEntry {
            recipient_id: item.message.recipient_id,
            message_id: item.message.id,
            status: if outcome.is_ok() { accepted } else { MessageStatus::Failed },
            queue_position: position,
            estimated_send_time: shared::time::rfc3339_ms(estimate),
            error: outcome.err().map(|_| UNQUEUED.to_owned()),
        }
    });
    Ok(if send.recipients.is_mass() {
        let messages: Vec<MassEntry> = entries.collect();
        ApiResponse::json(202, &MassAccepted { success: true, status: accepted, count: messages.len(), messages })
    } else {
        let e = entries.next().expect("one recipient");
        ApiResponse::json(
            202,
            &SendAccepted { success: true, message_id: e.message_id, status: accepted, queue_position: e.queue_position, estimated_send_time: e.estimated_send_time },
        )
    })
}

/// The account's backlog ahead of `count` new messages, whose places it takes: from
/// the summary this isolate read within the last second, otherwise read (and kept).
async fn backlog<P: Platform>(ctx: &Ctx<'_, P>, account: &str, count: u64, now_ms: u64) -> Result<Summary, AwsError> {
    let reservation = ctx.edge.positions.reserve(account, count, now_ms);
    let summary = match &reservation.known {
        Some(s) => s.clone(),
        None => {
            let s = ledger::summary(ctx, account).await?;
            ctx.edge.positions.remember(account, &s);
            s
        }
    };
    Ok(reservation.ahead(&summary))
}

/// Nothing was queued: remove the items written, so the ledger does not show messages
/// that will never be sent.
async fn undo<P: Platform>(ctx: &Ctx<'_, P>, account: &str, messages: &[&QueueMessage]) {
    let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    if let Err(e) = ledger::delete_unqueued(ctx, account, &ids).await {
        ctx.p.log_error(&format!("could not remove ledger items of unqueued messages: {e}"));
    }
}

/// Part of a mass message was queued: the rest is recorded as failed, so the user sees
/// it in `GET /failed` and can retry it.
async fn mark_unqueued<P: Platform>(ctx: &Ctx<'_, P>, account: &str, items: &[LedgerItem], unqueued: &[usize], items_written: bool) {
    if items_written {
        let now = now_rfc3339(ctx);
        for &i in unqueued {
            let mut failed = items[i].clone();
            failed.failed_at = Some(now.clone());
            failed.last_error = Some(UNQUEUED.to_owned());
            if let Err(e) = ledger::mark_failed(ctx, &failed, 0).await {
                ctx.p.log_error(&format!("could not mark an unqueued message failed: {e}"));
            }
        }
    }
    if let Err(e) = ledger::add_failed(ctx, account, unqueued.len() as i64).await {
        ctx.p.log_error(&format!("failed count not updated: {e}"));
    }
}
